//! `rateLimit`: a token bucket per source (client IP by default), refilled at
//! `average / period` tokens per second and holding at most `burst` tokens.
//!
//! As in Traefik (golang.org/x/time/rate reservations), a request that would have to wait less
//! than half a token's interval (at most 500 ms) is delayed rather than refused; beyond that it
//! gets 429 with `Retry-After` (whole seconds) and `X-Retry-In`. As in Traefik, which builds one
//! limiter per router, each router using the middleware has its own buckets. Buckets live in the
//! [`MiddlewareState`](super::MiddlewareState), so a reload keeps every client's budget. A bucket
//! idle long enough to have refilled completely is the same as a new one, so such buckets are the
//! first to go when a shard is full; the map never holds more than [`MAX_SOURCES`] sources.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue, StatusCode};

use super::ip::Source;
use super::shards::{Shards, make_room};
use super::{Next, reply, status_text};
use crate::body::{Request, Response};
use crate::config::dynamic;
use crate::context::RequestCtx;

/// Sources tracked per rate limiter (Traefik's `maxSources`).
pub(crate) const MAX_SOURCES: usize = 65536;

static X_RETRY_IN: HeaderName = HeaderName::from_static("x-retry-in");

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// Nanoseconds since the store's epoch when `tokens` was computed.
    at: u64,
}

/// The buckets of one rate limiter, shared by every snapshot that has it.
#[derive(Debug)]
pub(crate) struct Store {
    buckets: Shards<Bucket>,
    epoch: Instant,
}

