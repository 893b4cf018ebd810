-- `claim_queued` takes each kind of claimable DID from an index range of
-- its own: the oldest pending one from a partial index (PostgreSQL's
-- planner otherwise walks the primary key past every DID already done,
-- since pending ones sit at the end of the ids), and an earlier run's
-- failures oldest first. One `ORDER BY id` over all three kinds read every
-- row of the run per claim: 37-44 ms with 200,000 DIDs queued, quadratic
-- over a network-sized run.
CREATE INDEX IF NOT EXISTS parity_import_queue_pending_idx ON parity_import_queue (run, id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS parity_import_queue_failed_idx ON parity_import_queue (run, status, updated_at);
