//! `basicAuth`: users from `users` and `usersFile` (htpasswd lines `name:hash`), with bcrypt
//! (`$2y$`, `$2b$`, `$2a$`, `$2x$`), SHA-1 (`{SHA}`) and MD5-crypt (`$apr1$`, `$1$`) hashes, the
//! formats Traefik's htpasswd library checks. A hash in any other format (a plain-text password,
//! say) is a configuration error rather than a user who can never log in.
//!
//! bcrypt (and MD5-crypt's 1000 rounds) is slow on purpose, so it runs on the blocking pool, a few
//! at a time, never on a proxy worker; a successful check is remembered (as a salted SHA-256 of the credentials) so a browser that sends
//! the same header on every request pays for it once. Failures are never cached.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderName, HeaderValue, StatusCode, header};
use sha2::Digest;

use super::{Next, reply};
use crate::body::{Request, Response};
use crate::config::dynamic;
use crate::context::RequestCtx;

/// Remembered successful logins per middleware; cleared when full.
const CACHE_CAPACITY: usize = 1024;

#[derive(Debug)]
enum Secret {
    Bcrypt(Arc<str>),
    Sha1([u8; 20]),
    Md5Crypt(Arc<str>),
}

impl Secret {
    fn parse(hash: &str) -> Result<Secret, &'static str> {
        if ["$2a$", "$2b$", "$2x$", "$2y$"]
            .iter()
            .any(|p| hash.starts_with(p))
        {
            if hash.len() != 60 {
                return Err("is not a complete bcrypt hash");
            }
            return Ok(Secret::Bcrypt(hash.into()));
        }
        if let Some(b64) = hash.strip_prefix("{SHA}") {
            let raw = STANDARD
                .decode(b64)
                .map_err(|_| "is not a valid {SHA} hash")?;
            return raw
                .try_into()
                .map(Secret::Sha1)
                .map_err(|_| "is not a valid {SHA} hash");
        }
        if hash.starts_with("$apr1$") || hash.starts_with("$1$") {
            let parts: Vec<&str> = hash.splitn(4, '$').collect();
            if parts.len() != 4 || parts[3].len() != 22 {
                return Err("is not a valid MD5-crypt hash");
            }
            return Ok(Secret::Md5Crypt(hash.into()));
        }
        Err("is not a bcrypt, {SHA} or MD5 ($apr1$) hash (htpasswd -B makes bcrypt ones)")
    }

    fn is_slow(&self) -> bool {
        !matches!(self, Secret::Sha1(_))
    }

    /// Checks a password; slow hashes run on the blocking pool.
    async fn check(&self, password: &str) -> bool {
        match self {
            Secret::Sha1(want) => {
                let got: [u8; 20] = sha1::Sha1::digest(password.as_bytes()).into();
                constant_time_eq(&got, want)
            }
            Secret::Md5Crypt(hash) => {
                let (hash, password) = (hash.clone(), password.to_owned());
                tokio::task::spawn_blocking(move || md5_crypt_verify(&password, &hash))
                    .await
                    .unwrap_or(false)
            }
            Secret::Bcrypt(hash) => {
                let (hash, password) = (hash.clone(), password.to_owned());
                tokio::task::spawn_blocking(move || {
                    bcrypt::verify(password, &hash).unwrap_or(false)
                })
                .await
                .unwrap_or(false)
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// MD5-crypt (`$1$`, and Apache's `$apr1$`, which differs only in its magic string).
fn md5_crypt(password: &[u8], magic: &str, salt: &[u8]) -> String {
    use md5::{Digest as _, Md5};
    let salt = &salt[..salt.len().min(8)];
    let mut alt = Md5::new();
    alt.update(password);
    alt.update(salt);
    alt.update(password);
    let alt = alt.finalize();

    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(magic.as_bytes());
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize();
    }
    let mut out = String::with_capacity(magic.len() + salt.len() + 23);
    out.push_str(magic);
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    let mut push = |v: u32, n: usize| {
        let mut v = v;
        for _ in 0..n {
            out.push(char::from(ITOA64[(v & 0x3f) as usize]));
            v >>= 6;
        }
    };
    let b = |i: usize| u32::from(fin[i]);
    push((b(0) << 16) | (b(6) << 8) | b(12), 4);
    push((b(1) << 16) | (b(7) << 8) | b(13), 4);
    push((b(2) << 16) | (b(8) << 8) | b(14), 4);
    push((b(3) << 16) | (b(9) << 8) | b(15), 4);
    push((b(4) << 16) | (b(10) << 8) | b(5), 4);
    push(b(11), 2);
    out
}

fn md5_crypt_verify(password: &str, hash: &str) -> bool {
    // `$magic$salt$digest`
    let mut parts = hash.splitn(4, '$');
    let (Some(""), Some(magic), Some(salt)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let magic = format!("${magic}$");
    constant_time_eq(
        md5_crypt(password.as_bytes(), &magic, salt.as_bytes()).as_bytes(),
        hash.as_bytes(),
    )
}

/// `basicAuth`.
#[derive(Debug)]
pub(crate) struct BasicAuth {
    users: HashMap<String, Secret>,
    challenge: HeaderValue,
    header_field: Option<HeaderName>,
    remove_header: bool,
    /// Salted digests of credentials that passed a slow check.
    verified: Mutex<HashSet<[u8; 32]>>,
    salt: [u8; 16],
    /// Bounds the slow checks running at once, so a flood of wrong passwords queues instead of
    /// starting a blocking thread each.
    slow_checks: tokio::sync::Semaphore,
}

impl BasicAuth {
    pub(crate) fn compile(cfg: &dynamic::BasicAuth) -> Result<Self, String> {
        let mut users = HashMap::new();
        let mut add = |entry: &str, what: &dyn Fn() -> String| -> Result<(), String> {
            let mut it = entry.split(':');
            let (Some(name), Some(hash), None) = (it.next(), it.next(), it.next()) else {
                return Err(format!(
                    "{}: an entry must be `name:hashed-password`",
                    what()
                ));
            };
            let secret =
                Secret::parse(hash).map_err(|e| format!("{}: the hash of `{name}` {e}", what()))?;
            users.insert(name.to_owned(), secret);
            Ok(())
        };
        if let Some(file) = cfg.users_file.as_deref().filter(|f| !f.is_empty()) {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("basicAuth.usersFile: cannot read `{file}`: {e}"))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                add(line, &|| {
                    format!("basicAuth.usersFile `{file}` line {}", n + 1)
                })?;
            }
        }
        for (i, entry) in cfg.users.iter().enumerate() {
            add(entry, &|| format!("basicAuth.users[{i}]"))?;
        }
        if users.is_empty() {
            return Err("basicAuth: no users (set `users` or `usersFile`)".into());
        }
        let realm = cfg
            .realm
            .as_deref()
            .filter(|r| !r.is_empty())
            .unwrap_or("traefik");
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{realm}\""))
            .map_err(|_| format!("basicAuth.realm: `{realm}` cannot be sent in a header"))?;
        let header_field = match cfg.header_field.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => Some(
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| format!("basicAuth.headerField: `{h}` is not a header name"))?,
            ),
            None => None,
        };
        Ok(BasicAuth {
            users,
            challenge,
            header_field,
            remove_header: cfg.remove_header,
            verified: Mutex::new(HashSet::new()),
            salt: rand::random(),
            slow_checks: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
        })
    }

    fn digest(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = sha2::Sha256::new();
        h.update(self.salt);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    async fn check(&self, user: &str, password: &str) -> bool {
        let Some(secret) = self.users.get(user) else {
            return false;
        };
        if !secret.is_slow() {
            return secret.check(password).await;
        }
        let key = self.digest(user, password);
        let lock = || self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if lock().contains(&key) {
            return true;
        }
        let Ok(_permit) = self.slow_checks.acquire().await else {
            return false;
        };
        let ok = secret.check(password).await;
        if ok {
            let mut cache = lock();
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(key);
        }
        ok
    }

    fn unauthorized(&self) -> Response {
        let mut resp = reply(StatusCode::UNAUTHORIZED, "401 Unauthorized\n");
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, self.challenge.clone());
        resp
    }

    pub(crate) async fn handle(
        &self,
        mut req: Request,
        ctx: &mut RequestCtx,
        next: Next<'_>,
    ) -> Response {
        let Some((user, password)) = credentials(&req) else {
            return self.unauthorized();
        };
        if !self.check(&user, &password).await {
            tracing::debug!(%user, client = %ctx.client_addr, "basicAuth: authentication failed");
            return self.unauthorized();
        }
        if let Some(name) = &self.header_field
            && let Ok(v) = HeaderValue::from_str(&user)
        {
            req.headers_mut().insert(name.clone(), v);
        }
        if self.remove_header {
            req.headers_mut().remove(header::AUTHORIZATION);
        }
        next.run(req, ctx).await
    }
}

