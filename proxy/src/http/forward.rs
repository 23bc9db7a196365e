//! One request through the router: snapshot, virtual host, route, then a direct response, a
//! redirect, or a forward to a cluster with the route's rewrites, header mutations, timeouts
//! and retries.
//!
//! Retries: a try may be repeated (on another endpoint, the balancer is told which ones were
//! tried) only while nothing has been sent downstream. A request whose body never left (connect
//! failure) is always replayable; otherwise only bodies that are empty or that we buffered:
//! when the route has a retry policy, a body with a known length up to
//! [`RETRY_BUFFER_LIMIT`] is read first and sent from memory. Longer or chunked bodies stream
//! and are retried on connect failures only.
//!
//! Timeouts: the route timeout (Envoy default 15 s, zero = none) starts when the request
//! arrives and covers every try and backoff up to the response headers, then the rest of the
//! response body (a stream reset if it fires late). `per_try_timeout` bounds each try up to its
//! response headers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, EXPECT, HOST, LOCATION, UPGRADE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Body;
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, Sleep};

use super::ConnCtx;
use super::body::{DownstreamBody, ResponseBody, StreamTimer, UpstreamBody};
use super::headers::{
    self, Levels, RequestFacts, X_ENVOY_UPSTREAM_SERVICE_TIME, X_FORWARDED_PROTO, X_REQUEST_ID,
};
use super::local_reply::local_reply;
use crate::config::{ClusterTarget, ForwardAction, RetryPolicy, RouteAction, UpgradeConfig};
use crate::error::{ProxyError, Retry};
use crate::route::{RequestView, match_route, pick_weighted, request_hash, select_virtual_host};
use crate::state::ClusterRuntime;
use crate::upstream::{
    Added, BodySource, InFlight, PooledHttp1, ResponseStream, SendError, UpstreamRequest,
};

/// Largest request body (with a known length) buffered so that it can be retried.
pub const RETRY_BUFFER_LIMIT: u64 = 64 * 1024;

