//! `ipAllowList`, and the client-IP strategy (`ipStrategy`) and `sourceCriterion` that the rate and
//! in-flight limiters share.
//!
//! As in Traefik, `X-Forwarded-For` is only looked at when the entrypoint trusts the client
//! (`forwardedHeaders.trustedIPs`): Traefik strips it from untrusted clients before any middleware
//! runs, so a client cannot choose its own address by sending one.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderName, StatusCode};
use ipnet::{IpNet, Ipv6Net};

use super::shards::{Shards, SourceId, SourceKey};
use super::{Next, reply, request_host, status_text};
use crate::body::{Request, Response};
use crate::config::dynamic;
use crate::context::RequestCtx;
use crate::forwarded::{self, X_FORWARDED_FOR};

/// How to find the client's IP (Traefik's `ipStrategy`).
#[derive(Debug, Clone)]
pub(crate) struct IpStrategy {
    kind: StrategyKind,
    ipv6_subnet: Option<u8>,
}

#[derive(Debug, Clone)]
enum StrategyKind {
    /// The address of the TCP peer.
    RemoteAddr,
    /// The `depth`-th address of X-Forwarded-For, counting from the right.
    Depth(usize),
    /// The rightmost address of X-Forwarded-For that is not in these networks.
    Excluded(Vec<IpNet>),
}

impl IpStrategy {
    pub(crate) fn remote_addr() -> Self {
        IpStrategy {
            kind: StrategyKind::RemoteAddr,
            ipv6_subnet: None,
        }
    }

    /// `what` names the key for errors (`ipAllowList.ipStrategy`).
    pub(crate) fn compile(cfg: Option<&dynamic::IpStrategy>, what: &str) -> Result<Self, String> {
        let Some(cfg) = cfg else {
            return Ok(Self::remote_addr());
        };
        if let Some(n) = cfg.ipv6_subnet
            && !(1..=128).contains(&n)
        {
            return Err(format!(
                "{what}.ipv6Subnet: {n} is not a prefix length between 1 and 128"
            ));
        }
        // Depth overrides excludedIPs, as in Traefik.
        let kind = if cfg.depth > 0 {
            StrategyKind::Depth(cfg.depth)
        } else if !cfg.excluded_i_ps.is_empty() {
            let nets = parse_nets(&cfg.excluded_i_ps, &format!("{what}.excludedIPs"))?;
            StrategyKind::Excluded(nets)
        } else {
            StrategyKind::RemoteAddr
        };
        // Traefik applies ipv6Subnet to the remote-address and depth strategies only.
        let ipv6_subnet = match kind {
            StrategyKind::Excluded(_) => None,
            _ => cfg.ipv6_subnet,
        };
        Ok(IpStrategy { kind, ipv6_subnet })
    }

    /// The client IP this strategy selects, or `None` when there is none (X-Forwarded-For too
    /// short, absent, untrusted, or not an address).
    pub(crate) fn client_ip(&self, req: &Request, ctx: &RequestCtx) -> Option<IpAddr> {
        let ip = match &self.kind {
            StrategyKind::RemoteAddr => forwarded::canonical(ctx.client_addr.ip()),
            StrategyKind::Depth(depth) => {
                let xff = trusted_xff(req, ctx);
                let n = xff.split(',').count();
                if n < *depth {
                    return None;
                }
                parse_ip(xff.split(',').nth(n - depth)?.trim())?
            }
            StrategyKind::Excluded(nets) => {
                let xff = trusted_xff(req, ctx);
                let pick = xff
                    .rsplit(',')
                    .map(str::trim)
                    .find(|s| !parse_ip(s).is_some_and(|ip| forwarded::contains(nets, ip)))?;
                parse_ip(pick)?
            }
        };
        Some(match (ip, self.ipv6_subnet) {
            (IpAddr::V6(v6), Some(bits)) => Ipv6Net::new(v6, bits)
                .map(|n| IpAddr::V6(n.trunc().addr()))
                .unwrap_or(ip),
            _ => ip,
        })
    }
}

/// X-Forwarded-For as Traefik's middlewares see it: the first header line, and only from a
/// client the entrypoint trusts.
fn trusted_xff<'r>(req: &'r Request, ctx: &RequestCtx) -> &'r str {
    if !ctx.entrypoint.trusted.trusts(ctx.client_addr.ip()) {
        return "";
    }
    req.headers()
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// An address as found in X-Forwarded-For: `1.2.3.4`, `::1`, or with a port (`1.2.3.4:5`,
/// `[::1]:5`). IPv4-mapped IPv6 addresses become IPv4.
pub(crate) fn parse_ip(s: &str) -> Option<IpAddr> {
    let ip = s
        .parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            s.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|r| r.parse().ok())
        })?;
    Some(forwarded::canonical(ip))
}

