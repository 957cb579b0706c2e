use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::Body;
use gantry_supervisor::auth::{SessionPolicy, ThrottlePolicy};
use gantry_supervisor::certs::Policy;
use gantry_supervisor::clock::SystemClock;
use gantry_supervisor::cluster::NoCluster;
use gantry_supervisor::daemon::{Daemon, DaemonConfig};
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub(crate) const ADMIN_PASSWORD: &str = "violet-otter-carries-lamps";
pub(crate) const CHAT_PASSWORD: &str = "granite-heron-sings-softly";

/// Everything the process logs (tracing at TRACE), for the no-secrets test.
pub(crate) fn captured_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let make = move || Writer(w.clone());
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(make)
            .with_ansi(false)
            .try_init();
        buf
    })
    .clone()
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl Write for Writer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        std::io::stderr().write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(crate) struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub(crate) fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .map_or("", |v| v.to_str().unwrap())
    }
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    /// The value of the first `name="_csrf"` hidden input.
    pub(crate) fn csrf(&self) -> String {
        let i = self
            .body
            .find("name=\"_csrf\" value=\"")
            .unwrap_or_else(|| {
                panic!(
                    "no _csrf field ({} {}): {}",
                    self.status,
                    self.location(),
                    self.body
                )
            })
            + 20;
        self.body[i..].split('"').next().unwrap().to_owned()
    }
}

pub(crate) struct TestApp {
    pub daemon: Daemon,
    pub admin: Router,
    pub app_side: Router,
    pub token: String,
    pub jar: HashMap<String, String>,
    pub ip: String,
    _dir: tempfile::TempDir,
}

impl TestApp {
    pub(crate) async fn start() -> TestApp {
        captured_log();
        let dir = tempfile::tempdir().unwrap();
        let cfg = DaemonConfig {
            data_dir: dir.path().join("data"),
            run_dir: Some(dir.path().join("run")),
            http: "127.0.0.1:0".parse().unwrap(),
            https: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            acme_directory: None,
            acme_ca_root: None,
            workers: Some(1),
            cert_policy: Policy::default(),
            session_policy: SessionPolicy::default(),
            throttle_policy: ThrottlePolicy::default(),
        };
        let daemon = Daemon::start(cfg, Arc::new(SystemClock), Arc::new(NoCluster::Disabled))
            .await
            .unwrap();
        let token = daemon.setup_token().unwrap().expose().to_owned();
        // The proxy's routes to the web UI (the handlers are called directly here).
        daemon
            .attach_web_ui(
                "127.0.0.1:9".parse().unwrap(),
                "127.0.0.1:9".parse().unwrap(),
            )
            .unwrap();
        let cancel = CancellationToken::new();
        let admin = gantry_web_ui::admin_router(daemon.appliance().clone(), cancel.clone());
        let app_side = gantry_web_ui::app_router(daemon.appliance().clone(), cancel);
        TestApp {
            daemon,
            admin,
            app_side,
            token,
            jar: HashMap::new(),
            ip: "192.0.2.10".into(),
            _dir: dir,
        }
    }

