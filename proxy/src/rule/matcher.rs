//! The compiled matcher tree and how each matcher looks at a request.
//!
//! Semantics follow Traefik v3 (`pkg/muxer/http/matcher.go`, `mux.go`, `pkg/muxer/muxer.go`,
//! `pkg/ip/checker.go`, and Go's `net/url` for query parsing); where Gantry deviates it says so.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, Method};
use regex::bytes::Regex;

use super::RouteInput;

/// A rule, with negations already pushed down to the leaves (De Morgan), as Traefik does.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// `&&` of two or more nodes (chains are flattened).
    All(Vec<Node>),
    /// `||` of two or more nodes (chains are flattened).
    Any(Vec<Node>),
    Leaf {
        negated: bool,
        matcher: Matcher,
    },
}

#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    /// Lowercased host expression: exact, `*.suffix` or `**.suffix`.
    Host(String),
    /// `matches_empty`: Traefik also tries the regexp on the (empty, unless CNAME flattening is
    /// on) flattened host, so a regexp that matches the empty string matches every request.
    HostRegexp {
        re: Regex,
        matches_empty: bool,
    },
    Path(String),
    PathPrefix(String),
    PathRegexp(Regex),
    /// Upper-cased at parse time; compared case-sensitively with the request method.
    Method(String),
    Header {
        name: HeaderName,
        value: String,
    },
    HeaderRegexp {
        name: HeaderName,
        re: Regex,
    },
    /// `value` is empty for `Query(`key`)`: that matches `?key` and `?key=`, not `?key=x`.
    Query {
        key: String,
        value: String,
    },
    QueryRegexp {
        key: String,
        re: Regex,
    },
    /// Inclusive range of canonical (IPv4-mapped unmapped) addresses.
    ClientIp {
        first: IpAddr,
        last: IpAddr,
    },
}

impl Node {
    /// `!self`, pushed down to the leaves.
    pub(crate) fn negate(self) -> Node {
        match self {
            Node::All(children) => Node::any(children.into_iter().map(Node::negate).collect()),
            Node::Any(children) => Node::all(children.into_iter().map(Node::negate).collect()),
            Node::Leaf { negated, matcher } => Node::Leaf {
                negated: !negated,
                matcher,
            },
        }
    }

    /// The conjunction of `nodes` (non-empty), flattening nested conjunctions.
    pub(crate) fn all(nodes: Vec<Node>) -> Node {
        Node::flatten(nodes, true)
    }

    /// The disjunction of `nodes` (non-empty), flattening nested disjunctions.
    pub(crate) fn any(nodes: Vec<Node>) -> Node {
        Node::flatten(nodes, false)
    }

    fn flatten(nodes: Vec<Node>, conjunction: bool) -> Node {
        let mut flat = Vec::with_capacity(nodes.len());
        for node in nodes {
            match node {
                Node::All(children) if conjunction => flat.extend(children),
                Node::Any(children) if !conjunction => flat.extend(children),
                other => flat.push(other),
            }
        }
        if flat.len() == 1
            && let Some(only) = flat.pop()
        {
            return only;
        }
        if conjunction {
            Node::All(flat)
        } else {
            Node::Any(flat)
        }
    }

    pub(crate) fn for_each_leaf(&self, f: &mut impl FnMut(bool, &Matcher)) {
        match self {
            Node::All(children) | Node::Any(children) => {
                children.iter().for_each(|c| c.for_each_leaf(f));
            }
            Node::Leaf { negated, matcher } => f(*negated, matcher),
        }
    }

    pub(crate) fn eval(&self, cx: &Ctx<'_>) -> bool {
        match self {
            Node::All(children) => children.iter().all(|c| c.eval(cx)),
            Node::Any(children) => children.iter().any(|c| c.eval(cx)),
            Node::Leaf { negated, matcher } => matcher.eval(cx) != *negated,
        }
    }
}

/// The request as the matchers see it, with the host and path already normalised.
pub(crate) struct Ctx<'r> {
    /// Canonical host, original case.
    host: &'r [u8],
    /// Canonical host, ASCII-lowercased (only when the rule has a `HostRegexp`; else as `host`).
    host_lower: &'r [u8],
    /// Routing path (only decoded when the rule has a `Path*` matcher).
    path: &'r [u8],
    query: Option<&'r [u8]>,
    method: &'r Method,
    headers: &'r HeaderMap,
    client_ip: IpAddr,
}

