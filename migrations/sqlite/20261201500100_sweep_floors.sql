-- The rev at which each complete import listing of a (did, collection) pair
-- was taken. A record absent from that listing did not exist at that rev, so
-- a write of it at an older rev (a replayed event, or an older listing that
-- finishes later) is refused: the re-import sweep can only tombstone rows it
-- finds, and this covers the records parity never stored.
CREATE TABLE IF NOT EXISTS parity_sweep_floors (
    did        TEXT NOT NULL,
    collection TEXT NOT NULL,
    rev        TEXT NOT NULL,
    PRIMARY KEY (did, collection)
);
