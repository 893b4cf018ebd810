-- Per-writer stream positions (database.writers > 1; see the PostgreSQL
-- migration of the same name). SQLite consumers have one writer, so this
-- table stays empty; it exists so the commit walker is the same on both.
CREATE TABLE IF NOT EXISTS parity_writer_cursors (
    stream     TEXT NOT NULL,
    writer     INTEGER NOT NULL CHECK (writer >= 0),
    cursor     INTEGER NOT NULL CHECK (cursor >= 0),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (stream, writer)
) WITHOUT ROWID;
