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
    pub client_ip: IpAddr,
    pub trusted: bool,
    /// `http`, `https`, `ws` or `wss`.
    pub proto: &'static str,
    /// The Host the client asked for (with port, as received).
    pub host: Option<&'a str>,
    /// The entrypoint's port when the Host carries none.
    pub default_port: u16,
    pub server: &'a HeaderValue,
}

/// Rewrites the forwarded headers of a request about to go upstream.
pub fn apply(headers: &mut HeaderMap, hop: &Hop<'_>) {
    if !hop.trusted {
        for h in ALL {
            headers.remove(h);
        }
    }
    let ip = canonical(hop.client_ip);
    let mut ip_buf = [0u8; 64];
    let ip_str = fmt_ip(ip, &mut ip_buf);
    // X-Forwarded-For: append this hop's client.
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => HeaderValue::try_from(format!("{prev}, {ip_str}")).ok(),
        _ => HeaderValue::from_str(ip_str).ok(),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(hop.proto),
        );
    }
    if let Some(host) = hop.host {
        if !headers.contains_key(&X_FORWARDED_HOST)
            && let Ok(v) = HeaderValue::from_str(host)
        {
            headers.insert(X_FORWARDED_HOST.clone(), v);
        }
        if !headers.contains_key(&X_FORWARDED_PORT) {
            let port = split_port(host).1.unwrap_or(hop.default_port);
            headers.insert(X_FORWARDED_PORT.clone(), HeaderValue::from(port));
        }
    }
    if !headers.contains_key(&X_FORWARDED_SERVER) {
        headers.insert(X_FORWARDED_SERVER.clone(), hop.server.clone());
    }
    if !headers.contains_key(&X_REAL_IP)
        && let Ok(v) = HeaderValue::from_str(ip_str)
    {
        headers.insert(X_REAL_IP.clone(), v);
    }
}

fn fmt_ip(ip: IpAddr, buf: &mut [u8; 64]) -> &str {
    use std::io::Write;
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cur, "{ip}");
    let n = cur.position() as usize;
    std::str::from_utf8(&buf[..n]).unwrap_or("")
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
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop<'a>(trusted: bool, server: &'a HeaderValue) -> Hop<'a> {
        Hop {
            client_ip: "10.1.2.3".parse().unwrap(),
            trusted,
            proto: "https",
            host: Some("chat.example.com"),
            default_port: 443,
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
