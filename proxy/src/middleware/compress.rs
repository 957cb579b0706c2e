//! `compress`: gzip, brotli or zstd, chosen from the request's Accept-Encoding (q-values, then the
//! order of `encodings`; `*` means `defaultEncoding` or the first encoding), streamed through
//! async-compression so a response is never held whole.
//!
//! Not compressed, as in Traefik: HEAD requests, requests whose own Content-Type is excluded
//! (`application/grpc` always is), responses that are already encoded, have no body (1xx, 204,
//! 304), are partial (206, Content-Range), have an excluded (or not included) Content-Type, or are
//! smaller than `minResponseBodyBytes` (1024). When the length is unknown, the frames the upstream
//! has already sent are looked at; if the body ends below the minimum it goes out as is, otherwise
//! compression starts and later frames are compressed and flushed as they arrive (so event
//! streams keep flowing). Whenever an encoding was negotiated the response varies on
//! Accept-Encoding.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::Level;
use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use tokio_util::io::{ReaderStream, StreamReader};

use super::Next;
use crate::body::{Body, BoxError, Request, Response};
use crate::config::dynamic;
use crate::context::RequestCtx;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Zstd,
    Brotli,
    Gzip,
}

impl Encoding {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "zstd" => Some(Encoding::Zstd),
            "br" => Some(Encoding::Brotli),
            "gzip" => Some(Encoding::Gzip),
            _ => None,
        }
    }

    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Encoding::Zstd => "zstd",
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        })
    }
}

/// A media type with its parameters, lowercased (Go's `mime.ParseMediaType`).
#[derive(Debug, Clone, PartialEq)]
struct MediaType {
    essence: String,
    params: Vec<(String, String)>,
}

impl MediaType {
    fn parse(s: &str) -> Option<MediaType> {
        let mut parts = s.split(';');
        let essence = parts.next()?.trim().to_ascii_lowercase();
        let (ty, sub) = essence.split_once('/')?;
        let token = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
        };
        if !token(ty) || !token(sub) {
            return None;
        }
        let mut params = Vec::new();
        for p in parts {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            let (k, v) = p.split_once('=')?;
            params.push((
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_owned(),
            ));
        }
        Some(MediaType { essence, params })
    }

    /// A configured type matches when the essence is equal and, if it has parameters, they are
    /// exactly the response's.
    fn matches(&self, other: &MediaType) -> bool {
        if self.essence != other.essence {
            return false;
        }
        if self.params.is_empty() {
            return true;
        }
        self.params.len() == other.params.len()
            && self
                .params
                .iter()
                .all(|(k, v)| other.params.iter().any(|(k2, v2)| k == k2 && v == v2))
    }
}

#[derive(Debug)]
pub(crate) struct Compress {
    /// Request and response types never compressed (always `application/grpc`).
    excluded: Vec<MediaType>,
    /// When set, only these response types are compressed.
    included: Vec<MediaType>,
    min_size: u64,
    /// In priority order.
    encodings: Vec<Encoding>,
    default: Option<Encoding>,
}

