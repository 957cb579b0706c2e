//! Recursive-descent parser for Traefik v3 rules.
//!
//! Traefik parses a rule as a Go expression (`go/parser.ParseExpr`, through vulcand/predicate), so
//! the grammar is Go's, restricted to what Traefik accepts:
//!
//! ```text
//! rule    = or EOF
//! or      = and { "||" and }
//! and     = unary { "&&" unary }
//! unary   = "!" unary | "(" or ")" | call
//! call    = NAME "(" [ STRING { "," STRING } [ "," ] ] ")"
//! STRING  = `raw` | "interpreted, with Go escapes"
//! ```
//!
//! Unlike Go, a newline is always plain whitespace (Go would end the expression at a newline that
//! follows `)`), so rules folded over several lines parse wherever the line breaks fall.

use std::net::IpAddr;

use http::HeaderName;
use regex::bytes::Regex;

use super::RuleError;
use super::matcher::{Matcher, Node};

/// How deeply `(` and `!` may nest: far beyond any real rule, and bounded so that garbage input
/// cannot overflow the stack.
const MAX_DEPTH: usize = 64;

pub(crate) fn parse(src: &str) -> Result<Node, RuleError> {
    if src.trim_ascii().is_empty() {
        return Err(RuleError::at(src, 0, "empty rule"));
    }
    let mut parser = Parser {
        src,
        lexer: Lexer { src, pos: 0 },
        peeked: None,
        depth: 0,
    };
    let node = parser.parse_or()?;
    let next = parser.next()?;
    match next.tok {
        Tok::Eof => Ok(node),
        Tok::RParen => Err(parser.err(next.start, "unexpected `)` without a matching `(`")),
        other => Err(parser.err(
            next.start,
            format!(
                "unexpected {} after a complete expression; expected `&&`, `||` or the end of the rule",
                other.describe()
            ),
        )),
    }
}

#[derive(Debug)]
enum Tok<'s> {
    Ident(&'s str),
    Str(String),
    Number(&'s str),
    LParen,
    RParen,
    Comma,
    And,
    Or,
    Not,
    Eof,
}

impl Tok<'_> {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(name) => format!("`{name}`"),
            Tok::Str(_) => "a string".to_owned(),
            Tok::Number(n) => format!("the number `{n}`"),
            Tok::LParen => "`(`".to_owned(),
            Tok::RParen => "`)`".to_owned(),
            Tok::Comma => "`,`".to_owned(),
            Tok::And => "`&&`".to_owned(),
            Tok::Or => "`||`".to_owned(),
            Tok::Not => "`!`".to_owned(),
            Tok::Eof => "the end of the rule".to_owned(),
        }
    }
}

#[derive(Debug)]
struct Token<'s> {
    tok: Tok<'s>,
    /// Byte offset of the token's first character.
    start: usize,
}

struct Lexer<'s> {
    src: &'s str,
    pos: usize,
}

impl<'s> Lexer<'s> {
    fn err(&self, at: usize, message: impl Into<String>) -> RuleError {
        RuleError::at(self.src, at, message)
    }