/// `Authorization: Basic base64(user:password)`, as Go's `Request.BasicAuth` reads it.
fn credentials(req: &Request) -> Option<(String, String)> {
    let v = req.headers().get(header::AUTHORIZATION)?.as_bytes();
    if v.len() < 6 || !v[..6].eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(&v[6..]).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::MiddlewareState;
    use super::super::testutil::{
        body_string, ctx_from, echo_service, echoed, mw, request, run, try_mw,
    };
    use super::*;

    #[test]
    fn md5_crypt_matches_openssl() {
        // Vectors from `openssl passwd -apr1 -salt ...` and `openssl passwd -1 -salt ...`.
        assert!(md5_crypt_verify(
            "secret",
            "$apr1$saltsalt$LrttParrLPdxvgutaSXWJ0"
        ));
        assert!(md5_crypt_verify("p4ss", "$1$abc$Xow4ByoMYx2LmEw0.ECb20"));
        assert!(md5_crypt_verify("", "$apr1$x$tMwYqBfQwi3FYAr0aJc8M/"));
        assert!(md5_crypt_verify(
            "a-very-long-password-that-is-longer-than-sixteen-bytes",
            "$apr1$12345678$Lvo2HP60qIjjSEVQeNi7E."
        ));
        assert!(!md5_crypt_verify(
            "Secret",
            "$apr1$saltsalt$LrttParrLPdxvgutaSXWJ0"
        ));
    }

    fn with_auth(user: &str, pw: &str) -> Request {
        let mut req = request("GET", "/");
        let v = format!("Basic {}", STANDARD.encode(format!("{user}:{pw}")));
        req.headers_mut()
            .insert(header::AUTHORIZATION, v.parse().unwrap());
        req
    }

    #[tokio::test]
    async fn all_hash_formats_and_the_challenge() {
        let bc = bcrypt::hash("bcpass", 4).unwrap();
        let y = format!(
            r#"basicAuth:
  users: ["sha:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ=", "apr:$apr1$saltsalt$LrttParrLPdxvgutaSXWJ0", "bc:{bc}"]
  realm: gantry
  headerField: X-WebAuth-User
  removeHeader: true"#
        );
        let m = mw(&y);
        let svc = echo_service();
        for (u, p) in [
            ("sha", "secret"),
            ("apr", "secret"),
            ("bc", "bcpass"),
            ("bc", "bcpass"),
        ] {
            let (r, _) = run(
                std::slice::from_ref(&m),
                &svc,
                with_auth(u, p),
                ctx_from("1.1.1.1:1"),
            )
            .await;
            assert_eq!(r.status(), 200, "{u}");
            let e = echoed(&r);
            assert_eq!(e.headers["x-webauth-user"], u);
            assert!(e.headers.get(header::AUTHORIZATION).is_none());
        }
        for req in [
            with_auth("bc", "wrong"),
            with_auth("nobody", "x"),
            request("GET", "/"),
        ] {
            let (r, _) = run(std::slice::from_ref(&m), &svc, req, ctx_from("1.1.1.1:1")).await;
            assert_eq!(r.status(), 401);
            assert_eq!(
                r.headers()[header::WWW_AUTHENTICATE],
                "Basic realm=\"gantry\""
            );
            assert_eq!(body_string(r).await, "401 Unauthorized\n");
        }
    }

    #[tokio::test]
    async fn users_file_then_inline_users() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(
            &path,
            "# comment\n\n  alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=  \nbob:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n",
        )
        .unwrap();
        // bob's inline entry (password "p4ss") replaces the file's.
        let y = format!(
            "basicAuth: {{usersFile: {}, users: ['bob:$1$abc$Xow4ByoMYx2LmEw0.ECb20']}}",
            path.display()
        );
        let m = mw(&y);
        let svc = echo_service();
        let ok = |u: &'static str, p: &'static str| {
            let (m, svc) = (m.clone(), &svc);
            async move {
                run(&[m], svc, with_auth(u, p), ctx_from("1.1.1.1:1"))
                    .await
                    .0
                    .status()
            }
        };
        assert_eq!(ok("alice", "secret").await, 200);
        assert_eq!(ok("bob", "p4ss").await, 200);
        assert_eq!(ok("bob", "secret").await, 401);
    }

    #[test]
    fn errors_name_the_entry() {
        let st = MiddlewareState::default();
        let e = try_mw(
            "basicAuth: {users: ['a:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=', 'b:plain']}",
            &st,
        )
        .unwrap_err();
        assert!(
            e.starts_with("basicAuth.users[1]: the hash of `b` is not a bcrypt"),
            "{e}"
        );
        let e = try_mw("basicAuth: {users: ['nocolon']}", &st).unwrap_err();
        assert!(e.contains("basicAuth.users[0]: an entry must be"), "{e}");
        let e = try_mw("basicAuth: {usersFile: /nonexistent/users}", &st).unwrap_err();
        assert!(
            e.contains("basicAuth.usersFile: cannot read `/nonexistent/users`"),
            "{e}"
        );
    }
}
