#!/usr/bin/env bash
# The change log's append on PostgreSQL: parity's `INSERT … SELECT FROM
# UNNEST` against `COPY … FROM STDIN` text, a lever tried in session 10 and
# not kept (BENCHMARKS.md, "The change log's cost to the consumer": no
# measurable change end to end). Each appends 1,250 like rows (one
# writer's share of a 5,000-event batch) 10 times, alternately, through
# psql, so both include the client's send. Prints each statement's time;
# µs per row = ms × 0.8. Run on a scratch database (it makes and drops
# schema pgcopy, and writes /tmp/parity_change_log_copy.tsv):
#   benches/sql/change_log_copy.sh "$TEST_PG_URL" | grep -A1 -E '^(INSERT 0|COPY) 1250'
# The INSERT here is sent with its arrays as text literals (psql cannot
# bind binary arrays), which costs the server more than parity's binary
# binds do: compare COPY with `change_log_append.sql`'s first line
# (the same INSERT with binary arrays, server-side only) too.
set -euo pipefail
url="${1:?usage: change_log_copy.sh POSTGRES_URL}"
migrations="$(cd "$(dirname "$0")/../../migrations/postgres" && pwd)"
copy="\\copy pgcopy.parity_changes (table_name, op, uri, did, collection, rkey, cid, rev, record, subjects, committed_at) FROM '/tmp/parity_change_log_copy.tsv'"
{
  cat <<'SQL'
\set ON_ERROR_STOP 1
DROP SCHEMA IF EXISTS pgcopy CASCADE;
CREATE SCHEMA pgcopy;
SET search_path = pgcopy;
SET synchronous_commit = off;
SQL
  # parity_changes exactly as parity's migrations make it.
  echo "\\i $migrations/20261201500000_changes.sql"
  echo "\\i $migrations/20261201720000_changes_no_time_index.sql"
  cat <<'SQL'
CREATE TABLE src AS SELECT n, 'likes'::text t, 'upsert'::text o,
  'at://did:plc:' || md5(n::text) || '/app.bsky.feed.like/3k' || substr(md5('r'||n),1,11) AS uri,
  'did:plc:' || md5(n::text) AS did, 'app.bsky.feed.like'::text l, '3k' || substr(md5('r'||n),1,11) AS rkey,
  'bafyrei' || md5('c'||n) || md5('d'||n) AS cid, '3l' || substr(md5('v'||n),1,11) AS rev,
  '{"$type":"app.bsky.feed.like","subject":{"uri":"at://did:plc:' || md5('s'||n) || '/app.bsky.feed.post/3kabcdefghijk","cid":"bafyreib' || md5('x'||n) || md5('y'||n) || '"},"createdAt":"2024-11-30T12:00:00.000Z"}' AS record,
  '["at://did:plc:' || md5('s'||n) || '/app.bsky.feed.post/3kabcdefghijk"]' AS subjects
FROM generate_series(1,1250) n;
\copy (SELECT t,o,uri,did,l,rkey,cid,rev,record,subjects,now() FROM pgcopy.src ORDER BY n) TO '/tmp/parity_change_log_copy.tsv'
PREPARE ins(text[],text[],text[],text[],text[],text[],text[],text[],text[],text[]) AS
  INSERT INTO parity_changes (table_name, op, uri, did, collection, rkey, cid, rev, record, subjects, committed_at)
  SELECT v.t, v.o, v.u, v.d, v.l, v.k, v.c, v.r, v.j::json, v.s, statement_timestamp()
  FROM UNNEST($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) WITH ORDINALITY AS v(t,o,u,d,l,k,c,r,j,s,n) ORDER BY v.n;
SELECT format('EXECUTE ins(%L,%L,%L,%L,%L,%L,%L,%L,%L,%L)',
  array_agg(t ORDER BY n), array_agg(o ORDER BY n), array_agg(uri ORDER BY n), array_agg(did ORDER BY n),
  array_agg(l ORDER BY n), array_agg(rkey ORDER BY n), array_agg(cid ORDER BY n), array_agg(rev ORDER BY n),
  array_agg(record ORDER BY n), array_agg(subjects ORDER BY n)) AS insert_stmt FROM src \gset
\timing on
SQL
  for _ in $(seq 1 10); do
    echo ':insert_stmt ;'
    echo "$copy"
  done
  cat <<'SQL'
\timing off
SELECT count(*) AS rows_appended FROM pgcopy.parity_changes;
DROP SCHEMA pgcopy CASCADE;
SQL
} | psql -X "$url"
