-- Per-writer stream positions of a consumer with several writer connections
-- (database.writers > 1). Each writer commits its share of a batch with its
-- own row here; in the same transaction, after taking the watermark lock,
-- parity_cursors(stream) becomes the lowest of these rows once every writer
-- has one. parity_cursors stays the only position anything reads.
CREATE TABLE IF NOT EXISTS parity_writer_cursors (
    stream     TEXT COLLATE "C" NOT NULL,
    writer     INTEGER NOT NULL CHECK (writer >= 0),
    cursor     BIGINT NOT NULL CHECK (cursor >= 0),
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (stream, writer)
);
