//! The usage appender: the one hot write of a node (a row for every metered request), on a
//! connection of its own through rusqlite.
//!
//! Everything else in the SQLite store goes through sqlx. This write does not, because it is
//! measured to cost half as much here: sqlx builds every value of a 9,000-value statement as an
//! argument of its own, on the async side, then binds them one by one again on its worker
//! thread. Half a million rows (one key, 10,000-row transactions, the same schema and pragmas)
//! cost 1.8 µs of CPU each through sqlx and 0.95 µs here, and metering is about a quarter of a
//! UDP price request's CPU. Both libraries link the same `libsqlite3-sys` (one SQLite in the
//! binary), which is why rusqlite stays on 0.39, the releases that share sqlx's.
//!
//! A batch is written on the runtime's own threads, [`SLICE_ROWS`] rows (about a millisecond)
//! between two yields. It does not wait there for others: another writer's lock is waited for
//! with async sleeps, and the WAL is checkpointed (which syncs the file to disk) through the
//! pool, on sqlx's thread (`SqliteStore::insert_usage`). One sync stays: the first batch after
//! a checkpoint starts the WAL again and syncs its header (SQLite's guard against reordered
//! writes), about 0.4 ms here, once per checkpoint. Batches used to be written on a blocking
//! thread, a whole one (up to 10,000 rows, about 9 ms of CPU) at once. On a two-core node that
//! third busy thread competed with the request threads and set HTTP's tail: wrk's p99 at 64
//! connections, in 5 alternating rounds, was 4.6–5.1 ms (median 4.8) that way and 4.3–4.5 ms
//! (median 4.4) written here.

use std::{
    cmp::Ordering,
    collections::{BTreeMap, HashMap},
    ops::Deref,
    path::Path,
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder};
use beast_core::{UsageEvent, day_start_ms, month_of, next_month_start_ms};
use rusqlite::{Connection, ErrorCode, Statement, types::ToSqlOutput};

use crate::{Result, StoreError};

/// Rows in one INSERT (900 values). Statements of 10 to 1,000 rows measured the same per row;
/// one row per statement cost 1.5–1.6 µs a row.
const ROWS_PER_STATEMENT: usize = 100;
/// Rows written between two yields to the runtime: about a millisecond of CPU. Whole
/// statements, so that only a batch's last slice has a shorter one.
const SLICE_ROWS: usize = 10 * ROWS_PER_STATEMENT;

/// Appends usage rows and folds them into the per-key monthly counters.
pub(crate) struct UsageAppender {
    /// `None` once closed. Held for a whole batch, across its slices.
    connection: tokio::sync::Mutex<Option<Connection>>,
    /// How long a batch waits for another writer's lock, in all.
    busy: Duration,
    /// The rows, [`ROWS_PER_STATEMENT`] per INSERT.
    rows: Chunked<9>,
    /// The counters, 1,000 keys per update (3,000 values, well under SQLite's 32,766).
    counters: Chunked<3>,
}

impl UsageAppender {
    /// A connection to the (already migrated) store at `path`, waiting up to `busy` for
    /// another writer, as the pool's connections do.
    pub(crate) fn open(path: &Path, busy: Duration) -> Result<Self> {
        let connection = Connection::open(path)?;
        // Never inside SQLite, on the runtime's thread: `begin` waits, asynchronously.
        connection.busy_timeout(Duration::ZERO)?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        // A checkpoint syncs the file to disk: the store runs them, through its pool.
        connection.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(Self {
            connection: tokio::sync::Mutex::new(Some(connection)),
            busy,
            rows: Chunked::new(
                "INSERT INTO usage_logs (ts_ms, key_id, asset, source, protocol, node, status, \
                 latency_us, cache_tier) VALUES ",
                "",
                ROWS_PER_STATEMENT,
            ),
            counters: Chunked::new(
                "WITH c(id, month, n) AS (VALUES ",
                ") UPDATE api_keys SET usage_count = CASE WHEN api_keys.usage_month = c.month \
                 THEN api_keys.usage_count + c.n ELSE c.n END, usage_month = c.month \
                 FROM c WHERE api_keys.id = c.id AND api_keys.usage_month <= c.month",
                1000,
            ),
        })
    }

