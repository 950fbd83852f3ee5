//! `snapshots.schedule`: cron expressions and Incus' schedule aliases, parsed and matched
//! against a minute. Pure functions; the caller decides the clock (the daemon uses the
//! host's local time, as Incus does).
//!
//! A schedule is empty (no scheduled snapshots), or a list of entries separated by a comma
//! **and a space** (`0 6 * * *, @hourly`: a cron field itself may hold commas), compared
//! case-insensitively. An entry is:
//! - five cron fields `<minute> <hour> <day of month> <month> <day of week>`, each `*`, a
//!   number, a range `a-b`, any of these with a step `/n` (`a/n` runs from `a` to the
//!   field's end), or a comma list of them; months and weekdays also by their English
//!   three-letter names, Sunday as 0 or 7. All five fields must match (as in the cron
//!   library Incus uses; classic cron ORs day of month and day of week);
//! - an alias: `@hourly`, `@daily`, `@midnight`, `@weekly`, `@monthly`, `@annually`,
//!   `@yearly`, or `@never` (nothing). As in Incus, an alias runs at a minute (and, but
//!   for `@hourly` and `@midnight`, an hour) chosen per instance from its name, so
//!   instances with `@daily` do not all take their snapshots at once. `@startup` is refused.

use std::fmt;

/// A schedule that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule entry \"{entry}\": {reason}")]
pub struct CronError {
    pub entry: String,
    pub reason: String,
}

/// The minute a schedule is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    pub minute: u32,
    pub hour: u32,
    /// 1–31.
    pub day: u32,
    /// 1–12.
    pub month: u32,
    /// 0 (Sunday) – 6.
    pub weekday: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alias {
    Hourly,
    Daily,
    Midnight,
    Weekly,
    Monthly,
    Yearly,
}

/// Allowed values of one field, as bits.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Field(u64);

impl Field {
    fn has(self, v: u32) -> bool {
        v < 64 && self.0 & (1 << v) != 0
    }
}

impl fmt::Debug for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set: Vec<u32> = (0..64).filter(|v| self.has(*v)).collect();
        write!(f, "{set:?}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cron {
    minute: Field,
    hour: Field,
    day: Field,
    month: Field,
    weekday: Field,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Cron(Cron),
    Alias(Alias),
}

/// A parsed `snapshots.schedule`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    entries: Vec<Entry>,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One field's bounds and names (names map to `first + index`).
struct Bounds {
    what: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    first: u32,
}

const BOUNDS: [Bounds; 5] = [
    Bounds {
        what: "minute",
        min: 0,
        max: 59,
        names: &[],
        first: 0,
    },
    Bounds {
        what: "hour",
        min: 0,
        max: 23,
        names: &[],
        first: 0,
    },
    Bounds {
        what: "day of month",
        min: 1,
        max: 31,
        names: &[],
        first: 0,
    },
    Bounds {
        what: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
        first: 1,
    },
    Bounds {
        what: "day of week",
        min: 0,
        max: 7,
        names: &WEEKDAYS,
        first: 0,
    },
];

fn value(text: &str, b: &Bounds) -> Result<u32, String> {
    if let Some(i) = b.names.iter().position(|n| *n == text) {
        return Ok(b.first + i as u32);
    }
    let v: u32 = text
        .parse()
        .map_err(|_| format!("\"{text}\" is not a {} value", b.what))?;
    if v < b.min || v > b.max {
        return Err(format!("{} {v} is outside {}-{}", b.what, b.min, b.max));
    }
    Ok(v)
}

fn field(text: &str, b: &Bounds) -> Result<Field, String> {
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("step \"{s}\" of the {} is not a positive number", b.what)
                })?;
                (r, step)
            }
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            (b.min, b.max)
        } else if let Some((a, z)) = range.split_once('-') {
            (value(a, b)?, value(z, b)?)
        } else {
            let v = value(range, b)?;
            // `a/n` runs from a to the end; a lone `a` is just a.
            (v, if item.contains('/') { b.max } else { v })
        };
        if lo > hi {
            return Err(format!("range {range} of the {} runs backwards", b.what));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(Field(bits))
}

