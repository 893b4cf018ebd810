-- Where PostgreSQL's time goes in parity's batch upsert (issue 12 item 5,
-- BENCHMARKS.md "PostgreSQL: the upsert statement by statement"): 5,000
-- new like rows per batch (bench keys: every row a new URI and DID), 10
-- batches per variant, server-side only (no client, no transfer), each
-- variant into its own copy of tables already holding 200,000 rows.
-- Variants, each adding one thing to the one before:
--   insert   plain INSERT … SELECT FROM UNNEST (the work COPY does too:
--            heap, WAL, three indexes, the json check);
--   conflict + ON CONFLICT (uri) DO UPDATE … WHERE excluded.rev > rev;
--   guards   + parity's three guards (tombstone, sweep floor, account
--            status): parity's statement as `postgres.rs` builds it;
--   revs     + the per-DID rev upsert into parity_repos parity writes
--            with every batch (one row per DID: 5,000 here);
--   tomb, floor, status: `conflict` with one guard each, to see which
--            guard costs what;
--   once     (session 23, landed for one repo's rows) `guards` asked once
--            per statement first (a floor of the repo's collection, a
--            tombstone in its URI range, a purging status of its DID), per
--            row only when the repo has one (it has none here): the shape
--            `postgres_upsert.rs` uses when every row is one repo's
--            collection (the first row's here, as the cost does not
--            depend on it);
--   probe    (tried in session 10, not kept: no gain) `guards` with the
--            account-status guard answered once per
--            batch: one `SELECT` of the batch's DIDs whose status purges
--            (timed with the batch), then `v.did <> ALL(those)` per row.
-- Prints ms per batch and µs per row. Run on a scratch database (it makes
-- and drops schema upsert_prof):
--   psql -At "$TEST_PG_URL" -f benches/sql/upsert_guards.sql
\set ON_ERROR_STOP 1
\timing off
\set schema upsert_prof
\ir parity_tables.sql

-- Rows: batch b (0 = the 200,000 already there, 1..50 the measured ones).
CREATE FUNCTION gen(lo int, hi int) RETURNS TABLE (
    uri text, did text, rkey text, cid text, rev text, record text,
    subject_uri text, subject_cid text, created_at timestamptz)
LANGUAGE sql AS $$
  SELECT 'at://did:plc:' || substr(md5(n::text), 1, 24) || '/app.bsky.feed.like/3k' || substr(md5('r'||n), 1, 11),
         'did:plc:' || substr(md5(n::text), 1, 24),
         '3k' || substr(md5('r'||n), 1, 11),
         'bafyrei' || md5('c'||n) || substr(md5('d'||n), 1, 20),
         '3l' || substr(md5('v'||n), 1, 11),
         '{"$type":"app.bsky.feed.like","subject":{"uri":"at://did:plc:' || substr(md5('s'||n), 1, 24)
           || '/app.bsky.feed.post/3kabcdefghijk","cid":"bafyreib' || md5('x'||n) || '"},"createdAt":"2024-11-30T12:00:00.000Z"}',
         'at://did:plc:' || substr(md5('s'||n), 1, 24) || '/app.bsky.feed.post/3kabcdefghijk',
         'bafyreib' || md5('x'||n),
         '2024-11-30T12:00:00Z'::timestamptz
  FROM generate_series(lo, hi - 1) n $$;

INSERT INTO likes SELECT uri, did, rkey, cid, rev, record::json, now(), subject_uri, subject_cid, created_at FROM gen(0, 200000);
INSERT INTO parity_repos (did, rev, updated_at) SELECT did, rev, now() FROM gen(0, 200000) ON CONFLICT DO NOTHING;
INSERT INTO parity_tombstones SELECT 'x' || uri, rev, now() FROM gen(0, 50000);
-- The measured rows' accounts have committed before (as most events'
-- accounts have), so the status guard finds their rows.
INSERT INTO parity_repos (did, rev, updated_at) SELECT did, '2' || rev, now() FROM gen(1000000, 1050000) ON CONFLICT DO NOTHING;

-- One copy of the tables per variant, so every variant inserts into the
-- same starting state.
CREATE TABLE results (variant text, batch int, ms float8);
CREATE PROCEDURE fresh(v text) LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('DROP TABLE IF EXISTS likes_%s, repos_%s', v, v);
  EXECUTE format('CREATE TABLE likes_%s (LIKE likes INCLUDING ALL)', v);
  EXECUTE format('INSERT INTO likes_%s SELECT * FROM likes', v);
  EXECUTE format('CREATE TABLE repos_%s (LIKE parity_repos INCLUDING ALL)', v);
  EXECUTE format('INSERT INTO repos_%s SELECT * FROM parity_repos', v);
END $$;
-- The batches as arrays (what parity binds) and as COPY text.
CREATE TABLE batches AS
  SELECT b, array_agg(uri) u, array_agg(did) d, array_agg(rkey) k, array_agg(cid) c,
         array_agg(rev) r, array_agg(record) j, array_agg(subject_uri) su,
         array_agg(subject_cid) sc, array_agg(created_at) ca
  FROM (SELECT (row_number() OVER () - 1) / 5000 + 1 AS b, * FROM gen(1000000, 1050000)) s
  GROUP BY b;