    /// Closes the connection once no batch is being written; a later append is an error. The
    /// last connection to the file checkpoints the WAL into it and removes it, on the caller's
    /// thread: this is shutdown.
    pub(crate) async fn close(&self) {
        self.connection.lock().await.take();
    }

    /// Writes `events` and folds the successful ones into `api_keys.usage_count`, in one
    /// transaction: all or nothing, also when this future is dropped part-way. Runs on the
    /// caller's thread in slices of [`SLICE_ROWS`] rows, yielding between them.
    pub(crate) async fn append(&self, events: &[UsageEvent]) -> Result<()> {
        let mut guard = self.connection.lock().await;
        let connection = guard.as_mut().ok_or(StoreError::Closed)?;
        let batch = self.begin(connection).await?;
        for slice in events.chunks(SLICE_ROWS) {
            self.rows.run(&batch, slice, |e| {
                [
                    e.ts_ms.into(),
                    e.key_id.into(),
                    (*e.asset).into(),
                    (*e.source).into(),
                    e.protocol.as_str().into(),
                    (*e.node).into(),
                    e.status.into(),
                    e.latency_us.into(),
                    e.cache_tier.as_str().into(),
                ]
            })?;
            tokio::task::yield_now().await;
        }
        let (counts, months) = fold_counters(events);
        self.counters.run(&batch, &counts, |c| {
            // Every month counted has its label.
            let label = months.get(&c.month_end).map_or("", String::as_str);
            [c.key_id.into(), label.into(), c.n.into()]
        })?;
        batch.commit()
    }

    /// Opens the batch's write transaction. While another connection holds the write lock it
    /// sleeps and tries again, for up to `busy` in all.
    async fn begin<'a>(&self, connection: &'a mut Connection) -> Result<Batch<'a>> {
        // A transaction whose rollback failed would refuse every later batch: end it first.
        if !connection.is_autocommit() {
            connection.execute_batch("ROLLBACK")?;
        }
        let mut pauses = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(1))
            .with_max_delay(Duration::from_millis(100))
            .with_total_delay(Some(self.busy))
            .without_max_times()
            .build();
        loop {
            match connection.execute_batch("BEGIN IMMEDIATE") {
                Ok(()) => return Ok(Batch(connection)),
                Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => {
                    match pauses.next() {
                        Some(pause) => tokio::time::sleep(pause).await,
                        None => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A batch's open write transaction, rolled back unless committed: when a statement fails,
/// and when the batch's future is dropped part-way, so that the write lock is not kept.
/// (rusqlite's `Transaction` cannot be held across an await of a task that may move threads.)
struct Batch<'a>(&'a mut Connection);

impl Batch<'_> {
    fn commit(self) -> Result<()> {
        Ok(self.0.execute_batch("COMMIT")?)
    }
}

impl Deref for Batch<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.0
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if !self.0.is_autocommit()
            && let Err(e) = self.0.execute_batch("ROLLBACK")
        {
            // The next batch ends the transaction first.
            tracing::warn!(error = %e, "usage batch rollback failed");
        }
    }
}

/// A multi-row statement run in chunks: `head`, up to `per` groups of `N` values, `tail`.
/// Full chunks run through one statement, kept between batches in the connection's statement
/// cache (keyed by its text, written once, here); the shorter last chunk has a length of its
/// own each time and is prepared for itself.
struct Chunked<const N: usize> {
    head: &'static str,
    tail: &'static str,
    per: usize,
    /// One group of `N` placeholders, `(?,?,…)`.
    group: String,
    /// The statement of a full chunk, `per` groups.
    full: String,
}

impl<const N: usize> Chunked<N> {
    fn new(head: &'static str, tail: &'static str, per: usize) -> Self {
        let mut chunked = Self {
            head,
            tail,
            per,
            group: format!("({})", ["?"; N].join(",")),
            full: String::new(),
        };
        chunked.full = chunked.sql(per);
        chunked
    }

