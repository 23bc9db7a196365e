#![allow(clippy::unwrap_used)] // test code
//! Every retry condition a Consul service-router may name (its `RetryOn` list, which our
//! registry accepts), against a stock Envoy: the same routes, one per condition, pushed by our
//! ADS server to Envoy and to our proxy; the same misbehaving first try; the same outcome
//! (status, body, and how many tries reached the backend), and Envoy's outcome as stated.
//!
//! Each condition gets a case its first try meets (the request is tried again and the second
//! try answers) and a case it does not (the first answer, or the local reply, is final).
//!
//! Envoy comes from `MESH_ENVOY` or `<workspace>/.venv/bin/envoy`. Without it the tests skip
//! loudly, except in CI (`CI=true`), where they fail.

mod support;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions;
use envoy_types::pb::envoy::config::route::v3::{
    RetryPolicy, Route, RouteConfiguration, VirtualHost, retry_policy, route,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mesh_control_plane::snapshot::Snapshot;
use mesh_proxy::xds::XdsMode;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::envoy::{Pair, free_port};
use support::xds::{hcm, hcm_filter, listener, loopback, ms, prefix, rds, static_cluster, to};
use tokio::net::TcpListener;

const LISTENER: &str = "main";
const ROUTES: &str = "routes";
const STARTUP: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Backends: the first try of a key misbehaves as its headers ask, later tries answer 200.

/// Tries per `x-test-key`, over every backend.
#[derive(Clone, Default)]
struct Attempts(Arc<Mutex<HashMap<String, u32>>>);

impl Attempts {
    fn bump(&self, key: &str) -> u32 {
        let mut map = self.0.lock().unwrap();
        let n = map.entry(key.to_string()).or_insert(0);
        *n += 1;
        *n
    }

    fn get(&self, key: &str) -> u32 {
        self.0.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

fn key_of(headers: &HeaderMap) -> String {
    headers
        .get("x-test-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// An HTTP/1.1 backend. On a key's first try: `x-fail: <status>` answers that status,
/// `x-fail-header: <name>=<value>` adds a field to that answer (a `grpc-status`, an
/// `x-envoy-ratelimited`), `x-reset: 1` closes the connection without an answer.
async fn spawn_h1(attempts: &Attempts) -> SocketAddr {
    async fn handle(
        attempts: Attempts,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, std::io::Error> {
        let headers = req.headers().clone();
        let attempt = attempts.bump(&key_of(&headers));
        let _ = req.into_body().collect().await;
        let mut response = Response::new(Full::new(Bytes::from(format!("try {attempt}"))));
        if attempt == 1 {
            if headers.contains_key("x-reset") {
                return Err(std::io::Error::other("reset as asked"));
            }
            if let Some(status) = headers.get("x-fail") {
                *response.status_mut() =
                    StatusCode::from_bytes(status.as_bytes()).unwrap_or(StatusCode::OK);
            }
            for (name, value) in headers
                .get_all("x-fail-header")
                .iter()
                .filter_map(|v| v.to_str().ok()?.split_once('='))
            {
                response.headers_mut().insert(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
        }
        Ok(response)
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let attempts = attempts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let attempts = attempts.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(attempts.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// An HTTP/2 (h2c) backend. On a key's first try: `x-refuse` refuses the stream
/// (`REFUSED_STREAM`), `x-fail: <status>` answers that status.
async fn spawn_h2(attempts: &Attempts) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let attempts = attempts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let attempts = attempts.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(stream).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let attempt = attempts.bump(&key_of(req.headers()));
                    if attempt == 1 && req.headers().contains_key("x-refuse") {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let body = Bytes::from(format!("try {attempt}"));
                    let status = match req.headers().get("x-fail") {
                        Some(s) if attempt == 1 => StatusCode::from_bytes(s.as_bytes()).unwrap(),
                        _ => StatusCode::OK,
                    };
                    let response = Response::builder().status(status).body(()).unwrap();
                    if let Ok(mut send) = respond.send_response(response, false) {
                        let _ = send.send_data(body, true);
                    }
                }
            });
        }
    });
    addr
}

async fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Resources: one route per condition, `/<condition>` to cluster "h1", "h2" or "dead".

/// Path prefix, retry condition, cluster: every one of Consul's `RetryOn` values, and the
/// conditions that do not cover a connect failure or a refused stream.
const ROUTE_TABLE: [(&str, &str, &str); 14] = [
    ("/5xx", "5xx", "h1"),
    ("/gateway-error", "gateway-error", "h1"),
    ("/reset", "reset", "h1"),
    ("/connect-failure", "connect-failure", "dead"),
    ("/envoy-ratelimited", "envoy-ratelimited", "h1"),
    ("/retriable-4xx", "retriable-4xx", "h1"),
    ("/refused-stream", "refused-stream", "h2"),
    ("/cancelled", "cancelled", "h1"),
    ("/deadline-exceeded", "deadline-exceeded", "h1"),
    ("/internal", "internal", "h1"),
    ("/resource-exhausted", "resource-exhausted", "h1"),
    ("/unavailable", "unavailable", "h1"),
    ("/dead-retriable-4xx", "retriable-4xx", "dead"),
    ("/h2-retriable-4xx", "retriable-4xx", "h2"),
];

fn h2_cluster(name: &str, addr: SocketAddr) -> Cluster {
    use http_protocol_options::explicit_http_config::ProtocolConfig;
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                        Http2ProtocolOptions::default(),
                    )),
                },
            ),
        ),
        ..Default::default()
    };
    Cluster {
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            pack_any(options),
        )]
        .into(),
        ..static_cluster(name, &[addr])
    }
}