/// Routes and answers one request.
///
/// The request stays where the caller keeps it (its head is moved out as needed): a request
/// is a few hundred bytes, and each async layer it passed through by value would copy it
/// twice.
pub(super) async fn proxy(
    ctx: &Arc<ConnCtx>,
    req: &mut Request<DownstreamBody>,
    timer: Option<Pin<&mut Sleep>>,
) -> Response<ResponseBody> {
    let stats = &ctx.listener.stats;
    let facts = RequestFacts::of(req.headers());
    let grpc = facts.grpc;
    if let Some(refused) = check_request(ctx, req, facts) {
        return refused;
    }
    let snapshot = ctx.shared.snapshot.load_full();
    let retired;
    let config = match snapshot.route_config(&ctx.listener.name) {
        Some(config) => config,
        None => {
            // A removed listener's draining connections keep its last routes.
            retired = ctx.listener.retired_routes.load_full();
            match retired.as_deref() {
                Some(config) => config,
                None => {
                    stats.no_route.inc();
                    return ProxyError::NoRoute.to_response(grpc);
                }
            }
        }
    };
    let authority = headers::authority(req.uri(), req.headers());
    let path_and_query = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
    let Some(vhost) = select_virtual_host(config, authority) else {
        stats.no_route.inc();
        return ProxyError::NoRoute.to_response(grpc);
    };
    let view = RequestView {
        method: req.method(),
        path_and_query,
        authority,
        headers: req.headers(),
        source: ctx.peer,
    };
    let route = match_route(vhost, &view);
    if facts.upgrade && wants_upgrade(req) {
        let forward = route.and_then(|r| match &r.action {
            RouteAction::Forward(action) => Some(&**action),
            _ => None,
        });
        if !upgrade_allowed(ctx, forward, req) {
            // The client may already be sending the upgraded protocol: the connection
            // closes after the answer, as Envoy's does.
            let mut refused = local_reply(StatusCode::FORBIDDEN, Bytes::new(), false);
            refused
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return refused;
        }
    }
    let Some(route) = route else {
        stats.no_route.inc();
        return ProxyError::NoRoute.to_response(grpc);
    };
    let mut levels = Levels {
        weighted: None,
        route,
        vhost,
        config,
        filters: None,
    };
    // ---- HTTP filters before the router (crate::filter); none: one branch ----
    let run;
    if let Some(chain) = &ctx.listener.filters {
        // Envoy picks the weighted cluster with the route, before the filters run (its
        // per-filter configs count for them); the router below keeps this pick.
        if let RouteAction::Forward(action) = &route.action
            && let ClusterTarget::Weighted(clusters) = &action.target
        {
            levels.weighted = pick_weighted(clusters, fastrand::u64(..));
        }
        let mut ran = crate::filter::Run::default();
        if let Some(answer) = chain.on_request(&levels, req, &mut ran) {
            return answer;
        }
        run = ran;
        levels.filters = Some(&run);
    }
    // ---- the router ----
    match &route.action {
        RouteAction::DirectResponse { status, body } => {
            stats.rq_direct_response.inc();
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = local_reply(status, body.clone().unwrap_or_default(), grpc);
            levels.mutate_response(response.headers_mut());
            response
        }
        RouteAction::Redirect(redirect) => {
            stats.rq_redirect.inc();
            let location = headers::redirect_location(
                redirect,
                route,
                req.headers(),
                authority,
                path_and_query,
            );
            let mut response = Response::new(ResponseBody::empty());
            *response.status_mut() =
                StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            if let Ok(location) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(LOCATION, location);
            }
            levels.mutate_response(response.headers_mut());
            response
        }
        RouteAction::Forward(action) => {
            let (cluster_name, weighted) = match &action.target {
                ClusterTarget::Cluster(name) => (name.as_str(), None),
                ClusterTarget::Weighted(clusters) => {
                    let picked = levels
                        .weighted
                        .or_else(|| pick_weighted(clusters, fastrand::u64(..)));
                    match picked {
                        Some(w) => (w.name.as_str(), Some(w)),
                        None => {
                            stats.no_cluster.inc();
                            return reply(&levels, &ProxyError::UnknownCluster, grpc);
                        }
                    }
                }
            };
            let levels = Levels { weighted, ..levels };
            let Some(cluster) = snapshot.clusters.get(cluster_name) else {
                stats.no_cluster.inc();
                return reply(&levels, &ProxyError::UnknownCluster, grpc);
            };
            let hash = if cluster.hashing && !action.hash_policy.is_empty() {
                request_hash(&action.hash_policy, &view)
            } else {
                None
            };
            let matched = headers::matched_len(route, req.uri().path());
            forward(
                ctx, cluster, &levels, action, matched, hash, req, facts, timer,
            )
            .await
        }
    }
}

fn reply(levels: &Levels<'_>, error: &ProxyError, grpc: bool) -> Response<ResponseBody> {
    reply_after(levels, error, false, grpc)
}

/// The local reply for `error`; `retried` when the request was tried more than once.
fn reply_after(
    levels: &Levels<'_>,
    error: &ProxyError,
    retried: bool,
    grpc: bool,
) -> Response<ResponseBody> {
    let mut response = error.local_reply(retried).into_response(grpc);
    levels.mutate_response(response.headers_mut());
    response
}

/// What Envoy's connection manager refuses before routing, answered as it does:
/// - HTTP/1.0 unless `accept_http_10` (426; with it, `default_host_for_http_10` fills a missing
///   Host);
/// - an HTTP/1.1 request without a Host (400, RFC 9112 3.2);
/// - two Host fields (400 as RFC 9112 3.2 asks: Envoy joins them into one, which matches no
///   virtual host but the catch-all; we route by one authority and forward the same one);
/// - CONNECT, which only Envoy's CONNECT routes (`connect_matcher`, not supported) match:
///   404, and the connection closes.
fn check_request(
    ctx: &ConnCtx,
    req: &mut Request<DownstreamBody>,
    facts: RequestFacts,
) -> Option<Response<ResponseBody>> {
    let hcm = &ctx.listener.hcm;
    let refuse = |status: StatusCode, body: &'static str| {
        let mut response = local_reply(status, Bytes::from_static(body.as_bytes()), facts.grpc);
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        Some(response)
    };
    if req.version() == Version::HTTP_10 {
        if !hcm.accept_http_10 {
            return refuse(StatusCode::UPGRADE_REQUIRED, "Upgrade Required");
        }
        if !facts.host
            && let Some(host) = &hcm.default_host_for_http_10
        {
            req.headers_mut().insert(HOST, host.clone());
        }
    } else if req.version() == Version::HTTP_11 && !facts.host && req.uri().authority().is_none() {
        return refuse(StatusCode::BAD_REQUEST, "");
    }
    if facts.hosts_conflict {
        return refuse(StatusCode::BAD_REQUEST, "");
    }
    if req.method() == Method::CONNECT {
        ctx.listener.stats.no_route.inc();
        return refuse(StatusCode::NOT_FOUND, "");
    }
    None
}

