-- When a snapshot is deleted by the daemon (RFC 3339 in UTC), or '' for never.
ALTER TABLE snapshots ADD COLUMN expires_at TEXT NOT NULL DEFAULT '';
