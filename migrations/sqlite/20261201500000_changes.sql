-- The change feed (issue 14): every row change parity committed, appended in
-- the same transaction as the change when `feed.enabled` is on. `seq` is
-- strictly increasing in commit order (SQLite has one writer at a time;
-- AUTOINCREMENT never reuses a seq, even after the newest rows are swept).
-- Swept by `feed.retention`.
CREATE TABLE IF NOT EXISTS parity_changes (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    table_name   TEXT NOT NULL,
    op           TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
    uri          TEXT NOT NULL,
    did          TEXT NOT NULL,
    collection   TEXT NOT NULL,
    rkey         TEXT NOT NULL,
    cid          TEXT,
    rev          TEXT,
    record       TEXT,
    -- JSON array of the at-uris the record points at (like/repost subject,
    -- reply parent and root, quoted record), for `subject:` channels; on a
    -- delete, those of the row it removed. NULL when none.
    subjects     TEXT,
    committed_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS parity_changes_committed_at ON parity_changes (committed_at);

-- One row of feed state: this database's random id (NATS JetStream message
-- ids are `<id>:<seq>`) and the last seq handed to the broker.
CREATE TABLE IF NOT EXISTS parity_feed_state (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    database_id    TEXT NOT NULL,
    -- The newest seq the retention sweep removed: a cursor below it has lost
    -- changes.
    swept_seq      INTEGER NOT NULL DEFAULT 0,
    published_seq  INTEGER NOT NULL DEFAULT 0,
    updated_at     TEXT NOT NULL
);