fn routes() -> RouteConfiguration {
    let routes = ROUTE_TABLE
        .iter()
        .map(|(path, condition, cluster)| {
            let mut action = to(cluster);
            action.retry_policy = Some(RetryPolicy {
                retry_on: (*condition).to_string(),
                num_retries: Some(UInt32Value { value: 1 }),
                retry_back_off: Some(retry_policy::RetryBackOff {
                    base_interval: Some(ms(5)),
                    max_interval: Some(ms(10)),
                }),
                ..Default::default()
            });
            Route {
                r#match: Some(prefix(path)),
                action: Some(route::Action::Route(action)),
                ..Default::default()
            }
        })
        .collect();
    RouteConfiguration {
        name: ROUTES.into(),
        virtual_hosts: vec![VirtualHost {
            name: ROUTES.into(),
            domains: vec!["*".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn snapshot(port: u16, h1: SocketAddr, h2: SocketAddr, dead: SocketAddr) -> Snapshot {
    Snapshot::new(
        vec![
            static_cluster("h1", &[h1]),
            h2_cluster("h2", h2),
            static_cluster("dead", &[dead]),
        ],
        vec![],
        vec![listener(
            LISTENER,
            loopback(port),
            vec![hcm_filter(hcm(LISTENER, rds(ROUTES)))],
        )],
        vec![routes()],
    )
}

// ---------------------------------------------------------------------------------------------
// The table

/// What the client gets, and how many tries reached a backend.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    status: u16,
    body: String,
    tries: u32,
}

fn outcome(status: u16, body: &str, tries: u32) -> Outcome {
    Outcome {
        status,
        body: body.into(),
        tries,
    }
}

struct Case {
    name: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    /// Envoy's outcome.
    envoy: Outcome,
}

fn case(
    name: &'static str,
    path: &'static str,
    headers: &[(&'static str, &'static str)],
    envoy: Outcome,
) -> Case {
    Case {
        name,
        path,
        headers: headers.to_vec(),
        envoy,
    }
}

const RESET_BEFORE_HEADERS: &str = "upstream connect error or disconnect/reset before headers. ";

fn cases() -> Vec<Case> {
    let retried = outcome(200, "try 2", 2);
    vec![
        case("5xx: 503", "/5xx", &[("x-fail", "503")], retried.clone()),
        case(
            "5xx: 404 is final",
            "/5xx",
            &[("x-fail", "404")],
            outcome(404, "try 1", 1),
        ),
        case("5xx: a reset", "/5xx", &[("x-reset", "1")], retried.clone()),
        case(
            "5xx: a rate-limited 503 is final",
            "/5xx",
            &[
                ("x-fail", "503"),
                ("x-fail-header", "x-envoy-ratelimited=true"),
            ],
            outcome(503, "try 1", 1),
        ),
        case(
            "gateway-error: 502",
            "/gateway-error",
            &[("x-fail", "502")],
            retried.clone(),
        ),
        case(
            "gateway-error: 504",
            "/gateway-error",
            &[("x-fail", "504")],
            retried.clone(),
        ),
        case(
            "gateway-error: 500 is final",
            "/gateway-error",
            &[("x-fail", "500")],
            outcome(500, "try 1", 1),
        ),
        case(
            "reset: a reset",
            "/reset",
            &[("x-reset", "1")],
            retried.clone(),
        ),
        case(
            "reset: 503 is final",
            "/reset",
            &[("x-fail", "503")],
            outcome(503, "try 1", 1),
        ),
        case(
            "connect-failure: every try fails to connect",
            "/connect-failure",
            &[],
            outcome(
                503,
                &format!(
                    "{RESET_BEFORE_HEADERS}retried and the latest reset reason: remote connection failure"
                ),
                0,
            ),
        ),
        case(
            "envoy-ratelimited: a rate-limited 429",
            "/envoy-ratelimited",
            &[
                ("x-fail", "429"),
                ("x-fail-header", "x-envoy-ratelimited=true"),
            ],
            retried.clone(),
        ),
        case(
            "envoy-ratelimited: a plain 503 is final",
            "/envoy-ratelimited",
            &[("x-fail", "503")],
            outcome(503, "try 1", 1),
        ),
        case(
            "retriable-4xx: 409",
            "/retriable-4xx",
            &[("x-fail", "409")],
            retried.clone(),
        ),
        case(
            "retriable-4xx: 429 is final",
            "/retriable-4xx",
            &[("x-fail", "429")],
            outcome(429, "try 1", 1),
        ),
        case(
            "refused-stream: a refused stream",
            "/refused-stream",
            &[("x-refuse", "1")],
            retried.clone(),
        ),
        case(
            "refused-stream: a 503 is final",
            "/refused-stream",
            &[("x-fail", "503")],
            outcome(503, "try 1", 1),
        ),
        case(
            "retriable-4xx: a refused stream is final",
            "/h2-retriable-4xx",
            &[("x-refuse", "1")],
            outcome(
                503,
                &format!("{RESET_BEFORE_HEADERS}reset reason: remote refused stream reset"),
                1,
            ),
        ),
        case(
            "retriable-4xx: a connect failure is final",
            "/dead-retriable-4xx",
            &[],
            outcome(
                503,
                &format!("{RESET_BEFORE_HEADERS}reset reason: remote connection failure"),
                0,
            ),
        ),
        case(
            "cancelled: grpc-status 1",
            "/cancelled",
            &[("x-fail-header", "grpc-status=1")],
            retried.clone(),
        ),
        case(
            "cancelled: grpc-status 14 is final",
            "/cancelled",
            &[("x-fail-header", "grpc-status=14")],
            outcome(200, "try 1", 1),
        ),
        case(
            "deadline-exceeded: grpc-status 4",
            "/deadline-exceeded",
            &[("x-fail-header", "grpc-status=4")],
            retried.clone(),
        ),
        case(
            "internal: grpc-status 13",
            "/internal",
            &[("x-fail-header", "grpc-status=13")],
            retried.clone(),
        ),
        case(
            "internal: a 503 is final",
            "/internal",
            &[("x-fail", "503")],
            outcome(503, "try 1", 1),
        ),
        case(
            "resource-exhausted: grpc-status 8",
            "/resource-exhausted",
            &[("x-fail-header", "grpc-status=8")],
            retried.clone(),
        ),
        case(
            "unavailable: grpc-status 14",
            "/unavailable",
            &[("x-fail-header", "grpc-status=14")],
            retried.clone(),
        ),
        case(
            "unavailable: a rate-limited grpc-status 14 is final",
            "/unavailable",
            &[
                ("x-fail-header", "grpc-status=14"),
                ("x-fail-header", "x-envoy-ratelimited=1"),
            ],
            outcome(200, "try 1", 1),
        ),
        case(
            "unavailable: grpc-status 1 is final",
            "/unavailable",
            &[("x-fail-header", "grpc-status=1")],
            outcome(200, "try 1", 1),
        ),
    ]
}

async fn send(addr: SocketAddr, case: &Case, key: &str) -> (u16, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req = Request::builder()
        .uri(format!("http://{addr}{}", case.path))
        .header("x-test-key", key);
    for (name, value) in &case.headers {
        req = req.header(*name, *value);
    }
    let response = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn differential(mode: XdsMode) {
    let attempts = Attempts::default();
    let h1 = spawn_h1(&attempts).await;
    let h2 = spawn_h2(&attempts).await;
    let dead = closed_port().await;
    let envoy_port = free_port();
    let Some(mut pair) = Pair::start(
        mode,
        [
            ("envoy", snapshot(envoy_port, h1, h2, dead)),
            ("mesh", snapshot(0, h1, h2, dead)),
        ],
    )
    .await
    else {
        return;
    };
    let mesh = pair.mesh_listener(LISTENER, STARTUP).await;
    let envoy = SocketAddr::from(([127, 0, 0, 1], envoy_port));
    let deadline = Instant::now() + STARTUP;
    pair.envoy
        .wait_until(deadline, async || {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<Full<Bytes>>();
            match client
                .get(format!("http://{envoy}/5xx").parse().unwrap())
                .await
            {
                Ok(r) if r.status() == 200 => Ok(()),
                other => Err(format!("Envoy not ready: {other:?}")),
            }
        })
        .await;

    let mut failures = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        let mut seen = Vec::new();
        for (who, addr) in [("envoy", envoy), ("mesh", mesh)] {
            let key = format!("{mode:?}-{who}-{i}");
            let (status, body) = send(addr, case, &key).await;
            seen.push((who, outcome(status, &body, attempts.get(&key))));
        }
        let (_, envoy_outcome) = &seen[0];
        let (_, mesh_outcome) = &seen[1];
        if *envoy_outcome != case.envoy {
            failures.push(format!(
                "{}: Envoy answered {envoy_outcome:?}, the case says {:?}",
                case.name, case.envoy
            ));
        }
        if mesh_outcome != envoy_outcome {
            failures.push(format!(
                "{}: ours {mesh_outcome:?}, Envoy {envoy_outcome:?}",
                case.name
            ));
        }
    }
    pair.envoy.assert_running();
    assert!(failures.is_empty(), "{mode:?}:\n{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_retry_conditions_match_envoy() {
    differential(XdsMode::Sotw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_retry_conditions_match_envoy() {
    differential(XdsMode::Delta).await;
}
