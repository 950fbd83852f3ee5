-- Storage pools: where instances' own layers, custom volumes and (btrfs) image copies live.
-- `default` is the layout every install already had: a `dir` pool on the state directory.
CREATE TABLE storage_pools (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    driver      TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    config      TEXT NOT NULL DEFAULT '{}'
);

INSERT INTO storage_pools (name, driver, description) VALUES ('default', 'dir', 'Default ctl pool');

-- Custom volumes (`/1.0/storage-pools/P/volumes/custom/N`); instances' and images' volumes
-- are not rows: they are derived from the instances and the pools' files.
CREATE TABLE storage_volumes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    pool_id     INTEGER NOT NULL REFERENCES storage_pools (id),
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    config      TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    UNIQUE (pool_id, name)
);

CREATE TABLE storage_volume_snapshots (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    volume_id   INTEGER NOT NULL REFERENCES storage_volumes (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    config      TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL DEFAULT '',
    UNIQUE (volume_id, name)
);

-- The default profile gains the root disk LXD and Incus clients expect to see.
UPDATE profiles
SET devices = json_set(devices, '$.root', json('{"path":"/","pool":"default","type":"disk"}'))
WHERE name = 'default'
  AND json_extract(devices, '$.root') IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM json_each(profiles.devices)
      WHERE json_extract(json_each.value, '$.type') = 'disk'
        AND json_extract(json_each.value, '$.path') = '/'
  );
