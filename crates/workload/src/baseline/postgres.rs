//! The PostgreSQL store-limit baselines, one connection each, with
//! `synchronous_commit = off` as parity sets per batch:
//!
//! - [`Mode::Upsert`]: per table, one multi-row `INSERT … ON CONFLICT (uri)
//!   DO UPDATE … WHERE excluded.rev > rev` per chunk (chunked under the
//!   bind limit);
//! - [`Mode::Copy`]: per table, one `COPY … FROM STDIN` of the chunk's new
//!   rows. COPY cannot resolve conflicts: generated creates never collide
//!   (every create has a new key), and a collision would fail the run
//!   loudly rather than be measured;
//! - [`Mode::Unnest`]: per table, the same upsert with the rows bound as
//!   one text array per column and `INSERT … SELECT FROM UNNEST(…)`, the
//!   form parity's own upsert takes (without its guards): the store's
//!   price for parity's statement shape, apart from parity.
//!
//! Both delete with one `DELETE … WHERE uri = ANY(…)` per table plus a
//! multi-row tombstone upsert, and write identity/account events as
//! `parity_repos` upserts, then the cursor, in the chunk's transaction.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use sqlx::{Connection, PgConnection, Postgres, QueryBuilder};

use super::feed;
use super::schema::{DbColumn, writable};
use super::{Point, STANDARD};
use crate::event::{Generator, rfc3339};
use crate::rows::{Write, value_text};

/// How the baseline inserts rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Upsert,
    Copy,
    Unnest,
}

