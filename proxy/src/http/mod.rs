//! The HTTP connection manager: per accepted socket, our own HTTP/1.1 server (`h1`) for plain
//! requests, and hyper (HTTP/1.1 or h2c prior knowledge, told apart by the preface) for the
//! rest of a connection once it needs more; a handler per request that routes and forwards
//! (`forward`); the connection's idle and drain handling.

pub mod body;
mod forward;
mod gate;
mod h1;
pub mod headers;
pub mod local_reply;

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::header::CONNECTION;
use http::{HeaderValue, StatusCode, Version};
use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use mesh_drain::{State, Watch};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::{HttpConnectionManager, RouteConfig};
use crate::filter::HttpChain;
use crate::listener::ConnGuard;
use crate::metrics::HttpStats;
use crate::state::Shared;
use body::DownstreamBody;

/// hyper refuses read buffers below this.
const MIN_BUF_SIZE: usize = 8192;

/// One HTTP listener's settings, fixed for its lifetime (a changed connection manager
/// replaces the listener; route changes do not, they come with each request's snapshot).
pub(crate) struct HttpListener {
    pub name: Arc<str>,
    pub hcm: Arc<HttpConnectionManager>,
    pub stats: Arc<HttpStats>,
    /// The HTTP filters before the router; `None` when the router is the only one.
    pub filters: Option<HttpChain>,
    /// Set when the listener is removed: the routes its draining connections keep using.
    pub retired_routes: ArcSwapOption<RouteConfig>,
    builder: auto::Builder<TokioExecutor>,
}

impl HttpListener {
    pub fn new(
        name: &str,
        hcm: Arc<HttpConnectionManager>,
        stats: Arc<HttpStats>,
        filters: Option<HttpChain>,
    ) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // The whole request head must fit in the read buffer, so its size is the header
        // limit: a larger head is answered 431 by hyper.
        let head_limit = hcm.max_request_headers_bytes.max(MIN_BUF_SIZE);
        builder
            .http1()
            .timer(TokioTimer::new())
            // The head deadline is the framing gate's (`gate`): from each head's first byte,
            // answered 408. hyper's would run from the end of the previous response.
            .header_read_timeout(None)
            .max_buf_size(head_limit)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(hcm.max_request_headers_bytes).unwrap_or(u32::MAX));
        HttpListener {
            name: Arc::from(name),
            hcm,
            stats,
            filters,
            retired_routes: ArcSwapOption::empty(),
            builder,
        }
    }
}

/// Per downstream connection, shared by its requests.
pub(crate) struct ConnCtx {
    pub shared: Arc<Shared>,
    pub listener: Arc<HttpListener>,
    pub peer: SocketAddr,
    pub drain: Watch,
    started: Instant,
    /// Requests whose response has not been fully sent.
    active: AtomicU32,
    /// When `active` last dropped to zero, in ms since `started`.
    idle_since_ms: AtomicU64,
    /// The listener is draining: HTTP/1.1 responses say `Connection: close`.
    draining: AtomicBool,
    /// A request arrived over HTTP/2.
    http2: AtomicBool,
    /// hyper serves the connection now: its idle timeout needs `idle_since_ms` (our HTTP/1.1
    /// server keeps its own account of idleness).
    by_hyper: AtomicBool,
    /// Wakes the connection loop when a draining connection turns out to speak HTTP/2, so it
    /// can send GOAWAY.
    h2_seen_while_draining: Notify,
    pub guard: ConnGuard,
}

/// Counts a request from its head to the end of its response body.
pub(crate) struct RequestGuard(Arc<ConnCtx>);

impl RequestGuard {
    fn start(ctx: &Arc<ConnCtx>) -> RequestGuard {
        ctx.listener.stats.downstream_rq_total.inc();
        ctx.listener.stats.downstream_rq_active.inc();
        ctx.active.fetch_add(1, Relaxed);
        RequestGuard(Arc::clone(ctx))
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let ctx = &self.0;
        ctx.listener.stats.downstream_rq_active.dec();
        if ctx.active.fetch_sub(1, Relaxed) == 1
            && ctx.listener.hcm.idle_timeout.is_some()
            && ctx.by_hyper.load(Relaxed)
        {
            let ms = u64::try_from(ctx.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            ctx.idle_since_ms.store(ms, Relaxed);
        }
    }
}

impl fmt::Debug for RequestGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestGuard")
            .field("peer", &self.0.peer)
            .finish()
    }
}

/// Serves one downstream connection until it closes, idles out or is drained: with our own
/// HTTP/1.1 server ([`h1`]) while the requests are plain ones, then with hyper.
pub(crate) async fn serve_connection(
    shared: Arc<Shared>,
    listener: Arc<HttpListener>,
    stream: TcpStream,
    peer: SocketAddr,
    mut drain: Watch,
    guard: ConnGuard,
) {
    let stats = &listener.stats;
    stats.downstream_cx_total.inc();
    stats.downstream_cx_active.inc();
    let ctx = Arc::new(ConnCtx {
        shared,
        listener: Arc::clone(&listener),
        peer,
        drain: drain.clone(),
        started: Instant::now(),
        active: AtomicU32::new(0),
        idle_since_ms: AtomicU64::new(0),
        draining: AtomicBool::new(false),
        http2: AtomicBool::new(false),
        by_hyper: AtomicBool::new(false),
        h2_seen_while_draining: Notify::new(),
        guard,
    });
    if let h1::Outcome::Handoff(io) = h1::serve(&ctx, stream, &mut drain).await {
        ctx.by_hyper.store(true, Relaxed);
        // Boxed so that the connection's task, which every idle connection keeps, has no
        // room reserved for hyper's connection state.
        Box::pin(serve_with_hyper(&ctx, &listener, io, drain)).await;
    }
}

