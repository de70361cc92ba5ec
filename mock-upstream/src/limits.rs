//! Rate limits as OpenAI enforces them: `--rpm` / `--tpm` (changeable with `POST
//! /__mock/limits`), the 429 a refused request gets, and the `x-ratelimit-*` headers.
//!
//! # Rate limits (`--rpm`, `--tpm`, `POST /__mock/limits`)
//!
//! Two token buckets per mock, shared by `POST` to the chat, completions,
//! embeddings and responses endpoints (with or without `/v1`, and Azure's paths to them) and
//! Anthropic's Messages endpoint. Each refills
//! continuously at `limit / 60` per second up to a capacity of `limit / 60`
//! (one second's worth; the request bucket holds at least 1). A request costs
//! 1 request and its token estimate (see `tokens`: prompt tokens by the body's `model` plus its
//! max output, or `--default-max-tokens`; an unparsable body costs 0 tokens). It is admitted
//! when each limited bucket holds at least its cost or is completely full (a
//! full bucket may go negative, so a request larger than one second's budget
//! passes only from a full bucket). The check happens when the request has
//! been read, before any latency, fail status or `x-mock-status`; a rejected
//! request consumes nothing and is answered at once (no latency) with 429
//! `{"error":{"message":"Rate limit reached for requests|tokens per min ...",
//! "type":"requests"|"tokens","param":null,"code":"rate_limit_exceeded"}}`
//! plus `retry-after` (whole seconds, rounded up, at least 1) and
//! `retry-after-ms` (rounded up, at least 1): the time until both buckets
//! would admit it. When both buckets refuse, `type` names the one with the
//! longer wait. (Anthropic's endpoint answers in its own shape, see `anthropic`.)
//!
//! While a limit is set, every non-`/__mock` response carries, per limited
//! bucket (an unlimited bucket sends none), `x-ratelimit-limit-requests` (the
//! per-minute limit), `x-ratelimit-remaining-requests` (whole requests in the
//! bucket now, i.e. what could be sent right away; 0 when negative) and
//! `x-ratelimit-reset-requests` (time until the bucket is full again, in
//! OpenAI's format: `250ms`, `1s`, `1.5s`, `6m0s`), and the same three
//! `-tokens` headers. The values are taken at the admission check (after this
//! request's charge). With no limit set the mock computes no estimate and takes
//! no lock.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use serde::Serialize;

use crate::body::{error_response, hdr_string, MockBody};
use crate::server::State;
use crate::tokens::{self, Api};
use crate::LimitMode;

/// `GET /__mock/admissions` keeps the last this many.
const MAX_ADMISSIONS: usize = 100_000;

const NS_PER_SEC: i128 = 1_000_000_000;
/// Fixed-point units per request / token: refilling `limit` per minute is then
/// exactly `limit` units per nanosecond, so the arithmetic is exact.
const UNIT: i128 = 60 * NS_PER_SEC;

/// A token bucket refilling continuously at `limit / 60` per second up to
/// `limit / 60` (at least `min_capacity`). Time is passed in (`now` = time
/// since an arbitrary origin), so the logic is deterministic.
#[derive(Debug, Clone)]
struct Bucket {
    /// Per minute; 0 = unlimited.
    limit: u64,
    capacity: i128,
    /// May go negative (a request larger than the capacity, from a full bucket).
    level: i128,
    last: Duration,
}

impl Bucket {
    fn new(limit: u64, min_capacity: u64, now: Duration) -> Self {
        let capacity = (i128::from(limit) * NS_PER_SEC).max(i128::from(min_capacity) * UNIT);
        Bucket {
            limit,
            capacity,
            level: capacity,
            last: now,
        }
    }

    fn unlimited(&self) -> bool {
        self.limit == 0
    }

    fn refill(&mut self, now: Duration) {
        if now > self.last {
            let dt = i128::try_from((now - self.last).as_nanos()).unwrap_or(i128::MAX);
            self.level = self
                .level
                .saturating_add(dt.saturating_mul(i128::from(self.limit)))
                .min(self.capacity);
            self.last = now;
        }
    }

