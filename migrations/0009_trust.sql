-- The server's own configuration (`GET/PUT/PATCH /1.0` `config`): `core.https_address`...
CREATE TABLE server_config (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The trust store: TLS client certificates allowed on the HTTPS listener.
CREATE TABLE certificates (
    fingerprint TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    name        TEXT NOT NULL,
    certificate TEXT NOT NULL,
    restricted  INTEGER NOT NULL DEFAULT 0,
    projects    TEXT NOT NULL DEFAULT '[]',
    description TEXT NOT NULL DEFAULT ''
);
