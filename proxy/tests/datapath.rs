#![allow(clippy::unwrap_used)] // test code
//! The data path end to end, in-process: configurations built by hand are pushed through the
//! watch channel into the runtime, clients and backends are real sockets on 127.0.0.1.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use mesh_proxy::admin::AdminOptions;
use mesh_proxy::config::*;
use mesh_proxy::runtime::{ListenerState, ProxyOptions};
use mesh_proxy::xds::XdsStats;
use support::config::*;
use support::harness::Harness;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestBody = UnsyncBoxBody<Bytes, BoxError>;

// ---------------------------------------------------------------------------------------------
// Backends

/// A body that echoes the request's data frames as they arrive, then ends with gRPC trailers.
struct EchoStream {
    inner: Incoming,
    trailers_sent: bool,
}

impl Body for EchoStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.trailers_sent {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(frame))) => {
                    if frame.is_data() {
                        return Poll::Ready(Some(Ok(frame)));
                    }
                }
                Poll::Ready(None) => {
                    self.trailers_sent = true;
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    trailers.insert("grpc-message", HeaderValue::from_static("done"));
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
            }
        }
    }
}

fn full(text: impl Into<Bytes>) -> TestBody {
    Full::new(text.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

fn empty() -> TestBody {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// Every backend speaks HTTP/1.1 and h2c and understands a few paths:
/// `/status/<code>`, `.../sleep/<ms>`, `.../ws` (upgrade, then echo bytes), `/stream` (gRPC-like
/// streaming echo with trailers); anything else is answered with a description of the request.
async fn backend_handle(
    name: &'static str,
    hits: Arc<AtomicUsize>,
    mut req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    hits.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_owned();
    if let Some(code) = path.strip_prefix("/status/") {
        let status = StatusCode::from_u16(code.parse().unwrap()).unwrap();
        let mut r = Response::new(full(name));
        *r.status_mut() = status;
        r.headers_mut()
            .insert("x-backend", HeaderValue::from_static(name));
        return Ok(r);
    }
    if let Some((_, ms)) = path.split_once("/sleep/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
    }
    if path.ends_with("/ws") {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut r = Response::new(empty());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert("connection", HeaderValue::from_static("upgrade"));
        r.headers_mut()
            .insert("upgrade", HeaderValue::from_static("websocket"));
        return Ok(r);
    }
    if path == "/stream" {
        let body = EchoStream {
            inner: req.into_body(),
            trailers_sent: false,
        };
        let mut r = Response::new(body.boxed_unsync());
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        return Ok(r);
    }
    let mut text = format!(
        "backend={name}\nmethod={}\nuri={}\nversion={:?}\n",
        req.method(),
        req.uri(),
        req.version()
    );
    for (k, v) in req.headers() {
        text.push_str(&format!("h:{k}={}\n", v.to_str().unwrap_or("?")));
    }
    let body = req.into_body().collect().await.unwrap().to_bytes();
    text.push_str(&format!("body_len={}\n", body.len()));
    let mut r = Response::new(full(text));
    r.headers_mut()
        .insert("x-backend", HeaderValue::from_static(name));
    r.headers_mut()
        .insert("x-remove-me", HeaderValue::from_static("1"));
    Ok(r)
}

struct Backend {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

async fn backend(name: &'static str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let hits = Arc::clone(&counter);
            tokio::spawn(async move {
                let service = service_fn(move |req| backend_handle(name, Arc::clone(&hits), req));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Backend { addr, hits }
}

/// A TCP echo server that honours half-close.
async fn tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// An address nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Clients

fn h1_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    /// The backend's description of the request it got: `backend=`, `uri=`, `h:<name>=`.
    fn seen(&self, key: &str) -> Vec<&str> {
        let prefix = format!("{key}=");
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .collect()
    }

    fn seen_one(&self, key: &str) -> Option<&str> {
        self.seen(key).first().copied()
    }

    fn backend(&self) -> &str {
        self.seen_one("backend").unwrap_or("")
    }
}

async fn send(client: &Client<HttpConnector, TestBody>, req: Request<TestBody>) -> Reply {
    let r = client.request(req).await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A GET that retries a request the server refused with an HTTP/2 GOAWAY: a draining
/// listener sends GOAWAY, and a stream above its last-stream-id was never processed, so every
/// HTTP/2 client (Envoy's and gRPC's included) retries it on a new connection (RFC 9113 6.8).
async fn get_retrying_goaway(client: &Client<HttpConnector, TestBody>, url: &str) -> Reply {
    for _ in 0..3 {
        let req = Request::get(url).body(empty()).unwrap();
        match client.request(req).await {
            Ok(r) => {
                let status = r.status();
                let headers = r.headers().clone();
                let body = r.into_body().collect().await.unwrap().to_bytes();
                let body = String::from_utf8_lossy(&body).into_owned();
                return Reply {
                    status,
                    headers,
                    body,
                };
            }
            Err(e) if format!("{e:?}").contains("GoAway") => continue,
            Err(e) => panic!("request failed: {e:?}"),
        }
    }
    panic!("refused by GOAWAY three times in a row");
}

async fn get(
    client: &Client<HttpConnector, TestBody>,
    url: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = Request::get(url).body(empty()).unwrap();
    for (k, v) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    send(client, req).await
}

/// Writes `request` on a fresh connection and reads until the server closes or `timeout`.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..100 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A request body fed frame by frame from the test.
struct ChannelBody(mpsc::Receiver<Frame<Bytes>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_path_and_header_over_http1_and_h2c() {
    let a = backend("a").await;
    let b = backend("b").await;
    let mut by_header = forward("by-header", "/", to("b"));
    by_header.matcher.headers.push(HeaderMatcher {
        name: "x-version".into(),
        matcher: HeaderMatch::String(StringMatch::Exact("v2".into(), false)),
        invert: false,
    });
    let rc = route_config(
        "rc",
        vec![vhost(vec![
            forward("to-b", "/b/", to("b")),
            by_header,
            forward("default", "/", to("a")),
        ])],
    );
    let h = Harness::start(proxy_config(
        vec![http_listener("http", rc)],
        vec![cluster("a", &[a.addr]), cluster("b", &[b.addr])],
    ))
    .await;
    assert!(h.handle.is_ready());
    for client in [h1_client(), h2_client()] {
        let r = get(&client, &h.url("http", "/x"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.backend(), "a");
        let r = get(&client, &h.url("http", "/b/1"), &[]).await;
        assert_eq!(r.backend(), "b");
        let r = get(&client, &h.url("http", "/x"), &[("x-version", "v2")]).await;
        assert_eq!(r.backend(), "b");
    }
    // The h2c request reached the HTTP/1.1 backend as HTTP/1.1 with a Host header.
    let r = get(&h2_client(), &h.url("http", "/x"), &[]).await;
    assert_eq!(r.seen_one("version"), Some("HTTP/1.1"));
    assert_eq!(
        r.seen_one("h:host"),
        Some(h.addr("http").to_string().as_str())
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_clusters_split_roughly_by_weight() {
    let a = backend("a").await;
    let b = backend("b").await;
    let weighted = |name: &str, weight: u32| WeightedCluster {
        name: name.into(),
        weight,
        request_headers: HeaderMutation {
            remove: vec![],
            add: vec![header(
                "x-split",
                name,
                AppendAction::OverwriteIfExistsOrAdd,
            )],
        },
        response_headers: Default::default(),
        filter_configs: Default::default(),
    };
    let rc = route_config(
        "rc",
        vec![vhost(vec![forward(
            "split",
            "/",
            forward_action(ClusterTarget::Weighted(vec![
                weighted("a", 80),
                weighted("b", 20),
            ])),
        )])],
    );
    let h = Harness::start(proxy_config(
        vec![http_listener("http", rc)],
        vec![cluster("a", &[a.addr]), cluster("b", &[b.addr])],
    ))
    .await;
    let client = h1_client();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..500 {
        let r = get(&client, &h.url("http", "/"), &[]).await;
        assert_eq!(
            r.seen_one("h:x-split"),
            Some(r.backend()),
            "weighted-cluster headers"
        );
        *counts.entry(r.backend().to_owned()).or_default() += 1;
    }
    let a_share = counts.get("a").copied().unwrap_or(0);
    assert!((340..=460).contains(&a_share), "{counts:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_and_header_mutations_reach_the_backend() {
    let a = backend("a").await;
    let mut action = to("a");
    action.prefix_rewrite = Some("/v1/".into());
    action.host_rewrite_literal = Some("internal.example".into());
    let mut r = forward("api", "/api/", action);
    r.request_headers.add = vec![
        header("x-level", "route", AppendAction::OverwriteIfExistsOrAdd),
        header("x-trail", "route", AppendAction::AppendIfExistsOrAdd),
        header("x-absent", "route", AppendAction::AddIfAbsent),
    ];
    r.request_headers.remove = vec![HeaderName::from_static("x-drop")];
    r.response_headers.add = vec![header(
        "x-resp",
        "route",
        AppendAction::OverwriteIfExistsOrAdd,
    )];
    r.response_headers.remove = vec![HeaderName::from_static("x-remove-me")];
    let mut vh = vhost(vec![r]);
    vh.request_headers.add = vec![
        header("x-level", "vhost", AppendAction::OverwriteIfExistsOrAdd),
        header("x-trail", "vhost", AppendAction::AppendIfExistsOrAdd),
        header("x-absent", "vhost", AppendAction::AddIfAbsent),
        header("x-only-if", "vhost", AppendAction::OverwriteIfExists),
    ];
    let mut rc = route_config("rc", vec![vh]);
    rc.request_headers.add = vec![
        header("x-level", "config", AppendAction::OverwriteIfExistsOrAdd),
        header("x-trail", "config", AppendAction::AppendIfExistsOrAdd),
    ];
    rc.response_headers.add = vec![header(
        "x-resp",
        "config",
        AppendAction::AppendIfExistsOrAdd,
    )];
    let h = Harness::start(proxy_config(
        vec![http_listener("http", rc)],
        vec![cluster("a", &[a.addr])],
    ))
    .await;
    let r = get(
        &h1_client(),
        &h.url("http", "/api/users?id=7"),
        &[
            ("x-drop", "1"),
            ("x-keep", "1"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.seen_one("uri"), Some("/v1/users?id=7"));
    assert_eq!(r.seen_one("h:host"), Some("internal.example"));
    // Envoy's order: route, then virtual host, then route configuration; the last one wins.
    assert_eq!(r.seen("h:x-level"), ["config"]);
    assert_eq!(r.seen("h:x-trail"), ["route", "vhost", "config"]);
    assert_eq!(r.seen("h:x-absent"), ["route"]);
    assert!(r.seen("h:x-only-if").is_empty());
    assert!(r.seen("h:x-drop").is_empty());
    assert!(
        r.seen("h:x-hop").is_empty(),
        "connection-named header forwarded"
    );
    assert_eq!(r.seen_one("h:x-keep"), Some("1"));
    assert_eq!(r.seen_one("h:x-forwarded-proto"), Some("http"));
    assert_eq!(r.seen_one("h:x-request-id").map(str::len), Some(36));
    assert_eq!(
        r.headers.get_all("x-resp").iter().collect::<Vec<_>>(),
        ["route", "config"]
    );
    assert!(r.headers.get("x-remove-me").is_none());
    assert!(r.headers.get("x-envoy-upstream-service-time").is_some());
    assert_eq!(r.headers["x-backend"], "a");
    // A client's own request id is kept.
    let r = get(
        &h1_client(),
        &h.url("http", "/api/"),
        &[("x-request-id", "mine")],
    )
    .await;
    assert_eq!(r.seen("h:x-request-id"), ["mine"]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_responses_and_redirects() {
    let mut direct = route(
        "direct",
        path_prefix("/direct"),
        RouteAction::DirectResponse {
            status: 418,
            body: Some(Bytes::from_static(b"short and stout")),
        },
    );
    direct.response_headers.add = vec![header(
        "x-direct",
        "1",
        AppendAction::OverwriteIfExistsOrAdd,
    )];
    let redirect = route(
        "redirect",
        path_prefix("/old/"),
        RouteAction::Redirect(Arc::new(RedirectAction {
            scheme: Some("https".into()),
            host: Some("new.example".into()),
            port: None,
            path: None,
            prefix_rewrite: Some("/new/".into()),
            status: 308,
            strip_query: false,
        })),
    );
    let rc = route_config("rc", vec![vhost(vec![direct, redirect])]);
    let h = Harness::start(proxy_config(vec![http_listener("http", rc)], vec![])).await;
    for client in [h1_client(), h2_client()] {
        let r = get(&client, &h.url("http", "/direct"), &[]).await;
        assert_eq!(r.status, 418);
        assert_eq!(r.body, "short and stout");
        assert_eq!(r.headers["x-direct"], "1");
        assert_eq!(r.headers["content-type"], "text/plain");
        let r = get(&client, &h.url("http", "/old/page?x=1"), &[]).await;
        assert_eq!(r.status, 308);
        assert_eq!(r.headers["location"], "https://new.example/new/page?x=1");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_replies_map_failures_to_statuses() {
    let slow = backend("slow").await;
    let closed = closed_port().await;
    let mut timeout = to("slow");
    timeout.timeout = Duration::from_millis(200);
    let rc = route_config(
        "rc",
        vec![vhost(vec![
            forward("unhealthy", "/unhealthy", to("unhealthy")),
            forward("unknown", "/unknown", to("nope")),
            forward("refused", "/refused", to("refused")),
            forward("timeout", "/sleep", timeout),
        ])],
    );
    let mut unhealthy = cluster("unhealthy", &[slow.addr]);
    unhealthy.endpoints = Arc::new(vec![Endpoint {
        addr: slow.addr,
        weight: 1,
        healthy: false,
    }]);
    let h = Harness::start(proxy_config(
        vec![http_listener("http", rc)],
        vec![
            unhealthy,
            cluster("refused", &[closed]),
            cluster("slow", &[slow.addr]),
        ],
    ))
    .await;
    let client = h1_client();
    let r = get(&client, &h.url("http", "/nothing-here"), &[]).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::NOT_FOUND, ""));
    let r = get(&client, &h.url("http", "/unhealthy"), &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")
    );
    let r = get(&client, &h.url("http", "/unknown"), &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let r = get(&client, &h.url("http", "/refused"), &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
        )
    );
    let started = std::time::Instant::now();
    let r = get(&client, &h.url("http", "/sleep/3000"), &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "upstream request timeout")
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // gRPC clients get a trailers-only gRPC status instead.
    let r = get(
        &client,
        &h.url("http", "/unhealthy"),
        &[("content-type", "application/grpc")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["grpc-status"], "14");

    let (_, stats) = h.admin_get("/stats").await;
    assert!(stats.contains("http.http.downstream_rq_4xx: 1"), "{stats}");
    assert!(stats.contains("http.http.no_route: 1"), "{stats}");
    assert!(
        stats.contains("cluster.refused.upstream_cx_connect_fail: 1"),
        "{stats}"
    );
    assert!(
        stats.contains("cluster.slow.upstream_rq_timeout: 1"),
        "{stats}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_move_to_another_endpoint() {
    let good = backend("good").await;
    let failing = backend_always("failing", StatusCode::SERVICE_UNAVAILABLE).await;
    let closed = closed_port().await;
    let mut on_5xx = to("mixed");
    on_5xx.retry = Some(RetryPolicy {
        retry_on_5xx: true,
        ..retry_policy(2)
    });
    let mut on_status = to("mixed");
    on_status.retry = Some(RetryPolicy {
        retriable_status_codes: vec![503],
        ..retry_policy(2)
    });
    let mut on_connect = to("half-down");
    on_connect.retry = Some(RetryPolicy {
        retry_on_connect_failure: true,
        ..retry_policy(2)
    });
    let rc = route_config(
        "rc",
        vec![vhost(vec![
            forward("connect", "/connect", on_connect),
            forward("status", "/status-codes", on_status),
            forward("5xx", "/", on_5xx),
        ])],
    );
    let h = Harness::start(proxy_config(
        vec![http_listener("http", rc)],
        vec![
            cluster("mixed", &[failing, good.addr]),
            cluster("half-down", &[closed, good.addr]),
        ],
    ))
    .await;
    let client = h1_client();
    for path in ["/connect", "/status-codes", "/x"] {
        for _ in 0..6 {
            let r = get(&client, &h.url("http", path), &[]).await;
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            assert_eq!(r.backend(), "good");
        }
    }
    // Request bodies survive a try that could not connect: a small one (buffered for retries,
    // sent by our own client), and ones past the retry buffer limit, with a length or
    // chunked, streamed through hyper's client, which hands the unsent request back.
    for len in [10, 70 * 1024] {
        for _ in 0..4 {
            let req = Request::post(h.url("http", "/connect"))
                .body(full("x".repeat(len)))
                .unwrap();
            let r = send(&client, req).await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert!(r.body.contains(&format!("body_len={len}\n")), "{}", r.body);
        }
    }
    for _ in 0..4 {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Frame::data(Bytes::from("chunked "))).await.unwrap();
        tx.send(Frame::data(Bytes::from("body"))).await.unwrap();
        drop(tx);
        let req = Request::post(h.url("http", "/connect"))
            .body(ChannelBody(rx).boxed_unsync())
            .unwrap();
        let r = send(&client, req).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.body.contains("h:transfer-encoding=chunked\n"),
            "{}",
            r.body
        );
        assert!(r.body.contains("body_len=12\n"), "{}", r.body);
        // The fields the proxy adds reach the upstream through hyper's client too, once.
        let added = |field: &str| r.body.matches(field).count();
        assert_eq!(added("h:x-forwarded-proto=http\n"), 1, "{}", r.body);
        assert_eq!(added("h:x-request-id="), 1, "{}", r.body);
    }
    let (_, stats) = h.admin_get("/stats").await;
    assert!(
        !stats.contains("cluster.mixed.upstream_rq_retry: 0"),
        "{stats}"
    );
    assert!(
        !stats.contains("cluster.half-down.upstream_rq_retry: 0"),
        "{stats}"
    );
    h.shutdown().await;
}

/// A backend that answers every request with `status`.
async fn backend_always(name: &'static str, status: StatusCode) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<Incoming>| async move {
                    let mut r = Response::new(full(name));
                    *r.status_mut() = status;
                    Ok::<_, Infallible>(r)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeout_retries_then_route_timeout_gives_504() {
    let slow = backend("slow").await;
    let mut action = to("slow");
    action.timeout = Duration::from_millis(900);
    action.retry = Some(RetryPolicy {
        retry_on_5xx: true,
        per_try_timeout: Some(Duration::from_millis(200)),
        ..retry_policy(2)
    });
    let rc = route_config("rc", vec![vhost(vec![forward("slow", "/", action)])]);
    let h = Harness::start(proxy_config(
        vec![http_listener("http", rc)],
        vec![cluster("slow", &[slow.addr])],
    ))
    .await;
    let started = std::time::Instant::now();
    let r = get(&h1_client(), &h.url("http", "/sleep/2000"), &[]).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_millis(1500));
    // Three tries, each cut at its per-try timeout.
    assert_eq!(slow.hits.load(Ordering::Relaxed), 3);
    let (_, stats) = h.admin_get("/stats").await;
    assert!(
        stats.contains("cluster.slow.upstream_rq_per_try_timeout: 3"),
        "{stats}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_streaming_and_trailers_pass_h2_to_h2() {
    let grpc = backend("grpc").await;
    let mut c = cluster("grpc", &[grpc.addr]);
    c.http2 = true;
    let mut action = to("grpc");
    action.timeout = Duration::ZERO;
    let rc = route_config("rc", vec![vhost(vec![forward("grpc", "/", action)])]);
    let h = Harness::start(proxy_config(vec![http_listener("http", rc)], vec![c])).await;

    let stream = TcpStream::connect(h.addr("http")).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = mpsc::channel(4);
    let req = Request::post(format!("http://{}/stream", h.addr("http")))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(ChannelBody(rx))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/grpc");
    let mut body = response.into_body();
    // Each message comes back before the next is sent: nothing is buffered on the way.
    for message in ["one", "two", "three"] {
        tx.send(Frame::data(Bytes::from(message))).await.unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), message);
    }
    drop(tx);
    let frame = body.frame().await.unwrap().unwrap();
    let trailers = frame.into_trailers().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "done");
    assert!(body.frame().await.is_none());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cluster_gets_the_original_authority() {
    let a = backend("a").await;
    let mut c = cluster("a", &[a.addr]);
    c.http2 = true;
    let rc = route_config("rc", vec![vhost(vec![forward("a", "/", to("a"))])]);
    let h = Harness::start(proxy_config(vec![http_listener("http", rc)], vec![c])).await;
    let r = get(
        &h1_client(),
        &h.url("http", "/x"),
        &[("host", "svc.example:8080")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.seen_one("version"), Some("HTTP/2.0"));
    assert_eq!(r.seen_one("uri"), Some("http://svc.example:8080/x"));
    h.shutdown().await;
}

fn upgrade(upgrade_type: &str, enabled: bool) -> UpgradeConfig {
    UpgradeConfig {
        upgrade_type: upgrade_type.into(),
        enabled,
    }
}

/// Sends an upgrade request for `path` and reads the response head.
async fn ask_upgrade(addr: SocketAddr, path: &str, protocol: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    (stream, String::from_utf8_lossy(&head).to_lowercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_pass_only_where_upgrade_configs_allow_them() {
    let ws = backend("ws").await;
    // Allowed by the connection manager, except on the route that disables it; the second
    // listener allows none, except on the route that enables it.
    let mut no_ws = to("ws");
    no_ws.upgrades = vec![upgrade("websocket", false)];
    let mut ws_route = to("ws");
    ws_route.upgrades = vec![upgrade("websocket", true)];
    let routes = |route_ws: ForwardAction| {
        route_config(
            "rc",
            vec![vhost(vec![
                forward("off", "/off", no_ws.clone()),
                forward("route", "/route", route_ws),
                forward("ws", "/", to("ws")),
            ])],
        )
    };
    let mut allowing = hcm("allowing", RouteSource::Inline(Arc::new(routes(to("ws")))));
    allowing.upgrades = vec![upgrade("websocket", true)];
    let refusing = hcm("refusing", RouteSource::Inline(Arc::new(routes(ws_route))));
    let h = Harness::start(proxy_config(
        vec![
            http_listener_with("allowing", allowing),
            http_listener_with("refusing", refusing),
        ],
        vec![cluster("ws", &[ws.addr])],
    ))
    .await;

    let (mut stream, head) = ask_upgrade(h.addr("allowing"), "/ws", "websocket").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for message in [&b"hello"[..], b"over the tunnel", &[0u8, 255, 1, 254]] {
        stream.write_all(message).await.unwrap();
        let mut back = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, message);
    }
    // Refused with Envoy's 403 where no configuration allows the type; case is ignored.
    for (listener, path, protocol, status) in [
        ("allowing", "/off/ws", "websocket", 403),
        ("allowing", "/ws", "WebSocket", 101),
        ("allowing", "/ws", "tcp-tunnel", 403),
        ("refusing", "/ws", "websocket", 403),
        ("refusing", "/route/ws", "websocket", 101),
    ] {
        let (_, head) = ask_upgrade(h.addr(listener), path, protocol).await;
        assert!(
            head.starts_with(&format!("http/1.1 {status}")),
            "{listener} {path} {protocol}: {head}"
        );
    }
    let before = ws.hits.load(Ordering::Relaxed);
    // An h2c upgrade goes on as a plain HTTP/1.1 request without its upgrade headers.
    let mut stream = TcpStream::connect(h.addr("refusing")).await.unwrap();
    stream
        .write_all(
            b"GET /plain HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade, HTTP2-Settings\r\n\
              Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        )
        .await
        .unwrap();
    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.to_lowercase().contains("upgrade"), "{body}");
    assert!(!body.to_lowercase().contains("http2-settings"), "{body}");
    assert!(!body.contains("h:connection"), "{body}");
    assert_eq!(ws.hits.load(Ordering::Relaxed), before + 1);
    let (_, stats) = h.admin_get("/stats").await;
    assert!(
        stats.contains("http.refusing.downstream_rq_ws_on_non_ws_route: 1"),
        "{stats}"
    );
    assert!(
        stats.contains("http.allowing.downstream_rq_ws_on_non_ws_route: 1"),
        "{stats}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_copies_bytes_exactly() {
    let echo = tcp_echo().await;
    let listener = Listener {
        name: "tcp".into(),
        addr: any_addr(),
        network_filters: vec![],
        filter: ListenerFilter::Tcp(Arc::new(TcpProxy {
            stat_prefix: "tcp".into(),
            cluster: TcpTarget::Cluster("echo".into()),
            idle_timeout: Some(Duration::from_secs(30)),
        })),
        tcp_backlog_size: None,
        direction: TrafficDirection::Unspecified,
    };
    let h = Harness::start(proxy_config(vec![listener], vec![cluster("echo", &[echo])])).await;
    let payload: Vec<u8> = (0..8 * 1024 * 1024).map(|_| fastrand::u8(..)).collect();
    let stream = TcpStream::connect(h.addr("tcp")).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        // Half-close: the echo server sees EOF and closes its side after echoing everything.
        w.shutdown().await.unwrap();
        w
    });
    let mut received = Vec::with_capacity(payload.len());
    tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut received))
        .await
        .unwrap()
        .unwrap();
    let _w = writer.await.unwrap();
    assert_eq!(received.len(), payload.len());
    assert!(received == payload, "bytes differ");
    let (_, stats) = h.admin_get("/stats").await;
    let expected = format!("tcp.tcp.downstream_cx_rx_bytes_total: {}", payload.len());
    assert!(
        eventually(async || h.admin_get("/stats").await.1.contains(&expected)).await,
        "{stats}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_requests_are_refused_alone() {
    let a = backend("a").await;
    let rc = route_config("rc", vec![vhost(vec![forward("a", "/", to("a"))])]);
    let mut manager = hcm("http", RouteSource::Inline(Arc::new(rc)));
    manager.max_request_headers_bytes = 8 * 1024;
    let h = Harness::start(proxy_config(
        vec![http_listener_with("http", manager)],
        vec![cluster("a", &[a.addr])],
    ))
    .await;
    // A keep-alive connection that must keep working throughout.
    let client = h1_client();
    assert_eq!(get(&client, &h.url("http", "/"), &[]).await.status, 200);

    let big = "x".repeat(7 * 1024);
    let request = format!("GET / HTTP/1.1\r\nHost: a\r\nx-big-1: {big}\r\nx-big-2: {big}\r\n\r\n");
    let reply = raw(h.addr("http"), request.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    assert_eq!(get(&client, &h.url("http", "/"), &[]).await.status, 200);

    let reply = raw(
        h.addr("http"),
        b"GET / HTTP/1.1\r\nHost: a\r\nbroken header line\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    let reply = raw(h.addr("http"), b"\x01\x02garbage\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    // A head that parses but whose target is no URI (an unclosed IPv6 literal).
    let reply = raw(
        h.addr("http"),
        b"GET http://[::1/ HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(get(&client, &h.url("http", "/"), &[]).await.status, 200);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_under_load_fail_no_request() {
    let a = backend("a").await;
    let b = backend("b").await;
    // A second instance of "a" that comes and goes with the endpoint updates.
    let a2 = backend("a2").await;
    // Odd versions route to "b", even ones to "a"; every fourth also changes the connection
    // manager, which replaces the listener (old connections drain).
    let config = |target: &str, version: usize| {
        let rc = route_config("rc", vec![vhost(vec![forward("all", "/", to(target))])]);
        let mut manager = hcm("http", RouteSource::Inline(Arc::new(rc)));
        manager.idle_timeout = Some(Duration::from_secs(3600 + (version / 4) as u64));
        let mut c = proxy_config(
            vec![http_listener_with("http", manager)],
            vec![
                if version.is_multiple_of(3) {
                    cluster("a", &[a.addr, a2.addr])
                } else {
                    cluster("a", &[a.addr])
                },
                cluster("b", &[b.addr]),
            ],
        );
        c.versions.insert("RDS", version.to_string());
        c
    };
    let h = Arc::new(Harness::start(config("a", 0)).await);
    let url = h.url("http", "/");
    let swapping = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let url = url.clone();
        let swapping = Arc::clone(&swapping);
        workers.push(tokio::spawn(async move {
            let client = if worker % 2 == 0 {
                h1_client()
            } else {
                h2_client()
            };
            let mut statuses = Vec::new();
            // At least 50 requests each, and keep going until the last swap is applied.
            while statuses.len() < 50 || swapping.load(Ordering::Relaxed) {
                let r = get_retrying_goaway(&client, &url).await;
                statuses.push((r.status, r.backend().to_owned()));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            statuses
        }));
    }
    // 50 route changes; endpoints of "a" come and go every third one.
    for version in 1..=50 {
        h.push(config(if version % 2 == 0 { "a" } else { "b" }, version))
            .await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    swapping.store(false, Ordering::Relaxed);
    let mut seen = HashMap::new();
    for worker in workers {
        for (status, backend) in worker.await.unwrap() {
            assert_eq!(status, 200);
            *seen.entry(backend).or_insert(0) += 1;
        }
    }
    assert!(seen.values().sum::<usize>() >= 200, "{seen:?}");
    assert!(seen.contains_key("a") && seen.contains_key("b"), "{seen:?}");
    let h = Arc::into_inner(h).unwrap();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_start_warm_replace_and_stop() {
    let a = backend("a").await;
    let rds = |name: &str| http_listener_with(name, hcm(name, RouteSource::Rds("shared".into())));
    let mut config = proxy_config(vec![rds("warming")], vec![cluster("a", &[a.addr])]);
    let h = Harness::start(config.clone()).await;
    // Waiting for its RDS route configuration: not started.
    assert!(matches!(
        h.handle.listeners()["warming"].state,
        ListenerState::Warming { .. }
    ));
    let (_, dump) = h.admin_get("/config_dump").await;
    assert!(dump.contains("warming_state"), "{dump}");

    config.routes.insert(
        "shared".into(),
        Arc::new(route_config(
            "shared",
            vec![vhost(vec![forward("a", "/", to("a"))])],
        )),
    );
    config.versions.insert("RDS", "1".into());
    h.push(config.clone()).await;
    let addr = h.addr("warming");
    assert_eq!(
        get(&h1_client(), &format!("http://{addr}/"), &[])
            .await
            .status,
        200
    );

    // A changed connection manager replaces the listener on the same socket.
    let mut changed = hcm("warming", RouteSource::Rds("shared".into()));
    changed.idle_timeout = Some(Duration::from_secs(60));
    config.listeners.insert(
        "warming".into(),
        Arc::new(http_listener_with("warming", changed)),
    );
    h.push(config.clone()).await;
    assert_eq!(h.addr("warming"), addr);
    assert_eq!(
        get(&h1_client(), &format!("http://{addr}/"), &[])
            .await
            .status,
        200
    );

    // Removed: a request in flight still completes, then the port stops accepting.
    let slow = tokio::spawn(async move {
        get(&h1_client(), &format!("http://{addr}/sleep/400"), &[])
            .await
            .status
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    config.listeners.clear();
    h.push(config).await;
    assert_eq!(slow.await.unwrap(), 200);
    assert!(h.handle.listener_addr("warming").is_none());
    assert!(
        eventually(async || TcpStream::connect(addr).await.is_err()).await,
        "removed listener still accepts"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_failure_is_reported_not_fatal() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = backend("a").await;
    let rc = route_config("rc", vec![vhost(vec![forward("a", "/", to("a"))])]);
    let mut clash = http_listener("clash", rc.clone());
    clash.addr = taken.local_addr().unwrap();
    let h = Harness::start(proxy_config(
        vec![clash, http_listener("fine", rc)],
        vec![cluster("a", &[a.addr])],
    ))
    .await;
    assert!(matches!(
        h.handle.listeners()["clash"].state,
        ListenerState::Failed { .. }
    ));
    assert_eq!(
        get(&h1_client(), &h.url("fine", "/"), &[]).await.status,
        200
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reports_readiness_stats_config_and_clusters() {
    let h = Harness::start(ProxyConfig::default()).await;
    assert_eq!(
        h.admin_get("/ready").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let a = backend("a").await;
    let rc = route_config("rc", vec![vhost(vec![forward("a", "/", to("a"))])]);
    h.push(proxy_config(
        vec![http_listener("public_listener", rc)],
        vec![cluster("a", &[a.addr])],
    ))
    .await;
    let (status, body) = h.admin_get("/ready").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "LIVE\n"));
    for _ in 0..3 {
        get(&h1_client(), &h.url("public_listener", "/"), &[]).await;
    }
    h.xds
        .rejected(XdsStats::type_index("CDS").unwrap(), "bad cluster".into());

    let (status, prom) = h.admin_get("/stats/prometheus").await;
    assert_eq!(status, 200);
    assert!(
        prom.contains(
            "envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"2\",envoy_cluster_name=\"a\"} 3"
        ),
        "{prom}"
    );
    assert!(
        prom.contains(
            "envoy_http_downstream_rq_xx{envoy_response_code_class=\"2\",envoy_http_conn_manager_prefix=\"public_listener\"} 3"
        ),
        "{prom}"
    );
    assert!(
        prom.contains("envoy_cluster_manager_cds_update_rejected 1"),
        "{prom}"
    );
    assert!(
        prom.contains(
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"a\",le=\"+Inf\"} 3"
        )
    );

    let (_, stats) = h.admin_get("/stats?filter=update_rejected").await;
    assert!(
        stats.contains("cluster_manager.cds.update_rejected: 1"),
        "{stats}"
    );
    assert!(
        stats.lines().all(|l| l.contains("update_rejected")),
        "{stats}"
    );

    let (status, dump) = h.admin_get("/config_dump").await;
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let listeners = &dump["configs"][0]["dynamic_listeners"];
    assert_eq!(listeners[0]["name"], "public_listener");
    assert!(listeners[0]["active_state"].is_object());
    let clusters = &dump["configs"][1]["dynamic_active_clusters"];
    assert_eq!(
        clusters[0]["cluster"]["endpoints"][0]["address"],
        a.addr.to_string()
    );
    assert_eq!(dump["versions"]["CDS"], "1");

    let (_, clusters) = h.admin_get("/clusters").await;
    assert!(
        clusters.contains(&format!("a::{}::rq_total::3", a.addr)),
        "{clusters}"
    );
    assert!(
        clusters.contains(&format!("a::{}::health_flags::healthy", a.addr)),
        "{clusters}"
    );
    let (_, json) = h.admin_get("/clusters?format=json").await;
    assert!(json.contains("cluster_statuses"), "{json}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_connection_limit_closes_new_connections() {
    let a = backend("a").await;
    let rc = route_config("rc", vec![vhost(vec![forward("a", "/", to("a"))])]);
    let h = Harness::start_with(
        proxy_config(
            vec![http_listener("http", rc)],
            vec![cluster("a", &[a.addr])],
        ),
        ProxyOptions {
            max_connections: 1,
            drain_timeout: Duration::from_secs(1),
            ..ProxyOptions::default()
        },
        AdminOptions::default(),
    )
    .await;
    let addr = h.addr("http");
    let client = h1_client();
    assert_eq!(
        get(&client, &format!("http://{addr}/"), &[]).await.status,
        200
    );
    // The client's pooled connection holds the only slot: a second connection is closed.
    let reply = raw(addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(reply, "");
    let stats = h.handle.stats().render_plain();
    assert!(
        stats.contains("downstream_global_cx_overflow: 1"),
        "{stats}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_header_connections_are_closed() {
    let a = backend("a").await;
    let rc = route_config("rc", vec![vhost(vec![forward("a", "/", to("a"))])]);
    let mut idle = hcm("http", RouteSource::Inline(Arc::new(rc.clone())));
    idle.idle_timeout = Some(Duration::from_millis(300));
    // Separate listeners, so that each timeout is seen alone.
    let mut slow_head = hcm("slow-head", RouteSource::Inline(Arc::new(rc)));
    slow_head.request_headers_timeout = Some(Duration::from_millis(300));
    let h = Harness::start(proxy_config(
        vec![
            http_listener_with("http", idle),
            http_listener_with("slow-head", slow_head),
        ],
        vec![cluster("a", &[a.addr])],
    ))
    .await;
    // Idle after a response: closed once the idle timeout passes.
    let mut stream = TcpStream::connect(h.addr("http")).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    // The header timeout runs from a request's first byte: a keep-alive connection waiting
    // for its next request longer than that is not closed.
    let mut stream = TcpStream::connect(h.addr("slow-head")).await.unwrap();
    for _ in 0..2 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A head that never completes: Envoy's 408 after the header timeout, then closed.
    let mut stream = TcpStream::connect(h.addr("slow-head")).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let (answer, waited) = answer_then_close(&mut stream).await;
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    assert_timeout_reply(&answer, "request header timeout");
    // Dripped one byte at a time, well within the timeout between bytes: the timeout is a
    // deadline for the whole head, not reset by each byte.
    let mut stream = TcpStream::connect(h.addr("slow-head")).await.unwrap();
    let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let answer = drip(&mut stream, head).await;
    assert_timeout_reply(&answer, "request header timeout");
    // On a connection served by hyper (its first request had a chunked body), the same limit.
    let mut stream = TcpStream::connect(h.addr("slow-head")).await.unwrap();
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let (status, _) = read_response(&mut stream).await;
    assert_eq!(status, 200);
    // Idle longer than the header timeout: still open (the deadline runs from a head's first
    // byte), and served.
    tokio::time::sleep(Duration::from_millis(600)).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (status, _) = read_response(&mut stream).await;
    assert_eq!(status, 200);
    // Then a head that never completes: Envoy's 408.
    stream.write_all(b"GET / HTTP/1.1\r\nHost").await.unwrap();
    let (answer, waited) = answer_then_close(&mut stream).await;
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    assert!(
        answer.contains("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer:?}"
    );
    assert!(
        answer.ends_with("\r\n\r\nrequest header timeout"),
        "{answer:?}"
    );
    let (_, stats) = h.admin_get("/stats").await;
    assert!(
        stats.contains("http.http.downstream_cx_idle_timeout: 1"),
        "{stats}"
    );
    assert!(
        stats.contains("http.slow-head.downstream_rq_header_timeout: 3"),
        "{stats}"
    );
    h.shutdown().await;
}

/// Reads until the proxy closes the connection: what it sent, and how long that took.
async fn answer_then_close(stream: &mut TcpStream) -> (String, Duration) {
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("connection not closed within 5 s")
        .ok();
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

/// Sends `bytes` one at a time, each after waiting up to 50 ms for an answer, until the
/// proxy answers or closes; then reads to the close. What the proxy sent.
async fn drip(stream: &mut TcpStream, bytes: &[u8]) -> String {
    let mut answer = Vec::new();
    for byte in bytes {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let (rest, _) = answer_then_close(stream).await;
    answer.extend_from_slice(rest.as_bytes());
    String::from_utf8_lossy(&answer).into_owned()
}

/// Envoy's answer to a request that did not arrive in time: 408 with `body`, then close.
#[track_caller]
fn assert_timeout_reply(answer: &str, body: &str) {
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer:?}"
    );
    assert!(answer.contains("connection: close\r\n"), "{answer:?}");
    assert!(answer.ends_with(&format!("\r\n\r\n{body}")), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_pipelining_head_bodyless_and_chunked_responses_keep_framing() {
    let a = backend("a").await;
    let rc = route_config("rc", vec![vhost(vec![forward("a", "/", to("a"))])]);
    let h = Harness::start(proxy_config(
        vec![http_listener("http", rc)],
        vec![cluster("a", &[a.addr])],
    ))
    .await;
    // Six requests in one write; the last asks to close, so the proxy closes after it.
    let reply = raw(
        h.addr("http"),
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n\
          HEAD /head HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /status/204 HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /post HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
          GET /stream HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let statuses: Vec<&str> = reply
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &reply[i + 9..i + 12])
        .collect();
    assert_eq!(
        statuses,
        ["200", "200", "204", "200", "200", "200"],
        "{reply}"
    );
    let order = ["uri=/first", "uri=/post", "uri=/last"].map(|s| reply.find(s).unwrap());
    assert!(order.is_sorted(), "{reply}");
    // The HEAD answer has its length but no body, and the next answer follows at once.
    assert!(!reply.contains("uri=/head"), "{reply}");
    assert!(reply.contains("body_len=5"), "{reply}");
    // A body of unknown length is chunked, with its terminating chunk.
    assert!(reply.contains("transfer-encoding: chunked\r\n"), "{reply}");
    assert!(reply.contains("\r\n0\r\n\r\nHTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("body_len=0\n"), "{reply}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_listener_answers_http1_with_connection_close_and_then_closes() {
    let a = backend("a").await;
    // A new connection manager replaces the listener; its open connections drain.
    let config = |idle_secs: u64| {
        let rc = route_config("rc", vec![vhost(vec![forward("a", "/", to("a"))])]);
        let mut manager = hcm("http", RouteSource::Inline(Arc::new(rc)));
        manager.idle_timeout = Some(Duration::from_secs(idle_secs));
        proxy_config(
            vec![http_listener_with("http", manager)],
            vec![cluster("a", &[a.addr])],
        )
    };
    let h = Harness::start(config(3600)).await;
    let mut stream = TcpStream::connect(h.addr("http")).await.unwrap();
    let mut buf = Vec::new();
    let mut heads = Vec::new();
    // The first answer keeps the connection; after the push, the old listener's drain
    // reaches its connections shortly after the new config is applied: ask until an answer
    // says close (a few tries at most).
    while heads.len() < 20 {
        if heads.len() == 1 {
            h.push(config(3601)).await;
        }
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let (head, _) = read_message(&mut stream, &mut buf).await.unwrap();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let close = head.contains("connection: close");
        heads.push(head);
        if close {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!heads[0].contains("connection: close"), "{}", heads[0]);
    let last = heads.last().unwrap();
    assert!(last.contains("connection: close"), "{heads:?}");
    // Closed right after that answer, not at the drain deadline.
    assert!(closed_after(&mut stream).await < Duration::from_millis(500));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_left_at_the_drain_deadline_are_closed_busy_or_idle() {
    let a = backend("a").await;
    let rc = route_config("rc", vec![vhost(vec![forward("a", "/", to("a"))])]);
    let mut config = proxy_config(
        vec![http_listener("http", rc)],
        vec![cluster("a", &[a.addr])],
    );
    let h = Harness::start(config.clone()).await;
    // One connection waits between requests as it does after any exchange; the other has a
    // request in flight that the upstream would answer after 6 s.
    let mut idle = TcpStream::connect(h.addr("http")).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..2 {
        idle.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let (head, _) = read_message(&mut idle, &mut buf).await.unwrap();
        assert!(head.starts_with("http/1.1 200"), "{head}");
    }
    let mut busy = TcpStream::connect(h.addr("http")).await.unwrap();
    busy.write_all(b"GET /sleep/6000 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Removed: the listener drains for the harness's drain timeout (2 s); the idle connection
    // is left open meanwhile (a request could cross a close), then both are closed.
    config.listeners.clear();
    h.push(config).await;
    let (busy_waited, idle_waited) = tokio::join!(closed_after(&mut busy), closed_after(&mut idle));
    assert!(
        busy_waited < Duration::from_secs(4),
        "busy closed after {busy_waited:?}"
    );
    assert!(
        idle_waited > Duration::from_millis(1000) && idle_waited < Duration::from_secs(4),
        "idle closed after {idle_waited:?}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_stops_arriving_is_closed_by_the_stream_idle_timeout() {
    let a = backend("a").await;
    let rc = route_config("rc", vec![vhost(vec![forward("a", "/", to("a"))])]);
    let mut slow_body = hcm("http", RouteSource::Inline(Arc::new(rc)));
    slow_body.stream_idle_timeout = Some(Duration::from_millis(300));
    let h = Harness::start(proxy_config(
        vec![http_listener_with("http", slow_body)],
        vec![cluster("a", &[a.addr])],
    ))
    .await;
    let mut stream = TcpStream::connect(h.addr("http")).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let (answer, waited) = answer_then_close(&mut stream).await;
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_timeout_reply(&answer, "stream timeout");
    // A head that stops arriving, with no request_headers_timeout shorter: the same.
    let mut stream = TcpStream::connect(h.addr("http")).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    assert_timeout_reply(&answer_then_close(&mut stream).await.0, "stream timeout");
    assert_eq!(
        a.hits.load(Ordering::Relaxed),
        0,
        "the partial request went upstream"
    );
    let (_, stats) = h.admin_get("/stats").await;
    assert!(
        stats.contains("http.http.downstream_rq_idle_timeout: 2"),
        "{stats}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_arrives_too_slowly_gets_the_request_timeout() {
    let a = backend("a").await;
    let rc = route_config("rc", vec![vhost(vec![forward("a", "/", to("a"))])]);
    let mut limited = hcm("http", RouteSource::Inline(Arc::new(rc)));
    limited.request_timeout = Some(Duration::from_millis(400));
    let h = Harness::start(proxy_config(
        vec![http_listener_with("http", limited)],
        vec![cluster("a", &[a.addr])],
    ))
    .await;
    // A body dripped faster than any idle timeout, but not whole within request_timeout.
    let mut stream = TcpStream::connect(h.addr("http")).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let answer = drip(&mut stream, &[b'x'; 1000]).await;
    assert_timeout_reply(&answer, "request timeout");
    assert_eq!(a.hits.load(Ordering::Relaxed), 0);
    // A request that arrives in time is not affected.
    let r = get(&h1_client(), &h.url("http", "/"), &[]).await;
    assert_eq!(r.status, 200);
    let (_, stats) = h.admin_get("/stats").await;
    assert!(
        stats.contains("http.http.downstream_rq_timeout: 1"),
        "{stats}"
    );
    h.shutdown().await;
}

/// An HTTP/1.1 upstream written by hand, so that the proxy's client meets framings and faults
/// a library server does not produce. It counts the connections it accepts.
async fn scripted_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(scripted_connection(stream));
        }
    });
    (addr, accepted)
}

/// A proxy with one HTTP/1.1 listener routing everything to a [`scripted_upstream`], and the
/// upstream's count of accepted connections.
async fn behind_scripted_upstream() -> (Harness, Arc<AtomicUsize>) {
    let (upstream, accepted) = scripted_upstream().await;
    let rc = route_config("rc", vec![vhost(vec![forward("u", "/", to("u"))])]);
    let h = Harness::start(proxy_config(
        vec![http_listener("http", rc)],
        vec![cluster("u", &[upstream])],
    ))
    .await;
    (h, accepted)
}

async fn scripted_connection(mut stream: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let Some((head, body)) = read_message(&mut stream, &mut buf).await else {
            return;
        };
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        let length = body.len();
        let w = &mut stream;
        let ok = match path.as_str() {
            "/len" => {
                w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                    .await
            }
            "/echo-len" => {
                let body = length.to_string();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                w.write_all(reply.as_bytes()).await
            }
            "/chunked" => {
                // Split mid-chunk, so the body streams after the head.
                w.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhel")
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
                w.write_all(b"lo\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
                    .await
            }
            "/continue" => {
                w.write_all(
                    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                )
                .await
            }
            // Mixed-case names, a name twice, padding around a value.
            "/fields" => {
                w.write_all(
                    b"HTTP/1.1 200 OK\r\nX-Multi: one\r\nContent-Type: text/plain\r\n\
                      x-multi: two\r\nX-Gone:  away \r\nContent-Length: 2\r\n\r\nok",
                )
                .await
            }
            // The same with connection-specific fields, one of them named by `Connection`.
            "/fields-hop" => {
                w.write_all(
                    b"HTTP/1.1 200 OK\r\nX-Multi: one\r\nConnection: keep-alive, X-Private\r\n\
                      X-Private: p\r\nKeep-Alive: timeout=5\r\nx-multi: two\r\n\
                      X-Gone: away\r\nContent-Length: 2\r\n\r\nok",
                )
                .await
            }
            "/extra" => {
                w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
                    .await
            }
            "/big" => {
                w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n")
                    .await
                    .unwrap();
                for i in 0..256u32 {
                    let piece = vec![b'a' + (i % 26) as u8; 4096];
                    w.write_all(&piece).await.unwrap();
                }
                Ok(())
            }
            "/until-close" => {
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil close").await;
                return;
            }
            // A keep-alive response, then the server closes the idle connection unannounced.
            "/then-close" => {
                let _ = w
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye")
                    .await;
                return;
            }
            "/garbage" => {
                let _ = w.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
                return;
            }
            _ => {
                w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .await
            }
        };
        if ok.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_response_fields_reach_http1_and_h2_clients_alike() {
    let (upstream, _) = scripted_upstream().await;
    let plain = route_config("plain", vec![vhost(vec![forward("u", "/", to("u"))])]);
    let mut mutated = route_config("mutated", vec![vhost(vec![forward("u", "/", to("u"))])]);
    mutated.response_headers.remove = vec![
        HeaderName::from_static("x-gone"),
        HeaderName::from_static("x-envoy-upstream-service-time"),
    ];
    mutated.response_headers.add =
        vec![header("x-added", "yes", AppendAction::AppendIfExistsOrAdd)];
    let h = Harness::start(proxy_config(
        vec![
            http_listener("plain", plain),
            http_listener("mutated", mutated),
        ],
        vec![cluster("u", &[upstream])],
    ))
    .await;
    let values = |r: &Reply, name: &str| -> Vec<String> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    for (label, client) in [("http/1.1", h1_client()), ("h2c", h2_client())] {
        for path in ["/fields", "/fields-hop"] {
            let case = format!("{label} {path}");
            let r = get(&client, &h.url("plain", path), &[]).await;
            assert_eq!(
                (r.status, r.body.as_str()),
                (StatusCode::OK, "ok"),
                "{case}"
            );
            assert_eq!(values(&r, "x-multi"), ["one", "two"], "{case}");
            assert_eq!(values(&r, "x-gone"), ["away"], "{case}");
            if path == "/fields" {
                assert_eq!(values(&r, "content-type"), ["text/plain"], "{case}");
            }
            assert_eq!(
                values(&r, "x-envoy-upstream-service-time").len(),
                1,
                "{case}"
            );
            for hop in ["connection", "keep-alive", "x-private"] {
                assert!(r.headers.get(hop).is_none(), "{case}: {hop} passed on");
            }
            // The route's response header changes apply to the upstream's own fields.
            let r = get(&client, &h.url("mutated", path), &[]).await;
            assert_eq!(r.status, StatusCode::OK, "{case}");
            assert!(
                r.headers.get("x-gone").is_none(),
                "{case}: x-gone not removed"
            );
            assert_eq!(values(&r, "x-added"), ["yes"], "{case}");
            assert_eq!(values(&r, "x-multi"), ["one", "two"], "{case}");
            assert!(
                r.headers.get("x-envoy-upstream-service-time").is_none(),
                "{case}: the route's removal of the service time not applied"
            );
        }
    }
    // Over HTTP/1.1 the names go out lowercased, as Envoy writes them.
    let answer = raw(
        h.addr("plain"),
        b"GET /fields HTTP/1.1\r\nHost: u\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.contains("\r\nx-multi: one\r\n"), "{answer}");
    assert!(answer.contains("\r\nx-gone: away\r\n"), "{answer}");
    assert!(!answer.contains("X-Multi"), "{answer}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_http1_framings_reuse_and_faults() {
    let (h, accepted) = behind_scripted_upstream().await;
    let client = h1_client();
    let url = |path: &str| h.url("http", path);
    let connections = || accepted.load(Ordering::Relaxed);
    let body_of = |r: &Reply| r.body.clone();

    // Keep-alive responses reuse one upstream connection, also after a streamed chunked body
    // (its extensions and trailers are dropped) and an interim 100 response.
    for path in ["/len", "/chunked", "/len", "/continue", "/len"] {
        let r = get(&client, &url(path), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        let expected = match path {
            "/chunked" => "hello world",
            "/continue" => "ok",
            _ => "hello",
        };
        assert_eq!(body_of(&r), expected, "{path}");
    }
    assert_eq!(connections(), 1);

    // A request body too long to be copied behind the head still arrives whole.
    let big_body = Bytes::from(vec![b'x'; 20_000]);
    let req = Request::post(url("/echo-len"))
        .header("host", "u")
        .body(Full::new(big_body).map_err(|e| match e {}).boxed_unsync())
        .unwrap();
    let r = send(&client, req).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "20000"));

    // A 1 MiB response streams through intact.
    let r = get(&client, &url("/big"), &[]).await;
    assert_eq!(r.body.len(), 1_048_576);
    assert!(r.body.as_bytes()[..4096].iter().all(|&b| b == b'a'));
    assert!(
        r.body.as_bytes()[1_048_576 - 4096..]
            .iter()
            .all(|&b| b == b'a' + 255 % 26)
    );
    assert_eq!(connections(), 1);

    // Bytes past Content-Length: the answer is cut at its length and that connection retired.
    let r = get(&client, &url("/extra"), &[]).await;
    assert_eq!(body_of(&r), "ok");
    let r = get(&client, &url("/len"), &[]).await;
    assert_eq!(body_of(&r), "hello");
    assert_eq!(connections(), 2);

    // A body delimited by the close arrives whole; the next request needs a new connection.
    let r = get(&client, &url("/until-close"), &[]).await;
    assert_eq!(
        (r.status, body_of(&r).as_str()),
        (StatusCode::OK, "until close")
    );
    let r = get(&client, &url("/len"), &[]).await;
    assert_eq!(body_of(&r), "hello");
    assert_eq!(connections(), 3);

    // A pooled connection the server closed while idle is not used for the next request.
    let r = get(&client, &url("/then-close"), &[]).await;
    assert_eq!(body_of(&r), "bye");
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        let r = get(&client, &url("/len"), &[]).await;
        assert_eq!((r.status, body_of(&r).as_str()), (StatusCode::OK, "hello"));
    }
    assert_eq!(connections(), 4);

    // Something that is not HTTP is a 502 naming a protocol error.
    let r = get(&client, &url("/garbage"), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(body_of(&r).contains("protocol error"), "{}", body_of(&r));
    h.shutdown().await;
}

/// A pooled connection the server closes while it is idle is closed by the proxy soon after,
/// as Envoy does, not kept (in CLOSE_WAIT) until a request happens to take it; a pooled
/// connection the server keeps open stays pooled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_the_server_closed_are_closed() {
    let (h, accepted) = behind_scripted_upstream().await;
    let client = h1_client();
    let pool = || {
        let snapshot = h.handle.snapshot();
        let pool = Arc::clone(&snapshot.clusters["u"].upstream.endpoints()[0]);
        (pool.idle_connections(), pool.stats.cx_active.get())
    };

    let r = get(&client, &h.url("http", "/len"), &[]).await;
    assert_eq!(r.body, "hello");
    // Several sweeps later the open idle connection is still there, and still used.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pool(), (1, 1));
    let r = get(&client, &h.url("http", "/then-close"), &[]).await;
    assert_eq!(r.body, "bye");
    assert_eq!(accepted.load(Ordering::Relaxed), 1);
    // The server closed it after that answer: the proxy lets it go with no request coming.
    assert!(
        eventually(async || pool() == (0, 0)).await,
        "still pooled: {:?}",
        pool()
    );
    let r = get(&client, &h.url("http", "/len"), &[]).await;
    assert_eq!(r.body, "hello");
    assert_eq!(accepted.load(Ordering::Relaxed), 2);
    // The idle timeout, counted in sweeps: one more than allowed closes an open connection.
    let endpoint = Arc::clone(&h.handle.snapshot().clusters["u"].upstream.endpoints()[0]);
    assert_eq!(endpoint.sweep_idle(u32::MAX), 0);
    assert_eq!(endpoint.sweep_idle(0), 1);
    assert_eq!(pool(), (0, 0));
    h.shutdown().await;
}

/// Reads one HTTP/1.1 message framed by Content-Length (or without a body) off `stream`,
/// keeping what follows in `buf`: its head, lowercased, and its body. None if the connection
/// closed first.
async fn read_message(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 16384];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 16384];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    Some((head, body))
}

/// Reads one response from `stream`: its status and body.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let (head, body) = read_message(stream, &mut Vec::new())
        .await
        .expect("closed before a whole response");
    let status = head[9..12].parse().unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Reads until the proxy closes `stream` (at most 5 s): how long that took.
async fn closed_after(stream: &mut TcpStream) -> Duration {
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("connection not closed within 5 s")
        .ok();
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeouts_and_the_idle_timeout_share_one_connection_timer() {
    let a = backend("a").await;
    let mut long = to("a");
    long.timeout = Duration::from_secs(10);
    long.prefix_rewrite = Some("/".into());
    let mut short = to("a");
    short.timeout = Duration::from_millis(300);
    short.prefix_rewrite = Some("/".into());
    let rc = route_config(
        "rc",
        vec![vhost(vec![
            forward("long", "/long/", long),
            forward("short", "/short/", short),
        ])],
    );
    let mut manager = hcm("http", RouteSource::Inline(Arc::new(rc)));
    manager.idle_timeout = Some(Duration::from_millis(500));
    let h = Harness::start(proxy_config(
        vec![http_listener_with("http", manager)],
        vec![cluster("a", &[a.addr])],
    ))
    .await;
    let mut stream = TcpStream::connect(h.addr("http")).await.unwrap();
    let mut request = async |path: &str| {
        let text = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
        stream.write_all(text.as_bytes()).await.unwrap();
        let started = std::time::Instant::now();
        let (status, _) = read_response(&mut stream).await;
        (status, started.elapsed())
    };
    assert_eq!(request("/long/sleep/0").await.0, 200);
    // A shorter route timeout on the same connection moves the timer earlier.
    let (status, took) = request("/short/sleep/3000").await;
    assert_eq!(status, 504);
    assert!(took < Duration::from_millis(2000), "{took:?}");
    // Longer than the idle timeout, far within the route's 10 s: the connection's timer,
    // armed for the idle timeout, fires during the request and must not end it.
    let (status, took) = request("/long/sleep/800").await;
    assert_eq!(status, 200, "after {took:?}");
    // Idle after that: closed by the idle timeout, not at the 10 s route deadline the
    // timer was moved on to.
    let idle_for = closed_after(&mut stream).await;
    assert!(
        idle_for >= Duration::from_millis(300) && idle_for < Duration::from_secs(3),
        "{idle_for:?}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_cancels_its_upstream_request_at_once() {
    let slow = backend("slow").await;
    let rc = route_config("rc", vec![vhost(vec![forward("slow", "/", to("slow"))])]);
    let h = Harness::start(proxy_config(
        vec![http_listener("http", rc)],
        vec![cluster("slow", &[slow.addr])],
    ))
    .await;
    let active = async |h: &Harness| {
        let (_, stats) = h.admin_get("/stats").await;
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cluster.slow.upstream_rq_active: "))
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(-1)
    };
    // Each kind of request waits 30 s for its answer (twice the route timeout), and every
    // client goes away: our own HTTP/1.1 server, a chunked body (served by hyper), h2c.
    let requests: [&[u8]; 2] = [
        b"GET /sleep/30000 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /sleep/30000 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ];
    for request in requests {
        let mut clients = Vec::new();
        for _ in 0..10 {
            let mut stream = TcpStream::connect(h.addr("http")).await.unwrap();
            stream.write_all(request).await.unwrap();
            clients.push(stream);
        }
        assert!(
            eventually(async || active(&h).await == 10).await,
            "the requests never reached the backend"
        );
        drop(clients);
        assert!(
            eventually(async || active(&h).await == 0).await,
            "upstream requests outlived their clients: {}",
            String::from_utf8_lossy(request)
        );
    }
    let client = h2_client();
    let url = h.url("http", "/sleep/30000");
    let pending = tokio::spawn(async move { get(&client, &url, &[]).await });
    assert!(eventually(async || active(&h).await == 1).await);
    pending.abort();
    assert!(
        eventually(async || active(&h).await == 0).await,
        "an h2c request outlived its client"
    );
    let (_, stats) = h.admin_get("/stats").await;
    assert!(
        stats.contains("http.http.downstream_cx_destroy_remote_active_rq: 10"),
        "{stats}"
    );
    h.shutdown().await;
}

/// Raw HTTP/2 frames, for what no well-behaved client library sends.
mod raw_h2 {
    use super::*;

    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const GOAWAY: u8 = 7;
    pub const WINDOW_UPDATE: u8 = 8;
    pub const CONTINUATION: u8 = 9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap();
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A GET's header block: indexed `:method GET` and `:scheme http`, literal `:path` and
    /// `:authority` (HPACK without Huffman coding or indexing).
    pub fn get_block(path: &str) -> Vec<u8> {
        let mut block = vec![0x82, 0x86, 0x04, u8::try_from(path.len()).unwrap()];
        block.extend_from_slice(path.as_bytes());
        block.extend_from_slice(&[0x01, 1, b'a']);
        block
    }

    /// A connection with the preface and empty SETTINGS sent.
    pub async fn connect(addr: SocketAddr) -> TcpStream {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        stream.write_all(&hello).await.unwrap();
        stream
    }

    /// Reads frames until a GOAWAY (its error code) or the end of the connection (None).
    pub async fn goaway(stream: &mut TcpStream) -> Option<u32> {
        let read = async {
            loop {
                let mut head = [0u8; 9];
                stream.read_exact(&mut head).await.ok()?;
                let len =
                    usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
                let mut payload = vec![0u8; len];
                stream.read_exact(&mut payload).await.ok()?;
                if head[3] == GOAWAY {
                    return Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("no GOAWAY and no close within 10 s")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_abuse_ends_in_goaway_with_the_rfc_error_code() {
    use raw_h2::*;
    const FLOW_CONTROL_ERROR: u32 = 0x3;
    const FRAME_SIZE_ERROR: u32 = 0x6;
    const ENHANCE_YOUR_CALM: u32 = 0xb;
    let a = backend("a").await;
    let rc = route_config("rc", vec![vhost(vec![forward("a", "/", to("a"))])]);
    let h = Harness::start(proxy_config(
        vec![http_listener("http", rc)],
        vec![cluster("a", &[a.addr])],
    ))
    .await;
    let addr = h.addr("http");

    // A frame longer than SETTINGS_MAX_FRAME_SIZE (16,384 by default): FRAME_SIZE_ERROR.
    let mut stream = connect(addr).await;
    let huge = vec![0u8; 20_000];
    stream.write_all(&frame(DATA, 0, 1, &huge)).await.unwrap();
    assert_eq!(goaway(&mut stream).await, Some(FRAME_SIZE_ERROR));

    // A WINDOW_UPDATE that takes the connection window past 2^31-1: FLOW_CONTROL_ERROR.
    let mut stream = connect(addr).await;
    let increment = 0x7fff_ffffu32.to_be_bytes();
    stream
        .write_all(&frame(WINDOW_UPDATE, 0, 0, &increment))
        .await
        .unwrap();
    assert_eq!(goaway(&mut stream).await, Some(FLOW_CONTROL_ERROR));

    // Rapid reset: streams opened and reset at once, thousands of times.
    let mut stream = connect(addr).await;
    let mut burst = Vec::new();
    for i in 0..5_000u32 {
        let id = 2 * i + 1;
        burst.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &get_block("/"),
        ));
        burst.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    // The proxy may close while the burst is still being written.
    let _ = stream.write_all(&burst).await;
    assert_eq!(goaway(&mut stream).await, Some(ENHANCE_YOUR_CALM));

    // CONTINUATION flood: a header block that never ends.
    let mut stream = connect(addr).await;
    let mut flood = frame(HEADERS, END_STREAM, 1, &get_block("/"));
    let filler = [0x40, 1, b'x', 100]
        .into_iter()
        .chain([b'y'; 100])
        .collect::<Vec<u8>>();
    for _ in 0..10_000 {
        flood.extend(frame(CONTINUATION, 0, 1, &filler));
    }
    let _ = stream.write_all(&flood).await;
    let code = goaway(&mut stream).await;
    assert!(code.is_some_and(|c| c != 0), "{code:?}");
    // The proxy still serves.
    let r = get(&h2_client(), &h.url("http", "/after"), &[]).await;
    assert_eq!(r.status, 200);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_idle_timeout_bounds_the_wait_for_a_response() {
    let slow = backend("slow").await;
    // No route timeout: the connection manager's stream idle timeout ends the wait.
    let mut untimed = to("slow");
    untimed.timeout = Duration::ZERO;
    // A route timeout longer than the route's own idle timeout: the idle timeout first.
    let mut idle_route = to("slow");
    idle_route.idle_timeout = Some(Duration::from_millis(300));
    let rc = route_config(
        "rc",
        vec![vhost(vec![
            forward("idle", "/idle", idle_route),
            forward("untimed", "/", untimed),
        ])],
    );
    let mut m = hcm("http", RouteSource::Inline(Arc::new(rc)));
    m.stream_idle_timeout = Some(Duration::from_millis(300));
    let h = Harness::start(proxy_config(
        vec![http_listener_with("http", m)],
        vec![cluster("slow", &[slow.addr])],
    ))
    .await;
    for path in ["/sleep/5000", "/idle/sleep/5000"] {
        let started = std::time::Instant::now();
        let r = get(&h1_client(), &h.url("http", path), &[]).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (StatusCode::GATEWAY_TIMEOUT, "stream timeout"),
            "{path}"
        );
        assert!(started.elapsed() < Duration::from_secs(3), "{path}");
    }
    let (_, stats) = h.admin_get("/stats").await;
    assert!(
        stats.contains("http.http.downstream_rq_idle_timeout: 2"),
        "{stats}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_authority_is_routed_by_and_forwarded() {
    let (a, b) = (backend("a").await, backend("b").await);
    let mut evil = vhost(vec![forward("b", "/", to("b"))]);
    evil.name = "evil".into();
    evil.domains = vec![DomainMatch::Exact("evil.example".into())];
    let rc = route_config("rc", vec![evil, vhost(vec![forward("a", "/", to("a"))])]);
    let mut accepting = hcm("http10", RouteSource::Inline(Arc::new(rc.clone())));
    accepting.accept_http_10 = true;
    accepting.default_host_for_http_10 = Some(HeaderValue::from_static("evil.example"));
    let h = Harness::start(proxy_config(
        vec![
            http_listener("http", rc),
            http_listener_with("http10", accepting),
        ],
        vec![cluster("a", &[a.addr]), cluster("b", &[b.addr])],
    ))
    .await;
    let ask = async |listener: &str, request: &str| {
        let mut stream = TcpStream::connect(h.addr(listener)).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        read_response(&mut stream).await
    };
    // The absolute form's authority routes the request and is the Host sent on.
    let (status, body) = ask(
        "http",
        "GET http://evil.example/abs HTTP/1.1\r\nHost: backend\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("backend=b\n"), "{body}");
    assert!(body.contains("h:host=evil.example\n"), "{body}");
    assert!(!body.contains("h:host=backend"), "{body}");
    // Over HTTP/2, :authority wins over a host field.
    let stream = TcpStream::connect(h.addr("http")).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let response = sender
        .send_request(
            Request::get("http://evil.example/h2")
                .header("host", "backend")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("backend=b\n"), "{body}");
    assert!(body.contains("h:host=evil.example\n"), "{body}");
    // Refused before routing, as Envoy does.
    for (listener, request, status) in [
        (
            "http",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: evil.example\r\n\r\n",
            400,
        ),
        ("http", "GET / HTTP/1.1\r\n\r\n", 400),
        ("http", "GET / HTTP/1.0\r\nHost: a\r\n\r\n", 426),
        (
            "http",
            "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
            404,
        ),
    ] {
        let (got, _) = ask(listener, request).await;
        assert_eq!(got, status, "{request:?}");
    }
    // With accept_http_10, HTTP/1.0 is served; without a Host it gets the default one.
    let (status, body) = ask("http10", "GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200);
    assert!(body.contains("backend=b\n"), "{body}");
    assert_eq!(a.hits.load(Ordering::Relaxed), 0);
    h.shutdown().await;
}
