//! The embedded SQLite store: `<data-dir>/beast.sqlite3`, WAL mode so the server and the
//! `beast keys` command can use it at once.

use std::{
    path::Path,
    sync::atomic::{AtomicUsize, Ordering::Relaxed},
    time::Duration,
};

use async_trait::async_trait;
use beast_core::{
    AssetMapping, DAY_MS, ExchangeDefinition, Tier, UsageEvent, definition::MatchRules, month_of,
    now_ms,
};
use futures_util::{StreamExt, TryStreamExt, stream::BoxStream};
use sqlx::{
    Arguments, AssertSqlSafe, QueryBuilder, Row, SqlSafeStr, Sqlite, SqlitePool,
    migrate::{Migration, MigrationType, Migrator},
    sqlite::{
        SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
        SqliteSynchronous,
    },
};

use crate::{
    Allowance, ApiKeyRecord, Area, Cursor, Cutoffs, Pruned, ReportLogEntry, Result, RollupRow,
    Store, StoreError, UsageFilter, UsageRow, appender::UsageAppender, parameter_defaults, seed,
};

/// How long a write waits for another writer (the server and `beast` commands share the
/// file).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Usage rows committed between two WAL checkpoints: about 900 pages of WAL at the 45 rows a
/// page measured, near SQLite's own cadence (1,000 pages), which the appender's connection
/// turns off.
pub(crate) const CHECKPOINT_ROWS: usize = 40_000;
/// Rollup rows per INSERT statement (13 binds a row, far below SQLite's variable limit).
const ROLLUP_ROWS_PER_STATEMENT: usize = 1000;
/// Usage rows read per query when streaming them (about 100 bytes each as JSON).
const USAGE_ROWS_PER_READ: u64 = 4096;
const SEED_VERSION: &str = "1";
/// Every day before this instant is rolled up (no row: none yet).
const ROLLED_UNTIL: &str = "SELECT rolled_until_ms FROM usage_rollup_state WHERE id = 1";

pub struct SqliteStore {
    pool: SqlitePool,
    /// Usage rows, on a connection of their own ([`UsageAppender`]).
    usage: UsageAppender,
    /// Usage rows committed since the WAL was last checkpointed whole.
    uncheckpointed: AtomicUsize,
}