/// Parses addresses and CIDRs, naming the bad entry as `what[i]`.
pub(crate) fn parse_nets(list: &[String], what: &str) -> Result<Vec<IpNet>, String> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            forwarded::parse_net(s)
                .ok_or_else(|| format!("{what}[{i}]: `{s}` is not an IP address or CIDR"))
        })
        .collect()
}

/// What groups requests into one budget (Traefik's `sourceCriterion`).
#[derive(Debug)]
pub(crate) enum Source {
    Ip(IpStrategy),
    Header(HeaderName),
    Host,
}

impl Source {
    /// `default_host`: with no criterion, group by request host (inFlightReq) rather than by
    /// client IP (rateLimit).
    pub(crate) fn compile(
        cfg: Option<&dynamic::SourceCriterion>,
        default_host: bool,
        what: &str,
    ) -> Result<Self, String> {
        let default = if default_host {
            Source::Host
        } else {
            Source::Ip(IpStrategy::remote_addr())
        };
        let Some(c) = cfg else {
            return Ok(default);
        };
        let header = c.request_header_name.as_deref().filter(|h| !h.is_empty());
        let what = format!("{what}.sourceCriterion");
        match (&c.ip_strategy, header, c.request_host) {
            (Some(_), Some(_), _) => Err(format!(
                "{what}: ipStrategy and requestHeaderName are mutually exclusive"
            )),
            (Some(_), _, true) => Err(format!(
                "{what}: ipStrategy and requestHost are mutually exclusive"
            )),
            (_, Some(_), true) => Err(format!(
                "{what}: requestHost and requestHeaderName are mutually exclusive"
            )),
            (Some(s), None, false) => Ok(Source::Ip(IpStrategy::compile(
                Some(s),
                &format!("{what}.ipStrategy"),
            )?)),
            (None, Some(h), false) => HeaderName::from_bytes(h.as_bytes())
                .map(Source::Header)
                .map_err(|_| format!("{what}.requestHeaderName: `{h}` is not a header name")),
            (None, None, true) => Ok(Source::Host),
            (None, None, false) => Ok(default),
        }
    }

    /// The request's source, within its router. A missing header or an undeterminable IP is a
    /// source of its own (the empty string in Traefik).
    pub(crate) fn key<V>(&self, req: &Request, ctx: &RequestCtx, map: &Shards<V>) -> SourceKey {
        let id = match self {
            Source::Ip(strategy) => match strategy.client_ip(req, ctx) {
                Some(ip) => SourceId::Ip(ip),
                None => map.text_id(b""),
            },
            Source::Header(name) => {
                map.text_id(req.headers().get(name).map_or(&b""[..], |v| v.as_bytes()))
            }
            Source::Host => map.text_id(request_host(req).as_bytes()),
        };
        map.key(ctx.router.as_deref(), id)
    }
}

/// `ipAllowList`: only clients in `sourceRange` get through.
#[derive(Debug)]
pub(crate) struct IpAllowList {
    nets: Vec<IpNet>,
    strategy: IpStrategy,
    reject: StatusCode,
}

impl IpAllowList {
    pub(crate) fn compile(cfg: &dynamic::IpAllowList) -> Result<Self, String> {
        if cfg.source_range.is_empty() {
            return Err("ipAllowList.sourceRange is empty".into());
        }
        let nets = parse_nets(&cfg.source_range, "ipAllowList.sourceRange")?;
        let strategy = IpStrategy::compile(cfg.ip_strategy.as_ref(), "ipAllowList.ipStrategy")?;
        let reject = match cfg.reject_status_code {
            None | Some(0) => StatusCode::FORBIDDEN,
            Some(code) => StatusCode::from_u16(code)
                .ok()
                .filter(|s| s.canonical_reason().is_some())
                .ok_or_else(|| {
                    format!("ipAllowList.rejectStatusCode: {code} is not an HTTP status code")
                })?,
        };
        Ok(IpAllowList {
            nets,
            strategy,
            reject,
        })
    }

