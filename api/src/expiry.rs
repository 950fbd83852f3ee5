//! The expiry span syntax of `snapshots.expiry` (and `ctl snapshot create --expiry`), as
//! Incus defines it: part of the API's contract, shared by the daemon (which computes a new
//! snapshot's `expires_at`) and the client (which sends one). Pure: no I/O.
//!
//! A span is space-separated fields `<count><unit>`, each unit at most once: `S` seconds,
//! `M` minutes, `H` hours, `d` days, `w` weeks, `m` months, `y` years (`1d 3H`, `2w`,
//! `3m`). Years and months move the calendar date, and a day past the month's end rolls
//! over into the next month (Jan 31 + 1m = Mar 2 or 3), as Go's `AddDate` does in Incus;
//! then the clock fields are added.

use time::{Date, Duration, Month, OffsetDateTime};

/// A span that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanError(pub String);

impl std::fmt::Display for SpanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid expiry \"{}\": expected fields like \"1M 2H 3d 4w 5m 6y\" (S seconds, \
             M minutes, H hours, d days, w weeks, m months, y years; each unit once)",
            self.0
        )
    }
}

impl std::error::Error for SpanError {}

/// A parsed span: counts per unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub seconds: i64,
    pub minutes: i64,
    pub hours: i64,
    pub days: i64,
    pub weeks: i64,
    pub months: i64,
    pub years: i64,
}

impl Span {
    /// Parse a span; `None` for an empty (or all-blank) one: no expiry.
    pub fn parse(text: &str) -> Result<Option<Span>, SpanError> {
        let expr = text.trim();
        if expr.is_empty() {
            return Ok(None);
        }
        let bad = || SpanError(text.to_string());
        let mut span = Span::default();
        let mut seen = String::new();
        for field in expr.split(' ') {
            let unit = field.chars().last().ok_or_else(bad)?;
            let digits = &field[..field.len() - unit.len_utf8()];
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let n: i64 = digits.parse().map_err(|_| bad())?;
            if seen.contains(unit) {
                return Err(bad());
            }
            seen.push(unit);
            let slot = match unit {
                'S' => &mut span.seconds,
                'M' => &mut span.minutes,
                'H' => &mut span.hours,
                'd' => &mut span.days,
                'w' => &mut span.weeks,
                'm' => &mut span.months,
                'y' => &mut span.years,
                _ => return Err(bad()),
            };
            *slot = n;
        }
        Ok(Some(span))
    }

    /// `from` plus this span, or `None` past the representable dates.
    pub fn after(&self, from: OffsetDateTime) -> Option<OffsetDateTime> {
        let months_total = i64::from(from.year())
            .checked_mul(12)?
            .checked_add(i64::from(u8::from(from.month())) - 1)?
            .checked_add(self.years.checked_mul(12)?)?
            .checked_add(self.months)?;
        let year = i32::try_from(months_total.div_euclid(12)).ok()?;
        let month = Month::try_from(u8::try_from(months_total.rem_euclid(12) + 1).ok()?).ok()?;
        let first = Date::from_calendar_date(year, month, 1).ok()?;
        let days = i64::from(from.day() - 1)
            .checked_add(self.days)?
            .checked_add(self.weeks.checked_mul(7)?)?;
        let secs = |n: i64, unit: i64| n.checked_mul(unit).map(Duration::seconds);
        let date = first.checked_add(secs(days, 86_400)?)?;
        let clock = secs(self.hours, 3600)?
            .checked_add(secs(self.minutes, 60)?)?
            .checked_add(secs(self.seconds, 1)?)?;
        from.replace_date(date).checked_add(clock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    #[test]
    fn spans_parse_like_incus() {
        assert_eq!(Span::parse(""), Ok(None));
        assert_eq!(Span::parse("  "), Ok(None));
        assert_eq!(
            Span::parse("1M 2H 3d 4w 5m 6y 7S"),
            Ok(Some(Span {
                seconds: 7,
                minutes: 1,
                hours: 2,
                days: 3,
                weeks: 4,
                months: 5,
                years: 6,
            }))
        );
        for bad in [
            "1", "d", "1x", "1d 2d", "1d  2H", "-1d", "1.5d", "1D", "1h", "one day", "1d,2H",
        ] {
            assert!(Span::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn spans_move_the_calendar_then_the_clock() {
        let t = OffsetDateTime::parse("2024-01-31T10:00:00Z", &Rfc3339)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let after = |s: &str| {
            Span::parse(s)
                .ok()
                .flatten()
                .and_then(|span| span.after(t))
                .and_then(|t| t.format(&Rfc3339).ok())
        };
        assert_eq!(after("1M").as_deref(), Some("2024-01-31T10:01:00Z"));
        assert_eq!(after("3H").as_deref(), Some("2024-01-31T13:00:00Z"));
        assert_eq!(after("1d 14H").as_deref(), Some("2024-02-02T00:00:00Z"));
        assert_eq!(after("2w").as_deref(), Some("2024-02-14T10:00:00Z"));
        // Feb 31 2024 rolls over to Mar 2 (a leap year), as Go's AddDate does.
        assert_eq!(after("1m").as_deref(), Some("2024-03-02T10:00:00Z"));
        assert_eq!(after("11m").as_deref(), Some("2024-12-31T10:00:00Z"));
        assert_eq!(after("1y 1m").as_deref(), Some("2025-03-03T10:00:00Z"));
        assert_eq!(after("30S").as_deref(), Some("2024-01-31T10:00:30Z"));
        assert_eq!(after("99999999999y"), None);
    }
}
