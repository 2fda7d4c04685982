//! The usage appender: the one hot write of a node (a row for every metered request), on a
//! connection of its own through rusqlite, called from a blocking thread.
//!
//! Everything else in the SQLite store goes through sqlx. This write does not, because it is
//! measured to cost half as much here: sqlx builds every value of a 9,000-value statement as an
//! argument of its own, on the async side, then binds them one by one again on its worker
//! thread. Half a million rows (one key, 10,000-row transactions, the same schema and pragmas)
//! cost 1.8 µs of CPU each through sqlx and 0.95 µs here, and metering is about a quarter of a
//! UDP price request's CPU. Both libraries link the same `libsqlite3-sys` (one SQLite in the
//! binary), which is why rusqlite stays on 0.39, the releases that share sqlx's.

use std::{
    cmp::Ordering,
    collections::HashMap,
    path::Path,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use beast_core::{UsageEvent, day_start_ms, month_of};
use rusqlite::{Connection, Statement, Transaction, TransactionBehavior};

use crate::{Result, StoreError};

/// Rows per INSERT (900 values). Statements of 10 to 1,000 rows measured the same per row;
/// one row per statement cost 1.5–1.6 µs a row.
const ROWS_PER_INSERT: usize = 100;
/// Keys per counter update: 3,000 values, well under SQLite's 32,766.
const KEYS_PER_UPDATE: usize = 1000;
const INSERT: &str = "INSERT INTO usage_logs \
    (ts_ms, key_id, asset, source, protocol, node, status, latency_us, cache_tier) VALUES ";
const ROW: &str = "(?,?,?,?,?,?,?,?,?)";

/// Appends usage rows and folds them into the per-key monthly counters.
pub(crate) struct UsageAppender {
    /// `None` once closed.
    connection: Mutex<Option<Connection>>,
    /// The full chunk's INSERT, written once: it is looked up for every 100 rows.
    full_insert: String,
}

impl UsageAppender {
    /// A connection to the (already migrated) store at `path`, waiting up to `busy` for
    /// another writer, as the pool's connections do.
    pub(crate) fn open(path: &Path, busy: Duration) -> Result<Self> {
        let connection = Connection::open(path)?;
        connection.busy_timeout(busy)?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(Self {
            connection: Mutex::new(Some(connection)),
            full_insert: values(INSERT, ROW, ROWS_PER_INSERT),
        })
    }

    /// Closes the connection (the last one to the file checkpoints the WAL into it); a later
    /// append is an error.
    pub(crate) fn close(&self) {
        self.lock().take();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        // A panic holding the lock dropped its transaction (rolled back): the connection is
        // sound.
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `events` and folds the successful ones into `api_keys.usage_count`, in one
    /// transaction: all or nothing. Blocks; call it from a blocking thread.
    pub(crate) fn append(&self, events: &[UsageEvent]) -> Result<()> {
        let mut guard = self.lock();
        let connection = guard.as_mut().ok_or(StoreError::Closed)?;
        // A transaction whose rollback failed would refuse every later batch: end it first.
        if !connection.is_autocommit() {
            connection.execute_batch("ROLLBACK")?;
        }
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for chunk in events.chunks(ROWS_PER_INSERT) {
            // Only a full chunk's statement stays prepared; a batch's tail has a length of its
            // own each time.
            let (mut kept, mut once);
            let insert: &mut Statement = if chunk.len() == ROWS_PER_INSERT {
                kept = tx.prepare_cached(&self.full_insert)?;
                &mut kept
            } else {
                once = tx.prepare(&values(INSERT, ROW, chunk.len()))?;
                &mut once
            };
            for (row, e) in chunk.iter().enumerate() {
                let at = row * 9;
                insert.raw_bind_parameter(at + 1, e.ts_ms)?;
                insert.raw_bind_parameter(at + 2, e.key_id)?;
                insert.raw_bind_parameter(at + 3, &*e.asset)?;
                insert.raw_bind_parameter(at + 4, &*e.source)?;
                insert.raw_bind_parameter(at + 5, e.protocol.as_str())?;
                insert.raw_bind_parameter(at + 6, &*e.node)?;
                insert.raw_bind_parameter(at + 7, e.status)?;
                insert.raw_bind_parameter(at + 8, e.latency_us)?;
                insert.raw_bind_parameter(at + 9, e.cache_tier.as_str())?;
            }
            insert.raw_execute()?;
        }
        fold_counters(&tx, events)?;
        tx.commit()?;
        Ok(())
    }
}

/// The per-key monthly counters, one set-based update per 1,000 keys of the batch. A counter
/// counts one month, its key's latest: a batch that spans a month's end adds only the new
/// month's requests, and requests of a month before the stored one (older rows written late)
/// leave it alone.
fn fold_counters(tx: &Transaction<'_>, events: &[UsageEvent]) -> Result<()> {
    // Months by day: a batch spans a day or two, so each is worked out once.
    let mut months: HashMap<i64, String> = HashMap::new();
    // Per key: its latest month in the batch, and its successful requests of that month.
    let mut per_key: HashMap<i64, (String, i64)> = HashMap::new();
    for e in events.iter().filter(|e| e.status == 200) {
        let month = months
            .entry(day_start_ms(e.ts_ms))
            .or_insert_with(|| month_of(e.ts_ms));
        let (latest, n) = per_key
            .entry(e.key_id)
            .or_insert_with(|| (month.clone(), 0));
        match month.as_str().cmp(latest.as_str()) {
            Ordering::Equal => *n += 1,
            Ordering::Greater => (*latest, *n) = (month.clone(), 1),
            Ordering::Less => {}
        }
    }
    let folded: Vec<(i64, (String, i64))> = per_key.into_iter().collect();
    for chunk in folded.chunks(KEYS_PER_UPDATE) {
        let sql = format!(
            "{}) UPDATE api_keys SET usage_count = CASE WHEN api_keys.usage_month = c.month \
             THEN api_keys.usage_count + c.n ELSE c.n END, usage_month = c.month \
             FROM c WHERE api_keys.id = c.id AND api_keys.usage_month <= c.month",
            values("WITH c(id, month, n) AS (VALUES ", "(?,?,?)", chunk.len())
        );
        // Not kept: a batch's key count varies, and only batches with many keys have more
        // than one chunk.
        let mut update = tx.prepare(&sql)?;
        for (i, (id, (month, n))) in chunk.iter().enumerate() {
            update.raw_bind_parameter(i * 3 + 1, id)?;
            update.raw_bind_parameter(i * 3 + 2, month)?;
            update.raw_bind_parameter(i * 3 + 3, n)?;
        }
        update.raw_execute()?;
    }
    Ok(())
}

/// `head` followed by `rows` copies of `row`, comma-separated.
fn values(head: &str, row: &str, rows: usize) -> String {
    let mut sql = String::with_capacity(head.len() + rows * (row.len() + 1));
    sql.push_str(head);
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(row);
    }
    sql
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use beast_core::{CacheTier, Protocol, UsageEvent};

    use crate::{SqliteStore, Store, StoreError};

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
        store
            .insert_usage(vec![at(before, 200); 3].into())
            .await
            .unwrap();
        assert_eq!(counter().await, (before_month, 3));
        // A batch across the month's end, the old month first: the new month's successful
        // requests start its count.
        let mut batch = vec![at(before, 200)];
        batch.extend(vec![at(after, 200); 4]);
        batch.extend([at(after, 429), at(before, 200)]);
        store.insert_usage(batch.into()).await.unwrap();
        assert_eq!(counter().await, (after_month.clone(), 4));
        // The old month's rows written late leave the new month's count alone.
        store
            .insert_usage(vec![at(before, 200); 5].into())
            .await
            .unwrap();
        assert_eq!(counter().await, (after_month, 4));
        assert_eq!(store.usage_count().await.unwrap(), 3 + 7 + 5);
    }

    #[tokio::test]
    async fn a_batch_with_more_keys_than_one_statement_binds_is_written_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        // 12,000 keys: the counter update runs in 12 chunks, and the 1,500 real keys land in
        // whichever ones hash order gives. In one statement they would need 36,000 bound
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
        events.extend((0..10_500).map(|i| UsageEvent {
            key_id: unknown + i,
            ..event()
        }));
        let written = events.len() as i64;
        store.insert_usage(events.into()).await.unwrap();
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
        store.insert_usage(vec![event(); 150].into()).await.unwrap();
        assert!(
            started.elapsed() >= held,
            "written before the lock was free"
        );
        release.join().unwrap();
        assert_eq!(store.usage_count().await.unwrap(), 150);

        store.close().await;
        let refused = store.insert_usage(vec![event()].into()).await.unwrap_err();
        assert!(matches!(refused, StoreError::Closed), "{refused}");
    }
}
