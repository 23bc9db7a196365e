//! Connections to a cluster's endpoints: HTTP/1.1 keep-alive pools or one multiplexed HTTP/2
//! connection per endpoint, TCP connects bounded by the cluster's connect timeout, and the
//! connection and request counters they keep.
//!
//! HTTP/1.1 requests whose body is in memory (nearly all of them: empty, buffered for a retry,
//! or read whole by the downstream HTTP/1.1 server) go through our own client ([`h1`]), in the
//! request's task; streamed request bodies and upgrades go through hyper's. Each has its own
//! pool of idle connections.
//!
//! A [`ClusterUpstream`] is rebuilt whenever its cluster changes, but it takes over the
//! [`EndpointPool`]s of the previous one for every endpoint address still present as long as
//! the connect settings are unchanged, so an EDS update keeps the warm connections.

pub mod h1;
mod request;

pub use request::{Added, BodySource, UpstreamRequest};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::TcpStream;

use crate::balance::ActiveRequest;
use crate::buffers;
use crate::config::{Cluster, Endpoint};
use crate::error::ProxyError;
use crate::framing;
use crate::http::body::{BoxError, RequestBody};
use crate::metrics::{ClusterStats, EndpointStats};

/// Idle HTTP/1.1 connections kept per endpoint; more are closed when they come back.
const MAX_IDLE_PER_ENDPOINT: usize = 256;
/// Stale pooled connections (closed by the server while idle) skipped before a fresh connect.
const MAX_STALE_SKIPS: usize = 8;
/// Idle pooled connections are closed after this long unused: Envoy's default upstream
/// `idle_timeout` (xDS `common_http_protocol_options.idle_timeout` is not read yet).
pub const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// What decides whether existing connections can be kept across a cluster update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectSettings {
    pub connect_timeout: Duration,
    pub http2: bool,
    pub max_requests_per_connection: Option<u32>,
}

impl ConnectSettings {
    pub fn of(cluster: &Cluster) -> ConnectSettings {
        ConnectSettings {
            connect_timeout: cluster.connect_timeout,
            http2: cluster.http2,
            max_requests_per_connection: cluster.max_requests_per_connection,
        }
    }
}

/// The pools of one cluster, index-aligned with its balancer's endpoints.
#[derive(Debug)]
pub struct ClusterUpstream {
    settings: ConnectSettings,
    endpoints: Vec<Arc<EndpointPool>>,
}

impl ClusterUpstream {
    pub fn build(
        cluster: &Cluster,
        endpoints: &[Endpoint],
        stats: &Arc<ClusterStats>,
        previous: Option<&ClusterUpstream>,
    ) -> ClusterUpstream {
        let settings = ConnectSettings::of(cluster);
        let reusable: HashMap<SocketAddr, &Arc<EndpointPool>> = previous
            .filter(|p| p.settings == settings)
            .map(|p| p.endpoints.iter().map(|e| (e.addr, e)).collect())
            .unwrap_or_default();
        let endpoints = endpoints
            .iter()
            .map(|e| match reusable.get(&e.addr) {
                Some(pool) => Arc::clone(pool),
                None => Arc::new(EndpointPool::new(
                    e.addr,
                    settings.clone(),
                    Arc::clone(stats),
                )),
            })
            .collect();
        ClusterUpstream {
            settings,
            endpoints,
        }
    }

    pub fn endpoint(&self, index: usize) -> Option<&Arc<EndpointPool>> {
        self.endpoints.get(index)
    }

    pub fn endpoints(&self) -> &[Arc<EndpointPool>] {
        &self.endpoints
    }
}

/// Why a send failed, and whether the request can be tried again as it is.
#[derive(Debug)]
pub enum SendError {
    /// Nothing was written upstream: the request is intact for another try.
    NotSent(ProxyError),
    /// The upstream may have seen the request; a streamed body is gone.
    Sent(ProxyError),
}

impl SendError {
    pub fn error(&self) -> &ProxyError {
        match self {
            SendError::NotSent(e) | SendError::Sent(e) => e,
        }
    }
}

/// A failure of hyper's clients, which hand an unsent request back.
enum HyperSendError {
    NotSent(ProxyError, Box<Request<RequestBody>>),
    Sent(ProxyError),
}

