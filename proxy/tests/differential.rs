#![allow(clippy::unwrap_used)] // test code
//! Differential tests against a stock Envoy: the same xDS resources are pushed by our ADS
//! server to an Envoy process (node "envoy") and to our proxy in process (node "mesh"), the
//! same requests go to both, and the answers must be the same: status, which backend and
//! which route, the path, `Host` and headers the backend saw, the response headers, redirect
//! locations and direct response bodies, and how many tries reached the backends.
//!
//! The cases are a table (`cases()`): one entry per request. Each states what Envoy answers,
//! so that a case keeps testing what its name says, and our proxy is compared with Envoy's
//! actual answer, local replies (status and body) included.
//!
//! Envoy comes from `MESH_ENVOY` or `<workspace>/.venv/bin/envoy`. Without it the tests skip
//! loudly, except in CI (`CI=true`), where they fail.

#[path = "differential/backend.rs"]
mod backend;
#[path = "differential/resources.rs"]
mod resources;
mod support;

use backend::{Answer, Attempts, Conn, send_once};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use mesh_proxy::xds::XdsMode;
use resources::{Addrs, LISTENER};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::envoy::{Pair, free_port};
use tokio::task::JoinSet;

/// How long both proxies may take to get their configuration and answer.
const STARTUP: Duration = Duration::from_secs(30);
/// Requests per proxy for the weighted-cluster distribution.
const WEIGHTED_REQUESTS: usize = 2000;

// ---------------------------------------------------------------------------------------------
// The table

/// One request, sent as is (HTTP/1.1, explicit `Host`).
#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    path: &'static str,
    host: &'static str,
    headers: Vec<(&'static str, &'static str)>,
}

fn get(path: &'static str) -> Req {
    Req {
        method: "GET",
        path,
        host: "main.test",
        headers: Vec::new(),
    }
}

impl Req {
    fn host(mut self, host: &'static str) -> Req {
        self.host = host;
        self
    }

    fn method(mut self, method: &'static str) -> Req {
        self.method = method;
        self
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Req {
        self.headers.push((name, value));
        self
    }

    fn build(&self, key: &str) -> Request<Full<Bytes>> {
        let mut r = Request::builder()
            .method(self.method)
            .uri(self.path)
            .header("host", self.host);
        for (k, v) in &self.headers {
            r = r.header(*k, *v);
        }
        r.header("x-test-key", key)
            .body(Full::new(Bytes::new()))
            .unwrap()
    }
}

/// What a proxy answers.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Forwarded: the backend's answer, from `backend`, through route `route` (the `x-route`
    /// header every route adds).
    Upstream {
        status: u16,
        backend: &'static str,
        route: &'static str,
    },
    /// An answer the proxy makes itself; its body must be Envoy's.
    Local(u16),
    Direct {
        status: u16,
        body: &'static str,
    },
    Redirect {
        status: u16,
        location: &'static str,
    },
}

fn ok(backend: &'static str, route: &'static str) -> Expect {
    Expect::Upstream {
        status: 200,
        backend,
        route,
    }
}

fn upstream(status: u16, backend: &'static str, route: &'static str) -> Expect {
    Expect::Upstream {
        status,
        backend,
        route,
    }
}

struct Case {
    name: &'static str,
    request: Req,
    /// Envoy's answer.
    envoy: Expect,
    /// The path and query the backend must see, when the case is about it.
    path_seen: Option<&'static str>,
    /// The `Host` the backend must see, when the case is about it.
    host_seen: Option<&'static str>,
    /// How many tries must reach the backends, when the case is about it.
    attempts: Option<u32>,
    /// Sent this many times (one connection each); every answer is compared.
    repeat: usize,
}

fn case(name: &'static str, request: Req, envoy: Expect) -> Case {
    Case {
        name,
        request,
        envoy,
        path_seen: None,
        host_seen: None,
        attempts: None,
        repeat: 1,
    }
}

impl Case {
    fn path_seen(mut self, path: &'static str) -> Case {
        self.path_seen = Some(path);
        self
    }

    fn host_seen(mut self, host: &'static str) -> Case {
        self.host_seen = Some(host);
        self
    }