fn cron(entry: &str) -> Result<Cron, String> {
    let parts: Vec<&str> = entry.split_whitespace().collect();
    if parts.len() != 5 {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), got {}",
            parts.len()
        ));
    }
    let mut fields = [Field(0); 5];
    for (i, (part, b)) in parts.iter().zip(BOUNDS.iter()).enumerate() {
        fields[i] = field(part, b)?;
    }
    // Sunday is 0 and 7.
    let mut weekday = fields[4];
    if weekday.has(7) {
        weekday.0 = (weekday.0 | 1) & !(1 << 7);
    }
    Ok(Cron {
        minute: fields[0],
        hour: fields[1],
        day: fields[2],
        month: fields[3],
        weekday,
    })
}

impl Schedule {
    /// Parse a `snapshots.schedule` value (empty: never).
    pub fn parse(text: &str) -> Result<Schedule, CronError> {
        let lower = text.trim().to_ascii_lowercase();
        let mut entries = Vec::new();
        if lower.is_empty() {
            return Ok(Schedule { entries });
        }
        for raw in lower.split(", ") {
            let entry = raw.trim();
            let err = |reason: String| CronError {
                entry: entry.to_string(),
                reason,
            };
            let parsed = match entry {
                "@hourly" => Some(Entry::Alias(Alias::Hourly)),
                "@daily" => Some(Entry::Alias(Alias::Daily)),
                "@midnight" => Some(Entry::Alias(Alias::Midnight)),
                "@weekly" => Some(Entry::Alias(Alias::Weekly)),
                "@monthly" => Some(Entry::Alias(Alias::Monthly)),
                "@annually" | "@yearly" => Some(Entry::Alias(Alias::Yearly)),
                "@never" => None,
                "@startup" => return Err(err("@startup is not supported".into())),
                a if a.starts_with('@') => {
                    return Err(err(
                        "unknown alias (use @hourly, @daily, @midnight, @weekly, @monthly, \
                         @annually, @yearly or @never)"
                            .into(),
                    ));
                }
                e => Some(Entry::Cron(cron(e).map_err(err)?)),
            };
            entries.extend(parsed);
        }
        Ok(Schedule { entries })
    }

    /// Whether nothing is ever scheduled.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the schedule fires at `at` for the instance named `seed` (which places the
    /// aliases' minute and hour).
    pub fn due(&self, at: &Tick, seed: &str) -> bool {
        let (minute, hour) = spread(seed);
        self.entries.iter().any(|e| match e {
            Entry::Cron(c) => {
                c.minute.has(at.minute)
                    && c.hour.has(at.hour)
                    && c.day.has(at.day)
                    && c.month.has(at.month)
                    && c.weekday.has(at.weekday)
            }
            Entry::Alias(a) => {
                at.minute == minute
                    && match a {
                        Alias::Hourly => true,
                        Alias::Midnight => at.hour == 0,
                        Alias::Daily => at.hour == hour,
                        Alias::Weekly => at.hour == hour && at.weekday == 0,
                        Alias::Monthly => at.hour == hour && at.day == 1,
                        Alias::Yearly => at.hour == hour && at.day == 1 && at.month == 1,
                    }
            }
        })
    }
}

