#![allow(clippy::unwrap_used)] // test code
// The deprecated inline CORS policies are part of what is compared.
#![allow(deprecated)]
//! Filters against a stock Envoy: the same resources pushed by our ADS server to Envoy and
//! to our proxy, the same traffic, the same outcome.
//!
//! - `envoy.filters.http.cors` (disabled in the HCM, enabled per virtual host and route;
//!   after an optional filter neither proxy knows, and with a per-filter config for a filter
//!   no chain has):
//!   preflights answered or passed on, allowed and refused origins, per-route policies over
//!   the virtual host's, a filter disabled per route, `*` policies, shadow mode, direct
//!   responses, weighted-cluster policies, the deprecated inline policies. Compared: status,
//!   response headers (access-control-* included), whether the request reached the backend,
//!   and the `http.<prefix>.cors.*` stats.
//! - `envoy.filters.network.connection_limit` before an HCM and before a TCP proxy (with a
//!   delay): which connections are served and which closed, and the `connection_limit.*`
//!   stats.
//!
//! Envoy comes from `MESH_ENVOY` or `<workspace>/.venv/bin/envoy`; without it the test skips
//! loudly, except in CI (`CI=true`), where it fails.

#[path = "differential/backend.rs"]
#[allow(dead_code)]
mod backend;
mod support;

use backend::{Answer, Attempts, Conn, send_once};
use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::listener::v3::{Filter, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    CorsPolicy as InlineCorsPolicy, FilterConfig, Route, RouteAction, RouteConfiguration,
    VirtualHost, WeightedCluster, route, route_action, weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{Cors, CorsPolicy};
use envoy_types::pb::envoy::extensions::filters::network::connection_limit::v3::ConnectionLimit;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value, UInt64Value};
use envoy_types::util::pack_any;
use http::Request;
use http_body_util::Full;
use mesh_control_plane::snapshot::Snapshot;
use mesh_proxy::xds::XdsMode;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::envoy::{Pair, free_port};
use support::xds::{
    self, add, direct, hcm_filter, ms, network_filter, prefix, rds, router, socket, static_cluster,
    to,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CORS_LISTENER: &str = "cors";
const LIMITED_LISTENER: &str = "limited";
const DELAYED_LISTENER: &str = "delayed";
const ROUTES: &str = "cors-routes";
const CORS_FILTER: &str = "envoy.filters.http.cors";
/// How long both proxies may take to get their configuration and answer.
const STARTUP: Duration = Duration::from_secs(30);
/// The delayed listener's refusal delay.
const DELAY_MS: u64 = 600;

// ---------------------------------------------------------------------------------------------
// Resources

fn listener(name: &str, addr: (u8, u16), filters: Vec<Filter>) -> Listener {
    let address = socket(SocketAddr::from(([127, 0, 0, addr.0], addr.1)));
    xds::listener(name, address, filters)
}

fn hcm(
    stat_prefix: &str,
    http_filters: Vec<HttpFilter>,
    routes: http_connection_manager::RouteSpecifier,
) -> Filter {
    hcm_filter(HttpConnectionManager {
        http_filters,
        ..xds::hcm(stat_prefix, routes)
    })
}

fn connection_limit(stat_prefix: &str, max: u64, delay: Option<u64>) -> Filter {
    network_filter(
        "envoy.filters.network.connection_limit",
        pack_any(ConnectionLimit {
            stat_prefix: stat_prefix.into(),
            max_connections: Some(UInt64Value { value: max }),
            delay: delay.map(ms),
            runtime_enabled: None,
        }),
    )
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(s.into())),
        ignore_case: false,
    }
}

fn regex(r: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex: r.into(),
            ..Default::default()
        })),
        ignore_case: false,
    }
}

fn percent(numerator: u32) -> Option<RuntimeFractionalPercent> {
    Some(RuntimeFractionalPercent {
        default_value: Some(FractionalPercent {
            numerator,
            denominator: 0,
        }),
        runtime_key: String::new(),
    })
}