    fn next_token(&mut self) -> Result<Token<'s>, RuleError> {
        let rest = self.src[self.pos..].trim_start_matches([' ', '\t', '\n', '\r']);
        let start = self.src.len() - rest.len();
        self.pos = start;
        let Some(c) = rest.chars().next() else {
            return Ok(Token {
                tok: Tok::Eof,
                start,
            });
        };
        let (len, tok) = match c {
            '(' => (1, Tok::LParen),
            ')' => (1, Tok::RParen),
            ',' => (1, Tok::Comma),
            '!' => (1, Tok::Not),
            '&' if rest.starts_with("&&") => (2, Tok::And),
            '|' if rest.starts_with("||") => (2, Tok::Or),
            '&' => return Err(self.err(start, "unexpected `&`: the AND operator is `&&`")),
            '|' => return Err(self.err(start, "unexpected `|`: the OR operator is `||`")),
            '`' => {
                let value = self.raw_string(start)?;
                return Ok(Token {
                    tok: Tok::Str(value),
                    start,
                });
            }
            '"' => {
                let value = self.interpreted_string(start)?;
                return Ok(Token {
                    tok: Tok::Str(value),
                    start,
                });
            }
            '\'' => {
                return Err(self.err(
                    start,
                    "single quotes are not accepted (values are Go string literals): use backticks or double quotes",
                ));
            }
            c if c.is_alphabetic() || c == '_' => {
                let len = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (len, Tok::Ident(&rest[..len]))
            }
            c if c.is_ascii_digit() => {
                let len = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '.' || c == '_'))
                    .unwrap_or(rest.len());
                (len, Tok::Number(&rest[..len]))
            }
            c => return Err(self.err(start, format!("unexpected character `{c}`"))),
        };
        self.pos = start + len;
        Ok(Token { tok, start })
    }

    /// A Go raw string: everything up to the next backtick, carriage returns dropped.
    fn raw_string(&mut self, start: usize) -> Result<String, RuleError> {
        let body = &self.src[start + 1..];
        let Some(len) = body.find('`') else {
            return Err(self.err(start, "unterminated string: missing closing backtick"));
        };
        self.pos = start + 1 + len + 1;
        Ok(body[..len].replace('\r', ""))
    }

    /// A Go interpreted string, with Go's escapes.
    fn interpreted_string(&mut self, start: usize) -> Result<String, RuleError> {
        let bytes = self.src.as_bytes();
        let mut out = Vec::new();
        let mut i = start + 1;
        loop {
            match bytes.get(i) {
                None => {
                    return Err(self.err(start, "unterminated string: missing closing `\"`"));
                }
                Some(b'"') => break,
                Some(b'\n') => {
                    return Err(self.err(
                        start,
                        "unterminated string: newline before the closing `\"`",
                    ));
                }
                Some(b'\\') => i += self.escape(start, i, &mut out)?,
                Some(&b) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        self.pos = i + 1;
        String::from_utf8(out).map_err(|_| {
            self.err(
                start,
                "string is not valid UTF-8 once its escapes are decoded",
            )
        })
    }

    /// Decodes the escape sequence at `at` (a backslash) into `out`; returns its length.
    fn escape(
        &self,
        string_start: usize,
        at: usize,
        out: &mut Vec<u8>,
    ) -> Result<usize, RuleError> {
        let Some(c) = self.src[at + 1..].chars().next() else {
            return Err(self.err(string_start, "unterminated string: missing closing `\"`"));
        };
        let simple = match c {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            '"' => Some(b'"'),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            return Ok(2);
        }
        let (first, digits, radix) = match c {
            '0'..='7' => (at + 1, 3, 8),
            'x' => (at + 2, 2, 16),
            'u' => (at + 2, 4, 16),
            'U' => (at + 2, 8, 16),
            _ => return Err(self.err(at, format!("unknown escape sequence `\\{c}`"))),
        };
        let value = self
            .src
            .get(first..first + digits)
            .filter(|d| d.chars().all(|c| c.is_digit(radix)))
            .and_then(|d| u32::from_str_radix(d, radix).ok())
            .ok_or_else(|| {
                self.err(
                    at,
                    format!("escape sequence `\\{c}` needs {digits} base-{radix} digits"),
                )
            })?;
        match c {
            '0'..='7' | 'x' => {
                let byte = u8::try_from(value).map_err(|_| {
                    self.err(at, format!("octal escape value {value} is above 255"))
                })?;
                out.push(byte);
            }
            _ => {
                let ch = char::from_u32(value).ok_or_else(|| {
                    self.err(
                        at,
                        format!("escape sequence is not a valid Unicode code point: {value:#x}"),
                    )
                })?;
                out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
            }
        }
        Ok(first + digits - at)
    }
}

struct Parser<'s> {
    src: &'s str,
    lexer: Lexer<'s>,
    peeked: Option<Token<'s>>,
    depth: usize,
}

impl<'s> Parser<'s> {
    fn err(&self, at: usize, message: impl Into<String>) -> RuleError {
        RuleError::at(self.src, at, message)
    }