    fn is_full(&self) -> bool {
        self.level >= self.capacity
    }

    fn cost(n: u64) -> i128 {
        i128::from(n) * UNIT
    }

    /// Whether a request costing `n` may pass now.
    fn admits(&self, n: u64) -> bool {
        self.unlimited() || self.is_full() || self.level >= Self::cost(n)
    }

    fn take(&mut self, n: u64) {
        if !self.unlimited() {
            self.level -= Self::cost(n);
        }
    }

    /// Time until a request costing `n` would pass (zero if it passes now).
    fn wait(&self, n: u64) -> Duration {
        if self.admits(n) {
            return Duration::ZERO;
        }
        let target = Self::cost(n).min(self.capacity);
        ns_duration(ceil_div(target - self.level, i128::from(self.limit)))
    }

    /// Whole units in the bucket now (0 when empty or negative).
    fn remaining(&self) -> u64 {
        u64::try_from(self.level.max(0) / UNIT).unwrap_or(u64::MAX)
    }

    /// Time until the bucket is full again.
    fn reset_in(&self) -> Duration {
        if self.unlimited() || self.is_full() {
            return Duration::ZERO;
        }
        ns_duration(ceil_div(self.capacity - self.level, i128::from(self.limit)))
    }

    fn header(&self) -> Option<RateHeader> {
        (!self.unlimited()).then(|| RateHeader {
            limit: self.limit,
            remaining: self.remaining(),
            reset: self.reset_in(),
        })
    }
}

/// The sliding window of `--limit-mode sliding`: the admissions of the last second, each with
/// its cost; a request may start if the window then holds at most `limit / 60` (or it is empty).
#[derive(Debug)]
struct Window {
    /// Per minute; 0 = unlimited.
    limit: u64,
    /// Whole units reported as available in an empty window, at least (1 for requests).
    min_capacity: u64,
    /// `(admission time, cost)` of the admissions less than [`WINDOW`] old, oldest first.
    log: VecDeque<(Duration, u64)>,
    /// The costs in `log`, summed.
    sum: u64,
    /// The latest time seen.
    now: Duration,
}

/// The sliding window's length.
const WINDOW: Duration = Duration::from_secs(1);

impl Window {
    fn new(limit: u64, min_capacity: u64, now: Duration) -> Self {
        Window {
            limit,
            min_capacity,
            log: VecDeque::new(),
            sum: 0,
            now,
        }
    }

    fn unlimited(&self) -> bool {
        self.limit == 0
    }

    /// Forget the admissions that have left the window by `now`.
    fn advance(&mut self, now: Duration) {
        if now > self.now {
            self.now = now;
        }
        while let Some(&(t, c)) = self.log.front() {
            if t + WINDOW > self.now {
                break;
            }
            self.log.pop_front();
            self.sum -= c;
        }
    }

    /// Whether `sum` units in one second stay within `limit` per minute.
    fn fits(&self, sum: u64) -> bool {
        u128::from(sum) * 60 <= u128::from(self.limit)
    }

    fn admits(&self, n: u64) -> bool {
        self.unlimited() || self.sum == 0 || self.fits(self.sum.saturating_add(n))
    }

    fn take(&mut self, n: u64) {
        if !self.unlimited() && n > 0 {
            self.log.push_back((self.now, n));
            self.sum += n;
        }
    }

    /// Time until a request costing `n` would pass: until enough of the oldest admissions have
    /// left the window.
    fn wait(&self, n: u64) -> Duration {
        if self.admits(n) {
            return Duration::ZERO;
        }
        let mut left = self.sum;
        for &(t, c) in &self.log {
            left -= c;
            if left == 0 || self.fits(left.saturating_add(n)) {
                return (t + WINDOW).saturating_sub(self.now);
            }
        }
        Duration::ZERO
    }

    /// Whole units the window has left.
    fn remaining(&self) -> u64 {
        (self.limit / 60)
            .max(self.min_capacity)
            .saturating_sub(self.sum)
    }

