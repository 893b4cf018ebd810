-- parity's own state: stream cursors, delete tombstones, per-repo state.
CREATE TABLE IF NOT EXISTS parity_cursors (
    stream     TEXT PRIMARY KEY NOT NULL,
    cursor     INTEGER NOT NULL CHECK (cursor >= 0),
    updated_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS parity_tombstones (
    uri        TEXT PRIMARY KEY NOT NULL,
    rev        TEXT NOT NULL,
    deleted_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS parity_tombstones_deleted_at_idx ON parity_tombstones (deleted_at);

CREATE TABLE IF NOT EXISTS parity_repos (
    did        TEXT PRIMARY KEY NOT NULL,
    handle     TEXT,
    status     TEXT NOT NULL DEFAULT 'active',
    active     INTEGER NOT NULL DEFAULT 1,
    rev        TEXT,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
