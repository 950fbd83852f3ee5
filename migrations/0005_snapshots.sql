-- Instance snapshots: the instance's record as it was, beside a copy of its upper layer in
-- containers/<instance>/snapshots/<name>/. Deleting the instance deletes its snapshots.
CREATE TABLE snapshots (
    instance   TEXT NOT NULL REFERENCES instances (name) ON DELETE CASCADE ON UPDATE CASCADE,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    config     TEXT NOT NULL DEFAULT '{}',
    devices    TEXT NOT NULL DEFAULT '{}',
    profiles   TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (instance, name)
);
