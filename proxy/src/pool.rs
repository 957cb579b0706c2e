//! The connection pool for plain `http://` upstreams: HTTP/1.1 connections driven by hyper's
//! low-level client (`hyper::client::conn::http1`), kept per worker thread.
//!
//! Why not hyper-util's legacy client: its pool is one `Mutex` shared by every worker, a checkout
//! goes through a oneshot channel and a spawned "when ready" task, and returning a connection takes
//! the shared lock again; a callgrind profile put that at 5-7k instructions per request. Here each
//! worker thread has its own idle lists (one per transport and upstream address), so the lock taken
//! on checkout and return is never contended and its cache lines stay on one core.
//!
//! Rules:
//! - A connection goes back to the pool only when its response body was read to the end (or had
//!   none); a response dropped half-read discards the connection (hyper closes it).
//! - A pooled connection is used only once hyper says it is ready for the next request; one the
//!   upstream closed is dropped on sight. A request that could not be written on a reused
//!   connection (closed under our feet) is sent again on another one.
//! - At most `maxIdleConnsPerHost` idle connections per upstream and worker once a burst is over:
//!   connections beyond it are closed (the oldest first) when they have been idle for
//!   [`EXCESS_IDLE_GRACE`], not the moment they come back. Closing at once (Go's net/http, nginx's
//!   `keepalive N`) churns under many concurrent requests: when more than the limit complete in
//!   one scheduler pass, the excess is closed and the next requests reconnect (7% of requests at
//!   640 concurrent HTTP/2 streams, 13-30% once responses were written in batches). HAProxy
//!   likewise keeps idle connections and purges the surplus over time. The list never holds more
//!   than the connections that were in use at once within the grace period.
//! - Idle connections are closed after `idleConnTimeout` by a reaper task that runs only while a
//!   list has idle connections.
//! - Connecting is bounded by `dialTimeout`: a timeout is [`ForwardError::ConnectTimeout`], any
//!   other connect failure [`ForwardError::Connect`], a failure after connecting
//!   [`ForwardError::BadGateway`].

use rustc_hash::FxHashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::{Body, Request};
use crate::forward::ForwardError;

type Sender = http1::SendRequest<Body>;

/// How long idle connections beyond `maxIdleConnsPerHost` are kept (see the module doc).
pub(crate) const EXCESS_IDLE_GRACE: Duration = Duration::from_secs(1);

/// Pool settings of one transport, shared by every worker.
#[derive(Debug)]
pub(crate) struct H1Pool {
    id: u64,
    dial_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl H1Pool {
    pub(crate) fn new(dial_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> Self {
        H1Pool {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            dial_timeout,
            idle_timeout,
            max_idle,
        }
    }

    /// Sends `req` (origin-form URI, Host header set) to `authority` (`host:port`). On success the
    /// returned [`Checkout`] must travel with the response body and be released when it ends.
    pub(crate) async fn send(
        &self,
        authority: &Arc<str>,
        mut req: Request,
    ) -> Result<(http::Response<Incoming>, Checkout), ForwardError> {
        let list = self.list(authority);
        // Reused connections first; a request the connection could not even start writing (it
        // was closed meanwhile) comes back and goes to the next one.
        while let Some(mut sender) = list.take().await {
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Checkout::new(list, sender))),
                Err(mut e) => match e.take_message() {
                    Some(r) => req = r,
                    None => {
                        tracing::debug!(error = %e.error(), "upstream request failed on a reused connection");
                        return Err(ForwardError::BadGateway);
                    }
                },
            }
        }
        // Boxed: connecting (TCP connect + hyper's handshake future) is rare on keep-alive
        // traffic, and inline it would enlarge every request's future.
        let mut sender = Box::pin(self.connect(authority)).await?;
        match sender.try_send_request(req).await {
            Ok(resp) => Ok((resp, Checkout::new(list, sender))),
            Err(e) => {
                tracing::debug!(error = %e.error(), "upstream request failed");
                Err(ForwardError::BadGateway)
            }
        }
    }

    async fn connect(&self, authority: &str) -> Result<Sender, ForwardError> {
        let stream = match tokio::time::timeout(self.dial_timeout, TcpStream::connect(authority))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(upstream = authority, error = %e, "connecting to the upstream failed");
                return Err(if e.kind() == std::io::ErrorKind::TimedOut {
                    ForwardError::ConnectTimeout
                } else {
                    ForwardError::Connect
                });
            }
            Err(_) => {
                tracing::debug!(upstream = authority, "connecting to the upstream timed out");
                return Err(ForwardError::ConnectTimeout);
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(Duration::from_secs(60)));
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| {
                tracing::debug!(upstream = authority, error = %e, "HTTP/1.1 handshake failed");
                ForwardError::Connect
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::trace!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// This worker's idle list for `authority`.
    fn list(&self, authority: &Arc<str>) -> Arc<IdleList> {
        LOCAL.with(|local| {
            let mut local = match local.lock() {
                Ok(l) => l,
                Err(p) => p.into_inner(),
            };
            let hosts = local.entry(self.id).or_default();
            if let Some(l) = hosts.get(&**authority) {
                return l.clone();
            }
            let l = Arc::new(IdleList {
                idle_timeout: self.idle_timeout,
                max_idle: self.max_idle,
                state: Mutex::new(ListState::default()),
            });
            hosts.insert(authority.clone(), l.clone());
            l
        })
    }

    /// Idle connections this worker holds for `authority` (tests).
    #[cfg(test)]
    pub(crate) fn idle_count(&self, authority: &str) -> usize {
        LOCAL.with(|local| {
            let local = match local.lock() {
                Ok(l) => l,
                Err(p) => p.into_inner(),
            };
            local
                .get(&self.id)
                .and_then(|h| h.get(authority))
                .map_or(0, |l| l.lock().idle.len())
        })
    }
}