    /// The statement for `rows` groups.
    fn sql(&self, rows: usize) -> String {
        let mut sql = String::with_capacity(
            self.head.len() + rows * (self.group.len() + 1) + self.tail.len(),
        );
        sql.push_str(self.head);
        for i in 0..rows {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&self.group);
        }
        sql.push_str(self.tail);
        sql
    }

    /// Runs the statement over `items`, binding each item's `N` values from `values`.
    fn run<'a, T>(
        &self,
        connection: &Connection,
        items: &'a [T],
        values: impl Fn(&'a T) -> [ToSqlOutput<'a>; N],
    ) -> Result<()> {
        let chunks = items.chunks_exact(self.per);
        let tail = chunks.remainder();
        if chunks.len() > 0 {
            let mut full = connection.prepare_cached(&self.full)?;
            for chunk in chunks {
                execute(&mut full, chunk, &values)?;
            }
        }
        if !tail.is_empty() {
            execute(
                &mut connection.prepare(&self.sql(tail.len()))?,
                tail,
                &values,
            )?;
        }
        Ok(())
    }
}

/// Binds `chunk`'s values in order and runs `statement` once.
fn execute<'a, T, const N: usize>(
    statement: &mut Statement<'_>,
    chunk: &'a [T],
    values: impl Fn(&'a T) -> [ToSqlOutput<'a>; N],
) -> Result<()> {
    for (row, item) in chunk.iter().enumerate() {
        for (i, value) in values(item).into_iter().enumerate() {
            statement.raw_bind_parameter(row * N + i + 1, value)?;
        }
    }
    statement.raw_execute()?;
    Ok(())
}

/// What a batch adds to one key's monthly counter: its successful requests of its latest month
/// in the batch, that month given by when it ends.
struct Count {
    key_id: i64,
    month_end: i64,
    n: i64,
}