    fn attempts(mut self, n: u32) -> Case {
        self.attempts = Some(n);
        self
    }

    fn repeat(mut self, n: usize) -> Case {
        self.repeat = n;
        self
    }
}

fn cases() -> Vec<Case> {
    vec![
        // ---- virtual hosts by domain ----
        case(
            "vhost exact",
            get("/hello").host("exact.test"),
            ok("a", "exact-any"),
        ),
        case(
            "vhost exact, any case",
            get("/hello").host("EXACT.Test"),
            ok("a", "exact-any"),
        ),
        // Envoy matches the Host with its port unless told otherwise
        // (`ignore_port_in_host_matching`, or the HCM's `strip_matching_host_port` /
        // `strip_any_host_port`): `exact.test:8080` is not `exact.test`, and `*` takes it.
        case(
            "vhost exact, host with a port",
            get("/hello").host("exact.test:8080"),
            ok("a", "hello"),
        ),
        case(
            "vhost *.suffix, host with a port",
            get("/x").host("api.suffix.test:8080"),
            Expect::Local(404),
        ),
        case(
            "vhost *.suffix",
            get("/x").host("api.suffix.test"),
            ok("b", "suffix-any"),
        ),
        case(
            "vhost longest *.suffix wins",
            get("/x").host("v1.deep.suffix.test"),
            ok("c", "deep-any"),
        ),
        case(
            "vhost *.suffix needs a label",
            get("/hello").host("suffix.test"),
            ok("a", "hello"),
        ),
        case(
            "vhost prefix.*",
            get("/x").host("prefix.example"),
            ok("c", "prefix-any"),
        ),
        case(
            "vhost *.suffix beats prefix.*",
            get("/x").host("prefix.x.suffix.test"),
            ok("b", "suffix-any"),
        ),
        case(
            "vhost *",
            get("/hello").host("other.test"),
            ok("a", "hello"),
        ),
        case(
            "vhost *, other path: no route",
            get("/x").host("other.test"),
            Expect::Local(404),
        ),
        // ---- path matching ----
        case("prefix", get("/hello"), ok("a", "hello")),
        case(
            "prefix is not a segment",
            get("/hellothere"),
            ok("a", "hello"),
        ),
        case(
            "prefix keeps the query",
            get("/hello/x?a=1&b=2"),
            ok("a", "hello"),
        )
        .path_seen("/hello/x?a=1&b=2"),
        case("exact path", get("/exact"), ok("a", "exact")),
        case(
            "exact path, with query",
            get("/exact?x=1"),
            ok("a", "exact"),
        ),
        case(
            "exact path is not a prefix",
            get("/exact/more"),
            Expect::Local(404),
        ),
        case(
            "exact path, trailing slash",
            get("/exact/"),
            Expect::Local(404),
        ),
        case("safe_regex path", get("/regex/123"), ok("b", "regex")),
        case(
            "safe_regex path ignores the query",
            get("/regex/42?a=b"),
            ok("b", "regex"),
        ),
        case(
            "safe_regex path is anchored",
            get("/regex/123/x"),
            Expect::Local(404),
        ),
        case(
            "safe_regex path, no match",
            get("/regex/abc"),
            Expect::Local(404),
        ),
        case(
            "case-insensitive prefix",
            get("/caseless/x"),
            ok("c", "caseless"),
        ),
        case(
            "case-insensitive prefix, upper",
            get("/CASELESS"),
            ok("c", "caseless"),
        ),
        case("no route: 404", get("/nothing"), Expect::Local(404)),
        case(
            "method is kept",
            get("/hello").method("DELETE"),
            ok("a", "hello"),
        ),
        // ---- header matching (first match wins) ----
        case(
            "header exact",
            get("/hdr").header("x-variant", "blue"),
            ok("b", "hdr-exact"),
        ),
        case(
            "header exact is case-sensitive",
            get("/hdr").header("x-variant", "Blue"),
            ok("c", "hdr-invert"),
        ),
        case(
            "header prefix and regex, both",
            get("/hdr")
                .header("x-variant", "green")
                .header("x-tier", "t1"),
            ok("c", "hdr-and"),
        ),
        case(
            "header prefix and regex, one missing",
            get("/hdr").header("x-variant", "green"),
            ok("c", "hdr-invert"),
        ),
        case(
            "header regex is anchored",
            get("/hdr")
                .header("x-variant", "green")
                .header("x-tier", "t12"),
            ok("c", "hdr-invert"),
        ),
        case(
            "header suffix",
            get("/hdr").header("x-variant", "v2-beta"),
            ok("b", "hdr-suffix"),
        ),
        case(
            "header contains",
            get("/hdr").header("x-variant", "purple"),
            ok("c", "hdr-contains"),
        ),
        case(
            "header :method",
            get("/hdr").method("POST"),
            ok("b", "hdr-method"),
        ),
        case(
            "header inverted, value equal",
            get("/hdr").header("x-variant", "red"),
            ok("a", "hdr-fallback"),
        ),
        case(
            "header inverted, header missing",
            get("/hdr"),
            ok("b", "hdr-absent"),
        ),
        case(
            "header in one line with a comma",
            get("/hdr").header("x-variant", "blue,red"),
            ok("c", "hdr-invert"),
        ),
        // Envoy 1.40 matches a header that comes in several lines line by line: the matcher
        // holds when one of the lines matches (and `invert_match` negates that).
        case(
            "header repeated: one line matches",
            get("/hdr")
                .header("x-variant", "red")
                .header("x-variant", "blue"),
            ok("b", "hdr-exact"),
        ),
        case(
            "header repeated: prefix on the second line",
            get("/hdr")
                .header("x-variant", "x")
                .header("x-variant", "green")
                .header("x-tier", "t1"),
            ok("c", "hdr-and"),
        ),
        case(
            "header repeated, inverted: one line equal",
            get("/hdr")
                .header("x-variant", "red")
                .header("x-variant", "yellow"),
            ok("a", "hdr-fallback"),
        ),
        // ---- query parameters ----
        case("query exact", get("/query?q=yes"), ok("b", "q-exact")),
        case(
            "query exact, other value",
            get("/query?q=no"),
            ok("a", "q-fallback"),
        ),
        case(
            "query present, no value",
            get("/query?flag"),
            ok("c", "q-present"),
        ),
        case(
            "query present, with value",
            get("/query?q=no&flag=1"),
            ok("c", "q-present"),
        ),
        case(
            "query first value counts",
            get("/query?q=yes&q=no"),
            ok("b", "q-exact"),
        ),
        case("query regex", get("/query?id=42"), ok("b", "q-regex")),
        case(
            "query regex is anchored",
            get("/query?id=4x2"),
            ok("a", "q-fallback"),
        ),
        case(
            "query name is case-sensitive",
            get("/query?Q=yes"),
            ok("a", "q-fallback"),
        ),
        case(
            "query value is not decoded",
            get("/query?q=y%65s"),
            ok("a", "q-fallback"),
        ),
        // ---- rewrites ----
        case("prefix_rewrite", get("/rewrite/x?y=1"), ok("a", "rewrite")).path_seen("/new/x?y=1"),
        case("prefix_rewrite to /", get("/strip/x"), ok("a", "strip")).path_seen("//x"),
        case(
            "prefix_rewrite to /, whole path",
            get("/strip"),
            ok("a", "strip"),
        )
        .path_seen("/"),
        case(
            "prefix_rewrite mid-word",
            get("/stripped"),
            ok("a", "strip"),
        )
        .path_seen("/ped"),
        case(
            "prefix_rewrite of an exact path",
            get("/exact-rewrite?a=1"),
            ok("a", "exact-rewrite"),
        )
        .path_seen("/replaced?a=1"),
        case(
            "host_rewrite_literal",
            get("/host-rewrite/x"),
            ok("a", "host-rewrite"),
        )
        .host_seen("rewritten.test"),
        case(
            "host is passed on",
            get("/hello").host("Some.Host:99"),
            ok("a", "hello"),
        )
        .host_seen("Some.Host:99"),
        // ---- timeouts ----
        case(
            "timeout fires: 504",
            get("/timeout").header("x-test-delay-ms", "1000"),
            Expect::Local(504),
        )
        .attempts(1),
        case(
            "timeout not reached",
            get("/timeout").header("x-test-delay-ms", "50"),
            ok("a", "timeout"),
        ),
        case(
            "timeout 0 disables it",
            get("/no-timeout").header("x-test-delay-ms", "400"),
            ok("a", "no-timeout"),
        ),
        // ---- retries ----
        case(
            "retry 5xx recovers",
            get("/retry-5xx")
                .header("x-test-fail", "503")
                .header("x-test-fail-times", "1"),
            ok("r", "retry-5xx"),
        )
        .attempts(2),
        case(
            "retry 5xx exhausted",
            get("/retry-5xx").header("x-test-fail", "500"),
            upstream(500, "r", "retry-5xx"),
        )
        .attempts(3),
        case(
            "retry 5xx: not on 4xx",
            get("/retry-5xx").header("x-test-fail", "404"),
            upstream(404, "r", "retry-5xx"),
        )
        .attempts(1),
        case(
            "retry 5xx covers resets",
            get("/retry-5xx").header("x-test-reset-times", "1"),
            ok("r", "retry-5xx"),
        )
        .attempts(2),
        case(
            "retriable-status-codes recovers",
            get("/retry-codes")
                .header("x-test-fail", "409")
                .header("x-test-fail-times", "2"),
            ok("r", "retry-codes"),
        )
        .attempts(3),
        case(
            "retriable-status-codes: not other codes",
            get("/retry-codes")
                .header("x-test-fail", "503")
                .header("x-test-fail-times", "1"),
            upstream(503, "r", "retry-codes"),
        )
        .attempts(1),
        case(
            "retriable-status-codes exhausted",
            get("/retry-codes").header("x-test-fail", "409"),
            upstream(409, "r", "retry-codes"),
        )
        .attempts(3),
        case(
            "retry reset recovers",
            get("/retry-reset").header("x-test-reset-times", "2"),
            ok("r", "retry-reset"),
        )
        .attempts(3),
        case(
            "retry reset exhausted",
            get("/retry-reset").header("x-test-reset-times", "9"),
            Expect::Local(503),
        )
        .attempts(3),
        case(
            "retry reset: not on 5xx",
            get("/retry-reset").header("x-test-fail", "503"),
            upstream(503, "r", "retry-reset"),
        )
        .attempts(1),
        case(
            "retry connect-failure",
            get("/retry-connect"),
            ok("a", "retry-connect"),
        )
        .attempts(1)
        .repeat(4),
        case(
            "per_try_timeout then a good try",
            get("/retry-per-try")
                .header("x-test-delay-ms", "1000")
                .header("x-test-delay-times", "1"),
            ok("r", "retry-per-try"),
        )
        .attempts(2),
        case(
            "per_try_timeout on every try: 504",
            get("/retry-per-try").header("x-test-delay-ms", "1000"),
            Expect::Local(504),
        )
        .attempts(2),
        case(
            "no retry policy: 5xx passed on",
            get("/no-retry").header("x-test-fail", "503"),
            upstream(503, "r", "no-retry"),
        )
        .attempts(1),
        case(
            "no retry policy: reset",
            get("/no-retry").header("x-test-reset-times", "1"),
            Expect::Local(503),
        )
        .attempts(1),
        // ---- local answers ----
        case("connect failure", get("/connect-fail"), Expect::Local(503)),
        case(
            "no healthy upstream: 503",
            get("/no-healthy"),
            Expect::Local(503),
        ),
        case(
            "unknown cluster: 503",
            get("/unknown-cluster"),
            Expect::Local(503),
        ),
        case("EDS cluster", get("/eds"), ok("c", "eds")),
        // ---- header mutations ----
        case(
            "request and response headers, client values present",
            get("/headers")
                .header("x-append", "client")
                .header("x-overwrite", "client")
                .header("x-if-absent", "client")
                .header("x-if-exists", "client")
                .header("x-level", "client")
                .header("x-drop-me", "1")
                .header("x-config-drop", "1")
                .header("x-vhost-drop", "1")
                .header("x-kept", "1"),
            ok("a", "headers"),
        ),
        case(
            "request and response headers, client values absent",
            get("/headers"),
            ok("a", "headers"),
        ),
        // ---- direct responses ----
        case(
            "direct_response with body",
            get("/direct"),
            Expect::Direct {
                status: 200,
                body: "direct hello\n",
            },
        ),
        case(
            "direct_response, exact path with query",
            get("/direct?x=1"),
            Expect::Direct {
                status: 200,
                body: "direct hello\n",
            },
        ),
        case(
            "direct_response 403",
            get("/direct-403"),
            Expect::Direct {
                status: 403,
                body: "forbidden",
            },
        ),
        case(
            "direct_response without body",
            get("/direct-empty"),
            Expect::Direct {
                status: 503,
                body: "",
            },
        ),
        // ---- redirects ----
        case(
            "redirect path",
            get("/redirect-path?a=1"),
            Expect::Redirect {
                status: 301,
                location: "http://main.test/landing?a=1",
            },
        ),
        case(
            "redirect https and host",
            get("/redirect-https/x?y=1").host("main.test:8080"),
            Expect::Redirect {
                status: 302,
                location: "https://secure.test/redirect-https/x?y=1",
            },
        ),
        case(
            "redirect prefix, port, strip query",
            get("/redirect-prefix/a/b?q=1"),
            Expect::Redirect {
                status: 307,
                location: "http://main.test:8443/moved/a/b",
            },
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Observations: what is compared of an answer

/// What the backend saw (from its echo).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    backend: String,
    method: String,
    path: String,
    host: Option<String>,
    /// Without the headers that legitimately differ (see `comparable_request_header`).
    headers: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Observation {
    status: u16,
    /// `Some` when the answer is a backend's.
    upstream: Option<Seen>,
    /// The body of an answer the proxy made itself, when compared (direct responses).
    body: Option<String>,
    /// Without the headers that legitimately differ (see `comparable_response_header`).
    response_headers: BTreeMap<String, Vec<String>>,
    /// Tries that reached a backend.
    attempts: u32,
}

/// Request headers compared as seen by the backend. `x-request-id` is compared by presence.
/// `content-length` is framing: Envoy adds `content-length: 0` to a POST without a body, ours
/// sends none, and both mean the same.
fn comparable_request_header(name: &str) -> bool {
    !(name.starts_with("x-envoy-")
        || name == "x-forwarded-for"
        || name == "x-test-key"
        || name == "content-length")
}

/// Response headers compared. Both proxies answer with their own `date`; Envoy adds
/// `server: envoy` and `x-envoy-*` headers; the length of a backend's echo depends on the
/// headers it got.
fn comparable_response_header(name: &str) -> bool {
    !(name.starts_with("x-envoy-")
        || name == "date"
        || name == "server"
        || name == "content-length")
}

fn observe(answer: &Answer, attempts: u32, compare_body: bool) -> Observation {
    let echo: Option<Value> = serde_json::from_slice(&answer.body)
        .ok()
        .filter(|v: &Value| v.get("backend").is_some());
    let upstream = echo.map(|v| {
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let mut headers = BTreeMap::new();
        for (name, values) in v["headers"].as_object().into_iter().flatten() {
            if !comparable_request_header(name) {
                continue;
            }
            let mut values: Vec<String> = values
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect();
            if name == "x-request-id" {
                values = vec!["<present>".into()];
            }
            headers.insert(name.clone(), values);
        }
        Seen {
            backend: text("backend"),
            method: text("method"),
            path: text("path"),
            host: v["host"].as_str().map(str::to_string),
            headers,
        }
    });
    let mut response_headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &answer.headers {
        if comparable_response_header(name.as_str()) {
            response_headers
                .entry(name.as_str().to_string())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
    }
    let body = (upstream.is_none() && compare_body)
        .then(|| String::from_utf8_lossy(&answer.body).into_owned());
    Observation {
        status: answer.status,
        upstream,
        body,
        response_headers,
        attempts,
    }
}

/// The fields in which two observations differ, one a line.
fn differences(e: &Observation, m: &Observation) -> String {
    let mut out = Vec::new();
    let mut field = |name: String, a: String, b: String| {
        if a != b {
            out.push(format!("  {name}: {a} / {b}"));
        }
    };
    field("status".into(), e.status.to_string(), m.status.to_string());
    field(
        "attempts".into(),
        e.attempts.to_string(),
        m.attempts.to_string(),
    );
    field(
        "body".into(),
        format!("{:?}", e.body),
        format!("{:?}", m.body),
    );
    match (&e.upstream, &m.upstream) {
        (Some(a), Some(b)) => {
            field("backend".into(), a.backend.clone(), b.backend.clone());
            field("method".into(), a.method.clone(), b.method.clone());
            field("path upstream".into(), a.path.clone(), b.path.clone());
            field(
                "Host upstream".into(),
                format!("{:?}", a.host),
                format!("{:?}", b.host),
            );
            headers_differences(&mut field, "request header", &a.headers, &b.headers);
        }
        (a, b) => field(
            "answered by".into(),
            a.as_ref().map_or("the proxy".into(), |s| s.backend.clone()),
            b.as_ref().map_or("the proxy".into(), |s| s.backend.clone()),
        ),
    }
    headers_differences(
        &mut field,
        "response header",
        &e.response_headers,
        &m.response_headers,
    );
    out.join("\n")
}

fn headers_differences(
    field: &mut impl FnMut(String, String, String),
    what: &str,
    a: &BTreeMap<String, Vec<String>>,
    b: &BTreeMap<String, Vec<String>>,
) {
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for name in names {
        field(
            format!("{what} {name}"),
            format!("{:?}", a.get(name)),
            format!("{:?}", b.get(name)),
        );
    }
}

/// Whether `o` is the answer `expect` describes; `Err` says how it is not.
fn check(expect: &Expect, case: &Case, o: &Observation) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut want = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    match *expect {
        Expect::Upstream {
            status,
            backend,
            route,
        } => {
            want(o.status == status, format!("status {status}"));
            match &o.upstream {
                Some(seen) => {
                    want(seen.backend == backend, format!("backend {backend}"));
                    want(
                        seen.headers.get("x-route") == Some(&vec![route.to_string()]),
                        format!("route {route}"),
                    );
                    if let Some(path) = case.path_seen {
                        want(seen.path == path, format!("path {path:?} upstream"));
                    }
                    if let Some(host) = case.host_seen {
                        want(
                            seen.host.as_deref() == Some(host),
                            format!("Host {host:?} upstream"),
                        );
                    }
                }
                None => want(false, format!("an answer from backend {backend}")),
            }
        }
        Expect::Local(status) => {
            want(o.status == status, format!("status {status}"));
            want(o.upstream.is_none(), "a local answer".into());
        }
        Expect::Direct { status, body } => {
            want(o.status == status, format!("status {status}"));
            want(o.body.as_deref() == Some(body), format!("body {body:?}"));
        }
        Expect::Redirect { status, location } => {
            want(o.status == status, format!("status {status}"));
            want(
                o.response_headers.get("location") == Some(&vec![location.to_string()]),
                format!("location {location:?}"),
            );
        }
    }
    if let Some(n) = case.attempts {
        want(o.attempts == n, format!("{n} tries upstream"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("expected {}", problems.join(", ")))
    }
}

// ---------------------------------------------------------------------------------------------
// Running the table

struct Targets {
    envoy: SocketAddr,
    mesh: SocketAddr,
    attempts: Attempts,
}

async fn ask(
    t: &Targets,
    addr: SocketAddr,
    req: &Req,
    key: &str,
    body: bool,
) -> (Answer, Observation) {
    let answer = match send_once(addr, req.build(key)).await {
        Ok(a) => a,
        Err(e) => Answer {
            status: 0,
            headers: http::HeaderMap::new(),
            body: Bytes::from(format!("request failed: {e}")),
        },
    };
    let observation = observe(&answer, t.attempts.get(key), body);
    (answer, observation)
}

/// Runs one case; `Err` describes the failure with both answers.
async fn run_case(t: &Targets, case: &Case, mode: &str) -> Result<(), String> {
    let compare_body = matches!(case.envoy, Expect::Direct { .. } | Expect::Local(_));
    for round in 0..case.repeat {
        let key_e = format!("{mode}/{}/{round}/envoy", case.name);
        let key_m = format!("{mode}/{}/{round}/mesh", case.name);
        let ((answer_e, envoy), (answer_m, mesh)) = tokio::join!(
            ask(t, t.envoy, &case.request, &key_e, compare_body),
            ask(t, t.mesh, &case.request, &key_m, compare_body),
        );
        let report = |what: String| {
            format!(
                "case {:?} ({:?}): {what}\n differences (envoy / mesh):\n{}\n envoy answered:\n{answer_e}\n mesh answered:\n{answer_m}",
                case.name,
                case.request,
                differences(&envoy, &mesh)
            )
        };
        check(&case.envoy, case, &envoy).map_err(|e| report(format!("Envoy: {e}")))?;
        if envoy != mesh {
            return Err(report("the answers differ".into()));
        }
    }
    Ok(())
}

/// Runs every case, one after the other: Envoy allows 3 retries at once per cluster (the
/// default `max_retries` circuit breaker; see `compare_concurrent_retries`), so retry cases
/// running together would see Envoy give up retries. Then fails with every failed case.
async fn run_table(t: &Targets, mode: &str) {
    let cases = cases();
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(names.insert(c.name), "duplicate case name {:?}", c.name);
    }
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = run_case(t, case, mode).await {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{mode}: {} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    eprintln!(
        "{mode}: {} cases: same answers from Envoy and the mesh proxy",
        cases.len()
    );
}

/// A known difference outside the table: Envoy's default circuit breakers allow 3 retries
/// in flight per cluster and answer the others with the failed try's response
/// (`upstream_rq_retry_overflow`); ours has no retry budget and retries them all. 8 requests
/// at once, each failing its first try with 503 after 300 ms and then succeeding (300 ms).
async fn compare_concurrent_retries(t: &Arc<Targets>, mode: &str) {
    const REQUESTS: usize = 8;
    let mut set = JoinSet::new();
    for i in 0..REQUESTS {
        let t = Arc::clone(t);
        let mode = mode.to_string();
        set.spawn(async move {
            let req = get("/retry-5xx")
                .header("x-test-fail", "503")
                .header("x-test-fail-times", "1")
                .header("x-test-delay-ms", "300");
            let (e, m) = tokio::join!(
                send_once(t.envoy, req.build(&format!("{mode}/concurrent/{i}/envoy"))),
                send_once(t.mesh, req.build(&format!("{mode}/concurrent/{i}/mesh"))),
            );
            (e.unwrap().status, m.unwrap().status)
        });
    }
    let mut statuses = Vec::new();
    while let Some(done) = set.join_next().await {
        statuses.push(done.unwrap());
    }
    let retried = |f: fn(&(u16, u16)) -> u16| statuses.iter().filter(|s| f(s) == 200).count();
    let (envoy, mesh) = (retried(|s| s.0), retried(|s| s.1));
    assert!(
        (1..=3).contains(&envoy) && mesh == REQUESTS,
        "{mode}: known difference (retry circuit breaker) no longer as documented: of {REQUESTS} \
         requests needing a retry at once, Envoy expected to retry 1 to 3 and the mesh all; \
         got Envoy {envoy}, mesh {mesh}: {statuses:?} (envoy, mesh)"
    );
    eprintln!(
        "{mode}: {REQUESTS} concurrent requests needing a retry: Envoy retried {envoy} (max_retries 3), the mesh {mesh}"
    );
}

/// Sends `WEIGHTED_REQUESTS` to `/weighted` over a few connections; counts per backend.
/// Every answer must carry the headers of the weighted cluster that served it.
async fn weighted_counts(addr: SocketAddr) -> BTreeMap<String, usize> {
    const CONNECTIONS: usize = 8;
    let mut tasks = JoinSet::new();
    for _ in 0..CONNECTIONS {
        tasks.spawn(async move {
            let mut conn = Conn::open(addr).await.unwrap();
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for _ in 0..WEIGHTED_REQUESTS / CONNECTIONS {
                let answer = conn.send(get("/weighted").build("weighted")).await.unwrap();
                assert_eq!(answer.status, 200, "{answer}");
                let o = observe(&answer, 0, false);
                let seen = o.upstream.unwrap();
                assert_eq!(
                    seen.headers.get("x-weighted"),
                    Some(&vec![seen.backend.clone()]),
                    "{answer}"
                );
                assert_eq!(
                    o.response_headers.get("x-weighted"),
                    Some(&vec![seen.backend.clone()]),
                    "{answer}"
                );
                *counts.entry(seen.backend).or_default() += 1;
            }
            counts
        });
    }
    let mut total = BTreeMap::new();
    while let Some(counts) = tasks.join_next().await {
        for (k, v) in counts.unwrap() {
            *total.entry(k).or_default() += v;
        }
    }
    total
}

async fn compare_weighted(t: &Targets, mode: &str) {
    let (envoy, mesh) = tokio::join!(weighted_counts(t.envoy), weighted_counts(t.mesh));
    let n = (WEIGHTED_REQUESTS / 8 * 8) as f64;
    let share =
        |counts: &BTreeMap<String, usize>, k: &str| counts.get(k).copied().unwrap_or(0) as f64 / n;
    // 2000 requests: one standard deviation of a share is at most 1.1 points.
    for (name, weight) in [("a", 0.6), ("b", 0.3), ("c", 0.1)] {
        let (e, m) = (share(&envoy, name), share(&mesh, name));
        assert!(
            (e - weight).abs() < 0.05 && (m - weight).abs() < 0.05 && (e - m).abs() < 0.06,
            "{mode}: weighted cluster {name} (weight {weight}): Envoy {e:.3}, mesh {m:.3}\n envoy: {envoy:?}\n mesh: {mesh:?}"
        );
    }
    eprintln!("{mode}: weighted clusters 60/30/10: Envoy {envoy:?}, mesh {mesh:?}");
}

// ---------------------------------------------------------------------------------------------
// Setting up: backends, control plane, Envoy, our proxy

/// Everything one test function runs against; stops it all when dropped.
struct Setup {
    targets: Arc<Targets>,
    pair: Pair,
}

async fn setup(mode: XdsMode) -> Option<Setup> {
    let attempts = Attempts::default();
    let addrs = Addrs {
        a: backend::spawn("a", &attempts).await,
        b: backend::spawn("b", &attempts).await,
        c: backend::spawn("c", &attempts).await,
        r1: backend::spawn("r", &attempts).await,
        r2: backend::spawn("r", &attempts).await,
        dead: backend::closed_port().await,
    };
    // The same resources for both nodes but the listener's port.
    let envoy_port = free_port();
    let mut pair = Pair::start(
        mode,
        [
            ("envoy", resources::snapshot(envoy_port, &addrs)),
            ("mesh", resources::snapshot(0, &addrs)),
        ],
    )
    .await?;

    // Both ready: the listener answers, through a STATIC and the EDS cluster.
    let deadline = Instant::now() + STARTUP;
    let mesh_addr = pair.mesh_listener(LISTENER, STARTUP).await;
    let envoy_addr = SocketAddr::from(([127, 0, 0, 1], envoy_port));
    for (who, addr) in [("mesh", mesh_addr), ("envoy", envoy_addr)] {
        for path in ["/hello", "/eds"] {
            let probe = async || match send_once(addr, get(path).build("probe")).await {
                Ok(answer) if answer.status == 200 => Ok(()),
                answer => Err(format!("{who} never answered {path}: {answer:?}")),
            };
            pair.envoy.wait_until(deadline, probe).await;
        }
    }
    Some(Setup {
        targets: Arc::new(Targets {
            envoy: envoy_addr,
            mesh: mesh_addr,
            attempts,
        }),
        pair,
    })
}

async fn differential(mode: XdsMode, name: &'static str) {
    let started = Instant::now();
    let Some(mut setup) = setup(mode).await else {
        return;
    };
    eprintln!("{name}: both proxies ready after {:?}", started.elapsed());

    run_table(&setup.targets, name).await;
    let table = started.elapsed();
    compare_weighted(&setup.targets, name).await;
    compare_concurrent_retries(&setup.targets, name).await;
    setup.pair.envoy.assert_running();
    eprintln!(
        "{name}: done in {:?} (startup and table: {table:?})",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_routing_matches_envoy() {
    differential(XdsMode::Sotw, "sotw").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_routing_matches_envoy() {
    differential(XdsMode::Delta, "delta").await;
}