/// An HTTP/1.1 request with `Upgrade` and `Connection: upgrade` (only asked when the facts
/// saw an `Upgrade` header).
fn wants_upgrade(req: &Request<DownstreamBody>) -> bool {
    req.version() <= Version::HTTP_11 && headers::connection_has(req.headers(), "upgrade")
}

/// Lets an upgrade through only where `upgrade_configs` allow its type, as Envoy does: the
/// route's entry for the type decides if it has one, else the connection manager's; neither
/// means 403. An `h2c` upgrade is never passed on (see `is_h2c_upgrade`).
/// An `Upgrade: h2c` request: its upgrade headers are removed and it goes on as a plain
/// HTTP/1.1 request (Envoy's codec does the same), so that a client's HTTP/2 preface never
/// reaches a backend past the proxy's routing and policy.
fn is_h2c_upgrade(req: &Request<DownstreamBody>) -> bool {
    req.headers()
        .get(UPGRADE)
        .is_some_and(|p| p.as_bytes().trim_ascii().eq_ignore_ascii_case(b"h2c"))
}

fn upgrade_allowed(
    ctx: &ConnCtx,
    route: Option<&ForwardAction>,
    req: &Request<DownstreamBody>,
) -> bool {
    let Some(protocol) = req.headers().get(UPGRADE) else {
        return true;
    };
    let protocol = protocol.as_bytes().trim_ascii();
    if protocol.eq_ignore_ascii_case(b"h2c") {
        // Stripped by `forward`.
        return true;
    }
    let configured = |upgrades: &[UpgradeConfig]| {
        upgrades
            .iter()
            .find(|u| protocol.eq_ignore_ascii_case(u.upgrade_type.as_bytes()))
            .map(|u| u.enabled)
    };
    let allowed = route
        .and_then(|action| configured(&action.upgrades))
        .or_else(|| configured(&ctx.listener.hcm.upgrades))
        .unwrap_or(false);
    if !allowed && protocol.eq_ignore_ascii_case(b"websocket") {
        ctx.listener.stats.downstream_rq_ws_on_non_ws_route.inc();
    }
    allowed
}

