//! A token bucket ("600 requests per minute") as GCRA: a single number per budget, the theoretical
//! arrival time `tat`, refilled continuously. It limits the gateway's own callers — a listener's
//! `client_ratelimit` and a virtual key's rpm / tpm ([`crate::auth`]) — in process.
//!
//! An upstream's rpm / tpm is not admitted with a bucket: whatever its capacity, a window can
//! start with a full bucket and then see its refill too, which an upstream that enforces its
//! per-minute limit per second answers with 429. Those budgets are windows ([`super::window`]).
//!
//! [`Rate::per_minute`] (a key's limit) holds at most [`BURST_HEADROOM`] of one second's budget and
//! refills at [`RATE_HEADROOM`] of the rate.

/// Fraction of a key's rate the gateway admits.
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
