//! The connection manager's own HTTP/1.1 server for the requests a sidecar sees most: a
//! request head and a small body with a known length, answered with a streamed response.
//!
//! Why not hyper's server here: hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for
//! the life of every connection, so an idle keep-alive connection costs about 20 KiB, and its
//! dispatcher adds work per request. This loop holds no buffer while the connection is idle
//! (it waits for readability first and frees the read buffer once a request is consumed),
//! parses the head with httparse straight into `http` types whose values share the read
//! buffer, and writes the response head and a body that is already there in one write.
//!
//! Anything else is handed, with the bytes read so far, to hyper for the rest of the
//! connection ([`Outcome::Handoff`]): HTTP/2 prior knowledge, `Upgrade`, `CONNECT`, `Expect`,
//! chunked or larger request bodies, HTTP/1.0. hyper then parses the same request again;
//! every head has passed our framing rules (`crate::framing`) first (see `gate` for the
//! requests after it).

use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Body;
use mesh_drain::{State, Watch};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::body::{DownstreamBody, ResponseBody};
use super::gate::Gate;
use super::headers::X_ENVOY_UPSTREAM_SERVICE_TIME;
use super::{ConnCtx, Started, forward};
use crate::buffers::{self, READ_CHUNK};
use crate::framing::{self, BodyLength};
use crate::metrics::HttpStats;

/// Largest request body this server reads itself; longer ones go to hyper, which streams.
const MAX_BUFFERED_BODY: u64 = 64 * 1024;
/// A body frame at most this long is copied behind the response head, so both leave in one
/// write.
const COALESCE_LIMIT: usize = 16 * 1024;
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How the connection ended here.
pub(crate) enum Outcome {
    /// Closed (by either side, a timeout, an error, or the drain deadline).
    Closed,
    /// The rest of the connection is for hyper, starting with these unparsed bytes.
    Handoff(Prefixed),
}

/// What a complete request head told us.
/// What ends an idle connection's wait for its next request.
enum IdleEvent {
    /// The socket is readable (false: its readiness failed).
    Readable(bool),
    Abort,
    Timer,
}

enum Head {
    /// Serve it here: `len` bytes of head, then `body_len` bytes of body.
    Fast(Parsed),
    /// Let hyper serve it.
    Handoff,
    /// Answer this status and close (malformed, or too large).
    Reject(StatusCode),
}

/// A request head, with its target and header values as ranges of the read buffer so that
/// they can share it once it is frozen instead of being copied.
struct Parsed {
    method: Method,
    target: Range<usize>,
    headers: buffers::HeaderList,
    len: usize,
    body_len: usize,
    /// `Connection: close`.
    close: bool,
}

