//! The feeds of a node, changed live. [`FeedManager::apply`] takes the current rows of
//! `exchange_feeds` and `exchange_asset_map` and brings the running feeds in line: a new or
//! re-enabled exchange connects, a disabled or deleted one disconnects, an exchange whose
//! definition or prewarm pairs changed restarts its connections; the others are untouched. A
//! definition that does not compile never replaces a running one.
//!
//! Each running exchange also has a REST refresher: a pair whose last price is older than
//! `pair_quiet_ms` while its connection is up (a quiet pair, not a dead feed), or older than
//! `rest_fallback_ms` while its connection is down, is refreshed from the REST ticker.
//! [`FeedManager::fetch_now`] fetches an asset that is mapped but not live (on demand).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use arc_swap::ArcSwap;
use beast_core::{AssetMapping, ExchangeDefinition, TickSink, Ticks, now_ms};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    CompiledDefinition, DefinitionError,
    connector::Connection,
    feed::{Feed, FeedStats, FeedStatus},
    rest::{RestClient, RestError},
};

/// How often the refresher looks for quiet pairs.
const REFRESH_PERIOD: Duration = Duration::from_millis(250);
/// Longest wait before a pair's REST ticker is retried after failures.
const MAX_REST_RETRY_MS: i64 = 30_000;

/// Timings of staleness handling, from the runtime parameters.
#[derive(Debug, Clone, Copy)]
pub struct FeedOptions {
    /// A price older than this is stale (listed in `stale_assets`).
    pub fresh_max_age_ms: i64,
    /// A pair without a price for this long on a live connection is refreshed from REST.
    pub pair_quiet_ms: i64,
    /// While a connection is down, its pairs are refreshed from REST this often.
    pub rest_fallback_ms: i64,
    /// REST calls in flight per exchange.
    pub rest_concurrency: usize,
    /// An on-demand fetch that failed is not tried again for this long.
    pub on_demand_retry_ms: i64,
}

/// Rewrites a definition before it runs (the simulator points built-ins at itself).
pub type Redirect = Arc<dyn Fn(&mut ExchangeDefinition) + Send + Sync>;

/// Why an on-demand fetch gave nothing.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no enabled exchange with a REST ticker lists {0}")]
    NotListed(String),
    #[error("{0} failed moments ago; not retried yet")]
    RetryLater(String),
    #[error(transparent)]
    Rest(#[from] RestError),
}

struct Running {
    /// The stored row it runs (before any redirect) and its prewarm pairs.
    definition: ExchangeDefinition,
    pairs: Vec<AssetMapping>,
    feed: Arc<Feed>,
    cancel: CancellationToken,
}

/// Serializes on-demand fetches of one (asset, source); holds the time of the last failure.
type FetchGate = Arc<tokio::sync::Mutex<i64>>;

/// Where an asset can be fetched on demand.
struct Candidate {
    def: Arc<CompiledDefinition>,
    symbol: String,
    asset: Arc<str>,
    quote: Arc<str>,
    source: Arc<str>,
}

pub struct FeedManager {
    options: FeedOptions,
    sink: Arc<dyn TickSink>,
    rest: RestClient,
    redirect: Option<Redirect>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    running: Mutex<BTreeMap<String, Running>>,
    /// Counters by exchange name, kept across restarts of its connections.
    stats: Mutex<HashMap<String, Arc<FeedStats>>>,
    /// Asset → exchanges to fetch it from, best first.
    on_demand: ArcSwap<HashMap<String, Vec<Candidate>>>,
    /// (asset, pinned source) → time of the last failed on-demand fetch; the lock makes
    /// concurrent requests for one asset share a single fetch.
    attempts: Mutex<HashMap<(String, Option<String>), FetchGate>>,
}

impl FeedManager {
    /// A manager with nothing running yet; tasks are spawned on `tracker` and stop with `cancel`.
    pub fn new(
        options: FeedOptions,
        sink: Arc<dyn TickSink>,
        rest: RestClient,
        redirect: Option<Redirect>,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        Self {
            options,
            sink,
            rest,
            redirect,
            cancel,
            tracker,
            running: Mutex::default(),
            stats: Mutex::default(),
            on_demand: ArcSwap::default(),
            attempts: Mutex::default(),
        }
    }