impl Store {
    pub(crate) fn new() -> Self {
        Store {
            buckets: Shards::new(MAX_SOURCES),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// What the limiter decided for one request.
#[derive(Debug, PartialEq)]
enum Decision {
    Go,
    /// Go after this delay (the token is already taken).
    Wait(Duration),
    /// Refused: a token would only be there after this long.
    Refuse(Duration),
}

#[derive(Debug)]
pub(crate) struct RateLimit {
    store: Arc<Store>,
    /// Tokens per second; `None` when `average` is 0 (no limit).
    rate: Option<f64>,
    burst: f64,
    max_delay: Duration,
    /// A bucket idle this long is full again.
    idle_nanos: u64,
    source: Source,
}

impl RateLimit {
    pub(crate) fn compile(cfg: &dynamic::RateLimit, store: Arc<Store>) -> Result<Self, String> {
        if cfg.redis.is_some() {
            return Err("rateLimit.redis is not supported".into());
        }
        let period = cfg.period.map_or(Duration::ZERO, |p| p.0);
        let period = if period.is_zero() {
            Duration::from_secs(1)
        } else {
            period
        };
        let burst = cfg.burst.unwrap_or(1).max(1) as f64;
        let source = Source::compile(cfg.source_criterion.as_ref(), false, "rateLimit")?;
        let rate = (cfg.average > 0).then(|| cfg.average as f64 / period.as_secs_f64());
        let max_delay = match rate {
            None => Duration::ZERO,
            Some(r) if r < 1.0 => Duration::from_millis(500),
            // Traefik truncates the rate to whole tokens per second here.
            Some(r) => Duration::from_secs_f64(0.5 / r.floor()),
        };
        let idle = rate.map_or(Duration::from_secs(1), |r| {
            Duration::from_secs_f64((burst / r).min(86_400.0)) + Duration::from_secs(1)
        });
        Ok(RateLimit {
            store,
            rate,
            burst,
            max_delay,
            idle_nanos: idle.as_nanos() as u64,
            source,
        })
    }

    fn decide(&self, key: super::shards::SourceKey, rate: f64, now: u64) -> Decision {
        let (mut map, cap) = self.store.buckets.shard(&key);
        if map.len() >= cap && !map.contains_key(&key) {
            let idle = self.idle_nanos;
            make_room(&mut map, cap, |b| now.saturating_sub(b.at) >= idle);
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_sub(b.at) as f64 / 1e9;
        let tokens = (b.tokens + elapsed * rate).min(self.burst) - 1.0;
        b.at = now;
        if tokens >= 0.0 {
            b.tokens = tokens;
            return Decision::Go;
        }
        let wait = Duration::from_secs_f64(-tokens / rate);
        if wait <= self.max_delay {
            b.tokens = tokens;
            Decision::Wait(wait)
        } else {
            // Cancelled reservation: the token is not taken.
            b.tokens = tokens + 1.0;
            Decision::Refuse(wait)
        }
    }

    pub(crate) async fn handle(
        &self,
        req: Request,
        ctx: &mut RequestCtx,
        next: Next<'_>,
    ) -> Response {
        let Some(rate) = self.rate else {
            return next.run(req, ctx).await;
        };
        let key = self.source.key(&req, ctx, &self.store.buckets);
        match self.decide(key, rate, self.store.now()) {
            Decision::Go => {}
            Decision::Wait(d) => tokio::time::sleep(d).await,
            Decision::Refuse(d) => return too_many(d),
        }
        next.run(req, ctx).await
    }
}

fn too_many(delay: Duration) -> Response {
    let mut resp = reply(
        StatusCode::TOO_MANY_REQUESTS,
        status_text(StatusCode::TOO_MANY_REQUESTS),
    );
    let h = resp.headers_mut();
    h.insert(
        http::header::RETRY_AFTER,
        HeaderValue::from(delay.as_secs_f64().ceil() as u64),
    );
    if let Ok(v) = HeaderValue::from_str(&go_duration(delay)) {
        h.insert(&X_RETRY_IN, v);
    }
    resp
}

/// A duration the way Go prints one (`1.5s`, `250ms`, `2m3.25s`).
pub(crate) fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let frac = |v: u128, unit: u128, suffix: &str| {
        let whole = v / unit;
        let rest = v % unit;
        if rest == 0 {
            return format!("{whole}{suffix}");
        }
        let digits = unit.ilog10() as usize;
        let s = format!("{whole}.{rest:0digits$}");
        format!("{}{suffix}", s.trim_end_matches('0'))
    };
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return frac(ns, 1_000, "µs");
    }
    if ns < 1_000_000_000 {
        return frac(ns, 1_000_000, "ms");
    }
    let secs = ns / 1_000_000_000;
    let sub = ns % 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&frac(s * 1_000_000_000 + sub, 1_000_000_000, "s"));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::MiddlewareState;
    use super::super::shards::SourceKey;
    use super::super::testutil::{ctx_from, echo_service, mw_with_state, request, run, try_mw};
    use super::super::{Kind, Middleware};
    use super::*;

    fn limiter(m: &Middleware) -> &RateLimit {
        match &m.kind {
            Kind::RateLimit(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn token_bucket_burst_then_refill() {
        let st = MiddlewareState::default();
        let m = try_mw("rateLimit: {average: 10, burst: 3}", &st).unwrap();
        let rl = limiter(&m);
        let k = SourceKey::ip("1.2.3.4".parse().unwrap());
        let rate = rl.rate.unwrap();
        let t0 = 1_000_000_000;
        for _ in 0..3 {
            assert_eq!(rl.decide(k, rate, t0), Decision::Go);
        }
        // 10/s: the next token is 100 ms away, more than the 50 ms Traefik is willing to wait.
        let Decision::Refuse(d) = rl.decide(k, rate, t0) else {
            panic!("expected a refusal")
        };
        assert!((d.as_secs_f64() - 0.1).abs() < 1e-6, "{d:?}");
        // 60 ms later the token is 40 ms away: delayed, not refused.
        let Decision::Wait(d) = rl.decide(k, rate, t0 + 60_000_000) else {
            panic!("expected a delay")
        };
        assert!((d.as_secs_f64() - 0.04).abs() < 1e-6, "{d:?}");
        // Another source has its own bucket.
        let other = SourceKey::ip("5.6.7.8".parse().unwrap());
        assert_eq!(rl.decide(other, rate, t0), Decision::Go);
        // After a full refill the burst is back.
        for _ in 0..3 {
            assert_eq!(rl.decide(k, rate, t0 + 2_000_000_000), Decision::Go);
        }
    }

    #[test]
    fn period_divides_average() {
        let st = MiddlewareState::default();
        let m = try_mw("rateLimit: {average: 6, period: 1m}", &st).unwrap();
        let rl = limiter(&m);
        assert!((rl.rate.unwrap() - 0.1).abs() < 1e-9);
        assert_eq!(rl.max_delay, Duration::from_millis(500));
        assert_eq!(rl.burst, 1.0);
    }

    #[test]
    fn buckets_are_bounded() {
        let st = MiddlewareState::default();
        let m = try_mw("rateLimit: {average: 1, burst: 1000}", &st).unwrap();
        let rl = limiter(&m);
        for i in 0..(MAX_SOURCES as u32 * 2) {
            rl.decide(SourceKey::text(u64::from(i)), 1.0, 1);
        }
        assert!(rl.store.buckets.len() <= MAX_SOURCES);
    }

    #[tokio::test]
    async fn buckets_survive_a_recompile_and_refusals_say_when_to_retry() {
        let st = MiddlewareState::default();
        let y = "rateLimit: {average: 1, period: 10s, burst: 1}";
        let svc = echo_service();
        let m1 = mw_with_state(y, &st);
        let (r, _) = run(
            std::slice::from_ref(&m1),
            &svc,
            request("GET", "/"),
            ctx_from("9.9.9.9:1"),
        )
        .await;
        assert_eq!(r.status(), 200);
        let m2 = mw_with_state(y, &st);
        let (r, _) = run(&[m2], &svc, request("GET", "/"), ctx_from("9.9.9.9:2")).await;
        assert_eq!(r.status(), 429);
        let after: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((9..=10).contains(&after), "{after}");
        assert!(r.headers().contains_key("x-retry-in"));
        // A middleware with another name has its own buckets.
        let other = MiddlewareState::default();
        let (r, _) = run(
            &[mw_with_state(y, &other)],
            &svc,
            request("GET", "/"),
            ctx_from("9.9.9.9:3"),
        )
        .await;
        assert_eq!(r.status(), 200);
        drop(m1);
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_secs(123)), "2m3s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_nanos(5)), "5ns");
    }
}