    fn next(&mut self) -> Result<Token<'s>, RuleError> {
        match self.peeked.take() {
            Some(token) => Ok(token),
            None => self.lexer.next_token(),
        }
    }

    fn peek(&mut self) -> Result<&Token<'s>, RuleError> {
        let token = self.next()?;
        Ok(self.peeked.insert(token))
    }

    fn parse_or(&mut self) -> Result<Node, RuleError> {
        let mut nodes = vec![self.parse_and()?];
        while matches!(self.peek()?.tok, Tok::Or) {
            self.next()?;
            nodes.push(self.parse_and()?);
        }
        Ok(Node::any(nodes))
    }

    fn parse_and(&mut self) -> Result<Node, RuleError> {
        let mut nodes = vec![self.parse_unary()?];
        while matches!(self.peek()?.tok, Tok::And) {
            self.next()?;
            nodes.push(self.parse_unary()?);
        }
        Ok(Node::all(nodes))
    }

    fn enter(&mut self, at: usize) -> Result<(), RuleError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(
                at,
                format!("rule nests `(` and `!` more than {MAX_DEPTH} deep"),
            ));
        }
        Ok(())
    }

    fn parse_unary(&mut self) -> Result<Node, RuleError> {
        let token = self.next()?;
        match token.tok {
            Tok::Not => {
                self.enter(token.start)?;
                let node = self.parse_unary()?;
                self.depth -= 1;
                Ok(node.negate())
            }
            Tok::LParen => {
                self.enter(token.start)?;
                let node = self.parse_or()?;
                self.depth -= 1;
                let close = self.next()?;
                match close.tok {
                    Tok::RParen => Ok(node),
                    Tok::Eof => Err(self.err(token.start, "unclosed `(`: missing `)`")),
                    other => Err(self.err(
                        close.start,
                        format!("expected `&&`, `||` or `)`, found {}", other.describe()),
                    )),
                }
            }
            Tok::Ident(name) => self.parse_call(name, token.start),
            Tok::Eof => Err(self.err(
                token.start,
                "unexpected end of the rule: expected a matcher, `!` or `(`",
            )),
            other => Err(self.err(
                token.start,
                format!("expected a matcher, `!` or `(`, found {}", other.describe()),
            )),
        }
    }

    fn parse_call(&mut self, name: &str, start: usize) -> Result<Node, RuleError> {
        let kind = Kind::lookup(name).ok_or_else(|| self.err(start, unknown_matcher(name)))?;
        let open = self.next()?;
        if !matches!(open.tok, Tok::LParen) {
            return Err(self.err(
                open.start,
                format!(
                    "expected `(` after `{}`, found {}",
                    kind.name(),
                    open.tok.describe()
                ),
            ));
        }
        let unclosed = |p: &Self| {
            p.err(
                open.start,
                format!("unclosed `(` of `{}`: missing `)`", kind.name()),
            )
        };
        let mut args = Vec::new();
        loop {
            let token = self.next()?;
            match token.tok {
                Tok::RParen => break,
                Tok::Str(value) => args.push(Arg {
                    value,
                    start: token.start,
                }),
                Tok::Eof => return Err(unclosed(self)),
                other => {
                    return Err(self.err(
                        token.start,
                        format!(
                            "arguments of `{}` must be strings in backticks or double quotes, found {}",
                            kind.name(),
                            other.describe()
                        ),
                    ));
                }
            }
            let separator = self.next()?;
            match separator.tok {
                Tok::Comma => {}
                Tok::RParen => break,
                Tok::Eof => return Err(unclosed(self)),
                other => {
                    return Err(self.err(
                        separator.start,
                        format!(
                            "expected `,` or `)` after an argument of `{}`, found {}",
                            kind.name(),
                            other.describe()
                        ),
                    ));
                }
            }
        }
        let matcher = kind.build(self.src, start, args)?;
        Ok(Node::Leaf {
            negated: false,
            matcher,
        })
    }
}

struct Arg {
    value: String,
    /// Byte offset of the opening quote.
    start: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ClientIp,
    Method,
    Host,
    HostRegexp,
    Path,
    PathRegexp,
    PathPrefix,
    Header,
    HeaderRegexp,
    Query,
    QueryRegexp,
}