/// Serves requests until the connection closes or needs hyper.
pub(crate) async fn serve(ctx: &Arc<ConnCtx>, mut stream: TcpStream, drain: &mut Watch) -> Outcome {
    let hcm = &ctx.listener.hcm;
    let stats = &ctx.listener.stats;
    let head_limit = hcm.max_request_headers_bytes.max(1024);
    let idle_timeout = hcm.idle_timeout.filter(|d| !d.is_zero());
    let limits = ReadLimits::of(hcm);
    let mut first = true;
    // Until its first request is complete the connection may be shed at the connection limit.
    let mut unproven = true;
    let mut buf = BytesMut::new();
    // One abort watch and one timer for the connection's life, not per request: each new one
    // would register a waiter or a timer entry. The timer is the idle timeout between
    // requests and is lent to each request for its route timeout.
    let mut abort_rx = drain.clone();
    // Never marked as seen: says whether the drain state ever changed, for one atomic load.
    let drain_probe = drain.clone();
    let abort = async move { abort_rx.aborted().await };
    tokio::pin!(abort);
    // Boxed, because it is lent to (moved into) each request's future and comes back with
    // its response.
    let mut idle = Box::pin(tokio::time::sleep(
        idle_timeout.unwrap_or(Duration::from_secs(3600)),
    ));
    let mut last_active = Instant::now();
    // Whether the abort future has this task's waker, and the timer deadline it was last
    // polled for here (see the idle wait below).
    let mut abort_armed = false;
    let mut armed_at: Option<Instant> = None;
    loop {
        if buf.is_empty() {
            // Idle: hold no buffer, wait for bytes, the idle timeout or the drain deadline.
            buffers::put(std::mem::take(&mut buf));
            loop {
                // Asked by hand rather than with `select!`: the abort future and the timer
                // keep the waker from their last poll (every poll comes from this task), so
                // between requests they need asking only when something about them changed,
                // and the socket's readiness is asked without a waiter of its own.
                let event = std::future::poll_fn(|cx| {
                    if let Poll::Ready(ready) = stream.poll_read_ready(cx) {
                        return Poll::Ready(IdleEvent::Readable(ready.is_ok()));
                    }
                    if !abort_armed || drain_probe.has_changed() {
                        if abort.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(IdleEvent::Abort);
                        }
                        abort_armed = true;
                    }
                    // The request may have moved the timer (a new deadline, not yet polled
                    // here) or it may have fired: then it is asked again.
                    if idle_timeout.is_some()
                        && (armed_at != Some(idle.deadline()) || idle.is_elapsed())
                    {
                        if idle.as_mut().poll(cx).is_ready() {
                            armed_at = None;
                            return Poll::Ready(IdleEvent::Timer);
                        }
                        armed_at = Some(idle.deadline());
                    }
                    Poll::Pending
                })
                .await;
                match event {
                    IdleEvent::Readable(false) | IdleEvent::Abort => return Outcome::Closed,
                    IdleEvent::Readable(true) => {
                        // Readiness can be stale, so the connection stays idle (and holds
                        // no buffer) until bytes really arrive. A read through AsyncRead
                        // clears readiness when it comes back short, which saves the next
                        // wait a read that would block.
                        buf = buffers::take();
                        match poll_once(stream.read_buf(&mut buf)).await {
                            Poll::Ready(Ok(0) | Err(_)) => return Outcome::Closed,
                            Poll::Ready(Ok(_)) => break,
                            Poll::Pending => buffers::put(std::mem::take(&mut buf)),
                        }
                    }
                    IdleEvent::Timer => {
                        let Some(timeout) = idle_timeout else {
                            continue;
                        };
                        let idle_at = last_active + timeout;
                        if Instant::now() >= idle_at {
                            stats.downstream_cx_idle_timeout.inc();
                            return Outcome::Closed;
                        }
                        // Busy since the timer was set: wait out the rest.
                        idle.as_mut().reset(idle_at);
                    }
                }
            }
        }

        // Read until the head is complete. The deadlines run from when the head turned out
        // not to have come whole in the first read (a clock read saved on nearly every
        // request), microseconds after its first byte.
        let mut deadlines: Option<Deadlines> = None;
        let head = loop {
            if !buf.is_empty() {
                if first {
                    let n = buf.len().min(PREFACE.len());
                    if buf[..n] == PREFACE[..n] {
                        if n == PREFACE.len() {
                            ctx.guard.request_seen();
                            return Outcome::Handoff(Prefixed::new(buf.freeze(), stream));
                        }
                    } else {
                        first = false;
                    }
                }
                if !first {
                    match parse_head(&buf, head_limit) {
                        Ok(Some(head)) => break head,
                        Ok(None) => {}
                        Err(status) => break Head::Reject(status),
                    }
                }
            }
            if buf.len() >= head_limit {
                break Head::Reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            }
            let (deadline, why) = deadlines
                .get_or_insert_with(|| limits.start(Instant::now()))
                .head();
            match read_more(&mut stream, &mut buf, Some(deadline)).await {
                Ok(true) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    let _ = write_timeout(ctx, &mut stream, why).await;
                    return Outcome::Closed;
                }
                // Closed before a whole head: nothing to answer.
                Ok(false) | Err(_) => return Outcome::Closed,
            }
        };

        if unproven && !matches!(head, Head::Reject(_)) {
            unproven = false;
            ctx.guard.request_seen();
        }
        let parsed = match head {
            Head::Fast(parsed) => parsed,
            Head::Handoff => return Outcome::Handoff(Prefixed::http1(buf, stream, ctx)),
            Head::Reject(status) => {
                let _ = write_reject(&mut stream, status).await;
                return Outcome::Closed;
            }
        };
        let (head_len, body_len, close) = (parsed.len, parsed.body_len, parsed.close);
        while buf.len() < head_len + body_len {
            // A body that stops arriving is bounded by the stream idle timeout, as in Envoy,
            // and the whole request by the request timeout.
            let (deadline, why) = deadlines
                .get_or_insert_with(|| limits.start(Instant::now()))
                .body(Instant::now());
            match read_more(&mut stream, &mut buf, Some(deadline)).await {
                Ok(true) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    let _ = write_timeout(ctx, &mut stream, why).await;
                    return Outcome::Closed;
                }
                Ok(false) | Err(_) => return Outcome::Closed,
            }
        }
        let head_bytes = buf.split_to(head_len).freeze();
        // Nearly all requests have no body: no split (a reference count up and down).
        let body = if body_len == 0 {
            Bytes::new()
        } else {
            buf.split_to(body_len).freeze()
        };
        // A draining listener's connections answer `Connection: close` (see `Started`); an
        // idle HTTP/1.1 connection is not closed, where a request could cross the close.
        if drain.has_changed() && drain.update() != State::Running {
            ctx.draining.store(true, Relaxed);
        }

        // The request's future is large (routing, retries, the upstream exchange); boxed, it
        // exists only while a request does, instead of in every idle connection's task.
        let mut answer = buffers::reuse(|| {
            let arrived = Arrived {
                parsed,
                head: head_bytes,
                body,
            };
            exchange(Arc::clone(ctx), arrived, idle, stream)
        });
        // The abort future keeps its waker from its first poll (every poll comes from this
        // task): after that it only needs asking once the drain state has changed.
        let answer = std::future::poll_fn(|cx| {
            if let Poll::Ready(answer) = Pin::new(&mut answer).poll(cx) {
                return Poll::Ready(Some(answer));
            }
            if abort_armed && !drain_probe.has_changed() {
                return Poll::Pending;
            }
            abort_armed = true;
            abort.as_mut().poll(cx).map(|()| None)
        })
        .await;
        // Aborted: the stream went with the request's future.
        let Some(Exchanged {
            written,
            timer,
            stream: lent,
        }) = answer
        else {
            return Outcome::Closed;
        };
        (idle, stream) = (timer, lent);
        last_active = Instant::now();
        // The request may have moved the timer to its route deadline (it only moves it
        // earlier): bring it back to the idle deadline if that is earlier still.
        if let Some(timeout) = idle_timeout
            && idle.deadline() > last_active + timeout
        {
            idle.as_mut().reset(last_active + timeout);
            armed_at = None;
        }
        // Either side's `Connection: close` ends the connection after this exchange.
        if close || !matches!(written, Ok(Written::KeepAlive)) {
            let _ = stream.shutdown().await;
            return Outcome::Closed;
        }
    }
}

