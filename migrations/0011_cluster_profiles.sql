-- Profiles as a cluster shares them (`db::store::Store`): the source every member's own
-- `profiles` table is brought in line with. Config and devices are JSON objects.
CREATE TABLE cluster_profiles (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    config      TEXT NOT NULL DEFAULT '{}',
    devices     TEXT NOT NULL DEFAULT '{}'
);
