-- The record tables stop storing `uri` (issue 12 item 4): it is always
-- 'at://' || did || '/' || collection || '/' || rkey, so each table now
-- computes it as a VIRTUAL generated column, indexed by a unique index
-- (what `uri TEXT PRIMARY KEY` was). The column keeps its name, place and
-- values; rows are ~70 bytes (about a tenth) smaller, so more fit a page.
-- SQLite cannot turn a column into a generated one in place, so each
-- table is rebuilt (the documented create-copy-drop-rename procedure),
-- with the same columns and the same index names.
--
-- Refused, loudly, before anything changes: a row whose stored `uri` is
-- not the one its did, collection and rkey give (only a mapper writing
-- another collection into a built-in table could have stored one), and
-- an index or trigger parity did not create on these tables (dropping the
-- table would drop it). The README ("Upgrading: record tables compute
-- uri") says what to do in either case.
CREATE TEMP TABLE parity_uri_layout_check (
    mismatch TEXT CONSTRAINT "a row's uri is not at://did/collection/rkey: see the README, Upgrading: record tables compute uri" CHECK (mismatch IS NULL),
    foreign_object TEXT CONSTRAINT "a record table has an index or trigger parity did not create: drop it, migrate, create it again (README, Upgrading: record tables compute uri)" CHECK (foreign_object IS NULL)
);

INSERT INTO parity_uri_layout_check (mismatch) SELECT uri FROM posts WHERE uri IS NOT ('at://' || did || '/app.bsky.feed.post/' || rkey) LIMIT 1;
INSERT INTO parity_uri_layout_check (foreign_object) SELECT name FROM sqlite_schema WHERE tbl_name = 'posts' AND type IN ('index', 'trigger') AND name NOT IN ('sqlite_autoindex_posts_1', 'posts_did_idx', 'posts_reply_parent_uri_idx', 'posts_reply_root_uri_idx');
INSERT INTO parity_uri_layout_check (mismatch) SELECT uri FROM likes WHERE uri IS NOT ('at://' || did || '/app.bsky.feed.like/' || rkey) LIMIT 1;
INSERT INTO parity_uri_layout_check (foreign_object) SELECT name FROM sqlite_schema WHERE tbl_name = 'likes' AND type IN ('index', 'trigger') AND name NOT IN ('sqlite_autoindex_likes_1', 'likes_did_idx', 'likes_subject_uri_idx');
INSERT INTO parity_uri_layout_check (mismatch) SELECT uri FROM reposts WHERE uri IS NOT ('at://' || did || '/app.bsky.feed.repost/' || rkey) LIMIT 1;
INSERT INTO parity_uri_layout_check (foreign_object) SELECT name FROM sqlite_schema WHERE tbl_name = 'reposts' AND type IN ('index', 'trigger') AND name NOT IN ('sqlite_autoindex_reposts_1', 'reposts_did_idx', 'reposts_subject_uri_idx');
INSERT INTO parity_uri_layout_check (mismatch) SELECT uri FROM follows WHERE uri IS NOT ('at://' || did || '/app.bsky.graph.follow/' || rkey) LIMIT 1;
INSERT INTO parity_uri_layout_check (foreign_object) SELECT name FROM sqlite_schema WHERE tbl_name = 'follows' AND type IN ('index', 'trigger') AND name NOT IN ('sqlite_autoindex_follows_1', 'follows_did_idx', 'follows_subject_did_idx');
INSERT INTO parity_uri_layout_check (mismatch) SELECT uri FROM blocks WHERE uri IS NOT ('at://' || did || '/app.bsky.graph.block/' || rkey) LIMIT 1;
INSERT INTO parity_uri_layout_check (foreign_object) SELECT name FROM sqlite_schema WHERE tbl_name = 'blocks' AND type IN ('index', 'trigger') AND name NOT IN ('sqlite_autoindex_blocks_1', 'blocks_did_idx', 'blocks_subject_did_idx');
INSERT INTO parity_uri_layout_check (mismatch) SELECT uri FROM profiles WHERE uri IS NOT ('at://' || did || '/app.bsky.actor.profile/' || rkey) LIMIT 1;
INSERT INTO parity_uri_layout_check (foreign_object) SELECT name FROM sqlite_schema WHERE tbl_name = 'profiles' AND type IN ('index', 'trigger') AND name NOT IN ('sqlite_autoindex_profiles_1', 'profiles_did_idx');
INSERT INTO parity_uri_layout_check (mismatch) SELECT uri FROM records WHERE uri IS NOT ('at://' || did || '/' || collection || '/' || rkey) LIMIT 1;
INSERT INTO parity_uri_layout_check (foreign_object) SELECT name FROM sqlite_schema WHERE tbl_name = 'records' AND type IN ('index', 'trigger') AND name NOT IN ('sqlite_autoindex_records_1', 'records_did_idx', 'records_collection_idx');
DROP TABLE parity_uri_layout_check;

-- Views users made on these tables survive the rename (they are resolved
-- when used); legacy renaming leaves them unchecked while a table is away.
PRAGMA legacy_alter_table = ON;

CREATE TABLE posts_new (
    uri              TEXT NOT NULL GENERATED ALWAYS AS ('at://' || did || '/app.bsky.feed.post/' || rkey) VIRTUAL,
    did              TEXT NOT NULL,
    rkey             TEXT NOT NULL,
    cid              TEXT NOT NULL,
    rev              TEXT NOT NULL,
    record           TEXT NOT NULL,
    synced_at        TEXT NOT NULL,
    text             TEXT,
    created_at       TEXT,
    reply_parent_uri TEXT,
    reply_root_uri   TEXT,
    langs            TEXT
);
INSERT INTO posts_new (did, rkey, cid, rev, record, synced_at, text, created_at, reply_parent_uri, reply_root_uri, langs)
    SELECT did, rkey, cid, rev, record, synced_at, text, created_at, reply_parent_uri, reply_root_uri, langs FROM posts ORDER BY rowid;
DROP TABLE posts;
ALTER TABLE posts_new RENAME TO posts;
CREATE UNIQUE INDEX posts_uri_key ON posts (uri);
CREATE INDEX posts_did_idx ON posts (did);
CREATE INDEX posts_reply_parent_uri_idx ON posts (reply_parent_uri);
CREATE INDEX posts_reply_root_uri_idx ON posts (reply_root_uri);

CREATE TABLE likes_new (
    uri              TEXT NOT NULL GENERATED ALWAYS AS ('at://' || did || '/app.bsky.feed.like/' || rkey) VIRTUAL,
    did         TEXT NOT NULL,
    rkey        TEXT NOT NULL,
    cid         TEXT NOT NULL,
    rev         TEXT NOT NULL,
    record      TEXT NOT NULL,
    synced_at   TEXT NOT NULL,
    subject_uri TEXT,
    subject_cid TEXT,
    created_at  TEXT
);
INSERT INTO likes_new (did, rkey, cid, rev, record, synced_at, subject_uri, subject_cid, created_at)
    SELECT did, rkey, cid, rev, record, synced_at, subject_uri, subject_cid, created_at FROM likes ORDER BY rowid;
DROP TABLE likes;
ALTER TABLE likes_new RENAME TO likes;
CREATE UNIQUE INDEX likes_uri_key ON likes (uri);
CREATE INDEX likes_did_idx ON likes (did);
CREATE INDEX likes_subject_uri_idx ON likes (subject_uri);

CREATE TABLE reposts_new (
    uri              TEXT NOT NULL GENERATED ALWAYS AS ('at://' || did || '/app.bsky.feed.repost/' || rkey) VIRTUAL,
    did         TEXT NOT NULL,
    rkey        TEXT NOT NULL,
    cid         TEXT NOT NULL,
    rev         TEXT NOT NULL,
    record      TEXT NOT NULL,
    synced_at   TEXT NOT NULL,
    subject_uri TEXT,
    subject_cid TEXT,
    created_at  TEXT
);
INSERT INTO reposts_new (did, rkey, cid, rev, record, synced_at, subject_uri, subject_cid, created_at)
    SELECT did, rkey, cid, rev, record, synced_at, subject_uri, subject_cid, created_at FROM reposts ORDER BY rowid;
DROP TABLE reposts;
ALTER TABLE reposts_new RENAME TO reposts;
CREATE UNIQUE INDEX reposts_uri_key ON reposts (uri);
CREATE INDEX reposts_did_idx ON reposts (did);
CREATE INDEX reposts_subject_uri_idx ON reposts (subject_uri);

CREATE TABLE follows_new (
    uri              TEXT NOT NULL GENERATED ALWAYS AS ('at://' || did || '/app.bsky.graph.follow/' || rkey) VIRTUAL,
    did         TEXT NOT NULL,
    rkey        TEXT NOT NULL,
    cid         TEXT NOT NULL,
    rev         TEXT NOT NULL,
    record      TEXT NOT NULL,
    synced_at   TEXT NOT NULL,
    subject_did TEXT,
    created_at  TEXT
);
INSERT INTO follows_new (did, rkey, cid, rev, record, synced_at, subject_did, created_at)
    SELECT did, rkey, cid, rev, record, synced_at, subject_did, created_at FROM follows ORDER BY rowid;
DROP TABLE follows;
ALTER TABLE follows_new RENAME TO follows;
CREATE UNIQUE INDEX follows_uri_key ON follows (uri);
CREATE INDEX follows_did_idx ON follows (did);
CREATE INDEX follows_subject_did_idx ON follows (subject_did);

CREATE TABLE blocks_new (
    uri              TEXT NOT NULL GENERATED ALWAYS AS ('at://' || did || '/app.bsky.graph.block/' || rkey) VIRTUAL,
    did         TEXT NOT NULL,
    rkey        TEXT NOT NULL,
    cid         TEXT NOT NULL,
    rev         TEXT NOT NULL,
    record      TEXT NOT NULL,
    synced_at   TEXT NOT NULL,
    subject_did TEXT,
    created_at  TEXT
);
INSERT INTO blocks_new (did, rkey, cid, rev, record, synced_at, subject_did, created_at)
    SELECT did, rkey, cid, rev, record, synced_at, subject_did, created_at FROM blocks ORDER BY rowid;
DROP TABLE blocks;
ALTER TABLE blocks_new RENAME TO blocks;
CREATE UNIQUE INDEX blocks_uri_key ON blocks (uri);
CREATE INDEX blocks_did_idx ON blocks (did);
CREATE INDEX blocks_subject_did_idx ON blocks (subject_did);

CREATE TABLE profiles_new (
    uri              TEXT NOT NULL GENERATED ALWAYS AS ('at://' || did || '/app.bsky.actor.profile/' || rkey) VIRTUAL,
    did          TEXT NOT NULL,
    rkey         TEXT NOT NULL,
    cid          TEXT NOT NULL,
    rev          TEXT NOT NULL,
    record       TEXT NOT NULL,
    synced_at    TEXT NOT NULL,
    display_name TEXT,
    description  TEXT
);
INSERT INTO profiles_new (did, rkey, cid, rev, record, synced_at, display_name, description)
    SELECT did, rkey, cid, rev, record, synced_at, display_name, description FROM profiles ORDER BY rowid;
DROP TABLE profiles;
ALTER TABLE profiles_new RENAME TO profiles;
CREATE UNIQUE INDEX profiles_uri_key ON profiles (uri);
CREATE INDEX profiles_did_idx ON profiles (did);

CREATE TABLE records_new (
    uri              TEXT NOT NULL GENERATED ALWAYS AS ('at://' || did || '/' || collection || '/' || rkey) VIRTUAL,
    did        TEXT NOT NULL,
    rkey       TEXT NOT NULL,
    cid        TEXT NOT NULL,
    rev        TEXT NOT NULL,
    record     TEXT NOT NULL,
    synced_at  TEXT NOT NULL,
    collection TEXT
);
INSERT INTO records_new (did, rkey, cid, rev, record, synced_at, collection)
    SELECT did, rkey, cid, rev, record, synced_at, collection FROM records ORDER BY rowid;
DROP TABLE records;
ALTER TABLE records_new RENAME TO records;
CREATE UNIQUE INDEX records_uri_key ON records (uri);
CREATE INDEX records_did_idx ON records (did);
CREATE INDEX records_collection_idx ON records (collection);

PRAGMA legacy_alter_table = OFF;
