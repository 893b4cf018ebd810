-- The change log's append on PostgreSQL, statement by statement (issue 14,
-- BENCHMARKS.md "Where PostgreSQL's cost goes"): 1,250 like rows (one
-- writer's share of a 5,000-event batch) appended 20 times per variant;
-- prints ms per append, µs and WAL bytes per row. Run on a scratch
-- database (it makes and drops schema pgfeed_prof):
--   psql -At "$TEST_PG_URL" -f benches/sql/change_log_append.sql
\set ON_ERROR_STOP 1
DROP SCHEMA IF EXISTS pgfeed_prof CASCADE;
CREATE SCHEMA pgfeed_prof;
SET search_path = pgfeed_prof;
CREATE TABLE parity_changes (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name TEXT COLLATE "C" NOT NULL, op TEXT NOT NULL CHECK (op IN ('upsert','delete')),
    uri TEXT COLLATE "C" NOT NULL, did TEXT COLLATE "C" NOT NULL, collection TEXT COLLATE "C" NOT NULL,
    rkey TEXT COLLATE "C" NOT NULL, cid TEXT, rev TEXT COLLATE "C", record JSON, subjects TEXT,
    committed_at TIMESTAMPTZ NOT NULL);
CREATE INDEX parity_changes_committed_at ON parity_changes (committed_at);
CREATE TABLE changes_text (LIKE parity_changes INCLUDING ALL);
ALTER TABLE changes_text ALTER COLUMN record TYPE text;
CREATE TABLE changes_noidx (LIKE parity_changes INCLUDING IDENTITY INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE changes_noidx ADD PRIMARY KEY (seq);
-- 1250 rows like one writer's share of a 5000-event batch
CREATE TABLE src AS SELECT n,
  'at://did:plc:' || md5(n::text) || '/app.bsky.feed.like/3k' || substr(md5('r'||n),1,11) AS uri,
  'did:plc:' || md5(n::text) AS did, '3k' || substr(md5('r'||n),1,11) AS rkey,
  'bafyrei' || md5('c'||n) || md5('d'||n) AS cid, '3l' || substr(md5('v'||n),1,11) AS rev,
  '{"$type":"app.bsky.feed.like","subject":{"uri":"at://did:plc:' || md5('s'||n) || '/app.bsky.feed.post/3kabcdefghijk","cid":"bafyreib' || md5('x'||n) || md5('y'||n) || '"},"createdAt":"2024-11-30T12:00:00.000Z"}' AS record,
  '["at://did:plc:' || md5('s'||n) || '/app.bsky.feed.post/3kabcdefghijk"]' AS subjects
FROM generate_series(1,1250) n;
SELECT avg(length(record)) FROM src;
CREATE OR REPLACE FUNCTION pgfeed_prof.bench(label text, sql text, iters int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE a record; t0 timestamptz; w0 pg_lsn; i int; x bigint; ms float8; wal numeric;
BEGIN
  SELECT array_agg('likes'::text) t, array_agg('upsert'::text) o, array_agg(uri) u, array_agg(did) d,
    array_agg('app.bsky.feed.like'::text) l, array_agg(rkey) k, array_agg(cid) c, array_agg(rev) r,
    array_agg(record) j, array_agg(subjects) s INTO a FROM pgfeed_prof.src;
  t0 := clock_timestamp(); w0 := pg_current_wal_insert_lsn();
  FOR i IN 1..iters LOOP
    EXECUTE sql USING a.t, a.o, a.u, a.d, a.l, a.k, a.c, a.r, a.j, a.s;
  END LOOP;
  ms := extract(epoch from clock_timestamp() - t0) * 1000 / iters;
  wal := (pg_current_wal_insert_lsn() - w0) / iters / 1250.0;
  RETURN rpad(label,28) || to_char(ms,'9990.00') || ' ms/1250 rows ' || to_char(ms*1000/1250,'990.0') || ' us/row  WAL ' || to_char(wal,'99990') || ' B/row';
END $$;
CREATE TEMP TABLE stage (n int8, t text, o text, u text, d text, l text, k text, c text, r text, j json, s text);
SELECT bench('append json (current)', $q$INSERT INTO parity_changes (table_name, op, uri, did, collection, rkey, cid, rev, record, subjects, committed_at)
 SELECT v.t, v.o, v.u, v.d, v.l, v.k, v.c, v.r, v.j::json, v.s, statement_timestamp()
 FROM UNNEST($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) WITH ORDINALITY AS v(t,o,u,d,l,k,c,r,j,s,n) ORDER BY v.n$q$, 20);
SELECT bench('append text column', $q$INSERT INTO changes_text (table_name, op, uri, did, collection, rkey, cid, rev, record, subjects, committed_at)
 SELECT v.t, v.o, v.u, v.d, v.l, v.k, v.c, v.r, v.j, v.s, statement_timestamp()
 FROM UNNEST($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) WITH ORDINALITY AS v(t,o,u,d,l,k,c,r,j,s,n) ORDER BY v.n$q$, 20);
SELECT bench('append json, no ts index', $q$INSERT INTO changes_noidx (table_name, op, uri, did, collection, rkey, cid, rev, record, subjects, committed_at)
 SELECT v.t, v.o, v.u, v.d, v.l, v.k, v.c, v.r, v.j::json, v.s, statement_timestamp()
 FROM UNNEST($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) WITH ORDINALITY AS v(t,o,u,d,l,k,c,r,j,s,n) ORDER BY v.n$q$, 20);
SELECT bench('stage into temp (json)', $q$INSERT INTO stage SELECT v.n, v.t, v.o, v.u, v.d, v.l, v.k, v.c, v.r, v.j::json, v.s
 FROM UNNEST($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) WITH ORDINALITY AS v(t,o,u,d,l,k,c,r,j,s,n)$q$, 1);
SELECT bench('copy stage -> log', $q$INSERT INTO parity_changes (table_name, op, uri, did, collection, rkey, cid, rev, record, subjects, committed_at)
 SELECT t,o,u,d,l,k,c,r,j,s, statement_timestamp() FROM stage WHERE $1 IS NOT NULL ORDER BY n$q$, 20);
DROP SCHEMA pgfeed_prof CASCADE;