thread_local! {
    /// Per worker thread: transport id -> upstream `host:port` -> idle connections. A `Mutex`
    /// (always uncontended: the owner thread and, rarely, a reaper task) rather than a `RefCell`
    /// so that lists can be shared with the reaper and the response bodies safely.
    static LOCAL: Mutex<Lists> = const { Mutex::new(FxHashMap::with_hasher(rustc_hash::FxBuildHasher)) };
}

/// Transport id -> upstream `host:port` -> idle list.
type Lists = FxHashMap<u64, FxHashMap<Arc<str>, Arc<IdleList>>>;

/// Idle connections to one upstream, of one transport, on one worker.
#[derive(Debug)]
pub(crate) struct IdleList {
    idle_timeout: Duration,
    max_idle: usize,
    state: Mutex<ListState>,
}

#[derive(Debug, Default)]
struct ListState {
    /// Oldest first; checkouts take the most recently used.
    idle: Vec<Idle>,
    reaper: bool,
}

#[derive(Debug)]
struct Idle {
    sender: Sender,
    since: Instant,
}

impl IdleList {
    fn lock(&self) -> std::sync::MutexGuard<'_, ListState> {
        match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    /// The most recently used connection that is ready for a request, if any.
    async fn take(&self) -> Option<Sender> {
        poll_fn(|cx| {
            let mut st = self.lock();
            let now = Instant::now();
            let mut busy = Vec::new();
            let mut found = None;
            while let Some(mut idle) = st.idle.pop() {
                if now.saturating_duration_since(idle.since) > self.idle_timeout {
                    // Everything below is older still.
                    st.idle.clear();
                    break;
                }
                if idle.sender.is_ready() {
                    found = Some(idle.sender);
                    break;
                }
                if idle.sender.is_closed() {
                    continue;
                }
                // The connection has delivered its last response but hyper has not marked it
                // ready yet (its task has not run since), or it is still sending a request body
                // the upstream answered early: ask once, keep it if it is not ready.
                match idle.sender.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        found = Some(idle.sender);
                        break;
                    }
                    Poll::Ready(Err(_)) => {}
                    Poll::Pending => busy.push(idle),
                }
            }
            // Put still-busy ones back in their places (they were the most recent).
            st.idle.extend(busy.into_iter().rev());
            Poll::Ready(found)
        })
        .await
    }

    /// Returns a connection whose last response ended.
    fn put(self: &Arc<Self>, sender: Sender) {
        if self.max_idle == 0 || sender.is_closed() {
            return;
        }
        let mut st = self.lock();
        let now = Instant::now();
        if st.idle.len() >= self.max_idle
            && st
                .idle
                .first()
                .is_some_and(|i| now.saturating_duration_since(i.since) >= EXCESS_IDLE_GRACE)
        {
            st.idle.remove(0);
        }
        st.idle.push(Idle { sender, since: now });
        if !st.reaper && tokio::runtime::Handle::try_current().is_ok() {
            st.reaper = true;
            tokio::spawn(reap(Arc::downgrade(self), self.idle_timeout));
        }
    }
}