/// Why a request hyper's HTTP/1.1 client had started to send failed: a response hyper could
/// not parse, or else the upstream connection (unless the client's body failed: see
/// `HyperSendError::hand_back`).
fn sent_failure(error: hyper::Error) -> ProxyError {
    // A response hyper could not parse: a protocol error, as in Envoy (not a reset).
    if error.is_parse() || error.is_parse_status() {
        return ProxyError::UpstreamProtocol("invalid response head");
    }
    ProxyError::UpstreamReset(error.into())
}

/// Why a request sent on an HTTP/2 connection failed: the upstream refused the stream (it
/// did not process it: Envoy's `refused-stream` retry condition), or a reset.
fn h2_failure(error: hyper::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM) && h2.is_remote() {
                return ProxyError::UpstreamRefusedStream(error.into());
            }
            break;
        }
        source = e.source();
    }
    ProxyError::UpstreamReset(error.into())
}

impl HyperSendError {
    /// The error for the caller; an unsent request goes back to `req` for the next try.
    fn hand_back(self, req: &mut UpstreamRequest) -> SendError {
        match self {
            HyperSendError::NotSent(e, back) => {
                req.hand_back(back);
                SendError::NotSent(e)
            }
            // The client's streamed body failed (a malformed chunked body, the client
            // gone): the client's fault, answered 400 as by Envoy, whatever hyper's
            // client made of it (HTTP/1.1: a user error; HTTP/2: a stream it reset).
            HyperSendError::Sent(ProxyError::UpstreamReset(e)) if req.body_failed() => {
                SendError::Sent(match e.downcast::<hyper::Error>() {
                    Ok(e) => ProxyError::DownstreamBody(*e),
                    Err(e) => ProxyError::UpstreamReset(e),
                })
            }
            HyperSendError::Sent(e) => SendError::Sent(e),
        }
    }
}

/// A response body from either HTTP/1.1 client or from HTTP/2.
#[derive(Debug)]
pub enum ResponseStream {
    Hyper(Incoming),
    Inline(h1::InlineBody),
}

impl Body for ResponseStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseStream::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ResponseStream::Inline(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseStream::Hyper(body) => body.is_end_stream(),
            ResponseStream::Inline(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseStream::Hyper(body) => body.size_hint(),
            ResponseStream::Inline(body) => body.size_hint(),
        }
    }
}

#[derive(Debug)]
struct Http1Conn {
    sender: http1::SendRequest<RequestBody>,
    uses: u32,
    /// Pool sweeps spent idle (see [`EndpointPool::sweep_idle`]).
    idle_sweeps: u32,
}

/// Connections to one endpoint address.
#[derive(Debug)]
pub struct EndpointPool {
    pub addr: SocketAddr,
    settings: ConnectSettings,
    cluster_stats: Arc<ClusterStats>,
    pub stats: Arc<EndpointStats>,
    idle: Mutex<Vec<Http1Conn>>,
    /// Idle connections of our own HTTP/1.1 client.
    idle_inline: Mutex<Vec<h1::Conn>>,
    h2: Mutex<Option<http2::SendRequest<RequestBody>>>,
    /// Serialises HTTP/2 connects so a burst of first requests opens one connection.
    h2_connect: tokio::sync::Mutex<()>,
}

/// An HTTP/1.1 connection lent to one request; back to the pool when the response body ends.
#[derive(Debug)]
pub struct PooledHttp1 {
    conn: Http1Conn,
    pool: Arc<EndpointPool>,
}

impl PooledHttp1 {
    /// Returns the connection for reuse. Called at the end of the response body; hyper may
    /// still be finishing the exchange, so a later checkout waits for `ready()`.
    pub fn release(self) {
        let PooledHttp1 { mut conn, pool } = self;
        conn.idle_sweeps = 0;
        if conn.sender.is_closed()
            || pool
                .settings
                .max_requests_per_connection
                .is_some_and(|max| conn.uses >= max)
        {
            return;
        }
        let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(conn);
        }
    }
}

/// Counts an open upstream connection until dropped.
#[derive(Debug)]
pub struct UpstreamCx {
    cluster: Arc<ClusterStats>,
    endpoint: Arc<EndpointStats>,
}

