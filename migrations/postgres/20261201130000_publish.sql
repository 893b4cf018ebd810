-- The publish direction (issue 13): a transactional outbox the application
-- writes in the same transaction as its own change, and the sessions parity
-- publishes with.
--
-- parity_outbox: one row per write to publish, applied per DID in id order.
-- An application enqueues with plain SQL (README "Publishing"):
--   INSERT INTO parity_outbox (did, collection, rkey, op, record)
--   VALUES ('did:plc:…', 'app.bsky.feed.post', NULL, 'create', '{"$type":…}');
-- rkey NULL on a create: parity assigns a TID on first claim and stores it
-- before calling the PDS, so a retry reuses it. Every other column has a
-- default. status moves pending → in_flight → published (or pending_auth,
-- conflict, failed); lease_owner/lease_expires_at keep two parity
-- processes off the same DID.
CREATE TABLE IF NOT EXISTS parity_outbox (
    id               BIGSERIAL PRIMARY KEY,
    did              TEXT COLLATE "C" NOT NULL,
    collection       TEXT COLLATE "C" NOT NULL,
    rkey             TEXT COLLATE "C",
    op               TEXT NOT NULL CHECK (op IN ('create', 'update', 'delete')),
    record           JSONB,
    swap_cid         TEXT,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'in_flight', 'published', 'pending_auth', 'conflict', 'failed')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    error            TEXT,
    uri              TEXT,
    cid              TEXT,
    rev              TEXT,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at     TIMESTAMPTZ,
    CHECK ((op = 'delete') = (record IS NULL)),
    CHECK (op = 'create' OR rkey IS NOT NULL)
);
-- The claim: the oldest due row of each DID that is not finished.
CREATE INDEX IF NOT EXISTS parity_outbox_open_idx ON parity_outbox (did, id)
    WHERE status IN ('pending', 'in_flight', 'pending_auth');
CREATE INDEX IF NOT EXISTS parity_outbox_status_idx ON parity_outbox (status, next_attempt_at);

-- parity_sessions: one session per DID (app password today; OAuth with
-- DPoP-bound tokens would be another auth_kind). Tokens are encrypted at
-- rest (AEAD, key from auth.key_file or PARITY_AUTH_KEY): the columns hold
-- ciphertext only. refresh_owner/refresh_until make a refresh single-flight
-- across processes (refresh tokens are single-use).
CREATE TABLE IF NOT EXISTS parity_sessions (
    did              TEXT COLLATE "C" PRIMARY KEY,
    handle           TEXT,
    pds              TEXT NOT NULL,
    auth_kind        TEXT NOT NULL DEFAULT 'app_password',
    access_token     TEXT NOT NULL,
    refresh_token    TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'expired')),
    error            TEXT,
    refresh_owner    TEXT,
    refresh_until    TIMESTAMPTZ,
    refreshed_at     TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
