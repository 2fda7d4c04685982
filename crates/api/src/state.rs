//! What every protocol shares, and the one price lookup they all answer with: memory first,
//! then (for an asset that is mapped but not live, or gone stale) the exchange's REST ticker.

use std::{sync::Arc, time::Instant};

use arc_swap::ArcSwap;
use beast_book::{Answer, Book, Lookup};
use beast_core::{ApiError, CacheTier, MAX_ASSET_LEN, Protocol, UsageEvent, latency_us, now_ms};
use beast_feeds::FeedManager;
use beast_store::Store;
use beast_usage::{Room, UsageSink};

use crate::{AdminKey, Catalog, KeyRing, keys::KeyEntry};

/// What every handler and listener shares, behind one `Arc`: a request clones the state
/// more than once (extractors, the router's handler), and one count on one cache line is far
/// cheaper under load than a dozen on lines both cores write.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The key a request carries, in any protocol (header, UDP field), trimmed; none or an empty
/// one is `MissingKey`.
pub(crate) fn key_text(raw: Option<&str>) -> Result<&str, ApiError> {
    raw.map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or(ApiError::MissingKey)
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub book: Arc<Book>,
    pub keys: Arc<KeyRing>,
    pub usage: UsageSink,
    /// Swapped whole when exchanges or mappings change.
    pub catalog: ArcSwap<Catalog>,
    pub feeds: Arc<FeedManager>,
    pub store: Arc<dyn Store>,
    pub admin: AdminKey,
    /// Serializes applying the exchange configuration; holds the revision last applied.
    pub applied: tokio::sync::Mutex<i64>,
    /// The runtime counters (UDP packet counters among them) and the in-flight governor.
    pub counters: Arc<crate::counters::RuntimeCounters>,
    /// This node's name in usage rows and status.
    pub node: Arc<str>,
    pub roles: Arc<[String]>,
    pub started: Instant,
    /// Report settings (page size cap, UDP answer limit).
    pub reports: beast_reports::ReportOptions,
    /// Per-address limits on requests without a valid key.
    pub peers: Arc<crate::peers::PeerLimits>,
    /// Per-address allowance of UDP refusals for want of a valid key (see
    /// [`crate::udp::keyless_refusal`]): apart from `peers`, as a datagram's source address
    /// can be forged, and what a forger spends here silences only such refusals.
    pub udp_refusals: Arc<crate::peers::PeerLimits>,
    /// The longest UDP price answer (`udp_max_answer_bytes`, at most
    /// [`crate::udp::MAX_ANSWER`]): a longer one is refused.
    pub udp_max_answer: usize,
}

/// The empty source list of error rows, shared rather than allocated per row.
fn no_source() -> Arc<str> {
    static EMPTY: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
    EMPTY.clone()
}

/// An answer and the tier that produced it.
pub type Served = (Arc<Answer>, CacheTier);

/// A normalized asset name (`btc ` → `BTC`), or why it is not one.
pub fn normalize_asset(raw: &str) -> Result<String, ApiError> {
    beast_core::normalize_asset(raw)
        .ok_or_else(|| ApiError::BadRequest(format!("asset {}", beast_core::not_an_asset(raw))))
}

impl AppState {
    /// The active key a request presents (as [`key_text`] reads it; UDP, where the key is
    /// checked against API keys only); every refusal is counted.
    pub fn authenticate(
        &self,
        presented: Result<&str, ApiError>,
    ) -> Result<Arc<KeyEntry>, ApiError> {
        self.authenticate_hash(presented.map(|k| self.keys.presented_hash(k)).as_ref())
    }

    /// [`AppState::authenticate`] for a key already hashed ([`KeyRing::presented_hash`]), so a key checked
    /// against the admin key too is hashed once.
    pub(crate) fn authenticate_hash(
        &self,
        hash: Result<&[u8; 32], &ApiError>,
    ) -> Result<Arc<KeyEntry>, ApiError> {
        let key = hash
            .map_err(ApiError::clone)
            .and_then(|h| self.keys.authenticate_hash(h));
        if key.is_err() {
            self.counters.auth_failure();
        }
        key
    }