VACUUM ANALYZE;

CREATE PROCEDURE run(v text) LANGUAGE plpgsql AS $$
DECLARE
  t0 timestamptz; bt record;
  conflict text := ' ON CONFLICT (uri) DO UPDATE SET cid = excluded.cid, rev = excluded.rev, record = excluded.record, synced_at = excluded.synced_at, subject_uri = excluded.subject_uri, subject_cid = excluded.subject_cid, created_at = excluded.created_at WHERE excluded.rev > %1$I.rev';
  tomb text := 'NOT EXISTS (SELECT 1 FROM parity_tombstones ts WHERE ts.uri = v.uri AND ts.rev >= v.rev)';
  floor text := 'NOT EXISTS (SELECT 1 FROM parity_sweep_floors f WHERE f.did = v.did AND f.collection = split_part(v.uri, ''/'', 4) AND f.rev > v.rev)';
  status text := 'NOT EXISTS (SELECT 1 FROM %2$I r WHERE r.did = v.did AND r.status IN (''deleted'', ''takendown''))';
  guards text := ' WHERE ' || CASE v WHEN 'tomb' THEN tomb WHEN 'floor' THEN floor WHEN 'status' THEN status
    WHEN 'probe' THEN tomb || ' AND ' || floor || ' AND v.did <> ALL($10)'
    WHEN 'once' THEN '((SELECT NOT EXISTS (SELECT 1 FROM parity_tombstones t1 WHERE t1.uri >= $11 AND t1.uri < $12)) OR '
      || tomb || ') AND ((SELECT NOT EXISTS (SELECT 1 FROM parity_sweep_floors f1 WHERE f1.did = $13 AND f1.collection = $14)) OR '
      || floor || ') AND NOT EXISTS (SELECT 1 FROM %2$I r WHERE r.did = $13 AND r.status IN (''deleted'', ''takendown''))'
    ELSE tomb || ' AND ' || floor || ' AND ' || status END;
  purged text[];
  base text := 'INSERT INTO %1$I SELECT v.u, v.d, v.k, v.c, v.r, v.j::json, now(), v.su, v.sc, v.ca FROM UNNEST($1, $2, $3, $4, $5, $6, $7, $8, $9) AS v(u, d, k, c, r, j, su, sc, ca)';
  stmt text;
BEGIN
  CALL fresh(v);
  stmt := base;
  IF v IN ('guards', 'revs', 'tomb', 'floor', 'status', 'probe', 'once') THEN
    stmt := replace(stmt, 'AS v(u, d, k, c, r, j, su, sc, ca)', 'AS v(uri, did, k, c, rev, j, su, sc, ca)');
    stmt := replace(stmt, 'v.u, v.d,', 'v.uri, v.did,');
    stmt := replace(stmt, 'v.r,', 'v.rev,');
    stmt := stmt || guards;
  END IF;
  IF v <> 'insert' THEN stmt := stmt || conflict; END IF;
  stmt := format(stmt, 'likes_' || v, 'repos_' || v);
  COMMIT;
  FOR bt IN SELECT * FROM batches WHERE b <= 10 ORDER BY b LOOP
    t0 := clock_timestamp();
    IF v = 'probe' THEN
      EXECUTE format('SELECT COALESCE(array_agg(did), ''{}'') FROM %I WHERE did = ANY($1) '
        'AND status IN (''deleted'', ''takendown'')', 'repos_' || v) INTO purged USING bt.d;
    END IF;
    EXECUTE stmt USING bt.u, bt.d, bt.k, bt.c, bt.r, bt.j, bt.su, bt.sc, bt.ca, purged,
      'at://' || bt.d[1] || '/app.bsky.feed.like/', 'at://' || bt.d[1] || '/app.bsky.feed.like0',
      bt.d[1], 'app.bsky.feed.like'::text;
    IF v = 'revs' THEN
      EXECUTE format('INSERT INTO %I (did, rev, updated_at) SELECT d, r, now() FROM UNNEST($1, $2) AS x(d, r) '
        'ON CONFLICT (did) DO UPDATE SET rev = excluded.rev, updated_at = excluded.updated_at '
        'WHERE %I.rev IS NULL OR excluded.rev > %I.rev', 'repos_' || v, 'repos_' || v, 'repos_' || v)
        USING bt.d, bt.r;
    END IF;
    COMMIT;
    INSERT INTO results VALUES (v, bt.b, extract(epoch FROM clock_timestamp() - t0) * 1000);
    COMMIT;
  END LOOP;
END $$;

CALL run('insert');
CALL run('conflict');
CALL run('guards');
CALL run('revs');
CALL run('insert');
CALL run('revs');
CALL run('tomb');
CALL run('floor');
CALL run('status');
CALL run('guards');
CALL run('probe');
CALL run('once');
CALL run('status');
CALL run('guards');
CALL run('probe');
CALL run('once');
SELECT variant, round(avg(ms)::numeric, 1) AS ms_per_batch,
       round((avg(ms) * 1000 / 5000)::numeric, 2) AS us_per_row
FROM results GROUP BY variant ORDER BY us_per_row;
DROP SCHEMA upsert_prof CASCADE;
