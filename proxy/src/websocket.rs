//! WebSocket tunnels: after both sides agreed to upgrade, bytes are relayed both ways.
//!
//! The relay tracks frame boundaries in each direction (without decoding payloads), so the proxy can
//! inject a close frame of its own between frames: with code 1001 (going away) when it shuts down,
//! and when a tunnel has been idle longer than the entrypoint's `websocketIdleTimeout`. Tunnels live
//! outside configuration snapshots, so reloads never touch them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::context::RequestCtx;

/// Every open tunnel of the process, for shutdown and metrics.
#[derive(Debug, Default)]
pub struct Tunnels {
    close: CancellationToken,
    tracker: TaskTracker,
    open: AtomicUsize,
}

impl Tunnels {
    pub fn new() -> Arc<Self> {
        Arc::new(Tunnels::default())
    }

    /// Number of open tunnels.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Sends close 1001 on every tunnel and waits (up to `timeout`) for them to end.
    pub async fn close_all(&self, timeout: Duration) {
        self.close.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(timeout, self.tracker.wait()).await;
    }
}

/// Close status codes the proxy sends.
const GOING_AWAY: u16 = 1001;

/// Spawns the relay between the client's and the upstream's upgraded connections.
pub fn spawn_tunnel(client: OnUpgrade, upstream: OnUpgrade, ctx: &RequestCtx) {
    let tunnels = ctx.entrypoint.tunnels.clone();
    let idle = ctx.entrypoint.websocket_idle_timeout;
    let router = ctx.router.clone();
    let tracker = tunnels.tracker.clone();
    tracker.spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        tunnels.open.fetch_add(1, Ordering::Relaxed);
        let result = relay(
            TokioIo::new(client),
            TokioIo::new(upstream),
            idle,
            tunnels.close.clone(),
        )
        .await;
        tunnels.open.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(
            router = router.as_deref().unwrap_or(""),
            ?result,
            "websocket tunnel ended"
        );
    });
}

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    ClientClosed,
    UpstreamClosed,
    Idle,
    Shutdown,
    Error,
}

/// Follows the frame structure of one direction of a WebSocket byte stream (RFC 6455 section 5.2).
#[derive(Debug, Default, Clone)]
pub struct FrameTracker {
    header: [u8; 14],
    header_len: usize,
    remaining: u64,
}

impl FrameTracker {
    /// Consumes relayed bytes.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = (self.remaining.min(data.len() as u64)) as usize;
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            self.header[self.header_len] = data[0];
            self.header_len += 1;
            data = &data[1..];
            if let Some(payload) = self.header_complete() {
                self.remaining = payload;
                self.header_len = 0;
            }
        }
    }

    /// The payload length once the header buffered so far is complete.
    fn header_complete(&self) -> Option<u64> {
        let h = &self.header[..self.header_len];
        if h.len() < 2 {
            return None;
        }
        let masked = h[1] & 0x80 != 0;
        let mask_len = if masked { 4 } else { 0 };
        let (len_len, len) = match h[1] & 0x7f {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(u64::from(n))),
        };
        let need = 2 + len_len + mask_len;
        if h.len() < need {
            return None;
        }
        let len = len.unwrap_or_else(|| {
            h[2..2 + len_len]
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        });
        Some(len)
    }

    /// True between frames, where a frame of our own may be sent.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0 && self.header_len == 0
    }
}

/// A close frame with `code`; masked (as a client must) when sent towards the upstream.
pub fn close_frame(code: u16, masked: bool) -> Vec<u8> {
    let payload = code.to_be_bytes();
    if masked {
        let key: [u8; 4] = rand::random();
        let mut f = vec![0x88, 0x80 | 2];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    } else {
        vec![0x88, 2, payload[0], payload[1]]
    }
}

/// Size of the per-thread relay buffer (one TLS record).
const SCRATCH: usize = 16 * 1024;

