//! The bodies the connection manager moves: requests towards the upstream (streamed, or a
//! small buffer that a retry can send again) and responses towards the client (streamed from
//! the upstream with the route's timeouts, or a local reply).

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::RequestGuard;
use crate::error::ProxyError;
use crate::upstream::h1::PassedHead;
use crate::upstream::{InFlight, PooledHttp1, ResponseStream};

pub use crate::error::BoxError;

/// A request body as it arrived: streamed by hyper, or read whole by our own HTTP/1.1 server.
#[derive(Debug)]
pub enum DownstreamBody {
    Hyper(Incoming),
    Buffered(Option<Bytes>),
}

impl DownstreamBody {
    pub fn buffered(bytes: Bytes) -> DownstreamBody {
        DownstreamBody::Buffered((!bytes.is_empty()).then_some(bytes))
    }
}

impl Body for DownstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            DownstreamBody::Hyper(body) => Pin::new(body).poll_frame(cx),
            DownstreamBody::Buffered(bytes) => {
                Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DownstreamBody::Hyper(body) => body.is_end_stream(),
            DownstreamBody::Buffered(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DownstreamBody::Hyper(body) => body.size_hint(),
            DownstreamBody::Buffered(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// A request body on its way upstream.
#[derive(Debug)]
pub enum RequestBody {
    Empty,
    /// Buffered so a retry can replay it.
    Full(Option<Bytes>),
    /// Streamed from the client; the flag is raised if the client's body fails (a malformed
    /// chunked body, the client gone), which makes the failed send the client's fault.
    Stream(DownstreamBody, Arc<AtomicBool>),
}

impl RequestBody {
    pub fn full(bytes: Bytes) -> RequestBody {
        if bytes.is_empty() {
            RequestBody::Empty
        } else {
            RequestBody::Full(Some(bytes))
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Stream(body, failed) => {
                let polled = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(Some(Err(_))) = &polled {
                    failed.store(true, Relaxed);
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Full(bytes) => bytes.is_none(),
            RequestBody::Stream(body, _) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            RequestBody::Stream(body, _) => body.size_hint(),
        }
    }
}

/// Route timeout (absolute) and stream idle timeout for a streamed response body. The timer
/// is only created when the body actually has to wait, so a response that arrives in one
/// piece costs no timer at all.
#[derive(Debug)]
pub(crate) struct StreamTimer {
    deadline: Option<Instant>,
    idle: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
    progressed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    Route,
    Idle,
}

impl StreamTimer {
    pub fn new(deadline: Option<Instant>, idle: Option<Duration>) -> StreamTimer {
        StreamTimer {
            deadline,
            idle,
            sleep: None,
            progressed: false,
        }
    }

    fn target(&self) -> Option<Instant> {
        match (self.deadline, self.idle) {
            (None, None) => None,
            (Some(d), None) => Some(d),
            (d, Some(idle)) => {
                let idle_at = Instant::now() + idle;
                Some(d.map_or(idle_at, |d| d.min(idle_at)))
            }
        }
    }

    /// Called when the body is pending: arms or re-arms the timer, reports expiry.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Option<Expired> {
        if self.sleep.is_none() || self.progressed {
            let target = self.target()?;
            self.progressed = false;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(target),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(target))),
            }
        }
        let sleep = self.sleep.as_mut()?;
        if sleep.as_mut().poll(cx).is_pending() {
            return None;
        }
        match self.deadline {
            Some(d) if Instant::now() >= d => Some(Expired::Route),
            _ => Some(Expired::Idle),
        }
    }
}

/// A response body streamed from the upstream.
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    pub body: ResponseStream,
    /// Back to the pool once the body has been read to its end.
    pub conn: Option<PooledHttp1>,
    pub in_flight: InFlight,
    pub timer: StreamTimer,
}

impl UpstreamBody {
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.release();
        }
        self.timer.sleep = None;
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.timer.progressed = true;
                if self.body.is_end_stream() {
                    self.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                self.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.conn = None;
                self.in_flight.cluster().upstream_rq_rx_reset.inc();
                self.in_flight.endpoint().rq_error.inc();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => match self.timer.poll_expired(cx) {
                None => Poll::Pending,
                Some(expired) => {
                    // The connection is mid-response: never reuse it.
                    self.conn = None;
                    self.timer.sleep = None;
                    self.timer.deadline = None;
                    self.timer.idle = None;
                    if expired == Expired::Route {
                        self.in_flight.cluster().upstream_rq_timeout.inc();
                    }
                    self.in_flight.endpoint().rq_timeout.inc();
                    Poll::Ready(Some(Err(Box::new(ProxyError::Timeout))))
                }
            },
        }
    }
}

#[derive(Debug)]
enum Kind {
    Empty,
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
}

/// A response body on its way to the client. It also carries the request's accounting, which
/// ends when hyper drops the body after the last byte.
#[derive(Debug)]
pub struct ResponseBody {
    kind: Kind,
    request: Option<RequestGuard>,
    /// Envoy's `x-envoy-upstream-service-time` (ms), when it is not in the header map: like
    /// the upstream's own fields (see `PassedHead`), it goes to the HTTP/1.1 writer without
    /// the map, whose inserts hash the name.
    service_time: Option<u64>,
}

impl ResponseBody {
    /// See `service_time`: for the writer, or for the map when hyper writes the response.
    pub(crate) fn take_service_time(&mut self) -> Option<u64> {
        self.service_time.take()
    }

    pub(crate) fn set_service_time(&mut self, ms: u64) {
        self.service_time = Some(ms);
    }

    /// The upstream response's fields that are not in the header map (see `PassedHead`).
    pub(crate) fn take_passed_head(&mut self) -> Option<PassedHead> {
        match &mut self.kind {
            Kind::Upstream(UpstreamBody {
                body: ResponseStream::Inline(inline),
                ..
            }) => inline.take_passed_head(),
            _ => None,
        }
    }

    pub fn empty() -> ResponseBody {
        ResponseBody {
            kind: Kind::Empty,
            request: None,
            service_time: None,
        }
    }

    pub fn full(bytes: Bytes) -> ResponseBody {
        ResponseBody {
            kind: if bytes.is_empty() {
                Kind::Empty
            } else {
                Kind::Full(Some(bytes))
            },
            request: None,
            service_time: None,
        }
    }

    pub(crate) fn upstream(mut body: UpstreamBody) -> ResponseBody {
        if body.body.is_end_stream() {
            body.finish();
        }
        ResponseBody {
            kind: Kind::Upstream(body),
            request: None,
            service_time: None,
        }
    }

    pub(crate) fn attach(&mut self, guard: RequestGuard) {
        self.request = Some(guard);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body) => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream(body) => body.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(body) => body.body.size_hint(),
        }
    }
}
