-- Copies of the parity tables the scripts of benches/sql write or read
-- (`likes`, the repos, tombstones and sweep floors), with the collations
-- and indexes parity's migrations give them, so a script measures the
-- store's work without parity. Included (`\ir`) by upsert_guards.sql
-- and import_page_pg.sql after `\set schema <name>`: (re)makes that
-- schema, puts it on the search_path, and sets the session as parity's
-- import connections are (`synchronous_commit = off`).
DROP SCHEMA IF EXISTS :"schema" CASCADE;
CREATE SCHEMA :"schema";
SET search_path = :"schema";
SET synchronous_commit = off;
SET client_min_messages = warning;
CREATE TABLE likes (
    uri text COLLATE "C" PRIMARY KEY, did text COLLATE "C" NOT NULL,
    rkey text COLLATE "C" NOT NULL, cid text COLLATE "C" NOT NULL,
    rev text COLLATE "C" NOT NULL, record json NOT NULL,
    synced_at timestamptz NOT NULL, subject_uri text COLLATE "C",
    subject_cid text, created_at timestamptz);
CREATE INDEX ON likes (did);
CREATE INDEX ON likes (subject_uri);
CREATE TABLE parity_repos (
    did text COLLATE "C" PRIMARY KEY, handle text,
    status text NOT NULL DEFAULT 'active', active boolean NOT NULL DEFAULT true,
    rev text COLLATE "C", updated_at timestamptz NOT NULL,
    resync_requested_at timestamptz, pds text, identity_resolved_at timestamptz);
CREATE TABLE parity_tombstones (
    uri text COLLATE "C" PRIMARY KEY, rev text COLLATE "C" NOT NULL,
    deleted_at timestamptz NOT NULL);
CREATE INDEX ON parity_tombstones (deleted_at);
CREATE TABLE parity_sweep_floors (
    did text COLLATE "C", collection text COLLATE "C", rev text COLLATE "C" NOT NULL,
    PRIMARY KEY (did, collection));
