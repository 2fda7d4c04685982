//! What every protocol shares, and the one price lookup they all answer with.

use std::{sync::Arc, time::Instant};

use beast_book::{Answer, Book, Lookup};
use beast_core::{ApiError, CacheTier, Protocol, UsageEvent, now_ms};
use beast_feeds::FeedRegistry;
use beast_usage::UsageSink;

use crate::{Catalog, KeyRing, keys::KeyEntry};

/// Longest asset name accepted.
const MAX_ASSET_LEN: usize = 20;

#[derive(Clone)]
pub struct AppState {
    pub book: Arc<Book>,
    pub keys: Arc<KeyRing>,
    pub usage: UsageSink,
    pub catalog: Arc<Catalog>,
    pub feeds: Arc<FeedRegistry>,
    /// This node's name in usage rows and status.
    pub node: Arc<str>,
    pub roles: Arc<[String]>,
    pub started: Instant,
}

/// A normalized asset name (`btc ` → `BTC`), or why it is not one.
pub fn normalize_asset(raw: &str) -> Result<String, ApiError> {
    let asset = raw.trim().to_ascii_uppercase();
    if asset.is_empty()
        || asset.len() > MAX_ASSET_LEN
        || !asset.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(ApiError::BadRequest(format!(
            "asset must be 1 to {MAX_ASSET_LEN} letters or digits, got {:?}",
            raw.chars().take(40).collect::<String>()
        )));
    }
    Ok(asset)
}

impl AppState {
    /// The current answer for an asset, optionally pinned to one source.
    pub fn price_answer(
        &self,
        asset: &str,
        source: Option<&str>,
        now: i64,
    ) -> Result<Arc<Answer>, ApiError> {
        let pinned = match source {
            None => None,
            Some(wanted) => {
                let tag = self
                    .catalog
                    .source_tag(wanted)
                    .filter(|tag| self.catalog.lists(asset, tag))
                    .ok_or_else(|| ApiError::UnknownSource {
                        source_tag: wanted.chars().take(40).collect(),
                    })?;
                Some(tag)
            }
        };
        match self.book.lookup(asset, pinned, now) {
            Lookup::Fresh(answer) => Ok(answer),
            Lookup::Stale { age_ms } => Err(ApiError::StalePrice {
                asset: asset.to_owned(),
                age_ms,
            }),
            Lookup::NoPrice => Err(ApiError::NoPrice {
                asset: asset.to_owned(),
            }),
            Lookup::Unknown => Err(ApiError::UnknownAsset {
                asset: asset.to_owned(),
            }),
        }
    }

    /// Records one metered answer for `key`. `requested` is the asset as the caller wrote it:
    /// an answer already carries its asset (no allocation), an error row gets the normalized
    /// name when the request had a valid one.
    pub async fn meter(
        &self,
        key: &KeyEntry,
        requested: &str,
        outcome: Result<&Answer, &ApiError>,
        protocol: Protocol,
        started: Instant,
    ) {
        let (asset, status, source, tier) = match outcome {
            Ok(answer) => (
                answer.asset.clone(),
                200,
                answer.sources_used.clone(),
                CacheTier::Memory,
            ),
            Err(e) => {
                let asset = normalize_asset(requested)
                    .unwrap_or_else(|_| requested.chars().take(2 * MAX_ASSET_LEN).collect());
                (asset.into(), e.status(), Arc::from(""), CacheTier::None)
            }
        };
        self.usage
            .record(UsageEvent {
                ts_ms: now_ms(),
                key_id: key.id,
                asset,
                source,
                protocol,
                node: self.node.clone(),
                status,
                latency_us: started.elapsed().as_micros().min(u32::MAX as u128) as u32,
                cache_tier: tier,
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_names_are_normalized_or_refused() {
        assert_eq!(normalize_asset(" btc ").unwrap(), "BTC");
        assert_eq!(normalize_asset("1inch").unwrap(), "1INCH");
        for bad in [
            "",
            "BTC-USD",
            "BTC,ETH",
            "ÅÅÅ",
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        ] {
            assert_eq!(
                normalize_asset(bad).unwrap_err().code(),
                "bad_request",
                "{bad:?}"
            );
        }
    }
}