// The gauge comes down when the connection's state goes, also when its task is dropped
// unfinished (shed at the connection limit, or cut off by a drain).
impl Drop for ConnCtx {
    fn drop(&mut self) {
        self.listener.stats.downstream_cx_active.dec();
    }
}

/// The rest of a connection, served by hyper (HTTP/2, upgrades, streamed request bodies).
async fn serve_with_hyper(
    ctx: &Arc<ConnCtx>,
    listener: &HttpListener,
    io: h1::Prefixed,
    mut drain: Watch,
) {
    let stats = &listener.stats;
    let service = {
        let ctx = Arc::clone(ctx);
        service_fn(move |req: Request<Incoming>| {
            let ctx = Arc::clone(&ctx);
            async move {
                let mut req = req.map(DownstreamBody::Hyper);
                let started = Started::new(&ctx, &req);
                let mut response = forward::proxy(&ctx, &mut req, None).await;
                started.answered(&mut response);
                // hyper writes only the header map.
                let (mut parts, mut body) = response.into_parts();
                if let Some(passed) = body.take_passed_head() {
                    passed.into_map(&mut parts.headers);
                }
                if let Some(ms) = body.take_service_time() {
                    parts.headers.insert(
                        headers::X_ENVOY_UPSTREAM_SERVICE_TIME.clone(),
                        headers::service_time(ms),
                    );
                }
                Ok::<_, Infallible>(hyper::Response::from_parts(parts, body))
            }
        })
    };
    // A request the framing rules refuse (see `gate`): hyper finishes and closes.
    let refusals = io.refusals();
    let conn = listener
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);

    // Envoy's idle_timeout: no request in flight for that long closes the connection.
    let idle = listener.hcm.idle_timeout.filter(|d| !d.is_zero());
    let sleep = tokio::time::sleep(idle.unwrap_or(Duration::from_secs(3600)));
    tokio::pin!(sleep);
    let mut closing = false;
    let mut draining = ctx.draining.load(Relaxed);
    let mut http2 = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "downstream connection ended with an error");
                }
                break;
            }
            state = drain.changed() => {
                match state {
                    State::Running => {}
                    // Like Envoy: HTTP/2 gets GOAWAY (in-flight streams finish, the client
                    // knows which ones were not processed); HTTP/1.1 is not closed while idle,
                    // where a request could cross the close, but answers its next request with
                    // `Connection: close`. What is left is closed at the drain deadline.
                    State::Draining => {
                        draining = true;
                        ctx.draining.store(true, Relaxed);
                        http2 = ctx.http2.load(Relaxed);
                    }
                    State::Aborted => break,
                }
            }
            () = ctx.h2_seen_while_draining.notified(), if draining && !http2 => http2 = true,
            () = refused(refusals.as_deref()), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = &mut sleep, if idle.is_some() && !closing => {
                let Some(idle) = idle else { continue };
                if ctx.active.load(Relaxed) > 0 {
                    sleep.as_mut().reset(Instant::now() + idle);
                    continue;
                }
                let since = Duration::from_millis(ctx.idle_since_ms.load(Relaxed));
                let idle_at = ctx.started + since + idle;
                if Instant::now() >= idle_at {
                    stats.downstream_cx_idle_timeout.inc();
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                } else {
                    sleep.as_mut().reset(idle_at);
                }
            }
        }
        if draining && http2 && !closing {
            closing = true;
            conn.as_mut().graceful_shutdown();
        }
    }
}

/// Resolves once the connection's gate refuses a request (never without a gate).
async fn refused(refusals: Option<&Notify>) {
    match refusals {
        Some(refusals) => refusals.notified().await,
        None => std::future::pending().await,
    }
}

/// A request on its way through the router: counted from its head to the end of its
/// response body (the count goes with the body). Sync steps either side of
/// `forward::proxy`, rather than an async layer around it, which would copy the response
/// (a few hundred bytes) out of one future into the next.
pub(crate) struct Started {
    guard: RequestGuard,
    http2: bool,
}

impl Started {
    fn new(ctx: &Arc<ConnCtx>, req: &Request<DownstreamBody>) -> Started {
        let guard = RequestGuard::start(ctx);
        let http2 = req.version() == Version::HTTP_2;
        if http2 && !ctx.http2.load(Relaxed) {
            ctx.http2.store(true, Relaxed);
        }
        Started { guard, http2 }
    }

    /// Counts the response's status, asks for `Connection: close` (or GOAWAY) while the
    /// listener drains, and hands the request's count to the response body.
    fn answered(self, response: &mut hyper::Response<body::ResponseBody>) {
        let ctx = &self.guard.0;
        ctx.listener
            .stats
            .downstream_rq_xx
            .record(response.status().as_u16());
        if ctx.draining.load(Relaxed) {
            if self.http2 {
                ctx.h2_seen_while_draining.notify_one();
            } else if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
        }
        response.body_mut().attach(self.guard);
    }
}