impl<'r> Ctx<'r> {
    pub(crate) fn new(
        req: &RouteInput<'r>,
        host: &'r [u8],
        host_lower: &'r [u8],
        path: &'r [u8],
    ) -> Ctx<'r> {
        Ctx {
            host,
            host_lower,
            path,
            query: req.query.map(str::as_bytes),
            method: req.method,
            headers: req.headers,
            client_ip: req.client_ip.to_canonical(),
        }
    }
}

impl Matcher {
    fn eval(&self, cx: &Ctx<'_>) -> bool {
        match self {
            Matcher::Host(expr) => host_matches(cx.host, expr.as_bytes()),
            Matcher::HostRegexp { re, matches_empty } => {
                *matches_empty || re.is_match(cx.host_lower)
            }
            Matcher::Path(path) => cx.path == path.as_bytes(),
            Matcher::PathPrefix(prefix) => cx.path.starts_with(prefix.as_bytes()),
            Matcher::PathRegexp(re) => re.is_match(cx.path),
            Matcher::Method(method) => cx.method.as_str() == method,
            // Go moves `Host` out of the header map, so Traefik's header matchers never see it.
            Matcher::Header { name, .. } | Matcher::HeaderRegexp { name, .. }
                if *name == http::header::HOST =>
            {
                false
            }
            Matcher::Header { name, value } => cx
                .headers
                .get_all(name)
                .iter()
                .any(|v| v.as_bytes() == value.as_bytes()),
            Matcher::HeaderRegexp { name, re } => cx
                .headers
                .get_all(name)
                .iter()
                .any(|v| re.is_match(v.as_bytes())),
            Matcher::Query { key, value } => query_pairs(cx.query)
                .any(|(k, v)| component_eq(k, key.as_bytes()) && component_eq(v, value.as_bytes())),
            Matcher::QueryRegexp { key, re } => query_pairs(cx.query)
                .any(|(k, v)| component_eq(k, key.as_bytes()) && component_matches(v, re)),
            Matcher::ClientIp { first, last } => *first <= cx.client_ip && cx.client_ip <= *last,
        }
    }
}

/// Traefik's canonical host: trimmed, without the brackets of an IPv6 literal. (Traefik also
/// lowercases it; matchers compare case-insensitively instead.)
pub(crate) fn canonical_host(host: &str) -> &[u8] {
    let host = host.trim_ascii().as_bytes();
    match host {
        [b'[', inner @ .., b']'] => inner,
        _ => host,
    }
}

/// Traefik's `Host`: the host expression against the host, and again without a trailing dot on
/// either side. `host` is in any case, `expr` lowercase.
fn host_matches(host: &[u8], expr: &[u8]) -> bool {
    if host.is_empty() {
        return false;
    }
    domain_matches(host, expr)
        || expr
            .strip_suffix(b".")
            .is_some_and(|e| domain_matches(host, e))
        || host
            .strip_suffix(b".")
            .is_some_and(|h| domain_matches(h, expr))
}

/// Traefik's `DomainMatchHostExpression`: `**.suffix` matches any name with one or more labels
/// before `.suffix`; an expression starting with `*` stands for the first label (`*.suffix`
/// matches exactly one label before `.suffix`, and `*` any name without a dot); anything else is
/// an exact, case-insensitive comparison.
fn domain_matches(domain: &[u8], expr: &[u8]) -> bool {
    if let Some(suffix) = expr.strip_prefix(b"**.") {
        let Some(at) = domain.len().checked_sub(suffix.len() + 1) else {
            return false;
        };
        return at > 0 && domain[at] == b'.' && domain[at + 1..].eq_ignore_ascii_case(suffix);
    }
    if let Some(rest_expr) = expr.strip_prefix(b"*") {
        let rest = domain
            .iter()
            .position(|&b| b == b'.')
            .map_or(&[][..], |dot| &domain[dot..]);
        return rest.eq_ignore_ascii_case(rest_expr);
    }
    domain.eq_ignore_ascii_case(expr)
}