    /// The current answer for an asset, optionally pinned to one source (an exchange name or
    /// a source tag). Memory answers at once; otherwise the asset is fetched on demand from
    /// the best exchange that lists it, and an honest error (no price yet, stale with its age)
    /// is returned when that gives nothing.
    pub async fn price_answer(
        &self,
        asset: &str,
        source: Option<&str>,
        now: i64,
    ) -> Result<Served, ApiError> {
        let catalog;
        let pinned = match source {
            None => None,
            Some(wanted) => {
                catalog = self.catalog.load_full();
                let tag = catalog
                    .source_tag(wanted)
                    .filter(|tag| catalog.lists(asset, tag))
                    .ok_or_else(|| ApiError::UnknownSource {
                        source_tag: beast_core::refused_text(wanted),
                    })?;
                Some(tag)
            }
        };
        match self.book.lookup(asset, pinned, now) {
            Lookup::Fresh(answer) => return Ok((answer, CacheTier::Memory)),
            Lookup::Unknown => {
                return Err(ApiError::UnknownAsset {
                    asset: asset.to_owned(),
                });
            }
            Lookup::Stale { .. } | Lookup::NoPrice => {}
        }
        let fresh_now = || matches!(self.book.lookup(asset, pinned, now_ms()), Lookup::Fresh(_));
        // Boxed: this rare path's future is most of the size of every price request's future,
        // which is boxed and moved whole per request.
        let fetched = Box::pin(self.feeds.fetch_now(asset, pinned, fresh_now)).await;
        if let Err(e) = &fetched {
            tracing::debug!(asset, error = %e, "no on-demand price");
        }
        match self.book.lookup(asset, pinned, now_ms()) {
            Lookup::Fresh(answer) => Ok((answer, CacheTier::Rest)),
            Lookup::Stale { age_ms } => Err(ApiError::StalePrice {
                asset: asset.to_owned(),
                age_ms,
            }),
            Lookup::NoPrice | Lookup::Unknown => Err(ApiError::NoPrice {
                asset: asset.to_owned(),
            }),
        }
    }

    /// Room in the usage channel for `rows` rows of one request of `key`'s, admitted at
    /// `ts_ms` (every row's time; the clock is read once per request): waited for when the
    /// channel is full, the only wait of metering. Counting and queueing the rows with
    /// [`Metering::record`] then never waits, so a request dropped part-way (its client hung
    /// up) has counted and queued nothing or all of them. A stopping node whose usage writer
    /// takes no more rows has no room: its request is refused (`stopping`), not answered
    /// unmetered.
    pub(crate) async fn metering<'a>(
        &'a self,
        key: &'a KeyEntry,
        rows: usize,
        protocol: Protocol,
        started: Instant,
        ts_ms: i64,
    ) -> Result<Metering<'a>, ApiError> {
        Ok(Metering {
            room: self.usage.room(rows).await.ok_or(ApiError::Stopping)?,
            state: self,
            key,
            protocol,
            started,
            ts_ms,
        })
    }
}

/// One request's metering ([`AppState::metering`]): its room in the usage channel, and what
/// every row of it shares.
pub(crate) struct Metering<'a> {
    room: Room<'a>,
    state: &'a AppState,
    key: &'a KeyEntry,
    protocol: Protocol,
    started: Instant,
    ts_ms: i64,
}

impl Metering<'_> {
    /// Counts one metered answer and queues its usage row, without waiting. An answer
    /// carries its asset (no allocation); an error row records `asset` as given (the
    /// normalized name when the request had a valid one), cut to a sane length.
    pub(crate) fn record(&mut self, asset: &str, outcome: Result<&Served, &ApiError>) {
        let (asset, status, source, tier) = match outcome {
            Ok((answer, tier)) => (
                answer.asset.clone(),
                200,
                answer.sources_used.clone(),
                *tier,
            ),
            Err(e) => {
                let asset: String = asset.chars().take(2 * MAX_ASSET_LEN).collect();
                (asset.into(), e.status(), no_source(), CacheTier::None)
            }
        };
        self.state.counters.metered(outcome.map(|(_, tier)| *tier));
        self.room.record(UsageEvent {
            ts_ms: self.ts_ms,
            key_id: self.key.id,
            asset,
            source,
            protocol: self.protocol,
            node: self.state.node.clone(),
            status,
            latency_us: latency_us(self.started),
            cache_tier: tier,
        });
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
