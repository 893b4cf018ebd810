#!/usr/bin/env bash
# Index layouts for `likes` on SQLite (issue 12 item 4): what each layout
# the issue names costs in bytes per row and rows/s as the table grows,
# with keys like production's. Not parity: the sqlite3 shell alone, so
# the layouts are compared on the store's own work.
#
# Rows: N likes (default 1,000,000) by DIDs drawn from a pool of 250,000
# (random 24-character ids, uniform: the workload's 1M events touch about
# 250,000 accounts), rkeys increasing per DID as TIDs do, random subjects,
# the record JSON as parity stores it (about 250 bytes). Written in
# transactions of 5,000 rows (parity's batch), each an upsert with the rev
# guard, WAL, `synchronous = NORMAL`, parity's `wal_autocheckpoint` (40,000
# pages) and a page cache of CACHE_MIB (default 768, parity's default on a
# 24 GiB machine). The keys are a function of the row number, the same for
# every layout. Every row has the same length, as like rows nearly do:
# a table's pages hold a whole number of rows, so a few bytes less per row
# may save no page at all.
#
# Layouts:
#   today         parity's until session 17: rowid table, `uri TEXT PRIMARY KEY` (an
#                 automatic unique index), indexes on `did` and `subject_uri`;
#   without_rowid the same table `WITHOUT ROWID`, clustered on `uri`;
#   interned      DIDs interned to integers (`repos(id, did)`), the row
#                 holding `repo_id` instead of `did` (changes the columns);
#   no_did_index  today's without the `did` index (what that index costs);
#   virtual_uri   parity's since session 17: the same columns, `uri` a VIRTUAL generated column
#                 ('at://' || did || '/<collection>/' || rkey) with a unique
#                 index: the table no longer stores the URI, the index does.
#
# PAGE_SIZE (bytes, default 4096: SQLite's and parity's) and MMAP_MIB
# (default 0: parity's default `database.sqlite_mmap_mib`) apply to every
# layout. To see the regime of 10M rows against a 768 MiB cache in a
# tenth of the time, run 1M rows with CACHE_MIB=77.
#
# Usage: benches/sql/layout_sqlite.sh [N] [LAYOUT…]   (needs the sqlite3
# shell; writes under ${TMPDIR:-/tmp}; prints per-tenth rows/s, then
# bytes per row of the checkpointed file and its pages per table/index)
set -euo pipefail
n="${1:-1000000}"
shift || true
layouts=("$@")
[ ${#layouts[@]} -eq 0 ] && layouts=(today without_rowid interned no_did_index virtual_uri)
cache_mib="${CACHE_MIB:-768}"
page_size="${PAGE_SIZE:-4096}"
mmap_mib="${MMAP_MIB:-0}"
# SQLite ignores a page size that is not a power of two from 512 to
# 65536 without a word: refuse it here, so the header says what ran.
case "$page_size" in
  512|1024|2048|4096|8192|16384|32768|65536) ;;
  *) echo "PAGE_SIZE is '$page_size'; use a power of two from 512 to 65536" >&2; exit 2 ;;
esac
for v in "CACHE_MIB=$cache_mib" "MMAP_MIB=$mmap_mib"; do
  [[ "${v#*=}" =~ ^[0-9]+$ ]] || { echo "${v%%=*} is '${v#*=}'; use a whole number of MiB" >&2; exit 2; }
done
# parity's checkpoint threshold, 40,000 pages of 4 KiB: the same bytes
# whatever the page size.
ckpt=$(( 40000 * 4096 / page_size ))
batch=5000
dir="$(mktemp -d "${TMPDIR:-/tmp}/parity_layout.XXXXXX")"
trap 'rm -rf "$dir"' EXIT

# Row i's columns as SQL expressions of i (64-bit multiplicative hashes).
h1='((i * 2654435761) % 4294967296)'
h2='((i * 40503 + 977) % 4294967296)'
k="(($h1 * 7 + 3) % 250000)"
did="printf('did:plc:%08x%08x%08x', ($k * 2246822519) % 4294967296, ($k * 3266489917) % 4294967296, $k)"
rkey="printf('3m%011d', i)"
cid="printf('bafyrei%026x%026x', $h1 * 31, $h2 * 17)"
h3="((($h2 % 1000003) * 2654435761) % 4294967296)"
subj="printf('at://did:plc:%08x%08x%08x/app.bsky.feed.post/3l%011x', $h3, $h1, $h2 % 250000, $h1)"
scid="printf('bafyreib%025x%026x', $h2 * 13, $h1 * 29)"
record="'{\"\$type\":\"app.bsky.feed.like\",\"createdAt\":\"2026-12-02T04:30:01.674Z\",\"subject\":{\"cid\":\"' || $scid || '\",\"uri\":\"' || $subj || '\"}}'"
rest="$rkey, $cid, printf('3m%011d', i), $record, '2026-12-02T04:30:03.789980Z', $subj, $scid, '2026-12-02T04:30:01.674000Z'"