impl Mode {
    /// Every mode, in the order the benches list them.
    pub const ALL: [Mode; 3] = [Mode::Upsert, Mode::Unnest, Mode::Copy];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Upsert => "upsert",
            Mode::Copy => "copy",
            Mode::Unnest => "unnest",
        }
    }

    /// The mode called `name` (as [`Mode::name`] spells it).
    pub fn from_name(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// PostgreSQL's limit on bind parameters per statement.
const MAX_BINDS: usize = 65_535;

/// The writer.
pub struct PgBaseline {
    conn: PgConnection,
    mode: Mode,
    columns: HashMap<String, Vec<DbColumn>>,
    /// Rows of one table per statement at most (`None`: the whole chunk,
    /// under the bind limit).
    statement_rows: Option<usize>,
}

/// One row as text values in the table's writable column order.
type TextRow = Vec<Option<String>>;

impl PgBaseline {
    pub async fn connect(url: &str, mode: Mode) -> sqlx::Result<PgBaseline> {
        let opts: sqlx::postgres::PgConnectOptions = url.parse()?;
        let mut conn = PgConnection::connect_with(&opts).await?;
        // As parity's own connections (sqlx 0.9.0 leaves Nagle on): the
        // store's limit, not 40 ms waits for delayed ACKs.
        parity::store::tcp_nodelay::set_on_connections_to(opts.get_port())
            .map_err(sqlx::Error::Io)?;
        sqlx::query("SET synchronous_commit = off")
            .execute(&mut conn)
            .await?;
        Ok(PgBaseline {
            conn,
            mode,
            columns: HashMap::new(),
            statement_rows: None,
        })
    }

    /// At most `rows` rows of a table per statement (an import writes a
    /// page of 100 rows a statement), however many a transaction holds.
    pub fn with_statement_rows(mut self, rows: usize) -> PgBaseline {
        self.statement_rows = Some(rows.max(1));
        self
    }

    async fn load_columns(&mut self, table: &str, mapper_cols: &[String]) -> sqlx::Result<()> {
        if self.columns.contains_key(table) {
            return Ok(());
        }
        let rows: Vec<(String, String, bool, bool)> = sqlx::query_as(
            "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull, atthasdef \
             FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped \
             ORDER BY attnum",
        )
        .bind(table)
        .fetch_all(&mut self.conn)
        .await?;
        let cols: Vec<DbColumn> = rows
            .into_iter()
            .map(|(name, ty, notnull, hasdef)| DbColumn {
                name,
                ty,
                required: notnull && !hasdef,
            })
            .collect();
        self.columns
            .insert(table.to_owned(), writable(table, &cols, mapper_cols));
        Ok(())
    }

    /// Writes one chunk in one transaction, with the stream cursor.
    pub async fn write(&mut self, writes: &[Write], cursor: u64, stream: &str) -> sqlx::Result<()> {
        let now = rfc3339(chrono::Utc::now().timestamp_micros() as u64);
        let mut upserts: BTreeMap<&str, Vec<TextRow>> = BTreeMap::new();
        let mut deletes: BTreeMap<&str, (Vec<&str>, Vec<&str>)> = BTreeMap::new();
        let mut repos = Vec::new();
        for w in writes {
            match w {
                Write::Upsert { table, values, .. } => {
                    let names: Vec<String> = values.iter().map(|(n, _)| n.clone()).collect();
                    self.load_columns(table, &names).await?;
                    upserts
                        .entry(table)
                        .or_default()
                        .push(text_row(&self.columns[table], w, &now));
                }
                Write::Delete { table, uri, rev } => {
                    let d = deletes.entry(table).or_default();
                    d.0.push(uri);
                    d.1.push(rev);
                }
                Write::Repo { .. } => repos.push(w),
            }
        }
        let mut tx = self.conn.begin().await?;
        for (table, rows) in &upserts {
            let cols = &self.columns[*table];
            for rows in rows.chunks(self.statement_rows.unwrap_or(rows.len()).max(1)) {
                let stmt = Statement::new(table, cols, rows);
                match self.mode {
                    Mode::Upsert => stmt.upsert(&mut tx).await?,
                    Mode::Copy => stmt.copy(&mut tx).await?,
                    Mode::Unnest => stmt.unnest(&mut tx).await?,
                }
            }
        }
        for (table, (uris, revs)) in &deletes {
            // The table name comes from parity's own mapper registry.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} t USING UNNEST($1::text[], $2::text[]) AS d(uri, rev) \
                 WHERE t.uri = d.uri AND t.rev < d.rev COLLATE \"C\""
            )))
            .bind(uris)
            .bind(revs)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO parity_tombstones (uri, rev, deleted_at) \
                 SELECT uri, MAX(rev), $3::timestamptz FROM UNNEST($1::text[], $2::text[]) AS d(uri, rev) GROUP BY uri \
                 ON CONFLICT (uri) DO UPDATE SET rev = excluded.rev, deleted_at = excluded.deleted_at \
                 WHERE excluded.rev > parity_tombstones.rev",
            )
            .bind(uris)
            .bind(revs)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        }
        for w in repos {
            if let Write::Repo {
                did,
                handle,
                account,
            } = w
            {
                let (active, status) = match account {
                    Some((a, s)) => (Some(*a), Some(s.as_str())),
                    None => (None, None),
                };
                sqlx::query(
                    "INSERT INTO parity_repos (did, handle, status, active, updated_at) \
                     VALUES ($1, $2, COALESCE($3, 'active'), COALESCE($4, true), $5::timestamptz) \
                     ON CONFLICT (did) DO UPDATE SET handle = COALESCE(excluded.handle, parity_repos.handle), \
                     status = COALESCE($3, parity_repos.status), active = COALESCE($4, parity_repos.active), \
                     updated_at = excluded.updated_at",
                )
                .bind(did)
                .bind(handle)
                .bind(status)
                .bind(active)
                .bind(&now)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query(
            "INSERT INTO parity_cursors (stream, cursor, updated_at) VALUES ($1, $2, $3::timestamptz) \
             ON CONFLICT (stream) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
        )
        .bind(stream)
        .bind(cursor as i64)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}

fn text_row(cols: &[DbColumn], w: &Write, now: &str) -> TextRow {
    let Write::Upsert {
        uri,
        did,
        rkey,
        cid,
        rev,
        record,
        values,
        ..
    } = w
    else {
        unreachable!("an upsert")
    };
    let standard: [&str; 7] = [uri, did, rkey, cid, rev, record, now];
    cols.iter()
        .map(|c| match STANDARD.iter().position(|s| *s == c.name) {
            Some(k) => Some(standard[k].to_owned()),
            None => values
                .iter()
                .find(|(n, _)| *n == c.name)
                .and_then(|(_, v)| value_text(v, false)),
        })
        .collect()
}

/// Both upserts' conflict clause: every column but `uri` from the newer
/// rev.
fn on_conflict(table: &str, names: &[&str]) -> String {
    let set: Vec<String> = names
        .iter()
        .filter(|n| **n != "uri")
        .map(|n| format!("{n} = excluded.{n}"))
        .collect();
    format!(
        " ON CONFLICT (uri) DO UPDATE SET {} WHERE excluded.rev > {table}.rev",
        set.join(", ")
    )
}

/// One statement's rows of one table, written in a baseline's way.
struct Statement<'a> {
    table: &'a str,
    cols: &'a [DbColumn],
    /// The columns' names, in `cols` order.
    names: Vec<&'a str>,
    rows: &'a [TextRow],
}