impl Compress {
    pub(crate) fn compile(cfg: &dynamic::Compress) -> Result<Self, String> {
        if !cfg.excluded_content_types.is_empty() && !cfg.included_content_types.is_empty() {
            return Err(
                "compress: excludedContentTypes and includedContentTypes are mutually exclusive"
                    .into(),
            );
        }
        let types = |list: &[String], what: &str| -> Result<Vec<MediaType>, String> {
            list.iter()
                .enumerate()
                .map(|(i, t)| {
                    MediaType::parse(t)
                        .ok_or_else(|| format!("compress.{what}[{i}]: `{t}` is not a media type"))
                })
                .collect()
        };
        let mut excluded = vec![MediaType {
            essence: "application/grpc".into(),
            params: Vec::new(),
        }];
        excluded.extend(types(&cfg.excluded_content_types, "excludedContentTypes")?);
        let included = types(&cfg.included_content_types, "includedContentTypes")?;
        let names: Vec<&str> = if cfg.encodings.is_empty() {
            vec!["zstd", "br", "gzip"]
        } else {
            cfg.encodings.iter().map(String::as_str).collect()
        };
        let mut encodings = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let e = Encoding::parse(n).ok_or_else(|| {
                format!("compress.encodings[{i}]: unsupported encoding `{n}` (zstd, br or gzip)")
            })?;
            if !encodings.contains(&e) {
                encodings.push(e);
            }
        }
        let default = match cfg.default_encoding.as_deref().filter(|d| !d.is_empty()) {
            None => None,
            Some(d) => Some(
                Encoding::parse(d)
                    .filter(|e| encodings.contains(e))
                    .ok_or_else(|| {
                        format!("compress.defaultEncoding: `{d}` is not one of the encodings")
                    })?,
            ),
        };
        Ok(Compress {
            excluded,
            included,
            min_size: cfg
                .min_response_body_bytes
                .filter(|m| *m > 0)
                .unwrap_or(1024),
            encodings,
            default,
        })
    }

    /// The encoding to use for a request's Accept-Encoding lines, as Traefik picks it.
    fn negotiate(&self, headers: &HeaderMap) -> Option<Encoding> {
        let mut lines = headers.get_all(header::ACCEPT_ENCODING).iter().peekable();
        if lines.peek().is_none() {
            return self.default;
        }
        // (priority: lower is better, -1 for `*`; weight)
        let mut best: Option<(i64, f64, Option<Encoding>)> = None;
        let mut only_empty = true;
        for line in lines {
            let line = line.to_str().unwrap_or("");
            if !line.trim().is_empty() {
                only_empty = false;
            }
            for item in line.split(',') {
                let mut it = item.split(';');
                let name = it.next().unwrap_or("").trim();
                let (prio, enc) = match name {
                    "*" => (-1, None),
                    "identity" => (self.encodings.len() as i64, None),
                    n => match Encoding::parse(n)
                        .and_then(|e| self.encodings.iter().position(|x| *x == e).map(|p| (p, e)))
                    {
                        Some((p, e)) => (p as i64, Some(e)),
                        None => continue,
                    },
                };
                let mut weight = 1.0;
                if let Some(q) = it.next().map(str::trim).and_then(|p| p.strip_prefix("q=")) {
                    weight = q.trim().parse().unwrap_or(0.0);
                    if weight == 0.0 {
                        continue;
                    }
                }
                let better = match best {
                    None => true,
                    Some((bp, bw, _)) => weight > bw || (weight == bw && prio < bp),
                };
                if better {
                    let enc = if name == "*" {
                        Some(self.default.unwrap_or(self.encodings[0]))
                    } else {
                        enc
                    };
                    best = Some((prio, weight, enc));
                }
            }
        }
        if only_empty {
            return None;
        }
        best.and_then(|(_, _, e)| e)
    }

    fn excluded_request(&self, req: &Request) -> bool {
        req.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(MediaType::parse)
            .is_some_and(|t| self.excluded.iter().any(|e| e.essence == t.essence))
    }

    /// Whether the response's headers allow compressing it.
    fn compressible(&self, resp: &Response) -> bool {
        let s = resp.status();
        if s.is_informational()
            || s == StatusCode::NO_CONTENT
            || s == StatusCode::NOT_MODIFIED
            || s == StatusCode::PARTIAL_CONTENT
        {
            return false;
        }
        let h = resp.headers();
        if h.contains_key(header::CONTENT_ENCODING) || h.contains_key(header::CONTENT_RANGE) {
            return false;
        }
        match h.get(header::CONTENT_TYPE).map(|v| v.to_str()) {
            None => self.included.is_empty(),
            Some(Err(_)) => false,
            Some(Ok(ct)) => match MediaType::parse(ct) {
                None => false,
                Some(t) if !self.included.is_empty() => self.included.iter().any(|i| i.matches(&t)),
                Some(t) => !self.excluded.iter().any(|e| e.matches(&t)),
            },
        }
    }

    pub(crate) async fn handle(
        &self,
        req: Request,
        ctx: &mut RequestCtx,
        next: Next<'_>,
    ) -> Response {
        if req.method() == Method::HEAD || self.excluded_request(&req) {
            return next.run(req, ctx).await;
        }
        let Some(encoding) = self.negotiate(req.headers()) else {
            return next.run(req, ctx).await;
        };
        let mut resp = next.run(req, ctx).await;
        add_vary(resp.headers_mut());
        if !self.compressible(&resp) {
            return resp;
        }
        let (mut parts, mut body) = resp.into_parts();
        let known = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| body.size_hint().exact());
        let mut prefix = VecDeque::new();
        match known {
            Some(len) if len < self.min_size => {
                return http::Response::from_parts(parts, body);
            }
            Some(_) => {}
            None => {
                // Look at what the upstream has sent so far: wait for the first frame, then take
                // whatever else is ready without waiting.
                let mut seen: u64 = 0;
                let mut ended = false;
                let mut first = true;
                while seen < self.min_size {
                    let frame = if first {
                        first = false;
                        body.frame().await
                    } else {
                        match body.frame().now_or_never() {
                            Some(f) => f,
                            None => break,
                        }
                    };
                    match frame {
                        None => {
                            ended = true;
                            break;
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "compress: upstream body failed");
                            let err: Result<Frame<Bytes>, BoxError> = Err(e);
                            prefix.push_back(err);
                            ended = true;
                            break;
                        }
                        Some(Ok(f)) => {
                            if let Some(d) = f.data_ref() {
                                seen += d.len() as u64;
                            }
                            prefix.push_back(Ok(f));
                        }
                    }
                }
                if ended && seen < self.min_size {
                    // Small and complete: send it as it is, with its length now known.
                    return http::Response::from_parts(parts, small_body(prefix));
                }
                if ended {
                    body = Body::empty();
                }
            }
        }
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::ACCEPT_RANGES);
        parts
            .headers
            .insert(header::CONTENT_ENCODING, encoding.header());
        let input = StreamReader::new(DataStream { prefix, body });
        let body = match encoding {
            Encoding::Gzip => encoded(GzipEncoder::with_quality(input, Level::Default)),
            Encoding::Zstd => encoded(ZstdEncoder::with_quality(input, Level::Default)),
            Encoding::Brotli => {
                // Quality 5 with a 1 MiB window: most of brotli's gain at a fraction of the CPU
                // and memory of its defaults (quality 11, 4 MiB).
                let params = async_compression::brotli::EncoderParams::default()
                    .quality(Level::Precise(5))
                    .window_size(20);
                encoded(BrotliEncoder::with_params(input, params))
            }
        };
        http::Response::from_parts(parts, body)
    }
}

