-- The PostgreSQL schema of a cluster's shared database (`db::store::Store::migrate`).
-- Every integer column is BIGINT: sqlx's PostgreSQL driver decodes i64 only from INT8.
-- The tables are the SQLite ones of `migrations/0009_trust.sql` and
-- `migrations/0010_cluster.sql`, column for column.

-- The server's own configuration, shared by every member.
CREATE TABLE server_config (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The trust store: TLS client certificates allowed on the HTTPS listeners.
CREATE TABLE certificates (
    fingerprint TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    name        TEXT NOT NULL,
    certificate TEXT NOT NULL,
    restricted  BIGINT NOT NULL DEFAULT 0,
    projects    TEXT NOT NULL DEFAULT '[]',
    description TEXT NOT NULL DEFAULT ''
);

-- The servers of the cluster. `heartbeat` is refreshed by the member itself.
CREATE TABLE cluster_members (
    name         TEXT PRIMARY KEY,
    address      TEXT NOT NULL UNIQUE,
    fingerprint  TEXT NOT NULL UNIQUE,
    certificate  TEXT NOT NULL,
    architecture TEXT NOT NULL DEFAULT '',
    description  TEXT NOT NULL DEFAULT '',
    state        TEXT NOT NULL DEFAULT 'online',
    heartbeat    BIGINT NOT NULL,
    created      BIGINT NOT NULL
);

-- The leader lease: one row; `term` grows by one each time the lease changes hands.
CREATE TABLE cluster_lease (
    id      BIGINT PRIMARY KEY CHECK (id = 1),
    holder  TEXT NOT NULL,
    term    BIGINT NOT NULL,
    expires BIGINT NOT NULL
);
INSERT INTO cluster_lease (id, holder, term, expires) VALUES (1, '', 0, 0);

-- Which member holds which instance (a reservation first, while the launch runs).
CREATE TABLE cluster_instances (
    name      TEXT PRIMARY KEY,
    member    TEXT NOT NULL REFERENCES cluster_members (name),
    evacuated BIGINT NOT NULL DEFAULT 0,
    placed    BIGINT NOT NULL
);
CREATE INDEX cluster_instances_member ON cluster_instances (member);

-- Pending join tokens: the SHA-256 of the secret, never the secret.
CREATE TABLE cluster_tokens (
    name          TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL UNIQUE,
    expires       BIGINT NOT NULL
);

-- Which members hold which image.
CREATE TABLE cluster_images (
    fingerprint TEXT NOT NULL,
    member      TEXT NOT NULL REFERENCES cluster_members (name) ON DELETE CASCADE,
    PRIMARY KEY (fingerprint, member)
);

-- Image aliases, global to the cluster.
CREATE TABLE cluster_image_aliases (
    name        TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL
);
