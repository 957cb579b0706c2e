//! The router rule engine: Traefik v3's rule language, parsed once and matched without allocating.
//!
//! A rule such as ``Host(`chat.example.com`) && PathPrefix(`/api`)`` is parsed by [`Rule::parse`]
//! into a tree of matchers, with regular expressions compiled and literals normalised up front, so
//! that [`Rule::matches`] does no allocation and no case conversion per request.
//!
//! # The language (Traefik v3 syntax)
//!
//! * Matchers are called like Go functions with string arguments, in backticks (raw strings) or
//!   double quotes (Go's interpreted strings, with Go's escapes); single quotes are rejected, as
//!   in Traefik. A trailing comma after the last argument is accepted, as Go's parser accepts it.
//! * `&&` binds tighter than `||`, `!` binds tightest, parentheses group. Negations are pushed
//!   down to the matchers with De Morgan's laws, as Traefik does.
//! * Matcher names are accepted in the four spellings Traefik registers: as documented
//!   (`PathPrefix`), all lower case (`pathprefix`), all upper case (`PATHPREFIX`) and
//!   capitalised (`Pathprefix`). Arguments must not be empty.
//!
//! | matcher | arguments | matches when |
//! |---|---|---|
//! | `Host` | 1 | the request host, compared case-insensitively, equals the value; a trailing dot on either side is ignored; `*.example.com` matches exactly one label, `**.example.com` one or more |
//! | `HostRegexp` | 1 | the Go regexp matches the lowercased request host (unanchored) |
//! | `Path` | 1 | the routing path equals the value (which must start with `/`) |
//! | `PathPrefix` | 1 | the routing path starts with the value (which must start with `/`) |
//! | `PathRegexp` | 1 | the regexp matches the routing path (unanchored) |
//! | `Method` | 1 | the request method equals the value, upper-cased at parse time |
//! | `Header` | 2 | a value of the header (name case-insensitive) equals the value exactly |
//! | `HeaderRegexp` | 2 | a value of the header matches the regexp (unanchored) |
//! | `Query` | 1 or 2 | a query parameter named key has the value (the empty value when only the key is given) |
//! | `QueryRegexp` | 1 or 2 | a value of the query parameter matches the regexp; with one argument, as `Query` |
//! | `ClientIP` | 1 | the peer address is the IP, or is in the CIDR; IPv4-mapped IPv6 counts as IPv4 |
//!
//! The *routing path* is the request path as received, with percent-encoded characters decoded
//! except the RFC 3986 reserved ones and `%` itself, which stay encoded (so ``Path(`/a b`)``
//! matches `/a%20b`, while `/a%2Fb` is not `/a/b`). See `matcher.rs` for the details of each
//! matcher and where they come from in Traefik.

mod matcher;
mod parse;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::net::IpAddr;

use matcher::{Ctx, Matcher, Node, Scratch};

/// What a rule sees of a request. Borrowed; building it does not allocate.
#[derive(Debug, Clone, Copy)]
pub struct RouteInput<'a> {
    /// Request host (from `:authority` or the `Host` header) with the port already stripped,
    /// in any case. Surrounding ASCII whitespace and the brackets of an IPv6 literal are ignored.
    pub host: &'a str,
    /// Request path without the query, as received (percent-encoded form).
    pub path: &'a str,
    /// Raw query string, without the `?`.
    pub query: Option<&'a str>,
    pub method: &'a http::Method,
    pub headers: &'a http::HeaderMap,
    /// The peer address of the connection (Traefik's `ClientIP` ignores `X-Forwarded-For`).
    pub client_ip: IpAddr,
}

/// A rule that could not be parsed: what is wrong, and where (1-based column, in characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at column {column} of rule `{rule}`")]
pub struct RuleError {
    pub message: String,
    pub column: usize,
    pub rule: String,
}

impl RuleError {
    /// An error at byte offset `offset` of `rule`.
    fn at(rule: &str, offset: usize, message: impl Into<String>) -> RuleError {
        let offset = offset.min(rule.len());
        let column = rule.get(..offset).map_or(offset, |s| s.chars().count()) + 1;
        RuleError {
            message: message.into(),
            column,
            rule: rule.to_owned(),
        }
    }
}

/// A compiled router rule.
#[derive(Debug, Clone)]
pub struct Rule {
    root: Node,
    /// Some `HostRegexp` needs the host lowercased (Traefik matches it against the lowercased host).
    needs_lower_host: bool,
    /// Some `Path*` matcher needs the routing path (percent-decoding of unreserved characters).
    needs_routing_path: bool,
}