impl Drop for UpstreamCx {
    fn drop(&mut self) {
        self.cluster.upstream_cx_active.dec();
        self.endpoint.cx_active.dec();
    }
}

/// Counts a request in flight on an endpoint (and holds the balancer's active-request slot)
/// until the response ends.
#[derive(Debug)]
pub struct InFlight {
    cluster: Arc<ClusterStats>,
    endpoint: Arc<EndpointStats>,
    _active: ActiveRequest,
}

impl InFlight {
    pub fn start(pool: &EndpointPool, active: ActiveRequest) -> InFlight {
        pool.cluster_stats.upstream_rq_total.inc();
        pool.cluster_stats.upstream_rq_active.inc();
        pool.stats.rq_total.inc();
        pool.stats.rq_active.inc();
        InFlight {
            cluster: Arc::clone(&pool.cluster_stats),
            endpoint: Arc::clone(&pool.stats),
            _active: active,
        }
    }

    pub fn cluster(&self) -> &ClusterStats {
        &self.cluster
    }

    pub fn endpoint(&self) -> &EndpointStats {
        &self.endpoint
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.cluster.upstream_rq_active.dec();
        self.endpoint.rq_active.dec();
    }
}

impl EndpointPool {
    fn new(addr: SocketAddr, settings: ConnectSettings, cluster_stats: Arc<ClusterStats>) -> Self {
        EndpointPool {
            addr,
            settings,
            cluster_stats,
            stats: Arc::default(),
            idle: Mutex::new(Vec::new()),
            idle_inline: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h2_connect: tokio::sync::Mutex::new(()),
        }
    }

    pub fn idle_connections(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
            + self
                .idle_inline
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len()
    }

    /// Closes the idle connections the server has closed, and those that sat idle through more
    /// than `max_sweeps` sweeps; returns how many. Without it, a connection the server closed
    /// would hold its socket (in CLOSE_WAIT) until a request took it from the pool, and one
    /// never used again would stay open for good. Called by the runtime every
    /// `ProxyOptions::idle_sweep_period` (5 s), off the data path; a request finds the lock
    /// free or held as briefly as by another request.
    pub fn sweep_idle(&self, max_sweeps: u32) -> usize {
        let mut closed = 0;
        {
            let mut idle = self.idle_inline.lock().unwrap_or_else(|e| e.into_inner());
            let before = idle.len();
            idle.retain_mut(|conn| conn.usable() && conn.swept() <= max_sweeps);
            closed += before - idle.len();
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let before = idle.len();
        idle.retain_mut(|conn| {
            conn.idle_sweeps += 1;
            !conn.sender.is_closed() && conn.idle_sweeps <= max_sweeps
        });
        closed + before - idle.len()
    }

    /// Takes back a connection of our own HTTP/1.1 client after a complete exchange.
    pub(crate) fn release_inline(&self, mut conn: h1::Conn) {
        conn.pooled();
        if self
            .settings
            .max_requests_per_connection
            .is_some_and(|max| conn.uses() >= max)
        {
            return;
        }
        let mut idle = self.idle_inline.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(conn);
        }
    }

