-- The change feed (issue 14): every row change parity committed, appended in
-- the same transaction as the change when `feed.enabled` is on. `seq` is
-- strictly increasing in commit order (appends take a transaction-level lock
-- so that no later-committed change gets a smaller seq). Swept by
-- `feed.retention`.
CREATE TABLE IF NOT EXISTS parity_changes (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name   TEXT COLLATE "C" NOT NULL,
    op           TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
    uri          TEXT COLLATE "C" NOT NULL,
    did          TEXT COLLATE "C" NOT NULL,
    collection   TEXT COLLATE "C" NOT NULL,
    rkey         TEXT COLLATE "C" NOT NULL,
    cid          TEXT,
    rev          TEXT COLLATE "C",
    record       JSON,
    -- JSON array of the at-uris the record points at (like/repost subject,
    -- reply parent and root, quoted record), for `subject:` channels; on a
    -- delete, those of the row it removed. NULL when none.
    subjects     TEXT,
    committed_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS parity_changes_committed_at ON parity_changes (committed_at);

-- One row of feed state: this database's random id (NATS JetStream message
-- ids are `<id>:<seq>`, unique across databases publishing into one stream)
-- and the last seq handed to the broker, so a restart republishes from there.
CREATE TABLE IF NOT EXISTS parity_feed_state (
    id             SMALLINT PRIMARY KEY CHECK (id = 1),
    database_id    TEXT NOT NULL,
    -- The newest seq the retention sweep removed: a cursor below it has lost
    -- changes.
    swept_seq      BIGINT NOT NULL DEFAULT 0,
    published_seq  BIGINT NOT NULL DEFAULT 0,
    updated_at     TIMESTAMPTZ NOT NULL
);