thread_local! {
    /// Bytes are read into this buffer and written on at once; a tunnel owns memory only while the
    /// other side cannot take what it read (then just the unwritten rest, freed once written).
    /// So an idle tunnel holds no buffer at all, as HAProxy does.
    static SCRATCH_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

/// One direction of a tunnel.
#[derive(Debug, Default)]
struct Half {
    /// Read but not yet written (the writer pushed back); empty, without capacity, otherwise.
    pending: Vec<u8>,
    sent: usize,
    /// Bytes were written since the last flush.
    flush: bool,
    tracker: FrameTracker,
}

/// What one poll of a direction did.
enum Moved {
    Bytes,
    Eof,
}

/// Moves what `src` has to `dst` without a buffer of its own while both keep up.
fn pump<R, W>(
    cx: &mut Context<'_>,
    src: &mut R,
    dst: &mut W,
    half: &mut Half,
) -> Poll<std::io::Result<Moved>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while half.sent < half.pending.len() {
        match Pin::new(&mut *dst).poll_write(cx, &half.pending[half.sent..]) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                half.sent += n;
                half.flush = true;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    if half.sent > 0 {
        half.pending = Vec::new();
        half.sent = 0;
    }
    if half.flush {
        match Pin::new(&mut *dst).poll_flush(cx) {
            Poll::Ready(Ok(())) => half.flush = false,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    SCRATCH_BUF.with(|cell| {
        let mut guard;
        let mut fallback;
        let buf: &mut [u8] = match cell.try_borrow_mut() {
            Ok(g) => {
                guard = g;
                &mut guard[..]
            }
            // Not reachable (polling I/O does not poll other tunnels), but cheap to survive.
            Err(_) => {
                fallback = vec![0u8; 4096];
                &mut fallback[..]
            }
        };
        let mut rb = ReadBuf::new(buf);
        match Pin::new(&mut *src).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        let n = rb.filled().len();
        if n == 0 {
            return Poll::Ready(Ok(Moved::Eof));
        }
        let data = &buf[..n];
        half.tracker.feed(data);
        half.flush = true;
        let mut off = 0;
        while off < n {
            match Pin::new(&mut *dst).poll_write(cx, &data[off..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(k)) => off += k,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    half.pending = data[off..].to_vec();
                    half.sent = 0;
                    break;
                }
            }
        }
        Poll::Ready(Ok(Moved::Bytes))
    })
}

/// What [`step`] saw.
enum Step {
    Progress,
    ClientEof,
    UpstreamEof,
    Error,
}

/// Moves bytes both ways; ready when something moved or a side ended.
fn step<C, U>(
    cx: &mut Context<'_>,
    client: &mut C,
    upstream: &mut U,
    to_upstream: &mut Half,
    to_client: &mut Half,
) -> Poll<Step>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut progress = false;
    match pump(cx, client, upstream, to_upstream) {
        Poll::Ready(Ok(Moved::Bytes)) => progress = true,
        Poll::Ready(Ok(Moved::Eof)) => return Poll::Ready(Step::ClientEof),
        Poll::Ready(Err(_)) => return Poll::Ready(Step::Error),
        Poll::Pending => {}
    }
    match pump(cx, upstream, client, to_client) {
        Poll::Ready(Ok(Moved::Bytes)) => progress = true,
        Poll::Ready(Ok(Moved::Eof)) => return Poll::Ready(Step::UpstreamEof),
        Poll::Ready(Err(_)) => return Poll::Ready(Step::Error),
        Poll::Pending => {}
    }
    if progress {
        Poll::Ready(Step::Progress)
    } else {
        Poll::Pending
    }
}

/// Writes what a direction still holds.
async fn finish<W: AsyncWrite + Unpin>(dst: &mut W, half: &mut Half) -> std::io::Result<()> {
    if half.sent < half.pending.len() {
        dst.write_all(&half.pending[half.sent..]).await?;
    }
    half.pending = Vec::new();
    half.sent = 0;
    dst.flush().await
}

/// Relays until one side closes, the tunnel idles out, or `close` fires.
pub async fn relay<C, U>(
    mut client: C,
    mut upstream: U,
    idle: Duration,
    close: CancellationToken,
) -> TunnelEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut to_upstream = Half::default();
    let mut to_client = Half::default();
    let mut closing: Option<TunnelEnd> = None;
    loop {
        if let Some(end) = closing
            && to_upstream.tracker.at_boundary()
            && to_client.tracker.at_boundary()
        {
            if finish(&mut client, &mut to_client).await.is_ok() {
                let _ = client.write_all(&close_frame(GOING_AWAY, false)).await;
            }
            if finish(&mut upstream, &mut to_upstream).await.is_ok() {
                let _ = upstream.write_all(&close_frame(GOING_AWAY, true)).await;
            }
            let _ = client.shutdown().await;
            let _ = upstream.shutdown().await;
            return end;
        }
        let deadline = if closing.is_some() {
            // Mid-frame at shutdown: give the frame a moment to finish, then cut.
            Duration::from_secs(2)
        } else {
            idle
        };
        tokio::select! {
            s = std::future::poll_fn(|cx| {
                step(cx, &mut client, &mut upstream, &mut to_upstream, &mut to_client)
            }) => match s {
                Step::Progress => {}
                Step::ClientEof => {
                    let _ = finish(&mut upstream, &mut to_upstream).await;
                    let _ = upstream.shutdown().await;
                    return TunnelEnd::ClientClosed;
                }
                Step::UpstreamEof => {
                    let _ = finish(&mut client, &mut to_client).await;
                    let _ = client.shutdown().await;
                    return TunnelEnd::UpstreamClosed;
                }
                Step::Error => return TunnelEnd::Error,
            },
            _ = close.cancelled(), if closing.is_none() => closing = Some(TunnelEnd::Shutdown),
            _ = tokio::time::sleep(deadline) => {
                if closing.is_some() {
                    return TunnelEnd::Shutdown;
                }
                closing = Some(TunnelEnd::Idle);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_follows_frames_split_anywhere() {
        // A masked 300-byte binary frame (16-bit length), then a small unmasked text frame.
        let mut stream = vec![0x82, 0x80 | 126, 0x01, 0x2c, 1, 2, 3, 4];
        stream.extend(std::iter::repeat_n(0xAA, 300));
        stream.extend([0x81, 0x03, b'a', b'b', b'c']);
        for split in [1, 2, 3, 7, 100, 308, 309, 310] {
            let mut t = FrameTracker::default();
            t.feed(&stream[..split]);
            assert!(!t.at_boundary() || split == 308, "split {split}");
            t.feed(&stream[split..]);
            assert!(t.at_boundary(), "split {split}");
        }
        let mut t = FrameTracker::default();
        t.feed(&stream[..308]);
        assert!(t.at_boundary());
        t.feed(&stream[308..310]);
        assert!(!t.at_boundary());
    }

    #[test]
    fn close_frames() {
        assert_eq!(close_frame(1001, false), vec![0x88, 2, 0x03, 0xe9]);
        let m = close_frame(1001, true);
        assert_eq!(m.len(), 8);
        assert_eq!(m[1], 0x82);
        assert_eq!([m[6] ^ m[2], m[7] ^ m[3]], [0x03, 0xe9]);
    }
}