impl<'a> Statement<'a> {
    fn new(table: &'a str, cols: &'a [DbColumn], rows: &'a [TextRow]) -> Statement<'a> {
        let names = cols.iter().map(|c| c.name.as_str()).collect();
        Statement {
            table,
            cols,
            names,
            rows,
        }
    }

    /// Multi-row `VALUES` upserts, as many rows each as the bind limit
    /// allows.
    async fn upsert(&self, conn: &mut PgConnection) -> sqlx::Result<()> {
        let (table, cols) = (self.table, self.cols);
        let conflict = on_conflict(table, &self.names);
        for chunk in self.rows.chunks(MAX_BINDS / cols.len()) {
            let mut q: QueryBuilder<Postgres> =
                QueryBuilder::new(format!("INSERT INTO {table} ({}) ", self.names.join(", ")));
            q.push_values(chunk, |mut b, row| {
                for (v, c) in row.iter().zip(cols) {
                    b.push_bind(v.as_deref())
                        .push_unseparated(format!("::{}", c.ty));
                }
            });
            q.push(&conflict);
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// One upsert of the rows, each column bound as one text array and
    /// cast to its type in the `SELECT`.
    async fn unnest(&self, conn: &mut PgConnection) -> sqlx::Result<()> {
        let arrays: Vec<String> = (1..=self.cols.len())
            .map(|i| format!("${i}::text[]"))
            .collect();
        let select: Vec<String> = self
            .cols
            .iter()
            .map(|c| format!("v.{}::{}", c.name, c.ty))
            .collect();
        let sql = format!(
            "INSERT INTO {table} ({names}) SELECT {select} FROM UNNEST({arrays}) AS v({names}){conflict}",
            table = self.table,
            names = self.names.join(", "),
            select = select.join(", "),
            arrays = arrays.join(", "),
            conflict = on_conflict(self.table, &self.names),
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for i in 0..self.cols.len() {
            q = q.bind(
                self.rows
                    .iter()
                    .map(|r| r[i].as_deref())
                    .collect::<Vec<Option<&str>>>(),
            );
        }
        q.execute(&mut *conn).await?;
        Ok(())
    }

    /// One `COPY … FROM STDIN` of the rows, in the text format.
    async fn copy(&self, conn: &mut PgConnection) -> sqlx::Result<()> {
        let mut data = String::with_capacity(self.rows.len() * 600);
        for row in self.rows {
            for (i, v) in row.iter().enumerate() {
                if i > 0 {
                    data.push('\t');
                }
                copy_field(&mut data, v.as_deref());
            }
            data.push('\n');
        }
        let mut sink = conn
            .copy_in_raw(&format!(
                "COPY {} ({}) FROM STDIN",
                self.table,
                self.names.join(", ")
            ))
            .await?;
        sink.send(data.into_bytes()).await?;
        sink.finish().await?;
        Ok(())
    }
}

/// COPY text format: `\N` for NULL, backslash escapes for the rest.
fn copy_field(out: &mut String, v: Option<&str>) {
    let Some(v) = v else {
        out.push_str("\\N");
        return;
    };
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// Writes events `from..to` into the migrated database at `url`, `per_tx`
/// events per transaction; returns a point per transaction.
pub async fn run(
    generator: Arc<Generator>,
    url: &str,
    mode: Mode,
    from: u64,
    to: u64,
    per_tx: u64,
) -> sqlx::Result<Vec<Point>> {
    let mut db = PgBaseline::connect(url, mode).await?;
    let mut points = Vec::new();
    let (mut events, mut rows, mut busy) = (0, 0, 0.0);
    for chunk in feed::chunks(&generator, from, to, per_tx) {
        let t0 = Instant::now();
        db.write(&chunk.writes, chunk.last_cursor, "baseline")
            .await?;
        busy += t0.elapsed().as_secs_f64();
        events += chunk.events;
        rows += chunk.writes.iter().filter(|w| w.is_row()).count() as u64;
        points.push(Point {
            events,
            rows,
            secs: busy,
        });
    }
    db.conn.close().await?;
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::Mode;

    #[test]
    fn every_mode_is_found_by_its_name_and_nothing_else_is() {
        for m in Mode::ALL {
            assert_eq!(Mode::from_name(m.name()), Some(m));
        }
        assert_eq!(Mode::from_name("values"), None);
        assert_eq!(Mode::from_name(""), None);
    }
}
