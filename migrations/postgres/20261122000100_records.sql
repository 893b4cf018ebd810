-- The tables of the built-in mappers and the generic catch-all.
-- Standard columns on every table: uri, did, rkey, cid, rev, record, synced_at.
CREATE TABLE IF NOT EXISTS posts (
    uri              TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    did              TEXT COLLATE "C" NOT NULL,
    rkey             TEXT COLLATE "C" NOT NULL,
    cid              TEXT COLLATE "C" NOT NULL,
    rev              TEXT COLLATE "C" NOT NULL,
    record           JSON NOT NULL,
    synced_at        TIMESTAMPTZ NOT NULL,
    text             TEXT,
    created_at       TIMESTAMPTZ,
    reply_parent_uri TEXT COLLATE "C",
    reply_root_uri   TEXT COLLATE "C",
    langs            JSON
);
CREATE INDEX IF NOT EXISTS posts_did_idx ON posts (did);
CREATE INDEX IF NOT EXISTS posts_reply_parent_uri_idx ON posts (reply_parent_uri);
CREATE INDEX IF NOT EXISTS posts_reply_root_uri_idx ON posts (reply_root_uri);

CREATE TABLE IF NOT EXISTS likes (
    uri         TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    did         TEXT COLLATE "C" NOT NULL,
    rkey        TEXT COLLATE "C" NOT NULL,
    cid         TEXT COLLATE "C" NOT NULL,
    rev         TEXT COLLATE "C" NOT NULL,
    record      JSON NOT NULL,
    synced_at   TIMESTAMPTZ NOT NULL,
    subject_uri TEXT COLLATE "C",
    subject_cid TEXT,
    created_at  TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS likes_did_idx ON likes (did);
CREATE INDEX IF NOT EXISTS likes_subject_uri_idx ON likes (subject_uri);

CREATE TABLE IF NOT EXISTS reposts (
    uri         TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    did         TEXT COLLATE "C" NOT NULL,
    rkey        TEXT COLLATE "C" NOT NULL,
    cid         TEXT COLLATE "C" NOT NULL,
    rev         TEXT COLLATE "C" NOT NULL,
    record      JSON NOT NULL,
    synced_at   TIMESTAMPTZ NOT NULL,
    subject_uri TEXT COLLATE "C",
    subject_cid TEXT,
    created_at  TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS reposts_did_idx ON reposts (did);
CREATE INDEX IF NOT EXISTS reposts_subject_uri_idx ON reposts (subject_uri);

CREATE TABLE IF NOT EXISTS follows (
    uri         TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    did         TEXT COLLATE "C" NOT NULL,
    rkey        TEXT COLLATE "C" NOT NULL,
    cid         TEXT COLLATE "C" NOT NULL,
    rev         TEXT COLLATE "C" NOT NULL,
    record      JSON NOT NULL,
    synced_at   TIMESTAMPTZ NOT NULL,
    subject_did TEXT COLLATE "C",
    created_at  TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS follows_did_idx ON follows (did);
CREATE INDEX IF NOT EXISTS follows_subject_did_idx ON follows (subject_did);

CREATE TABLE IF NOT EXISTS blocks (
    uri         TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    did         TEXT COLLATE "C" NOT NULL,
    rkey        TEXT COLLATE "C" NOT NULL,
    cid         TEXT COLLATE "C" NOT NULL,
    rev         TEXT COLLATE "C" NOT NULL,
    record      JSON NOT NULL,
    synced_at   TIMESTAMPTZ NOT NULL,
    subject_did TEXT COLLATE "C",
    created_at  TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS blocks_did_idx ON blocks (did);
CREATE INDEX IF NOT EXISTS blocks_subject_did_idx ON blocks (subject_did);

CREATE TABLE IF NOT EXISTS profiles (
    uri          TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    did          TEXT COLLATE "C" NOT NULL,
    rkey         TEXT COLLATE "C" NOT NULL,
    cid          TEXT COLLATE "C" NOT NULL,
    rev          TEXT COLLATE "C" NOT NULL,
    record       JSON NOT NULL,
    synced_at    TIMESTAMPTZ NOT NULL,
    display_name TEXT,
    description  TEXT
);
CREATE INDEX IF NOT EXISTS profiles_did_idx ON profiles (did);

CREATE TABLE IF NOT EXISTS records (
    uri        TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    did        TEXT COLLATE "C" NOT NULL,
    rkey       TEXT COLLATE "C" NOT NULL,
    cid        TEXT COLLATE "C" NOT NULL,
    rev        TEXT COLLATE "C" NOT NULL,
    record     JSON NOT NULL,
    synced_at  TIMESTAMPTZ NOT NULL,
    collection TEXT COLLATE "C"
);
CREATE INDEX IF NOT EXISTS records_did_idx ON records (did);
CREATE INDEX IF NOT EXISTS records_collection_idx ON records (collection);