fn per_filter(config: Any) -> std::collections::HashMap<String, Any> {
    std::collections::HashMap::from([(CORS_FILTER.to_string(), config)])
}

fn fwd(p: &str, action: RouteAction, typed: Option<Any>) -> Route {
    Route {
        r#match: Some(prefix(p)),
        action: Some(route::Action::Route(action)),
        typed_per_filter_config: typed.map(per_filter).unwrap_or_default(),
        ..Default::default()
    }
}

fn route_configuration() -> RouteConfiguration {
    let vhost_policy = CorsPolicy {
        allow_origin_string_match: vec![
            exact("https://a.example"),
            regex(r"https://[a-z]+\.b\.example"),
        ],
        allow_methods: "GET, PUT".into(),
        allow_headers: "x-a, x-b".into(),
        expose_headers: "x-e".into(),
        max_age: "600".into(),
        ..Default::default()
    };
    let weighted = WeightedCluster {
        clusters: vec![
            weighted_cluster::ClusterWeight {
                name: "a".into(),
                weight: Some(UInt32Value { value: 1 }),
                typed_per_filter_config: per_filter(pack_any(CorsPolicy {
                    allow_origin_string_match: vec![exact("https://w.example")],
                    ..Default::default()
                })),
                ..Default::default()
            },
            weighted_cluster::ClusterWeight {
                name: "b".into(),
                weight: Some(UInt32Value { value: 0 }),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let main = VirtualHost {
        name: "main".into(),
        domains: vec!["main.test".into()],
        response_headers_to_add: vec![add("x-vhost", "main")],
        typed_per_filter_config: std::collections::HashMap::from([
            (CORS_FILTER.to_string(), pack_any(vhost_policy)),
            // For a filter no chain has: accepted by both, without effect.
            (
                "not.in.any.chain".to_string(),
                pack_any(CorsPolicy {
                    allow_origin_string_match: vec![exact("https://evil.example")],
                    ..Default::default()
                }),
            ),
        ]),
        routes: vec![
            fwd(
                "/route-policy",
                to("a"),
                Some(pack_any(CorsPolicy {
                    allow_origin_string_match: vec![exact("https://route.example")],
                    allow_credentials: Some(BoolValue { value: true }),
                    forward_not_matching_preflights: Some(BoolValue { value: false }),
                    ..Default::default()
                })),
            ),
            fwd(
                "/disabled-here",
                to("a"),
                Some(pack_any(FilterConfig {
                    disabled: true,
                    ..Default::default()
                })),
            ),
            fwd(
                "/star",
                to("a"),
                Some(pack_any(CorsPolicy {
                    allow_origin_string_match: vec![regex(".*")],
                    allow_methods: "*".into(),
                    allow_headers: "*".into(),
                    allow_private_network_access: Some(BoolValue { value: true }),
                    ..Default::default()
                })),
            ),
            fwd(
                "/shadow",
                to("a"),
                Some(pack_any(CorsPolicy {
                    filter_enabled: percent(0),
                    shadow_enabled: percent(100),
                    ..Default::default()
                })),
            ),
            Route {
                r#match: Some(prefix("/direct")),
                action: Some(direct(200, Some("direct"))),
                ..Default::default()
            },
            fwd(
                "/weighted",
                RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
                        weighted,
                    )),
                    ..Default::default()
                },
                None,
            ),
            fwd("/", to("a"), None),
        ],
        ..Default::default()
    };
    let legacy = VirtualHost {
        name: "legacy".into(),
        domains: vec!["legacy.test".into()],
        cors: Some(InlineCorsPolicy {
            allow_origin_string_match: vec![exact("https://vhost.example")],
            allow_methods: "POST".into(),
            ..Default::default()
        }),
        routes: vec![
            // Enabled here by an empty FilterConfig; the policies are the inline ones.
            fwd(
                "/on",
                RouteAction {
                    cors: Some(InlineCorsPolicy {
                        allow_origin_string_match: vec![exact("https://route.example")],
                        ..Default::default()
                    }),
                    ..to("a")
                },
                Some(pack_any(FilterConfig {
                    config: Some(Any::default()),
                    ..Default::default()
                })),
            ),
            // The filter is disabled in the HCM and nothing enables it here.
            fwd("/", to("a"), None),
        ],
        ..Default::default()
    };
    RouteConfiguration {
        name: ROUTES.into(),
        virtual_hosts: vec![main, legacy],
        ..Default::default()
    }
}

