//! API keys in memory: the hot path authenticates, rate-limits (GCRA, per key) and checks the
//! monthly quota without touching the store. A reload task picks up keys created or revoked
//! by `beast keys` (or another node) within `keys_reload_ms`.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use beast_core::{ApiError, Tier, month_of, next_month_start_ms, retry_after_s};
use beast_store::{ApiKeyRecord, Area, Store};
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::{InMemoryState, NotKeyed},
};
use tokio_util::sync::CancellationToken;

use crate::follow::follow;

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;

/// One active key as the hot path sees it.
pub struct KeyEntry {
    pub id: i64,
    pub tier: Tier,
    /// `None` for unlimited (partner) tiers.
    limiter: Option<Limiter>,
    /// Successful requests in the current month, and when that month ends (unix ms).
    used: AtomicU64,
    month_ends_ms: AtomicI64,
}

impl KeyEntry {
    fn new(record: &ApiKeyRecord, tier: Tier, now_ms: i64) -> Self {
        let limiter = (!tier.unlimited).then(|| {
            let rate = NonZeroU32::new(tier.requests_per_second).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(tier.burst.max(tier.requests_per_second)).unwrap_or(rate);
            RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
        });
        let used = if record.usage_month == month_of(now_ms) {
            record.usage_count.max(0) as u64
        } else {
            0
        };
        Self {
            id: record.id,
            tier,
            limiter,
            used: AtomicU64::new(used),
            month_ends_ms: AtomicI64::new(next_month_start_ms(now_ms)),
        }
    }

    /// Rate limit (one token per request) and quota (room for `answers` more answers); a
    /// request admitted here may proceed.
    pub fn admit(&self, now_ms: i64, answers: u64) -> Result<(), ApiError> {
        if self.tier.unlimited {
            return Ok(());
        }
        let ends = self.month_ends_ms.load(Relaxed);
        if now_ms >= ends
            && self
                .month_ends_ms
                .compare_exchange(ends, next_month_start_ms(now_ms), Relaxed, Relaxed)
                .is_ok()
        {
            self.used.store(0, Relaxed);
        }
        if let Some(limiter) = &self.limiter
            && let Err(not_until) = limiter.check()
        {
            return Err(rate_limited(
                not_until.wait_time_from(limiter.clock().now()),
            ));
        }
        if self.used.load(Relaxed).saturating_add(answers) > self.tier.monthly_quota {
            return Err(ApiError::QuotaExceeded {
                retry_after_s: retry_after_s(now_ms, self.month_ends_ms.load(Relaxed)),
            });
        }
        Ok(())
    }

    /// Counts `n` successful answers toward the monthly quota.
    pub fn count_success(&self, n: u64) {
        self.used.fetch_add(n, Relaxed);
    }
}

/// A rate limit's refusal: retry after `wait`, in whole seconds, at least one.
pub(crate) fn rate_limited(wait: std::time::Duration) -> ApiError {
    ApiError::RateLimited {
        retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
    }
}

/// All active keys, by hash of the raw key.
#[derive(Default)]
pub struct KeyRing {
    /// Replaced whole on reload; the hot path only loads it.
    keys: ArcSwap<HashMap<[u8; 32], Arc<KeyEntry>>>,
}

impl KeyRing {
    /// The active key whose hash this is, or `InvalidKey`.
    pub fn authenticate_hash(&self, hash: &[u8; 32]) -> Result<Arc<KeyEntry>, ApiError> {
        self.keys
            .load()
            .get(hash)
            .cloned()
            .ok_or(ApiError::InvalidKey)
    }

    /// Rebuilds the ring from the store's rows, keeping the limiter and counters of keys
    /// whose tier did not change.
    pub fn replace(&self, records: &[ApiKeyRecord], tiers: &[Tier], now_ms: i64) {
        let old = self.keys.load();
        let by_id: HashMap<i64, &Arc<KeyEntry>> = old.values().map(|e| (e.id, e)).collect();
        let mut next = HashMap::with_capacity(records.len());
        for record in records.iter().filter(|r| r.revoked_at_ms.is_none()) {
            let Some(tier) = tiers.iter().find(|t| t.name == record.tier) else {
                tracing::warn!(key_id = record.id, tier = %record.tier, "key has an unknown tier, ignored");
                continue;
            };
            let Ok(hash) = hex::decode(&record.key_hash)
                .map_err(drop)
                .and_then(|b| <[u8; 32]>::try_from(b).map_err(drop))
            else {
                tracing::warn!(key_id = record.id, "key hash is malformed, ignored");
                continue;
            };
            let entry = match by_id.get(&record.id) {
                Some(e) if e.tier == *tier => Arc::clone(e),
                _ => Arc::new(KeyEntry::new(record, tier.clone(), now_ms)),
            };
            next.insert(hash, entry);
        }
        self.keys.store(Arc::new(next));
    }

    pub fn len(&self) -> usize {
        self.keys.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Loads the keys now; returns the revision loaded.
    pub async fn load(&self, store: &dyn Store) -> Result<i64, beast_store::StoreError> {
        let revision = store.revision(Area::Keys).await?;
        let (records, tiers) = (store.api_keys().await?, store.tiers().await?);
        self.replace(&records, &tiers, beast_core::now_ms());
        Ok(revision)
    }

    /// Reloads whenever the store's keys change after revision `seen`, until `stop`.
    pub async fn keep_in_step(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        seen: i64,
        every: Duration,
        stop: CancellationToken,
    ) {
        let reload = |_| {
            let (ring, store) = (self.clone(), store.clone());
            async move {
                match ring.load(&*store).await {
                    Ok(_) => {
                        tracing::info!(active = ring.len(), "API keys reloaded");
                        true
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reloading API keys failed");
                        false
                    }
                }
            }
        };
        follow(store.clone(), Area::Keys, seen, every, stop, reload).await;
    }
}
