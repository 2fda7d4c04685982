//! Per-address limits on the requests no key answers for (SPEC §8): public endpoints
//! (`/exchanges`, `/assets`, `/health` on a public listener, unknown paths) asked without a key,
//! and requests whose key is missing or unknown. A request presenting a valid key is not
//! limited by its address (its key answers for it, and can be revoked), so a busy address
//! holding keys is never slowed by this. The health listeners are internal and not
//! limited; UDP is not either (a datagram's source address can be forged, so a limit by it
//! would let anyone spend another address's allowance). UDP refusals for want of a key have an
//! allowance of their own instead (`crate::udp::keyless_refusal`): spending another address's
//! only keeps refusals from it.

use std::{
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use beast_core::{ApiError, Ticks};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use tokio_util::sync::CancellationToken;

use crate::keys::rate_limited;

/// How often addresses whose allowance is whole again are forgotten.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Each address's allowance of unpaid requests: `per_minute`, refilled evenly, all of it
/// usable at once. IPv6 addresses share one allowance per /64 (what one host is usually given,
/// so a host cannot take a fresh allowance for each of its addresses).
pub struct PeerLimits {
    /// `None`: no limit.
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl PeerLimits {
    /// `per_minute` of 0 turns the limit off.
    pub fn new(per_minute: u32) -> Self {
        Self {
            limiter: NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))),
        }
    }

    /// The rule for every path: a request from `peer` that does not `pay` (present a valid
    /// key: an active API key or the admin key) spends one of the address's unpaid requests;
    /// `RateLimited` (with when to retry) once it has none left. With the limit off, `pays` is
    /// not asked, so no key is looked at. Nothing is counted.
    pub fn admit(&self, peer: IpAddr, pays: impl FnOnce() -> bool) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if pays() {
            return Ok(());
        }
        limiter
            .check_key(&allowance_of(peer))
            .map_err(|not_until| rate_limited(not_until.wait_time_from(limiter.clock().now())))
    }

    /// Every minute until `stop`, forgets the addresses whose allowance is whole again, so the
    /// table holds only addresses seen within about a minute.
    pub async fn keep_trimmed(self: Arc<Self>, stop: CancellationToken) {
        let Some(limiter) = &self.limiter else {
            return;
        };
        let mut ticks = Ticks::new(TRIM_EVERY, stop);
        while ticks.next().await {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// The address whose allowance a peer spends: an IPv4 address (also when written as IPv6),
/// or an IPv6 address's /64.
fn allowance_of(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & (u128::MAX << 64))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_has_its_allowance_then_is_refused_with_when_to_retry() {
        let limits = PeerLimits::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let unpaid = || false;
        for _ in 0..3 {
            assert!(limits.admit(a, unpaid).is_ok());
        }
        // One a minute over three: the next is 20 s away.
        match limits.admit(a, unpaid) {
            Err(ApiError::RateLimited { retry_after_s }) => {
                assert!((1..=20).contains(&retry_after_s), "{retry_after_s}")
            }
            other => panic!("{other:?}"),
        }
        assert!(
            limits.admit(a, || true).is_ok(),
            "a valid key pays for itself"
        );
        assert!(
            limits.admit(b, unpaid).is_ok(),
            "another address has its own"
        );
        let off = PeerLimits::new(0);
        assert!((0..1000).all(|_| off.admit(a, || unreachable!("no key is looked at")).is_ok()));
    }

    #[test]
    fn ipv6_addresses_share_their_64_and_mapped_ipv4_is_ipv4() {
        let of = |s: &str| allowance_of(s.parse().unwrap());
        assert_eq!(of("2001:db8:1:2:aaaa::1"), of("2001:db8:1:2:bbbb::2"));
        assert_ne!(of("2001:db8:1:2::1"), of("2001:db8:1:3::1"));
        assert_eq!(of("::ffff:192.0.2.7"), of("192.0.2.7"));
        assert_eq!(of("2001:db8:1:2:aaaa::1"), of("2001:db8:1:2::"));
    }
}