const KINDS: [Kind; 11] = [
    Kind::ClientIp,
    Kind::Method,
    Kind::Host,
    Kind::HostRegexp,
    Kind::Path,
    Kind::PathRegexp,
    Kind::PathPrefix,
    Kind::Header,
    Kind::HeaderRegexp,
    Kind::Query,
    Kind::QueryRegexp,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ClientIp => "ClientIP",
            Kind::Method => "Method",
            Kind::Host => "Host",
            Kind::HostRegexp => "HostRegexp",
            Kind::Path => "Path",
            Kind::PathRegexp => "PathRegexp",
            Kind::PathPrefix => "PathPrefix",
            Kind::Header => "Header",
            Kind::HeaderRegexp => "HeaderRegexp",
            Kind::Query => "Query",
            Kind::QueryRegexp => "QueryRegexp",
        }
    }

    /// Traefik registers each matcher under its name, in lower case, in upper case and
    /// capitalised (`PathPrefix`, `pathprefix`, `PATHPREFIX`, `Pathprefix`): not `pathPrefix`.
    fn lookup(name: &str) -> Option<Kind> {
        let capitalised = |s: &str| {
            let mut bytes = s.bytes();
            bytes.next().is_some_and(|b| !b.is_ascii_lowercase())
                && bytes.all(|b| !b.is_ascii_uppercase())
        };
        KINDS.into_iter().find(|kind| {
            let canonical = kind.name();
            name.eq_ignore_ascii_case(canonical)
                && (name == canonical
                    || name.bytes().all(|b| !b.is_ascii_uppercase())
                    || name.bytes().all(|b| !b.is_ascii_lowercase())
                    || capitalised(name))
        })
    }

    /// Accepted argument counts (Traefik's `expectNParameters`).
    fn arity(self) -> (usize, usize) {
        match self {
            Kind::Header | Kind::HeaderRegexp => (2, 2),
            Kind::Query | Kind::QueryRegexp => (1, 2),
            _ => (1, 1),
        }
    }

    fn build(self, src: &str, start: usize, args: Vec<Arg>) -> Result<Matcher, RuleError> {
        let name = self.name();
        let err = |at: usize, message: String| RuleError::at(src, at, message);
        let (min, max) = self.arity();
        if args.len() < min || args.len() > max {
            let expected = match (min, max) {
                (1, 1) => "1 argument".to_owned(),
                (n, m) if n == m => format!("{n} arguments"),
                (n, m) => format!("{n} or {m} arguments"),
            };
            return Err(err(
                start,
                format!("`{name}` takes {expected}, got {}", args.len()),
            ));
        }
        // Traefik's CheckRule: no argument may be empty.
        if let Some(arg) = args.iter().find(|a| a.value.is_empty()) {
            return Err(err(arg.start, format!("empty argument to `{name}`")));
        }
        let mut args = args.into_iter();
        let mut arg = move || {
            args.next().unwrap_or(Arg {
                value: String::new(),
                start,
            })
        };
        let first = arg();
        let regex = |arg: &Arg| compile_regex(src, name, arg);
        Ok(match self {
            Kind::Host | Kind::HostRegexp if !first.value.is_ascii() => {
                return Err(err(
                    first.start,
                    format!(
                        "`{name}` value must be ASCII: write internationalised domain names in punycode"
                    ),
                ));
            }
            Kind::Host => Matcher::Host(first.value.to_ascii_lowercase()),
            Kind::HostRegexp => {
                let re = regex(&first)?;
                let matches_empty = re.is_match(b"");
                Matcher::HostRegexp { re, matches_empty }
            }
            Kind::Path | Kind::PathPrefix if !first.value.starts_with('/') => {
                return Err(err(
                    first.start,
                    format!("`{name}` value must start with `/`"),
                ));
            }
            Kind::Path => Matcher::Path(first.value),
            Kind::PathPrefix => Matcher::PathPrefix(first.value),
            Kind::PathRegexp => Matcher::PathRegexp(regex(&first)?),
            Kind::Method => Matcher::Method(first.value.to_uppercase()),
            Kind::Header => Matcher::Header {
                name: header_name(src, name, &first)?,
                value: arg().value,
            },
            Kind::HeaderRegexp => Matcher::HeaderRegexp {
                name: header_name(src, name, &first)?,
                re: regex(&arg())?,
            },
            Kind::Query => Matcher::Query {
                key: first.value,
                value: arg().value,
            },
            Kind::QueryRegexp => {
                let second = arg();
                if second.value.is_empty() {
                    // With one argument, Traefik's QueryRegexp is Query.
                    Matcher::Query {
                        key: first.value,
                        value: String::new(),
                    }
                } else {
                    Matcher::QueryRegexp {
                        key: first.value,
                        re: regex(&second)?,
                    }
                }
            }
            Kind::ClientIp => {
                let (first_ip, last_ip) = parse_ip_range(&first.value).ok_or_else(|| {
                    err(
                        first.start,
                        format!("invalid IP address or CIDR `{}` in `{name}`", first.value),
                    )
                })?;
                Matcher::ClientIp {
                    first: first_ip,
                    last: last_ip,
                }
            }
        })
    }
}

