-- Instance backups: an Incus-format tarball of the instance (and its snapshots) kept as
-- containers/<instance>/backups/<name>. Deleting the instance deletes its backups.
CREATE TABLE backups (
    instance      TEXT NOT NULL REFERENCES instances (name) ON DELETE CASCADE ON UPDATE CASCADE,
    name          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL DEFAULT '',
    instance_only INTEGER NOT NULL DEFAULT 0,
    compression   TEXT NOT NULL DEFAULT 'gzip',
    PRIMARY KEY (instance, name)
);