/// Closes connections idle longer than the timeout; ends when the list is empty (the next return
/// starts a new one).
async fn reap(list: Weak<IdleList>, idle_timeout: Duration) {
    // At most the grace period: connections beyond the limit go soon after a burst.
    let tick = (idle_timeout / 2).clamp(Duration::from_millis(10), EXCESS_IDLE_GRACE);
    loop {
        tokio::time::sleep(tick).await;
        let Some(list) = list.upgrade() else { return };
        let mut st = list.lock();
        let now = Instant::now();
        st.idle.retain(|i| {
            now.saturating_duration_since(i.since) <= idle_timeout && !i.sender.is_closed()
        });
        // The surplus over the limit, oldest first, once idle for the grace period.
        let surplus = st.idle.len().saturating_sub(list.max_idle);
        let stale = st
            .idle
            .iter()
            .take(surplus)
            .take_while(|i| now.saturating_duration_since(i.since) >= EXCESS_IDLE_GRACE)
            .count();
        st.idle.drain(..stale);
        if st.idle.is_empty() {
            st.reaper = false;
            return;
        }
    }
}

/// A connection lent to one request. Travels with the response body; [`Checkout::release`] when
/// the body ended puts it back, dropping it otherwise discards the connection.
#[derive(Debug)]
pub struct Checkout {
    list: Arc<IdleList>,
    sender: Option<Sender>,
}

impl Checkout {
    fn new(list: Arc<IdleList>, sender: Sender) -> Self {
        Checkout {
            list,
            sender: Some(sender),
        }
    }

