-- Profiles as the cluster shares them: every member brings its own `profiles` table in
-- line with these (same columns as migrations/0011_cluster_profiles.sql).
CREATE TABLE cluster_profiles (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    config      TEXT NOT NULL DEFAULT '{}',
    devices     TEXT NOT NULL DEFAULT '{}'
);
