//! `ctl top`: live CPU, memory and process counts of every instance, like `incus top`.
//!
//! Each frame comes from two polls of `GET /1.0/instances?recursion=2` one refresh apart:
//! CPU% is the growth of an instance's `cpu.usage` (nanoseconds) over the wall time between
//! the polls, as a percentage of one CPU ([`cpu_percent`]), so even the first frame shows a
//! measured value. On a terminal the table is redrawn in place until ctrl+c (or `--count`
//! frames); otherwise `--count` frames (default 1) are printed one after the other.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use super::Error;
use crate::Client;
use crate::output::{self, human_size};
use crate::usage::{self, InstanceUsage};

/// Columns of the table and CSV output.
pub const HEADER: [&str; 5] = ["NAME", "STATE", "CPU%", "MEMORY", "PROCESSES"];

/// Moves the cursor home and clears the screen before a redraw.
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// Output formats of `ctl top`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TopFormat {
    /// A table, redrawn in place on a terminal
    #[default]
    Table,
    /// One JSON array of rows per frame
    Json,
    /// The table's columns as comma-separated values, with a header line per frame
    Csv,
}

/// Arguments of `ctl top`.
#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    /// Seconds between refreshes (fractions allowed)
    #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = parse_refresh)]
    pub refresh: Duration,
    /// Show this many frames, then exit [default: until ctrl+c on a terminal, else 1]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Output format
    #[arg(short, long, value_enum, default_value_t)]
    pub format: TopFormat,
}

/// Parse `--refresh`: a positive, finite number of seconds.
pub fn parse_refresh(arg: &str) -> Result<Duration, String> {
    let error = || format!("expected a positive number of seconds, got {arg:?}");
    let seconds: f64 = arg.trim().parse().map_err(|_| error())?;
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(error());
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| error())
}

/// CPU use between two readings of a `cpu.usage` counter (nanoseconds) taken `elapsed`
/// apart, as a percentage of one CPU (200.0 is two CPUs busy). `None` when it cannot be
/// known: no time passed, or the counter went backwards (the instance restarted).
pub fn cpu_percent(before_ns: i64, after_ns: i64, elapsed: Duration) -> Option<f64> {
    let wall_ns = elapsed.as_nanos() as f64;
    if wall_ns <= 0.0 || before_ns < 0 || after_ns < before_ns {
        return None;
    }
    Some((after_ns - before_ns) as f64 * 100.0 / wall_ns)
}

/// One instance in a frame; `None` where the value is unknown (stopped, no state, first
/// reading).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopRow {
    pub name: String,
    pub status: String,
    pub cpu_percent: Option<f64>,
    /// Memory in use, in bytes.
    pub memory: Option<i64>,
    pub processes: Option<i64>,
}

impl TopRow {
    /// The table cells: `12.5`, `1.23MiB`, `-` for unknowns.
    pub fn cells(&self) -> Vec<String> {
        let dash = || "-".to_string();
        vec![
            self.name.clone(),
            self.status.to_uppercase(),
            self.cpu_percent.map_or_else(dash, |p| format!("{p:.1}")),
            self.memory
                .map_or_else(dash, |m| human_size(u64::try_from(m).unwrap_or(0))),
            self.processes.map_or_else(dash, |p| p.to_string()),
        ]
    }
}

/// The CPU counter of an instance that is running (has a state and is not stopped).
fn running_cpu(instance: &InstanceUsage) -> Option<i64> {
    let state = instance.state.as_ref()?;
    let status = status_of(instance);
    (!status.eq_ignore_ascii_case("stopped")).then_some(state.cpu.usage)
}

fn status_of(instance: &InstanceUsage) -> &str {
    match (&instance.status, &instance.state) {
        (status, Some(state)) if status.is_empty() => &state.status,
        (status, _) => status,
    }
}

