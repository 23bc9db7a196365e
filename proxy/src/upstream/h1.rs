//! The upstream half of plain HTTP/1.1 exchanges, done in the request's own task.
//!
//! Why not hyper's client here: hyper runs every upstream connection as a task of its own and
//! hands each request to it over a channel, the response back over another and the body over
//! a third, each with a wake-up. For a request whose body is already in memory (empty,
//! buffered for retries, or read whole by our HTTP/1.1 server), this module writes head and
//! body in one write on a pooled connection and reads the response in the same task. A body
//! that arrived with the head goes on as one frame, and the connection is back in the pool
//! before the response leaves. Streamed request bodies and upgrades stay on hyper's client
//! (see [`super::EndpointPool::send`]).

use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue, Method, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{EndpointPool, UpstreamCx, UpstreamRequest};
use crate::buffers::{self, READ_CHUNK};
use crate::framing::{self, BodyLength, ChunkStep, ChunkedDecoder, FramingError};
use crate::http::body::BoxError;

/// Envoy's default limit on a response head (`max_response_headers_kb`: 60).
const MAX_HEAD: usize = 60 * 1024;
/// A request body at most this long is copied behind the head, so both leave in one write.
const COALESCE_LIMIT: usize = 16 * 1024;
/// Reads of a streamed response body ask for at least this much room.
const BODY_READ: usize = 16 * 1024;