/// When no `request_headers_timeout` is configured, a request head must still arrive within
/// this: Envoy would wait for its 5-minute stream idle timeout, which lets a client that drips
/// heads hold connections (and their slots under the connection limit) for that long. No
/// real client takes a minute to send a head.
pub(crate) const DEFAULT_HEADERS_TIMEOUT: Duration = Duration::from_secs(60);

/// Which limit a request ran into while it was being read, each answered as Envoy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadTimeout {
    /// `request_headers_timeout` (or [`DEFAULT_HEADERS_TIMEOUT`]).
    Headers,
    /// `stream_idle_timeout`: nothing new arrived for that long.
    StreamIdle,
    /// `request_timeout`: the request did not arrive whole in time.
    Request,
}

/// The connection manager's limits on reading a request.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadLimits {
    pub(super) headers: Duration,
    pub(super) idle: Option<Duration>,
    pub(super) request: Option<Duration>,
}

impl ReadLimits {
    pub(super) fn of(hcm: &crate::config::HttpConnectionManager) -> ReadLimits {
        ReadLimits {
            headers: hcm
                .request_headers_timeout
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_HEADERS_TIMEOUT),
            idle: hcm.stream_idle_timeout.filter(|d| !d.is_zero()),
            request: hcm.request_timeout.filter(|d| !d.is_zero()),
        }
    }

    pub(super) fn start(self, now: Instant) -> Deadlines {
        Deadlines {
            headers: now + self.headers,
            // Envoy's idle timer is not reset by the bytes of an incomplete head (its codec
            // reports nothing until the head is whole), so for the head it is a deadline.
            head_idle: self.idle.map(|d| now + d),
            idle: self.idle,
            request: self.request.map(|d| now + d),
        }
    }
}

/// One request's deadlines, from (about) its first byte.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadlines {
    headers: Instant,
    head_idle: Option<Instant>,
    idle: Option<Duration>,
    request: Option<Instant>,
}

impl Deadlines {
    /// The earliest limit on the head, and which it is.
    pub(super) fn head(&self) -> (Instant, ReadTimeout) {
        let mut earliest = (self.headers, ReadTimeout::Headers);
        for (at, why) in [
            (self.head_idle, ReadTimeout::StreamIdle),
            (self.request, ReadTimeout::Request),
        ] {
            if let Some(at) = at
                && at < earliest.0
            {
                earliest = (at, why);
            }
        }
        earliest
    }

