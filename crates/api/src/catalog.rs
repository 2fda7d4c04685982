//! What this node lists: exchanges and, per asset, the enabled exchanges that map it. Built
//! from the store's rows, rebuilt whenever they change; read by the public `/exchanges` and `/assets` endpoints and used to
//! resolve a pinned `source`.

use std::collections::BTreeMap;

use beast_core::{AssetMapping, ExchangeDefinition};
use serde::Serialize;

/// One exchange as listed publicly.
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeListing {
    pub name: String,
    pub source: String,
    pub enabled: bool,
    pub assets: usize,
    pub prewarm_assets: usize,
}

/// One exchange that lists an asset.
#[derive(Debug, Clone, Serialize)]
pub struct AssetSource {
    pub exchange: String,
    pub source: String,
    pub symbol: String,
    pub quote: String,
    pub prewarm: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct AssetListing {
    pub asset: String,
    pub category: String,
    pub sources: Vec<AssetSource>,
}

#[derive(Debug, Default)]
pub struct Catalog {
    pub exchanges: Vec<ExchangeListing>,
    /// Enabled assets by name.
    pub assets: BTreeMap<String, AssetListing>,
}

impl Catalog {
    pub fn new(definitions: &[ExchangeDefinition], mappings: &[AssetMapping]) -> Self {
        // Only enabled exchanges price anything.
        let source_of = |exchange: &str| {
            definitions
                .iter()
                .find(|d| d.name == exchange && d.enabled)
                .map(|d| d.source.clone())
        };
        let mut assets: BTreeMap<String, AssetListing> = BTreeMap::new();
        for m in mappings.iter().filter(|m| m.enabled) {
            let Some(source) = source_of(&m.exchange) else {
                continue;
            };
            let listing = assets
                .entry(m.asset.clone())
                .or_insert_with(|| AssetListing {
                    asset: m.asset.clone(),
                    category: m.category.clone(),
                    sources: Vec::new(),
                });
            listing.sources.push(AssetSource {
                exchange: m.exchange.clone(),
                source,
                symbol: m.symbol.clone(),
                quote: m.quote.clone(),
                prewarm: m.prewarm,
            });
        }
        let exchanges = definitions
            .iter()
            .map(|d| {
                let mine = mappings
                    .iter()
                    .filter(|m| m.exchange == d.name && m.enabled);
                ExchangeListing {
                    name: d.name.clone(),
                    source: d.source.clone(),
                    enabled: d.enabled,
                    assets: mine.clone().count(),
                    prewarm_assets: mine.filter(|m| m.prewarm).count(),
                }
            })
            .collect();
        Self { exchanges, assets }
    }

    /// The source tag a caller means by `wanted` (an exchange name or a source tag).
    pub fn source_tag(&self, wanted: &str) -> Option<&str> {
        self.exchanges
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case(wanted) || e.source.eq_ignore_ascii_case(wanted))
            .map(|e| e.source.as_str())
    }

    /// Whether `source` lists `asset`.
    pub fn lists(&self, asset: &str, source: &str) -> bool {
        self.assets
            .get(asset)
            .is_some_and(|a| a.sources.iter().any(|s| s.source == source))
    }
}
