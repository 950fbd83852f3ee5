//! Reading `/proc`: process identity (PID + start time) so a PID stored in the database is
//! never mistaken for a new process that reused it.

use std::fs;

/// Start time of `pid` in clock ticks since boot, or `None` if it does not exist.
pub fn starttime(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_starttime(&stat)
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so count from the last `)`.
pub fn parse_starttime(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")": field 3 (state) is the first; starttime is field 22 → index 19.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// What `pid` runs: its executable's path (as the process sees it, inside its root) and its
/// command name (`comm`). Empty strings where unreadable.
pub fn program(pid: i32) -> (String, String) {
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let comm = fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_default();
    (exe, comm)
}

/// Whether `pid` is still the process that started at `start` (and is not a zombie).
pub fn is_alive(pid: i32, start: u64) -> bool {
    live_stat(pid).is_some_and(|stat| parse_starttime(&stat) == Some(start))
}

/// Whether some process `pid` exists and is not a zombie.
pub fn exists(pid: i32) -> bool {
    live_stat(pid).is_some()
}

/// The argument vector of `pid` (`/proc/<pid>/cmdline`), or `None` if it does not exist or
/// has none (a zombie or a kernel thread).
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    if pid <= 0 {
        return None;
    }
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args = parse_cmdline(&raw);
    (!args.is_empty()).then_some(args)
}

/// Split a NUL-separated `/proc/<pid>/cmdline`.
pub fn parse_cmdline(raw: &[u8]) -> Vec<String> {
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn live_stat(pid: i32) -> Option<String> {
    if pid <= 0 {
        return None;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let zombie = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        == Some("Z");
    (!zombie).then_some(stat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_starttime_with_odd_comm() {
        let line = "1234 (we ird) name)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 200 18446744073709551615";
        assert_eq!(parse_starttime(line), Some(98765));
        assert_eq!(parse_starttime("garbage"), None);
    }

    #[test]
    fn splits_cmdline() {
        assert_eq!(
            parse_cmdline(b"dnsmasq\0--pid-file=/x\0"),
            ["dnsmasq", "--pid-file=/x"]
        );
        assert!(parse_cmdline(b"").is_empty());
        let me = cmdline(std::process::id() as i32).expect("own cmdline");
        assert!(!me.is_empty());
        assert_eq!(cmdline(0), None);
    }

    #[test]
    fn own_process_is_alive_and_identity_checked() {
        let me = std::process::id() as i32;
        let st = starttime(me);
        assert!(st.is_some());
        assert!(is_alive(me, st.unwrap_or(0)));
        assert!(!is_alive(me, st.unwrap_or(0) + 1));
        assert!(!is_alive(0, 0));
    }
}
