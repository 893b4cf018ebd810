-- A fifth import status, 'gone': the repo can never be imported (the
-- account was deleted, or its PDS answers RepoNotFound / RepoDeactivated).
-- Terminal: `parity resume` skips it; a newer #sync or `import --force`
-- queues the pair again. SQLite cannot change a CHECK constraint in place,
-- so the table is rebuilt with the same columns, ids and indexes.
CREATE TABLE parity_import_states_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    did              TEXT NOT NULL,
    collection       TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'in_progress', 'completed', 'failed', 'gone')),
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
INSERT INTO parity_import_states_new
    SELECT id, did, collection, status, cursor, rev, records_synced, records_skipped,
           records_failed, pages, started_at, completed_at, error, lease_owner,
           lease_expires_at, created_at, updated_at
    FROM parity_import_states;
DROP TABLE parity_import_states;
ALTER TABLE parity_import_states_new RENAME TO parity_import_states;
CREATE INDEX IF NOT EXISTS parity_import_states_status_idx ON parity_import_states (status, updated_at);
CREATE INDEX IF NOT EXISTS parity_import_states_updated_idx ON parity_import_states (updated_at);
