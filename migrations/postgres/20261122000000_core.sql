-- parity's own state: stream cursors, delete tombstones, per-repo state.
-- Keys and revs use the "C" collation: byte order is what TIDs and URIs
-- mean, and it makes every index comparison a memcmp.
CREATE TABLE IF NOT EXISTS parity_cursors (
    stream     TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    cursor     BIGINT NOT NULL CHECK (cursor >= 0),
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS parity_tombstones (
    uri        TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    rev        TEXT COLLATE "C" NOT NULL,
    deleted_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS parity_tombstones_deleted_at_idx ON parity_tombstones (deleted_at);

CREATE TABLE IF NOT EXISTS parity_repos (
    did        TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    handle     TEXT,
    status     TEXT NOT NULL DEFAULT 'active',
    active     BOOLEAN NOT NULL DEFAULT TRUE,
    rev        TEXT COLLATE "C",
    updated_at TIMESTAMPTZ NOT NULL
);
