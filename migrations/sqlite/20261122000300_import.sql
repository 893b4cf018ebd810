-- Backfill ("parity import") state: one row per (did, collection), the
-- listRecords cursor saved with each page's rows, counters, and a lease so
-- two importers never work on the same pair at once. collection '*' is a
-- request to discover the repo's collections (queued by the stream's
-- #sync / broken since-chain signal) that `parity resume` expands.
CREATE TABLE IF NOT EXISTS parity_import_states (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    did              TEXT NOT NULL,
    collection       TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'in_progress', 'completed', 'failed')),
    cursor           TEXT,
    rev              TEXT,
    records_synced   INTEGER NOT NULL DEFAULT 0,
    records_skipped  INTEGER NOT NULL DEFAULT 0,
    records_failed   INTEGER NOT NULL DEFAULT 0,
    pages            INTEGER NOT NULL DEFAULT 0,
    started_at       TEXT,
    completed_at     TEXT,
    error            TEXT,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (did, collection)
);
CREATE INDEX IF NOT EXISTS parity_import_states_status_idx ON parity_import_states (status, updated_at);
CREATE INDEX IF NOT EXISTS parity_import_states_updated_idx ON parity_import_states (updated_at);

-- Identity cache shared by every parity process on this database: the PDS
-- resolved for a DID and when. An #identity event clears
-- identity_resolved_at, so the next import resolves the DID again.
ALTER TABLE parity_repos ADD COLUMN pds TEXT;
ALTER TABLE parity_repos ADD COLUMN identity_resolved_at TEXT;
