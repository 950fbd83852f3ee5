-- Initial schema: images, their aliases, and instances.
CREATE TABLE images (
    fingerprint  TEXT PRIMARY KEY NOT NULL,
    filename     TEXT NOT NULL DEFAULT '',
    size         INTEGER NOT NULL,
    architecture TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    uploaded_at  TEXT NOT NULL,
    last_used_at TEXT NOT NULL DEFAULT '',
    public       INTEGER NOT NULL DEFAULT 0,
    cached       INTEGER NOT NULL DEFAULT 0,
    properties   TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE image_aliases (
    name        TEXT PRIMARY KEY NOT NULL,
    fingerprint TEXT NOT NULL REFERENCES images (fingerprint) ON DELETE CASCADE,
    description TEXT NOT NULL DEFAULT ''
);

CREATE TABLE instances (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    name              TEXT NOT NULL UNIQUE,
    description       TEXT NOT NULL DEFAULT '',
    architecture      TEXT NOT NULL,
    ephemeral         INTEGER NOT NULL DEFAULT 0,
    -- The overlay lower layer: an image in use can never be deleted (RESTRICT).
    image_fingerprint TEXT NOT NULL REFERENCES images (fingerprint) ON DELETE RESTRICT,
    config            TEXT NOT NULL DEFAULT '{}',
    devices           TEXT NOT NULL DEFAULT '{}',
    created_at        TEXT NOT NULL,
    last_used_at      TEXT NOT NULL DEFAULT '',
    -- The running init (0 when stopped) and its identity, for finding it after a restart.
    init_pid          INTEGER NOT NULL DEFAULT 0,
    init_starttime    INTEGER NOT NULL DEFAULT 0,
    monitor_pid       INTEGER NOT NULL DEFAULT 0
);