    /// Opens a TCP connection within the cluster's connect timeout, counting it while the
    /// returned guard lives.
    pub async fn connect_tcp(&self) -> Result<(TcpStream, UpstreamCx), ProxyError> {
        let connect = TcpStream::connect(self.addr);
        let result = if self.settings.connect_timeout.is_zero() {
            Ok(connect.await)
        } else {
            tokio::time::timeout(self.settings.connect_timeout, connect).await
        };
        let stream = match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                self.cluster_stats.upstream_cx_connect_fail.inc();
                self.stats.cx_connect_fail.inc();
                return Err(ProxyError::ConnectFailure(e));
            }
            Err(_) => {
                self.cluster_stats.upstream_cx_connect_fail.inc();
                self.cluster_stats.upstream_cx_connect_timeout.inc();
                self.stats.cx_connect_fail.inc();
                return Err(ProxyError::ConnectTimeout);
            }
        };
        let _ = stream.set_nodelay(true);
        self.cluster_stats.upstream_cx_total.inc();
        self.cluster_stats.upstream_cx_active.inc();
        self.stats.cx_total.inc();
        self.stats.cx_active.inc();
        let cx = UpstreamCx {
            cluster: Arc::clone(&self.cluster_stats),
            endpoint: Arc::clone(&self.stats),
        };
        Ok((stream, cx))
    }

    /// Sends `req` on a pooled or new connection. For HTTP/1.1 through hyper the connection
    /// comes back with the response, to be released when the response body ends.
    pub async fn send(
        self: &Arc<Self>,
        req: &mut UpstreamRequest,
    ) -> Result<(Response<ResponseStream>, Option<PooledHttp1>), SendError> {
        if !self.settings.http2
            && let Some(body) = req.body_in_memory()
        {
            let response = self.send_inline(req, body).await?;
            return Ok((response.map(ResponseStream::Inline), None));
        }
        // A streamed body taken by an earlier try cannot be sent again (and such a try is
        // never repeated).
        let Some(hyper_req) = req.for_hyper() else {
            return Err(SendError::Sent(ProxyError::NoHealthyUpstream));
        };
        if self.settings.http2 {
            let response = self
                .send_h2(hyper_req)
                .await
                .map_err(|e| e.hand_back(req))?;
            return Ok((response.map(ResponseStream::Hyper), None));
        }
        let (response, conn) = self
            .send_h1(hyper_req)
            .await
            .map_err(|e| e.hand_back(req))?;
        Ok((response.map(ResponseStream::Hyper), Some(conn)))
    }

    fn take_idle_inline(&self) -> Option<h1::Conn> {
        self.idle_inline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
    }

    /// Our own HTTP/1.1 client: the request goes out in one write and the response is read in
    /// this task.
    async fn send_inline(
        self: &Arc<Self>,
        req: &UpstreamRequest,
        body: Option<Bytes>,
    ) -> Result<Response<h1::InlineBody>, SendError> {
        let head_request = req.method == Method::HEAD;
        let mut out = buffers::take();
        h1::encode_request(req, body.as_ref(), &mut out);
        // A connection the server closed while it was idle is skipped (seen by its read
        // readiness). One that closes just as the request goes out is an upstream reset, left
        // to the route's retry policy as in Envoy.
        let mut pooled = None;
        for _ in 0..MAX_STALE_SKIPS {
            match self.take_idle_inline() {
                Some(conn) if conn.usable() => {
                    pooled = Some(conn);
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
        let conn = match pooled {
            Some(conn) => conn,
            // Boxed, as for hyper's connects: rarely needed, and large.
            None => match Box::pin(self.connect_tcp()).await {
                Ok((stream, cx)) => h1::Conn::new(stream, cx),
                Err(e) => {
                    buffers::put(out);
                    return Err(SendError::NotSent(e));
                }
            },
        };
        h1::exchange(self, conn, out, body.as_ref(), head_request)
            .await
            .map_err(|failure| {
                SendError::Sent(match failure {
                    h1::Failure::Io(e) => ProxyError::UpstreamReset(Box::new(e)),
                    h1::Failure::Malformed(reason) => ProxyError::UpstreamProtocol(reason),
                })
            })
    }

    fn take_idle(&self) -> Option<Http1Conn> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// hyper's HTTP/1.1 client, its response head held to our framing rules as well.
    async fn send_h1(
        self: &Arc<Self>,
        req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, PooledHttp1), HyperSendError> {
        let head_request = req.method() == Method::HEAD;
        let (response, conn) = self.send_h1_unchecked(req).await?;
        // hyper reads a body framed both by `Transfer-Encoding` and by `Content-Length` as
        // chunked, and keeps the `Content-Length` for us to pass on; it reads other codings
        // until the close. Such a connection is not reused: dropped with its response.
        if let Err(e) = framing::check_response(response.status(), response.headers(), head_request)
        {
            return Err(HyperSendError::Sent(ProxyError::UpstreamProtocol(
                e.as_str(),
            )));
        }
        Ok((response, conn))
    }

    async fn send_h1_unchecked(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, PooledHttp1), HyperSendError> {
        let mut skipped = 0;
        while skipped < MAX_STALE_SKIPS {
            let Some(mut conn) = self.take_idle() else {
                break;
            };
            if conn.sender.is_closed() || conn.sender.ready().await.is_err() {
                skipped += 1;
                continue;
            }
            match conn.sender.try_send_request(req).await {
                Ok(response) => {
                    conn.uses += 1;
                    return Ok((response, self.lend(conn)));
                }
                Err(mut e) => match e.take_message() {
                    // Closed under us before the request was written: try another.
                    Some(back) => {
                        req = back;
                        skipped += 1;
                    }
                    None => return Err(HyperSendError::Sent(sent_failure(e.into_error()))),
                },
            }
        }
        // Boxed: the connect and handshake state is large and rarely needed, and every
        // request's future would otherwise carry room for it.
        let mut sender = match Box::pin(self.connect_h1()).await {
            Ok(sender) => sender,
            Err(e) => return Err(HyperSendError::NotSent(e, Box::new(req))),
        };
        match sender.try_send_request(req).await {
            Ok(response) => Ok((
                response,
                self.lend(Http1Conn {
                    sender,
                    uses: 1,
                    idle_sweeps: 0,
                }),
            )),
            Err(mut e) => match e.take_message() {
                Some(back) => Err(HyperSendError::NotSent(
                    ProxyError::Handshake(e.into_error()),
                    Box::new(back),
                )),
                None => Err(HyperSendError::Sent(sent_failure(e.into_error()))),
            },
        }
    }

    fn lend(self: &Arc<Self>, conn: Http1Conn) -> PooledHttp1 {
        PooledHttp1 {
            conn,
            pool: Arc::clone(self),
        }
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<RequestBody>, ProxyError> {
        let (stream, cx) = self.connect_tcp().await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ProxyError::Handshake)?;
        tokio::spawn(async move {
            let _cx = cx;
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream HTTP/1.1 connection closed");
            }
        });
        Ok(sender)
    }

    fn h2_sender(&self) -> Option<http2::SendRequest<RequestBody>> {
        let slot = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    async fn connect_h2(&self) -> Result<http2::SendRequest<RequestBody>, ProxyError> {
        // Waiting behind another request's connect counts against this request's connect
        // timeout too, so a black-holed endpoint does not queue requests behind each other.
        let lock = self.h2_connect.lock();
        let _connecting = if self.settings.connect_timeout.is_zero() {
            lock.await
        } else {
            match tokio::time::timeout(self.settings.connect_timeout, lock).await {
                Ok(guard) => guard,
                Err(_) => return Err(ProxyError::ConnectTimeout),
            }
        };
        if let Some(sender) = self.h2_sender() {
            return Ok(sender);
        }
        let (stream, cx) = self.connect_tcp().await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ProxyError::Handshake)?;
        tokio::spawn(async move {
            let _cx = cx;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection closed");
            }
        });
        *self.h2.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender.clone());
        Ok(sender)
    }

    async fn send_h2(
        &self,
        mut req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, HyperSendError> {
        // A connection that went away (GOAWAY, close) hands the request back; one fresh
        // connection is tried before giving up.
        let mut last_error = None;
        for _ in 0..2 {
            let sender = match self.h2_sender() {
                Some(sender) => sender,
                None => match Box::pin(self.connect_h2()).await {
                    Ok(sender) => sender,
                    Err(e) => return Err(HyperSendError::NotSent(e, Box::new(req))),
                },
            };
            let mut sender = sender;
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(response),
                Err(mut e) => match e.take_message() {
                    Some(back) => {
                        req = back;
                        let mut slot = self.h2.lock().unwrap_or_else(|e| e.into_inner());
                        if slot.as_ref().is_some_and(|s| s.is_closed()) {
                            *slot = None;
                        }
                        last_error = Some(e.into_error());
                    }
                    None => return Err(HyperSendError::Sent(h2_failure(e.into_error()))),
                },
            }
        }
        match last_error {
            Some(e) => Err(HyperSendError::NotSent(
                ProxyError::Handshake(e),
                Box::new(req),
            )),
            None => Err(HyperSendError::NotSent(
                ProxyError::ConnectTimeout,
                Box::new(req),
            )),
        }
    }
}