    /// Time until the window is empty.
    fn reset_in(&self) -> Duration {
        match self.log.back() {
            Some(&(t, _)) if !self.unlimited() => (t + WINDOW).saturating_sub(self.now),
            _ => Duration::ZERO,
        }
    }
}

/// One limit (requests or tokens), enforced as a token bucket or a sliding window.
#[derive(Debug)]
enum Meter {
    Bucket(Bucket),
    Window(Window),
}

impl Meter {
    fn new(mode: LimitMode, limit: u64, min_capacity: u64, now: Duration) -> Self {
        match mode {
            LimitMode::Bucket => Meter::Bucket(Bucket::new(limit, min_capacity, now)),
            LimitMode::Sliding => Meter::Window(Window::new(limit, min_capacity, now)),
        }
    }

    fn limit(&self) -> u64 {
        match self {
            Meter::Bucket(b) => b.limit,
            Meter::Window(w) => w.limit,
        }
    }

    fn unlimited(&self) -> bool {
        self.limit() == 0
    }

    fn advance(&mut self, now: Duration) {
        match self {
            Meter::Bucket(b) => b.refill(now),
            Meter::Window(w) => w.advance(now),
        }
    }

    fn admits(&self, n: u64) -> bool {
        match self {
            Meter::Bucket(b) => b.admits(n),
            Meter::Window(w) => w.admits(n),
        }
    }

    fn take(&mut self, n: u64) {
        match self {
            Meter::Bucket(b) => b.take(n),
            Meter::Window(w) => w.take(n),
        }
    }

    fn wait(&self, n: u64) -> Duration {
        match self {
            Meter::Bucket(b) => b.wait(n),
            Meter::Window(w) => w.wait(n),
        }
    }

    fn remaining(&self) -> u64 {
        match self {
            Meter::Bucket(b) => b.remaining(),
            Meter::Window(w) => w.remaining(),
        }
    }

    fn header(&self) -> Option<RateHeader> {
        match self {
            Meter::Bucket(b) => b.header(),
            Meter::Window(w) => (!w.unlimited()).then(|| RateHeader {
                limit: w.limit,
                remaining: w.remaining(),
                reset: w.reset_in(),
            }),
        }
    }
}

fn ceil_div(a: i128, b: i128) -> i128 {
    if b <= 0 {
        return 0;
    }
    (a + b - 1).div_euclid(b)
}

fn ns_duration(ns: i128) -> Duration {
    Duration::from_nanos(u64::try_from(ns.max(0)).unwrap_or(u64::MAX))
}

/// One `x-ratelimit-*-{requests,tokens}` triple.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RateHeader {
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    pub(crate) reset: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct RateHeaders {
    pub(crate) requests: Option<RateHeader>,
    pub(crate) tokens: Option<RateHeader>,
}

impl RateHeaders {
    pub(crate) fn apply(&self, h: &mut HeaderMap) {
        for (kind, rh) in [("requests", &self.requests), ("tokens", &self.tokens)] {
            if let Some(rh) = rh {
                let name = |what: &str| format!("x-ratelimit-{what}-{kind}");
                if let Ok(n) = HeaderName::try_from(name("limit")) {
                    h.insert(n, HeaderValue::from(rh.limit));
                }
                if let Ok(n) = HeaderName::try_from(name("remaining")) {
                    h.insert(n, HeaderValue::from(rh.remaining));
                }
                if let (Ok(n), Ok(v)) = (
                    HeaderName::try_from(name("reset")),
                    HeaderValue::from_str(&openai_duration(rh.reset)),
                ) {
                    h.insert(n, v);
                }
            }
        }
    }
}