/// Whether `b` stays percent-encoded in the routing path: RFC 3986 reserved characters, and `%`.
fn is_reserved(b: u8) -> bool {
    matches!(
        b,
        b':' | b'/'
            | b'?'
            | b'#'
            | b'['
            | b']'
            | b'@'
            | b'!'
            | b'$'
            | b'&'
            | b'\''
            | b'('
            | b')'
            | b'*'
            | b'+'
            | b','
            | b';'
            | b'='
            | b'%'
    )
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte encoded by the `%XX` at the start of `s`, if it is one.
fn percent_byte(s: &[u8]) -> Option<u8> {
    match s {
        [b'%', hi, lo, ..] => Some(hex_val(*hi)? << 4 | hex_val(*lo)?),
        _ => None,
    }
}

/// Writes the routing path of `path` into `out` (at least `path.len()` long) and returns its
/// length. Traefik (`withRoutingPath` in `mux.go`) decodes every escape except reserved
/// characters, which it keeps as received. Gantry keeps them too, but with upper-case hex:
/// Traefik only recognises upper-case `%2F` as reserved and decodes `%2f` to `/`, so `/a%2fb`
/// matched ``Path(`/a/b`)`` there while `/a%2Fb` did not; here both are `/a%2Fb`. Malformed
/// escapes are copied as they are (Go's server rejects such requests with 400 before routing).
fn write_routing_path(path: &[u8], out: &mut [u8]) -> usize {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let (mut i, mut n) = (0, 0);
    while i < path.len() {
        match percent_byte(&path[i..]) {
            Some(b) if is_reserved(b) => {
                out[n..n + 3].copy_from_slice(&[
                    b'%',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ]);
                n += 3;
                i += 3;
            }
            Some(b) => {
                out[n] = b;
                n += 1;
                i += 3;
            }
            None => {
                out[n] = path[i];
                n += 1;
                i += 1;
            }
        }
    }
    n
}

/// Decodes one query component as Go's `url.QueryUnescape` does (`+` is a space) into `out` (at
/// least `raw.len()` long); `None` if an escape is malformed, which makes Go drop the pair.
fn write_query_component(raw: &[u8], out: &mut [u8]) -> Option<usize> {
    let (mut i, mut n) = (0, 0);
    while i < raw.len() {
        let (b, len) = query_byte(&raw[i..])?;
        out[n] = b;
        n += 1;
        i += len;
    }
    Some(n)
}

/// The first decoded byte of the query component `s` (non-empty) and how many bytes encode it.
fn query_byte(s: &[u8]) -> Option<(u8, usize)> {
    match s.first()? {
        b'%' => Some((percent_byte(s)?, 3)),
        b'+' => Some((b' ', 1)),
        &b => Some((b, 1)),
    }
}

/// Whether the query component `raw` decodes (validly) to `want`, without decoding into a buffer.
fn component_eq(raw: &[u8], want: &[u8]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < raw.len() {
        let Some((b, len)) = query_byte(&raw[i..]) else {
            return false;
        };
        if want.get(j) != Some(&b) {
            return false;
        }
        i += len;
        j += 1;
    }
    j == want.len()
}

/// Whether the query component `raw` is validly encoded and `re` matches its decoded form.
fn component_matches(raw: &[u8], re: &Regex) -> bool {
    if !raw.iter().any(|&b| b == b'%' || b == b'+') {
        return re.is_match(raw);
    }
    let mut buf = Scratch::<512>::new();
    buf.query_component(raw).is_some_and(|v| re.is_match(v))
}

/// The `(key, value)` pairs of a raw query, still encoded, as Go's `url.ParseQuery` splits them:
/// on `&` only, skipping empty parts and parts containing `;` (Go rejects `;` as a separator), a
/// part without `=` having the empty value.
fn query_pairs(query: Option<&[u8]>) -> impl Iterator<Item = (&[u8], &[u8])> {
    query
        .unwrap_or_default()
        .split(|&b| b == b'&')
        .filter(|part| !part.is_empty() && !part.contains(&b';'))
        .map(|part| match part.iter().position(|&b| b == b'=') {
            Some(eq) => (&part[..eq], &part[eq + 1..]),
            None => (part, &[][..]),
        })
}

/// A scratch buffer on the stack, spilling to the heap only for inputs longer than `N` bytes.
pub(crate) struct Scratch<const N: usize> {
    stack: [u8; N],
    heap: Vec<u8>,
}

impl<const N: usize> Scratch<N> {
    pub(crate) fn new() -> Self {
        Scratch {
            stack: [0; N],
            heap: Vec::new(),
        }
    }

    /// A writable buffer of `len` bytes.
    fn buf(&mut self, len: usize) -> &mut [u8] {
        if len <= N {
            &mut self.stack[..len]
        } else {
            self.heap.resize(len, 0);
            &mut self.heap
        }
    }

    pub(crate) fn lowercase(&mut self, s: &[u8]) -> &[u8] {
        let out = self.buf(s.len());
        for (o, b) in out.iter_mut().zip(s) {
            *o = b.to_ascii_lowercase();
        }
        out
    }

    pub(crate) fn routing_path(&mut self, path: &[u8]) -> &[u8] {
        let out = self.buf(path.len());
        let n = write_routing_path(path, out);
        &out[..n]
    }

    fn query_component(&mut self, raw: &[u8]) -> Option<&[u8]> {
        let out = self.buf(raw.len());
        let n = write_query_component(raw, out)?;
        Some(&out[..n])
    }
}
