-- Events every member publishes for the others: NOTIFY ctl_events carries only a row's id.
-- The leader deletes rows older than a minute.
CREATE TABLE cluster_events (
    id      BIGSERIAL PRIMARY KEY,
    member  TEXT NOT NULL,
    body    TEXT NOT NULL,
    created BIGINT NOT NULL
);

CREATE INDEX cluster_events_created ON cluster_events (created);
