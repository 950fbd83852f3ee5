-- Work begun and not yet finished: written before a multi-step change touches the host
-- (a bridge, an image directory, a container directory) and removed when its record is
-- complete. At start-up every row left here is a change a crash interrupted: ctld finishes
-- or undoes it (see daemon/src/db/intents.rs).
CREATE TABLE intents (
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
