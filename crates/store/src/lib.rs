//! Persistence behind one trait, [`Store`], so callers never see the engine. SQLite
//! (`sqlite`) is the embedded default; a PostgreSQL implementation follows the same trait.
//! Schema changes are versioned migrations per engine; first start seeds the six exchanges,
//! their asset maps, the tiers and the runtime parameters (`seed`).

mod appender;
pub mod keys;
pub mod reports;
mod seed;
pub mod sqlite;

use async_trait::async_trait;
use beast_core::{AssetMapping, ExchangeDefinition, Tier, UsageEvent};
use futures_util::stream::BoxStream;

pub use reports::{
    Allowance, Cursor, Cutoffs, Pruned, ReportLogEntry, RollupRow, UsageFilter, UsageRow,
};

pub use seed::{parameter_defaults, seeded_exchanges};
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store is closed")]
    Closed,
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored row {table}/{key} is invalid: {problem}")]
    BadRow {
        table: &'static str,
        key: String,
        problem: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("creating the data directory: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A row of `api_keys` (the raw key is never stored, only its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: i64,
    pub key_hash: String,
    /// First characters of the key, to recognise it in listings.
    pub key_prefix: String,
    pub name: String,
    pub tier: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    /// Month (`YYYY-MM`) that `usage_count` counts.
    pub usage_month: String,
    pub usage_count: i64,
}

/// A part of the configuration that running nodes follow: every write to it through the store
/// bumps its revision, so a node polls one row to learn that it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// `exchange_feeds` and `exchange_asset_map`.
    Exchanges,
    /// `api_keys`.
    Keys,
}

impl Area {
    pub fn as_str(self) -> &'static str {
        match self {
            Area::Exchanges => "exchanges",
            Area::Keys => "keys",
        }
    }
}

/// Connection pool figures, read without waiting (for the runtime counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open, idle or in use.
    pub open: u64,
    /// Open connections not in use.
    pub idle: u64,
}

#[async_trait]
pub trait Store: Send + Sync {
    async fn exchange_feeds(&self) -> Result<Vec<ExchangeDefinition>>;
    async fn asset_map(&self) -> Result<Vec<AssetMapping>>;
    /// The revision of an area, bumped by every write to it made through the store by any
    /// process: a running node polls it to apply changes live.
    async fn revision(&self, area: Area) -> Result<i64>;
    /// Inserts or replaces (by `name`) a definition. The caller validates it first.
    async fn save_exchange(&self, def: &ExchangeDefinition) -> Result<()>;
    /// Enables or disables an exchange (`None` flips it); its new state, `None` if there is
    /// no such exchange.
    async fn set_exchange_enabled(&self, name: &str, enabled: Option<bool>)
    -> Result<Option<bool>>;
    /// Inserts or replaces (by exchange and asset) a batch of mappings, all or none.
    async fn save_asset_mappings(&self, mappings: &[AssetMapping]) -> Result<()>;
    /// Sets the given flags of one mapping; false if there is no such mapping.
    async fn set_asset_flags(
        &self,
        exchange: &str,
        asset: &str,
        enabled: Option<bool>,
        prewarm: Option<bool>,
    ) -> Result<bool>;
    async fn tiers(&self) -> Result<Vec<Tier>>;
    /// `application_parameters` as name → value.
    async fn parameters(&self) -> Result<Vec<(String, String)>>;
    /// The connection pool's current figures; never waits.
    fn pool_stats(&self) -> PoolStats;

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>>;
    /// Stores a new key (by hash) for an existing tier.
    async fn create_api_key(
        &self,
        key_hash: &str,
        key_prefix: &str,
        name: &str,
        tier: &str,
    ) -> Result<ApiKeyRecord>;
    /// Revokes a key by id; false if there is no such active key.
    async fn revoke_api_key(&self, id: i64) -> Result<bool>;

    /// Writes a batch of usage events and folds the per-key monthly counters, in one
    /// transaction.
    async fn insert_usage(&self, events: &[UsageEvent]) -> Result<()>;

    /// Usage rows matching `filter`, newest first (by time, then id), strictly after
    /// `after`, at most `limit` of them; streamed, so an export never sits in memory.
    fn usage_rows<'a>(
        &'a self,
        filter: &'a UsageFilter,
        after: Option<Cursor>,
        limit: Option<u64>,
    ) -> BoxStream<'a, Result<UsageRow>>;
    /// Daily rollups matching `filter` whose day starts in `[filter.from_ms, filter.to_ms)`.
    fn rollups<'a>(&'a self, filter: &'a UsageFilter) -> BoxStream<'a, Result<RollupRow>>;
    /// Stores the rollups of the day starting at `day_ms` and marks every day before
    /// `day_ms + 1 day` as rolled up, in one transaction; false (nothing written) if that day
    /// was rolled up meanwhile, so a late roll never replaces rollups of pruned raw rows.
    /// Rows of another day are refused whole (`Invalid`), before anything is written.
    async fn replace_rollups(&self, day_ms: i64, rows: &[RollupRow]) -> Result<bool>;
    /// Every day before this instant is rolled up; `None` before the first roll-up.
    async fn rolled_until(&self) -> Result<Option<i64>>;
    /// The time of the oldest raw usage row, if any.
    async fn oldest_usage_ms(&self) -> Result<Option<i64>>;
    /// Deletes up to `max_rows` raw usage rows and up to `max_rows` report log rows older
    /// than their `before` cutoff; how many of each went. Call until both are below `max_rows`.
    async fn prune_usage(&self, before: Cutoffs, max_rows: u64) -> Result<Pruned>;
    /// Takes one report from a key's allowance for `month` (`YYYY-MM`), if fewer than
    /// `allowance` were taken this month; a new month starts from zero. Atomic, so nodes
    /// sharing a store never overshoot.
    async fn take_report(&self, key_id: i64, month: &str, allowance: u64) -> Result<Allowance>;
    /// Gives back a report taken this month (the report could not be answered).
    async fn give_back_report(&self, key_id: i64, month: &str) -> Result<()>;
    async fn log_report(&self, entry: &ReportLogEntry) -> Result<()>;
}
