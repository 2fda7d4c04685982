//! API keys in memory: the hot path authenticates, rate-limits (GCRA, per key) and checks the
//! monthly quota without touching the store. A reload task picks up keys created or revoked
//! by `beast keys` (or another node) within `keys_reload_ms`.

use std::{
    cell::RefCell,
    collections::HashMap,
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use beast_core::{ApiError, DAY_MS, Tier, month_of, next_month_start_ms, retry_after_s};
use beast_store::{ApiKeyRecord, Area, Store, keys::hash_key};
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::{InMemoryState, NotKeyed},
};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::follow::follow;

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;

thread_local! {
    /// This thread's last API key presented, with its hash ([`KeyRing::presented_hash`]).
    static LAST: RefCell<(Vec<u8>, [u8; 32])> = RefCell::new((Vec::new(), hash_key("")));
}

/// One active key as the hot path sees it.
pub struct KeyEntry {
    pub id: i64,
    pub tier: Tier,
    /// `None` for unlimited (partner) tiers.
    limiter: Option<Limiter>,
    /// This month's quota use ([`Usage`]): answers given, with the room held by requests
    /// being answered, and which month that is. Shared with the key's next entry when its
    /// tier changes ([`KeyEntry::counting_from`]).
    usage: Arc<AtomicU64>,
}

/// A key's quota use in one word, so that room is taken, given back, or started again in a new
/// month whole: the answers counted (low 44 bits, at most 2^44 - 1, past any quota) and the
/// day their month ends on (high 20 bits, days since 1970: enough until the year 4840).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Usage {
    month: u32,
    count: u64,
}

impl Usage {
    const COUNT_BITS: u32 = 44;
    const MAX_COUNT: u64 = (1 << Self::COUNT_BITS) - 1;

    /// `count` answers in the month `now_ms` is in.
    fn in_month_of(now_ms: i64, count: u64) -> Self {
        Self {
            month: next_month_start_ms(now_ms).div_euclid(DAY_MS) as u32,
            count,
        }
    }

    /// When this use's month ends (unix ms).
    fn ends_ms(self) -> i64 {
        i64::from(self.month) * DAY_MS
    }

    /// This use as of `now_ms`: a month that has ended starts again at 0. (A request whose
    /// clock is a hair behind another's counts in the month the other started.)
    fn as_of(self, now_ms: i64) -> Self {
        if now_ms >= self.ends_ms() {
            Self::in_month_of(now_ms, 0)
        } else {
            self
        }
    }

    fn of(word: u64) -> Self {
        Self {
            month: (word >> Self::COUNT_BITS) as u32,
            count: word & Self::MAX_COUNT,
        }
    }

