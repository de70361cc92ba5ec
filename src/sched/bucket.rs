//! One budget ("600 requests per minute", "300,000 tokens per minute") as a GCRA bucket: a single
//! number per budget, the theoretical arrival time `tat`, refilled continuously — "consumed as
//! requests come in, recover over time" (seed 000) — and the same arithmetic in process and in the
//! Redis script ([`super::store`]).
//!
//! Smoothing: providers may enforce a per-minute limit over shorter periods (OpenAI: 60,000 rpm as
//! 1,000 per second), so a bucket holds at most one second of its budget, never a minute's burst.
//! Headroom: the gateway admits at [`RATE_HEADROOM`] of the rate and holds [`BURST_HEADROOM`] of the
//! second, so the provider's own bucket is always a little fuller than ours when our requests
//! reach it, whatever the network jitter in between: full utilisation, no 429.

/// Fraction of the configured rate the gateway admits (the provider sees ≥ 98% of its limit used).
pub const RATE_HEADROOM: f64 = 0.98;
/// Fraction of one second's budget the gateway lets through at once.
pub const BURST_HEADROOM: f64 = 0.8;
/// The window a per-minute limit is smoothed over.
pub const SMOOTHING_SECS: f64 = 1.0;

/// Rate parameters of one budget, from a per-minute limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Seconds one unit (a request, a token) takes to refill.
    pub unit_secs: f64,
    /// Bucket capacity, in seconds of refill (capacity in units × `unit_secs`).
    pub tolerance_secs: f64,
}

impl Rate {
    pub fn per_minute(limit: u64) -> Rate {
        let per_sec = (limit.max(1) as f64 / 60.0) * RATE_HEADROOM;
        let capacity = (per_sec / RATE_HEADROOM * SMOOTHING_SECS * BURST_HEADROOM).max(1.0);
        Rate {
            unit_secs: 1.0 / per_sec,
            tolerance_secs: capacity / per_sec,
        }
    }

    /// Units the bucket holds when full.
    pub fn capacity(&self) -> f64 {
        self.tolerance_secs / self.unit_secs
    }
}

/// How long until a bucket whose theoretical arrival time is `tat` can take `cost` units at `now`
/// (0 = now). A cost above the capacity passes once the bucket is full.
pub fn wait(rate: Rate, tat: f64, now: f64, cost: f64) -> f64 {
    let backlog = (tat - now).max(0.0);
    let need = (cost * rate.unit_secs).min(rate.tolerance_secs);
    (backlog - (rate.tolerance_secs - need)).max(0.0)
}

/// The new `tat` after admitting `cost` units at `now`.
pub fn take(rate: Rate, tat: f64, now: f64, cost: f64) -> f64 {
    tat.max(now) + cost * rate.unit_secs
}

/// Units available at `now` (for `x-ratelimit`-style reporting and `/stats`).
pub fn level(rate: Rate, tat: f64, now: f64) -> f64 {
    ((rate.tolerance_secs - (tat - now).max(0.0)) / rate.unit_secs).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooths_a_minute_into_seconds() {
        let r = Rate::per_minute(600);
        // 10/s, 98% admitted; 8 at once.
        assert!((1.0 / r.unit_secs - 9.8).abs() < 1e-9);
        assert!((r.capacity() - 8.0).abs() < 1e-9);
        let r = Rate::per_minute(6);
        assert!((r.capacity() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn burst_then_steady_rate() {
        let r = Rate::per_minute(600);
        let mut tat = 0.0;
        let mut admitted = 0;
        // A burst at t=0: the capacity passes, then one more every unit.
        while wait(r, tat, 0.0, 1.0) == 0.0 {
            tat = take(r, tat, 0.0, 1.0);
            admitted += 1;
        }
        assert_eq!(admitted, 8);
        let w = wait(r, tat, 0.0, 1.0);
        assert!((w - r.unit_secs).abs() < 1e-9);
        // Over 10 s at saturation: 8 + 98 admitted.
        let mut now = 0.0;
        while now < 10.0 {
            let w = wait(r, tat, now, 1.0);
            if w == 0.0 {
                tat = take(r, tat, now, 1.0);
                admitted += 1;
            } else {
                now += w.max(1e-6);
            }
        }
        assert!((105..=107).contains(&admitted), "{admitted}");
    }

    #[test]
    fn large_costs_pass_from_a_full_bucket() {
        let r = Rate::per_minute(6000); // 98 tokens/s, 80 at once
        assert_eq!(wait(r, 0.0, 5.0, 500.0), 0.0);
        let tat = take(r, 0.0, 5.0, 500.0);
        // Then nothing until the bucket is full again.
        let w = wait(r, tat, 5.0, 500.0);
        assert!((w - 500.0 * r.unit_secs).abs() < 1e-9);
        assert!(level(r, tat, 5.0) == 0.0);
    }
}
