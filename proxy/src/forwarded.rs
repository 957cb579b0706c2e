//! X-Forwarded-* and X-Real-Ip, set the way Traefik sets them.
//!
//! Incoming forwarded headers are kept only from clients in the entrypoint's
//! `forwardedHeaders.trustedIPs` (or from everyone with `insecure: true`); otherwise they are
//! replaced by what the proxy itself saw.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub static X_FORWARDED_SERVER: HeaderName = HeaderName::from_static("x-forwarded-server");
pub static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

const ALL: [&HeaderName; 7] = [
    &X_FORWARDED_FOR,
    &X_FORWARDED_PROTO,
    &X_FORWARDED_HOST,
    &X_FORWARDED_PORT,
    &X_FORWARDED_SERVER,
    &X_FORWARDED_PREFIX,
    &X_REAL_IP,
];

/// Which clients may send their own forwarded headers.
#[derive(Debug, Clone, Default)]
pub struct TrustedIps {
    pub insecure: bool,
    pub nets: Vec<IpNet>,
}

impl TrustedIps {
    /// Parses `trustedIPs` entries (addresses or CIDRs).
    pub fn parse(insecure: bool, list: &[String]) -> Result<Self, String> {
        let nets = list
            .iter()
            .map(|s| parse_net(s).ok_or_else(|| format!("`{s}` is not an IP address or CIDR")))
            .collect::<Result<_, _>>()?;
        Ok(TrustedIps { insecure, nets })
    }

    /// Nobody is trusted (the common case, checked without looking at the address).
    pub fn is_empty(&self) -> bool {
        !self.insecure && self.nets.is_empty()
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.insecure || contains(&self.nets, ip)
    }
}

/// Parses `10.0.0.0/8` or a bare address (as a /32 or /128).
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Whether `ip` is in any of `nets`; IPv4-mapped IPv6 addresses match IPv4 ranges.
pub fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| n.contains(&ip))
}

/// `::ffff:1.2.3.4` -> `1.2.3.4`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What the proxy knows about the hop it is adding.
#[derive(Debug)]
pub struct Hop<'a> {
    /// The client's IP, formatted (IPv4-mapped IPv6 shown as IPv4).
    pub client_ip: &'a HeaderValue,
    pub trusted: bool,
    /// `http`, `https`, `ws` or `wss`.
    pub proto: &'static str,
    /// The Host the client asked for (with port, as received).
    pub host: Option<&'a HeaderValue>,
    /// X-Forwarded-Port when the Host carries none (the entrypoint's port).
    pub default_port: &'a HeaderValue,
    pub server: &'a HeaderValue,
}

fn is_forwarded_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with("x-forwarded-") || n == "x-real-ip"
}

/// Rewrites the forwarded headers of a request about to go upstream.
///
/// This runs on every request, so it avoids work: one pass over the names to see whether the
/// client sent any forwarded header at all, and the client IP formatted once per connection.
pub fn apply(headers: &mut HeaderMap, hop: &Hop<'_>) {
    let has_any = headers.keys().any(is_forwarded_header);
    if has_any && !hop.trusted {
        for h in ALL {
            headers.remove(h);
        }
    }
    let present = has_any && hop.trusted;
    // X-Forwarded-For: append this hop's client.
    let appended = if present {
        match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.is_empty() => {
                HeaderValue::try_from(format!("{prev}, {}", hop.client_ip.to_str().unwrap_or("")))
                    .ok()
            }
            _ => None,
        }
    } else {
        None
    };
    headers.insert(
        X_FORWARDED_FOR.clone(),
        appended.unwrap_or_else(|| hop.client_ip.clone()),
    );
    if !present || !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(hop.proto),
        );
    }
    if let Some(host) = hop.host {
        if !present || !headers.contains_key(&X_FORWARDED_HOST) {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        }
        if !present || !headers.contains_key(&X_FORWARDED_PORT) {
            let port = match host.to_str().ok().and_then(|h| split_port(h).1) {
                Some(p) => HeaderValue::from(p),
                None => hop.default_port.clone(),
            };
            headers.insert(X_FORWARDED_PORT.clone(), port);
        }
    }
    if !present || !headers.contains_key(&X_FORWARDED_SERVER) {
        headers.insert(X_FORWARDED_SERVER.clone(), hop.server.clone());
    }
    if !present || !headers.contains_key(&X_REAL_IP) {
        headers.insert(X_REAL_IP.clone(), hop.client_ip.clone());
    }
}

/// Splits `host:port` (or `[v6]:port`) into host and port.
pub fn split_port(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let host = &authority[..end + 2];
            let port = rest[end + 1..]
                .strip_prefix(':')
                .and_then(|p| p.parse().ok());
            return (host, port);
        }
        return (authority, None);
    }
    // Byte search and a digits-only fast path: this runs for every request (routing and
    // X-Forwarded-Port), where `rsplit_once` + `contains` + `parse` cost a few hundred instructions.
    let bytes = authority.as_bytes();
    let Some(colon) = bytes.iter().rposition(|&b| b == b':') else {
        return (authority, None);
    };
    if bytes[..colon].contains(&b':') {
        return (authority, None);
    }
    let (h, p) = (&authority[..colon], &authority[colon + 1..]);
    let port = if (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) {
        let n = p.bytes().fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
        u16::try_from(n).ok()
    } else {
        p.parse().ok()
    };
    match port {
        Some(port) => (h, Some(port)),
        None => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static IP: HeaderValue = HeaderValue::from_static("10.1.2.3");
    static HOST: HeaderValue = HeaderValue::from_static("chat.example.com");
    static PORT: HeaderValue = HeaderValue::from_static("443");

    fn hop(trusted: bool, server: &HeaderValue) -> Hop<'_> {
        Hop {
            client_ip: &IP,
            trusted,
            proto: "https",
            host: Some(&HOST),
            default_port: &PORT,
            server,
        }
    }

    #[test]
    fn untrusted_client_headers_are_replaced() {
        let server = HeaderValue::from_static("gw");
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        apply(&mut h, &hop(false, &server));
        assert_eq!(h[&X_FORWARDED_FOR], "10.1.2.3");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "chat.example.com");
        assert_eq!(h[&X_FORWARDED_PORT], "443");
        assert_eq!(h[&X_REAL_IP], "10.1.2.3");
        assert_eq!(h[&X_FORWARDED_SERVER], "gw");
    }

    #[test]
    fn trusted_client_headers_are_kept_and_appended() {
        let server = HeaderValue::from_static("gw");
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        apply(&mut h, &hop(true, &server));
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 10.1.2.3");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
    }

    #[test]
    fn trust_matching_handles_cidrs_and_mapped_v6() {
        let t = TrustedIps::parse(false, &["10.0.0.0/8".into(), "::1".into()]).unwrap();
        assert!(t.trusts("10.9.9.9".parse().unwrap()));
        assert!(t.trusts("::ffff:10.0.0.1".parse().unwrap()));
        assert!(t.trusts("::1".parse().unwrap()));
        assert!(!t.trusts("11.0.0.1".parse().unwrap()));
        assert!(TrustedIps::parse(false, &["nope".into()]).is_err());
    }

    #[test]
    fn split_port_cases() {
        assert_eq!(split_port("a.com:8080"), ("a.com", Some(8080)));
        assert_eq!(split_port("a.com"), ("a.com", None));
        assert_eq!(split_port("[::1]:443"), ("[::1]", Some(443)));
        assert_eq!(split_port("[::1]"), ("[::1]", None));
    }
}
