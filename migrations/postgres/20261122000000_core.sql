-- parity's own state: stream cursors, delete tombstones, per-repo state.
CREATE TABLE IF NOT EXISTS parity_cursors (
    stream     TEXT PRIMARY KEY NOT NULL,
    cursor     BIGINT NOT NULL CHECK (cursor >= 0),
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS parity_tombstones (
    uri        TEXT PRIMARY KEY NOT NULL,
    rev        TEXT NOT NULL,
    deleted_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS parity_tombstones_deleted_at_idx ON parity_tombstones (deleted_at);

CREATE TABLE IF NOT EXISTS parity_repos (
    did        TEXT PRIMARY KEY NOT NULL,
    handle     TEXT,
    status     TEXT NOT NULL DEFAULT 'active',
    active     BOOLEAN NOT NULL DEFAULT TRUE,
    rev        TEXT,
    updated_at TIMESTAMPTZ NOT NULL
);