    fn word(self) -> u64 {
        (u64::from(self.month) << Self::COUNT_BITS) | self.count.min(Self::MAX_COUNT)
    }
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
            usage: Arc::new(AtomicU64::new(Usage::in_month_of(now_ms, used).word())),
        }
    }

    /// Rate limit (one token per request) and quota: room for `answers` more answers this
    /// month, taken at once (so requests admitted together cannot pass the quota between
    /// them) and held by the [`Admitted`] returned until it is settled or dropped.
    pub fn admit(&self, now_ms: i64, answers: u64) -> Result<Admitted<'_>, ApiError> {
        if self.tier.unlimited {
            return Ok(Admitted {
                key: self,
                held: 0,
                month: 0,
            });
        }
        if let Some(limiter) = &self.limiter
            && let Err(not_until) = limiter.check()
        {
            return Err(rate_limited(
                not_until.wait_time_from(limiter.clock().now()),
            ));
        }
        // Taken only if it fits: a request refused holds nothing, even for a moment. A new
        // month starts the count again in the same step.
        let taken = self.update(|u| {
            let u = u.as_of(now_ms);
            let count = u
                .count
                .checked_add(answers)
                .filter(|&c| c <= self.tier.monthly_quota.min(Usage::MAX_COUNT))?;
            Some(Usage { count, ..u })
        });
        match taken {
            Ok(before) => Ok(Admitted {
                key: self,
                held: answers,
                month: before.as_of(now_ms).month,
            }),
            Err(full) => Err(ApiError::QuotaExceeded {
                retry_after_s: retry_after_s(now_ms, full.as_of(now_ms).ends_ms()),
            }),
        }
    }

    /// This entry, counting on the quota use of `old` (the same key's entry until now): the
    /// rows of its latest answers may not be stored yet, and requests still being answered
    /// settle the room they hold there. The stored count (this entry's until now) stands if
    /// it is ahead (another process's answers); the room requests hold at that moment is then
    /// given back from it when they settle, so it may fall short by that much.
    fn counting_from(mut self, old: &KeyEntry, now_ms: i64) -> Self {
        let stored = Usage::of(self.usage.load(Relaxed));
        self.usage = Arc::clone(&old.usage);
        // Refused when the shared count is as high already: nothing to raise.
        let _ = self.update(|u| {
            let u = u.as_of(now_ms);
            (u.month == stored.month && u.count < stored.count).then_some(Usage {
                count: stored.count,
                ..u
            })
        });
        self
    }

    /// Gives back `n` answers of quota room taken in `month` and not used; room taken in a
    /// month that has since ended ended with it.
    fn release(&self, n: u64, month: u32) {
        // Refused (another month now): nothing to give back.
        let _ = self.update(|u| {
            (u.month == month).then(|| Usage {
                count: u.count.saturating_sub(n),
                ..u
            })
        });
    }

    /// Changes the quota use as `change` says, if it says (`Some`): the use before (`Ok`), or
    /// as it is (`Err`) when `change` refused.
    fn update(&self, change: impl Fn(Usage) -> Option<Usage>) -> Result<Usage, Usage> {
        self.usage
            .fetch_update(Relaxed, Relaxed, |word| {
                change(Usage::of(word)).map(Usage::word)
            })
            .map(Usage::of)
            .map_err(Usage::of)
    }
}

/// A request admitted by [`KeyEntry::admit`], holding the quota room it took: given back when
/// dropped, except the answers [`Admitted::settle`] keeps.
#[must_use = "dropping it gives its quota room back at once"]
pub struct Admitted<'a> {
    key: &'a KeyEntry,
    held: u64,
    /// The month the room was taken in ([`Usage::month`]).
    month: u32,
}

impl Admitted<'_> {
    /// `served` answers were given: they count toward the month's quota, and the rest of the
    /// room taken is given back.
    pub fn settle(mut self, served: u64) {
        self.held = self.held.saturating_sub(served);
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if self.held > 0 {
            self.key.release(self.held, self.month);
        }
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
    keys: ArcSwap<foldhash::HashMap<[u8; 32], Arc<KeyEntry>>>,
}

impl KeyRing {
    /// The hash ([`hash_key`]) of a key a request presents, whatever the protocol.
    /// SHA-256 is most of what checking a key costs, and a thread mostly sees the same key
    /// request after request (a client keeps its key, and its connection's requests mostly run
    /// on one thread), so each thread keeps the last key it hashed that is an active API key,
    /// with its hash: never the admin key, nor a key guessed or revoked. Compared in constant
    /// time (`subtle`): a request cannot time how much of its key matches the one kept, which
    /// may be another client's.
    pub(crate) fn presented_hash(&self, key: &str) -> [u8; 32] {
        LAST.with_borrow_mut(|(kept, hash)| {
            if bool::from(kept.as_slice().ct_eq(key.as_bytes())) {
                return *hash;
            }
            let fresh = hash_key(key);
            if self.keys.load().contains_key(&fresh) {
                // The buffer is reused: a thread serving many keys does not allocate per key.
                kept.clear();
                kept.extend_from_slice(key.as_bytes());
                *hash = fresh;
            }
            fresh
        })
    }

    /// The active key whose hash this is, or `InvalidKey`.
    pub fn authenticate_hash(&self, hash: &[u8; 32]) -> Result<Arc<KeyEntry>, ApiError> {
        self.keys
            .load()
            .get(hash)
            .cloned()
            .ok_or(ApiError::InvalidKey)
    }