fn unknown_matcher(name: &str) -> String {
    if let Some(kind) = KINDS.iter().find(|k| k.name().eq_ignore_ascii_case(name)) {
        return format!(
            "unknown matcher `{name}`: matcher names are case-sensitive, did you mean `{}`?",
            kind.name()
        );
    }
    let closest = KINDS
        .iter()
        .map(|k| {
            (
                edit_distance(&name.to_ascii_lowercase(), &k.name().to_ascii_lowercase()),
                k,
            )
        })
        .min_by_key(|(d, _)| *d);
    match closest {
        Some((d, kind)) if d <= 2 => {
            format!("unknown matcher `{name}` (did you mean `{}`?)", kind.name())
        }
        _ => format!(
            "unknown matcher `{name}` (the matchers are {})",
            KINDS.map(Kind::name).join(", ")
        ),
    }
}

/// Levenshtein distance, for suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// Compiles a Go (RE2) regexp. Rust's `regex` is RE2's dialect too, unanchored like Go's
/// `MatchString`; it differs in that `\d`, `\w`, `\s` and `\b` are Unicode-aware (ASCII in Go),
/// and in rejecting a `{` that does not start a repetition (Go takes it literally).
fn compile_regex(src: &str, matcher: &str, arg: &Arg) -> Result<Regex, RuleError> {
    Regex::new(&arg.value).map_err(|e| {
        let text = e.to_string();
        let detail = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("error: "))
            .map_or_else(|| text.replace('\n', " "), str::to_owned);
        let hint = if looks_like_v2_regexp(&arg.value) {
            " (`{name:regexp}` is Traefik v2 syntax: v3 takes a plain Go regexp)"
        } else {
            ""
        };
        RuleError::at(
            src,
            arg.start,
            format!("invalid regular expression in `{matcher}`: {detail}{hint}"),
        )
    })
}

/// Whether `pattern` contains a v2-style `{name:regexp}` variable.
fn looks_like_v2_regexp(pattern: &str) -> bool {
    pattern.match_indices('{').any(|(i, _)| {
        let rest = &pattern[i + 1..];
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        name_len > 0 && rest[name_len..].starts_with(':')
    })
}

fn header_name(src: &str, matcher: &str, arg: &Arg) -> Result<HeaderName, RuleError> {
    HeaderName::from_bytes(arg.value.as_bytes()).map_err(|_| {
        RuleError::at(
            src,
            arg.start,
            format!("invalid header name `{}` in `{matcher}`", arg.value),
        )
    })
}

/// An IP address or a CIDR as the inclusive range of (canonical) addresses it covers, as
/// Traefik's `ip.Checker` does: IPv4-mapped IPv6 bounds become IPv4, zones are ignored.
fn parse_ip_range(s: &str) -> Option<(IpAddr, IpAddr)> {
    let parse_addr = |a: &str| -> Option<IpAddr> { a.parse().ok() };
    if !s.contains('/') {
        // Go's netip.ParseAddr accepts an IPv6 zone (`fe80::1%eth0`); the checker drops it.
        let addr = match s.split_once('%') {
            Some((addr, zone)) if addr.contains(':') && !zone.is_empty() => addr,
            _ => s,
        };
        let ip = parse_addr(addr)?.to_canonical();
        return Some((ip, ip));
    }
    let (addr, bits) = s.split_once('/')?;
    let ip = parse_addr(addr)?;
    let valid_bits = !bits.is_empty()
        && bits.len() <= 3
        && bits.bytes().all(|b| b.is_ascii_digit())
        && (bits == "0" || !bits.starts_with('0'));
    if !valid_bits {
        return None;
    }
    let net = ipnet::IpNet::new(ip, bits.parse().ok()?).ok()?;
    Some((net.network().to_canonical(), net.broadcast().to_canonical()))
}