/// The minute (0–59) and hour (0–23) an alias runs at for instance `seed`: FNV-1a of the
/// name, stable across restarts and versions.
fn spread(seed: &str) -> (u32, u32) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ((h % 60) as u32, ((h / 60) % 24) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(minute: u32, hour: u32, day: u32, month: u32, weekday: u32) -> Tick {
        Tick {
            minute,
            hour,
            day,
            month,
            weekday,
        }
    }

    fn due(spec: &str, at: Tick) -> bool {
        Schedule::parse(spec).is_ok_and(|s| s.due(&at, "c1"))
    }

    #[test]
    fn cron_fields_match_all_five() {
        let t = tick(30, 6, 15, 3, 5); // Friday 15 March, 06:30
        assert!(due("* * * * *", t));
        assert!(due("30 6 * * *", t));
        assert!(!due("31 6 * * *", t));
        assert!(due("*/15 * * * *", t));
        assert!(!due("*/7 * * * *", t));
        assert!(due("0,15,30,45 */2 * * *", t));
        assert!(!due("0,15,30,45 */4 * * *", tick(30, 6, 15, 3, 5)));
        assert!(due("25-35 5-7 10-20 mar fri", t));
        assert!(due("30 6 15 3 1-5", t));
        assert!(!due("30 6 15 3 sat,sun", t));
        // Day of month and day of week must both match.
        assert!(!due("30 6 15 * 1", t));
        assert!(!due("30 6 14 * 5", t));
        // 10/20: 10, 30, 50.
        assert!(due("10/20 * * * *", t));
        assert!(!due("10/20 * * * *", tick(20, 6, 15, 3, 5)));
        // Sunday as 0 and as 7; names are case-insensitive.
        assert!(due("0 0 * * 7", tick(0, 0, 17, 3, 0)));
        assert!(due("0 0 * * 0", tick(0, 0, 17, 3, 0)));
        assert!(due("0 0 * JAN SUN", tick(0, 0, 7, 1, 0)));
    }

    #[test]
    fn bad_schedules_are_refused_with_the_entry() {
        for bad in [
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "*/0 * * * *",
            "5-1 * * * *",
            "a * * * *",
            "* * * foo *",
            "@startup",
            "@often",
            "@daily, 61 * * * *",
            "1,,2 * * * *",
        ] {
            let err = Schedule::parse(bad);
            assert!(err.is_err(), "{bad:?} must be refused");
        }
        let err = Schedule::parse("@daily, 61 * * * *").err();
        assert_eq!(
            err.map(|e| e.entry),
            Some("61 * * * *".to_string()),
            "the error names the bad entry"
        );
    }

    #[test]
    fn lists_and_empty_schedules() {
        assert!(Schedule::parse("").is_ok_and(|s| s.is_empty()));
        assert!(Schedule::parse("@never").is_ok_and(|s| s.is_empty()));
        let s = Schedule::parse("0 6 * * *, 0 18 * * *");
        assert!(s.as_ref().is_ok_and(|s| !s.is_empty()));
        assert!(due("0 6 * * *, 0 18 * * *", tick(0, 18, 1, 1, 1)));
        assert!(due("0 6 * * *, 0 18 * * *", tick(0, 6, 1, 1, 1)));
        assert!(!due("0 6 * * *, 0 18 * * *", tick(0, 12, 1, 1, 1)));
    }

    #[test]
    fn aliases_run_once_at_a_minute_chosen_per_instance() {
        let (m, h) = spread("c1");
        assert!(m < 60 && h < 24);
        assert_eq!(spread("c1"), (m, h), "stable");
        let count = |spec: &str, days: u32| {
            let mut n = 0;
            for day in 1..=days {
                for hour in 0..24 {
                    for minute in 0..60 {
                        if due(spec, tick(minute, hour, day, 1, day % 7)) {
                            n += 1;
                        }
                    }
                }
            }
            n
        };
        assert_eq!(count("@hourly", 1), 24);
        assert_eq!(count("@daily", 1), 1);
        assert_eq!(count("@midnight", 1), 1);
        assert!(due("@midnight", tick(m, 0, 3, 1, 3)));
        assert!(due("@daily", tick(m, h, 3, 1, 3)));
        assert_eq!(count("@weekly", 14), 2);
        assert_eq!(count("@monthly", 31), 1);
        assert_eq!(count("@yearly", 31), 1);
        assert_eq!(count("@annually", 31), 1);
        assert!(due("@monthly", tick(m, h, 1, 5, 3)));
        assert!(!due("@yearly", tick(m, h, 1, 5, 3)));
        assert!(due("@YEARLY", tick(m, h, 1, 1, 3)));
        // Another name, usually another minute.
        let others: Vec<(u32, u32)> = ["c2", "web", "db1"].iter().map(|n| spread(n)).collect();
        assert!(others.iter().any(|o| *o != (m, h)));
    }
}