/// A duration as OpenAI writes it in `x-ratelimit-reset-*` (Go style, ms
/// resolution, rounded up): `0s`, `250ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`.
fn openai_duration(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut secs = s.to_string();
    if frac > 0 {
        let f = format!("{frac:03}");
        secs.push('.');
        secs.push_str(f.trim_end_matches('0'));
    }
    if h > 0 {
        format!("{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{m}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LimitKind {
    Requests,
    Tokens,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Rejection {
    kind: LimitKind,
    /// Time until both buckets would admit the request.
    wait: Duration,
    /// The refusing bucket's per-minute limit, level and the cost asked.
    limit: u64,
    remaining: u64,
    requested: u64,
}

/// An admitted request, for `GET /__mock/admissions`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub(crate) struct Admission {
    t_ms: u64,
    priority: Option<String>,
    seq: Option<String>,
    tokens: u64,
}

/// The two limits and the log of admitted requests.
#[derive(Debug)]
pub(crate) struct Limiter {
    mode: LimitMode,
    requests: Meter,
    tokens: Meter,
    admissions: VecDeque<Admission>,
}

impl Limiter {
    pub(crate) fn new(mode: LimitMode, rpm: u64, tpm: u64, now: Duration) -> Self {
        Limiter {
            mode,
            requests: Meter::new(mode, rpm, 1, now),
            tokens: Meter::new(mode, tpm, 0, now),
            admissions: VecDeque::new(),
        }
    }

    fn enabled(&self) -> bool {
        !self.requests.unlimited() || !self.tokens.unlimited()
    }

    /// Replace the limits (and the mode), with both buckets full / both windows empty.
    fn set(&mut self, mode: LimitMode, rpm: u64, tpm: u64, now: Duration) {
        self.mode = mode;
        self.requests = Meter::new(mode, rpm, 1, now);
        self.tokens = Meter::new(mode, tpm, 0, now);
    }

    fn refill(&mut self, now: Duration) {
        self.requests.advance(now);
        self.tokens.advance(now);
    }

    /// Charge one request costing `tokens` at `now`, or say why not (then
    /// nothing is charged).
    fn check(&mut self, tokens: u64, now: Duration) -> Result<(), Rejection> {
        self.refill(now);
        let r_ok = self.requests.admits(1);
        let t_ok = self.tokens.admits(tokens);
        if r_ok && t_ok {
            self.requests.take(1);
            self.tokens.take(tokens);
            return Ok(());
        }
        let (rw, tw) = (self.requests.wait(1), self.tokens.wait(tokens));
        let (kind, meter, requested) = if !r_ok && (t_ok || rw >= tw) {
            (LimitKind::Requests, &self.requests, 1)
        } else {
            (LimitKind::Tokens, &self.tokens, tokens)
        };
        Err(Rejection {
            kind,
            wait: rw.max(tw),
            limit: meter.limit(),
            remaining: meter.remaining(),
            requested,
        })
    }

    pub(crate) fn headers(&self) -> RateHeaders {
        RateHeaders {
            requests: self.requests.header(),
            tokens: self.tokens.header(),
        }
    }

    /// The admitted requests, oldest first.
    pub(crate) fn admissions(&self) -> &VecDeque<Admission> {
        &self.admissions
    }

    pub(crate) fn clear_admissions(&mut self) {
        self.admissions.clear();
    }

    fn record(&mut self, a: Admission) {
        if self.admissions.len() >= MAX_ADMISSIONS {
            self.admissions.pop_front();
        }
        self.admissions.push_back(a);
    }
}

/// The 429 answer for a rejected request.
fn rate_limited_response(state: &State, r: &Rejection, rh: &RateHeaders) -> Response<MockBody> {
    let (what, unit) = match r.kind {
        LimitKind::Requests => ("requests", "RPM"),
        LimitKind::Tokens => ("tokens", "TPM"),
    };
    let message = format!(
        "Rate limit reached for {what} per min ({unit}): Limit {}, Remaining {}, Requested {}. Please try again in {}.",
        r.limit,
        r.remaining,
        r.requested,
        openai_duration(r.wait)
    );
    let mut resp = error_response(
        state,
        StatusCode::TOO_MANY_REQUESTS,
        &message,
        what,
        "rate_limit_exceeded",
    );
    let ms = r.wait.as_nanos().div_ceil(1_000_000).max(1);
    let secs = ms.div_ceil(1000).max(1);
    let h = resp.headers_mut();
    h.insert(
        "retry-after",
        HeaderValue::from(u64::try_from(secs).unwrap_or(u64::MAX)),
    );
    h.insert(
        "retry-after-ms",
        HeaderValue::from(u64::try_from(ms).unwrap_or(u64::MAX)),
    );
    rh.apply(h);
    resp
}

/// Apply the rate limits to a request that has just been read; `api` is `None` for a request the
/// limits do not apply to (it only reports the buckets). `Ok(None)`: no limit set (no lock taken,
/// nothing estimated); `Ok(Some(headers))`: go on, sending these headers; `Err(resp)`: answer 429
/// now.
pub(crate) fn rate_limit(
    state: &State,
    headers: &HeaderMap,
    api: Option<Api>,
    body: &[u8],
) -> Result<Option<RateHeaders>, Box<Response<MockBody>>> {
    if !state.limits_on.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let Some(api) = api else {
        let Ok(mut l) = state.limiter.lock() else {
            return Ok(None);
        };
        l.refill(state.start.elapsed());
        return Ok(Some(l.headers()));
    };
    let tokens = tokens::estimate(api, body, state.default_max_tokens);
    let Ok(mut l) = state.limiter.lock() else {
        return Ok(None);
    };
    let now = state.start.elapsed();
    match l.check(tokens, now) {
        Ok(()) => {
            let rh = l.headers();
            if l.enabled() {
                l.record(Admission {
                    t_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
                    priority: hdr_string(headers, "x-llmproxy-priority"),
                    seq: hdr_string(headers, "x-test-seq"),
                    tokens,
                });
                drop(l);
                state.admitted.fetch_add(1, Ordering::Relaxed);
                state.admitted_tokens.fetch_add(tokens, Ordering::Relaxed);
            }
            Ok(Some(rh))
        }
        Err(r) => {
            let rh = l.headers();
            drop(l);
            state.rate_limited.fetch_add(1, Ordering::Relaxed);
            Err(Box::new(rate_limited_response(state, &r, &rh)))
        }
    }
}

/// `POST /__mock/limits`: set the limits and the mode (`None` keeps one) with both buckets full
/// (windows empty); returns the limits and mode now in force, or `None` if the limiter is unusable
/// (a panic while it was locked).
pub(crate) fn set_limits(
    state: &State,
    rpm: Option<u64>,
    tpm: Option<u64>,
    mode: Option<LimitMode>,
) -> Option<(u64, u64, LimitMode)> {
    if rpm.is_some_and(|n| n > 0)
        || tpm.is_some_and(|n| n > 0)
        || state.limits_on.load(Ordering::Relaxed)
    {
        tokens::warm_up();
    }
    let Ok(mut l) = state.limiter.lock() else {
        return None;
    };
    let rpm = rpm.unwrap_or(l.requests.limit());
    let tpm = tpm.unwrap_or(l.tokens.limit());
    let mode = mode.unwrap_or(l.mode);
    l.set(mode, rpm, tpm, state.start.elapsed());
    state.limits_on.store(l.enabled(), Ordering::Relaxed);
    Some((rpm, tpm, mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_capacity_is_one_second_worth() {
        let b = Bucket::new(60_000, 1, ms(0));
        assert_eq!(b.remaining(), 1000);
        assert!(b.is_full());
        // rpm below 60: the request bucket still holds one request.
        let b = Bucket::new(6, 1, ms(0));
        assert_eq!(b.remaining(), 1);
        // tpm below 60: capacity is a fraction of a token.
        let b = Bucket::new(30, 0, ms(0));
        assert_eq!(b.remaining(), 0);
        assert!(b.is_full());
    }

    #[test]
    fn bucket_drains_and_refills_continuously() {
        let mut b = Bucket::new(60_000, 1, ms(0)); // 1000/s, capacity 1000
        for _ in 0..1000 {
            assert!(b.admits(1));
            b.take(1);
        }
        assert_eq!(b.remaining(), 0);
        assert!(!b.admits(1));
        assert_eq!(b.wait(1), ms(1));
        assert_eq!(b.reset_in(), ms(1000));
        b.refill(ms(1));
        assert_eq!(b.remaining(), 1);
        assert!(b.admits(1));
        b.refill(ms(250));
        assert_eq!(b.remaining(), 250);
        assert_eq!(b.reset_in(), ms(750));
        // Never above capacity.
        b.refill(ms(10_000));
        assert_eq!(b.remaining(), 1000);
        assert!(b.is_full());
        assert_eq!(b.reset_in(), Duration::ZERO);
        // Time going backwards changes nothing.
        b.take(500);
        b.refill(ms(5_000));
        assert_eq!(b.remaining(), 500);
    }

    #[test]
    fn bucket_fractional_refill_is_exact() {
        // 6 rpm: 0.1 request per second, capacity 1.
        let mut b = Bucket::new(6, 1, ms(0));
        b.take(1);
        assert!(!b.admits(1));
        assert_eq!(b.wait(1), ms(10_000));
        b.refill(ms(9_999));
        assert!(!b.admits(1));
        b.refill(ms(10_000));
        assert!(b.admits(1));
        assert!(b.is_full());
    }

    #[test]
    fn oversized_request_passes_only_from_full_bucket() {
        // 6000 tpm: 100 tokens/s, capacity 100.
        let mut b = Bucket::new(6_000, 0, ms(0));
        assert!(b.admits(250));
        b.take(250);
        assert_eq!(b.remaining(), 0);
        assert!(!b.admits(1));
        // From -150 back to 1 token takes 1.51 s; to full 2.5 s.
        assert_eq!(b.wait(1), ms(1_510));
        assert_eq!(b.wait(250), ms(2_500));
        assert_eq!(b.reset_in(), ms(2_500));
        b.refill(ms(2_499));
        assert!(b.admits(50));
        assert!(!b.admits(250));
        b.refill(ms(2_500));
        assert!(b.admits(250));
    }

    #[test]
    fn unlimited_bucket_admits_everything() {
        let mut b = Bucket::new(0, 1, ms(0));
        assert!(b.unlimited());
        b.take(u64::MAX);
        assert!(b.admits(u64::MAX));
        assert_eq!(b.wait(1), Duration::ZERO);
        assert_eq!(b.header(), None);
    }

    #[test]
    fn limiter_rejection_consumes_nothing() {
        // 120 rpm (2/s, capacity 2), 600 tpm (10/s, capacity 10).
        let mut l = Limiter::new(LimitMode::Bucket, 120, 600, ms(0));
        assert!(l.enabled());
        assert_eq!(l.check(4, ms(0)), Ok(()));
        // Tokens: 6 left; a 7-token request is refused on tokens.
        let r = l.check(7, ms(0)).unwrap_err();
        assert_eq!(r.kind, LimitKind::Tokens);
        assert_eq!(r.wait, ms(100));
        assert_eq!((r.limit, r.remaining, r.requested), (600, 6, 7));
        let h = l.headers();
        assert_eq!(
            h.requests,
            Some(RateHeader {
                limit: 120,
                remaining: 1,
                reset: ms(500)
            })
        );
        assert_eq!(
            h.tokens,
            Some(RateHeader {
                limit: 600,
                remaining: 6,
                reset: ms(400)
            })
        );
        assert_eq!(l.check(6, ms(0)), Ok(()));
        // Requests now empty: refused on requests (wait 500 ms > tokens' 100 ms).
        let r = l.check(1, ms(0)).unwrap_err();
        assert_eq!(r.kind, LimitKind::Requests);
        assert_eq!(r.wait, ms(500));
        assert_eq!(l.check(1, ms(500)), Ok(()));
    }

    #[test]
    fn limiter_both_refusing_reports_longer_wait() {
        let mut l = Limiter::new(LimitMode::Bucket, 60, 60, ms(0)); // 1 req/s, 1 token/s
        assert_eq!(l.check(1, ms(0)), Ok(()));
        // Requests wait 1 s, tokens (needs 1 from 0) 1 s, ties go to requests.
        assert_eq!(l.check(1, ms(0)).unwrap_err().kind, LimitKind::Requests);
        let mut l = Limiter::new(LimitMode::Bucket, 60, 60, ms(0));
        assert_eq!(l.check(5, ms(0)), Ok(())); // full token bucket: goes to -4
        let r = l.check(1, ms(0)).unwrap_err();
        assert_eq!(r.kind, LimitKind::Tokens);
        assert_eq!(r.wait, ms(5_000));
    }

    #[test]
    fn limiter_single_limit() {
        let mut l = Limiter::new(LimitMode::Bucket, 0, 6_000, ms(0));
        assert_eq!(l.headers().requests, None);
        for _ in 0..10 {
            assert_eq!(l.check(10, ms(0)), Ok(()));
        }
        assert!(l.check(10, ms(0)).is_err());
        l.set(LimitMode::Bucket, 0, 0, ms(0));
        assert!(!l.enabled());
        assert_eq!(l.check(1_000_000, ms(0)), Ok(()));
        l.set(LimitMode::Bucket, 60, 0, ms(0));
        assert_eq!(l.check(1_000_000, ms(0)), Ok(()));
        assert_eq!(l.check(0, ms(999)).unwrap_err().kind, LimitKind::Requests);
        assert_eq!(l.check(0, ms(1_000)), Ok(()));
    }

    #[test]
    fn admissions_are_bounded() {
        let mut l = Limiter::new(LimitMode::Bucket, 1, 0, ms(0));
        for i in 0..(MAX_ADMISSIONS as u64 + 5) {
            l.record(Admission {
                t_ms: i,
                priority: None,
                seq: None,
                tokens: 0,
            });
        }
        assert_eq!(l.admissions.len(), MAX_ADMISSIONS);
        assert_eq!(l.admissions.front().map(|a| a.t_ms), Some(5));
    }

    #[test]
    fn reset_durations_in_openai_format() {
        assert_eq!(openai_duration(Duration::ZERO), "0s");
        assert_eq!(openai_duration(Duration::from_micros(1)), "1ms");
        assert_eq!(openai_duration(ms(250)), "250ms");
        assert_eq!(openai_duration(ms(1_000)), "1s");
        assert_eq!(openai_duration(ms(1_500)), "1.5s");
        assert_eq!(openai_duration(ms(17_565)), "17.565s");
        assert_eq!(openai_duration(ms(360_000)), "6m0s");
        assert_eq!(openai_duration(ms(90_250)), "1m30.25s");
        assert_eq!(openai_duration(ms(3_723_000)), "1h2m3s");
    }

    #[test]
    fn headers_are_written() {
        let mut h = HeaderMap::new();
        Limiter::new(LimitMode::Bucket, 0, 600, ms(0))
            .headers()
            .apply(&mut h);
        assert_eq!(h.get("x-ratelimit-limit-tokens").unwrap(), "600");
        assert_eq!(h.get("x-ratelimit-remaining-tokens").unwrap(), "10");
        assert_eq!(h.get("x-ratelimit-reset-tokens").unwrap(), "0s");
        assert!(h.get("x-ratelimit-limit-requests").is_none());
    }
    #[test]
    fn sliding_window_caps_any_second() {
        // 300 rpm: at most 5 requests in any 1-second window.
        let mut l = Limiter::new(LimitMode::Sliding, 300, 0, ms(0));
        for i in 0..5 {
            assert_eq!(l.check(0, ms(i * 10)), Ok(()));
        }
        let r = l.check(0, ms(240)).unwrap_err();
        assert_eq!(r.kind, LimitKind::Requests);
        // The oldest admission (t = 0) leaves the window at 1 s.
        assert_eq!(r.wait, ms(760));
        assert_eq!((r.limit, r.remaining, r.requested), (300, 0, 1));
        let h = l.headers().requests.unwrap();
        assert_eq!((h.limit, h.remaining, h.reset), (300, 0, ms(800)));
        assert!(l.check(0, ms(999)).is_err());
        assert_eq!(l.check(0, ms(1_000)), Ok(()));
        // Now 10, 20, 30, 40 and 1000 are in the window: the next slot is at 1010.
        assert_eq!(l.check(0, ms(1_005)).unwrap_err().wait, ms(5));
        assert_eq!(l.check(0, ms(1_010)), Ok(()));
        // The bucket mode, by contrast, refills continuously: the same burst, and a request
        // 240 ms later passes (1.2 requests refilled).
        let mut b = Limiter::new(LimitMode::Bucket, 300, 0, ms(0));
        for i in 0..5 {
            assert_eq!(b.check(0, ms(i * 10)), Ok(()));
        }
        assert_eq!(b.check(0, ms(240)), Ok(()));
    }

    #[test]
    fn sliding_window_never_exceeds_the_limit() {
        // Pseudo-random arrivals; whatever was admitted, no 1-second window holds more than
        // rpm / 60 requests or tpm / 60 tokens.
        let (rpm, tpm) = (600, 6_000);
        let mut l = Limiter::new(LimitMode::Sliding, rpm, tpm, ms(0));
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut t = 0;
        let mut admitted = Vec::new();
        for _ in 0..5_000 {
            t += next() % 40;
            let tokens = next() % 60;
            if l.check(tokens, ms(t)).is_ok() {
                admitted.push((t, tokens));
            }
        }
        assert!(admitted.len() > 100);
        for (i, &(start, _)) in admitted.iter().enumerate() {
            let inside = admitted[i..].iter().take_while(|(u, _)| *u < start + 1_000);
            let (n, sum) = inside.fold((0, 0), |(n, s), (_, c)| (n + 1, s + c));
            assert!(n * 60 <= rpm, "{n} requests in the second from {start} ms");
            assert!(
                sum * 60 <= tpm,
                "{sum} tokens in the second from {start} ms"
            );
        }
    }

    #[test]
    fn sliding_window_tokens() {
        // 600 tpm: 10 tokens in any second.
        let mut l = Limiter::new(LimitMode::Sliding, 0, 600, ms(0));
        assert_eq!(l.check(4, ms(0)), Ok(()));
        assert_eq!(l.check(6, ms(100)), Ok(()));
        let r = l.check(1, ms(200)).unwrap_err();
        assert_eq!(r.kind, LimitKind::Tokens);
        // Once the 4 tokens of t = 0 leave (at 1 s), 6 + 1 fit.
        assert_eq!(r.wait, ms(800));
        assert_eq!((r.limit, r.remaining, r.requested), (600, 0, 1));
        // A request larger than a second's tokens passes into an empty window only.
        assert_eq!(l.check(25, ms(1_000)).unwrap_err().wait, ms(100));
        assert_eq!(l.check(25, ms(1_100)), Ok(()));
        let r = l.check(1, ms(1_200)).unwrap_err();
        assert_eq!(r.wait, ms(900));
        let h = l.headers();
        assert_eq!(h.requests, None);
        assert_eq!(
            h.tokens,
            Some(RateHeader {
                limit: 600,
                remaining: 0,
                reset: ms(900)
            })
        );
        // Requests below 60 per minute: one per second, as the bucket's minimum.
        let mut l = Limiter::new(LimitMode::Sliding, 6, 0, ms(0));
        assert_eq!(l.headers().requests.map(|h| h.remaining), Some(1));
        assert_eq!(l.check(0, ms(0)), Ok(()));
        assert_eq!(l.check(0, ms(999)).unwrap_err().wait, ms(1));
        assert_eq!(l.check(0, ms(1_000)), Ok(()));
    }

    #[test]
    fn switching_modes_starts_afresh() {
        let mut l = Limiter::new(LimitMode::Bucket, 60, 0, ms(0));
        assert_eq!(l.check(0, ms(0)), Ok(()));
        assert!(l.check(0, ms(10)).is_err());
        l.set(LimitMode::Sliding, 60, 0, ms(10));
        assert_eq!(l.mode, LimitMode::Sliding);
        assert_eq!(l.check(0, ms(10)), Ok(()));
        assert_eq!(l.check(0, ms(500)).unwrap_err().wait, ms(510));
        l.set(LimitMode::Bucket, 120, 0, ms(500));
        assert_eq!(l.check(0, ms(500)), Ok(()));
        assert_eq!(l.check(0, ms(500)), Ok(()));
        assert!(l.check(0, ms(500)).is_err());
    }
}
