//! Timestamps as the API writes them. Its own module so that every layer (db, events,
//! operations, images, instances) can stamp times without depending on another.

/// The current time as Incus writes it (RFC 3339, UTC).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