    /// Brings the running feeds in line with these rows. Returns the definitions that did not
    /// compile (a running version of one keeps running).
    pub fn apply(
        &self,
        definitions: &[ExchangeDefinition],
        mappings: &[AssetMapping],
    ) -> Vec<(String, DefinitionError)> {
        let mut errors = Vec::new();
        let mut compiled: BTreeMap<&str, (&ExchangeDefinition, Arc<CompiledDefinition>)> =
            BTreeMap::new();
        for def in definitions {
            let mut local = def.clone();
            if let Some(redirect) = &self.redirect {
                redirect(&mut local);
            }
            match CompiledDefinition::compile(local) {
                Ok(c) => {
                    compiled.insert(&def.name, (def, Arc::new(c)));
                }
                Err(e) => errors.push((def.name.clone(), e)),
            }
        }
        let prewarm_of = |name: &str| -> Vec<AssetMapping> {
            mappings
                .iter()
                .filter(|m| m.exchange == name && m.enabled && m.prewarm)
                .cloned()
                .collect()
        };

        let mut running = self.running.lock();
        running.retain(|name, run| {
            if errors.iter().any(|(n, _)| n == name) {
                return true;
            }
            let keep = compiled.get(name.as_str()).is_some_and(|(def, _)| {
                def.enabled && **def == run.definition && prewarm_of(name) == run.pairs
            });
            if !keep {
                run.cancel.cancel();
                tracing::info!(exchange = %name, "feed stopped for a configuration change");
            }
            keep
        });
        for (name, (def, compiled)) in &compiled {
            if def.enabled && !running.contains_key(*name) {
                let run = self.start(def, compiled.clone(), prewarm_of(name));
                running.insert((*name).to_owned(), run);
            }
        }

        let mut on_demand: HashMap<String, Vec<Candidate>> = HashMap::new();
        for m in mappings.iter().filter(|m| m.enabled) {
            let Some((def, compiled)) = compiled.get(m.exchange.as_str()) else {
                continue;
            };
            if def.enabled && compiled.rest_price.is_some() {
                on_demand
                    .entry(m.asset.clone())
                    .or_default()
                    .push(Candidate {
                        def: compiled.clone(),
                        symbol: m.symbol.clone(),
                        asset: m.asset.as_str().into(),
                        quote: m.quote.as_str().into(),
                        source: def.source.as_str().into(),
                    });
            }
        }
        for candidates in on_demand.values_mut() {
            // USD markets first (the answer prefers USD), then a stable order.
            candidates.sort_by(|a, b| {
                (&*a.quote != "USD", &a.def.def.name).cmp(&(&*b.quote != "USD", &b.def.def.name))
            });
        }
        self.on_demand.store(Arc::new(on_demand));
        // Held to here so two overlapping calls cannot leave the older on-demand table.
        drop(running);
        errors
    }

