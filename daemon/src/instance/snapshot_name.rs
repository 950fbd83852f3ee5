//! `snapshots.pattern`: the names of scheduled snapshots and of snapshots requested without
//! one. Pure functions.
//!
//! Incus renders the pattern as a Pongo2 template with `creation_date` in its context, then
//! replaces one `%d` by a number. ctl supports the forms Incus documents:
//! - `{{ creation_date|date:'2006-01-02_15-04-05' }}` (single or double quotes): the
//!   snapshot's creation time (host local time) formatted by a Go layout. Known layout
//!   elements: `2006` `06` `January` `Jan` `01` `1` `Monday` `Mon` `02` `_2` `2` `15` `03`
//!   `3` `04` `4` `05` `5` `PM` `pm` `-0700` `-07:00` `Z0700` `Z07:00`; other text is kept.
//!   Any other `{{ ... }}` or `{% ... %}` is refused.
//! - `%d`, at most once: the highest number already at that place in the instance's
//!   snapshot names, plus one (0 for the first). A pattern without `%d` whose name is
//!   taken gets `-0`, `-1`... appended the same way.
//!
//! The default pattern is `snap%d`.

use chrono::{DateTime, Datelike, FixedOffset, Timelike};

/// The pattern used when `snapshots.pattern` is unset.
pub const DEFAULT_PATTERN: &str = "snap%d";

/// The longest snapshot name.
pub const MAX_NAME: usize = 63;

/// A valid snapshot name: 1–63 letters, digits, `-`, `_`, `.` (not first), as Incus takes
/// them.
pub fn valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A pattern that cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error(
        "unsupported template \"{0}\" in snapshots.pattern: only \
         {{{{ creation_date|date:'LAYOUT' }}}} is supported"
    )]
    Template(String),
    #[error("unterminated \"{{{{\" in snapshots.pattern")]
    Unterminated,
    #[error("snapshots.pattern may contain '%d' only once")]
    TwoCounters,
}

/// Go layout elements, longest and most specific first.
const LAYOUT: &[&str] = &[
    "January", "Monday", "Z07:00", "-07:00", "Z0700", "-0700", "2006", "Jan", "Mon", "_2", "01",
    "02", "03", "04", "05", "06", "15", "PM", "pm", "1", "2", "3", "4", "5",
];