/// The upstream response that ends the tries.
struct Upstream {
    response: Response<ResponseStream>,
    conn: Option<PooledHttp1>,
    in_flight: InFlight,
    /// From the try's start to its response head.
    took: Duration,
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    ctx: &Arc<ConnCtx>,
    cluster: &ClusterRuntime,
    levels: &Levels<'_>,
    action: &ForwardAction,
    matched: usize,
    hash: Option<u64>,
    req: &mut Request<DownstreamBody>,
    facts: RequestFacts,
    timer: Option<Pin<&mut Sleep>>,
) -> Response<ResponseBody> {
    let arrived = Instant::now();
    let grpc = facts.grpc;
    let http2 = cluster.config.http2;
    // Allowed by `upgrade_allowed`.
    let h2c = facts.upgrade && is_h2c_upgrade(req);
    let upgrade = facts.upgrade && !h2c && wants_upgrade(req);
    if upgrade && http2 {
        return reply(levels, &ProxyError::UpgradeToHttp2, grpc);
    }
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut *req));
    let method = std::mem::take(req.method_mut());
    let uri = std::mem::take(req.uri_mut());
    let mut headers = std::mem::take(req.headers_mut());
    let body = std::mem::replace(req.body_mut(), DownstreamBody::Buffered(None));
    let upgrade_protocol = if upgrade {
        headers.get(UPGRADE).cloned()
    } else {
        None
    };

    let path_and_query = match (&action.prefix_rewrite, uri.path_and_query()) {
        (Some(rewrite), pq) => {
            let pq = pq.map_or("/", PathAndQuery::as_str);
            let rewritten = headers::rewrite_prefix(pq, matched, rewrite);
            PathAndQuery::from_maybe_shared(Bytes::from(rewritten)).ok()
        }
        (None, pq) => pq.cloned(),
    };
    let path_and_query = path_and_query.unwrap_or_else(|| PathAndQuery::from_static("/"));

    let upstream_uri = if http2 {
        // HTTP/2 carries the authority as :authority, built from the URI.
        let authority = match &action.host_rewrite_literal {
            Some(host) => Authority::try_from(host.as_str()).ok(),
            None => match uri.authority() {
                Some(a) => Some(a.clone()),
                None => headers
                    .get(HOST)
                    .and_then(|h| Authority::try_from(h.as_bytes()).ok()),
            },
        };
        headers.remove(HOST);
        let mut builder = Uri::builder()
            .scheme(Scheme::HTTP)
            .path_and_query(path_and_query);
        if let Some(authority) = authority {
            builder = builder.authority(authority);
        }
        builder.build().unwrap_or_default()
    } else {
        match &action.host_rewrite_literal {
            Some(host) => {
                if let Ok(host) = HeaderValue::from_str(host) {
                    headers.insert(HOST, host);
                }
            }
            None => {
                // The request was routed by the target's authority when it has one (HTTP/2's
                // `:authority`, HTTP/1.1's absolute form), so that is the Host sent on, in
                // place of any `Host` field (RFC 9112 3.2.2). Origin-form targets (nearly all)
                // have none and keep their Host.
                if let Some(authority) = uri.authority()
                    && let Ok(host) = HeaderValue::from_str(authority.as_str())
                {
                    headers.insert(HOST, host);
                }
            }
        }
        Uri::from(path_and_query)
    };

    if h2c {
        headers.remove(&headers::HTTP2_SETTINGS);
    }
    if facts.hop_by_hop {
        headers::strip_hop_by_hop(&mut headers);
    }
    // Like Envoy, answer `Expect: 100-continue` here (hyper sends the 100 when the body is
    // first read) instead of passing it on.
    if facts.expect
        && headers
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        headers.remove(EXPECT);
    }
    // The facts hold unless the route's header mutations changed the headers.
    let (has_forwarded_proto, has_request_id) = if levels.mutates_request() {
        levels.mutate_request(&mut headers);
        (
            headers.contains_key(&X_FORWARDED_PROTO),
            headers.contains_key(&X_REQUEST_ID),
        )
    } else {
        (facts.x_forwarded_proto, facts.x_request_id)
    };
    let added = Added {
        forwarded_proto: (!has_forwarded_proto).then(|| HeaderValue::from_static("http")),
        request_id: (!has_request_id).then(headers::request_id),
    };
    if let Some(protocol) = &upgrade_protocol {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol.clone());
    }

    let policy = action
        .retry
        .as_ref()
        .filter(|p| p.num_retries > 0 && !upgrade);
    // The first try starts now, or once a body to buffer has been read.
    let mut first_try = arrived;
    let body = if body.is_end_stream() {
        BodySource::Empty
    } else if policy.is_some()
        && body
            .size_hint()
            .exact()
            .is_some_and(|n| n <= RETRY_BUFFER_LIMIT)
    {
        match body.collect().await {
            Ok(collected) => {
                first_try = Instant::now();
                BodySource::Buffered(collected.to_bytes())
            }
            Err(e) => return reply(levels, &ProxyError::DownstreamBody(e), grpc),
        }
    } else {
        BodySource::Stream(Some(body))
    };
    let version = if http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    let mut upstream_req = UpstreamRequest::new(method, upstream_uri, version, headers, body);
    upstream_req.added = added;
    upstream_req.keep = policy.is_some();
    upstream_req.upgrade = upgrade;

    // The wait for the response head ends at the route timeout or, when that is disabled or
    // later, at the stream idle timeout (nothing moves on the stream meanwhile), as in Envoy.
    let idle = action
        .idle_timeout
        .or(ctx.listener.hcm.stream_idle_timeout)
        .filter(|d| !d.is_zero());
    let (deadline, idle_first) = match (!action.timeout.is_zero(), idle) {
        (true, Some(idle)) if idle < action.timeout => (Some(arrived + idle), true),
        (true, _) => (Some(arrived + action.timeout), false),
        (false, idle) => (idle.map(|d| arrived + d), true),
    };
    // The tries future is made in each arm (pinned in place) rather than once before the
    // match: a future held in a local and then moved into another is stored twice in this
    // one, and every request's future is copied into its box.
    let result = match deadline {
        Some(deadline) => {
            let tries = std::pin::pin!(send_with_retries(
                cluster,
                hash,
                policy,
                &mut upstream_req,
                first_try
            ));
            match within(deadline, timer, tries).await {
                Some(result) => result,
                None if idle_first => {
                    ctx.listener.stats.downstream_rq_idle_timeout.inc();
                    Err(Failed {
                        error: ProxyError::StreamIdleTimeout,
                        retried: false,
                    })
                }
                None => {
                    cluster.stats.upstream_rq_timeout.inc();
                    Err(Failed {
                        error: ProxyError::Timeout,
                        retried: false,
                    })
                }
            }
        }
        None => send_with_retries(cluster, hash, policy, &mut upstream_req, first_try).await,
    };
    let Upstream {
        mut response,
        conn,
        in_flight,
        took,
    } = match result {
        Ok(upstream) => upstream,
        Err(Failed { error, retried }) => {
            tracing::debug!(%error, flag = error.flag(), side = ?error.side(), "local reply");
            return reply_after(levels, &error, retried, grpc);
        }
    };
    let service_time = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);

    if let Some(downstream) = downstream_upgrade
        && response.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let upstream = hyper::upgrade::on(&mut response);
        ctx.listener.stats.upgrades.inc();
        tokio::spawn(tunnel(downstream, upstream, Arc::clone(ctx), in_flight));
        let (mut parts, _) = response.into_parts();
        let protocol = parts.headers.get(UPGRADE).cloned();
        headers::strip_hop_by_hop(&mut parts.headers);
        if let Some(protocol) = protocol {
            parts
                .headers
                .insert(CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(UPGRADE, protocol);
        }
        levels.mutate_response(&mut parts.headers);
        parts.version = Version::HTTP_11;
        return Response::from_parts(parts, ResponseBody::empty());
    }

    let (mut parts, mut body) = response.into_parts();
    let mutates = levels.mutates_response();
    if mutates
        && let ResponseStream::Inline(inline) = &mut body
        && let Some(passed) = inline.take_passed_head()
    {
        passed.into_map(&mut parts.headers);
    }
    headers::strip_hop_by_hop(&mut parts.headers);
    if mutates {
        // The route may remove or replace it.
        parts.headers.insert(
            X_ENVOY_UPSTREAM_SERVICE_TIME.clone(),
            headers::service_time(service_time),
        );
        levels.mutate_response(&mut parts.headers);
    }
    parts.version = Version::HTTP_11;
    let mut body = ResponseBody::upstream(UpstreamBody {
        body,
        conn,
        in_flight,
        timer: StreamTimer::new(deadline, idle),
    });
    if !mutates {
        body.set_service_time(service_time);
    }
    Response::from_parts(parts, body)
}