/// An upstream HTTP/1.1 connection, idle in its endpoint's pool or lent to one exchange.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    uses: u32,
    /// Pool sweeps this connection has sat idle through (see `EndpointPool::sweep_idle`).
    idle_sweeps: u32,
    _cx: UpstreamCx,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream, cx: UpstreamCx) -> Conn {
        Conn {
            stream,
            uses: 0,
            idle_sweeps: 0,
            _cx: cx,
        }
    }

    pub(crate) fn uses(&self) -> u32 {
        self.uses
    }

    /// Counts one more pool sweep spent idle.
    pub(crate) fn swept(&mut self) -> u32 {
        self.idle_sweeps += 1;
        self.idle_sweeps
    }

    /// Back in the pool: idle from now.
    pub(crate) fn pooled(&mut self) {
        self.idle_sweeps = 0;
    }

    /// Whether an idle connection can take a request. A server that closed it (or sent
    /// anything, which it may not while the connection is idle) made the socket readable:
    /// the readiness the runtime has already seen tells without a syscall, and only a socket
    /// shown readable is probed with a read.
    pub(crate) fn usable(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connection failed or closed before the response head was complete.
    Io(io::Error),
    /// The response was not valid HTTP/1.1.
    Malformed(&'static str),
}

/// Writes the request head, and the body when it is small, into `out`. The request's own
/// framing headers are replaced by a `content-length` for the body in memory.
pub(crate) fn encode_request(req: &UpstreamRequest, body: Option<&Bytes>, out: &mut BytesMut) {
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers.iter().chain(req.added.fields()) {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let len = body.map_or(0, Bytes::len);
    // Methods that usually carry a body say that this one is empty, as hyper does.
    if len > 0 || matches!(req.method, Method::POST | Method::PUT | Method::PATCH) {
        let _ = write!(out, "content-length: {len}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if let Some(body) = body.filter(|b| b.len() <= COALESCE_LIMIT) {
        out.extend_from_slice(body);
    }
}

/// Sends the encoded request (`out`, and `body` when it was too long to be copied into it)
/// on `conn` and reads the response head into the same buffer. A body that arrived complete
/// with the head is returned in memory and `conn` goes back to `pool` at once; otherwise the
/// body streams from the connection, which returns to the pool when the body ends.
pub(crate) async fn exchange(
    pool: &Arc<EndpointPool>,
    mut conn: Conn,
    out: BytesMut,
    body: Option<&Bytes>,
    head_request: bool,
) -> Result<Response<InlineBody>, Failure> {
    conn.uses += 1;
    conn.stream.write_all(&out).await.map_err(Failure::Io)?;
    // One buffer per exchange: the request's bytes are gone once written, and fewer
    // buffers in flight keep the per-thread stock from running dry under load.
    let mut buf = out;
    buf.clear();
    if let Some(body) = body.filter(|b| b.len() > COALESCE_LIMIT) {
        conn.stream.write_all(body).await.map_err(Failure::Io)?;
    }
    let head = 'read: loop {
        while !buf.is_empty() {
            match framing::parse_response_head(&buf, head_request)
                .map_err(|e| Failure::Malformed(e.as_str()))?
            {
                None => break,
                Some(head) if head.status == StatusCode::SWITCHING_PROTOCOLS => {
                    return Err(Failure::Malformed(
                        "101 response to a request without Upgrade",
                    ));
                }
                // 100 Continue, 103 Early Hints: nothing the client asked for here.
                Some(head) if head.status.is_informational() => buf.advance(head.len),
                Some(head) => break 'read head,
            }
        }
        if buf.len() >= MAX_HEAD {
            return Err(Failure::Malformed("response head too large"));
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        match conn.stream.read_buf(&mut buf).await {
            Ok(0) => return Err(Failure::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {}
            Err(e) => return Err(Failure::Io(e)),
        }
    };

    let mut head = head;
    let head_bytes = buf.split_to(head.len).freeze();
    // Without connection-specific fields, the fields go through to the client's HTTP/1.1
    // writer as they are (no header map: its hashing and per-value references cost more than
    // the rest of the head's handling); see `PassedHead`.
    let (headers, passed) = if head.hop_by_hop {
        let mut headers = buffers::header_map(head.headers.len() + 2);
        let mut list = std::mem::take(&mut head.headers);
        for (name, value) in list.drain(..) {
            let value = HeaderValue::from_maybe_shared(head_bytes.slice(value))
                .map_err(|_| Failure::Malformed("invalid header value"))?;
            headers.append(name, value);
        }
        buffers::put_header_list(list);
        (headers, None)
    } else {
        let passed = PassedHead {
            bytes: head_bytes,
            fields: std::mem::take(&mut head.headers),
        };
        // The map stays empty unless something is added (then it allocates).
        (http::HeaderMap::new(), Some(passed))
    };
    let state = match head.body {
        BodyLength::Length(n) if buf.len() as u64 >= n => {
            let data = if n == 0 {
                Bytes::new()
            } else {
                buf.split_to(usize::try_from(n).unwrap_or(usize::MAX))
                    .freeze()
            };
            // Bytes past the body are not ours to guess about: such a connection is closed.
            if head.keep_alive && buf.is_empty() {
                pool.release_inline(conn);
            }
            buffers::put(buf);
            State::Ready((!data.is_empty()).then_some(data))
        }
        framing => State::Streaming(Box::new(Reader {
            conn: Some(conn),
            pool: Arc::clone(pool),
            buf,
            decoder: match framing {
                BodyLength::Length(n) => Decoder::Length(n),
                BodyLength::Chunked => Decoder::Chunked(ChunkedDecoder::new()),
                BodyLength::UntilClose => Decoder::UntilClose,
            },
            keep_alive: head.keep_alive,
        })),
    };
    let mut response = Response::new(InlineBody(state, passed));
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = headers;
    Ok(response)
}

/// A response body from [`exchange`], with the head's fields when they pass through.
#[derive(Debug)]
pub struct InlineBody(State, Option<PassedHead>);

impl InlineBody {
    /// The response's fields that are not in its header map (see [`PassedHead`]).
    pub(crate) fn take_passed_head(&mut self) -> Option<PassedHead> {
        self.1.take()
    }

    /// The first value of field `name` among the passed-through ones.
    pub(crate) fn passed_field(&self, name: &HeaderName) -> Option<&[u8]> {
        self.1
            .as_ref()?
            .fields()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }
}

/// An upstream response's header fields, kept as parsed (names, and values as ranges of
/// the head's bytes) instead of in the response's header map, which then holds only what
/// the proxy adds. The HTTP/1.1 writer writes them first; anything else that needs the
/// headers whole (header mutations, hyper's HTTP/2 server) moves them into the map first
/// with [`PassedHead::into_map`]. Only heads without connection-specific fields pass.
/// httparse has already refused values that `HeaderValue` would refuse.
#[derive(Debug)]
pub(crate) struct PassedHead {
    bytes: Bytes,
    fields: buffers::HeaderList,
}

impl PassedHead {
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&HeaderName, &[u8])> {
        self.fields
            .iter()
            .map(|(name, range)| (name, self.bytes.get(range.clone()).unwrap_or_default()))
    }

    /// Puts the fields in `map`, ahead of what it holds.
    pub(crate) fn into_map(mut self, map: &mut http::HeaderMap) {
        let mut merged = buffers::header_map(self.fields.len() + map.len());
        for (name, range) in self.fields.drain(..) {
            if let Ok(value) = HeaderValue::from_maybe_shared(self.bytes.slice(range)) {
                merged.append(name, value);
            }
        }
        let mut previous = None;
        for (name, value) in map.drain() {
            // `drain` names only the first of each name's values.
            if let Some(name) = name {
                previous = Some(name);
            }
            if let Some(name) = &previous {
                merged.append(name.clone(), value);
            }
        }
        buffers::put_header_map(std::mem::replace(map, merged));
    }
}

impl Drop for PassedHead {
    fn drop(&mut self) {
        buffers::put_header_list(std::mem::take(&mut self.fields));
    }
}

#[derive(Debug)]
enum State {
    /// It came with the head (or there is none); the connection is already released.
    Ready(Option<Bytes>),
    Streaming(Box<Reader>),
    Done,
}

/// Where a streamed body is in its framing.
#[derive(Debug, Clone)]
enum Decoder {
    /// Bytes not yet handed on.
    Length(u64),
    /// Trailers are dropped, as over HTTP/1.1 downstream.
    Chunked(ChunkedDecoder),
    UntilClose,
}

impl Decoder {
    fn is_done(&self) -> bool {
        matches!(self, Decoder::Length(0))
    }
}

/// What the bytes read so far give.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Data(Bytes),
    More,
    End,
}

/// A streamed response body and the connection it is read from.
#[derive(Debug)]
struct Reader {
    conn: Option<Conn>,
    pool: Arc<EndpointPool>,
    buf: BytesMut,
    decoder: Decoder,
    keep_alive: bool,
}

/// Decodes what `buf` holds under `decoder`.
fn decode(decoder: &mut Decoder, buf: &mut BytesMut) -> Result<Step, &'static str> {
    let take = |buf: &mut BytesMut, left: &mut u64| {
        let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
        *left -= n as u64;
        buf.split_to(n).freeze()
    };
    match decoder {
        Decoder::Length(0) => Ok(Step::End),
        Decoder::Length(left) if !buf.is_empty() => Ok(Step::Data(take(buf, left))),
        Decoder::Length(_) => Ok(Step::More),
        Decoder::UntilClose if !buf.is_empty() => Ok(Step::Data(buf.split().freeze())),
        Decoder::UntilClose => Ok(Step::More),
        Decoder::Chunked(chunked) => loop {
            match chunked.step(buf).map_err(FramingError::as_str)? {
                ChunkStep::Framing(0) => return Ok(Step::More),
                ChunkStep::Framing(n) => buf.advance(n),
                ChunkStep::Data(n) => return Ok(Step::Data(buf.split_to(n).freeze())),
                ChunkStep::End(n) => {
                    buf.advance(n);
                    return Ok(Step::End);
                }
            }
        },
    }
}

fn invalid(reason: &'static str) -> BoxError {
    Box::new(io::Error::new(io::ErrorKind::InvalidData, reason))
}

impl Reader {
    /// The body ended: the connection goes back to the pool if nothing is left over.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && self.buf.is_empty()
        {
            self.pool.release_inline(conn);
        }
        buffers::put(std::mem::take(&mut self.buf));
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match decode(&mut self.decoder, &mut self.buf) {
                Ok(Step::Data(data)) => {
                    // The last bytes of a known length: release the connection now, as a
                    // caller that sees the body end (hyper's HTTP/2 server) polls no more.
                    if self.decoder.is_done() {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::End) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::More) => {}
                Err(reason) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(invalid(reason))));
                }
            }
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(Some(Err(invalid("response body read after an error"))));
            };
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(BODY_READ);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, &mut self.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    self.conn = None;
                    if matches!(self.decoder, Decoder::UntilClose) {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(invalid(
                        "upstream closed the connection mid-body",
                    ))));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
    }
}