    pub(crate) fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    pub(crate) fn run_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("run")
    }

    fn cookie_header(&self) -> Option<String> {
        (!self.jar.is_empty()).then(|| {
            self.jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    pub(crate) async fn send(&mut self, req: Request<Body>, app_side: bool) -> Resp {
        let router = if app_side {
            &self.app_side
        } else {
            &self.admin
        };
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        for c in headers.get_all(header::SET_COOKIE) {
            let c = c.to_str().unwrap();
            let (kv, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            assert!(
                attrs.contains("HttpOnly")
                    && attrs.contains("Secure")
                    && attrs.contains("SameSite=Strict"),
                "{c}"
            );
            if v.is_empty() {
                self.jar.remove(k);
            } else {
                self.jar.insert(k.to_owned(), v.to_owned());
            }
        }
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "127.0.0.1:9443")
            .header("x-real-ip", &self.ip);
        if let Some(c) = self.cookie_header() {
            b = b.header(header::COOKIE, c);
        }
        b
    }

    pub(crate) async fn get(&mut self, path: &str) -> Resp {
        let r = self.request(Method::GET, path).body(Body::empty()).unwrap();
        self.send(r, false).await
    }

    pub(crate) async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        let r = self
            .request(Method::POST, path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        self.send(r, false).await
    }

    pub(crate) async fn post_multipart(&mut self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let boundary = "----gantrytestboundary";
        let mut body = String::new();
        for (k, v) in fields {
            if k.ends_with("_file") {
                body.push_str(&format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"x.pem\"\r\nContent-Type: application/octet-stream\r\n\r\n{v}\r\n"
                ));
            } else {
                body.push_str(&format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                ));
            }
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        let r = self
            .request(Method::POST, path)
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from(body))
            .unwrap();
        self.send(r, false).await
    }

    pub(crate) async fn api(
        &mut self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        extra: &[(&str, &str)],
    ) -> Resp {
        let mut b = self.request(method, path);
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        let r = match body {
            Some(j) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(j.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        self.send(r, false).await
    }

    /// Runs the whole wizard (self-signed certificate) and returns with the admin signed in.
    pub(crate) async fn complete_setup(&mut self) {
        let r = self.get("/setup").await;
        let csrf = r.csrf();
        let token = self.token.clone();
        let r = self
            .post_form("/setup", &[("_csrf", &csrf), ("token", &token)])
            .await;
        assert_eq!(r.location(), "/setup/admin", "{}", r.body);
        let csrf = self.get("/setup/admin").await.csrf();
        let r = self
            .post_form(
                "/setup/admin",
                &[
                    ("_csrf", &csrf),
                    ("username", "admin"),
                    ("password", ADMIN_PASSWORD),
                    ("password_confirm", ADMIN_PASSWORD),
                ],
            )
            .await;
        assert_eq!(r.location(), "/setup/domain", "{}", r.body);
        let r = self
            .post_multipart(
                "/setup/domain",
                &[
                    ("_csrf", &csrf),
                    ("domain", "chat.example.test"),
                    ("cert_mode", "self-signed"),
                ],
            )
            .await;
        assert_eq!(r.location(), "/setup/rocketchat", "{}", r.body);
        let r = self
            .post_form(
                "/setup/rocketchat",
                &[
                    ("_csrf", &csrf),
                    ("name", "Chat Admin"),
                    ("username", "rcadmin"),
                    ("email", "rc@example.test"),
                    ("password", CHAT_PASSWORD),
                    ("password_confirm", CHAT_PASSWORD),
                ],
            )
            .await;
        assert_eq!(r.location(), "/setup/summary", "{}", r.body);
        let r = self.get("/setup/summary").await;
        assert!(r.body.contains("chat.example.test"), "{}", r.body);
        let r = self.post_form("/setup/finish", &[("_csrf", &csrf)]).await;
        assert_eq!(r.location(), "/setup/progress", "{}", r.body);
    }

    pub(crate) async fn sign_in(&mut self, user: &str, password: &str) -> Resp {
        let csrf = self.get("/sign-in").await.csrf();
        self.post_form(
            "/sign-in",
            &[("_csrf", &csrf), ("username", user), ("password", password)],
        )
        .await
    }

    /// The signed-in session's CSRF token (from a page's forms).
    pub(crate) async fn session_csrf(&mut self) -> String {
        self.get("/settings").await.csrf()
    }

    /// Polls until `f` holds (generous deadline).
    pub(crate) async fn wait_for<F: FnMut(&TestApp) -> bool>(&self, what: &str, mut f: F) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !f(self) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

pub(crate) fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A certificate and key for `name` (rcgen), and a second key that does not match.
pub(crate) fn cert_for(name: &str) -> (String, String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    (cert.pem(), key.serialize_pem(), other.serialize_pem())
}