/// Runs `future` until `deadline`: None if the deadline came first.
///
/// With the connection's own timer (HTTP/1.1, one request at a time), the timer is moved
/// only when the deadline is earlier than where it stands, and moved on when it fires early.
/// Back-to-back requests with the same route timeout then cost no timer operation at all,
/// where a timer per request costs a registration, a removal and often a wake-up of the
/// event loop (tokio wakes its driver through an eventfd when a new timer is the earliest).
async fn within<F: Future>(
    deadline: Instant,
    timer: Option<Pin<&mut Sleep>>,
    mut future: Pin<&mut F>,
) -> Option<F::Output> {
    let Some(mut timer) = timer else {
        return tokio::time::timeout_at(deadline, future).await.ok();
    };
    if timer.deadline() > deadline {
        timer.as_mut().reset(deadline);
    }
    // The timer keeps the waker from its first poll, and every poll here comes from the same
    // task (the connection's): after that, it only needs asking once it has fired.
    let mut armed = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        if armed && !timer.is_elapsed() {
            return Poll::Pending;
        }
        armed = true;
        while timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Poll::Ready(None);
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
}

/// Envoy's decision on a response head (its `wouldRetryFromHeaders`). The head's fields are
/// only looked at when a condition needs them: a route without gRPC or rate-limit conditions
/// reads none for a response that would not be retried.
fn retry_on_response(policy: &RetryPolicy, response: &Response<ResponseStream>) -> bool {
    let status = response.status().as_u16();
    let by_status = (policy.retry_on_5xx && status >= 500)
        || (policy.retry_on_gateway_error && matches!(status, 502..=504))
        || (policy.retry_on_retriable_4xx && status == 409)
        || policy.retriable_status_codes.contains(&status);
    let by_grpc = policy.retriable_grpc_statuses != 0
        && response_field(response, &GRPC_STATUS)
            .and_then(grpc_status)
            .is_some_and(|code| code < 32 && policy.retriable_grpc_statuses & (1 << code) != 0);
    if !(by_status || by_grpc || policy.retry_on_envoy_ratelimited) {
        return false;
    }
    // An upstream Envoy's rate limit answer is retried under `envoy-ratelimited` only,
    // whatever else the policy says.
    if response_field(response, &X_ENVOY_RATELIMITED).is_some() {
        return policy.retry_on_envoy_ratelimited;
    }
    by_status || by_grpc
}

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static X_ENVOY_RATELIMITED: HeaderName = HeaderName::from_static("x-envoy-ratelimited");

