//! When the agent runs its passes. Pure: the caller passes the clock.
//!
//! Hosts spread over the interval deterministically: a host's slot is a fixed offset into
//! every interval, derived from a hash of its hostname, so a fleet of hosts with the same
//! interval fetches evenly spread, and one host always fetches at the same point of it.
//! After a failed pass the next try backs off exponentially: one interval, then two, four, …
//! up to sixteen intervals, so an unreachable server is not hammered.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// The fixed offset of `hostname` into each interval.
pub fn offset(hostname: &str, interval: Duration) -> Duration {
    let period = interval.as_millis().max(1);
    let digest = Sha256::digest(hostname.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    let ms = u128::from_le_bytes(first) % period;
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Time from `now` until this host's next slot (never zero: at least a millisecond).
pub fn until_slot(now: SystemTime, hostname: &str, interval: Duration) -> Duration {
    let period = interval.as_millis().max(1);
    let since_epoch = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let into_period = since_epoch % period;
    let slot = offset(hostname, interval).as_millis();
    let wait = if slot > into_period {
        slot - into_period
    } else {
        period - into_period + slot
    };
    Duration::from_millis(u64::try_from(wait.max(1)).unwrap_or(u64::MAX))
}

/// Delay before retrying after `failures` consecutive failed passes (1 = the first failure).
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(4);
    interval.saturating_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_stable_and_inside_the_interval() {
        let i = Duration::from_secs(300);
        assert_eq!(offset("ws-01", i), offset("ws-01", i));
        for h in ["ws-01", "ws-02", "build-01", "a", ""] {
            assert!(offset(h, i) < i);
        }
        assert_ne!(offset("ws-01", i), offset("ws-02", i));
    }

    #[test]
    fn hosts_spread_over_the_interval() {
        let i = Duration::from_secs(300);
        let mut buckets = [0u32; 10];
        for n in 0..1000 {
            let o = offset(&format!("host-{n}"), i).as_secs();
            buckets[usize::try_from(o / 30).unwrap()] += 1;
        }
        // 1000 hosts over 10 buckets: each gets a fair share (100 ± 40).
        assert!(
            buckets.iter().all(|b| (60..=140).contains(b)),
            "{buckets:?}"
        );
    }

    #[test]
    fn next_slot_is_within_one_interval_and_lands_on_the_offset() {
        let i = Duration::from_secs(300);
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_123);
        let wait = until_slot(now, "ws-01", i);
        assert!(wait > Duration::ZERO && wait <= i);
        let at = (now + wait).duration_since(UNIX_EPOCH).unwrap().as_millis() % i.as_millis();
        assert_eq!(at, offset("ws-01", i).as_millis());
        // Exactly at the slot: the next one is a whole interval away.
        assert_eq!(until_slot(now + wait, "ws-01", i), i);
    }

    #[test]
    fn backoff_doubles_up_to_sixteen_intervals() {
        let i = Duration::from_secs(60);
        let got: Vec<u64> = (1..=7).map(|n| backoff(i, n).as_secs()).collect();
        assert_eq!(got, [60, 120, 240, 480, 960, 960, 960]);
    }
}
