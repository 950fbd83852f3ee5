//! Snapshot expiry times: a new snapshot's from a span (`snapshots.expiry`, syntax in
//! [`ctl_api::expiry`]), a request's `expires_at`, and whether a stored one has passed.
//! Pure functions.
//!
//! Stored times are RFC 3339 in UTC, whole seconds; `""` means never, and so does the zero
//! time (`0001-01-01T00:00:00Z`, Go's zero `time.Time`) in requests.

use ctl_api::expiry::Span;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A span or time that cannot be used as an expiry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    #[error(transparent)]
    Span(#[from] ctl_api::expiry::SpanError),
    #[error("invalid expires_at \"{0}\": expected an RFC 3339 time")]
    Time(String),
    #[error("expiry \"{0}\" is beyond the dates ctl can represent")]
    Range(String),
}

/// Format a stored expiry: RFC 3339, UTC, whole seconds.
pub fn format(t: OffsetDateTime) -> Result<String, ExpiryError> {
    let utc = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .map_err(|_| ExpiryError::Range(t.to_string()))?;
    utc.format(&Rfc3339)
        .map_err(|_| ExpiryError::Range(t.to_string()))
}

/// The expiry of a snapshot taken at `now` under span `text` (`""`: never).
pub fn from_span(text: &str, now: OffsetDateTime) -> Result<String, ExpiryError> {
    match Span::parse(text)? {
        None => Ok(String::new()),
        Some(span) => format(
            span.after(now)
                .ok_or_else(|| ExpiryError::Range(text.to_string()))?,
        ),
    }
}

/// An `expires_at` of a request as stored: `""` for empty or the zero time (year 1 and
/// before), else normalized to UTC.
pub fn from_request(text: &str) -> Result<String, ExpiryError> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(String::new());
    }
    let parsed =
        OffsetDateTime::parse(t, &Rfc3339).map_err(|_| ExpiryError::Time(text.to_string()))?;
    if parsed.to_offset(time::UtcOffset::UTC).year() <= 1 {
        return Ok(String::new());
    }
    format(parsed)
}

/// Whether a stored expiry has passed at `now` (never for `""`, or one that cannot be read,
/// which is kept rather than deleted).
pub fn has_passed(stored: &str, now: OffsetDateTime) -> bool {
    !stored.is_empty() && OffsetDateTime::parse(stored, &Rfc3339).is_ok_and(|t| t <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &Rfc3339).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    #[test]
    fn request_times_are_normalized_and_zero_means_never() {
        assert_eq!(from_request(""), Ok(String::new()));
        assert_eq!(from_request("0001-01-01T00:00:00Z"), Ok(String::new()));
        assert_eq!(
            from_request("2030-01-02T03:04:05.678+02:00").as_deref(),
            Ok("2030-01-02T01:04:05Z")
        );
        assert!(matches!(
            from_request("tomorrow"),
            Err(ExpiryError::Time(_))
        ));
    }

    #[test]
    fn spans_give_times_after_now() {
        let now = at("2030-01-01T00:00:00.5Z");
        assert_eq!(from_span("2d", now).as_deref(), Ok("2030-01-03T00:00:00Z"));
        assert_eq!(
            from_span("1M 2H", now).as_deref(),
            Ok("2030-01-01T02:01:00Z")
        );
        assert_eq!(from_span("", now), Ok(String::new()));
        assert!(matches!(from_span("2x", now), Err(ExpiryError::Span(_))));
        assert!(matches!(
            from_span("99999999y", now),
            Err(ExpiryError::Range(_))
        ));
    }

    #[test]
    fn only_stored_times_at_or_before_now_have_passed() {
        let now = at("2030-01-01T00:00:00Z");
        assert!(has_passed("2029-12-31T23:59:59Z", now));
        assert!(has_passed("2030-01-01T00:00:00Z", now));
        assert!(!has_passed("2030-01-01T00:00:01Z", now));
        assert!(!has_passed("", now));
        assert!(!has_passed("garbage", now));
    }
}