    /// The response was read to its end: the connection may serve another request.
    pub(crate) fn release(&mut self) {
        if let Some(s) = self.sender.take() {
            self.list.put(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Response;
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A real HTTP/1.1 upstream on 127.0.0.1: `/big` answers 1 MiB, `/wait` waits until `gate`
    /// requests wait, anything else answers `ok`. Counts accepted connections.
    async fn upstream(gate: usize) -> (Arc<str>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: Arc<str> = listener.local_addr().unwrap().to_string().into();
        let conns = Arc::new(AtomicUsize::new(0));
        let waiting = Arc::new(tokio::sync::Barrier::new(gate));
        let c = conns.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                let waiting = waiting.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                        let waiting = waiting.clone();
                        async move {
                            let body = match req.uri().path() {
                                "/big" => Bytes::from(vec![b'x'; 1 << 20]),
                                "/wait" => {
                                    waiting.wait().await;
                                    Bytes::from_static(b"ok")
                                }
                                _ => Bytes::from_static(b"ok"),
                            };
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(body),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (addr, conns)
    }

    fn get(addr: &str, path: &str) -> Request {
        http::Request::builder()
            .uri(path)
            .header(http::header::HOST, addr)
            .body(Body::empty())
            .unwrap()
    }

    fn pool(max_idle: usize) -> H1Pool {
        H1Pool::new(Duration::from_secs(5), Duration::from_secs(60), max_idle)
    }

    /// Sends and reads the whole body through the proxy's body type.
    async fn fetch(p: &H1Pool, addr: &Arc<str>, path: &str) -> (u16, Bytes) {
        let (resp, checkout) = p.send(addr, get(addr, path)).await.unwrap();
        let resp: Response = resp.map(|inner| {
            if http_body::Body::is_end_stream(&inner) {
                Body::from(inner)
            } else {
                Body::Pooled { inner, checkout }
            }
        });
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }

    async fn eventually(mut f: impl FnMut() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn sequential_requests_reuse_one_connection() {
        let (addr, conns) = upstream(1).await;
        let p = pool(8);
        for _ in 0..5 {
            let (status, body) = fetch(&p, &addr, "/").await;
            assert_eq!((status, &body[..]), (200, &b"ok"[..]));
        }
        let (_, body) = fetch(&p, &addr, "/big").await;
        assert_eq!(body.len(), 1 << 20);
        fetch(&p, &addr, "/").await;
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        assert_eq!(p.idle_count(&addr), 1);
    }

    #[tokio::test]
    async fn a_response_not_read_to_the_end_is_not_reused() {
        let (addr, conns) = upstream(1).await;
        let p = pool(8);
        let (resp, checkout) = p.send(&addr, get(&addr, "/big")).await.unwrap();
        let mut body = Body::Pooled {
            inner: resp.into_body(),
            checkout,
        };
        // One frame, then the client goes away.
        let _ = std::pin::Pin::new(&mut body).frame().await;
        drop(body);
        assert_eq!(p.idle_count(&addr), 0);
        let (status, _) = fetch(&p, &addr, "/").await;
        assert_eq!(status, 200);
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_replaced() {
        // Answers one request per connection with keep-alive semantics, then closes silently.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: Arc<str> = listener.local_addr().unwrap().to_string().into();
        let conns = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = s.read(&mut buf).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .unwrap();
                    // Closed with the connection idle in the proxy's pool.
                });
            }
        });
        let p = pool(8);
        assert_eq!(fetch(&p, &addr, "/").await.0, 200);
        // Wait until the pool's connection has seen the close.
        eventually(
            || {
                LOCAL.with(|l| {
                    let l = l.lock().unwrap();
                    l.get(&p.id)
                        .and_then(|h| h.get(&*addr))
                        .is_some_and(|list| list.lock().idle.iter().all(|i| i.sender.is_closed()))
                })
            },
            "the idle connection is seen closed",
        )
        .await;
        assert_eq!(fetch(&p, &addr, "/").await.0, 200);
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_requests_and_max_idle() {
        const N: usize = 6;
        let (addr, conns) = upstream(N).await;
        let p = Arc::new(pool(2));
        let mut tasks = Vec::new();
        for _ in 0..N {
            let (p, addr) = (p.clone(), addr.clone());
            // Every request stays in flight until all have arrived: N connections.
            tasks.push(tokio::spawn(async move {
                let (resp, checkout) = p.send(&addr, get(&addr, "/wait")).await.unwrap();
                let body = Body::Pooled {
                    inner: resp.into_body(),
                    checkout,
                };
                assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"ok");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(conns.load(Ordering::SeqCst), N);
        // 100 more from many tasks: all succeed, few new connections.
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let (p, addr) = (p.clone(), addr.clone());
            tasks.push(tokio::spawn(async move { fetch(&p, &addr, "/").await.0 }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 200);
        }
    }

    #[tokio::test]
    async fn a_burst_over_max_idle_is_kept_then_trimmed() {
        const N: usize = 6;
        let (addr, conns) = upstream(N).await;
        let p = Arc::new(pool(2));
        let mut tasks = Vec::new();
        for _ in 0..N {
            let (p, addr) = (p.clone(), addr.clone());
            tasks.push(tokio::spawn(async move {
                let (resp, checkout) = p.send(&addr, get(&addr, "/wait")).await.unwrap();
                let body = Body::Pooled {
                    inner: resp.into_body(),
                    checkout,
                };
                assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"ok");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // All six came back at once (one thread): none is closed on return...
        assert_eq!(p.idle_count(&addr), N);
        // ...so the next burst reuses them instead of reconnecting.
        let mut tasks = Vec::new();
        for _ in 0..N {
            let (p, addr) = (p.clone(), addr.clone());
            tasks.push(tokio::spawn(async move { fetch(&p, &addr, "/").await.0 }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 200);
        }
        assert_eq!(conns.load(Ordering::SeqCst), N);
        // Once idle for the grace period, the surplus over maxIdleConnsPerHost goes.
        eventually(
            || p.idle_count(&addr) == 2,
            "idle connections beyond maxIdleConnsPerHost are closed after the grace period",
        )
        .await;
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let (addr, _conns) = upstream(1).await;
        let p = H1Pool::new(Duration::from_secs(5), Duration::from_millis(100), 8);
        fetch(&p, &addr, "/").await;
        assert_eq!(p.idle_count(&addr), 1);
        eventually(
            || p.idle_count(&addr) == 0,
            "the reaper closes the idle connection",
        )
        .await;
    }

    #[tokio::test]
    async fn max_idle_zero_keeps_nothing() {
        let (addr, conns) = upstream(1).await;
        let p = pool(0);
        fetch(&p, &addr, "/").await;
        fetch(&p, &addr, "/").await;
        assert_eq!(p.idle_count(&addr), 0);
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn refused_is_connect_and_dial_timeout_is_504() {
        // A port nobody listens on: refused.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let refused: Arc<str> = l.local_addr().unwrap().to_string().into();
        drop(l);
        let p = pool(8);
        let e = p.send(&refused, get(&refused, "/")).await.unwrap_err();
        assert_eq!(e, ForwardError::Connect);
        assert_eq!(e.response().status(), 502);

        // A listener that never accepts, its backlog filled: further SYNs go unanswered.
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        sock.listen(0).unwrap();
        let target = sock.local_addr().unwrap().as_socket().unwrap();
        let mut fillers = Vec::new();
        let mut hung = false;
        for _ in 0..64 {
            match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(target)).await
            {
                Ok(Ok(s)) => fillers.push(s),
                Ok(Err(e)) => panic!("filler connect failed: {e}"),
                Err(_) => {
                    hung = true;
                    break;
                }
            }
        }
        assert!(hung, "could not fill the listen backlog");
        let slow: Arc<str> = target.to_string().into();
        let p = H1Pool::new(Duration::from_millis(200), Duration::from_secs(60), 8);
        let started = Instant::now();
        let e = p.send(&slow, get(&slow, "/")).await.unwrap_err();
        assert_eq!(e, ForwardError::ConnectTimeout);
        assert!(e.is_connect());
        assert_eq!(e.response().status(), 504);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
