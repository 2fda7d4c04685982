//! One running exchange: its compiled definition, the pairs it prices (each with the time of
//! its last live price, which is how a quiet pair is told from a dead connection), which of
//! its connections are up, and its live counters.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed},
    },
};

use beast_core::{AssetMapping, Price, Tick, TickSink, now_ms};
use serde::Serialize;

use crate::CompiledDefinition;

/// One mapped pair of a running exchange.
#[derive(Debug)]
pub(crate) struct Pair {
    pub symbol: String,
    pub asset: Arc<str>,
    pub quote: Arc<str>,
    /// Index of the connection that subscribes it.
    pub shard: usize,
    /// Unix ms of the last live price (a WebSocket trade or a REST refresh), 0 = none yet.
    pub last_price_ms: AtomicI64,
    /// Unix ms before which REST is not tried again after a failure.
    pub rest_retry_at_ms: AtomicI64,
    pub rest_failures: AtomicU32,
}

/// Live counters of one exchange; they survive restarts of its connections.
#[derive(Debug, Default)]
pub struct FeedStats {
    frames: AtomicU64,
    trades: AtomicU64,
    duplicates: AtomicU64,
    parse_errors: AtomicU64,
    unknown_symbols: AtomicU64,
    reconnects: AtomicU64,
    rest_ok: AtomicU64,
    rest_errors: AtomicU64,
    last_frame_ms: AtomicI64,
}

impl FeedStats {
    pub(crate) fn frame_seen(&self) {
        self.frames.fetch_add(1, Relaxed);
        self.last_frame_ms.store(now_ms(), Relaxed);
    }
    pub(crate) fn parse_error(&self) {
        self.parse_errors.fetch_add(1, Relaxed);
    }
    pub(crate) fn trade_seen(&self) {
        self.trades.fetch_add(1, Relaxed);
    }
    pub(crate) fn duplicate(&self) {
        self.duplicates.fetch_add(1, Relaxed);
    }
    pub(crate) fn reconnect(&self) {
        self.reconnects.fetch_add(1, Relaxed);
    }
    pub(crate) fn rest_result(&self, ok: bool) {
        let counter = if ok { &self.rest_ok } else { &self.rest_errors };
        counter.fetch_add(1, Relaxed);
    }
}

/// A snapshot of one running exchange, for `/exchanges`, `/health` and the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct FeedStatus {
    pub name: String,
    pub source: String,
    /// Every connection is up.
    pub connected: bool,
    pub connections: usize,
    pub connections_up: usize,
    pub symbols: usize,
    pub frames: u64,
    /// Trades received on the WebSocket (REST prices count in `rest_ok`).
    pub trades: u64,
    /// Trades dropped because their trade id was already seen (replays after a reconnect).
    pub duplicates: u64,
    pub parse_errors: u64,
    pub unknown_symbols: u64,
    pub reconnects: u64,
    /// REST ticker calls that answered / failed (refresh of quiet pairs, fallback, on demand).
    pub rest_ok: u64,
    pub rest_errors: u64,
    /// Unix ms of the last frame received, 0 = none yet.
    pub last_frame_ms: i64,
    /// Assets whose price from this exchange is older than the freshness limit (or missing).
    pub stale_assets: Vec<String>,
}

/// A running exchange, shared by its connections and its REST refresher.
pub(crate) struct Feed {
    pub def: Arc<CompiledDefinition>,
    pub source: Arc<str>,
    pub pairs: Vec<Pair>,
    /// Lower-case exchange symbol → index in `pairs`.
    by_symbol: HashMap<String, usize>,
    shards_up: Vec<AtomicBool>,
    pub stats: Arc<FeedStats>,
    sink: Arc<dyn TickSink>,
    pub started_ms: i64,
}