    /// The earliest limit on the body's next bytes, read from `now`.
    fn body(&self, now: Instant) -> (Instant, ReadTimeout) {
        let idle = self.idle.map(|d| (now + d, ReadTimeout::StreamIdle));
        let request = self.request.map(|at| (at, ReadTimeout::Request));
        match (idle, request) {
            (Some(i), Some(r)) => {
                if r.0 <= i.0 {
                    r
                } else {
                    i
                }
            }
            (Some(one), None) | (None, Some(one)) => one,
            // Neither is configured: the body may take as long as it takes, as in Envoy.
            (None, None) => (
                now + Duration::from_secs(365 * 24 * 3600),
                ReadTimeout::Request,
            ),
        }
    }
}

/// Answers a request that did not arrive in time, as Envoy does (408 and its body, the
/// matching `http.<prefix>.downstream_rq_*timeout` counter), then the connection closes.
async fn write_timeout(ctx: &ConnCtx, stream: &mut TcpStream, why: ReadTimeout) -> io::Result<()> {
    stream
        .write_all(&timeout_reply(&ctx.listener.stats, why))
        .await?;
    stream.shutdown().await
}

/// Envoy's 408 for a request that did not arrive in time, counted in its
/// `downstream_rq_*timeout` counter.
pub(super) fn timeout_reply(stats: &HttpStats, why: ReadTimeout) -> BytesMut {
    let body = match why {
        ReadTimeout::Headers => {
            stats.downstream_rq_header_timeout.inc();
            "request header timeout"
        }
        ReadTimeout::StreamIdle => {
            stats.downstream_rq_idle_timeout.inc();
            "stream timeout"
        }
        ReadTimeout::Request => {
            stats.downstream_rq_timeout.inc();
            "request timeout"
        }
    };
    stats
        .downstream_rq_xx
        .record(StatusCode::REQUEST_TIMEOUT.as_u16());
    reject_with(StatusCode::REQUEST_TIMEOUT, body)
}

/// Reads what is there into `buf`: Ok(false) when the peer closed.
async fn read_more(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(if buf.capacity() == 0 {
            READ_CHUNK
        } else {
            buf.capacity()
        });
    }
    let read = async { stream.read_buf(buf).await.map(|n| n > 0) };
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, read)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
        None => read.await,
    }
}

/// Parses a complete head, or says more bytes are needed (Ok(None)). Every head is checked
/// against the framing rules (`crate::framing`) here, also the ones handed to hyper, so that
/// hyper never sees a request those rules refuse.
fn parse_head(buf: &[u8], head_limit: usize) -> Result<Option<Head>, StatusCode> {
    let head = match framing::parse_request_head(buf, head_limit) {
        Ok(Some(head)) => head,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::debug!(error = %e, "request refused");
            return Err(e.request_status());
        }
    };
    // HTTP/1.0 keep-alive rules and the rarer features are hyper's (whether HTTP/1.0 is
    // served at all is the router's: `accept_http_10`).
    let fast = head.version == Version::HTTP_11
        && head.method != Method::CONNECT
        && !head.upgrade
        && !head.expect;
    let body_len = match head.body {
        BodyLength::Length(n) if fast && n <= MAX_BUFFERED_BODY => n,
        _ => {
            buffers::put_header_list(head.headers);
            return Ok(Some(Head::Handoff));
        }
    };
    Ok(Some(Head::Fast(Parsed {
        method: head.method,
        target: head.target,
        headers: head.headers,
        len: head.len,
        body_len: usize::try_from(body_len).map_err(|_| StatusCode::PAYLOAD_TOO_LARGE)?,
        close: head.close,
    })))
}

/// The request, its target and header values sharing `head` (the frozen head bytes).
fn build_request(
    parsed: Parsed,
    head: &Bytes,
    body: Bytes,
) -> Result<Request<DownstreamBody>, StatusCode> {
    let uri =
        Uri::from_maybe_shared(head.slice(parsed.target)).map_err(|_| StatusCode::BAD_REQUEST)?;
    // Room for the headers the proxy adds (x-request-id, x-forwarded-proto, the route's),
    // so that they do not make the map grow.
    let mut map = buffers::header_map(parsed.headers.len() + 6);
    let mut list = parsed.headers;
    for (name, value) in list.drain(..) {
        let value = HeaderValue::from_maybe_shared(head.slice(value))
            .map_err(|_| StatusCode::BAD_REQUEST)?;
        map.append(name, value);
    }
    buffers::put_header_list(list);
    let mut request = Request::new(DownstreamBody::buffered(body));
    *request.method_mut() = parsed.method;
    *request.uri_mut() = uri;
    *request.headers_mut() = map;
    Ok(request)
}

