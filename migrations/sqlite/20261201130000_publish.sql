-- The publish direction (issue 13): a transactional outbox the application
-- writes in the same transaction as its own change, and the sessions parity
-- publishes with. Same columns as the PostgreSQL migration; timestamps are
-- RFC 3339 text in UTC with microseconds (the format parity binds), and
-- the defaults produce that same format so text comparison orders them.
--
-- parity_outbox: one row per write to publish, applied per DID in id order.
-- An application enqueues with plain SQL (README "Publishing"):
--   INSERT INTO parity_outbox (did, collection, rkey, op, record)
--   VALUES ('did:plc:…', 'app.bsky.feed.post', NULL, 'create', '{"$type":…}');
-- rkey NULL on a create: parity assigns a TID on first claim and stores it
-- before calling the PDS, so a retry reuses it.
CREATE TABLE IF NOT EXISTS parity_outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    did              TEXT NOT NULL,
    collection       TEXT NOT NULL,
    rkey             TEXT,
    op               TEXT NOT NULL CHECK (op IN ('create', 'update', 'delete')),
    record           TEXT CHECK (record IS NULL OR json_valid(record)),
    swap_cid         TEXT,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'in_flight', 'published', 'pending_auth', 'conflict', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    error            TEXT,
    uri              TEXT,
    cid              TEXT,
    rev              TEXT,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    updated_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    published_at     TEXT,
    CHECK ((op = 'delete') = (record IS NULL)),
    CHECK (op = 'create' OR rkey IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS parity_outbox_open_idx ON parity_outbox (did, id)
    WHERE status IN ('pending', 'in_flight', 'pending_auth');
CREATE INDEX IF NOT EXISTS parity_outbox_status_idx ON parity_outbox (status, next_attempt_at);

-- parity_sessions: one session per DID; tokens hold AEAD ciphertext only.
CREATE TABLE IF NOT EXISTS parity_sessions (
    did              TEXT PRIMARY KEY,
    handle           TEXT,
    pds              TEXT NOT NULL,
    auth_kind        TEXT NOT NULL DEFAULT 'app_password',
    access_token     TEXT NOT NULL,
    refresh_token    TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'expired')),
    error            TEXT,
    refresh_owner    TEXT,
    refresh_until    TEXT,
    refreshed_at     TEXT,
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    updated_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
);