/// The rows of a frame: `current` compared with `previous`, polled `elapsed` earlier.
/// Sorted by CPU% (highest first, unknown last), then by name.
pub fn rows(
    previous: &[InstanceUsage],
    current: &[InstanceUsage],
    elapsed: Duration,
) -> Vec<TopRow> {
    let before: BTreeMap<&str, i64> = previous
        .iter()
        .filter_map(|i| Some((i.name.as_str(), running_cpu(i)?)))
        .collect();
    let mut rows: Vec<TopRow> = current
        .iter()
        .map(|instance| {
            let now = running_cpu(instance);
            let state = instance.state.as_ref().filter(|_| now.is_some());
            TopRow {
                name: instance.name.clone(),
                status: status_of(instance).to_string(),
                cpu_percent: now.and_then(|after| {
                    let before = *before.get(instance.name.as_str())?;
                    cpu_percent(before, after, elapsed)
                }),
                memory: state.map(|s| s.memory.usage),
                processes: state.map(|s| s.processes).filter(|p| *p >= 0),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        let cpu = |r: &TopRow| r.cpu_percent.unwrap_or(f64::NEG_INFINITY);
        cpu(b).total_cmp(&cpu(a)).then_with(|| a.name.cmp(&b.name))
    });
    rows
}

/// One frame in `format` (ends with a newline). `width` forces the table width (tests).
pub fn render_frame(
    rows: &[TopRow],
    format: TopFormat,
    width: Option<u16>,
) -> Result<String, Error> {
    let cells = || rows.iter().map(TopRow::cells).collect::<Vec<_>>();
    Ok(match format {
        TopFormat::Table => output::render_table(&HEADER, &cells(), width),
        TopFormat::Csv => output::render_csv(&HEADER, &cells()),
        TopFormat::Json => serde_json::to_string(rows)
            .map(|s| s + "\n")
            .map_err(output::Error::Json)?,
    })
}

/// One poll: the instances and when their answer arrived.
struct Sample {
    at: Instant,
    instances: Vec<InstanceUsage>,
}

async fn sample(client: &Client) -> Result<Sample, Error> {
    let raw = client.instances_value().await?;
    let instances = usage::decode("instance list", raw)?;
    Ok(Sample {
        at: Instant::now(),
        instances,
    })
}

/// Show the frames. `stdout_is_terminal` picks redrawing (table on a terminal) and the
/// default frame count (unbounded on a terminal, where ctrl+c ends it cleanly; else 1).
pub async fn run(
    client: &Client,
    args: &TopArgs,
    stdout_is_terminal: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let frames = args.count.or((!stdout_is_terminal).then_some(1));
    let redraw = stdout_is_terminal && args.format == TopFormat::Table;
    let polling = poll(client, args, frames, redraw, out);
    if !(stdout_is_terminal && frames.is_none()) {
        return polling.await;
    }
    tokio::select! {
        result = polling => result,
        signal = tokio::signal::ctrl_c() => {
            signal.map_err(|source| crate::Error::Io { what: "cannot wait for ctrl+c", source })?;
            Ok(())
        }
    }
}

async fn poll(
    client: &Client,
    args: &TopArgs,
    frames: Option<u64>,
    redraw: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let mut previous = sample(client).await?;
    let mut shown: u64 = 0;
    loop {
        tokio::time::sleep(args.refresh).await;
        let current = sample(client).await?;
        let elapsed = current.at.saturating_duration_since(previous.at);
        let rows = rows(&previous.instances, &current.instances, elapsed);
        let mut frame = render_frame(&rows, args.format, None)?;
        if redraw {
            frame.insert_str(0, CLEAR_SCREEN);
        } else if shown > 0 {
            frame.insert(0, '\n');
        }
        match out.write_all(frame.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => {}
            // The reader went away (`ctl top --count 100 | head`): that ends the show.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        shown += 1;
        if frames.is_some_and(|n| shown >= n) {
            return Ok(());
        }
        previous = current;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{read_request, sync_envelope, write_response};
    use serde_json::{Value, json};
    use tokio::net::UnixListener;

    #[test]
    fn cpu_percent_math() {
        let s = Duration::from_secs;
        let cases: &[(i64, i64, Duration, Option<f64>)] = &[
            (0, 1_000_000_000, s(1), Some(100.0)),
            (0, 500_000_000, s(1), Some(50.0)),
            (1_000_000_000, 5_000_000_000, s(2), Some(200.0)),
            (7, 7, s(2), Some(0.0)),
            (0, 250_000_000, Duration::from_millis(500), Some(50.0)),
            (0, 1, s(0), None),
            (5_000, 1_000, s(1), None),
            (-1, 1_000, s(1), None),
        ];
        for (before, after, elapsed, expected) in cases {
            assert_eq!(
                cpu_percent(*before, *after, *elapsed),
                *expected,
                "{before} -> {after} in {elapsed:?}"
            );
        }
    }

    #[test]
    fn refresh_argument() {
        assert_eq!(parse_refresh("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_refresh("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "x", "NaN", "inf", ""] {
            assert!(parse_refresh(bad).is_err(), "{bad}");
        }
    }

    fn instance(name: &str, status: &str, state: Value) -> Value {
        json!({"name": name, "status": status, "status_code": 103, "type": "container",
               "architecture": "x86_64", "created_at": "", "config": {}, "state": state})
    }

    fn running(cpu_ns: i64, memory: i64, processes: i64) -> Value {
        json!({"status": "Running", "status_code": 103, "pid": 10, "processes": processes,
               "cpu": {"usage": cpu_ns}, "memory": {"usage": memory, "usage_peak": memory},
               "disk": {}, "network": null})
    }

    fn stopped() -> Value {
        json!({"status": "Stopped", "status_code": 102, "pid": 0, "processes": -1,
               "cpu": {"usage": 0}, "memory": {"usage": 0, "usage_peak": 0}})
    }

    fn decode_list(value: Value) -> Vec<InstanceUsage> {
        usage::decode("list", value).unwrap_or_default()
    }

    #[test]
    fn rows_sorted_by_cpu_with_unknowns_last() {
        let before = decode_list(json!([
            instance("idle", "Running", running(1_000_000_000, 1024, 1)),
            instance("busy", "Running", running(0, 12_897_484, 40)),
            instance("mid", "Running", running(0, 2048, 3)),
            instance("off", "Stopped", stopped()),
        ]));
        let after = decode_list(json!([
            instance("idle", "Running", running(1_000_000_000, 1024, 1)),
            instance("busy", "Running", running(3_000_000_000, 12_897_484, 40)),
            instance("mid", "Running", running(500_000_000, 2048, 3)),
            instance("off", "Stopped", stopped()),
            instance("new", "Running", running(9, 4096, 2)),
            instance("gone", "Running", Value::Null),
        ]));
        let rows = rows(&before, &after, Duration::from_secs(2));
        let table: Vec<Vec<String>> = rows.iter().map(TopRow::cells).collect();
        let expect = |cells: [&str; 5]| cells.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(
            table,
            vec![
                expect(["busy", "RUNNING", "150.0", "12.30MiB", "40"]),
                expect(["mid", "RUNNING", "25.0", "2.00KiB", "3"]),
                expect(["idle", "RUNNING", "0.0", "1.00KiB", "1"]),
                expect(["gone", "RUNNING", "-", "-", "-"]),
                expect(["new", "RUNNING", "-", "4.00KiB", "2"]),
                expect(["off", "STOPPED", "-", "-", "-"]),
            ]
        );
    }

    #[test]
    fn frames_in_each_format() {
        let rows = vec![
            TopRow {
                name: "web".into(),
                status: "Running".into(),
                cpu_percent: Some(12.345),
                memory: Some(1_289_748),
                processes: Some(7),
            },
            TopRow {
                name: "db".into(),
                status: "Stopped".into(),
                cpu_percent: None,
                memory: None,
                processes: None,
            },
        ];
        let table = render_frame(&rows, TopFormat::Table, Some(80)).unwrap_or_default();
        assert_eq!(
            table,
            "\
+------+---------+------+---------+-----------+
| NAME | STATE   | CPU% | MEMORY  | PROCESSES |
+------+---------+------+---------+-----------+
| web  | RUNNING | 12.3 | 1.23MiB | 7         |
+------+---------+------+---------+-----------+
| db   | STOPPED | -    | -       | -         |
+------+---------+------+---------+-----------+
"
        );
        assert_eq!(
            render_frame(&rows, TopFormat::Csv, None).ok().as_deref(),
            Some(
                "NAME,STATE,CPU%,MEMORY,PROCESSES\nweb,RUNNING,12.3,1.23MiB,7\ndb,STOPPED,-,-,-\n"
            )
        );
        let json = render_frame(&rows, TopFormat::Json, None).unwrap_or_default();
        let back: Value = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(
            back,
            json!([
                {"name": "web", "status": "Running", "cpu_percent": 12.345, "memory": 1_289_748,
                 "processes": 7},
                {"name": "db", "status": "Stopped", "cpu_percent": null, "memory": null,
                 "processes": null}
            ])
        );
    }

    /// An output whose reader has gone away.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn closed_output_ends_top_quietly() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("cannot create a temp dir");
        };
        let Ok(listener) = UnixListener::bind(dir.path().join(crate::client::SOCKET_NAME)) else {
            panic!("cannot bind the fake socket");
        };
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().await.ok()?;
                let _ = read_request(&mut stream).await;
                write_response(&mut stream, "200 OK", &sync_envelope(json!([]))).await;
            }
            Some(())
        });
        let client = Client::from_dir(dir.path());
        let args = TopArgs {
            refresh: Duration::from_millis(1),
            count: Some(5),
            format: TopFormat::Table,
        };
        let result = run(&client, &args, false, &mut ClosedPipe).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(server.await.ok().flatten(), Some(()));
    }

    #[tokio::test]
    async fn not_a_terminal_prints_count_frames_without_escapes() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("cannot create a temp dir");
        };
        let Ok(listener) = UnixListener::bind(dir.path().join(crate::client::SOCKET_NAME)) else {
            panic!("cannot bind the fake socket");
        };
        let server = tokio::spawn(async move {
            let mut heads = Vec::new();
            for poll in 0..3_i64 {
                let (mut stream, _) = listener.accept().await.ok()?;
                heads.push(read_request(&mut stream).await.0);
                let list = json!([
                    instance("a", "Running", running(poll * 1_000_000, 1024, 2)),
                    instance("b", "Running", running(poll * 9_000_000, 2048, 5)),
                    instance("c", "Stopped", stopped()),
                ]);
                write_response(&mut stream, "200 OK", &sync_envelope(list)).await;
            }
            Some(heads)
        });
        let client = Client::from_dir(dir.path());
        let args = TopArgs {
            refresh: Duration::from_millis(20),
            count: Some(2),
            format: TopFormat::Csv,
        };
        let mut out = Vec::new();
        let result = run(&client, &args, false, &mut out).await;
        let heads = server.await.ok().flatten().unwrap_or_default();

        assert!(result.is_ok(), "{result:?}");
        assert_eq!(heads.len(), 3);
        assert!(
            heads
                .iter()
                .all(|h| h.starts_with("GET /1.0/instances?recursion=2 HTTP/1.1\r\n"))
        );
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains('\x1b'), "{text:?}");
        let frames: Vec<&str> = text.split("\n\n").collect();
        assert_eq!(frames.len(), 2, "{text:?}");
        for frame in frames {
            let lines: Vec<&str> = frame.trim_end().lines().collect();
            assert_eq!(lines.len(), 4, "{frame:?}");
            assert_eq!(lines[0], "NAME,STATE,CPU%,MEMORY,PROCESSES");
            // b used 9x a's CPU time, so it leads; both have a measured CPU%.
            assert!(lines[1].starts_with("b,RUNNING,"), "{frame:?}");
            assert!(lines[1].ends_with(",2.00KiB,5"), "{frame:?}");
            assert!(lines[2].starts_with("a,RUNNING,"), "{frame:?}");
            assert!(!lines[1].contains(",-,"), "{frame:?}");
            assert_eq!(lines[3], "c,STOPPED,-,-,-");
        }
    }
}