/// The resources with the listeners on `ports` (cors, limited, delayed) of 127.0.0.`host`.
fn snapshot(ports: [u16; 3], a: SocketAddr, b: SocketAddr, host: u8) -> Snapshot {
    let cors_filter = HttpFilter {
        name: CORS_FILTER.into(),
        disabled: true,
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(Cors {}))),
        ..Default::default()
    };
    // Skipped by both: Envoy does not know it, we do not implement it.
    let optional_unknown = HttpFilter {
        name: "example.unknown".into(),
        is_optional: true,
        config_type: Some(http_filter::ConfigType::TypedConfig(Any {
            type_url: "type.googleapis.com/example.filters.Unknown".into(),
            value: vec![],
        })),
        ..Default::default()
    };
    let rds = rds(ROUTES);
    let inline = http_connection_manager::RouteSpecifier::RouteConfig(RouteConfiguration {
        name: "limited".into(),
        virtual_hosts: vec![VirtualHost {
            name: "any".into(),
            domains: vec!["*".into()],
            routes: vec![fwd("/", to("a"), None)],
            ..Default::default()
        }],
        ..Default::default()
    });
    let tcp = network_filter(
        "envoy.filters.network.tcp_proxy",
        pack_any(TcpProxy {
            stat_prefix: "delayed".into(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("a".into())),
            ..Default::default()
        }),
    );
    Snapshot::new(
        vec![static_cluster("a", &[a]), static_cluster("b", &[b])],
        vec![],
        vec![
            listener(
                CORS_LISTENER,
                (host, ports[0]),
                vec![hcm(
                    "cors",
                    vec![optional_unknown, cors_filter, router()],
                    rds,
                )],
            ),
            listener(
                LIMITED_LISTENER,
                (host, ports[1]),
                vec![
                    connection_limit("limited", 2, None),
                    hcm("limited", vec![router()], inline),
                ],
            ),
            listener(
                DELAYED_LISTENER,
                (host, ports[2]),
                vec![connection_limit("delayed", 1, Some(DELAY_MS)), tcp],
            ),
        ],
        vec![route_configuration()],
    )
}

// ---------------------------------------------------------------------------------------------
// CORS cases

struct Case {
    name: &'static str,
    method: &'static str,
    host: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    /// Envoy answers itself (a preflight answer, a direct response, a 404) rather than the
    /// backend.
    local: bool,
    /// The access-control-* headers of Envoy's answer.
    cors: Vec<(&'static str, &'static str)>,
}

fn case(name: &'static str, method: &'static str, host: &'static str, path: &'static str) -> Case {
    Case {
        name,
        method,
        host,
        path,
        headers: vec![],
        local: false,
        cors: vec![],
    }
}

