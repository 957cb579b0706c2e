//! The floor under Gantry's HTTP/1.1 proxy: the same building blocks (hyper's HTTP/1.1 server and
//! client connections, tokio current-thread runtimes per worker on `SO_REUSEPORT` sockets,
//! mimalloc, a per-worker pool of upstream connections) with none of the features (no routing,
//! middlewares, header rewriting, metrics, timeouts, drain). Not a proxy to use: a measuring stick
//! for BENCHMARKS.md, to split Gantry's per-request CPU into "hyper + tokio" and "ours".
//!
//! `cargo build --release -p gantry-proxy --example floor_proxy`, then
//! `floor_proxy LISTEN UPSTREAM [WORKERS]`, e.g. `floor_proxy 127.0.0.1:18950 127.0.0.1:18931 2`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

thread_local! {
    /// This worker's upstream connections (most recently used last).
    static POOL: RefCell<Vec<client::SendRequest<Incoming>>> = const { RefCell::new(Vec::new()) };
}

async fn upstream_sender(upstream: SocketAddr) -> client::SendRequest<Incoming> {
    loop {
        let Some(s) = POOL.with(|p| p.borrow_mut().pop()) else {
            break;
        };
        if s.is_ready() {
            return s;
        }
        if !s.is_closed() {
            // Still reading its last response: keep it for later.
            POOL.with(|p| p.borrow_mut().insert(0, s));
            break;
        }
    }
    let stream = TcpStream::connect(upstream)
        .await
        .expect("connect upstream");
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = client::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::task::spawn_local(conn);
    sender
}

async fn handle(
    req: hyper::Request<Incoming>,
    upstream: SocketAddr,
) -> Result<hyper::Response<Incoming>, hyper::Error> {
    let mut sender = upstream_sender(upstream).await;
    let resp = sender.send_request(req).await;
    // Ready again once this response's body has been read (checked on the next checkout).
    POOL.with(|p| p.borrow_mut().push(sender));
    resp
}

fn main() {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().expect("LISTEN").parse().unwrap();
    let upstream: SocketAddr = args.next().expect("UPSTREAM").parse().unwrap();
    let workers: usize = args.next().map_or(2, |w| w.parse().unwrap());
    for _ in 0..workers {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let sock = socket2::Socket::new(
                    socket2::Domain::for_address(listen),
                    socket2::Type::STREAM,
                    None,
                )
                .unwrap();
                sock.set_reuse_address(true).unwrap();
                sock.set_reuse_port(true).unwrap();
                sock.set_nonblocking(true).unwrap();
                sock.bind(&listen.into()).unwrap();
                sock.listen(4096).unwrap();
                let listener = TcpListener::from_std(sock.into()).unwrap();
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    stream.set_nodelay(true).unwrap();
                    tokio::task::spawn_local(async move {
                        let svc = service_fn(move |req| handle(req, upstream));
                        let _ = server::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
    }
    // Until SIGINT, then exit (valgrind writes its profile at exit).
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(tokio::signal::ctrl_c())
        .unwrap();
    std::process::exit(0);
}