/// A field of the response head: in its header map, or passed through unparsed by our
/// HTTP/1.1 client.
fn response_field<'r>(
    response: &'r Response<ResponseStream>,
    name: &HeaderName,
) -> Option<&'r [u8]> {
    if let Some(value) = response.headers().get(name) {
        return Some(value.as_bytes());
    }
    match response.body() {
        ResponseStream::Inline(body) => body.passed_field(name),
        ResponseStream::Hyper(_) => None,
    }
}

/// `grpc-status` as Envoy reads it: decimal digits (anything else is no known status).
fn grpc_status(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// Envoy's decision on a failure before the response head (its `wouldRetryFromReset`).
fn retry_on_error(policy: &RetryPolicy, error: &ProxyError) -> bool {
    if error.retry() == Retry::Never {
        return false;
    }
    policy.retry_on_5xx
        || policy.retry_on_gateway_error
        || policy.retry_on_reset
        || (policy.retry_on_connect_failure && error.is_connect_failure())
        || (policy.retry_on_refused_stream && matches!(error, ProxyError::UpstreamRefusedStream(_)))
}

/// Envoy's fully jittered exponential backoff: retry N waits a uniform time in
/// `[0, (2^N - 1) * base)`, capped at `max`.
async fn backoff(policy: &RetryPolicy, retry: u32) {
    let base = u64::try_from(policy.backoff_base.as_micros()).unwrap_or(u64::MAX);
    let max = u64::try_from(policy.backoff_max.as_micros()).unwrap_or(u64::MAX);
    let factor = (1u64 << retry.min(32)) - 1;
    let upper = base.saturating_mul(factor).min(max.max(base));
    if upper == 0 {
        return;
    }
    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..upper))).await;
}

/// Why the tries ended without a response.
struct Failed {
    error: ProxyError,
    /// More than one try was made.
    retried: bool,
}