impl Case {
    fn origin(mut self, origin: &'static str) -> Case {
        self.headers.push(("origin", origin));
        self
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Case {
        self.headers.push((name, value));
        self
    }

    /// A preflight: OPTIONS with Origin and Access-Control-Request-Method PUT.
    fn preflight(
        name: &'static str,
        host: &'static str,
        path: &'static str,
        origin: &'static str,
    ) -> Case {
        case(name, "OPTIONS", host, path)
            .origin(origin)
            .header("access-control-request-method", "PUT")
    }

    fn answered(mut self) -> Case {
        self.local = true;
        self
    }

    fn cors(mut self, headers: &[(&'static str, &'static str)]) -> Case {
        self.cors = headers.to_vec();
        self
    }

    fn request(&self, key: &str) -> Request<Full<Bytes>> {
        let mut r = Request::builder()
            .method(self.method)
            .uri(self.path)
            .header("host", self.host)
            .header("x-test-key", key);
        for (k, v) in &self.headers {
            r = r.header(*k, *v);
        }
        r.body(Full::new(Bytes::new())).unwrap()
    }
}

const VHOST_ANSWER: &[(&str, &str)] = &[
    ("access-control-allow-origin", "https://a.example"),
    ("access-control-expose-headers", "x-e"),
];

fn cases() -> Vec<Case> {
    let main = "main.test";
    let legacy = "legacy.test";
    vec![
        Case::preflight("preflight allowed", main, "/x", "https://a.example")
            .answered()
            .cors(&[
                ("access-control-allow-origin", "https://a.example"),
                ("access-control-allow-methods", "GET, PUT"),
                ("access-control-allow-headers", "x-a, x-b"),
                ("access-control-max-age", "600"),
                ("access-control-expose-headers", "x-e"),
            ]),
        Case::preflight(
            "preflight allowed by regex",
            main,
            "/x",
            "https://q.b.example",
        )
        .answered()
        .cors(&[
            ("access-control-allow-origin", "https://q.b.example"),
            ("access-control-allow-methods", "GET, PUT"),
            ("access-control-allow-headers", "x-a, x-b"),
            ("access-control-max-age", "600"),
            ("access-control-expose-headers", "x-e"),
        ]),
        Case::preflight(
            "preflight refused is passed on",
            main,
            "/x",
            "https://evil.example",
        ),
        case("get allowed", "GET", main, "/x")
            .origin("https://a.example")
            .cors(VHOST_ANSWER),
        case("get refused", "GET", main, "/x").origin("https://evil.example"),
        case("get without origin", "GET", main, "/x"),
        case("options without request method", "OPTIONS", main, "/x")
            .origin("https://a.example")
            .cors(VHOST_ANSWER),
        Case::preflight(
            "route policy preflight",
            main,
            "/route-policy",
            "https://route.example",
        )
        .answered()
        .cors(&[
            ("access-control-allow-origin", "https://route.example"),
            ("access-control-allow-credentials", "true"),
            ("access-control-allow-methods", "GET, PUT"),
            ("access-control-allow-headers", "x-a, x-b"),
            ("access-control-max-age", "600"),
            ("access-control-expose-headers", "x-e"),
        ]),
        Case::preflight(
            "route policy refuses the vhost origin and answers",
            main,
            "/route-policy",
            "https://a.example",
        )
        .answered()
        .cors(&[
            ("access-control-allow-credentials", "true"),
            ("access-control-allow-methods", "GET, PUT"),
            ("access-control-allow-headers", "x-a, x-b"),
            ("access-control-max-age", "600"),
        ]),
        case("route policy get", "GET", main, "/route-policy")
            .origin("https://route.example")
            .cors(&[
                ("access-control-allow-origin", "https://route.example"),
                ("access-control-allow-credentials", "true"),
                ("access-control-expose-headers", "x-e"),
            ]),
        Case::preflight(
            "disabled on a route",
            main,
            "/disabled-here",
            "https://a.example",
        ),
        Case::preflight("star policy", main, "/star", "https://anyone.example")
            .header("access-control-request-headers", "x-y, x-z")
            .header("access-control-request-private-network", "true")
            .answered()
            .cors(&[
                ("access-control-allow-origin", "https://anyone.example"),
                ("access-control-allow-methods", "PUT"),
                ("access-control-allow-headers", "x-y, x-z"),
                ("access-control-max-age", "600"),
                ("access-control-allow-private-network", "true"),
                ("access-control-expose-headers", "x-e"),
            ]),
        Case::preflight(
            "shadow mode passes on",
            main,
            "/shadow",
            "https://a.example",
        ),
        case("direct responses have no cors", "GET", main, "/direct")
            .origin("https://a.example")
            .answered(),
        Case::preflight(
            "direct response preflight",
            main,
            "/direct",
            "https://a.example",
        )
        .answered(),
        case("weighted cluster policy", "GET", main, "/weighted")
            .origin("https://w.example")
            .cors(&[
                ("access-control-allow-origin", "https://w.example"),
                ("access-control-expose-headers", "x-e"),
            ]),
        case(
            "weighted cluster overrides origins",
            "GET",
            main,
            "/weighted",
        )
        .origin("https://a.example"),
        case("no route", "GET", "nowhere.test", "/x")
            .origin("https://a.example")
            .answered(),
        case("inline route policy", "GET", legacy, "/on")
            .origin("https://route.example")
            .cors(&[("access-control-allow-origin", "https://route.example")]),
        case("inline vhost origin overridden", "GET", legacy, "/on")
            .origin("https://vhost.example"),
        Case::preflight("inline preflight", legacy, "/on", "https://route.example")
            .answered()
            .cors(&[
                ("access-control-allow-origin", "https://route.example"),
                ("access-control-allow-methods", "POST"),
            ]),
        case("inline without enabling", "GET", legacy, "/").origin("https://vhost.example"),
    ]
}

/// What is compared: status, who answered, the response headers but those that differ by
/// nature (dates, Envoy's own, lengths).
#[derive(Debug, PartialEq, Eq)]
struct Observation {
    status: u16,
    reached_backend: bool,
    headers: BTreeMap<String, Vec<String>>,
}

fn observe(answer: &Answer, attempts: u32) -> Observation {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &answer.headers {
        let name = name.as_str();
        if name.starts_with("x-envoy-") || matches!(name, "date" | "server" | "content-length") {
            continue;
        }
        headers
            .entry(name.to_string())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    Observation {
        status: answer.status,
        reached_backend: attempts > 0,
        headers,
    }
}

fn cors_headers(o: &Observation) -> BTreeMap<String, Vec<String>> {
    o.headers
        .iter()
        .filter(|(n, _)| n.starts_with("access-control-"))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

async fn run_cors_cases(envoy: SocketAddr, mesh: SocketAddr, attempts: &Attempts) {
    let mut failures = Vec::new();
    let cases = cases();
    for c in &cases {
        let (ke, km) = (format!("{}/envoy", c.name), format!("{}/mesh", c.name));
        let (e, m) = tokio::join!(
            send_once(envoy, c.request(&ke)),
            send_once(mesh, c.request(&km))
        );
        let (e, m) = (e.unwrap(), m.unwrap());
        let (oe, om) = (
            observe(&e, attempts.get(&ke)),
            observe(&m, attempts.get(&km)),
        );
        let want: BTreeMap<String, Vec<String>> = c
            .cors
            .iter()
            .map(|(n, v)| (n.to_string(), vec![v.to_string()]))
            .collect();
        let mut problems = Vec::new();
        if oe.reached_backend == c.local || cors_headers(&oe) != want {
            problems.push(format!(
                "Envoy no longer answers as documented (local: {}, cors: {want:?})",
                c.local
            ));
        }
        if oe != om {
            problems.push("the answers differ".to_string());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "case {:?}: {}\n envoy: {oe:?}\n{e}\n mesh: {om:?}\n{m}",
                c.name,
                problems.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} CORS cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    eprintln!(
        "cors: {} cases: same answers from Envoy and the mesh proxy",
        cases.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Connection limits

fn plain_get() -> Request<Full<Bytes>> {
    Request::get("/")
        .header("host", "limited.test")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Served: a request on the connection gets the backend's 200; closed: it gets nothing.
async fn served(conn: &mut Conn) -> bool {
    matches!(conn.send(plain_get()).await, Ok(a) if a.status == 200)
}

fn stats_with<'a>(stats: &'a BTreeMap<String, i64>, prefix: &'a str) -> BTreeMap<&'a str, i64> {
    stats
        .iter()
        .filter(|(n, _)| n.starts_with(prefix))
        .map(|(n, v)| (n.as_str(), *v))
        .collect()
}

/// Polls until `stat` reads `value` in this proxy's stats.
async fn wait_stat(pair: &Pair, envoy: bool, stat: &str, value: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = if envoy {
            pair.envoy.stats().await
        } else {
            pair.mesh.stats()
        };
        let now = stats.get(stat).copied();
        if now == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {stat} is {now:?}, waited for {value}",
            if envoy { "envoy" } else { "mesh" }
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two connections at once are served, the third is closed; once one is gone another is
/// served. Returns which were served.
async fn limit_traffic(pair: &Pair, envoy: bool, addr: SocketAddr) -> Vec<bool> {
    let active = "connection_limit.limited.active_connections";
    let mut first = Conn::open(addr).await.unwrap();
    let mut second = Conn::open(addr).await.unwrap();
    let mut outcomes = vec![served(&mut first).await, served(&mut second).await];
    let mut third = Conn::open(addr).await.unwrap();
    outcomes.push(served(&mut third).await);
    drop(third);
    wait_stat(pair, envoy, active, 2).await;
    drop(first);
    wait_stat(pair, envoy, active, 1).await;
    let mut fourth = Conn::open(addr).await.unwrap();
    outcomes.push(served(&mut fourth).await);
    outcomes.push(served(&mut second).await);
    drop((second, fourth));
    wait_stat(pair, envoy, active, 0).await;
    outcomes
}

/// Through the TCP proxy: one connection at a time; the next is held `DELAY_MS`, unread,
/// then closed. Returns (first served, second got no byte, how long the second was held).
async fn delayed_traffic(addr: SocketAddr) -> (bool, bool, Duration) {
    let request = b"GET / HTTP/1.1\r\nhost: delayed.test\r\n\r\n";
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(request).await.unwrap();
    let mut head = [0u8; 12];
    let served = first.read_exact(&mut head).await.is_ok() && &head == b"HTTP/1.1 200";
    let started = Instant::now();
    let mut second = TcpStream::connect(addr).await.unwrap();
    let _ = second.write_all(request).await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), second.read(&mut buf))
        .await
        .expect("the refused connection was never closed");
    let held = started.elapsed();
    drop(first);
    (served, matches!(read, Ok(0) | Err(_)), held)
}

// ---------------------------------------------------------------------------------------------

async fn ready(addr: SocketAddr, host: &str, pair: &mut Pair) {
    let probe = async || {
        let request = Request::get("/")
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        match send_once(addr, request).await {
            Ok(answer) if answer.status == 200 => Ok(()),
            _ => Err(format!("{addr} never answered")),
        }
    };
    pair.envoy.wait_until(Instant::now() + STARTUP, probe).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_match_envoy() {
    let attempts = Attempts::default();
    let a = backend::spawn("a", &attempts).await;
    let b = backend::spawn("b", &attempts).await;
    let ports = [free_port(), free_port(), free_port()];
    // Ours on other addresses of the loopback (port 0 for all three would be one address to
    // the xDS client, which refuses listeners sharing one).
    let Some(mut pair) = Pair::start(
        XdsMode::Sotw,
        [
            ("envoy", snapshot(ports, a, b, 1)),
            ("mesh", snapshot(ports, a, b, 2)),
        ],
    )
    .await
    else {
        return;
    };
    let envoy_addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let mesh_cors = pair.mesh_listener(CORS_LISTENER, STARTUP).await;
    let mesh_limited = pair.mesh_listener(LIMITED_LISTENER, STARTUP).await;
    let mesh_delayed = pair.mesh_listener(DELAYED_LISTENER, STARTUP).await;
    for (addr, host) in [
        (envoy_addr(0), "main.test"),
        (mesh_cors, "main.test"),
        (envoy_addr(1), "limited.test"),
        (mesh_limited, "limited.test"),
        (envoy_addr(2), "delayed.test"),
        (mesh_delayed, "delayed.test"),
    ] {
        ready(addr, host, &mut pair).await;
    }

    run_cors_cases(envoy_addr(0), mesh_cors, &attempts).await;
    let (envoy_stats, mesh_stats) = (pair.envoy.stats().await, pair.mesh.stats());
    let (e, m) = (
        stats_with(&envoy_stats, "http.cors.cors."),
        stats_with(&mesh_stats, "http.cors.cors."),
    );
    assert_eq!(e, m, "CORS stats (envoy / mesh)");
    assert!(e.values().all(|v| *v > 0), "{e:?}");
    eprintln!("cors stats: {e:?}");

    // Probes are over: every probe's connection closed.
    for envoy in [true, false] {
        wait_stat(
            &pair,
            envoy,
            "connection_limit.limited.active_connections",
            0,
        )
        .await;
        wait_stat(
            &pair,
            envoy,
            "connection_limit.delayed.active_connections",
            0,
        )
        .await;
    }
    let served_envoy = limit_traffic(&pair, true, envoy_addr(1)).await;
    let served_mesh = limit_traffic(&pair, false, mesh_limited).await;
    assert_eq!(served_envoy, [true, true, false, true, true], "Envoy");
    assert_eq!(served_mesh, served_envoy, "which connections are served");

    let (envoy_delayed, mesh_delayed_outcome) = tokio::join!(
        delayed_traffic(envoy_addr(2)),
        delayed_traffic(mesh_delayed)
    );
    for (who, (served, refused, held)) in [("envoy", envoy_delayed), ("mesh", mesh_delayed_outcome)]
    {
        assert!(
            served && refused,
            "{who}: served {served}, refused {refused}"
        );
        // Held at least about the delay (a lower bound: timers never fire early).
        assert!(
            held >= Duration::from_millis(DELAY_MS - 100),
            "{who}: the refused connection was closed after {held:?}"
        );
    }
    for envoy in [true, false] {
        wait_stat(
            &pair,
            envoy,
            "connection_limit.delayed.active_connections",
            0,
        )
        .await;
    }
    let (envoy_stats, mesh_stats) = (pair.envoy.stats().await, pair.mesh.stats());
    let (e, m) = (
        stats_with(&envoy_stats, "connection_limit."),
        stats_with(&mesh_stats, "connection_limit."),
    );
    assert_eq!(e, m, "connection_limit stats (envoy / mesh)");
    assert_eq!(
        e.get("connection_limit.limited.limited_connections"),
        Some(&1)
    );
    assert_eq!(
        e.get("connection_limit.delayed.limited_connections"),
        Some(&1)
    );
    eprintln!(
        "connection_limit: served {served_envoy:?} on both; held {:?} (envoy) / {:?} (mesh); stats {e:?}",
        envoy_delayed.2, mesh_delayed_outcome.2
    );
    check_config_dump(&pair).await;
    pair.envoy.assert_running();
}

/// Our `/config_dump` shows the filters as configured.
async fn check_config_dump(pair: &Pair) {
    let (_, body) = pair.mesh.admin_get("/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    let listeners = &dump["configs"][0]["dynamic_listeners"];
    let listener = |name: &str| {
        listeners
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .map(|l| l["active_state"]["listener"].clone())
            .unwrap()
    };
    assert_eq!(
        listener(DELAYED_LISTENER)["network_filters"][0]["connection_limit"]["delay"],
        "0.6s"
    );
    assert_eq!(
        listener(CORS_LISTENER)["filter"]["http_connection_manager"]["http_filters"][0],
        serde_json::json!({ "name": CORS_FILTER, "disabled": true, "filter": "cors" })
    );
    let routes = &dump["configs"][2]["dynamic_route_configs"][0]["route_config"];
    let main = &routes["virtual_hosts"][0];
    assert_eq!(
        main["typed_per_filter_config"][CORS_FILTER]["cors_policy"]["max_age"],
        "600"
    );
    assert_eq!(
        main["routes"][1]["typed_per_filter_config"][CORS_FILTER],
        serde_json::json!({ "disabled": true })
    );
    assert_eq!(routes["virtual_hosts"][1]["cors"]["allow_methods"], "POST");
}
