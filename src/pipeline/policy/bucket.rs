//! Token buckets as GCRA (the generic cell rate algorithm): one number per key, the
//! "theoretical arrival time" at which the bucket is full again. The same arithmetic runs
//! in this process ([`LocalLimiter`]) and in the shared store's script, so a limit means
//! the same in either scope.
//!
//! A key whose time has passed has a full bucket, exactly like a key never seen: such
//! entries are dropped freely, which is what keeps memory bounded under a flood of
//! distinct keys without changing any answer.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;
use std::time::Instant;

use crate::config::model::RateLimit;

/// The outcome of one request against a bucket; times in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub admitted: bool,
    /// Requests that would still be admitted right now.
    pub remaining: u64,
    /// Until one token is back (0 when admitted).
    pub retry_after: u64,
    /// Until the bucket is full again.
    pub reset: u64,
}

/// One request at `now` against a bucket whose full-again time is `tat`; returns the new
/// full-again time (unchanged when refused) and the verdict.
pub fn gcra(tat: u64, now: u64, interval: u64, burst: u64) -> (u64, Verdict) {
    // Signed and wide: `allow_at` is before the epoch for a fresh bucket.
    let (now_w, interval_w) = (i128::from(now), i128::from(interval));
    let tat = tat.max(now);
    let new_tat = i128::from(tat) + interval_w;
    let allow_at = new_tat - i128::from(burst) * interval_w;
    let micros = |v: i128| u64::try_from(v).unwrap_or(u64::MAX);
    if now_w < allow_at {
        return (
            tat,
            Verdict {
                admitted: false,
                remaining: 0,
                retry_after: micros(allow_at - now_w),
                reset: tat - now,
            },
        );
    }
    (
        micros(new_tat),
        Verdict {
            admitted: true,
            remaining: micros((now_w - allow_at) / interval_w),
            retry_after: 0,
            reset: micros(new_tat - now_w),
        },
    )
}

const SHARDS: usize = 16;
/// Keys one shard holds at most (about a million per limiter): past it, half the shard's
/// buckets are forgotten (those keys start full again) rather than memory growing.
const MAX_KEYS_PER_SHARD: usize = 1 << 16;
/// A shard below this size is never swept.
const MIN_SWEEP: usize = 1024;

struct Shard {
    buckets: HashMap<u64, u64>,
    /// Sweep when the shard grows past this; doubles with what survives a sweep, so
    /// sweeping costs O(1) per insert on average.
    sweep_at: usize,
}

/// The buckets of one route's local limit.
pub struct LocalLimiter {
    pub limit: RateLimit,
    interval: u64,
    epoch: Instant,
    hasher: std::collections::hash_map::RandomState,
    shards: Box<[Mutex<Shard>]>,
}

impl std::fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalLimiter({:?})", self.limit)
    }
}

impl LocalLimiter {
    pub fn new(limit: RateLimit) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    buckets: HashMap::new(),
                    sweep_at: MIN_SWEEP,
                })
            })
            .collect();
        Self {
            interval: limit.interval_micros(),
            limit,
            epoch: Instant::now(),
            hasher: Default::default(),
            shards,
        }
    }

    /// One request for `key`, now.
    pub fn check(&self, key: impl Hash) -> Verdict {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.check_at(self.hasher.hash_one(key), now)
    }

    fn check_at(&self, key: u64, now: u64) -> Verdict {
        let shard = &self.shards[(key as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        let tat = shard.buckets.get(&key).copied().unwrap_or(now);
        let (tat, verdict) = gcra(tat, now, self.interval, self.limit.burst);
        if verdict.admitted {
            if !shard.buckets.contains_key(&key) && shard.buckets.len() >= shard.sweep_at {
                sweep(&mut shard, now);
            }
            shard.buckets.insert(key, tat);
        }
        verdict
    }

    /// Keys with a bucket held now (for tests of the bound).
    pub fn keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).buckets.len())
            .sum()
    }
}

fn sweep(shard: &mut Shard, now: u64) {
    shard.buckets.retain(|_, tat| *tat > now);
    if shard.buckets.len() >= MAX_KEYS_PER_SHARD {
        let mut keep = false;
        shard.buckets.retain(|_, _| {
            keep = !keep;
            keep
        });
    }
    shard.sweep_at = (shard.buckets.len() * 2).clamp(MIN_SWEEP, MAX_KEYS_PER_SHARD);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{RateLimitKey, RateLimitScope};
    use proptest::prelude::*;
    use std::time::Duration;

    fn limit(requests: u64, per_ms: u64, burst: u64) -> RateLimit {
        RateLimit {
            requests,
            per: Duration::from_millis(per_ms),
            burst,
            key: RateLimitKey::Client,
            scope: RateLimitScope::Local,
        }
    }

    #[test]
    fn a_fresh_bucket_admits_its_burst_then_refuses_with_the_wait() {
        let limiter = LocalLimiter::new(limit(10, 1000, 3));
        let verdicts: Vec<_> = (0..4).map(|_| limiter.check_at(7, 0)).collect();
        assert_eq!(
            verdicts.iter().map(|v| v.remaining).collect::<Vec<_>>(),
            [2, 1, 0, 0]
        );
        assert!(verdicts[..3].iter().all(|v| v.admitted));
        assert!(!verdicts[3].admitted);
        assert_eq!(verdicts[3].retry_after, 100_000, "one token per 100 ms");
        assert_eq!(verdicts[3].reset, 300_000);
        // After one interval exactly one more is admitted.
        assert!(limiter.check_at(7, 100_000).admitted);
        assert!(!limiter.check_at(7, 100_000).admitted);
        // Other keys have their own bucket.
        assert!(limiter.check_at(8, 0).admitted);
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_distinct_keys() {
        let limiter = LocalLimiter::new(limit(1, 1000, 1));
        // Each key's bucket is full again after 1 s; a flood spread over time frees them.
        for i in 0..200_000u64 {
            limiter.check_at(i, i * 100);
        }
        assert!(limiter.keys() < 20_000, "{} keys held", limiter.keys());
        // All at once: the hard cap holds.
        let flood = LocalLimiter::new(limit(1, 3_600_000, 1));
        for i in 0..(SHARDS * MAX_KEYS_PER_SHARD * 2) as u64 {
            flood.check_at(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), 0);
        }
        assert!(flood.keys() <= SHARDS * MAX_KEYS_PER_SHARD);
    }

    proptest! {
        /// Whatever the arrival pattern, a bucket never admits more than
        /// `burst + rate * elapsed`.
        #[test]
        fn never_admits_more_than_burst_plus_refill(
            requests in 1u64..50,
            per_ms in 1u64..5_000,
            burst in 1u64..50,
            gaps in proptest::collection::vec(0u64..200_000, 1..300),
        ) {
            let limiter = LocalLimiter::new(limit(requests, per_ms, burst));
            let interval = limiter.interval;
            let mut now = 0u64;
            let mut admitted = 0u64;
            for gap in gaps {
                now += gap;
                if limiter.check_at(1, now).admitted {
                    admitted += 1;
                }
                // Tokens refill one per `interval` microseconds.
                prop_assert!(admitted <= burst + now / interval, "{admitted} admitted by {now}us");
            }
        }
    }
}