/// `first_try`: when the first try starts, read by the caller (clock reads are a visible
/// part of a request's cost).
async fn send_with_retries(
    cluster: &ClusterRuntime,
    hash: Option<u64>,
    policy: Option<&RetryPolicy>,
    req: &mut UpstreamRequest,
    first_try: Instant,
) -> Result<Upstream, Failed> {
    let max_retries = policy.map_or(0, |p| p.num_retries);
    let per_try = policy
        .and_then(|p| p.per_try_timeout)
        .filter(|d| !d.is_zero());
    let stats = &cluster.stats;
    let mut tried: Vec<usize> = Vec::new();
    let mut retries = 0;
    loop {
        let Some(picked) = cluster.pick(hash, &tried) else {
            stats.upstream_cx_none_healthy.inc();
            return Err(Failed {
                error: ProxyError::NoHealthyUpstream,
                retried: retries > 0,
            });
        };
        let Some(pool) = picked.cluster.upstream.endpoint(picked.index) else {
            stats.upstream_cx_none_healthy.inc();
            return Err(Failed {
                error: ProxyError::NoHealthyUpstream,
                retried: retries > 0,
            });
        };
        let in_flight = InFlight::start(pool, picked.cluster.balancer.start(picked.index));
        let started = if retries == 0 {
            first_try
        } else {
            Instant::now()
        };
        let sent = match per_try {
            Some(limit) => match tokio::time::timeout(limit, pool.send(req)).await {
                Ok(sent) => sent,
                Err(_) => {
                    stats.upstream_rq_per_try_timeout.inc();
                    pool.stats.rq_timeout.inc();
                    Err(SendError::Sent(ProxyError::PerTryTimeout))
                }
            },
            None => pool.send(req).await,
        };
        let may_retry = retries < max_retries;
        match sent {
            Ok((response, conn)) => {
                let status = response.status().as_u16();
                stats.upstream_rq_xx.record(status);
                let took = started.elapsed();
                stats.upstream_rq_time.record(took);
                if status >= 500 {
                    pool.stats.rq_error.inc();
                } else {
                    pool.stats.rq_success.inc();
                }
                if may_retry
                    && req.replayable()
                    && policy.is_some_and(|p| retry_on_response(p, &response))
                {
                    drop((response, conn, in_flight));
                } else {
                    if retries > 0 {
                        stats.upstream_rq_retry_success.inc();
                    }
                    return Ok(Upstream {
                        response,
                        conn,
                        in_flight,
                        took,
                    });
                }
            }
            Err(SendError::NotSent(error)) => {
                pool.stats.rq_error.inc();
                if !(may_retry && policy.is_some_and(|p| retry_on_error(p, &error))) {
                    return Err(Failed {
                        error,
                        retried: retries > 0,
                    });
                }
                tracing::debug!(%error, endpoint = %pool.addr, "retrying");
            }
            Err(SendError::Sent(error)) => {
                pool.stats.rq_error.inc();
                if matches!(
                    error,
                    ProxyError::UpstreamReset(_) | ProxyError::UpstreamRefusedStream(_)
                ) {
                    stats.upstream_rq_rx_reset.inc();
                }
                if !(may_retry
                    && req.replayable()
                    && policy.is_some_and(|p| retry_on_error(p, &error)))
                {
                    return Err(Failed {
                        error,
                        retried: retries > 0,
                    });
                }
                tracing::debug!(%error, endpoint = %pool.addr, "retrying");
            }
        }
        retries += 1;
        stats.upstream_rq_retry.inc();
        tried.push(picked.key);
        if let Some(policy) = policy {
            backoff(policy, retries).await;
        }
    }
}

/// Copies bytes both ways after a successful `Upgrade`, until either side closes or the
/// listener's drain deadline passes.
async fn tunnel(
    downstream: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    ctx: Arc<ConnCtx>,
    in_flight: InFlight,
) {
    let _in_flight = in_flight;
    let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut downstream = TokioIo::new(downstream);
    let mut upstream = TokioIo::new(upstream);
    let mut drain = ctx.drain.clone();
    tokio::select! {
        result = tokio::io::copy_bidirectional(&mut downstream, &mut upstream) => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
            }
        }
        () = drain.aborted() => {}
    }
}