    fn stats_of(&self, name: &str) -> Arc<FeedStats> {
        self.stats
            .lock()
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    fn start(
        &self,
        definition: &ExchangeDefinition,
        compiled: Arc<CompiledDefinition>,
        pairs: Vec<AssetMapping>,
    ) -> Running {
        let name = &definition.name;
        let feed = Arc::new(Feed::new(
            compiled,
            &pairs,
            self.stats_of(name),
            self.sink.clone(),
        ));
        let cancel = self.cancel.child_token();
        let shards = feed.shards();
        tracing::info!(exchange = %name, pairs = pairs.len(), connections = shards.len(), "feed starting");
        for (shard, symbols) in shards.into_iter().enumerate() {
            let connection = Connection::new(feed.clone(), shard, symbols);
            self.tracker.spawn(connection.run(cancel.clone()));
        }
        self.tracker.spawn(refresh(
            feed.clone(),
            self.rest.clone(),
            self.options,
            cancel.clone(),
        ));
        Running {
            definition: definition.clone(),
            pairs,
            feed,
            cancel,
        }
    }

    /// Every running exchange, by name.
    pub fn status(&self) -> Vec<FeedStatus> {
        let now = now_ms();
        self.running
            .lock()
            .iter()
            .map(|(name, run)| run.feed.status(name, self.options.fresh_max_age_ms, now))
            .collect()
    }

    /// Fetches `asset` now from the best exchange that lists it with a REST ticker (only
    /// `source`, if given), trying the next one when one fails, and hands the price to the
    /// book. Concurrent calls for one asset share one fetch; `is_fresh` is checked once the
    /// caller's turn comes, so those that waited do not fetch again.
    pub async fn fetch_now(
        &self,
        asset: &str,
        source: Option<&str>,
        is_fresh: impl Fn() -> bool,
    ) -> Result<(), FetchError> {
        let table = self.on_demand.load();
        let candidates: Vec<&Candidate> = table
            .get(asset)
            .into_iter()
            .flatten()
            .filter(|c| source.is_none_or(|s| *c.source == *s))
            .collect();
        if candidates.is_empty() {
            return Err(FetchError::NotListed(asset.to_owned()));
        }
        let gate = self
            .attempts
            .lock()
            .entry((asset.to_owned(), source.map(str::to_owned)))
            .or_default()
            .clone();
        let mut last_failure = gate.lock().await;
        if is_fresh() {
            return Ok(());
        }
        if now_ms() - *last_failure < self.options.on_demand_retry_ms {
            return Err(FetchError::RetryLater(asset.to_owned()));
        }
        let mut last_error = None;
        for c in candidates {
            let stats = self.stats_of(&c.def.def.name);
            match self.rest.ticker(&c.def, &c.symbol).await {
                Ok(update) => {
                    stats.rest_result(true);
                    self.sink.apply(update.into_tick(
                        c.asset.clone(),
                        c.source.clone(),
                        c.quote.clone(),
                    ));
                    return Ok(());
                }
                Err(e) => {
                    stats.rest_result(false);
                    tracing::debug!(asset, error = %e, "on-demand fetch failed");
                    last_error = Some(e);
                }
            }
        }
        *last_failure = now_ms();
        Err(last_error.map_or_else(|| FetchError::NotListed(asset.to_owned()), FetchError::from))
    }
}

/// Refreshes a feed's quiet pairs (and all its pairs while their connection is down) from its
/// REST ticker, until `cancel` fires.
async fn refresh(
    feed: Arc<Feed>,
    rest: RestClient,
    options: FeedOptions,
    cancel: CancellationToken,
) {
    if feed.def.rest_price.is_none() {
        return;
    }
    let mut ticks = Ticks::new(REFRESH_PERIOD, cancel.clone());
    while ticks.next().await {
        let now = now_ms();
        let due: Vec<usize> = feed
            .pairs
            .iter()
            .enumerate()
            .filter(|(_, pair)| {
                let since = pair.last_price_ms.load(Relaxed).max(feed.started_ms);
                let limit = if feed.shard_up(pair.shard) {
                    options.pair_quiet_ms
                } else {
                    options.rest_fallback_ms
                };
                now - since >= limit && now >= pair.rest_retry_at_ms.load(Relaxed)
            })
            .map(|(i, _)| i)
            .collect();
        if due.is_empty() {
            continue;
        }
        let fetches = futures_util::stream::iter(due).for_each_concurrent(
            options.rest_concurrency.max(1),
            |index| {
                let feed = &feed;
                let rest = &rest;
                async move {
                    let pair = &feed.pairs[index];
                    // A failure (a panic reading the answer too) costs only this fetch, which
                    // backs off; the round's other fetches go on.
                    match rest.ticker(&feed.def, &pair.symbol).await {
                        Ok(update) => {
                            feed.stats.rest_result(true);
                            pair.rest_failures.store(0, Relaxed);
                            feed.deliver(index, update);
                        }
                        Err(error) => {
                            feed.stats.rest_result(false);
                            let failures = pair.rest_failures.fetch_add(1, Relaxed).min(15);
                            let wait = (1000_i64 << failures).min(MAX_REST_RETRY_MS);
                            pair.rest_retry_at_ms.store(now_ms() + wait, Relaxed);
                            tracing::debug!(exchange = %feed.def.def.name, symbol = %pair.symbol, %error, "REST refresh failed");
                        }
                    }
                }
            },
        );
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = fetches => {}
        }
    }
}
