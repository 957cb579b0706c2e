//! Table-driven tests of the rule engine: every matcher both ways, precedence, errors with their
//! columns, priorities, host indexing, and garbage input.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{RouteInput, Rule, RuleError, host_lookup_key};

/// A request to match rules against; defaults to `GET http://example.com/` from 192.0.2.1.
#[derive(Clone)]
struct Req {
    host: String,
    path: String,
    query: Option<String>,
    method: Method,
    headers: HeaderMap,
    ip: IpAddr,
}

fn req() -> Req {
    Req {
        host: "example.com".to_owned(),
        path: "/".to_owned(),
        query: None,
        method: Method::GET,
        headers: HeaderMap::new(),
        ip: ip("192.0.2.1"),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("bad test IP {s}: {e}"))
}

impl Req {
    fn host(mut self, host: impl Into<String>) -> Req {
        self.host = host.into();
        self
    }
    fn path(mut self, path: impl Into<String>) -> Req {
        self.path = path.into();
        self
    }
    fn query(mut self, query: &str) -> Req {
        self.query = Some(query.to_owned());
        self
    }
    fn method(mut self, method: &str) -> Req {
        self.method = Method::from_bytes(method.as_bytes()).expect("test method");
        self
    }
    fn header(mut self, name: &str, value: &str) -> Req {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("test header name");
        let value = HeaderValue::from_str(value).expect("test header value");
        self.headers.append(name, value);
        self
    }
    fn ip(mut self, addr: &str) -> Req {
        self.ip = ip(addr);
        self
    }
    fn input(&self) -> RouteInput<'_> {
        RouteInput {
            host: &self.host,
            path: &self.path,
            query: self.query.as_deref(),
            method: &self.method,
            headers: &self.headers,
            client_ip: self.ip,
        }
    }
}

fn parse(src: &str) -> Rule {
    Rule::parse(src).unwrap_or_else(|e| panic!("rule should parse: {e}"))
}