/// The answer to a request that never reaches the router, then the connection closes. As
/// Envoy's codec answers: the reason phrase as a plain-text body.
pub(super) fn reject(status: StatusCode) -> BytesMut {
    reject_with(status, status.canonical_reason().unwrap_or("Unknown"))
}

/// [`reject`] with the body Envoy gives that refusal (plain text).
fn reject_with(status: StatusCode, body: &str) -> BytesMut {
    let mut out = BytesMut::with_capacity(160 + body.len());
    status_line(&mut out, status);
    let _ = write!(
        out,
        "content-length: {}\r\ncontent-type: text/plain\r\ndate: {}\r\nconnection: close\r\n\r\n{body}",
        body.len(),
        httpdate::fmt_http_date(SystemTime::now()),
    );
    out
}

async fn write_reject(stream: &mut TcpStream, status: StatusCode) -> io::Result<()> {
    stream.write_all(&reject(status)).await?;
    stream.shutdown().await
}

fn status_line(out: &mut BytesMut, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Whether a response with this status may carry a body at all (RFC 9112 6.3).
fn bodyless(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// Whether the connection may carry another request after a response.
#[derive(Debug)]
enum Written {
    KeepAlive,
    /// The response said `Connection: close`.
    Close,
}

/// What a request's future gives back: the outcome of writing its response, and the
/// connection's timer and stream it was lent.
struct Exchanged {
    written: io::Result<Written>,
    timer: Pin<Box<Sleep>>,
    stream: TcpStream,
}

/// A request as read: its parsed head, the head's bytes and the body.
struct Arrived {
    parsed: Parsed,
    head: Bytes,
    body: Bytes,
}

/// Answers one request and writes the answer, all in the request's future: the request is
/// built there and the response written there, rather than either being handed through
/// the layers between (each copies it, and each is a few hundred bytes). The connection's
/// timer (for the route timeout, see `forward::within`) and its stream are lent to it.
async fn exchange(
    ctx: Arc<ConnCtx>,
    arrived: Arrived,
    mut timer: Pin<Box<Sleep>>,
    mut stream: TcpStream,
) -> Exchanged {
    let mut request = match build_request(arrived.parsed, &arrived.head, arrived.body) {
        Ok(request) => request,
        Err(status) => {
            let written = write_reject(&mut stream, status).await;
            return Exchanged {
                written: written.map(|()| Written::Close),
                timer,
                stream,
            };
        }
    };
    drop(arrived.head);
    let head_only = request.method() == Method::HEAD;
    let started = Started::new(&ctx, &request);
    // Pinned here and lent by reference: moved into the watch instead, the router's future
    // (a few KB) would be stored twice in this one and copied between them.
    let answer = {
        let routed = std::pin::pin!(forward::proxy(&ctx, &mut request, Some(timer.as_mut())));
        while_client_stays(&stream, routed).await
    };
    let Some(mut response) = answer else {
        // Gone: the request, and its upstream exchange with it, were dropped at once rather
        // than left to run to their timeout (Envoy resets the upstream stream likewise).
        ctx.listener
            .stats
            .downstream_cx_destroy_remote_active_rq
            .inc();
        return Exchanged {
            written: Err(io::ErrorKind::ConnectionAborted.into()),
            timer,
            stream,
        };
    };
    started.answered(&mut response);
    drop(request);
    let written = write_response(&mut stream, &mut response, head_only).await;
    Exchanged {
        written,
        timer,
        stream,
    }
}

/// Writes the head and streams the body: with its length when known, chunked otherwise.
/// The output buffer comes from the spare stock and goes back to it.
async fn write_response(
    stream: &mut TcpStream,
    response: &mut Response<ResponseBody>,
    head_only: bool,
) -> io::Result<Written> {
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    let body = response.body_mut();
    let no_body = head_only || bodyless(status);
    let mut out = buffers::take();
    status_line(&mut out, status);
    // What the names tell is noted on the way, rather than looked up (hashed) afterwards.
    let (mut has_date, mut close) = (false, false);
    // The first valid `content-length`: a second one or one a client could read otherwise
    // is not written.
    let mut announced: Option<u64> = None;
    let mut field = |name: &HeaderName, value: &[u8]| {
        if name == TRANSFER_ENCODING {
            return;
        }
        if name == DATE {
            has_date = true;
        } else if name == CONTENT_LENGTH {
            match framing::content_length(value) {
                Ok(n) if announced.is_none() => announced = Some(n),
                _ => return,
            }
        } else if name == CONNECTION {
            close |= super::headers::lists_token(value, "close");
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    // The upstream's own fields first (when they passed through), then the map's.
    let passed = body.take_passed_head();
    for (name, value) in passed.iter().flat_map(|p| p.fields()) {
        field(name, value);
    }
    drop(passed);
    if let Some(ms) = body.take_service_time() {
        field(
            &X_ENVOY_UPSTREAM_SERVICE_TIME,
            super::headers::service_time(ms).as_bytes(),
        );
    }
    for (name, value) in &headers {
        field(name, value.as_bytes());
    }
    let written = if close {
        Written::Close
    } else {
        Written::KeepAlive
    };
    if !has_date {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // The body bytes still owed to the length announced; None when chunked.
    let mut left = if no_body {
        None
    } else if announced.is_some() {
        announced
    } else if let Some(len) = body.size_hint().exact() {
        let _ = write!(out, "content-length: {len}\r\n");
        Some(len)
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        None
    };
    let chunked = !no_body && left.is_none();
    out.extend_from_slice(b"\r\n");
    buffers::put_header_map(headers);
    if no_body {
        stream.write_all(&out).await?;
        buffers::put(out);
        // The body may still hold the upstream connection: read it out so it is pooled.
        while let Some(frame) = body.frame().await {
            frame.map_err(io::Error::other)?;
        }
        return Ok(written);
    }
    // A body already here leaves with the head in one write; `out` holds what is not sent.
    let mut head_sent = false;
    let gone = || io::Error::from(io::ErrorKind::ConnectionAborted);
    loop {
        let frame = if head_sent {
            while_client_stays(stream, std::pin::pin!(body.frame()))
                .await
                .ok_or_else(gone)?
        } else {
            match poll_once(body.frame()).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    stream.write_all(&out).await?;
                    out.clear();
                    head_sent = true;
                    while_client_stays(stream, std::pin::pin!(body.frame()))
                        .await
                        .ok_or_else(gone)?
                }
            }
        };
        let frame = match frame {
            Some(Ok(frame)) => frame,
            // What is ready (the head at least) goes out first, as from Envoy: the client
            // then sees the response cut short rather than no response at all.
            Some(Err(e)) => {
                if !out.is_empty() {
                    let _ = stream.write_all(&out).await;
                }
                return Err(io::Error::other(e));
            }
            None => break,
        };
        let Ok(data) = frame.into_data() else {
            // Trailers: dropped over HTTP/1.1, as hyper does unless the client asked for
            // them with `TE: trailers`.
            continue;
        };
        if data.is_empty() {
            continue;
        }
        // Defence in depth (the client refuses ambiguous framing already): never more body
        // than announced, which the client would read as the next response.
        if let Some(owed) = &mut left {
            match owed.checked_sub(data.len() as u64) {
                Some(rest) => *owed = rest,
                None => return Err(mismatch(stream, &out).await),
            }
        }
        if chunked {
            let _ = write!(out, "{:x}\r\n", data.len());
        }
        if data.len() <= COALESCE_LIMIT {
            out.extend_from_slice(&data);
        } else {
            stream.write_all(&out).await?;
            out.clear();
            stream.write_all(&data).await?;
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        stream.write_all(&out).await?;
        out.clear();
        head_sent = true;
    }
    // Nor less: the client would wait for the rest, or read the next response into it.
    if left.is_some_and(|owed| owed > 0) {
        return Err(mismatch(stream, &out).await);
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if !out.is_empty() {
        stream.write_all(&out).await?;
    }
    buffers::put(out);
    Ok(written)
}

/// Runs `work` while the client stays connected: `None` as soon as its connection is seen
/// closed (end of stream or an error), so that the request and its upstream exchange are
/// dropped at once. The socket is only asked (a `MSG_PEEK` read) once it turns readable,
/// which it does not while a well-behaved client waits for its answer; until then this costs
/// a readiness check per poll. Bytes of a next (pipelined) request end the watch: whether
/// the client closed behind them cannot be told without reading them, and reading them is
/// for the next request.
async fn while_client_stays<F: Future>(
    stream: &TcpStream,
    mut work: Pin<&mut F>,
) -> Option<F::Output> {
    let mut watching = true;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        if watching && stream.poll_read_ready(cx).is_ready() {
            let mut probe = [0u8; 1];
            let mut probe = ReadBuf::new(&mut probe);
            match stream.poll_peek(cx, &mut probe) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => watching = false,
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

/// A response body that does not match its `content-length`: what is written so far goes
/// out, and the error closes the connection.
async fn mismatch(stream: &mut TcpStream, out: &[u8]) -> io::Error {
    tracing::debug!("response body does not match its content-length: connection closed");
    if !out.is_empty() {
        let _ = stream.write_all(out).await;
    }
    io::Error::new(
        io::ErrorKind::InvalidData,
        "response body does not match its content-length",
    )
}

/// Polls `future` once: its output if it is ready now, else Pending (its waker stays set).
async fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
}

/// The connection handed to hyper: the bytes already read come first.
pub(crate) struct Prefixed {
    prefix: Bytes,
    stream: TcpStream,
    /// HTTP/1.1: what hyper reads has passed the framing rules (see `gate`).
    gate: Option<Box<Gate>>,
}

impl Prefixed {
    /// HTTP/2 prior knowledge: `prefix` is the preface.
    fn new(prefix: Bytes, stream: TcpStream) -> Prefixed {
        Prefixed {
            prefix,
            stream,
            gate: None,
        }
    }

    /// HTTP/1.1: `read` starts with the request head our server checked.
    fn http1(read: BytesMut, stream: TcpStream, ctx: &ConnCtx) -> Prefixed {
        let hcm = &ctx.listener.hcm;
        Prefixed {
            prefix: Bytes::new(),
            stream,
            gate: Some(Box::new(Gate::new(
                read,
                hcm.max_request_headers_bytes.max(1024),
                ReadLimits::of(hcm),
                Arc::clone(&ctx.listener.stats),
            ))),
        }
    }

    /// Notified when a request on this connection is refused: hyper should finish what it
    /// is writing and close (the refusal goes out last).
    pub(crate) fn refusals(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.gate.as_ref().map(|gate| gate.refusals())
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(gate) = &mut this.gate {
            return gate.poll_read(&mut this.stream, cx, buf);
        }
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(gate) = &mut this.gate {
            std::task::ready!(gate.poll_answer(&mut this.stream, cx))?;
        }
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<Head>, StatusCode> {
        parse_head(text.as_bytes(), 60 * 1024)
    }

    #[test]
    fn simple_requests_are_served_here_sharing_the_buffer() {
        let text =
            "POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nX-A: 1\r\nx-a: 2\r\n\r\nabc";
        let Ok(Some(Head::Fast(parsed))) = parse(text) else {
            panic!("not a fast request");
        };
        assert_eq!((parsed.len, parsed.body_len), (text.len() - 3, 3));
        let head = Bytes::copy_from_slice(&text.as_bytes()[..parsed.len]);
        let request = build_request(parsed, &head, Bytes::from_static(b"abc")).unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "/a?b=1");
        let values: Vec<_> = request.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(request.headers()["host"], "x");
    }

    #[test]
    fn read_deadlines_pick_the_earliest_limit() {
        let now = Instant::now();
        let limits = |headers: Option<u64>, idle: Option<u64>, request: Option<u64>| {
            let secs = |s: Option<u64>| s.map(Duration::from_secs);
            ReadLimits {
                headers: secs(headers).unwrap_or(DEFAULT_HEADERS_TIMEOUT),
                idle: secs(idle),
                request: secs(request),
            }
            .start(now)
        };
        // Envoy's defaults (no header timeout, 5-minute idle): our own 60 s bound the head.
        let d = limits(None, Some(300), None);
        assert_eq!(
            d.head(),
            (now + Duration::from_secs(60), ReadTimeout::Headers)
        );
        assert_eq!(
            d.body(now + Duration::from_secs(1)),
            (now + Duration::from_secs(301), ReadTimeout::StreamIdle)
        );
        let d = limits(Some(10), Some(5), Some(20));
        assert_eq!(
            d.head(),
            (now + Duration::from_secs(5), ReadTimeout::StreamIdle)
        );
        // The request timeout is a deadline; the idle timeout restarts with each read.
        assert_eq!(
            d.body(now + Duration::from_secs(18)),
            (now + Duration::from_secs(20), ReadTimeout::Request)
        );
        let d = limits(Some(10), None, Some(3));
        assert_eq!(
            d.head(),
            (now + Duration::from_secs(3), ReadTimeout::Request)
        );
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(matches!(parse("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None)));
    }

    #[test]
    fn rarer_features_go_to_hyper() {
        for text in [
            "GET / HTTP/1.0\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\n\r\n",
        ] {
            assert!(matches!(parse(text), Ok(Some(Head::Handoff))), "{text}");
        }
    }

    #[test]
    fn bad_heads_are_rejected_with_their_status() {
        let status = |text: &str, limit: usize| match parse_head(text.as_bytes(), limit) {
            Err(status) => status.as_u16(),
            Ok(_) => 0,
        };
        assert_eq!(status("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 4096), 400);
        assert_eq!(
            status(
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                4096
            ),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 4096),
            400
        );
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "a: b\r\n".repeat(200));
        assert_eq!(status(&many, 60 * 1024), 431);
        assert_eq!(
            status(
                "GET / HTTP/1.1\r\nA: bbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n\r\n",
                20
            ),
            431
        );
    }

    #[test]
    fn heads_for_hyper_meet_the_framing_rules_first() {
        let status = |text: &str| match parse(text) {
            Err(status) => status.as_u16(),
            Ok(Some(Head::Handoff)) => 1,
            Ok(_) => 0,
        };
        for (text, expected) in [
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 1),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
                501,
            ),
            ("POST / HTTP/1.0\r\nContent-Length: +5\r\n\r\n", 400),
            (
                "GET / HTTP/1.1\r\nUpgrade: websocket\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5x\r\n\r\n",
                400,
            ),
            ("CONNECT x:443 HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nContent-Length: 100000\r\nContent-Length: 100000\r\n\r\n",
                400,
            ),
            ("GET / HTTP/1.2\r\n\r\n", 426),
            // HTTP/1.0 is served (or refused) by the router, once the header rules are met.
            ("GET / HTTP/1.0\r\nHost: x\r\n\r\n", 1),
            (
                "POST / HTTP/1.0\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
        ] {
            assert_eq!(status(text), expected, "{text}");
        }
    }

    /// A connected pair of sockets: (ours, the peer's).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        (ours, peer)
    }

    /// Writes `response` and closes: what was written, and what `write_response` said.
    async fn written(mut response: Response<ResponseBody>) -> (String, io::Result<Written>) {
        let (mut ours, mut peer) = pair().await;
        let result = write_response(&mut ours, &mut response, false).await;
        drop(ours);
        let mut out = Vec::new();
        peer.read_to_end(&mut out).await.unwrap();
        (String::from_utf8(out).unwrap(), result)
    }

    fn response(length: Option<&'static str>, body: &'static [u8]) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::full(Bytes::from_static(body)));
        if let Some(length) = length {
            response
                .headers_mut()
                .append(CONTENT_LENGTH, HeaderValue::from_static(length));
        }
        response
    }

    #[tokio::test]
    async fn the_writer_never_sends_a_body_its_length_does_not_announce() {
        // The body the client would read is what the length says, or the connection closes.
        let (out, result) = written(response(Some("5"), b"hello")).await;
        assert!(matches!(result, Ok(Written::KeepAlive)), "{result:?}");
        assert!(out.contains("\r\ncontent-length: 5\r\n") && out.ends_with("\r\n\r\nhello"));
        // Longer (the response-splitting case of issue 15): nothing of the body is sent.
        let split = b"HELLOHTTP/1.1 200 OK\r\nX-Injected: yes\r\nContent-Length: 8\r\n\r\nINJECTED";
        let (out, result) = written(response(Some("5"), split)).await;
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert!(
            out.ends_with("\r\n\r\n") && !out.contains("INJECTED"),
            "{out}"
        );
        // Shorter: what there is goes out, then the connection closes.
        let (out, result) = written(response(Some("10"), b"hello")).await;
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert!(out.ends_with("\r\n\r\nhello"), "{out}");
        // A length no client may read alike is not written: the body's own length is.
        let mut twice = response(Some("5"), b"hello");
        twice
            .headers_mut()
            .append(CONTENT_LENGTH, HeaderValue::from_static("7"));
        let (out, result) = written(twice).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(out.matches("content-length").count(), 1, "{out}");
        let (out, result) = written(response(Some("+5"), b"hello")).await;
        assert!(result.is_ok(), "{result:?}");
        assert!(
            out.contains("\r\ncontent-length: 5\r\n") && !out.contains("+5"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn rejects_are_answered_as_envoy_answers_them() {
        let (mut ours, mut peer) = pair().await;
        write_reject(&mut ours, StatusCode::NOT_IMPLEMENTED)
            .await
            .unwrap();
        let mut out = Vec::new();
        peer.read_to_end(&mut out).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with(
                "HTTP/1.1 501 Not Implemented\r\ncontent-length: 15\r\ncontent-type: text/plain\r\ndate: "
            ),
            "{out}"
        );
        assert!(
            out.ends_with("\r\nconnection: close\r\n\r\nNot Implemented"),
            "{out}"
        );
    }
}
