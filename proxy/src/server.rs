//! Entrypoints: listening sockets, one single-threaded runtime per worker thread (each with its own
//! `SO_REUSEPORT` socket per entrypoint, so connections spread across cores without a shared accept
//! queue), TLS handshakes, HTTP/1.1 and HTTP/2 connections, connection limits and graceful drain.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::body::Deadline;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::static_config::EntryPoint;
use crate::context::{EntryPointInfo, RequestCtx};
use crate::state::Shared;
use crate::tls::{self, ACME_TLS_ALPN};

/// Parses a Traefik entrypoint address: `:80`, `0.0.0.0:443`, `[::]:8080`, optionally with `/tcp`.
pub fn parse_address(addr: &str) -> Result<SocketAddr, String> {
    let a = addr.trim();
    let a = match a.rsplit_once('/') {
        Some((a, "tcp")) => a,
        Some((_, "udp")) => return Err(format!("`{addr}`: UDP entrypoints are not supported")),
        Some((_, p)) => return Err(format!("`{addr}`: unknown protocol `{p}`")),
        None => a,
    };
    if let Some(port) = a.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{addr}`: `{port}` is not a port number"))?;
        return Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
    }
    a.parse()
        .map_err(|_| format!("`{addr}` is not an address such as `:80` or `127.0.0.1:8080`"))
}

/// Per-entrypoint settings used by every connection.
#[derive(Debug)]
pub(crate) struct EntryPointRuntime {
    pub info: Arc<EntryPointInfo>,
    pub tls_options: String,
    pub limits: Arc<Semaphore>,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    /// `respondingTimeouts.idleTimeout`: no bytes and no request in progress this long closes the
    /// connection (gracefully).
    pub idle_timeout: Option<Duration>,
    pub max_streams: Option<u32>,
    pub keep_alive_max_requests: u64,
    /// `keepAliveMaxTime`: the connection closes gracefully once this old (HTTP/1.1 responses
    /// after it say `Connection: close`; HTTP/2 gets a GOAWAY).
    pub keep_alive_max_time: Option<Duration>,
}

impl EntryPointRuntime {
    pub(crate) fn new(
        name: &str,
        ep: &EntryPoint,
        port: u16,
        shared: &Shared,
    ) -> Result<Self, String> {
        let trusted = crate::forwarded::TrustedIps::parse(
            ep.forwarded_headers.insecure,
            &ep.forwarded_headers.trusted_ips,
        )
        .map_err(|e| format!("entryPoints.{name}.forwardedHeaders.trustedIPs: {e}"))?;
        Ok(EntryPointRuntime {
            info: Arc::new(EntryPointInfo {
                name: name.into(),
                tls: ep.http.tls.is_some(),
                port,
                trusted,
                tunnels: shared.tunnels.clone(),
                websocket_idle_timeout: ep
                    .gantry
                    .websocket_idle_timeout
                    .non_zero()
                    .unwrap_or(Duration::from_secs(600)),
                port_header: http::HeaderValue::from(port),
                metrics: shared.metrics.entrypoint(name),
                read_timeout: ep.transport.responding_timeouts.read_timeout.non_zero(),
                write_timeout: ep.transport.responding_timeouts.write_timeout.non_zero(),
            }),
            tls_options: ep
                .http
                .tls
                .as_ref()
                .and_then(|t| t.options.clone())
                .unwrap_or_else(|| "default".into()),
            limits: Arc::new(Semaphore::new(ep.gantry.max_connections.max(1))),
            header_timeout: ep
                .gantry
                .header_read_timeout
                .non_zero()
                .unwrap_or(Duration::from_secs(10)),
            max_header_bytes: ep
                .http
                .max_header_bytes
                .unwrap_or(ep.gantry.max_header_bytes)
                .max(8192),
            idle_timeout: ep.transport.responding_timeouts.idle_timeout.non_zero(),
            max_streams: ep.http2.as_ref().and_then(|h| h.max_concurrent_streams),
            keep_alive_max_requests: ep.transport.keep_alive_max_requests,
            keep_alive_max_time: ep.transport.keep_alive_max_time.non_zero(),
        })
    }
}

/// Binds `addr` with `SO_REUSEPORT` so every worker can have its own socket on the same port.
pub(crate) fn bind_reuseport(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // `:80` means every address, IPv4 included.
        let _ = sock.set_only_v6(false);
    }
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(sock.into())
}

/// Accepts connections until `stop_accepting` fires.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    ep: Arc<EntryPointRuntime>,
    shared: Arc<Shared>,
    stop_accepting: CancellationToken,
    drain: CancellationToken,
    conns: TaskTracker,
) {
    let gauge = shared.metrics.connections(&ep.info.name);
    loop {
        // Accept, then wait for a permit: a worker that took a permit before accepting would sit
        // on it while the kernel queues connections on another worker's socket (SO_REUSEPORT),
        // which could then not be served below the limit. At most one accepted connection per
        // worker waits for a permit.
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(entrypoint = %ep.info.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop_accepting.cancelled() => return,
        };
        let permit = tokio::select! {
            p = ep.limits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop_accepting.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let ep = ep.clone();
        let shared = shared.clone();
        let drain = drain.clone();
        let gauge = gauge.clone();
        conns.spawn(async move {
            gauge.fetch_add(1, Ordering::Relaxed);
            serve_connection(stream, peer, ep, shared, drain).await;
            gauge.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    ep: Arc<EntryPointRuntime>,
    shared: Arc<Shared>,
    drain: CancellationToken,
) {
    if !ep.info.tls {
        serve_http(stream, peer, false, false, ep, shared, drain).await;
        return;
    }
    let handshake = async {
        let acceptor =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
        let start = acceptor.await.ok()?;
        let hello = start.client_hello();
        let sni = hello.server_name().map(str::to_owned);
        let acme = hello
            .alpn()
            .is_some_and(|mut a| a.any(|p| p == ACME_TLS_ALPN));
        if acme {
            let cert = shared.certs.acme_alpn_cert(sni.as_deref()?)?;
            let cfg = tls::acme_server_config(cert).ok()?;
            // The validation handshake is all the CA needs; the connection then ends.
            let _ = start.into_stream(cfg).await;
            return None;
        }
        let cfg = shared
            .snapshot
            .load()
            .tls_config(&ep.tls_options, sni.as_deref())?;
        start.into_stream(cfg).await.ok()
    };
    let Ok(Some(tls_stream)) = tokio::time::timeout(ep.header_timeout, handshake).await else {
        return;
    };
    let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
    serve_http(tls_stream, peer, true, h2, ep, shared, drain).await;
}

async fn serve_http<IO>(
    io: IO,
    peer: SocketAddr,
    tls: bool,
    h2: bool,
    ep: Arc<EntryPointRuntime>,
    shared: Arc<Shared>,
    drain: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = ep.info.clone();
    let requests = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let io_ops = Arc::new(AtomicU64::new(0));
    let max_requests = ep.keep_alive_max_requests;
    let max_age = ep.keep_alive_max_time;
    let write_timeout = ep.info.write_timeout;
    let born = tokio::time::Instant::now();
    let (count, handlers) = (requests.clone(), in_flight.clone());
    let ip_header =
        http::HeaderValue::from_str(&crate::forwarded::canonical(peer.ip()).to_string())
            .unwrap_or_else(|_| http::HeaderValue::from_static("unknown"));
    // The handler's future is large (about 5 KiB). HTTP/1.1 keeps it in place in the
    // connection's dispatcher, but hyper's HTTP/2 server moves it several times per request
    // (into the stream's future, into the spawned task); boxing it there trades those copies for
    // one allocation: -3.8k instructions per h2 request, while boxing it on HTTP/1.1 costs
    // +0.8k (callgrind, BENCHMARKS.md). The protocol is known up front only from ALPN.
    macro_rules! serve {
        ($wrap:expr, |$io:ident, $svc:ident| $conn:expr) => {{
            let $svc = service_fn(move |req| {
                // Read only when a writeTimeout is set: no clock read per request otherwise.
                let started = write_timeout.map(|limit| (tokio::time::Instant::now(), limit));
                let ctx = RequestCtx::with_ip_header(peer, ip_header.clone(), info.clone(), tls);
                let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                let shared = shared.clone();
                handlers.fetch_add(1, Ordering::Relaxed);
                let handling = InFlight(handlers.clone());
                $wrap(async move {
                    let _handling = handling;
                    let mut resp = crate::handler::handle(shared, req, ctx).await;
                    if let Some((started, limit)) = started {
                        resp = resp.map(|b| Deadline::wrap(b, started, limit, "writeTimeout"));
                    }
                    if (max_requests > 0 && n >= max_requests)
                        || max_age.is_some_and(|a| born.elapsed() >= a)
                    {
                        resp.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                })
            });
            let $io = TokioIo::new(Activity {
                io,
                ops: io_ops.clone(),
            });
            let conn = $conn;
            drive(
                conn,
                |c| c.graceful_shutdown(),
                &ep,
                &requests,
                &in_flight,
                &io_ops,
                &drain,
                peer,
            )
            .await;
        }};
    }
    if h2 {
        // ALPN said h2: hyper's HTTP/2 server directly, without the auto builder's preface
        // sniffing and its `Rewind` wrapper; [`Cork`] coalesces the writes of one poll into one
        // TLS record and one `writev`.
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(ep.max_streams.unwrap_or(250))
            .max_header_list_size(ep.max_header_bytes as u32);
        serve!(Box::pin, |io, svc| builder.serve_connection(
            TokioIo::new(Cork::new(io.into_inner())),
            svc
        ))
    } else if tls {
        // ALPN did not pick h2, so this is HTTP/1.1 (as in Go's server, which Traefik uses): hyper's
        // HTTP/1 connection directly, without the auto builder's preface sniffing and the
        // `Rewind` wrapper it puts around every read and write.
        let builder = http1_builder(&ep);
        serve!(std::convert::identity, |io, svc| builder
            .serve_connection(io, svc)
            .with_upgrades())
    } else {
        // Plaintext: HTTP/1.1 or h2c with prior knowledge, told apart by the first bytes.
        let builder = auto_builder(&ep);
        serve!(std::convert::identity, |io, svc| builder
            .serve_connection_with_upgrades(io, svc))
    }
}

/// hyper's HTTP/1.1 server settings for an entrypoint.
fn http1_builder(ep: &EntryPointRuntime) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(ep.header_timeout)
        .max_buf_size(ep.max_header_bytes)
        .keep_alive(true);
    b
}

/// HTTP/1.1 and HTTP/2 (chosen by the connection's first bytes) for an entrypoint.
fn auto_builder(ep: &EntryPointRuntime) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(ep.header_timeout)
        .max_buf_size(ep.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(ep.max_streams.unwrap_or(250))
        .max_header_list_size(ep.max_header_bytes as u32);
    builder
}

/// Runs a connection until it ends, the proxy drains, or [`watchdog`] fires; then closes it
/// gracefully.
#[allow(clippy::too_many_arguments)]
async fn drive<C, E>(
    conn: C,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
    ep: &EntryPointRuntime,
    requests: &Arc<AtomicU64>,
    in_flight: &Arc<AtomicUsize>,
    io_ops: &Arc<AtomicU64>,
    drain: &CancellationToken,
    peer: SocketAddr,
) where
    C: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    // The watchdog and the drain token are watched by a task of their own, which wakes only for
    // its timers: `select!` polls every branch whenever the task wakes, and the connection's task
    // wakes for every read and write, so polling two timers and the token there cost several
    // hundred instructions per request (BENCHMARKS.md, fourth pass). Here it is one oneshot check.
    let (tx, fired) = tokio::sync::oneshot::channel();
    let (header_timeout, idle_timeout, max_age) =
        (ep.header_timeout, ep.idle_timeout, ep.keep_alive_max_time);
    let (requests, in_flight, io_ops, drain) = (
        requests.clone(),
        in_flight.clone(),
        io_ops.clone(),
        drain.clone(),
    );
    tokio::spawn(async move {
        let mut tx = tx;
        let watch = watchdog(
            header_timeout,
            idle_timeout,
            max_age,
            &requests,
            &in_flight,
            &io_ops,
        );
        let end = tokio::select! {
            end = watch => end,
            _ = drain.cancelled() => Watch::Drain,
            // The connection ended.
            _ = tx.closed() => return,
        };
        let _ = tx.send(end);
    });
    tokio::select! {
        biased;
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::trace!(error = %e, "connection ended with an error");
            }
            return;
        }
        end = fired => match end {
            Ok(Watch::NoRequest) => {
                tracing::debug!(%peer, "no request within the header read timeout: connection closed");
                return;
            }
            Ok(Watch::Idle) => tracing::trace!(%peer, "idle timeout: closing the connection"),
            Ok(Watch::MaxAge) => tracing::trace!(%peer, "keepAliveMaxTime reached: closing the connection"),
            // Draining, or the runtime is shutting down.
            Ok(Watch::Drain) | Err(_) => {}
        },
    }
    // Graceful: a response in progress still completes, then the connection closes.
    graceful_shutdown(conn.as_mut());
    let _ = conn.await;
}

/// Why [`watchdog`] fired.
enum Watch {
    /// No request head arrived within the header read timeout. hyper's own HTTP/1 timer does not
    /// cover the protocol detection (HTTP/1.1 or h2c preface) nor HTTP/2, so a connection that
    /// sends nothing (or a slow preface) would otherwise stay open forever.
    NoRequest,
    /// No byte in either direction and no request being handled for the idle timeout.
    Idle,
    /// The connection reached `keepAliveMaxTime`.
    MaxAge,
    /// The proxy drains (shutdown, or a restart of the entrypoint).
    Drain,
}

/// Fires when a connection should be closed for lack of activity.
async fn watchdog(
    header_timeout: Duration,
    idle: Option<Duration>,
    max_age: Option<Duration>,
    requests: &AtomicU64,
    in_flight: &AtomicUsize,
    io_ops: &AtomicU64,
) -> Watch {
    let first_request = async {
        tokio::time::sleep(header_timeout).await;
        if requests.load(Ordering::Relaxed) == 0 {
            return;
        }
        std::future::pending::<()>().await;
    };
    let idle_timeout = async {
        let Some(idle) = idle else {
            return std::future::pending::<()>().await;
        };
        // Checked a few times per period: the connection closes between `idle` and 1.25 x `idle`
        // of silence. Before the first request the header read timeout applies instead.
        let tick = (idle / 4).max(Duration::from_millis(10));
        let mut last = io_ops.load(Ordering::Relaxed);
        let mut quiet = Duration::ZERO;
        loop {
            tokio::time::sleep(tick).await;
            let now = io_ops.load(Ordering::Relaxed);
            if now != last
                || in_flight.load(Ordering::Relaxed) > 0
                || requests.load(Ordering::Relaxed) == 0
            {
                last = now;
                quiet = Duration::ZERO;
                continue;
            }
            quiet += tick;
            if quiet >= idle {
                return;
            }
        }
    };
    let age = async {
        match max_age {
            Some(a) => tokio::time::sleep(a).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = first_request => Watch::NoRequest,
        _ = idle_timeout => Watch::Idle,
        _ = age => Watch::MaxAge,
    }
}

/// Counts a request being handled until dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection's I/O, counting reads and writes that moved bytes (one relaxed increment each)
/// so that [`watchdog`] can tell an idle connection.
struct Activity<IO> {
    io: IO,
    ops: Arc<AtomicU64>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Activity<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.ops.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Activity<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.ops.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.ops.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Write coalescing for an HTTP/2 connection.
///
/// h2 flushes after every DATA frame of 256 bytes or more (it chains such payloads instead of
/// copying them into its write buffer, and flushes before the next frame). Over TLS each flush is
/// one record (encryption, tag, record allocation) and one `writev`: with many small responses
/// completing in one scheduler pass, every response paid its own record and system call.
/// `Cork` copies the writes of one poll of the connection into a buffer and answers the flushes
/// at once; the first of them wakes the connection's task again, and when that next poll starts
/// (h2 always reads first) the buffer goes out in one write. The responses that completed in
/// between (other tasks ran) share the record and the system call. Bounded: past
/// [`CORK_LIMIT`] buffered bytes a write goes out first (and waits for the socket).
struct Cork<IO> {
    io: IO,
    buf: Vec<u8>,
    /// The connection's task was woken to write `buf` out.
    scheduled: bool,
}

/// Most bytes held back: a few 16 KiB TLS records.
const CORK_LIMIT: usize = 64 * 1024;

impl<IO: AsyncWrite + Unpin> Cork<IO> {
    fn new(io: IO) -> Self {
        Cork {
            io,
            buf: Vec::new(),
            scheduled: false,
        }
    }

    /// Writes the buffer out and flushes; `Ready(Ok)` once all of it is with the socket.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut done = 0;
        let r = loop {
            if done == self.buf.len() {
                break Pin::new(&mut self.io).poll_flush(cx);
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.buf[done..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => done += n,
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        self.buf.drain(..done);
        if self.buf.is_empty() {
            self.scheduled = false;
        }
        r
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Cork<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.buf.is_empty()
            && let Poll::Ready(Err(e)) = self.poll_drain(cx)
        {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Cork<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_write_vectored(cx, &[std::io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.buf.len() >= CORK_LIMIT {
            std::task::ready!(self.poll_drain(cx))?;
        }
        let mut n = 0;
        for b in bufs {
            self.buf.extend_from_slice(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.buf.is_empty() {
            return Pin::new(&mut self.io).poll_flush(cx);
        }
        if !self.scheduled {
            self.scheduled = true;
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(parse_address(":80").unwrap().port(), 80);
        assert_eq!(
            parse_address("127.0.0.1:0/tcp").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            parse_address("[::1]:443").unwrap(),
            "[::1]:443".parse().unwrap()
        );
        assert!(parse_address(":http").unwrap_err().contains("port number"));
        assert!(parse_address(":53/udp").unwrap_err().contains("UDP"));
        assert!(parse_address("localhost").is_err());
    }
}
