//! Upstream for the proxy benchmark (`bench/proxy/run`), next to the fixed nginx upstream.
//!
//! - A WebSocket upgrade on any path: every text or binary message is echoed back.
//! - `GET /download?bytes=N`: streams N zero bytes in 64 KiB chunks, nothing buffered.
//! - `PUT` or `POST /upload[?rate_mib=R]`: drains the request body, at most R MiB/s when given
//!   (a slow reader makes a proxy that buffers the upload visible in its RSS), and answers with
//!   the number of bytes received.
//! - Anything else: `200 ok`.
//!
//! Usage: `ws-echo --listen 127.0.0.1:PORT [--threads N]`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

const CHUNK: usize = 64 * 1024;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// Response bodies: a fixed text, or N streamed zero bytes.
enum Out {
    Full(Option<Bytes>),
    Zeros(u64),
}

impl Body for Out {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        match this {
            Out::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Out::Zeros(left) => {
                if *left == 0 {
                    return Poll::Ready(None);
                }
                let n = (*left).min(CHUNK as u64);
                *left -= n;
                #[allow(clippy::cast_possible_truncation)]
                let chunk = Bytes::from_static(&ZEROS[..n as usize]);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Out::Full(b) => b.is_none(),
            Out::Zeros(left) => *left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Out::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Out::Full(None) => SizeHint::with_exact(0),
            Out::Zeros(left) => SizeHint::with_exact(*left),
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Out> {
    let mut resp = Response::new(Out::Full(Some(body.into())));
    *resp.status_mut() = status;
    resp
}

fn query_u64(req: &Request<Incoming>, name: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        if k == name { v.parse().ok() } else { None }
    })
}

fn ws_config() -> WebSocketConfig {
    // Small buffers: the upstream holds as many idle sockets as the proxy does.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

async fn echo<S>(mut ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(m) if m.is_text() || m.is_binary() => {
                if ws.send(m).await.is_err() {
                    return;
                }
            }
            Ok(m) if m.is_close() => return,
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

fn upgrade(req: Request<Incoming>) -> Response<Out> {
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    let accept = derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(ws_config()),
            )
            .await;
            echo(ws).await;
        }
    });
    let mut resp = text(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let h = resp.headers_mut();
    h.insert(
        UPGRADE,
        hyper::header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        CONNECTION,
        hyper::header::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = accept.parse() {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

async fn upload(req: Request<Incoming>) -> Response<Out> {
    let rate = query_u64(&req, "rate_mib").filter(|r| *r > 0);
    let mut body = req.into_body();
    let start = Instant::now();
    let mut received: u64 = 0;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => break,
            Some(Err(e)) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("body error after {received} bytes: {e}\n"),
                );
            }
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    received += data.len() as u64;
                }
            }
        }
        if let Some(r) = rate {
            #[allow(clippy::cast_precision_loss)]
            let due = Duration::from_secs_f64(received as f64 / (r as f64 * 1048576.0));
            let elapsed = start.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
    }
    text(StatusCode::OK, format!("{received}\n"))
}

async fn handle(req: Request<Incoming>) -> Result<Response<Out>, Infallible> {
    let is_ws = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_ws {
        return Ok(upgrade(req));
    }
    let path = req.uri().path();
    if path.starts_with("/upload") && (req.method() == Method::POST || req.method() == Method::PUT)
    {
        return Ok(upload(req).await);
    }
    if path.starts_with("/download") {
        let n = query_u64(&req, "bytes").unwrap_or(1024);
        return Ok(Response::new(Out::Zeros(n)));
    }
    Ok(text(StatusCode::OK, "ok\n"))
}

async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    eprintln!("ws-echo listening on {addr}");
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("ws-echo: accept: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .with_upgrades()
                .await;
        });
    }
}

fn main() -> anyhow::Result<()> {
    let mut listen: Option<SocketAddr> = None;
    let mut threads: usize = 1;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = Some(args.next().context("--listen needs ADDR")?.parse()?),
            "--threads" => threads = args.next().context("--threads needs N")?.parse()?,
            "-h" | "--help" => {
                println!("usage: ws-echo --listen 127.0.0.1:PORT [--threads N]");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    let listen = listen.context("--listen is required")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(serve(listen))
}