fn migrator() -> Migrator {
    let migration = |version, name: &str, sql: &'static str| {
        Migration::new(
            version,
            name.to_owned().into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
    Migrator::with_migrations(vec![
        migration(
            1,
            "core",
            include_str!("../migrations/sqlite/0001_core.sql"),
        ),
        migration(
            2,
            "revisions",
            include_str!("../migrations/sqlite/0002_revisions.sql"),
        ),
        migration(
            3,
            "keys_revision",
            include_str!("../migrations/sqlite/0003_keys_revision.sql"),
        ),
        migration(
            4,
            "reports",
            include_str!("../migrations/sqlite/0004_reports.sql"),
        ),
        migration(
            5,
            "usage_time_index",
            include_str!("../migrations/sqlite/0005_usage_time_index.sql"),
        ),
    ])
}

impl SqliteStore {
    /// Every row of `usage_logs`, counted: it reads the whole table, so it is for tests and
    /// small stores, never for a running node (shutdown logs what the writer wrote instead).
    pub async fn usage_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM usage_logs")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Opens (creating if needed) `<data_dir>/beast.sqlite3`, migrates and seeds it.
    pub async fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("beast.sqlite3");
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        migrator().run(&pool).await?;
        let usage = UsageAppender::open(&path, BUSY_TIMEOUT)?;
        let store = Self {
            pool,
            usage,
            uncheckpointed: AtomicUsize::new(0),
        };
        store.seed().await?;
        Ok(store)
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.usage.close().await;
    }

    async fn seed(&self) -> Result<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for (name, value, description) in parameter_defaults() {
            sqlx::query(
                "INSERT INTO application_parameters (name, value, description, updated_at_ms) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(value)
            .bind(description)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let seeded: Option<String> = sqlx::query_scalar(
            "SELECT value FROM application_parameters WHERE name = 'seed_version'",
        )
        .fetch_optional(&mut *tx)
        .await?;
        if seeded.is_none() {
            for tier in seed::seeded_tiers()? {
                sqlx::query(
                    "INSERT INTO rate_limit_template (name, requests_per_second, burst, monthly_quota, \
                     reports_enabled, monthly_report_allowance, unlimited) VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&tier.name)
                .bind(tier.requests_per_second)
                .bind(tier.burst)
                .bind(tier.monthly_quota as i64)
                .bind(tier.reports_enabled)
                .bind(tier.monthly_report_allowance as i64)
                .bind(tier.unlimited)
                .execute(&mut *tx)
                .await?;
            }
            for def in seed::seeded_exchanges()? {
                upsert_exchange(&mut tx, &def, now).await?;
            }
            for m in seed::seeded_asset_map()? {
                upsert_mapping(&mut tx, &m).await?;
            }
            sqlx::query(
                "INSERT INTO application_parameters (name, value, description, updated_at_ms) \
                 VALUES ('seed_version', ?, 'Version of the built-in seed data applied', ?)",
            )
            .bind(SEED_VERSION)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tracing::info!("store seeded with the built-in exchanges, assets and tiers");
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Inserts or replaces (by `name`) one exchange definition.
async fn upsert_exchange(
    tx: &mut sqlx::SqliteConnection,
    d: &ExchangeDefinition,
    now: i64,
) -> Result<()> {
    let rules = |r: &MatchRules| serde_json::to_string(r).unwrap_or_else(|_| "{}".into());
    sqlx::query(
        "INSERT INTO exchange_feeds (name, source, enabled, ws_url, subscribe_template, symbol_template, \
         symbol_separator, max_symbols_per_message, max_symbols_per_connection, connect_delay_ms, \"match\", \
         snapshot_match, items_path, symbol_path, symbol_pattern, price_path, size_path, time_path, \
         trade_id_path, time_format, ping_interval_s, ping_payload, heartbeat_match, heartbeat_reply, \
         liveness_timeout_s, rest_url, rest_price_path, rest_time_path, updated_at_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (name) DO UPDATE SET source = excluded.source, enabled = excluded.enabled, \
         ws_url = excluded.ws_url, subscribe_template = excluded.subscribe_template, \
         symbol_template = excluded.symbol_template, symbol_separator = excluded.symbol_separator, \
         max_symbols_per_message = excluded.max_symbols_per_message, \
         max_symbols_per_connection = excluded.max_symbols_per_connection, \
         connect_delay_ms = excluded.connect_delay_ms, \"match\" = excluded.\"match\", \
         snapshot_match = excluded.snapshot_match, items_path = excluded.items_path, \
         symbol_path = excluded.symbol_path, symbol_pattern = excluded.symbol_pattern, \
         price_path = excluded.price_path, size_path = excluded.size_path, time_path = excluded.time_path, \
         trade_id_path = excluded.trade_id_path, time_format = excluded.time_format, \
         ping_interval_s = excluded.ping_interval_s, ping_payload = excluded.ping_payload, \
         heartbeat_match = excluded.heartbeat_match, heartbeat_reply = excluded.heartbeat_reply, \
         liveness_timeout_s = excluded.liveness_timeout_s, rest_url = excluded.rest_url, \
         rest_price_path = excluded.rest_price_path, rest_time_path = excluded.rest_time_path, \
         updated_at_ms = excluded.updated_at_ms",
    )
    .bind(&d.name)
    .bind(&d.source)
    .bind(d.enabled)
    .bind(&d.ws_url)
    .bind(&d.subscribe_template)
    .bind(&d.symbol_template)
    .bind(&d.symbol_separator)
    .bind(d.max_symbols_per_message)
    .bind(d.max_symbols_per_connection)
    .bind(d.connect_delay_ms as i64)
    .bind(rules(&d.match_rules))
    .bind(rules(&d.snapshot_match))
    .bind(&d.items_path)
    .bind(&d.symbol_path)
    .bind(&d.symbol_pattern)
    .bind(&d.price_path)
    .bind(&d.size_path)
    .bind(&d.time_path)
    .bind(&d.trade_id_path)
    .bind(d.time_format.as_str())
    .bind(d.ping_interval_s as i64)
    .bind(&d.ping_payload)
    .bind(rules(&d.heartbeat_match))
    .bind(&d.heartbeat_reply)
    .bind(d.liveness_timeout_s as i64)
    .bind(&d.rest_url)
    .bind(&d.rest_price_path)
    .bind(&d.rest_time_path)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// Inserts or replaces (by exchange and asset) one asset mapping.
async fn upsert_mapping(tx: &mut sqlx::SqliteConnection, m: &AssetMapping) -> Result<()> {
    sqlx::query(
        "INSERT INTO exchange_asset_map (exchange, asset, symbol, quote, enabled, prewarm, category) \
         VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (exchange, asset) DO UPDATE SET \
         symbol = excluded.symbol, quote = excluded.quote, enabled = excluded.enabled, \
         prewarm = excluded.prewarm, category = excluded.category",
    )
    .bind(&m.exchange)
    .bind(&m.asset)
    .bind(&m.symbol)
    .bind(&m.quote)
    .bind(m.enabled)
    .bind(m.prewarm)
    .bind(&m.category)
    .execute(tx)
    .await?;
    Ok(())
}

/// Marks an area of the configuration as changed, inside the writing transaction.
async fn bump_revision(tx: &mut sqlx::SqliteConnection, area: Area) -> Result<()> {
    sqlx::query("UPDATE config_revisions SET revision = revision + 1 WHERE area = ?")
        .bind(area.as_str())
        .execute(tx)
        .await?;
    Ok(())
}

/// A unique-constraint violation becomes a clear refusal; anything else stays a database error.
fn refuse_duplicate(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    match e.as_database_error() {
        Some(db) if db.is_unique_violation() => StoreError::Invalid(what()),
        Some(db) if db.is_foreign_key_violation() => StoreError::Invalid(what()),
        _ => StoreError::Database(e),
    }
}

fn exchange_from_row(row: &SqliteRow) -> Result<ExchangeDefinition> {
    let name: String = row.try_get("name")?;
    let bad = |problem: String| StoreError::BadRow {
        table: "exchange_feeds",
        key: name.clone(),
        problem,
    };
    let rules = |col: &str| -> Result<MatchRules> {
        let text: String = row.try_get(col)?;
        serde_json::from_str(&text).map_err(|e| bad(format!("`{col}` is not a JSON object: {e}")))
    };
    let time_format: String = row.try_get("time_format")?;
    let u64_of = |col: &str| -> Result<u64> { Ok(row.try_get::<i64, _>(col)?.max(0) as u64) };
    Ok(ExchangeDefinition {
        source: row.try_get("source")?,
        enabled: row.try_get("enabled")?,
        ws_url: row.try_get("ws_url")?,
        subscribe_template: row.try_get("subscribe_template")?,
        symbol_template: row.try_get("symbol_template")?,
        symbol_separator: row.try_get("symbol_separator")?,
        max_symbols_per_message: row.try_get("max_symbols_per_message")?,
        max_symbols_per_connection: row.try_get("max_symbols_per_connection")?,
        connect_delay_ms: u64_of("connect_delay_ms")?,
        match_rules: rules("match")?,
        snapshot_match: rules("snapshot_match")?,
        items_path: row.try_get("items_path")?,
        symbol_path: row.try_get("symbol_path")?,
        symbol_pattern: row.try_get("symbol_pattern")?,
        price_path: row.try_get("price_path")?,
        size_path: row.try_get("size_path")?,
        time_path: row.try_get("time_path")?,
        trade_id_path: row.try_get("trade_id_path")?,
        time_format: serde_json::from_value(serde_json::Value::String(time_format.clone()))
            .map_err(|_| bad(format!("unknown time_format {time_format:?}")))?,
        ping_interval_s: u64_of("ping_interval_s")?,
        ping_payload: row.try_get("ping_payload")?,
        heartbeat_match: rules("heartbeat_match")?,
        heartbeat_reply: row.try_get("heartbeat_reply")?,
        liveness_timeout_s: u64_of("liveness_timeout_s")?,
        rest_url: row.try_get("rest_url")?,
        rest_price_path: row.try_get("rest_price_path")?,
        rest_time_path: row.try_get("rest_time_path")?,
        name,
    })
}

fn key_from_row(row: &SqliteRow) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        key_hash: row.try_get("key_hash")?,
        key_prefix: row.try_get("key_prefix")?,
        name: row.try_get("name")?,
        tier: row.try_get("tier")?,
        created_at_ms: row.try_get("created_at_ms")?,
        revoked_at_ms: row.try_get("revoked_at_ms")?,
        usage_month: row.try_get("usage_month")?,
        usage_count: row.try_get("usage_count")?,
    })
}

macro_rules! select_keys {
    ($($tail:literal)?) => {
        concat!(
            "SELECT id, key_hash, key_prefix, name, tier, created_at_ms, revoked_at_ms, usage_month, \
             usage_count FROM api_keys",
            $($tail)?
        )
    };
}

/// A `WHERE` clause (and its arguments) for a usage filter, on a table whose time column is
/// `time_col`: `usage_logs` and `usage_daily` share the other column names.
fn usage_where(filter: &UsageFilter, time_col: &str) -> Result<(String, SqliteArguments)> {
    fn bind<'q, T>(args: &mut SqliteArguments, v: T) -> Result<()>
    where
        T: 'q + sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite>,
    {
        args.add(v)
            .map_err(|e| StoreError::Invalid(format!("binding a filter value: {e}")))
    }
    let mut sql = format!(" WHERE {time_col} >= ? AND {time_col} < ?");
    let mut args = SqliteArguments::default();
    bind(&mut args, filter.from_ms)?;
    bind(&mut args, filter.to_ms)?;
    if let Some(id) = filter.key_id {
        sql.push_str(" AND key_id = ?");
        bind(&mut args, id)?;
    }
    for (col, value) in [
        ("asset", &filter.asset),
        ("protocol", &filter.protocol),
        ("node", &filter.node),
    ] {
        if let Some(v) = value {
            sql.push_str(&format!(" AND {col} = ?"));
            bind(&mut args, v.clone())?;
        }
    }
    if let Some(wanted) = &filter.source {
        // The row's sources are a comma-joined list of tags: match one whole tag, the one of
        // the exchange so named if `wanted` is an exchange name (`coinbase` → `coinbase-ws`).
        sql.push_str(
            " AND instr(',' || source || ',', ',' || coalesce((SELECT source FROM exchange_feeds \
             WHERE lower(name) = lower(?) OR lower(source) = lower(?) LIMIT 1), ?) || ',') > 0",
        );
        for _ in 0..3 {
            bind(&mut args, wanted.clone())?;
        }
    }
    if let Some(status) = filter.status {
        sql.push_str(" AND status = ?");
        bind(&mut args, i64::from(status))?;
    }
    Ok((sql, args))
}

/// Where a streamed read of usage rows stands between batches.
struct Batches {
    after: Option<Cursor>,
    left: u64,
}

/// One batch of usage rows as SQLite's `json_group_array` wrote it, put back in report order
/// (newest first), which SQL does not promise for an aggregate's input.
fn usage_batch(json: &str) -> Result<Vec<UsageRow>> {
    // Each row is an array in `UsageRow`'s field order, which serde reads as the struct.
    let mut rows: Vec<UsageRow> = serde_json::from_str(json)
        .map_err(|e| StoreError::Invalid(format!("reading a batch of usage rows: {e}")))?;
    rows.sort_by_key(|r| std::cmp::Reverse((r.ts_ms, r.id)));
    Ok(rows)
}

fn rollup_row(row: &SqliteRow) -> Result<RollupRow> {
    Ok(RollupRow {
        day_ms: row.try_get(0)?,
        key_id: row.try_get(1)?,
        asset: row.try_get(2)?,
        source: row.try_get(3)?,
        protocol: row.try_get(4)?,
        node: row.try_get(5)?,
        status: row.try_get::<i64, _>(6)?.clamp(0, 999) as u16,
        requests: row.try_get(7)?,
        memory: row.try_get(8)?,
        rest: row.try_get(9)?,
        latency_sum_us: row.try_get(10)?,
        latency_max_us: row.try_get(11)?,
        latency_sketch: row.try_get(12)?,
    })
}

/// A stream that yields one error (a query that could not be built).
fn failed<'a, T: Send + 'a>(e: StoreError) -> BoxStream<'a, Result<T>> {
    futures_util::stream::once(async { Err(e) }).boxed()
}

#[async_trait]
impl Store for SqliteStore {
    async fn exchange_feeds(&self) -> Result<Vec<ExchangeDefinition>> {
        let rows = sqlx::query("SELECT * FROM exchange_feeds ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(exchange_from_row).collect()
    }

    async fn asset_map(&self) -> Result<Vec<AssetMapping>> {
        let rows: Vec<(String, String, String, String, bool, bool, String)> = sqlx::query_as(
            "SELECT exchange, asset, symbol, quote, enabled, prewarm, category FROM exchange_asset_map \
             ORDER BY exchange, asset",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(exchange, asset, symbol, quote, enabled, prewarm, category)| AssetMapping {
                    exchange,
                    asset,
                    symbol,
                    quote,
                    enabled,
                    prewarm,
                    category,
                },
            )
            .collect())
    }

    async fn revision(&self, area: Area) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT revision FROM config_revisions WHERE area = ?")
                .bind(area.as_str())
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn save_exchange(&self, def: &ExchangeDefinition) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        upsert_exchange(&mut tx, def, now_ms())
            .await
            .map_err(|e| match e {
                StoreError::Database(e) => refuse_duplicate(e, || {
                    format!(
                        "source {:?} is already used by another exchange",
                        def.source
                    )
                }),
                e => e,
            })?;
        bump_revision(&mut tx, Area::Exchanges).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_exchange_enabled(
        &self,
        name: &str,
        enabled: Option<bool>,
    ) -> Result<Option<bool>> {
        let mut tx = self.pool.begin().await?;
        let now: Option<bool> = sqlx::query_scalar(
            "UPDATE exchange_feeds SET enabled = COALESCE(?, NOT enabled), updated_at_ms = ? \
             WHERE name = ? RETURNING enabled",
        )
        .bind(enabled)
        .bind(now_ms())
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        if now.is_some() {
            bump_revision(&mut tx, Area::Exchanges).await?;
        }
        tx.commit().await?;
        Ok(now)
    }

    async fn save_asset_mappings(&self, mappings: &[AssetMapping]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for m in mappings {
            upsert_mapping(&mut tx, m).await.map_err(|e| match e {
                StoreError::Database(e) => {
                    refuse_duplicate(e, || format!("exchange {:?} does not exist", m.exchange))
                }
                e => e,
            })?;
        }
        bump_revision(&mut tx, Area::Exchanges).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_asset_flags(
        &self,
        exchange: &str,
        asset: &str,
        enabled: Option<bool>,
        prewarm: Option<bool>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE exchange_asset_map SET enabled = COALESCE(?, enabled), prewarm = COALESCE(?, prewarm) \
             WHERE exchange = ? AND asset = ?",
        )
        .bind(enabled)
        .bind(prewarm)
        .bind(exchange)
        .bind(asset)
        .execute(&mut *tx)
        .await?;
        let changed = done.rows_affected() == 1;
        if changed {
            bump_revision(&mut tx, Area::Exchanges).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn tiers(&self) -> Result<Vec<Tier>> {
        let rows: Vec<(String, i64, i64, i64, bool, i64, bool)> = sqlx::query_as(
            "SELECT name, requests_per_second, burst, monthly_quota, reports_enabled, \
             monthly_report_allowance, unlimited FROM rate_limit_template ORDER BY requests_per_second",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(name, rps, burst, quota, reports, allowance, unlimited)| Tier {
                    name,
                    requests_per_second: rps.clamp(0, u32::MAX as i64) as u32,
                    burst: burst.clamp(0, u32::MAX as i64) as u32,
                    monthly_quota: quota.max(0) as u64,
                    reports_enabled: reports,
                    monthly_report_allowance: allowance.max(0) as u64,
                    unlimited,
                },
            )
            .collect())
    }

    async fn parameters(&self) -> Result<Vec<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT name, value FROM application_parameters ORDER BY name")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    fn pool_stats(&self) -> crate::PoolStats {
        crate::PoolStats {
            open: u64::from(self.pool.size()),
            idle: self.pool.num_idle() as u64,
        }
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let rows = sqlx::query(select_keys!(" ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn create_api_key(
        &self,
        key_hash: &str,
        key_prefix: &str,
        name: &str,
        tier: &str,
    ) -> Result<ApiKeyRecord> {
        let tier_exists: Option<String> =
            sqlx::query_scalar("SELECT name FROM rate_limit_template WHERE name = ?")
                .bind(tier)
                .fetch_optional(&self.pool)
                .await?;
        if tier_exists.is_none() {
            let tiers: Vec<String> = self.tiers().await?.into_iter().map(|t| t.name).collect();
            return Err(StoreError::Invalid(format!(
                "unknown tier {tier:?} (tiers: {})",
                tiers.join(", ")
            )));
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO api_keys (key_hash, key_prefix, name, tier, created_at_ms, updated_at_ms, usage_month) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id, key_hash, key_prefix, name, tier, created_at_ms, \
             revoked_at_ms, usage_month, usage_count",
        )
        .bind(key_hash)
        .bind(key_prefix)
        .bind(name)
        .bind(tier)
        .bind(now)
        .bind(now)
        .bind(month_of(now))
        .fetch_one(&mut *tx)
        .await?;
        bump_revision(&mut tx, Area::Keys).await?;
        tx.commit().await?;
        key_from_row(&row)
    }

    async fn revoke_api_key(&self, id: i64) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at_ms = ?, updated_at_ms = ? WHERE id = ? AND revoked_at_ms IS NULL",
        )
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let revoked = done.rows_affected() == 1;
        if revoked {
            bump_revision(&mut tx, Area::Keys).await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    async fn insert_usage(&self, events: &[UsageEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.usage.append(events).await?;
        let uncheckpointed = self.uncheckpointed.fetch_add(events.len(), Relaxed) + events.len();
        if uncheckpointed >= CHECKPOINT_ROWS {
            // The batch is in: a checkpoint that fails, or stops short because a reader still
            // needs the WAL, loses nothing and must not make the writer write the batch again.
            // It is tried again after the next batch. The pool's connection waits for the
            // disk on its own thread.
            match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&self.pool)
                .await
            {
                Ok((_, log, checkpointed)) if checkpointed == log => {
                    self.uncheckpointed.store(0, Relaxed)
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
            }
        }
        Ok(())
    }

    fn usage_rows<'a>(
        &'a self,
        filter: &'a UsageFilter,
        after: Option<Cursor>,
        limit: Option<u64>,
    ) -> BoxStream<'a, Result<UsageRow>> {
        // Rows come in batches of up to USAGE_ROWS_PER_READ, each one JSON array built by
        // SQLite. sqlx hands every row of a result set from its worker thread to the caller on
        // its own, which cost an export of a million rows several seconds of thread wake-ups;
        // a batch crosses once. Each batch is a query of its own, starting after the last row
        // read, so no connection is held while a slow client reads and no row is read twice.
        // Rows written meanwhile are read if they sort after the cursor: newer ones (the
        // usual) are not, a late one with an older time (a retried batch) is. Rows pruned
        // meanwhile are not read.
        let start = Batches {
            after,
            left: limit.unwrap_or(u64::MAX),
        };
        futures_util::stream::try_unfold(start, move |mut batches| async move {
            if batches.left == 0 {
                return Ok::<_, StoreError>(None);
            }
            let wanted = batches.left.min(USAGE_ROWS_PER_READ);
            // The cursor also narrows the time range, so the index seeks straight to it
            // instead of stepping over every row already read. The only index is time first
            // (cheap to write with many keys), so a key filter is checked in the index, row
            // by row across all keys, and rows of one millisecond are sorted by id.
            let range = match batches.after {
                Some(c) => {
                    filter.between(filter.from_ms, filter.to_ms.min(c.ts_ms.saturating_add(1)))
                }
                None => filter.clone(),
            };
            let (mut sql, mut args) = usage_where(&range, "ts_ms")?;
            if let Some(c) = batches.after {
                sql.push_str(" AND (ts_ms < ? OR (ts_ms = ? AND id < ?))");
                for v in [c.ts_ms, c.ts_ms, c.id] {
                    args.add(v)
                        .map_err(|e| StoreError::Invalid(format!("binding the cursor: {e}")))?;
                }
            }
            let full = format!(
                "SELECT json_group_array(json_array(id, ts_ms, key_id, asset, source, protocol, \
                 node, status, latency_us, cache_tier)) FROM (SELECT * FROM usage_logs{sql} \
                 ORDER BY ts_ms DESC, id DESC LIMIT {wanted})"
            );
            let json: String = sqlx::query_scalar_with(AssertSqlSafe(full), args)
                .fetch_one(&self.pool)
                .await?;
            let rows = usage_batch(&json)?;
            batches.left = if (rows.len() as u64) < wanted {
                0
            } else {
                batches.left - wanted
            };
            batches.after = rows.last().map(|r| Cursor {
                ts_ms: r.ts_ms,
                id: r.id,
            });
            Ok(Some((
                futures_util::stream::iter(rows.into_iter().map(Ok)),
                batches,
            )))
        })
        .try_flatten()
        .boxed()
    }

    fn rollups<'a>(&'a self, filter: &'a UsageFilter) -> BoxStream<'a, Result<RollupRow>> {
        let (sql, args) = match usage_where(filter, "day_ms") {
            Ok(w) => w,
            Err(e) => return failed(e),
        };
        let full = format!(
            "SELECT day_ms, key_id, asset, source, protocol, node, status, requests, memory, rest, \
             latency_sum_us, latency_max_us, latency_sketch FROM usage_daily{sql}"
        );
        sqlx::query_with(AssertSqlSafe(full), args)
            .fetch(&self.pool)
            .map_err(StoreError::from)
            .and_then(|row| async move { rollup_row(&row) })
            .boxed()
    }

    async fn replace_rollups(&self, day_ms: i64, rows: &[RollupRow]) -> Result<bool> {
        if let Some(other) = rows.iter().find(|r| r.day_ms != day_ms) {
            return Err(StoreError::Invalid(format!(
                "a rollup of day {} among those of day {day_ms}",
                other.day_ms
            )));
        }
        // IMMEDIATE: the mark read here cannot move before this transaction commits.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mark: Option<i64> = sqlx::query_scalar(ROLLED_UNTIL)
            .fetch_optional(&mut *tx)
            .await?;
        if mark.is_some_and(|m| day_ms < m) {
            // Rolled meanwhile (by `beast sync` or another node), and its raw rows may be
            // pruned already: what is stored stays.
            return Ok(false);
        }
        sqlx::query("DELETE FROM usage_daily WHERE day_ms = ?")
            .bind(day_ms)
            .execute(&mut *tx)
            .await?;
        for chunk in rows.chunks(ROLLUP_ROWS_PER_STATEMENT) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO usage_daily (day_ms, key_id, asset, source, protocol, node, status, requests, \
                 memory, rest, latency_sum_us, latency_max_us, latency_sketch) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.day_ms)
                    .push_bind(r.key_id)
                    .push_bind(r.asset.clone())
                    .push_bind(r.source.clone())
                    .push_bind(r.protocol.clone())
                    .push_bind(r.node.clone())
                    .push_bind(i64::from(r.status))
                    .push_bind(r.requests)
                    .push_bind(r.memory)
                    .push_bind(r.rest)
                    .push_bind(r.latency_sum_us)
                    .push_bind(r.latency_max_us)
                    .push_bind(r.latency_sketch.clone());
            });
            // Only a full chunk's statement stays prepared: one of each other length would fill
            // the statement cache with large, rarely used programs.
            q.build()
                .persistent(chunk.len() == ROLLUP_ROWS_PER_STATEMENT)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO usage_rollup_state (id, rolled_until_ms) VALUES (1, ?) ON CONFLICT (id) \
             DO UPDATE SET rolled_until_ms = max(rolled_until_ms, excluded.rolled_until_ms)",
        )
        .bind(day_ms + DAY_MS)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn rolled_until(&self) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(ROLLED_UNTIL)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn oldest_usage_ms(&self) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT min(ts_ms) FROM usage_logs")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn prune_usage(&self, before: Cutoffs, max_rows: u64) -> Result<Pruned> {
        let limit = max_rows.min(i64::MAX as u64) as i64;
        let mut tx = self.pool.begin().await?;
        let mut gone = [0; 2];
        for ((table, before_ms), gone) in [
            ("usage_logs", before.usage),
            ("report_usage_logs", Some(before.report_logs)),
        ]
        .into_iter()
        .zip(&mut gone)
        {
            let Some(before_ms) = before_ms else {
                continue;
            };
            *gone = sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE ts_ms < ? LIMIT ?)"
            )))
            .bind(before_ms)
            .bind(limit)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(Pruned {
            usage_rows: gone[0],
            report_log_rows: gone[1],
        })
    }

    async fn take_report(&self, key_id: i64, month: &str, allowance: u64) -> Result<Allowance> {
        let allowance = allowance.min(i64::MAX as u64) as i64;
        let taken: Option<i64> = sqlx::query_scalar(
            "INSERT INTO report_count (key_id, month, count, updated_at_ms) \
             SELECT ?1, ?2, 1, ?4 WHERE ?3 > 0 \
             ON CONFLICT (key_id) DO UPDATE SET \
               count = CASE WHEN report_count.month = excluded.month THEN report_count.count + 1 ELSE 1 END, \
               month = excluded.month, updated_at_ms = excluded.updated_at_ms \
             WHERE report_count.month <> excluded.month OR report_count.count < ?3 \
             RETURNING count",
        )
        .bind(key_id)
        .bind(month)
        .bind(allowance)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(taken.map_or(Allowance::UsedUp, |_| Allowance::Taken))
    }

    async fn give_back_report(&self, key_id: i64, month: &str) -> Result<()> {
        sqlx::query(
            "UPDATE report_count SET count = count - 1 WHERE key_id = ? AND month = ? AND count > 0",
        )
        .bind(key_id)
        .bind(month)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn log_report(&self, e: &ReportLogEntry) -> Result<()> {
        sqlx::query(
            "INSERT INTO report_usage_logs (ts_ms, key_id, report, format, protocol, node, status, \
             latency_us, rows, query) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.ts_ms)
        .bind(e.key_id)
        .bind(&e.report)
        .bind(&e.format)
        .bind(&e.protocol)
        .bind(&e.node)
        .bind(i64::from(e.status))
        .bind(i64::from(e.latency_us))
        .bind(e.rows)
        .bind(&e.query)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