/// Runs `(rule, request, expected)` cases and reports every failing one at once.
fn check(cases: Vec<(&str, Req, bool)>) {
    let failures: Vec<String> = cases
        .iter()
        .filter(|(src, req, expected)| parse(src).matches(&req.input()) != *expected)
        .map(|(src, req, expected)| {
            format!(
                "{src} on host={:?} path={:?} query={:?} method={} headers={:?} ip={}: expected {expected}",
                req.host, req.path, req.query, req.method, req.headers, req.ip
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
#[rustfmt::skip]
fn host() {
    check(vec![
        ("Host(`example.com`)", req(), true),
        ("Host(`example.com`)", req().host("EXAMPLE.Com"), true),
        ("Host(`EXAMPLE.com`)", req().host("example.com"), true),
        ("Host(`example.com`)", req().host(" example.com "), true),
        ("Host(`example.com`)", req().host("www.example.com"), false),
        ("Host(`example.com`)", req().host("example.co"), false),
        ("Host(`example.com`)", req().host("example.comm"), false),
        ("Host(`example.com`)", req().host(""), false),
        // A trailing dot on either side is ignored, once.
        ("Host(`example.com`)", req().host("example.com."), true),
        ("Host(`example.com.`)", req().host("example.com"), true),
        ("Host(`example.com.`)", req().host("example.com."), true),
        ("Host(`example.com.`)", req().host("example.com.."), true),
        ("Host(`example.com`)", req().host("example.com.."), false),
        // IPv6 literals are matched without their brackets.
        ("Host(`::1`)", req().host("[::1]"), true),
        ("Host(`10.0.0.1`)", req().host("10.0.0.1"), true),
        // Wildcards: `*.` one label, `**.` one or more, neither the apex.
        ("Host(`*.example.com`)", req().host("a.example.com"), true),
        ("Host(`*.example.com`)", req().host("A.Example.COM"), true),
        ("Host(`*.example.com`)", req().host("a.example.com."), true),
        ("Host(`*.example.com`)", req().host("a.b.example.com"), false),
        ("Host(`*.example.com`)", req().host("example.com"), false),
        ("Host(`*.example.com`)", req().host("a.example.org"), false),
        ("Host(`**.example.com`)", req().host("a.example.com"), true),
        ("Host(`**.example.com`)", req().host("a.B.example.COM"), true),
        ("Host(`**.example.com`)", req().host("example.com"), false),
        ("Host(`**.example.com`)", req().host(".example.com"), false),
        ("Host(`**.example.com`)", req().host("aexample.com"), false),
        ("Host(`*`)", req().host("localhost"), true),
        ("Host(`*`)", req().host("a.b"), false),
    ]);
}

#[test]
#[rustfmt::skip]
fn host_regexp() {
    let long_upper = format!("{}.COM", "A".repeat(300));
    check(vec![
        // Unanchored, like Go's MatchString.
        ("HostRegexp(`example`)", req().host("www.example.com"), true),
        ("HostRegexp(`^example\\.com$`)", req().host("www.example.com"), false),
        ("HostRegexp(`^example\\.com$`)", req().host("example.org"), false),
        // Matched against the lowercased host, so it is case-insensitive for lowercase regexps...
        ("HostRegexp(`^example\\.com$`)", req().host("EXAMPLE.COM"), true),
        ("HostRegexp(`^[a-z]+\\.example\\.com$`)", req().host("API.example.com"), true),
        ("HostRegexp(`^[^A-Z]+$`)", req().host("API.example.com"), true),
        // ...and an upper-case literal never matches, unless the regexp says (?i).
        ("HostRegexp(`^EXAMPLE\\.com$`)", req().host("EXAMPLE.com"), false),
        ("HostRegexp(`(?i)^EXAMPLE\\.com$`)", req().host("example.com"), true),
        // Traefik also tries the (empty) CNAME-flattened host: a regexp matching "" matches all.
        ("HostRegexp(`^(foo\\.com)?$`)", req().host("bar.com"), true),
        ("HostRegexp(`.+`)", req().host(""), false),
        ("HostRegexp(`.+`)", req().host("x"), true),
        // A host too long for the stack buffer is still lowercased.
        ("HostRegexp(`^a+\\.com$`)", req().host(long_upper), true),
    ]);
}

#[test]
#[rustfmt::skip]
fn path_and_prefix() {
    check(vec![
        ("Path(`/products`)", req().path("/products"), true),
        ("Path(`/products`)", req().path("/products/"), false),
        ("Path(`/products`)", req().path("/products/shoes"), false),
        ("Path(`/products`)", req().path("/Products"), false),
        ("Path(`/products`)", req().path("/product"), false),
        ("PathPrefix(`/products`)", req().path("/products"), true),
        ("PathPrefix(`/products`)", req().path("/products/shoes"), true),
        ("PathPrefix(`/products`)", req().path("/products-for-sale"), true),
        ("PathPrefix(`/products`)", req().path("/product"), false),
        ("PathPrefix(`/products`)", req().path("/"), false),
        ("PathPrefix(`/`)", req().path("/anything"), true),
    ]);
}

#[test]
#[rustfmt::skip]
fn path_regexp() {
    check(vec![
        ("PathRegexp(`\\.(jpeg|jpg|png)$`)", req().path("/a/b.png"), true),
        ("PathRegexp(`\\.(jpeg|jpg|png)$`)", req().path("/a/b.png/c"), false),
        // Unanchored unless the regexp anchors itself.
        ("PathRegexp(`products`)", req().path("/shop/products/1"), true),
        ("PathRegexp(`^/products`)", req().path("/shop/products"), false),
        ("PathRegexp(`^/products/(shoes|socks)/[0-9]+$`)", req().path("/products/shoes/31"), true),
        ("PathRegexp(`^/products/(shoes|socks)/[0-9]+$`)", req().path("/products/hats/31"), false),
        ("PathRegexp(`(?i)^/products`)", req().path("/PRODUCTS/x"), true),
        ("PathRegexp(`^/products`)", req().path("/PRODUCTS/x"), false),
    ]);
}

#[test]
#[rustfmt::skip]
fn routing_path_decodes_unreserved_escapes_only() {
    let long = format!("/x%41{}", "y".repeat(3000));
    check(vec![
        ("Path(`/foo bar`)", req().path("/foo%20bar"), true),
        ("Path(`/foo%20bar`)", req().path("/foo%20bar"), false),
        ("PathPrefix(`/café`)", req().path("/caf%C3%A9/menu"), true),
        ("PathPrefix(`/api`)", req().path("/%61pi/x"), true),
        ("PathRegexp(`^/a b$`)", req().path("/a%20b"), true),
        // Reserved characters stay encoded: an encoded slash is not a path separator...
        ("Path(`/a/b`)", req().path("/a%2Fb"), false),
        ("Path(`/a%2Fb`)", req().path("/a%2Fb"), true),
        // ...whatever the case of its hex digits (normalised to upper case).
        ("Path(`/a/b`)", req().path("/a%2fb"), false),
        ("Path(`/a%2Fb`)", req().path("/a%2fb"), true),
        ("Path(`/a%25b`)", req().path("/a%25b"), true),
        ("Path(`/a%b`)", req().path("/a%25b"), false),
        ("Path(`/a?b`)", req().path("/a%3Fb"), false),
        // Malformed escapes are left alone.
        ("Path(`/a%zz`)", req().path("/a%zz"), true),
        ("Path(`/a%`)", req().path("/a%"), true),
        // A path longer than the stack buffer is decoded too.
        ("PathPrefix(`/xAyyy`)", req().path(long), true),
    ]);
}

#[test]
#[rustfmt::skip]
fn method() {
    check(vec![
        ("Method(`GET`)", req(), true),
        ("Method(`get`)", req(), true),
        ("Method(`POST`)", req(), false),
        ("Method(`OPTIONS`)", req().method("OPTIONS"), true),
        // The rule value is upper-cased, the request method is compared as sent.
        ("Method(`PURGE`)", req().method("PURGE"), true),
        ("Method(`purge`)", req().method("purge"), false),
    ]);
}

#[test]
#[rustfmt::skip]
fn header() {
    check(vec![
        ("Header(`X-Foo`, `bar`)", req().header("x-foo", "bar"), true),
        ("Header(`x-foo`, `bar`)", req().header("X-FOO", "bar"), true),
        ("Header(`X-FOO`, `bar`)", req().header("x-Foo", "bar"), true),
        ("Header(`X-Foo`, `bar`)", req(), false),
        ("Header(`X-Foo`, `bar`)", req().header("x-other", "bar"), false),
        // Values are compared exactly, one header line at a time.
        ("Header(`X-Foo`, `Bar`)", req().header("x-foo", "bar"), false),
        ("Header(`X-Foo`, `bar`)", req().header("x-foo", "bar, baz"), false),
        ("Header(`X-Foo`, `baz`)", req().header("x-foo", "bar").header("x-foo", "baz"), true),
        ("HeaderRegexp(`Content-Type`, `^application/(json|yaml)$`)", req().header("content-type", "application/yaml"), true),
        ("HeaderRegexp(`Content-Type`, `^application/(json|yaml)$`)", req().header("content-type", "application/xml"), false),
        ("HeaderRegexp(`content-type`, `(?i)^application/json$`)", req().header("Content-Type", "Application/JSON"), true),
        ("HeaderRegexp(`X-Foo`, `ar`)", req().header("x-foo", "bar"), true),
        ("HeaderRegexp(`X-Foo`, `^z`)", req().header("x-foo", "bar").header("x-foo", "zed"), true),
        ("HeaderRegexp(`X-Foo`, `.*`)", req(), false),
        // Go takes Host out of the header map: Traefik's header matchers never see it.
        ("Header(`Host`, `example.com`)", req().header("host", "example.com"), false),
        ("HeaderRegexp(`Host`, `.*`)", req().header("host", "example.com"), false),
    ]);
}

#[test]
#[rustfmt::skip]
fn query() {
    check(vec![
        ("Query(`mobile`, `true`)", req().query("mobile=true"), true),
        ("Query(`mobile`, `true`)", req().query("a=1&mobile=true&b=2"), true),
        ("Query(`mobile`, `true`)", req().query("mobile=false"), false),
        ("Query(`mobile`, `true`)", req().query("Mobile=true"), false),
        ("Query(`mobile`, `true`)", req().query("mobile=TRUE"), false),
        ("Query(`mobile`, `true`)", req(), false),
        ("Query(`mobile`, `true`)", req().query(""), false),
        // Repeated keys: any of the values.
        ("Query(`mobile`, `true`)", req().query("mobile=false&mobile=true"), true),
        ("Query(`mobile`, `false`)", req().query("mobile=false&mobile=true"), true),
        // One argument: the key with an empty value, not the key with any value.
        ("Query(`mobile`)", req().query("mobile"), true),
        ("Query(`mobile`)", req().query("mobile="), true),
        ("Query(`mobile`)", req().query("a=1&mobile"), true),
        ("Query(`mobile`)", req().query("mobile=true"), false),
        ("Query(`mobile`)", req().query("mobile=true&mobile"), true),
        ("Query(`mobile`)", req().query("mobiles"), false),
        // Decoded as Go's url.ParseQuery decodes: `+` and percent escapes.
        ("Query(`q`, `a b`)", req().query("q=a+b"), true),
        ("Query(`q`, `a b`)", req().query("q=a%20b"), true),
        ("Query(`q`, `a+b`)", req().query("q=a%2Bb"), true),
        ("Query(`q`, `a+b`)", req().query("q=a+b"), false),
        ("Query(`a b`, `1`)", req().query("a+b=1"), true),
        ("Query(`k`, `é`)", req().query("%6b=%C3%A9"), true),
        ("Query(`q`, `=x`)", req().query("q==x"), true),
        // Parts with `;` and parts with malformed escapes are dropped, as Go drops them.
        ("Query(`q`, `x`)", req().query("q=x;y=1"), false),
        ("Query(`q`, `x`)", req().query("y=1;&q=x"), true),
        ("Query(`q`, `x;y`)", req().query("q=x;y"), false),
        ("QueryRegexp(`q`, `x`)", req().query("q=x;y"), false),
        ("Query(`q`, `x`)", req().query("q=%zz&q=x"), true),
        ("Query(`q`, `x`)", req().query("q=x%"), false),
        ("Query(`q`)", req().query("q=%zz"), false),
        ("Query(`q`)", req().query("q=%zz&&q"), true),
    ]);
}

#[test]
#[rustfmt::skip]
fn query_regexp() {
    check(vec![
        ("QueryRegexp(`mobile`, `^(true|yes)$`)", req().query("mobile=yes"), true),
        ("QueryRegexp(`mobile`, `^(true|yes)$`)", req().query("mobile=no"), false),
        ("QueryRegexp(`mobile`, `^(true|yes)$`)", req().query("mobile=no&mobile=yes"), true),
        ("QueryRegexp(`mobile`, `^(true|yes)$`)", req().query("other=yes"), false),
        ("QueryRegexp(`mobile`, `(?i)^(true|yes)$`)", req().query("mobile=YES"), true),
        ("QueryRegexp(`mobile`, `^.*$`)", req().query("mobile="), true),
        ("QueryRegexp(`mobile`, `^.*$`)", req().query("mobile"), true),
        ("QueryRegexp(`mobile`, `^.*$`)", req().query("other"), false),
        ("QueryRegexp(`mobile`, `ru`)", req().query("mobile=true"), true),
        ("QueryRegexp(`q`, `^a b$`)", req().query("q=a+b"), true),
        ("QueryRegexp(`q`, `^a b$`)", req().query("q=a%20b"), true),
        ("QueryRegexp(`q`, `^a`)", req().query("q=a%2"), false),
        ("QueryRegexp(`q`, `^x+$`)", req().query(&format!("q={}", "%78".repeat(400))), true),
        // One argument: like Query with one argument.
        ("QueryRegexp(`mobile`)", req().query("mobile"), true),
        ("QueryRegexp(`mobile`)", req().query("mobile=1"), false),
    ]);
}

#[test]
#[rustfmt::skip]
fn client_ip() {
    check(vec![
        ("ClientIP(`10.76.105.11`)", req().ip("10.76.105.11"), true),
        ("ClientIP(`10.76.105.11`)", req().ip("10.76.105.12"), false),
        ("ClientIP(`192.168.1.0/24`)", req().ip("192.168.1.200"), true),
        ("ClientIP(`192.168.1.0/24`)", req().ip("192.168.2.1"), false),
        // Host bits in a CIDR are ignored.
        ("ClientIP(`192.168.1.7/24`)", req().ip("192.168.1.200"), true),
        ("ClientIP(`10.0.0.1/32`)", req().ip("10.0.0.1"), true),
        ("ClientIP(`10.0.0.1/32`)", req().ip("10.0.0.2"), false),
        ("ClientIP(`0.0.0.0/0`)", req().ip("203.0.113.9"), true),
        ("ClientIP(`0.0.0.0/0`)", req().ip("2001:db8::1"), false),
        // IPv4-mapped IPv6 is IPv4, on either side.
        ("ClientIP(`192.168.1.0/24`)", req().ip("::ffff:192.168.1.5"), true),
        ("ClientIP(`::ffff:192.168.1.5`)", req().ip("192.168.1.5"), true),
        ("ClientIP(`::ffff:192.168.1.0/120`)", req().ip("192.168.1.9"), true),
        ("ClientIP(`::ffff:192.168.1.0/120`)", req().ip("192.168.2.9"), false),
        ("ClientIP(`::1`)", req().ip("::1"), true),
        ("ClientIP(`::1`)", req().ip("127.0.0.1"), false),
        ("ClientIP(`fe80::/10`)", req().ip("fe80::1234"), true),
        ("ClientIP(`fe80::/10`)", req().ip("fec0::1"), false),
        ("ClientIP(`2001:db8::/32`)", req().ip("2001:db8:ffff::1"), true),
        ("ClientIP(`2001:db8::/32`)", req().ip("2001:db9::1"), false),
        ("ClientIP(`::/0`)", req().ip("2001:db9::1"), true),
        ("ClientIP(`::/0`)", req().ip("10.0.0.1"), false),
        // A zone is ignored.
        ("ClientIP(`fe80::1%eth0`)", req().ip("fe80::1"), true),
    ]);
}

#[test]
fn matcher_name_spellings() {
    check(vec![
        ("host(`example.com`)", req(), true),
        ("HOST(`example.com`)", req(), true),
        ("pathprefix(`/`)", req(), true),
        ("PATHPREFIX(`/`)", req(), true),
        ("Pathprefix(`/`)", req(), true),
        ("clientip(`192.0.2.1`)", req(), true),
        ("Clientip(`192.0.2.1`)", req(), true),
        ("HOSTREGEXP(`example`)", req(), true),
    ]);
    for src in [
        "pathPrefix(`/`)",
        "HoSt(`a`)",
        "hostRegexp(`a`)",
        "ClientIp(`::1`)",
    ] {
        let err = Rule::parse(src).expect_err(src);
        assert!(err.message.contains("case-sensitive"), "{src}: {err}");
    }
}

#[test]
#[rustfmt::skip]
fn string_literals_and_whitespace() {
    check(vec![
        ("Host(\"example.com\")", req(), true),
        ("Host(`example.com`,)", req(), true),
        ("Header(`X-Foo`, `bar`,)", req().header("x-foo", "bar"), true),
        ("  Host(`example.com`)\n&&\tPath(`/`) ", req(), true),
        ("Host(`example.com`)\n&& Path(`/`)", req(), true),
        ("Host(`exam\rple.com`)", req(), true),
        ("Path(\"/a\\tb\")", req().path("/a%09b"), true),
        ("Path(\"/\\x41\")", req().path("/A"), true),
        ("Path(\"/\\101\")", req().path("/A"), true),
        ("Path(\"/\\u00e9\")", req().path("/%C3%A9"), true),
        ("Path(\"/\\U0001F600\")", req().path("/%F0%9F%98%80"), true),
        ("Path(\"/\\\"q\\\"\")", req().path("/%22q%22"), true),
        ("Path(\"/a\\\\b\")", req().path("/a%5Cb"), true),
        ("Path(`/a\\tb`)", req().path("/a%5Ctb"), true),
        ("Path(`/a\"b`)", req().path("/a%22b"), true),
        ("Query(\"q\", `a`)", req().query("q=a"), true),
    ]);
}

#[test]
#[rustfmt::skip]
fn precedence() {
    // A = Host a.com, B = Host b.com, C = Path /c.
    let on = |host: &str, path: &str| req().host(host).path(path);
    check(vec![
        // `&&` binds tighter than `||`: A || (B && C).
        ("Host(`a.com`) || Host(`b.com`) && Path(`/c`)", on("a.com", "/x"), true),
        ("Host(`a.com`) || Host(`b.com`) && Path(`/c`)", on("b.com", "/x"), false),
        ("Host(`a.com`) || Host(`b.com`) && Path(`/c`)", on("b.com", "/c"), true),
        ("(Host(`a.com`) || Host(`b.com`)) && Path(`/c`)", on("a.com", "/x"), false),
        ("(Host(`a.com`) || Host(`b.com`)) && Path(`/c`)", on("b.com", "/c"), true),
        // (A && B) || C.
        ("Host(`a.com`) && Host(`b.com`) || Path(`/c`)", on("x.com", "/c"), true),
        ("Host(`a.com`) && Host(`b.com`) || Path(`/c`)", on("a.com", "/x"), false),
        // `!` binds tightest: (!A) && C.
        ("!Host(`a.com`) && Path(`/c`)", on("a.com", "/c"), false),
        ("!Host(`a.com`) && Path(`/c`)", on("b.com", "/c"), true),
        ("!Host(`a.com`) && Path(`/c`)", on("b.com", "/x"), false),
        ("!Host(`a.com`) || Path(`/c`)", on("a.com", "/c"), true),
        ("!Host(`a.com`) || Path(`/c`)", on("a.com", "/x"), false),
        // Negated groups.
        ("!(Host(`a.com`) || Path(`/c`))", on("b.com", "/x"), true),
        ("!(Host(`a.com`) || Path(`/c`))", on("a.com", "/x"), false),
        ("!(Host(`a.com`) || Path(`/c`))", on("b.com", "/c"), false),
        ("!(Host(`a.com`) && Path(`/c`))", on("a.com", "/x"), true),
        ("!(Host(`a.com`) && Path(`/c`))", on("a.com", "/c"), false),
        ("!!Host(`a.com`)", on("a.com", "/"), true),
        ("!!Host(`a.com`)", on("b.com", "/"), false),
        ("! ! !Host(`a.com`)", on("a.com", "/"), false),
        ("!(!Host(`a.com`) || !Path(`/c`))", on("a.com", "/c"), true),
        ("!(!Host(`a.com`) || !Path(`/c`))", on("a.com", "/x"), false),
        // Nested parentheses.
        ("((Host(`a.com`))) && ((Path(`/c`)))", on("a.com", "/c"), true),
        ("(Host(`a.com`) && (Path(`/c`) || (Path(`/d`) && !Path(`/e`))))", on("a.com", "/d"), true),
        ("(Host(`a.com`) && (Path(`/c`) || (Path(`/d`) && !Path(`/e`))))", on("b.com", "/d"), false),
        ("Host(`a.com`) || Host(`b.com`) || Path(`/c`)", on("b.com", "/x"), true),
        ("Host(`a.com`) && Path(`/c`) && Method(`GET`)", on("a.com", "/c"), true),
        ("Host(`a.com`) && Path(`/c`) && Method(`POST`)", on("a.com", "/c"), false),
    ]);
}

#[test]
#[rustfmt::skip]
fn slow_path_with_upper_case_host_and_encoded_path() {
    check(vec![
        ("HostRegexp(`^api\\.`) && Path(`/a b`)", req().host("API.example.com").path("/a%20b"), true),
        ("HostRegexp(`^api\\.`) && Path(`/a b`)", req().host("WWW.example.com").path("/a%20b"), false),
        ("HostRegexp(`^api\\.`) && Path(`/a b`)", req().host("API.example.com").path("/a%2Fb"), false),
        ("Host(`API.example.com`) && Path(`/a b`)", req().host("api.EXAMPLE.com").path("/a%20b"), true),
    ]);
}

/// `(rule, expected message fragment, expected column)`.
#[test]
#[rustfmt::skip]
fn errors_name_the_problem_and_its_column() {
    let cases: Vec<(&str, &str, usize)> = vec![
        ("Hots(`a`)", "unknown matcher `Hots` (did you mean `Host`?)", 1),
        ("Host(`a`) && Pathprefx(`/`)", "unknown matcher `Pathprefx` (did you mean `PathPrefix`?)", 14),
        ("Host(`a`) && pathPrefix(`/`)", "did you mean `PathPrefix`?", 14),
        ("Frobnicate(`a`)", "unknown matcher `Frobnicate` (the matchers are ClientIP, Method", 1),
        ("HostHeader(`a`)", "unknown matcher `HostHeader`", 1),
        ("Host(`a`, `b`)", "`Host` takes 1 argument, got 2", 1),
        ("Host()", "`Host` takes 1 argument, got 0", 1),
        ("Path(`/`) || ClientIP(`::1`, `::2`)", "`ClientIP` takes 1 argument, got 2", 14),
        ("Header(`X-Foo`)", "`Header` takes 2 arguments, got 1", 1),
        ("HeaderRegexp(`a`, `b`, `c`)", "`HeaderRegexp` takes 2 arguments, got 3", 1),
        ("Query(`a`, `b`, `c`)", "`Query` takes 1 or 2 arguments, got 3", 1),
        ("QueryRegexp()", "`QueryRegexp` takes 1 or 2 arguments, got 0", 1),
        ("Host(`a)", "unterminated string: missing closing backtick", 6),
        ("Host(\"a)", "unterminated string: missing closing `\"`", 6),
        ("Host(\"a\\", "unterminated string", 6),
        ("Host(\"a\nb\")", "unterminated string: newline", 6),
        ("Host('a')", "single quotes are not accepted", 6),
        ("PathRegexp(`(a`)", "invalid regular expression in `PathRegexp`: unclosed group", 12),
        ("Host(`a`) && HeaderRegexp(`X`, `[z-a]`)", "invalid regular expression in `HeaderRegexp`", 32),
        ("QueryRegexp(`q`, `a{2,1}`)", "invalid regular expression in `QueryRegexp`", 18),
        ("HostRegexp(`{sub:[a-z]+}.example.com`)", "Traefik v2 syntax", 12),
        ("ClientIP(`10.0.0.0/33`)", "invalid IP address or CIDR `10.0.0.0/33` in `ClientIP`", 10),
        ("ClientIP(`10.0.0.300`)", "invalid IP address or CIDR", 10),
        ("ClientIP(`10.0.0.0/08`)", "invalid IP address or CIDR", 10),
        ("ClientIP(`10.0.0.0/`)", "invalid IP address or CIDR", 10),
        ("ClientIP(`010.0.0.1`)", "invalid IP address or CIDR", 10),
        ("ClientIP(`::1/129`)", "invalid IP address or CIDR", 10),
        ("ClientIP(`example.com`)", "invalid IP address or CIDR", 10),
        ("(Host(`a`)", "unclosed `(`: missing `)`", 1),
        ("Path(`/`) && ((Host(`a`) || Host(`b`))", "unclosed `(`: missing `)`", 14),
        ("Host(`a`))", "unexpected `)` without a matching `(`", 10),
        ("Host(`a`", "unclosed `(` of `Host`: missing `)`", 5),
        ("Host(`a`,", "unclosed `(` of `Host`: missing `)`", 5),
        ("(Host(`a`) Path(`/`))", "expected `&&`, `||` or `)`, found `Path`", 12),
        ("Host(`a`) Path(`/`)", "unexpected `Path` after a complete expression", 11),
        ("Host(`a`) and Path(`/`)", "unexpected `and` after a complete expression", 11),
        ("Host(`a`) ! Path(`/`)", "unexpected `!` after a complete expression", 11),
        ("Host(`a`) `b`", "unexpected a string after a complete expression", 11),
        ("Host(`a`) &&", "unexpected end of the rule", 13),
        ("Host(`a`) && !", "unexpected end of the rule", 15),
        ("Host(`a`) || && Path(`/`)", "expected a matcher, `!` or `(`, found `&&`", 14),
        ("&& Host(`a`)", "expected a matcher, `!` or `(`, found `&&`", 1),
        ("`a`", "expected a matcher, `!` or `(`, found a string", 1),
        ("()", "expected a matcher, `!` or `(`, found `)`", 2),
        ("Host(`a`) & Path(`/`)", "unexpected `&`: the AND operator is `&&`", 11),
        ("Host(`a`) | Path(`/`)", "unexpected `|`: the OR operator is `||`", 11),
        ("Host(`a`) == Host(`b`)", "unexpected character `=`", 11),
        ("", "empty rule", 1),
        ("  \n ", "empty rule", 1),
        ("Path(`a`)", "`Path` value must start with `/`", 6),
        ("PathPrefix(\"api\")", "`PathPrefix` value must start with `/`", 12),
        ("Host(``)", "empty argument to `Host`", 6),
        ("Query(`a`, ``)", "empty argument to `Query`", 12),
        ("Host(`é.com`)", "`Host` value must be ASCII", 6),
        ("HostRegexp(`^é`)", "`HostRegexp` value must be ASCII", 12),
        ("Header(`X Foo`, `v`)", "invalid header name `X Foo` in `Header`", 8),
        ("Host(1)", "arguments of `Host` must be strings in backticks or double quotes, found the number `1`", 6),
        ("Host(a)", "found `a`", 6),
        ("Host((`a`))", "found `(`", 6),
        ("Host", "expected `(` after `Host`, found the end of the rule", 5),
        ("Host `a`", "expected `(` after `Host`, found a string", 6),
        ("Host(`a` `b`)", "expected `,` or `)` after an argument of `Host`, found a string", 10),
        ("Host(,)", "found `,`", 6),
        ("Path(\"/\\q\")", "unknown escape sequence `\\q`", 8),
        ("Path(\"/\\'\")", "unknown escape sequence `\\'`", 8),
        ("Path(\"/\\400\")", "octal escape value 256 is above 255", 8),
        ("Path(\"/\\xZZ\")", "escape sequence `\\x` needs 2 base-16 digits", 8),
        ("Path(\"/\\u12\")", "escape sequence `\\u` needs 4 base-16 digits", 8),
        ("Path(\"/\\uD800\")", "not a valid Unicode code point", 8),
        ("Path(\"/\\xff\")", "not valid UTF-8", 6),
        // Columns count characters, not bytes.
        ("Path(`/é`) && Hots(`a`)", "unknown matcher `Hots`", 15),
        ("Path(`/é`) && Host(`a`) &", "unexpected `&`", 25),
    ];
    let mut failures = Vec::new();
    for (src, fragment, column) in cases {
        match Rule::parse(src) {
            Ok(_) => failures.push(format!("{src:?}: parsed, expected an error")),
            Err(err) => {
                if !err.message.contains(fragment) || err.column != column || err.rule != src {
                    failures.push(format!(
                        "{src:?}: got {:?} at column {}, expected {fragment:?} at column {column}",
                        err.message, err.column
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for (open, close) in [("(", ")"), ("!", ""), ("!(", ")")] {
        let src = format!("{}Host(`a`){}", open.repeat(500), close.repeat(500));
        let err = Rule::parse(&src).expect_err("too deep");
        assert!(err.message.contains("more than 64 deep"), "{err}");
    }
    // 64 levels are fine.
    let src = format!("{}Host(`a`){}", "(".repeat(64), ")".repeat(64));
    assert!(parse(&src).matches(&req().host("a").input()));
}

#[test]
fn error_display() {
    let err = Rule::parse("Host(`a`, `b`)").expect_err("two arguments");
    assert_eq!(
        err,
        RuleError {
            message: "`Host` takes 1 argument, got 2".to_owned(),
            column: 1,
            rule: "Host(`a`, `b`)".to_owned(),
        }
    );
    assert_eq!(
        err.to_string(),
        "`Host` takes 1 argument, got 2 at column 1 of rule `Host(`a`, `b`)`"
    );
}

#[test]
#[rustfmt::skip]
fn default_priority() {
    let cases: Vec<(&str, i64)> = vec![
        // The two routers of Traefik's priority documentation.
        ("HostRegexp(`[a-z]+\\.traefik\\.com`)", 34),
        ("Host(`foobar.traefik.com`)", 26),
        ("Path(`/`)", 9),
        // Bytes, not characters.
        ("Path(`/é`)", 11),
        // The stars of a double wildcard do not count, unless negated.
        ("Host(`**.example.com`)", 20),
        ("Host(`**.a.com`) || Host(`**.b.com`)", 36 - 4),
        ("!Host(`**.a.com`)", 17),
        ("!!Host(`**.a.com`)", 18 - 2),
        ("Host(`*.example.com`)", 21),
        // An invalid rule still has its length.
        ("Hots(`x`)", 9),
        ("", 0),
    ];
    for (src, expected) in cases {
        assert_eq!(Rule::default_priority(src), expected, "{src}");
    }
}

#[test]
#[rustfmt::skip]
fn required_hosts() {
    let cases: Vec<(&str, Option<Vec<&str>>)> = vec![
        ("Host(`A.com`)", Some(vec!["a.com"])),
        ("Host(`a.com`) && PathPrefix(`/x`)", Some(vec!["a.com"])),
        ("PathPrefix(`/x`) && Host(`a.com`)", Some(vec!["a.com"])),
        ("Host(`a`) || Host(`b`)", Some(vec!["a", "b"])),
        ("Host(`b`) || Host(`a`) || Host(`b`)", Some(vec!["a", "b"])),
        ("(Host(`a`) || Host(`b`)) && Path(`/`)", Some(vec!["a", "b"])),
        ("Host(`a`) && Path(`/`) || Host(`b`) && Method(`GET`)", Some(vec!["a", "b"])),
        ("(Host(`a`) || Host(`b`)) && (Host(`b`) || Host(`c`))", Some(vec!["b"])),
        ("Host(`a`) && !Host(`b`)", Some(vec!["a"])),
        ("!!Host(`a`)", Some(vec!["a"])),
        ("!(!Host(`a`) || Path(`/x`))", Some(vec!["a"])),
        ("Host(`*.a.com`) && Host(`x.a.com`)", Some(vec!["x.a.com"])),
        // A rule that cannot match anything needs no host.
        ("Host(`a`) && Host(`b`)", Some(vec![])),
        // A trailing dot on the rule host also matches one more dot on the request.
        ("Host(`a.com.`)", Some(vec!["a.com", "a.com."])),
        ("Host(`a`) || Path(`/`)", None),
        ("Path(`/`)", None),
        ("!Host(`a`)", None),
        ("!Host(`a`) && Path(`/`)", None),
        ("!(Host(`a`) || Host(`b`))", None),
        ("!(Host(`a`) && Path(`/`))", None),
        ("HostRegexp(`^a$`)", None),
        ("Host(`*.a.com`)", None),
        ("Host(`**.a.com`)", None),
        ("Host(`a`) || HostRegexp(`^b$`)", None),
    ];
    for (src, expected) in cases {
        let expected = expected.map(|v| v.into_iter().map(str::to_owned).collect::<Vec<_>>());
        assert_eq!(parse(src).required_hosts(), expected, "{src}");
    }
}

/// Soundness of the host index: whenever a rule with required hosts matches a request, the
/// request's lookup key is one of them.
#[test]
fn required_hosts_cover_every_matching_request() {
    let rules = [
        "Host(`a.com`)",
        "Host(`A.com.`)",
        "Host(`a.com`) && Path(`/`)",
        "Host(`a.com`) || Host(`b.com`) && Path(`/`)",
        "Host(`*.a.com`) && Host(`x.a.com`)",
        "Host(`::1`)",
        "!(!Host(`a.com`) || Path(`/x`))",
    ];
    let hosts = [
        "a.com", "A.COM", "a.com.", "A.com..", "a.com...", "b.com", "b.com.", "x.a.com",
        "X.A.COM.", "[::1]", "::1", " a.com ", "", "c.com",
    ];
    let mut checked = 0;
    for src in rules {
        let rule = parse(src);
        let required = rule.required_hosts().expect(src);
        for host in hosts {
            let request = req().host(host);
            if rule.matches(&request.input()) {
                let key = host_lookup_key(host).to_ascii_lowercase();
                assert!(
                    required.contains(&key),
                    "{src} matches {host:?} but its key {key:?} is not in {required:?}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "only {checked} matches checked");
}

#[test]
fn host_lookup_keys() {
    for (host, key) in [
        ("a.com", "a.com"),
        ("a.com.", "a.com"),
        ("a.com..", "a.com."),
        (" [::1] ", "::1"),
        ("[::1]", "::1"),
        ("A.Com", "A.Com"),
        ("", ""),
    ] {
        assert_eq!(host_lookup_key(host), key, "{host:?}");
    }
}

#[test]
fn rules_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug>(t: &T) -> T {
        t.clone()
    }
    let rule = parse("Host(`a`) && PathRegexp(`^/x`)");
    let copy = assert_send_sync(&rule);
    let request = req().host("a").path("/xyz");
    assert!(copy.matches(&request.input()));
    assert!(format!("{copy:?}").contains("PathRegexp"));
}

/// Tiny xorshift generator, so the garbage below is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        let len = u64::try_from(items.len()).expect("small");
        items[usize::try_from(self.next() % len).expect("small")]
    }
}

/// A random rule of the grammar (with arguments that may or may not be valid for the matcher).
fn random_rule(rng: &mut Rng, depth: u32) -> String {
    match rng.next() % 6 {
        0 if depth > 0 => format!("({})", random_rule(rng, depth - 1)),
        1 if depth > 0 => format!("!{}", random_rule(rng, depth - 1)),
        2 | 3 if depth > 0 => {
            let op = rng.pick(&[" && ", " || ", "&&", " ||\n"]);
            format!(
                "{}{op}{}",
                random_rule(rng, depth - 1),
                random_rule(rng, depth - 1)
            )
        }
        _ => {
            let name = rng.pick(&[
                "Host",
                "HostRegexp",
                "Path",
                "PathPrefix",
                "PathRegexp",
                "Method",
                "Header",
                "HeaderRegexp",
                "Query",
                "QueryRegexp",
                "ClientIP",
                "host",
                "PATH",
            ]);
            let args = [
                "`a.com`",
                "`*.a.com`",
                "`**.a.com`",
                "`/x`",
                "\"/\\u00e9\"",
                "`GET`",
                "`X-A`",
                "`^a`",
                "`(?i)b$`",
                "`q`",
                "`::1`",
                "`10.0.0.0/8`",
                "`fe80::/10`",
            ];
            let count = 1 + rng.next() % 2;
            let args: Vec<&str> = (0..count).map(|_| rng.pick(&args)).collect();
            format!("{name}({})", args.join(", "))
        }
    }
}

/// Parses garbage: it must fail with an error inside the rule (or parse), never panic; what
/// parses must match without panicking.
#[test]
fn garbage_never_panics() {
    let mut inputs: Vec<String> = [
        "",
        "(",
        ")",
        "!",
        "&&",
        "||",
        "`",
        "\"",
        "'",
        "\\",
        "((((",
        "))))",
        "Host(",
        "Host(`",
        "Host(\"\\",
        "Host(\"\\u",
        "Host(\"\\U0011ffff\")",
        "Host(\"\\777\")",
        "Host(`a`)&&",
        "Host(`a`)||||",
        "!()",
        "(!)",
        "Host(`a`)(",
        "é",
        "Hosté(`a`)",
        "Host(`a`)é",
        "日本(`a`)",
        "Path(`/`) && \u{0}",
        "\u{feff}Host(`a`)",
        "Host\u{a0}(`a`)",
        "ClientIP(`/`)",
        "ClientIP(`::/`)",
        "ClientIP(`1.2.3.4/-1`)",
        "ClientIP(`1.2.3.4/+8`)",
        "PathRegexp(`\\`)",
        "HostRegexp(`(?P<`)",
        "QueryRegexp(`a`, `(`)",
        "Header(`\u{0}`, `a`)",
        "Method(`ǆ`)",
        "Host(`a`,,)",
        "Host(`a`,`b`,)",
        "Query(``)",
        "1",
        "1.2",
        "_",
        "__(`a`)",
        "Host(`a`) || 0x1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // Every prefix of, and every one-character deletion from, a complex valid rule.
    let complex = "(Host(`é.a.com`) || HostRegexp(\"^b\\\\.\")) && !PathPrefix(`/x`) && Query(`q`, \"\\u00e9\") || ClientIP(`::1/128`)";
    let chars: Vec<char> = complex.chars().collect();
    for i in 0..=chars.len() {
        inputs.push(chars[..i].iter().collect());
        if i < chars.len() {
            inputs.push(chars[..i].iter().chain(&chars[i + 1..]).collect());
        }
    }
    // Random rules from the grammar, half of them then corrupted by one random edit.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let junk = [
        "(", ")", "`", "\"", "\\", "'", "é", "&", "|", "!", ",", " ", "\n", "=", "0", "\u{0}",
    ];
    for _ in 0..3000 {
        let mut rule = random_rule(&mut rng, 3);
        if rng.next().is_multiple_of(2) {
            let chars: Vec<char> = rule.chars().collect();
            let at = usize::try_from(rng.next() % (u64::try_from(chars.len()).expect("small") + 1))
                .expect("small");
            let (head, tail) = chars.split_at(at);
            let tail = if rng.next().is_multiple_of(2) {
                tail.get(1..).unwrap_or_default()
            } else {
                tail
            };
            rule = format!(
                "{}{}{}",
                head.iter().collect::<String>(),
                rng.pick(&junk),
                tail.iter().collect::<String>()
            );
        }
        inputs.push(rule);
    }

    let requests = [
        req(),
        req()
            .host("A.COM")
            .path("/x%20y%2F")
            .query("q=%C3%A9&q")
            .ip("::1"),
        req().host("").path("").query("%").header("x", "y"),
    ];
    let mut parsed = 0;
    for src in &inputs {
        match Rule::parse(src) {
            Ok(rule) => {
                parsed += 1;
                for request in &requests {
                    let _ = rule.matches(&request.input());
                }
                let _ = rule.required_hosts();
            }
            Err(err) => {
                let chars = src.chars().count();
                assert!(
                    (1..=chars + 1).contains(&err.column)
                        && err.rule == *src
                        && !err.message.is_empty(),
                    "{src:?}: bad error {err:?}"
                );
            }
        }
        let _ = Rule::default_priority(src);
    }
    // The soup is not all errors: some of it parses and is matched.
    assert!(
        parsed > 300,
        "only {parsed} of {} inputs parsed",
        inputs.len()
    );
}
