//! The feeds a node runs: one set of connections per enabled exchange, its symbols sharded by
//! `max_symbols_per_connection`, and live counters per exchange for status pages.

use std::sync::{
    Arc,
    atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed},
};

use beast_core::{AssetMapping, TickSink, now_ms};
use serde::Serialize;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    CompiledDefinition,
    connector::{Connection, SymbolTable},
};

/// Live counters of one exchange feed; written by its connections, read by status pages.
#[derive(Debug)]
pub struct FeedStats {
    pub source: Arc<str>,
    connections_up: AtomicU32,
    frames: AtomicU64,
    trades: AtomicU64,
    parse_errors: AtomicU64,
    unknown_symbols: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    last_frame_ms: AtomicI64,
}

impl FeedStats {
    fn new(source: &str) -> Self {
        Self {
            source: source.into(),
            connections_up: AtomicU32::new(0),
            frames: AtomicU64::new(0),
            trades: AtomicU64::new(0),
            parse_errors: AtomicU64::new(0),
            unknown_symbols: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            last_frame_ms: AtomicI64::new(0),
        }
    }
    pub(crate) fn connection_up(&self) {
        self.connections_up.fetch_add(1, Relaxed);
    }
    pub(crate) fn connection_down(&self) {
        // Saturating: a session that never came up also ends here.
        let _ = self
            .connections_up
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }
    pub(crate) fn frame_seen(&self) {
        self.frames.fetch_add(1, Relaxed);
        self.last_frame_ms.store(now_ms(), Relaxed);
    }
    pub(crate) fn trade_seen(&self) {
        self.trades.fetch_add(1, Relaxed);
    }
    pub(crate) fn parse_error(&self) {
        self.parse_errors.fetch_add(1, Relaxed);
    }
    pub(crate) fn unknown_symbol(&self) {
        self.unknown_symbols.fetch_add(1, Relaxed);
    }
}

/// A snapshot of one feed, as shown by `/exchanges` and `/health`.
#[derive(Debug, Clone, Serialize)]
pub struct FeedStatus {
    pub name: String,
    pub source: String,
    pub symbols: usize,
    pub connections: usize,
    pub connections_up: u32,
    pub frames: u64,
    pub trades: u64,
    pub parse_errors: u64,
    pub unknown_symbols: u64,
    pub reconnects: u64,
    /// Unix ms of the last frame received, 0 = none yet.
    pub last_frame_ms: i64,
}

struct RunningFeed {
    name: String,
    symbols: usize,
    connections: usize,
    stats: Arc<FeedStats>,
}

/// The running feeds of this node.
pub struct FeedRegistry {
    feeds: Vec<RunningFeed>,
}

impl FeedRegistry {
    /// Starts every enabled definition on the prewarm symbols mapped to it.
    pub fn start(
        definitions: Vec<CompiledDefinition>,
        mappings: &[AssetMapping],
        sink: Arc<dyn TickSink>,
        cancel: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        let mut feeds = Vec::new();
        for def in definitions.into_iter().filter(|d| d.def.enabled) {
            let mine: Vec<&AssetMapping> = mappings
                .iter()
                .filter(|m| m.exchange == def.def.name && m.enabled && m.prewarm)
                .collect();
            let table: Arc<SymbolTable> = Arc::new(
                mine.iter()
                    .map(|m| {
                        (
                            m.symbol.to_ascii_lowercase(),
                            (Arc::from(m.asset.as_str()), Arc::from(m.quote.as_str())),
                        )
                    })
                    .collect(),
            );
            let symbols: Vec<String> = mine.iter().map(|m| m.symbol.clone()).collect();
            let stats = Arc::new(FeedStats::new(&def.def.source));
            let def = Arc::new(def);
            let shards: Vec<Vec<String>> = symbols
                .chunks(def.def.max_symbols_per_connection as usize)
                .map(<[String]>::to_vec)
                .collect();
            for shard in &shards {
                let conn = Connection {
                    def: def.clone(),
                    symbols: shard.clone(),
                    table: table.clone(),
                    sink: sink.clone(),
                    stats: stats.clone(),
                };
                tracker.spawn(conn.run(cancel.child_token()));
            }
            feeds.push(RunningFeed {
                name: def.def.name.clone(),
                symbols: symbols.len(),
                connections: shards.len(),
                stats,
            });
        }
        Self { feeds }
    }

    pub fn status(&self) -> Vec<FeedStatus> {
        self.feeds
            .iter()
            .map(|f| FeedStatus {
                name: f.name.clone(),
                source: f.stats.source.to_string(),
                symbols: f.symbols,
                connections: f.connections,
                connections_up: f.stats.connections_up.load(Relaxed),
                frames: f.stats.frames.load(Relaxed),
                trades: f.stats.trades.load(Relaxed),
                parse_errors: f.stats.parse_errors.load(Relaxed),
                unknown_symbols: f.stats.unknown_symbols.load(Relaxed),
                reconnects: f.stats.reconnects.load(Relaxed),
                last_frame_ms: f.stats.last_frame_ms.load(Relaxed),
            })
            .collect()
    }
}
