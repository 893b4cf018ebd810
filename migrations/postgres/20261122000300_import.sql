-- Backfill ("parity import") state: one row per (did, collection), the
-- listRecords cursor saved with each page's rows, counters, and a lease so
-- two importers never work on the same pair at once. collection '*' is a
-- request to discover the repo's collections (queued by the stream's
-- #sync / broken since-chain signal) that `parity resume` expands.
CREATE TABLE IF NOT EXISTS parity_import_states (
    id               BIGSERIAL PRIMARY KEY,
    did              TEXT COLLATE "C" NOT NULL,
    collection       TEXT COLLATE "C" NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'in_progress', 'completed', 'failed')),
    cursor           TEXT,
    rev              TEXT COLLATE "C",
    records_synced   BIGINT NOT NULL DEFAULT 0,
    records_skipped  BIGINT NOT NULL DEFAULT 0,
    records_failed   BIGINT NOT NULL DEFAULT 0,
    pages            BIGINT NOT NULL DEFAULT 0,
    started_at       TIMESTAMPTZ,
    completed_at     TIMESTAMPTZ,
    error            TEXT,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    UNIQUE (did, collection)
);
CREATE INDEX IF NOT EXISTS parity_import_states_status_idx ON parity_import_states (status, updated_at);
CREATE INDEX IF NOT EXISTS parity_import_states_updated_idx ON parity_import_states (updated_at);

-- Identity cache shared by every parity process on this database: the PDS
-- resolved for a DID and when. An #identity event clears
-- identity_resolved_at, so the next import resolves the DID again.
ALTER TABLE parity_repos ADD COLUMN IF NOT EXISTS pds TEXT;
ALTER TABLE parity_repos ADD COLUMN IF NOT EXISTS identity_resolved_at TIMESTAMPTZ;