/// The per-key monthly counters a batch adds to, with each month's label (`2026-11`) by when
/// it ends. A counter counts one month, its key's latest: a batch that spans a month's end
/// adds only the new month's requests, and requests of a month before the stored one (older
/// rows written late) leave it alone (the update's `usage_month <= c.month`).
fn fold_counters(events: &[UsageEvent]) -> (Vec<Count>, BTreeMap<i64, String>) {
    // A batch spans a day or two: each day's month is worked out once in a row of that day.
    let mut day = None;
    let mut per_key: HashMap<i64, (i64, i64)> = HashMap::new();
    let mut months = BTreeMap::new();
    for e in events.iter().filter(|e| e.status == 200) {
        let month = match day {
            Some((start, month)) if start == day_start_ms(e.ts_ms) => month,
            _ => {
                let month = next_month_start_ms(e.ts_ms);
                day = Some((day_start_ms(e.ts_ms), month));
                months.entry(month).or_insert_with(|| month_of(e.ts_ms));
                month
            }
        };
        let (latest, n) = per_key.entry(e.key_id).or_insert((month, 0));
        match month.cmp(latest) {
            Ordering::Equal => *n += 1,
            Ordering::Greater => (*latest, *n) = (month, 1),
            Ordering::Less => {}
        }
    }
    let counts = per_key
        .into_iter()
        .map(|(key_id, (month_end, n))| Count {
            key_id,
            month_end,
            n,
        })
        .collect();
    (counts, months)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use beast_core::{CacheTier, Protocol, UsageEvent};

    use super::SLICE_ROWS;
    use crate::{SqliteStore, Store, StoreError, sqlite::CHECKPOINT_ROWS};

    fn event() -> UsageEvent {
        UsageEvent {
            ts_ms: beast_core::now_ms(),
            key_id: 1,
            asset: "BTC".into(),
            source: "a-ws".into(),
            protocol: Protocol::Udp,
            node: "n1".into(),
            status: 200,
            latency_us: 10,
            cache_tier: CacheTier::Memory,
        }
    }

    /// The bundled SQLite is built as `.cargo/config.toml` says: an exported
    /// `LIBSQLITE3_FLAGS` replaces that setting, and this fails. (A build from outside the
    /// repository does not read the file at all, which no test run here can see.)
    #[test]
    fn sqlite_keeps_no_memory_statistics() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        let mut statement = connection.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
    }

    #[tokio::test]
    async fn a_key_counts_its_latest_month_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let (_, key) = crate::keys::create(&store, "", "pro").await.unwrap();
        let at = |ts_ms: i64, status: u16| UsageEvent {
            ts_ms,
            key_id: key.id,
            status,
            ..event()
        };
        // Either side of next month's end: both after the key's own month (a key counts from
        // the month it is made).
        let month_end =
            beast_core::next_month_start_ms(beast_core::next_month_start_ms(beast_core::now_ms()));
        let (before, after) = (month_end - 100, month_end + 100);
        let (before_month, after_month) =
            (beast_core::month_of(before), beast_core::month_of(after));
        let counter = async || {
            let keys = store.api_keys().await.unwrap();
            let stored = keys.iter().find(|k| k.id == key.id).unwrap();
            (stored.usage_month.clone(), stored.usage_count)
        };
        store.insert_usage(&vec![at(before, 200); 3]).await.unwrap();
        assert_eq!(counter().await, (before_month, 3));
        // A batch across the month's end, the old month first: the new month's successful
        // requests start its count.
        let mut batch = vec![at(before, 200)];
        batch.extend(vec![at(after, 200); 4]);
        batch.extend([at(after, 429), at(before, 200)]);
        store.insert_usage(&batch).await.unwrap();
        assert_eq!(counter().await, (after_month.clone(), 4));
        // The old month's rows written late leave the new month's count alone.
        store.insert_usage(&vec![at(before, 200); 5]).await.unwrap();
        assert_eq!(counter().await, (after_month, 4));
        assert_eq!(store.usage_count().await.unwrap(), 3 + 7 + 5);
    }

    #[tokio::test]
    async fn a_batch_with_more_keys_than_one_statement_binds_is_written_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        // 12,001 keys: the counter update runs in 12 full chunks and a last one of a single
        // key (13,501 rows: 135 full INSERTs and one of a row), and the 1,500 real keys land in
        // whichever ones hash order gives. In one statement they would need 36,003 bound
        // values, over SQLite's 32,766.
        let mut expected = std::collections::BTreeMap::new();
        let mut events = Vec::new();
        for i in 0..1_500 {
            let (_, key) = crate::keys::create(&store, "", "pro").await.unwrap();
            let n = i % 3 + 1;
            events.extend((0..n).map(|_| UsageEvent {
                key_id: key.id,
                ..event()
            }));
            expected.insert(key.id, n as i64);
        }
        let unknown = expected.keys().max().unwrap() + 1;
        events.extend((0..10_501).map(|i| UsageEvent {
            key_id: unknown + i,
            ..event()
        }));
        let written = events.len() as i64;
        store.insert_usage(&events).await.unwrap();
        assert_eq!(store.usage_count().await.unwrap(), written);
        let counted: std::collections::BTreeMap<i64, i64> = store
            .api_keys()
            .await
            .unwrap()
            .iter()
            .map(|k| (k.id, k.usage_count))
            .collect();
        assert_eq!(counted, expected, "every key counted once, in every chunk");
    }

    #[tokio::test]
    async fn rows_wait_for_another_writer_and_a_closed_store_refuses_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        // Another process (`beast keys`, say) holds the file's write lock for a while.
        let other = rusqlite::Connection::open(dir.path().join("beast.sqlite3")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let held = Duration::from_millis(300);
        let started = Instant::now();
        let release = std::thread::spawn(move || {
            std::thread::sleep(held);
            other.execute_batch("COMMIT").unwrap();
        });
        // A full 100-row statement and a tail of 50.
        store.insert_usage(&vec![event(); 150]).await.unwrap();
        assert!(
            started.elapsed() >= held,
            "written before the lock was free"
        );
        release.join().unwrap();
        assert_eq!(store.usage_count().await.unwrap(), 150);

        store.close().await;
        let refused = store.insert_usage(&[event()]).await.unwrap_err();
        assert!(matches!(refused, StoreError::Closed), "{refused}");
    }

    #[tokio::test]
    async fn a_batch_that_waits_too_long_for_the_lock_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let path = dir.path().join("beast.sqlite3");
        let appender = super::UsageAppender::open(&path, Duration::from_millis(50)).unwrap();
        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let started = Instant::now();
        let refused = appender.append(&vec![event(); 150]).await.unwrap_err();
        let waited = started.elapsed();
        assert!(
            matches!(&refused, StoreError::Sqlite(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)),
            "{refused}"
        );
        // Pauses of 1, 2, 4, 8 and 16 ms: the next would pass the 50 ms allowed.
        assert!(
            waited >= Duration::from_millis(30) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        other.execute_batch("COMMIT").unwrap();
        assert_eq!(store.usage_count().await.unwrap(), 0);
        appender.append(&vec![event(); 150]).await.unwrap();
        assert_eq!(store.usage_count().await.unwrap(), 150);
    }

    #[tokio::test]
    async fn a_batch_dropped_part_way_writes_nothing_and_keeps_no_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let events = vec![event(); 3 * SLICE_ROWS];
        // Polled once: the transaction is open, the first slice written, then it yields.
        let dropped = tokio::time::timeout(Duration::ZERO, store.insert_usage(&events)).await;
        assert!(dropped.is_err(), "the batch was written in one poll");
        // The write lock is free at once: a connection that does not wait gets it.
        let other = rusqlite::Connection::open(dir.path().join("beast.sqlite3")).unwrap();
        other.busy_timeout(Duration::ZERO).unwrap();
        other.execute_batch("BEGIN IMMEDIATE; ROLLBACK").unwrap();
        assert_eq!(store.usage_count().await.unwrap(), 0);
        store.insert_usage(&events).await.unwrap();
        assert_eq!(store.usage_count().await.unwrap(), 3 * SLICE_ROWS as i64);
    }

    #[tokio::test]
    async fn batches_written_at_once_are_written_one_after_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let (_, key) = crate::keys::create(&store, "", "pro").await.unwrap();
        let batch = |rows: usize| {
            vec![
                UsageEvent {
                    key_id: key.id,
                    ..event()
                };
                rows
            ]
        };
        // Each yields between its slices while the other waits for the connection.
        let (first, second) = (batch(2 * SLICE_ROWS + 1), batch(SLICE_ROWS + 3));
        let (a, b) = tokio::join!(store.insert_usage(&first), store.insert_usage(&second));
        a.unwrap();
        b.unwrap();
        let written = 3 * SLICE_ROWS as i64 + 4;
        assert_eq!(store.usage_count().await.unwrap(), written);
        let keys = store.api_keys().await.unwrap();
        let counted = keys.iter().find(|k| k.id == key.id).unwrap().usage_count;
        assert_eq!(counted, written);
    }

    #[tokio::test]
    async fn the_wal_is_checkpointed_every_so_many_rows_and_not_by_the_appender() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let path = dir.path().join("beast.sqlite3");
        let appender = super::UsageAppender::open(&path, Duration::ZERO).unwrap();
        let automatic: i64 = appender
            .connection
            .lock()
            .await
            .as_ref()
            .unwrap()
            .pragma_query_value(None, "wal_autocheckpoint", |row| row.get(0))
            .unwrap();
        assert_eq!(
            automatic, 0,
            "the appender's commits never checkpoint: the store does"
        );
        // Batches of the default size, three times as many rows as a checkpoint waits for. The
        // WAL is never made shorter, only written again from its start after a checkpoint.
        let batch = 10_000;
        let batches = 3 * CHECKPOINT_ROWS / batch;
        let events = vec![event(); batch];
        let wal = path.with_extension("sqlite3-wal");
        let mut sizes = Vec::new();
        for _ in 0..batches {
            store.insert_usage(&events).await.unwrap();
            sizes.push(std::fs::metadata(&wal).unwrap().len());
        }
        let per_checkpoint = (CHECKPOINT_ROWS / batch + 1) as u64;
        assert!(
            sizes[batches - 1] <= per_checkpoint * sizes[0],
            "WAL bytes after each batch: {sizes:?}"
        );
        assert_eq!(store.usage_count().await.unwrap(), (batches * batch) as i64);
    }
}