schema() {
  local cols="rkey TEXT NOT NULL, cid TEXT NOT NULL, rev TEXT NOT NULL, record TEXT NOT NULL, \
synced_at TEXT NOT NULL, subject_uri TEXT, subject_cid TEXT, created_at TEXT"
  case "$1" in
    today|no_did_index)
      echo "CREATE TABLE likes (uri TEXT PRIMARY KEY NOT NULL, did TEXT NOT NULL, $cols);"
      [ "$1" = today ] && echo "CREATE INDEX likes_did_idx ON likes (did);"
      echo "CREATE INDEX likes_subject_uri_idx ON likes (subject_uri);" ;;
    without_rowid)
      echo "CREATE TABLE likes (uri TEXT PRIMARY KEY NOT NULL, did TEXT NOT NULL, $cols) WITHOUT ROWID;"
      echo "CREATE INDEX likes_did_idx ON likes (did);"
      echo "CREATE INDEX likes_subject_uri_idx ON likes (subject_uri);" ;;
    virtual_uri)
      echo "CREATE TABLE likes (did TEXT NOT NULL, $cols, \
uri TEXT NOT NULL GENERATED ALWAYS AS ('at://' || did || '/app.bsky.feed.like/' || rkey) VIRTUAL);"
      echo "CREATE UNIQUE INDEX likes_uri_idx ON likes (uri);"
      echo "CREATE INDEX likes_did_idx ON likes (did);"
      echo "CREATE INDEX likes_subject_uri_idx ON likes (subject_uri);" ;;
    interned)
      echo "CREATE TABLE repos (id INTEGER PRIMARY KEY, did TEXT NOT NULL UNIQUE);"
      echo "CREATE TABLE likes (uri TEXT PRIMARY KEY NOT NULL, repo_id INTEGER NOT NULL, $cols);"
      echo "CREATE INDEX likes_repo_id_idx ON likes (repo_id);"
      echo "CREATE INDEX likes_subject_uri_idx ON likes (subject_uri);" ;;
    *) echo "unknown layout $1" >&2; exit 2 ;;
  esac
}

# One transaction of rows [a, b].
batch_sql() {
  local layout="$1" a="$2" b="$3"
  local rows="(SELECT value AS i FROM generate_series($a, $b))"
  local upd="ON CONFLICT(uri) DO UPDATE SET cid = excluded.cid, rev = excluded.rev, record = excluded.record, \
synced_at = excluded.synced_at WHERE excluded.rev > likes.rev"
  echo "BEGIN IMMEDIATE;"
  if [ "$layout" = interned ]; then
    echo "INSERT OR IGNORE INTO repos (did) SELECT $did FROM $rows;"
    echo "INSERT INTO likes SELECT 'at://' || $did || '/app.bsky.feed.like/' || $rkey, \
(SELECT id FROM repos WHERE did = $did), $rest FROM $rows WHERE true $upd;"
  elif [ "$layout" = virtual_uri ]; then
    echo "INSERT INTO likes (did, rkey, cid, rev, record, synced_at, subject_uri, subject_cid, created_at) \
SELECT $did, $rest FROM $rows WHERE true $upd;"
  else
    echo "INSERT INTO likes SELECT 'at://' || $did || '/app.bsky.feed.like/' || $rkey, $did, $rest \
FROM $rows WHERE true $upd;"
  fi
  echo "COMMIT;"
}

for layout in "${layouts[@]}"; do
  db="$dir/$layout.db"
  {
    echo "PRAGMA page_size = $page_size; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
    echo "PRAGMA wal_autocheckpoint = $ckpt; PRAGMA cache_size = -$((cache_mib * 1024));"
    schema "$layout"
  } | sqlite3 "$db" >/dev/null
  step=$(( (n / 10 + batch - 1) / batch * batch ))
  echo "== $layout: $n rows, cache $cache_mib MiB, pages of $page_size bytes, mmap $mmap_mib MiB"
  # One connection for the whole run (its page cache stays warm); a time
  # mark after each tenth.
  {
    echo "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = $ckpt;"
    echo "PRAGMA cache_size = -$((cache_mib * 1024)); PRAGMA busy_timeout = 5000;"
    echo "PRAGMA mmap_size = $((mmap_mib << 20));"
    echo "SELECT printf('T %d %.3f', 0, (julianday('now') - 2440587.5) * 86400.0);"
    for ((a = 1; a <= n; a += batch)); do
      b=$(( a + batch - 1 < n ? a + batch - 1 : n ))
      batch_sql "$layout" "$a" "$b"
      if (( b % step == 0 || b == n )); then
        echo "SELECT printf('T %d %.3f', $b, (julianday('now') - 2440587.5) * 86400.0);"
      fi
    done
  } | sqlite3 "$db" | awk '
    $1 == "T" { if (seen) { printf "  rows %9d–%-9d %8.0f rows/s\n", prow, $2, ($2 - prow) / ($3 - pt) }
                else { first = $3 }
                seen = 1; prow = $2; pt = $3; last = $3 }
    END { printf "  whole run %.0f rows/s\n", prow / (last - first) }'
  sqlite3 "$db" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
  bytes=$(stat -c %s "$db")
  awk -v b="$bytes" -v n="$n" 'BEGIN { printf "  %.0f bytes/row (%d bytes, checkpointed)\n", b / n, b }' 
  sqlite3 "$db" "SELECT printf('    %-24s %8d pages %7.1f MB %5.0f bytes/row', name, count(*), sum(pgsize) / 1e6, sum(pgsize) * 1.0 / $n) \
    FROM dbstat GROUP BY name ORDER BY sum(pgsize) DESC;" 2>/dev/null || true
  rm -f "$db" "$db-wal" "$db-shm"
done
