-- What one import page costs PostgreSQL, statement by statement (issue 15
-- benchmark b, BENCHMARKS.md session 27): a whole-repo import writes each
-- collection of a repo as one page of up to 100 rows in its own
-- transaction, then sweeps the collection (the DELETE of rows older than
-- the snapshot rev, finding none in a new repo) and writes its floor.
-- Here: N repos (default 2,000) of 100 new like rows each, server-side
-- only (no client, no transfer), each variant into empty tables, every
-- statement static PL/pgSQL (prepared and cached as sqlx's are). The
-- row arrays are built before the clock starts.
-- Variants:
--   insert   plain INSERT … SELECT FROM UNNEST of the page (the row work
--            COPY does too: heap, WAL, three indexes, the json check);
--   upsert   + ON CONFLICT (uri) DO UPDATE … WHERE excluded.rev > rev;
--   parity   + the guards asked once per statement (parity's shape for
--            one repo's collection, `postgres_upsert.rs`);
--   sweep    the sweep's DELETE over the page's range after the page was
--            written (nothing older to remove), timed alone;
--   floor    the sweep floor's one-row upsert, timed alone.
-- Prints µs per statement and per row. Run on a scratch database (it
-- makes and drops schema import_page):
--   psql -At "$TEST_PG_URL" -v n=2000 -f benches/sql/import_page_pg.sql
\set ON_ERROR_STOP 1
\if :{?n}
\else
\set n 2000
\endif
\set schema import_page
\ir parity_tables.sql

CREATE FUNCTION run(variant text, n int) RETURNS TABLE (v text, us_stmt numeric, us_row numeric) AS $$
DECLARE
  t0 timestamptz; total interval := '0'; p_did text; lo text; hi text;
  uris text[]; dids text[]; rkeys text[]; cids text[]; revs text[]; recs text[];
  su text[]; sc text[]; ca timestamptz[]; p_rev text := '3kzzzzzzzzz22';
BEGIN
  FOR i IN 1..n LOOP
    p_did := 'did:plc:' || left(md5(i::text), 24);
    lo := 'at://' || p_did || '/app.bsky.feed.like/';
    hi := 'at://' || p_did || '/app.bsky.feed.like0';
    SELECT array_agg(lo || r), array_agg(p_did), array_agg(r), array_agg('bafyrei' || md5(r || p_did)),
           array_agg(p_rev), array_agg(format('{"$type":"app.bsky.feed.like","subject":{"uri":"at://did:plc:%s/app.bsky.feed.post/%s","cid":"bafyrei%s"},"createdAt":"2026-07-04T12:00:00.000Z"}', left(md5(r), 24), r, md5(p_did || r))),
           array_agg(format('at://did:plc:%s/app.bsky.feed.post/%s', left(md5(r), 24), r)), array_agg('bafyrei' || md5(p_did || r)),
           array_agg(now())
      INTO uris, dids, rkeys, cids, revs, recs, su, sc, ca
      FROM (SELECT '3k' || lpad(g::text, 11, '0') AS r FROM generate_series(1, 100) g) x;
    IF variant IN ('sweep', 'floor') THEN
      INSERT INTO likes (uri, did, rkey, cid, rev, record, synced_at, subject_uri, subject_cid, created_at)
        SELECT w.uri, w.did, w.rkey, w.cid, w.rev, w.record::json, now(), w.subject_uri, w.subject_cid, w.created_at
        FROM UNNEST(uris, dids, rkeys, cids, revs, recs, su, sc, ca) AS w(uri, did, rkey, cid, rev, record, subject_uri, subject_cid, created_at);
    END IF;
    t0 := clock_timestamp();
    IF variant = 'insert' THEN
      INSERT INTO likes (uri, did, rkey, cid, rev, record, synced_at, subject_uri, subject_cid, created_at)
        SELECT w.uri, w.did, w.rkey, w.cid, w.rev, w.record::json, now(), w.subject_uri, w.subject_cid, w.created_at
        FROM UNNEST(uris, dids, rkeys, cids, revs, recs, su, sc, ca) AS w(uri, did, rkey, cid, rev, record, subject_uri, subject_cid, created_at);
    ELSIF variant = 'upsert' THEN
      INSERT INTO likes (uri, did, rkey, cid, rev, record, synced_at, subject_uri, subject_cid, created_at)
        SELECT w.uri, w.did, w.rkey, w.cid, w.rev, w.record::json, now(), w.subject_uri, w.subject_cid, w.created_at
        FROM UNNEST(uris, dids, rkeys, cids, revs, recs, su, sc, ca) AS w(uri, did, rkey, cid, rev, record, subject_uri, subject_cid, created_at)
        ON CONFLICT (uri) DO UPDATE SET did = excluded.did, rkey = excluded.rkey, cid = excluded.cid, rev = excluded.rev,
          record = excluded.record, synced_at = CASE WHEN likes.cid = excluded.cid THEN likes.synced_at ELSE excluded.synced_at END,
          subject_uri = excluded.subject_uri, subject_cid = excluded.subject_cid, created_at = excluded.created_at
        WHERE excluded.rev > likes.rev;
    ELSIF variant = 'parity' THEN
      INSERT INTO likes (uri, did, rkey, cid, rev, record, synced_at, subject_uri, subject_cid, created_at)
        SELECT w.uri, w.did, w.rkey, w.cid, w.rev, w.record::json, now(), w.subject_uri, w.subject_cid, w.created_at
        FROM UNNEST(uris, dids, rkeys, cids, revs, recs, su, sc, ca) AS w(uri, did, rkey, cid, rev, record, subject_uri, subject_cid, created_at)
        WHERE ((SELECT NOT EXISTS (SELECT 1 FROM parity_tombstones t1 WHERE t1.uri >= lo AND t1.uri < hi))
               OR NOT EXISTS (SELECT 1 FROM parity_tombstones ts WHERE ts.uri = w.uri AND ts.rev >= w.rev OFFSET 0))
          AND ((SELECT NOT EXISTS (SELECT 1 FROM parity_sweep_floors f1 WHERE f1.did = p_did AND f1.collection = 'app.bsky.feed.like'))
               OR NOT EXISTS (SELECT 1 FROM parity_sweep_floors f WHERE f.did = w.did AND f.collection = split_part(w.uri, '/', 4) AND f.rev > w.rev OFFSET 0))
          AND NOT EXISTS (SELECT 1 FROM parity_repos r WHERE r.did = p_did AND r.status IN ('deleted', 'takendown'))
        ON CONFLICT (uri) DO UPDATE SET did = excluded.did, rkey = excluded.rkey, cid = excluded.cid, rev = excluded.rev,
          record = excluded.record, synced_at = CASE WHEN likes.cid = excluded.cid THEN likes.synced_at ELSE excluded.synced_at END,
          subject_uri = excluded.subject_uri, subject_cid = excluded.subject_cid, created_at = excluded.created_at
        WHERE excluded.rev > likes.rev;
    ELSIF variant = 'sweep' THEN
      DELETE FROM likes WHERE uri >= lo AND uri < hi AND likes.rev < p_rev;
    ELSIF variant = 'floor' THEN
      INSERT INTO parity_sweep_floors (did, collection, rev) VALUES (p_did, 'app.bsky.feed.like', p_rev)
        ON CONFLICT (did, collection) DO UPDATE SET rev = excluded.rev WHERE excluded.rev > parity_sweep_floors.rev;
    END IF;
    total := total + (clock_timestamp() - t0);
  END LOOP;
  v := variant;
  us_stmt := round((extract(epoch FROM total) * 1e6 / n)::numeric, 1);
  us_row := round(us_stmt / 100, 2);
  RETURN NEXT;
END $$ LANGUAGE plpgsql;

\pset format aligned
SELECT * FROM run('insert', :n);
TRUNCATE likes;
SELECT * FROM run('upsert', :n);
TRUNCATE likes;
SELECT * FROM run('parity', :n);
TRUNCATE likes;
SELECT * FROM run('sweep', :n);
TRUNCATE likes;
SELECT * FROM run('floor', :n);
DROP SCHEMA import_page CASCADE;