    /// Rebuilds the ring from the store's rows, keeping the limiter and counters of keys
    /// whose tier did not change. A key whose tier changed gets the new tier's limits, and
    /// keeps the month's count as this node knows it: the stored count lags by the answers
    /// whose rows are not written yet.
    pub fn replace(&self, records: &[ApiKeyRecord], tiers: &[Tier], now_ms: i64) {
        let old = self.keys.load();
        let by_id: HashMap<i64, &Arc<KeyEntry>> = old.values().map(|e| (e.id, e)).collect();
        let mut next =
            foldhash::HashMap::with_capacity_and_hasher(records.len(), Default::default());
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
                Some(e) => {
                    Arc::new(KeyEntry::new(record, tier.clone(), now_ms).counting_from(e, now_ms))
                }
                None => Arc::new(KeyEntry::new(record, tier.clone(), now_ms)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_presented_key_hashes_as_stored_and_only_api_keys_are_kept() {
        let ring = KeyRing::default();
        let now = beast_core::now_ms();
        let keys = [
            record(1, "tb_a", "t", 0, now),
            record(2, "tb_ab", "t", 0, now),
        ];
        ring.replace(&keys, &[tier("t", 1, false)], now);
        let kept = || LAST.with_borrow(|(kept, _)| String::from_utf8_lossy(kept).into_owned());
        for (key, then_kept) in [
            ("tb_a", "tb_a"),
            ("tb_a", "tb_a"),
            // Not an API key (the admin key, a guess): hashed, and not kept.
            ("admin-key", "tb_a"),
            ("tb_ab", "tb_ab"),
            ("tb_", "tb_ab"),
            ("", "tb_ab"),
            ("tb_a", "tb_a"),
        ] {
            assert_eq!(ring.presented_hash(key), hash_key(key), "{key:?}");
            assert_eq!(kept(), then_kept, "after {key:?}");
        }
    }

    /// The row of `key`, in `tier`, with `usage_count` answers stored in the month of `now_ms`.
    fn record(id: i64, key: &str, tier: &str, usage_count: i64, now_ms: i64) -> ApiKeyRecord {
        ApiKeyRecord {
            id,
            key_hash: hex::encode(hash_key(key)),
            key_prefix: String::new(),
            name: String::new(),
            tier: tier.into(),
            created_at_ms: 0,
            revoked_at_ms: None,
            usage_month: month_of(now_ms),
            usage_count,
        }
    }

    /// A tier of `monthly_quota` answers a month, at rates no test reaches.
    fn tier(name: &str, monthly_quota: u64, unlimited: bool) -> Tier {
        Tier {
            name: name.into(),
            requests_per_second: 1_000_000,
            burst: 1_000_000,
            monthly_quota,
            reports_enabled: false,
            monthly_report_allowance: 0,
            unlimited,
        }
    }

    fn entry(monthly_quota: u64, unlimited: bool) -> KeyEntry {
        let now = beast_core::now_ms();
        let tier = tier("t", monthly_quota, unlimited);
        KeyEntry::new(&record(1, "tb_k", "t", 0, now), tier, now)
    }

    impl KeyEntry {
        fn used(&self) -> u64 {
            Usage::of(self.usage.load(Relaxed)).count
        }

        fn month_ends_ms(&self) -> i64 {
            Usage::of(self.usage.load(Relaxed)).ends_ms()
        }
    }

    fn refused(result: Result<Admitted<'_>, ApiError>) -> bool {
        matches!(result, Err(ApiError::QuotaExceeded { .. }))
    }

    #[test]
    fn requests_admitted_together_cannot_pass_the_quota_between_them() {
        let key = entry(10, false);
        let now = beast_core::now_ms();
        // Seven answers being worked on hold their room: three more fit, four do not.
        let first = key.admit(now, 7).unwrap();
        assert!(refused(key.admit(now, 4)));
        let second = key.admit(now, 3).unwrap();
        assert!(refused(key.admit(now, 1)));
        // Five of the seven were given: two come back; dropped unsettled, all three do.
        first.settle(5);
        drop(second);
        assert_eq!(key.used(), 5);
        key.admit(now, 5).unwrap().settle(5);
        assert!(refused(key.admit(now, 1)));
        assert_eq!(key.used(), 10, "a refusal holds nothing");
    }

    #[test]
    fn room_taken_last_month_is_not_given_back_to_this_one() {
        let key = entry(10, false);
        let now = beast_core::now_ms();
        let held = key.admit(now, 4).unwrap();
        let next_month = key.month_ends_ms();
        key.admit(next_month, 2).unwrap().settle(2);
        drop(held);
        assert_eq!(key.used(), 2, "the new month's two answers stay counted");
        assert!(refused(key.admit(next_month, 9)));
        assert!(key.admit(next_month, 8).is_ok());
    }

    #[test]
    fn quota_use_is_one_word_of_month_and_count() {
        let now = beast_core::now_ms();
        let this_month = Usage::in_month_of(now, 7);
        assert_eq!(this_month.ends_ms(), next_month_start_ms(now));
        for usage in [
            Usage { month: 0, count: 0 },
            this_month,
            Usage {
                month: (1 << 20) - 1,
                count: Usage::MAX_COUNT,
            },
        ] {
            assert_eq!(Usage::of(usage.word()), usage);
        }
        let huge = Usage {
            month: 3,
            count: u64::MAX,
        };
        assert_eq!(
            Usage::of(huge.word()),
            Usage {
                month: 3,
                count: Usage::MAX_COUNT
            }
        );
    }

    #[test]
    fn a_new_month_starts_the_count_again_in_the_step_that_takes_room() {
        let key = entry(10, false);
        let now = beast_core::now_ms();
        let ends = next_month_start_ms(now);
        assert_eq!(key.month_ends_ms(), ends);
        key.admit(now, 10).unwrap().settle(10);
        let Err(ApiError::QuotaExceeded { retry_after_s }) = key.admit(now, 1) else {
            panic!("the quota is used up");
        };
        assert_eq!(retry_after_s, beast_core::retry_after_s(now, ends));
        key.admit(ends, 3).unwrap().settle(3);
        assert_eq!(key.used(), 3);
        assert_eq!(key.month_ends_ms(), next_month_start_ms(ends));
        // A request whose clock is a hair behind counts in the new month too.
        key.admit(ends - 1, 1).unwrap().settle(1);
        assert_eq!(key.used(), 4);
        // Used up in the new month: its end is when to come back.
        key.admit(ends, 6).unwrap().settle(6);
        let Err(ApiError::QuotaExceeded { retry_after_s }) = key.admit(ends, 1) else {
            panic!("the new month's quota is used up");
        };
        assert_eq!(
            retry_after_s,
            beast_core::retry_after_s(ends, next_month_start_ms(ends))
        );
    }

    #[test]
    fn a_key_moved_to_another_tier_keeps_the_months_count_this_node_knows() {
        let ring = KeyRing::default();
        let now = beast_core::now_ms();
        let record = |tier: &str, usage_count| record(7, "tb_moved", tier, usage_count, now);
        let tiers = [tier("basic", 10, false), tier("pro", 20, false)];
        ring.replace(&[record("basic", 2)], &tiers, now);
        let key = ring.authenticate_hash(&hash_key("tb_moved")).unwrap();
        key.admit(now, 6).unwrap().settle(6);
        let held = key.admit(now, 2).unwrap();
        assert_eq!(key.used(), 10);
        // Moved before the last six rows are stored (the stored count, 2, lags), and while a
        // request holds room for two more answers.
        ring.replace(&[record("pro", 2)], &tiers, now);
        let moved = ring.authenticate_hash(&hash_key("tb_moved")).unwrap();
        assert_eq!(moved.tier.monthly_quota, 20);
        assert_eq!(moved.used(), 10);
        // That request gave one answer: the other's room comes back to the key as it is now.
        held.settle(1);
        assert_eq!(moved.used(), 9);
        // Stored ahead of this node (another node's answers): the stored count stands.
        ring.replace(&[record("basic", 15)], &tiers, now);
        let back = ring.authenticate_hash(&hash_key("tb_moved")).unwrap();
        assert_eq!(back.used(), 15);
    }

    #[test]
    fn unlimited_keys_hold_no_room() {
        let key = entry(0, true);
        let now = beast_core::now_ms();
        key.admit(now, 100).unwrap().settle(100);
        assert_eq!(key.used(), 0);
    }
}
