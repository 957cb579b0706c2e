//! Client for the proxy benchmark (`bench/proxy/run`): holds many idle WebSockets.
//!
//! Opens `--count` WebSockets to `--url` (at most `--concurrency` handshakes in flight) and checks
//! each one with an echo. Then prints one JSON line `{"event":"open",...}` and holds every
//! connection idle, noticing any that the proxy closes, until a line arrives on stdin (or stdin
//! closes, or `--hold-secs` pass). Then every connection sends one more message and must get it
//! echoed; the result is a second JSON line `{"event":"check",...}`, and the process exits.
//!
//! Usage: `ws-hold --url ws://127.0.0.1:PORT/ws --count N [--concurrency C]
//!         [--timeout-secs T] [--hold-secs S]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

enum Outcome {
    OpenFailed,
    /// The proxy (or upstream) closed the connection, or sent something unexpected, while idle.
    Dropped,
    CheckFailed,
    Echoed,
}

struct Opts {
    url: String,
    count: usize,
    concurrency: usize,
    timeout: Duration,
    hold: Option<Duration>,
}

async fn echo_once(ws: &mut Ws, payload: String) -> anyhow::Result<()> {
    ws.send(Message::text(payload.clone())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str() == payload => return Ok(()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => bail!("unexpected message {other:?}"),
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection closed"),
        }
    }
}

async fn open(url: &str, i: usize, tmo: Duration) -> anyhow::Result<Ws> {
    let cfg = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _resp) = timeout(tmo, connect_async_with_config(url, Some(cfg), true))
        .await
        .context("handshake timed out")??;
    timeout(tmo, echo_once(&mut ws, format!("open {i}")))
        .await
        .context("first echo timed out")??;
    Ok(ws)
}

async fn conn(
    i: usize,
    url: Arc<str>,
    tmo: Duration,
    sem: Arc<Semaphore>,
    opened: mpsc::UnboundedSender<Result<(), String>>,
    mut check: watch::Receiver<bool>,
) -> Outcome {
    let res = {
        let _permit = sem.acquire().await;
        open(&url, i, tmo).await
    };
    let mut ws = match res {
        Ok(ws) => {
            let _ = opened.send(Ok(()));
            ws
        }
        Err(e) => {
            let _ = opened.send(Err(format!("{e:#}")));
            return Outcome::OpenFailed;
        }
    };
    drop(opened);
    loop {
        tokio::select! {
            r = check.wait_for(|go| *go) => {
                let _ = r;
                break;
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                _ => return Outcome::Dropped,
            },
        }
    }
    match timeout(tmo, echo_once(&mut ws, format!("check {i}"))).await {
        Ok(Ok(())) => Outcome::Echoed,
        _ => Outcome::CheckFailed,
    }
}

fn parse() -> anyhow::Result<Opts> {
    let mut o = Opts {
        url: String::new(),
        count: 100,
        concurrency: 256,
        timeout: Duration::from_secs(15),
        hold: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--url" => o.url = val()?,
            "--count" => o.count = val()?.parse()?,
            "--concurrency" => o.concurrency = val()?.parse()?,
            "--timeout-secs" => o.timeout = Duration::from_secs_f64(val()?.parse()?),
            "--hold-secs" => o.hold = Some(Duration::from_secs_f64(val()?.parse()?)),
            _ => bail!("unknown argument {a:?}"),
        }
    }
    if o.url.is_empty() {
        bail!("--url is required");
    }
    Ok(o)
}

async fn run(o: Opts) -> anyhow::Result<()> {
    let url: Arc<str> = o.url.into();
    let sem = Arc::new(Semaphore::new(o.concurrency.max(1)));
    let (check_tx, check_rx) = watch::channel(false);
    let (open_tx, mut open_rx) = mpsc::unbounded_channel();
    let mut set = JoinSet::new();
    let start = Instant::now();
    for i in 0..o.count {
        set.spawn(conn(
            i,
            url.clone(),
            o.timeout,
            sem.clone(),
            open_tx.clone(),
            check_rx.clone(),
        ));
    }
    drop(open_tx);

    // Phase 1: open everything (bounded: every handshake has its own timeout, and the whole
    // phase has one too).
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut first_error: Option<String> = None;
    let open_deadline = start + o.timeout * 4 + Duration::from_secs(60);
    while ok + failed < o.count {
        match tokio::time::timeout_at(open_deadline.into(), open_rx.recv()).await {
            Ok(Some(Ok(()))) => ok += 1,
            Ok(Some(Err(e))) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let open_secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"event\":\"open\",\"ok\":{ok},\"failed\":{failed},\"pending\":{},\"secs\":{open_secs:.3},\"first_error\":{}}}",
        o.count - ok - failed,
        json_str(first_error.as_deref())
    );

    // Phase 2: hold until told to check.
    let held = Instant::now();
    match o.hold {
        Some(d) => tokio::time::sleep(d).await,
        None => {
            let mut line = String::new();
            let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
            let _ = stdin.read_line(&mut line).await;
        }
    }
    let hold_secs = held.elapsed().as_secs_f64();

    // Phase 3: every connection echoes once more.
    let _ = check_tx.send(true);
    let (mut echoed, mut dropped, mut check_failed, mut open_failed) =
        (0usize, 0usize, 0usize, 0usize);
    let deadline = Instant::now() + o.timeout + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline.into(), set.join_next()).await {
            Ok(Some(Ok(outcome))) => match outcome {
                Outcome::Echoed => echoed += 1,
                Outcome::Dropped => dropped += 1,
                Outcome::CheckFailed => check_failed += 1,
                Outcome::OpenFailed => open_failed += 1,
            },
            Ok(Some(Err(_))) => check_failed += 1,
            Ok(None) => break,
            Err(_) => {
                check_failed += set.len();
                set.abort_all();
                break;
            }
        }
    }
    println!(
        "{{\"event\":\"check\",\"count\":{},\"echoed\":{echoed},\"dropped\":{dropped},\"check_failed\":{check_failed},\"open_failed\":{open_failed},\"hold_secs\":{hold_secs:.3}}}",
        o.count
    );
    Ok(())
}

fn json_str(s: Option<&str>) -> String {
    match s {
        None => "null".to_owned(),
        Some(s) => {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
    }
}

fn main() -> anyhow::Result<()> {
    let o = parse()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(o))
}