/// `t` formatted by Go layout `layout`.
pub fn go_date(t: &DateTime<FixedOffset>, layout: &str) -> String {
    let mut out = String::new();
    let mut rest = layout;
    let hour12 = match t.hour() % 12 {
        0 => 12,
        h => h,
    };
    let offset = |colon: bool, z: bool| {
        let secs = t.offset().local_minus_utc();
        if z && secs == 0 {
            return "Z".to_string();
        }
        let sign = if secs < 0 { '-' } else { '+' };
        let (h, m) = (secs.abs() / 3600, secs.abs() / 60 % 60);
        if colon {
            format!("{sign}{h:02}:{m:02}")
        } else {
            format!("{sign}{h:02}{m:02}")
        }
    };
    'outer: while !rest.is_empty() {
        for token in LAYOUT {
            if let Some(after) = rest.strip_prefix(token) {
                let piece = match *token {
                    "January" => t.format("%B").to_string(),
                    "Monday" => t.format("%A").to_string(),
                    "Z07:00" => offset(true, true),
                    "-07:00" => offset(true, false),
                    "Z0700" => offset(false, true),
                    "-0700" => offset(false, false),
                    "2006" => format!("{:04}", t.year()),
                    "Jan" => t.format("%b").to_string(),
                    "Mon" => t.format("%a").to_string(),
                    "_2" => format!("{:>2}", t.day()),
                    "01" => format!("{:02}", t.month()),
                    "02" => format!("{:02}", t.day()),
                    "03" => format!("{hour12:02}"),
                    "04" => format!("{:02}", t.minute()),
                    "05" => format!("{:02}", t.second()),
                    "06" => format!("{:02}", t.year().rem_euclid(100)),
                    "15" => format!("{:02}", t.hour()),
                    "PM" => (if t.hour() < 12 { "AM" } else { "PM" }).to_string(),
                    "pm" => (if t.hour() < 12 { "am" } else { "pm" }).to_string(),
                    "1" => t.month().to_string(),
                    "2" => t.day().to_string(),
                    "3" => hour12.to_string(),
                    "4" => t.minute().to_string(),
                    _ => t.second().to_string(),
                };
                out.push_str(&piece);
                rest = after;
                continue 'outer;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

/// The layout of a `creation_date|date:'LAYOUT'` expression.
fn date_layout(expr: &str) -> Option<&str> {
    let (var, filter) = expr.split_once('|')?;
    if var.trim() != "creation_date" {
        return None;
    }
    let arg = filter
        .trim()
        .strip_prefix("date")?
        .trim_start()
        .strip_prefix(':')?;
    let arg = arg.trim();
    let quote = arg.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    arg.strip_prefix(quote)?.strip_suffix(quote)
}

/// Render the template parts of `pattern` for a snapshot created at `at` (`%d` is left).
pub fn render(pattern: &str, at: &DateTime<FixedOffset>) -> Result<String, PatternError> {
    if let Some(i) = pattern.find("{%") {
        return Err(PatternError::Template(pattern[i..].to_string()));
    }
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let inner = &rest[start + 2..];
        let end = inner.find("}}").ok_or(PatternError::Unterminated)?;
        let expr = inner[..end].trim();
        let layout = date_layout(expr).ok_or_else(|| PatternError::Template(expr.to_string()))?;
        out.push_str(&go_date(at, layout));
        rest = &inner[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The number after `prefix` and before `suffix` in `name`, if it has that shape.
fn counter(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The next name from `pattern` at `at`, given the instance's snapshot names.
pub fn next_name(
    pattern: &str,
    at: &DateTime<FixedOffset>,
    taken: &[String],
) -> Result<String, PatternError> {
    let pattern = if pattern.is_empty() {
        DEFAULT_PATTERN
    } else {
        pattern
    };
    let rendered = render(pattern, at)?;
    let numbered = match rendered.matches("%d").count() {
        0 if !taken.contains(&rendered) => return Ok(rendered),
        0 => format!("{rendered}-%d"),
        1 => rendered,
        _ => return Err(PatternError::TwoCounters),
    };
    let (prefix, suffix) = numbered.split_once("%d").unwrap_or((&numbered, ""));
    let next = taken
        .iter()
        .filter_map(|t| counter(t, prefix, suffix))
        .map(|n| n.saturating_add(1))
        .max()
        .unwrap_or(0);
    Ok(format!("{prefix}{next}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2024-03-05T14:07:09+01:00").unwrap_or_default()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn go_layouts_format_the_creation_date() {
        let t = at();
        assert_eq!(go_date(&t, "2006-01-02_15-04-05"), "2024-03-05_14-07-09");
        assert_eq!(go_date(&t, "06.1.2 3:4:5 PM"), "24.3.5 2:7:9 PM");
        assert_eq!(go_date(&t, "Mon Jan _2 03"), "Tue Mar  5 02");
        assert_eq!(go_date(&t, "Monday January"), "Tuesday March");
        assert_eq!(go_date(&t, "-0700 Z07:00 x"), "+0100 +01:00 x");
    }

    #[test]
    fn templates_render_the_documented_forms_only() {
        let t = at();
        assert_eq!(
            render("{{ creation_date|date:'2006-01-02_15-04-05' }}", &t).as_deref(),
            Ok("2024-03-05_14-07-09")
        );
        assert_eq!(
            render("auto-{{creation_date | date:\"2006-01-02\"}}-%d", &t).as_deref(),
            Ok("auto-2024-03-05-%d")
        );
        assert_eq!(render("snap%d", &t).as_deref(), Ok("snap%d"));
        assert!(matches!(
            render("{{ creation_date }}", &t),
            Err(PatternError::Template(_))
        ));
        assert!(matches!(
            render("{{ other|date:'2006' }}", &t),
            Err(PatternError::Template(_))
        ));
        assert!(matches!(
            render("{% if x %}a{% endif %}", &t),
            Err(PatternError::Template(_))
        ));
        assert_eq!(
            render("{{ creation_date", &t),
            Err(PatternError::Unterminated)
        );
    }

    #[test]
    fn counters_follow_the_highest_taken_number() {
        let t = at();
        assert_eq!(next_name("", &t, &[]).as_deref(), Ok("snap0"));
        assert_eq!(
            next_name("snap%d", &t, &names(&["snap0", "snap3", "other7", "snapx"])).as_deref(),
            Ok("snap4")
        );
        assert_eq!(
            next_name("a%d-b", &t, &names(&["a2-b", "a9-c"])).as_deref(),
            Ok("a3-b")
        );
        assert_eq!(next_name("%d%d", &t, &[]), Err(PatternError::TwoCounters));
        // Without %d: the name as is, then -0, -1...
        let p = "{{ creation_date|date:'2006-01-02' }}";
        assert_eq!(next_name(p, &t, &[]).as_deref(), Ok("2024-03-05"));
        assert_eq!(
            next_name(p, &t, &names(&["2024-03-05"])).as_deref(),
            Ok("2024-03-05-0")
        );
        assert_eq!(
            next_name(p, &t, &names(&["2024-03-05", "2024-03-05-0"])).as_deref(),
            Ok("2024-03-05-1")
        );
    }
}
