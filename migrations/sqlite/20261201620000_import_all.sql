-- `parity import --all`: the relay listings and the queue of DIDs they fill.
--
-- A run is one `import --all` command: its relay and its collections
-- (`run` text, e.g. 'https://bsky.network *' or
-- 'https://bsky.network app.bsky.feed.like,app.bsky.feed.post').
-- parity_import_listings has one row per listing of a run ('*': listRepos;
-- an NSID: listReposByCollection of it) with the relay's cursor, saved in
-- the same transaction as the DIDs of the page, so the same command run
-- again continues where the listing stopped. A lease keeps two processes
-- from listing at once. parity_import_queue has one row per (run, DID):
-- 'pending' until an importer claims it under a lease, then 'completed'
-- or 'failed'. Completed DIDs are not fetched again by the same command.
CREATE TABLE IF NOT EXISTS parity_import_listings (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    run              TEXT NOT NULL,
    collection       TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'listing'
                     CHECK (status IN ('listing', 'completed', 'failed')),
    cursor           TEXT,
    pages            INTEGER NOT NULL DEFAULT 0,
    repos_listed     INTEGER NOT NULL DEFAULT 0,
    repos_queued     INTEGER NOT NULL DEFAULT 0,
    repos_inactive   INTEGER NOT NULL DEFAULT 0,
    repos_malformed  INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    completed_at     TEXT,
    UNIQUE (run, collection)
);

CREATE TABLE IF NOT EXISTS parity_import_queue (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    run              TEXT NOT NULL,
    did              TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'in_progress', 'completed', 'failed')),
    error            TEXT,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (run, did)
);
CREATE INDEX IF NOT EXISTS parity_import_queue_claim_idx ON parity_import_queue (run, status, id);