impl Feed {
    /// A feed for `pairs` (the enabled prewarm mappings of `def`), sharded by
    /// `max_symbols_per_connection`.
    pub fn new(
        def: Arc<CompiledDefinition>,
        pairs: &[AssetMapping],
        stats: Arc<FeedStats>,
        sink: Arc<dyn TickSink>,
    ) -> Self {
        let per_connection = def.def.max_symbols_per_connection.max(1) as usize;
        let pairs: Vec<Pair> = pairs
            .iter()
            .enumerate()
            .map(|(i, m)| Pair {
                symbol: m.symbol.clone(),
                asset: m.asset.as_str().into(),
                quote: m.quote.as_str().into(),
                shard: i / per_connection,
                last_price_ms: AtomicI64::new(0),
                rest_retry_at_ms: AtomicI64::new(0),
                rest_failures: AtomicU32::new(0),
            })
            .collect();
        let by_symbol = pairs
            .iter()
            .enumerate()
            .map(|(i, p)| (p.symbol.to_ascii_lowercase(), i))
            .collect();
        let shards = pairs.len().div_ceil(per_connection);
        Self {
            source: def.def.source.as_str().into(),
            def,
            pairs,
            by_symbol,
            shards_up: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            stats,
            sink,
            started_ms: now_ms(),
        }
    }

    /// The symbols of each connection.
    pub fn shards(&self) -> Vec<Vec<String>> {
        let mut shards = vec![Vec::new(); self.shards_up.len()];
        for pair in &self.pairs {
            shards[pair.shard].push(pair.symbol.clone());
        }
        shards
    }

    /// The pair of an exchange symbol, given in lower case; unknown symbols are counted.
    pub fn pair_index(&self, symbol: &str) -> Option<usize> {
        let found = self.by_symbol.get(symbol).copied();
        if found.is_none() {
            self.stats.unknown_symbols.fetch_add(1, Relaxed);
        }
        found
    }

    pub fn set_shard_up(&self, shard: usize, up: bool) {
        if let Some(flag) = self.shards_up.get(shard) {
            flag.store(up, Relaxed);
        }
    }

    pub fn shard_up(&self, shard: usize) -> bool {
        self.shards_up.get(shard).is_some_and(|f| f.load(Relaxed))
    }

    /// Hands a price of pair `index` to the book. Replayed history does not count as a live
    /// price of the pair.
    pub fn deliver(&self, index: usize, price: PriceUpdate) {
        let Some(pair) = self.pairs.get(index) else {
            return;
        };
        if !price.replayed {
            pair.last_price_ms.fetch_max(price.received_ms, Relaxed);
        }
        self.sink.apply(price.into_tick(
            pair.asset.clone(),
            self.source.clone(),
            pair.quote.clone(),
        ));
    }

    pub fn status(&self, name: &str, fresh_max_age_ms: i64, now: i64) -> FeedStatus {
        let s = &self.stats;
        let connections_up = self.shards_up.iter().filter(|f| f.load(Relaxed)).count();
        FeedStatus {
            name: name.to_owned(),
            source: self.source.to_string(),
            connected: connections_up == self.shards_up.len(),
            connections: self.shards_up.len(),
            connections_up,
            symbols: self.pairs.len(),
            frames: s.frames.load(Relaxed),
            trades: s.trades.load(Relaxed),
            duplicates: s.duplicates.load(Relaxed),
            parse_errors: s.parse_errors.load(Relaxed),
            unknown_symbols: s.unknown_symbols.load(Relaxed),
            reconnects: s.reconnects.load(Relaxed),
            rest_ok: s.rest_ok.load(Relaxed),
            rest_errors: s.rest_errors.load(Relaxed),
            last_frame_ms: s.last_frame_ms.load(Relaxed),
            stale_assets: self
                .pairs
                .iter()
                .filter(|p| now - p.last_price_ms.load(Relaxed) >= fresh_max_age_ms)
                .map(|p| p.asset.to_string())
                .collect(),
        }
    }
}

/// A price on its way to the book, from a trade or a REST ticker.
#[derive(Debug, Clone)]
pub(crate) struct PriceUpdate {
    pub price: Price,
    pub time_exchange_ms: Option<i64>,
    pub received_ms: i64,
    pub replayed: bool,
}

impl PriceUpdate {
    pub fn into_tick(self, asset: Arc<str>, source: Arc<str>, quote: Arc<str>) -> Tick {
        Tick {
            asset,
            source,
            quote,
            price: self.price,
            time_exchange_ms: self.time_exchange_ms.unwrap_or(self.received_ms),
            time_received_ms: self.received_ms,
            replayed: self.replayed,
        }
    }
}