impl Body for InlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let state = &mut self.get_mut().0;
        let polled = match state {
            State::Ready(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            State::Streaming(reader) => reader.poll_frame(cx),
            State::Done => Poll::Ready(None),
        };
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            *state = State::Done;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            State::Ready(bytes) => bytes.is_none(),
            State::Streaming(reader) => reader.decoder.is_done(),
            State::Done => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            State::Ready(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            State::Streaming(reader) => match reader.decoder {
                Decoder::Length(left) => SizeHint::with_exact(left),
                _ => SizeHint::default(),
            },
            State::Done => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::BodySource;
    use http::{HeaderMap, Version};

    fn decode_all(mut decoder: Decoder, input: &[&[u8]]) -> Result<(Vec<u8>, bool), &'static str> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input {
            buf.extend_from_slice(piece);
            loop {
                match decode(&mut decoder, &mut buf)? {
                    Step::Data(data) => out.extend_from_slice(&data),
                    Step::More => break,
                    Step::End => return Ok((out, buf.is_empty())),
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn chunked_bodies_decode_across_any_split_and_stop_at_their_end() {
        let wire: &[u8] =
            b"5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n";
        let chunked = || Decoder::Chunked(ChunkedDecoder::new());
        for cut in 0..wire.len() {
            let (a, b) = wire.split_at(cut);
            assert_eq!(
                decode_all(chunked(), &[a, b]),
                Ok((b"hello 0123456789".to_vec(), true)),
                "cut at {cut}"
            );
        }
        // Bytes after the body are left over (and the connection is then not reused).
        assert_eq!(
            decode_all(chunked(), &[b"2\r\nab\r\n0\r\n\r\nHTTP/1.1"]),
            Ok((b"ab".to_vec(), false))
        );
        // The framing module's errors, by name (see `framing::tests` for every rule).
        assert_eq!(
            decode_all(chunked(), &[b"5\r\nhelloXX\r\n"]),
            Err("no CRLF after chunk data")
        );
        assert_eq!(
            decode_all(chunked(), &[b"2\nab\n0\n\n"]),
            Err("invalid chunk size")
        );
    }

    #[test]
    fn length_bodies_stop_at_their_length() {
        assert_eq!(
            decode_all(Decoder::Length(5), &[b"he", b"llo"]),
            Ok((b"hello".to_vec(), true))
        );
        assert_eq!(
            decode_all(Decoder::Length(3), &[b"abcde"]),
            Ok((b"abc".to_vec(), false))
        );
    }

    #[test]
    fn requests_are_framed_by_their_body_in_memory() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "svc".parse().unwrap());
        headers.insert("content-length", "99".parse().unwrap());
        headers.insert("transfer-encoding", "chunked".parse().unwrap());
        let mut req = UpstreamRequest::new(
            Method::POST,
            "/a?b=1".parse().unwrap(),
            Version::HTTP_11,
            headers,
            BodySource::Empty,
        );
        let mut out = BytesMut::new();
        encode_request(&req, Some(&Bytes::from_static(b"abc")), &mut out);
        assert_eq!(
            &out[..],
            b"POST /a?b=1 HTTP/1.1\r\nhost: svc\r\ncontent-length: 3\r\n\r\nabc"
        );
        out.clear();
        encode_request(&req, None, &mut out);
        assert_eq!(
            &out[..],
            b"POST /a?b=1 HTTP/1.1\r\nhost: svc\r\ncontent-length: 0\r\n\r\n"
        );
        req.method = Method::GET;
        out.clear();
        encode_request(&req, None, &mut out);
        assert_eq!(&out[..], b"GET /a?b=1 HTTP/1.1\r\nhost: svc\r\n\r\n");
        let big = Bytes::from(vec![b'x'; COALESCE_LIMIT + 1]);
        out.clear();
        encode_request(&req, Some(&big), &mut out);
        assert!(out.ends_with(format!("content-length: {}\r\n\r\n", big.len()).as_bytes()));
    }
}