/// A short body already read: one buffer when it is only data, else the frames as they came.
fn small_body(frames: VecDeque<Result<Frame<Bytes>, BoxError>>) -> Body {
    if frames.iter().all(|f| f.as_ref().is_ok_and(Frame::is_data)) {
        let mut buf = bytes::BytesMut::new();
        for f in frames.into_iter().flatten() {
            if let Ok(d) = f.into_data() {
                buf.extend_from_slice(&d);
            }
        }
        return Body::full(buf.freeze());
    }
    Body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
        frames,
    )))
}

fn add_vary(h: &mut HeaderMap) {
    let present = h.get_all(header::VARY).iter().any(|v| {
        v.to_str().unwrap_or("").split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.eq_ignore_ascii_case("accept-encoding")
        })
    });
    if !present {
        h.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

fn encoded<R>(reader: R) -> Body
where
    R: tokio::io::AsyncRead + Send + 'static,
{
    let stream = ReaderStream::with_capacity(reader, 16 * 1024)
        .map(|chunk| chunk.map(Frame::data).map_err(BoxError::from));
    Body::boxed(http_body_util::StreamBody::new(stream))
}

/// The response's data: frames already read, then the rest of the body (trailers dropped).
struct DataStream {
    prefix: VecDeque<Result<Frame<Bytes>, BoxError>>,
    body: Body,
}

impl Stream for DataStream {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let next = match self.prefix.pop_front() {
                Some(f) => Some(f),
                None => match Pin::new(&mut self.body).poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(f) => f,
                },
            };
            match next {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(std::io::Error::other(e)))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::MiddlewareState;
    use super::super::testutil::{body_bytes, ctx_from, mw, request, run, try_mw};
    use super::*;
    use crate::service::Service;
    use tokio::io::AsyncReadExt;

    fn cfg(yaml: &str) -> Compress {
        let c: dynamic::Compress = serde_yaml_ng::from_str(yaml).unwrap();
        Compress::compile(&c).unwrap()
    }

    fn ae(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, v.parse().unwrap());
        h
    }

    #[test]
    fn negotiation_follows_traefik() {
        let c = cfg("{}");
        assert_eq!(c.negotiate(&HeaderMap::new()), None);
        assert_eq!(c.negotiate(&ae("")), None);
        assert_eq!(c.negotiate(&ae("gzip")), Some(Encoding::Gzip));
        // Same weight: the order of `encodings` (zstd, br, gzip) decides.
        assert_eq!(c.negotiate(&ae("gzip, br, zstd")), Some(Encoding::Zstd));
        assert_eq!(
            c.negotiate(&ae("gzip;q=1.0, br;q=0.5")),
            Some(Encoding::Gzip)
        );
        assert_eq!(c.negotiate(&ae("br;q=0, gzip;q=0.1")), Some(Encoding::Gzip));
        assert_eq!(c.negotiate(&ae("*")), Some(Encoding::Zstd));
        assert_eq!(c.negotiate(&ae("identity")), None);
        assert_eq!(c.negotiate(&ae("deflate")), None);
        assert_eq!(c.negotiate(&ae("identity;q=1, gzip;q=0.5")), None);
        let c = cfg("{encodings: [gzip, br], defaultEncoding: br}");
        assert_eq!(c.negotiate(&HeaderMap::new()), Some(Encoding::Brotli));
        assert_eq!(c.negotiate(&ae("*")), Some(Encoding::Brotli));
        assert_eq!(c.negotiate(&ae("zstd")), None);
        assert_eq!(c.negotiate(&ae("br, gzip")), Some(Encoding::Gzip));
    }

    #[test]
    fn compile_errors() {
        let st = MiddlewareState::default();
        let e = try_mw("compress: {encodings: [gzip, lz4]}", &st).unwrap_err();
        assert!(
            e.starts_with("compress.encodings[1]: unsupported encoding `lz4`"),
            "{e}"
        );
        let e = try_mw("compress: {encodings: [gzip], defaultEncoding: br}", &st).unwrap_err();
        assert!(e.contains("defaultEncoding"), "{e}");
        let e = try_mw(
            "compress: {excludedContentTypes: [text/plain], includedContentTypes: [text/html]}",
            &st,
        )
        .unwrap_err();
        assert!(e.contains("mutually exclusive"), "{e}");
    }

    fn text_service(len: usize, ct: &'static str) -> Service {
        Service::from_fn("s@internal", move |_r, _c| async move {
            let mut resp = http::Response::new(Body::full("x".repeat(len)));
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            resp
        })
    }

    async fn fetch(yaml: &str, svc: &Service, accept: &str) -> Response {
        let mut req = request("GET", "/");
        req.headers_mut()
            .insert(header::ACCEPT_ENCODING, accept.parse().unwrap());
        run(&[mw(yaml)], svc, req, ctx_from("1.1.1.1:1")).await.0
    }

    async fn decode(enc: &str, data: &[u8]) -> Vec<u8> {
        use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
        let mut out = Vec::new();
        match enc {
            "gzip" => GzipDecoder::new(data).read_to_end(&mut out).await,
            "br" => BrotliDecoder::new(data).read_to_end(&mut out).await,
            "zstd" => ZstdDecoder::new(data).read_to_end(&mut out).await,
            _ => unreachable!(),
        }
        .unwrap();
        out
    }

    #[tokio::test]
    async fn compresses_each_encoding() {
        let svc = text_service(5000, "text/plain");
        for enc in ["gzip", "br", "zstd"] {
            let r = fetch("compress: {}", &svc, enc).await;
            assert_eq!(r.headers()[header::CONTENT_ENCODING], enc);
            assert_eq!(r.headers()[header::VARY], "Accept-Encoding");
            assert!(r.headers().get(header::CONTENT_LENGTH).is_none());
            let body = body_bytes(r).await;
            assert!(body.len() < 5000);
            assert_eq!(decode(enc, &body).await, "x".repeat(5000).as_bytes());
        }
    }

    #[tokio::test]
    async fn skips_small_excluded_and_encoded_responses() {
        let r = fetch("compress: {}", &text_service(100, "text/plain"), "gzip").await;
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(r.headers()[header::VARY], "Accept-Encoding");
        let r = fetch(
            "compress: {minResponseBodyBytes: 50}",
            &text_service(100, "text/plain"),
            "gzip",
        )
        .await;
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
        let r = fetch(
            "compress: {excludedContentTypes: [text/plain]}",
            &text_service(5000, "text/plain; charset=utf-8"),
            "gzip",
        )
        .await;
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
        let r = fetch(
            "compress: {includedContentTypes: [text/html]}",
            &text_service(5000, "text/plain"),
            "gzip",
        )
        .await;
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
        let r = fetch(
            "compress: {}",
            &text_service(5000, "application/grpc"),
            "gzip",
        )
        .await;
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
        let svc = Service::from_fn("s@internal", |_r, _c| async {
            let mut resp = http::Response::new(Body::full("y".repeat(5000)));
            resp.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
            resp
        });
        let r = fetch("compress: {}", &svc, "gzip").await;
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "br");
        let svc = Service::from_fn("s@internal", |_r, _c| async {
            let mut resp = http::Response::new(Body::full("y".repeat(5000)));
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            resp
        });
        let r = fetch("compress: {}", &svc, "gzip").await;
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
    }

    #[tokio::test]
    async fn small_streamed_bodies_go_out_uncompressed_with_a_length() {
        let svc = Service::from_fn("s@internal", |_r, _c| async {
            let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
                Ok(Frame::data(Bytes::from_static(b"abc"))),
                Ok(Frame::data(Bytes::from_static(b"def"))),
            ];
            http::Response::new(Body::boxed(http_body_util::StreamBody::new(
                futures_util::stream::iter(frames),
            )))
        });
        let r = fetch("compress: {}", &svc, "gzip").await;
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(r.body().size_hint().exact(), Some(6));
        assert_eq!(&body_bytes(r).await[..], b"abcdef");
    }

    #[tokio::test]
    async fn streams_unknown_length_bodies() {
        // A streamed body: the first frame arrives, the rest only when we send it.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(rx)));
        let svc = Service::from_fn("s@internal", move |_r, _c| {
            let rx = rx.clone();
            async move {
                let rx = rx.lock().await.take().unwrap();
                let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv()
                        .await
                        .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
                });
                http::Response::new(Body::boxed(http_body_util::StreamBody::new(stream)))
            }
        });
        tx.send(Bytes::from_static(b"data: first\n\n"))
            .await
            .unwrap();
        let r = fetch("compress: {}", &svc, "gzip").await;
        // Fewer than 1024 bytes so far, but the stream is still open: compress and flush.
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
        let mut body = r.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        let mut got = first.to_vec();
        tx.send(Bytes::from_static(b"data: second\n\n"))
            .await
            .unwrap();
        drop(tx);
        while let Some(f) = body.frame().await {
            got.extend_from_slice(&f.unwrap().into_data().unwrap());
        }
        assert_eq!(
            decode("gzip", &got).await,
            b"data: first\n\ndata: second\n\n"
        );
    }
}
