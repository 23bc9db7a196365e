//! Resolver `Failover` and `Redirect`, and every `RetryOn` value a service-router accepts, end
//! to end: real registry and control-plane processes, config entries written through the
//! registry's API, real backends, and two frontends with the same upstreams, one behind a
//! stock Envoy and one behind our proxy. Every answer must be what the entries ask for, and
//! the same from both sidecars.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mesh_tests::scenario::{Sidecar, start_envoy, start_mesh_proxy};
use mesh_tests::{Http, MeshProcess, RegistryProcess, envoy_bin, free_port, start_control_plane};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Within this long a change must reach the traffic.
const PROPAGATION: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// Backends: answer `try <n>` (the n-th try of the request's `x-test-key`) with their name in
// `x-backend`; a key's first try misbehaves as its headers ask.

#[derive(Clone, Default)]
struct Attempts(Arc<Mutex<HashMap<String, u32>>>);

impl Attempts {
    fn bump(&self, key: &str) -> u32 {
        let mut map = self.0.lock().expect("attempts");
        let n = map.entry(key.to_string()).or_insert(0);
        *n += 1;
        *n
    }

    fn get(&self, key: &str) -> u32 {
        self.0
            .lock()
            .expect("attempts")
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

fn key_of(headers: &HeaderMap) -> String {
    headers
        .get("x-test-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// HTTP/1.1. On a key's first try: `x-fail: <status>`, `x-fail-header: <name>=<value>` (on
/// that answer), `x-reset` (close without answering).
async fn spawn_h1(name: &'static str, attempts: &Attempts) -> SocketAddr {
    async fn handle(
        name: &'static str,
        attempts: Attempts,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, std::io::Error> {
        let headers = req.headers().clone();
        let key = key_of(&headers);
        // Health probes and plain traffic carry no key: always fine.
        let attempt = if key.is_empty() {
            0
        } else {
            attempts.bump(&key)
        };
        let _ = req.into_body().collect().await;
        let mut response = Response::new(Full::new(Bytes::from(format!("try {attempt}"))));
        response
            .headers_mut()
            .insert("x-backend", name.parse().expect("name"));
        if attempt == 1 {
            if headers.contains_key("x-reset") {
                return Err(std::io::Error::other("reset as asked"));
            }
            if let Some(status) = headers.get("x-fail") {
                *response.status_mut() =
                    StatusCode::from_bytes(status.as_bytes()).expect("x-fail status");
            }
            for (field, value) in headers
                .get_all("x-fail-header")
                .iter()
                .filter_map(|v| v.to_str().ok()?.split_once('='))
            {
                response.headers_mut().insert(
                    hyper::header::HeaderName::from_bytes(field.as_bytes()).expect("field"),
                    value.parse().expect("value"),
                );
            }
        }
        Ok(response)
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let attempts = attempts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let attempts = attempts.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(name, attempts.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// HTTP/2 (h2c): `x-refuse` refuses a key's first stream with `REFUSED_STREAM`.
async fn spawn_h2(name: &'static str, attempts: &Attempts) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let attempts = attempts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let attempts = attempts.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(stream).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let key = key_of(req.headers());
                    let attempt = if key.is_empty() {
                        0
                    } else {
                        attempts.bump(&key)
                    };
                    if attempt == 1 && req.headers().contains_key("x-refuse") {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let response = Response::builder()
                        .header("x-backend", name)
                        .body(())
                        .expect("response");
                    if let Ok(mut send) = respond.send_response(response, false) {
                        let _ = send.send_data(Bytes::from(format!("try {attempt}")), true);
                    }
                }
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// The mesh

/// A frontend's upstream listeners.
#[derive(Debug, Clone, Copy)]
struct Upstreams {
    backend: u16,
    legacy: u16,
    h2svc: u16,
}

struct Frontend {
    name: &'static str,
    upstreams: Upstreams,
    sidecar: Sidecar,
}

struct Mesh {
    http: Http,
    registry: String,
    control_plane: MeshProcess,
    frontends: Vec<Frontend>,
    attempts: Attempts,
    _registry_process: RegistryProcess,
}

/// What a client got: status, `x-backend` and body.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    backend: String,
    body: String,
}

impl Mesh {
    async fn put(&self, path: &str, body: Value) -> (u16, String) {
        let r = self
            .http
            .put(&format!("{}{path}", self.registry), body.to_string())
            .await;
        (r.status, r.text())
    }

    async fn must_put(&self, path: &str, body: Value) {
        let (status, text) = self.put(path, body).await;
        assert_eq!(status, 200, "PUT {path}: {text}");
    }

    async fn register(&self, service: &str, id: &str, version: &str, addr: SocketAddr) {
        self.must_put(
            "/v1/agent/service/register",
            json!({"Name": service, "ID": id, "Address": "127.0.0.1", "Port": addr.port(),
                   "Meta": {"version": version}, "Check": {"TTL": "10m", "Status": "passing"}}),
        )
        .await;
    }

    async fn ask(&self, port: u16, headers: &[(&str, &str)]) -> Answer {
        let url = format!("http://127.0.0.1:{port}/");
        match self
            .http
            .request_with_headers("GET", &url, headers, Bytes::new())
            .await
        {
            Ok(r) => Answer {
                status: r.status,
                backend: r
                    .headers
                    .get("x-backend")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                body: r.text(),
            },
            Err(e) => Answer {
                status: 0,
                backend: String::new(),
                body: e,
            },
        }
    }

    /// `n` requests through each frontend's upstream `port_of`, counted by backend (or
    /// `<status> <body>` for an answer of the sidecar's own).
    async fn spread(
        &self,
        n: usize,
        port_of: impl Fn(&Upstreams) -> u16,
    ) -> Vec<(&'static str, BTreeMap<String, usize>)> {
        let mut out = Vec::new();
        for f in &self.frontends {
            let mut counts = BTreeMap::new();
            for _ in 0..n {
                let a = self.ask(port_of(&f.upstreams), &[]).await;
                let key = if a.status == 200 {
                    a.backend
                } else {
                    format!("{} {}", a.status, a.body)
                };
                *counts.entry(key).or_insert(0) += 1;
            }
            out.push((f.name, counts));
        }
        out
    }

    /// Samples every frontend until `done` holds for all; how long that took.
    async fn until(
        &self,
        port_of: impl Fn(&Upstreams) -> u16 + Copy,
        done: impl Fn(&BTreeMap<String, usize>) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let spread = self.spread(10, port_of).await;
            if spread.iter().all(|(_, c)| done(c)) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "never converged: {spread:?}"
            );
        }
    }
}

fn only(counts: &BTreeMap<String, usize>, backend: &str) -> bool {
    counts.keys().all(|k| k == backend)
}

fn share(counts: &BTreeMap<String, usize>, backend: &str) -> f64 {
    counts.get(backend).copied().unwrap_or(0) as f64 / counts.values().sum::<usize>() as f64
}

/// Registry, control plane, backends, config entries, and the two frontends with their
/// sidecars: Envoy's on `envoy_delta`'s variant, ours on the other.
async fn start(envoy: &Path, envoy_delta: bool, dir: &Path) -> Mesh {
    let registry = RegistryProcess::start(&dir.join("registry"));
    let control_plane = start_control_plane(registry.addr);
    let attempts = Attempts::default();
    let mut mesh = Mesh {
        http: Http::default(),
        registry: format!("http://{}", registry.addr),
        control_plane,
        frontends: Vec::new(),
        attempts: attempts.clone(),
        _registry_process: registry,
    };
    mesh.register("backend", "v1-a", "v1", spawn_h1("v1-a", &attempts).await)
        .await;
    mesh.register("backend", "v1-b", "v1", spawn_h1("v1-b", &attempts).await)
        .await;
    mesh.register("backend", "v2-a", "v2", spawn_h1("v2-a", &attempts).await)
        .await;
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    mesh.register("backend", "dead-a", "dead", dead).await;
    mesh.register("h2svc", "h2-a", "v1", spawn_h2("h2-a", &attempts).await)
        .await;

    for service in ["backend", "legacy"] {
        mesh.must_put(
            "/v1/config",
            json!({"Kind": "service-defaults", "Name": service, "Protocol": "http"}),
        )
        .await;
    }
    mesh.must_put(
        "/v1/config",
        json!({"Kind": "service-defaults", "Name": "h2svc", "Protocol": "http2"}),
    )
    .await;
    mesh.must_put(
        "/v1/config",
        json!({"Kind": "service-resolver", "Name": "backend", "DefaultSubset": "v1",
            "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"},
                        "v2": {"Filter": "Service.Meta.version == v2"},
                        "dead": {"Filter": "Service.Meta.version == dead"}},
            "Failover": {"v1": {"ServiceSubset": "v2"}}}),
    )
    .await;
    mesh.must_put(
        "/v1/config",
        json!({"Kind": "service-resolver", "Name": "legacy",
               "Redirect": {"Service": "backend", "ServiceSubset": "v2"}}),
    )
    .await;
    mesh.must_put("/v1/config", backend_router()).await;
    mesh.must_put(
        "/v1/config",
        json!({"Kind": "service-router", "Name": "h2svc", "Routes": [
            route("refused-stream", json!({"NumRetries": 1, "RetryOn": ["refused-stream"]})),
            route("h2-other", json!({"NumRetries": 1, "RetryOn": ["retriable-4xx"]}))]}),
    )
    .await;

    let xds = mesh.control_plane.addr("xds");
    for (name, is_envoy) in [("front-envoy", true), ("front-mesh", false)] {
        let upstreams = Upstreams {
            backend: free_port(),
            legacy: free_port(),
            h2svc: free_port(),
        };
        let app = mesh_tests::spawn_backend(name).await;
        mesh.must_put(
            "/v1/agent/service/register",
            json!({"Name": name, "ID": name, "Port": app.port(),
                "Connect": {"SidecarService": {"Port": free_port(), "Address": "127.0.0.1", "Proxy": {
                    "Upstreams": [
                        {"DestinationName": "backend", "LocalBindPort": upstreams.backend},
                        {"DestinationName": "legacy", "LocalBindPort": upstreams.legacy},
                        {"DestinationName": "h2svc", "LocalBindPort": upstreams.h2svc}]}}}}),
        )
        .await;
        let node = format!("{name}-sidecar-proxy");
        let sidecar = if is_envoy {
            start_envoy(envoy, &node, xds, envoy_delta, dir)
        } else {
            start_mesh_proxy(&node, xds, !envoy_delta)
        };
        mesh.frontends.push(Frontend {
            name,
            upstreams,
            sidecar,
        });
    }
    mesh
}

/// A router route taken by requests with `x-case: <case>`.
fn route(case: &str, destination: Value) -> Value {
    json!({"Match": {"HTTP": {"Header": [{"Name": "x-case", "Exact": case}]}},
           "Destination": destination})
}

/// Every `RetryOn` value (one retry each), the connect-failure flag, status codes, and the
/// conditions that do not cover a connect failure.
fn backend_router() -> Value {
    let mut routes: Vec<Value> = [
        "5xx",
        "gateway-error",
        "reset",
        "envoy-ratelimited",
        "retriable-4xx",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    ]
    .iter()
    .map(|c| route(c, json!({"NumRetries": 1, "RetryOn": [c]})))
    .collect();
    routes.push(route(
        "connect-failure",
        json!({"ServiceSubset": "dead", "NumRetries": 1, "RetryOn": ["connect-failure"]}),
    ));
    routes.push(route(
        "connect-failure-flag",
        json!({"ServiceSubset": "dead", "NumRetries": 1, "RetryOnConnectFailure": true}),
    ));
    routes.push(route(
        "dead-other",
        json!({"ServiceSubset": "dead", "NumRetries": 1, "RetryOn": ["retriable-4xx"]}),
    ));
    routes.push(route(
        "status-codes",
        json!({"NumRetries": 1, "RetryOnStatusCodes": [418]}),
    ));
    json!({"Kind": "service-router", "Name": "backend", "Routes": routes})
}

/// One request, sent through each sidecar with its own key.
struct Case {
    name: &'static str,
    upstream: fn(&Upstreams) -> u16,
    headers: Vec<(&'static str, &'static str)>,
    /// Status, body, tries that reached a backend.
    expect: (u16, String, u32),
}

fn backend(u: &Upstreams) -> u16 {
    u.backend
}

fn h2svc(u: &Upstreams) -> u16 {
    u.h2svc
}

fn case(
    name: &'static str,
    upstream: fn(&Upstreams) -> u16,
    headers: &[(&'static str, &'static str)],
    (status, body, tries): (u16, &str, u32),
) -> Case {
    Case {
        name,
        upstream,
        headers: headers.to_vec(),
        expect: (status, body.to_string(), tries),
    }
}

const BEFORE_HEADERS: &str = "upstream connect error or disconnect/reset before headers. ";

fn cases() -> Vec<Case> {
    let retried = (200, "try 2", 2);
    let connect =
        format!("{BEFORE_HEADERS}retried and the latest reset reason: remote connection failure");
    let once = format!("{BEFORE_HEADERS}reset reason: remote connection failure");
    let refused = format!("{BEFORE_HEADERS}reset reason: remote refused stream reset");
    let c = |name: &'static str, headers: &[(&'static str, &'static str)], expect| {
        case(name, backend, headers, expect)
    };
    vec![
        c("5xx", &[("x-case", "5xx"), ("x-fail", "503")], retried),
        c(
            "5xx: a 404 is final",
            &[("x-case", "5xx"), ("x-fail", "404")],
            (404, "try 1", 1),
        ),
        c(
            "5xx: a reset",
            &[("x-case", "5xx"), ("x-reset", "1")],
            retried,
        ),
        c(
            "gateway-error",
            &[("x-case", "gateway-error"), ("x-fail", "502")],
            retried,
        ),
        c(
            "gateway-error: a 500 is final",
            &[("x-case", "gateway-error"), ("x-fail", "500")],
            (500, "try 1", 1),
        ),
        c("reset", &[("x-case", "reset"), ("x-reset", "1")], retried),
        c(
            "reset: a 503 is final",
            &[("x-case", "reset"), ("x-fail", "503")],
            (503, "try 1", 1),
        ),
        c(
            "connect-failure",
            &[("x-case", "connect-failure")],
            (503, &connect, 0),
        ),
        c(
            "RetryOnConnectFailure",
            &[("x-case", "connect-failure-flag")],
            (503, &connect, 0),
        ),
        c(
            "a connect failure under retriable-4xx",
            &[("x-case", "dead-other")],
            (503, &once, 0),
        ),
        c(
            "envoy-ratelimited",
            &[
                ("x-case", "envoy-ratelimited"),
                ("x-fail", "429"),
                ("x-fail-header", "x-envoy-ratelimited=true"),
            ],
            retried,
        ),
        c(
            "5xx: a rate-limited 503 is final",
            &[
                ("x-case", "5xx"),
                ("x-fail", "503"),
                ("x-fail-header", "x-envoy-ratelimited=true"),
            ],
            (503, "try 1", 1),
        ),
        c(
            "retriable-4xx",
            &[("x-case", "retriable-4xx"), ("x-fail", "409")],
            retried,
        ),
        c(
            "retriable-4xx: a 429 is final",
            &[("x-case", "retriable-4xx"), ("x-fail", "429")],
            (429, "try 1", 1),
        ),
        c(
            "cancelled",
            &[("x-case", "cancelled"), ("x-fail-header", "grpc-status=1")],
            retried,
        ),
        c(
            "deadline-exceeded",
            &[
                ("x-case", "deadline-exceeded"),
                ("x-fail-header", "grpc-status=4"),
            ],
            retried,
        ),
        c(
            "internal",
            &[("x-case", "internal"), ("x-fail-header", "grpc-status=13")],
            retried,
        ),
        c(
            "resource-exhausted",
            &[
                ("x-case", "resource-exhausted"),
                ("x-fail-header", "grpc-status=8"),
            ],
            retried,
        ),
        c(
            "unavailable",
            &[
                ("x-case", "unavailable"),
                ("x-fail-header", "grpc-status=14"),
            ],
            retried,
        ),
        c(
            "unavailable: grpc-status 13 is final",
            &[
                ("x-case", "unavailable"),
                ("x-fail-header", "grpc-status=13"),
            ],
            (200, "try 1", 1),
        ),
        c(
            "RetryOnStatusCodes",
            &[("x-case", "status-codes"), ("x-fail", "418")],
            retried,
        ),
        case(
            "refused-stream",
            h2svc,
            &[("x-case", "refused-stream"), ("x-refuse", "1")],
            retried,
        ),
        case(
            "a refused stream under retriable-4xx",
            h2svc,
            &[("x-case", "h2-other"), ("x-refuse", "1")],
            (503, &refused, 1),
        ),
    ]
}

/// The tests run one after the other: each asserts propagation times.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(envoy_delta: bool) {
    let _serial = SERIAL.lock().await;
    let Some(envoy) = envoy_bin() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = start(&envoy, envoy_delta, dir.path()).await;
    let label = if envoy_delta {
        "Envoy delta, ours SotW"
    } else {
        "Envoy SotW, ours delta"
    };

    // Both sidecars up: the default subset, v1, behind the aggregate cluster.
    let took = mesh
        .until(backend, |c| {
            c.keys().all(|k| k.starts_with("v1-")) && c.len() == 2
        })
        .await;
    println!("{label}: traffic through both sidecars after {took:?}");
    mesh.until(h2svc, |c| only(c, "h2-a")).await;

    // ---- every RetryOn value ----
    let mut failures = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        for f in &mesh.frontends {
            let key = format!("{envoy_delta}-{}-{i}", f.name);
            let mut headers = case.headers.clone();
            headers.push(("x-test-key", &key));
            let a = mesh.ask((case.upstream)(&f.upstreams), &headers).await;
            let got = (a.status, a.body.clone(), mesh.attempts.get(&key));
            if got != case.expect {
                failures.push(format!(
                    "{}: {} answered {got:?}, expected {:?}",
                    case.name, f.name, case.expect
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{label}:\n{}", failures.join("\n"));

    // The registry refuses a condition the sidecars could not honour.
    let (status, text) = mesh
        .put(
            "/v1/config",
            json!({"Kind": "service-router", "Name": "backend", "Routes": [
                {"Destination": {"RetryOn": ["retriable-headers"]}}]}),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("Routes[0].Destination.RetryOn[0]"), "{text}");

    // ---- Failover: v1's instances critical, v2 serves ----
    for id in ["v1-a", "v1-b"] {
        mesh.must_put(&format!("/v1/agent/check/fail/service:{id}"), json!(null))
            .await;
    }
    let took = mesh.until(backend, |c| only(c, "v2-a")).await;
    println!("{label}: failed over to v2 after {took:?}");
    assert!(took < PROPAGATION, "failover took {took:?}");
    // One of v1's two healthy again: 140% x 1/2 = 70% stays on v1, 30% spills to v2.
    mesh.must_put("/v1/agent/check/pass/service:v1-a", json!(null))
        .await;
    mesh.until(backend, |c| c.contains_key("v1-a")).await;
    for (name, counts) in mesh.spread(300, backend).await {
        let v1 = share(&counts, "v1-a");
        println!("{label}: {name} with one v1 healthy: {counts:?}");
        assert!(
            (0.6..=0.8).contains(&v1) && (v1 + share(&counts, "v2-a") - 1.0).abs() < 1e-9,
            "{name}: {counts:?} is not ~70/30"
        );
    }
    mesh.must_put("/v1/agent/check/pass/service:v1-b", json!(null))
        .await;
    mesh.until(backend, |c| {
        c.keys().all(|k| k.starts_with("v1-")) && c.len() == 2
    })
    .await;

    // ---- A changed cluster is active in Envoy at once ----
    // The resolver's connect timeout changes the clusters, not their endpoints: Envoy must
    // not wait for its 15 s initial fetch timeout to use them.
    let envoy = mesh
        .frontends
        .iter()
        .find_map(|f| match &f.sidecar {
            Sidecar::Envoy(_) => Some(f.sidecar.admin_url("/config_dump")),
            Sidecar::Mesh(..) => None,
        })
        .expect("an Envoy sidecar");
    let changed = Instant::now();
    mesh.must_put(
        "/v1/config",
        json!({"Kind": "service-resolver", "Name": "backend", "DefaultSubset": "v1",
            "ConnectTimeout": "7s",
            "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"},
                        "v2": {"Filter": "Service.Meta.version == v2"},
                        "dead": {"Filter": "Service.Meta.version == dead"}},
            "Failover": {"v1": {"ServiceSubset": "v2"}}}),
    )
    .await;
    let active = mesh_tests::eventually(Duration::from_secs(20), async || {
        let dump = mesh.http.get(&envoy).await.json();
        let Some(clusters) = dump["configs"].as_array().and_then(|configs| {
            configs
                .iter()
                .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.ClustersConfigDump")
        }) else {
            return false;
        };
        let warming = clusters["dynamic_warming_clusters"]
            .as_array()
            .is_some_and(|w| !w.is_empty());
        let timeouts: Vec<&Value> = clusters["dynamic_active_clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| {
                c["cluster"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("failover-target~"))
            })
            .map(|c| &c["cluster"]["connect_timeout"])
            .collect();
        timeouts.len() == 2 && timeouts.iter().all(|t| *t == "7s") && !warming
    })
    .await;
    let took = changed.elapsed();
    println!("{label}: Envoy took the changed clusters after {took:?}");
    assert!(active, "Envoy never took the changed clusters");
    assert!(
        took < Duration::from_secs(1),
        "Envoy took {took:?} to take the changed clusters"
    );
    mesh.until(backend, |c| {
        c.keys().all(|k| k.starts_with("v1-")) && c.len() == 2
    })
    .await;

    // ---- Redirect: legacy is backend's v2 ----
    mesh.until(|u| u.legacy, |c| only(c, "v2-a")).await;

    // ---- Another datacenter is refused at translation, and the last good config stays ----
    mesh.must_put(
        "/v1/config",
        json!({"Kind": "service-resolver", "Name": "legacy", "Redirect": {"Datacenter": "dc9"}}),
    )
    .await;
    let cp_admin = format!("http://{}/status", mesh.control_plane.addr("admin"));
    let reported = mesh_tests::eventually(PROPAGATION, async || {
        let status = mesh.http.get(&cp_admin).await.json();
        mesh.frontends.iter().all(|f| {
            status["translate_errors"][format!("{}-sidecar-proxy", f.name)]
                .as_str()
                .is_some_and(|e| {
                    e.contains(r#"Redirect.Datacenter: datacenter "dc9" is not supported"#)
                })
        })
    })
    .await;
    assert!(reported, "{}", mesh.http.get(&cp_admin).await.text());
    for (name, counts) in mesh.spread(20, |u| u.legacy).await {
        assert!(only(&counts, "v2-a"), "{name}: {counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_sotw_and_mesh_delta() {
    run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_delta_and_mesh_sotw() {
    run(true).await;
}