impl Rule {
    /// Parses and compiles a Traefik v3 rule.
    pub fn parse(src: &str) -> Result<Rule, RuleError> {
        let root = parse::parse(src)?;
        let mut needs_lower_host = false;
        let mut needs_routing_path = false;
        root.for_each_leaf(&mut |_, m| match m {
            Matcher::HostRegexp { .. } => needs_lower_host = true,
            Matcher::Path(_) | Matcher::PathPrefix(_) | Matcher::PathRegexp(_) => {
                needs_routing_path = true;
            }
            _ => {}
        });
        Ok(Rule {
            root,
            needs_lower_host,
            needs_routing_path,
        })
    }

    /// Whether the request matches the rule. Does not allocate: a host that must be lowercased
    /// and a path or query value that must be percent-decoded are rewritten in stack buffers
    /// (of 256 bytes, 2 KiB and 512 bytes; only a longer one spills to the heap).
    pub fn matches(&self, req: &RouteInput<'_>) -> bool {
        let host = matcher::canonical_host(req.host);
        let lower_host = self.needs_lower_host && host.iter().any(u8::is_ascii_uppercase);
        let decode_path = self.needs_routing_path && req.path.as_bytes().contains(&b'%');
        if !lower_host && !decode_path {
            return self
                .root
                .eval(&Ctx::new(req, host, host, req.path.as_bytes()));
        }
        self.matches_slow(req, host, lower_host, decode_path)
    }

    /// [`Rule::matches`] for requests whose host has upper-case letters (with a `HostRegexp`) or
    /// whose path has percent-escapes (with a `Path*` matcher): both need a rewritten copy.
    #[cold]
    fn matches_slow(
        &self,
        req: &RouteInput<'_>,
        host: &[u8],
        lower_host: bool,
        decode_path: bool,
    ) -> bool {
        let mut host_buf = Scratch::<256>::new();
        let mut path_buf = Scratch::<2048>::new();
        let host_lower = if lower_host {
            host_buf.lowercase(host)
        } else {
            host
        };
        let path = if decode_path {
            path_buf.routing_path(req.path.as_bytes())
        } else {
            req.path.as_bytes()
        };
        self.root.eval(&Ctx::new(req, host, host_lower, path))
    }

    /// The default priority Traefik gives a router with this rule: the length of the rule in
    /// bytes, less 2 for each (non-negated) `**.` double-wildcard `Host`, whose stars do not count.
    pub fn default_priority(src: &str) -> i64 {
        let mut priority = i64::try_from(src.len()).unwrap_or(i64::MAX);
        if let Ok(rule) = Rule::parse(src) {
            rule.root.for_each_leaf(&mut |negated, m| {
                if let Matcher::Host(expr) = m
                    && !negated
                    && expr.starts_with("**.")
                {
                    priority -= 2;
                }
            });
        }
        priority
    }

    /// If the rule can only match requests whose host is one of these exact names, returns them
    /// (lowercased, sorted, deduplicated); otherwise `None`.
    ///
    /// Traefik's `Host` ignores one trailing dot on the request host, so to look a request up the
    /// caller lowercases its host and passes it through [`host_lookup_key`] (which strips that
    /// dot). An empty list means the rule can never match (e.g. ``Host(`a`) && Host(`b`)``).
    /// Negated `Host`s, wildcard `Host`s and `HostRegexp` give `None`, as does any disjunction
    /// with a branch that does not pin the host.
    pub fn required_hosts(&self) -> Option<Vec<String>> {
        required_hosts(&self.root).map(|set| set.into_iter().collect())
    }
}

/// The key under which a request host is looked up among [`Rule::required_hosts`]: the host
/// without surrounding whitespace, IPv6 brackets and one trailing dot. The caller lowercases it
/// (or compares case-insensitively).
pub fn host_lookup_key(host: &str) -> &str {
    let host = host.trim_ascii();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.strip_suffix('.').unwrap_or(host)
}

fn required_hosts(node: &Node) -> Option<BTreeSet<String>> {
    match node {
        Node::Leaf {
            negated: false,
            matcher: Matcher::Host(expr),
        } if !expr.starts_with('*') => {
            // ``Host(`a.`)`` matches `a` and `a.` (key `a`) but also `a..` (key `a.`: the
            // request's trailing dot is stripped and the rest compared with `a.`).
            let mut keys = BTreeSet::from([expr.clone()]);
            if let Some(bare) = expr.strip_suffix('.') {
                keys.insert(bare.to_owned());
            }
            Some(keys)
        }
        Node::Leaf { .. } => None,
        Node::All(children) => children
            .iter()
            .filter_map(required_hosts)
            .reduce(|a, b| a.intersection(&b).cloned().collect()),
        Node::Any(children) => {
            let mut union = BTreeSet::new();
            for child in children {
                union.extend(required_hosts(child)?);
            }
            Some(union)
        }
    }
}
