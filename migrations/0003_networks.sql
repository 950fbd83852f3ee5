-- Managed networks, the addresses they hand out, profiles, and the instances' profile lists.
CREATE TABLE networks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    type        TEXT NOT NULL DEFAULT 'bridge',
    config      TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL
);

-- One IPv4 address per (network, instance, NIC device). An address is unique on its
-- network; deleting the instance or the network releases it.
CREATE TABLE network_leases (
    network   TEXT NOT NULL REFERENCES networks (name) ON DELETE CASCADE,
    instance  TEXT NOT NULL REFERENCES instances (name) ON DELETE CASCADE,
    device    TEXT NOT NULL,
    address   TEXT NOT NULL,
    hwaddr    TEXT NOT NULL DEFAULT '',
    static    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (network, instance, device),
    UNIQUE (network, address)
);

CREATE TABLE profiles (
    name        TEXT PRIMARY KEY NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    config      TEXT NOT NULL DEFAULT '{}',
    devices     TEXT NOT NULL DEFAULT '{}'
);

INSERT INTO profiles (name, description) VALUES ('default', 'Default ctl profile');

-- Daemon-wide facts that must survive restarts (e.g. whether the default network was made).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

ALTER TABLE instances ADD COLUMN profiles TEXT NOT NULL DEFAULT '["default"]';