    pub(crate) async fn handle(
        &self,
        req: Request,
        ctx: &mut RequestCtx,
        next: Next<'_>,
    ) -> Response {
        let allowed = self
            .strategy
            .client_ip(&req, ctx)
            .is_some_and(|ip| forwarded::contains(&self.nets, ip));
        if !allowed {
            tracing::debug!(client = %ctx.client_addr, "ipAllowList: rejected");
            return reply(self.reject, status_text(self.reject));
        }
        next.run(req, ctx).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testutil::{
        body_string, ctx_from, ctx_trusting, echo_service, mw, request, run,
    };
    use super::*;
    use crate::config::dynamic::IpStrategy as Cfg;

    fn strat(depth: usize, excluded: &[&str], v6: Option<u8>) -> IpStrategy {
        IpStrategy::compile(
            Some(&Cfg {
                depth,
                excluded_i_ps: excluded.iter().map(|s| s.to_string()).collect(),
                ipv6_subnet: v6,
            }),
            "t",
        )
        .unwrap()
    }

    fn with_xff(xff: &str) -> Request {
        let mut r = request("GET", "/");
        r.headers_mut()
            .insert(&X_FORWARDED_FOR, xff.parse().unwrap());
        r
    }

    #[test]
    fn depth_counts_from_the_right_and_needs_trust() {
        let s = strat(2, &[], None);
        let req = with_xff("1.1.1.1, 2.2.2.2, 3.3.3.3");
        let trusted = ctx_trusting("10.0.0.1:1000", &["10.0.0.0/8"]);
        assert_eq!(
            s.client_ip(&req, &trusted),
            Some("2.2.2.2".parse().unwrap())
        );
        let untrusted = ctx_from("10.0.0.1:1000");
        assert_eq!(s.client_ip(&req, &untrusted), None);
        let s = strat(4, &[], None);
        assert_eq!(s.client_ip(&req, &trusted), None);
    }

    #[test]
    fn excluded_ips_pick_the_rightmost_other_address() {
        let s = strat(0, &["3.3.3.0/24", "2.2.2.2"], None);
        let req = with_xff("1.1.1.1, 2.2.2.2, 3.3.3.3");
        let trusted = ctx_trusting("10.0.0.1:1000", &["10.0.0.0/8"]);
        assert_eq!(
            s.client_ip(&req, &trusted),
            Some("1.1.1.1".parse().unwrap())
        );
    }

    #[test]
    fn remote_addr_with_ipv6_subnet() {
        let s = strat(0, &[], Some(64));
        let ctx = ctx_from("[2001:db8:1:2:3:4:5:6]:443");
        assert_eq!(
            s.client_ip(&request("GET", "/"), &ctx),
            Some("2001:db8:1:2::".parse().unwrap())
        );
        assert!(
            IpStrategy::compile(
                Some(&Cfg {
                    ipv6_subnet: Some(0),
                    ..Default::default()
                }),
                "x"
            )
            .unwrap_err()
            .contains("x.ipv6Subnet")
        );
    }

    #[test]
    fn source_criteria_are_mutually_exclusive() {
        let c = dynamic::SourceCriterion {
            ip_strategy: Some(Cfg::default()),
            request_header_name: Some("X-User".into()),
            request_host: false,
        };
        let e = Source::compile(Some(&c), false, "rateLimit").unwrap_err();
        assert!(e.contains("rateLimit.sourceCriterion"), "{e}");
        assert!(e.contains("mutually exclusive"), "{e}");
    }

    #[tokio::test]
    async fn allow_list_rejects_outsiders_with_the_configured_status() {
        let m =
            mw("ipAllowList: {sourceRange: [192.168.0.0/16, 127.0.0.1], rejectStatusCode: 404}");
        let svc = echo_service();
        let (ok, _) = run(
            std::slice::from_ref(&m),
            &svc,
            request("GET", "/"),
            ctx_from("127.0.0.1:5"),
        )
        .await;
        assert_eq!(ok.status(), 200);
        let (no, _) = run(&[m], &svc, request("GET", "/"), ctx_from("10.1.1.1:5")).await;
        assert_eq!(no.status(), 404);
        assert_eq!(body_string(no).await, "Not Found");
    }

    #[test]
    fn allow_list_errors_name_the_entry() {
        let e = IpAllowList::compile(&dynamic::IpAllowList {
            source_range: vec!["10.0.0.0/8".into(), "nope".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            e,
            "ipAllowList.sourceRange[1]: `nope` is not an IP address or CIDR"
        );
        let e = IpAllowList::compile(&dynamic::IpAllowList {
            source_range: vec!["10.0.0.0/8".into()],
            reject_status_code: Some(999),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("rejectStatusCode"), "{e}");
    }
}
