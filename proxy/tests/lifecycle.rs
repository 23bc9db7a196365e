//! The proxy's lifecycle: the admin endpoints operators drive it with (compared with a stock
//! Envoy's admin where the behaviour is the same), listener drains, and the connection limit
//! shedding connections that have not sent a request.
#![allow(clippy::unwrap_used)] // test code

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use mesh_proxy::admin::{AdminOptions, LogLevels};
use mesh_proxy::config::ProxyConfig;
use mesh_proxy::runtime::{ProxyHandle, ProxyOptions};
use support::envoy::{Envoy, envoy_bin, free_port};
use support::harness::Harness;
use support::xds::{direct, hcm, hcm_filter, loopback, route_everything};

const INBOUND: i32 = 1;
const OUTBOUND: i32 = 2;

/// An HTTP listener answering every request with a direct 200 `hi\n`.
fn listener(name: &str, port: u16, direction: i32) -> Listener {
    let routes = route_everything(name, direct(200, Some("hi\n")));
    let routes = http_connection_manager::RouteSpecifier::RouteConfig(routes);
    Listener {
        traffic_direction: direction,
        ..support::xds::listener(name, loopback(port), vec![hcm_filter(hcm(name, routes))])
    }
}

/// The same listeners, as a stock Envoy's static bootstrap.
fn envoy_bootstrap(admin: u16, inbound: u16, outbound: u16) -> String {
    let listener = |name: &str, port: u16, direction: &str| {
        format!(
            r#"
  - name: {name}
    traffic_direction: {direction}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          route_config:
            name: {name}
            virtual_hosts:
            - name: {name}
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                direct_response: {{status: 200, body: {{inline_string: "hi\n"}}}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}"#
        )
    };
    format!(
        "node: {{id: envoy, cluster: envoy}}\nadmin:\n  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}\nstatic_resources:\n  listeners:{}{}\n",
        listener("inbound", inbound, "INBOUND"),
        listener("outbound", outbound, "OUTBOUND"),
    )
}

/// A stock Envoy with the two listeners; `None` (skipped) without one, outside CI.
async fn start_envoy() -> Option<(Envoy, SocketAddr, SocketAddr, SocketAddr)> {
    let bin = envoy_bin()?;
    let (admin, inbound, outbound) = (free_port(), free_port(), free_port());
    let envoy = Envoy::start(
        &bin,
        &envoy_bootstrap(admin, inbound, outbound),
        admin,
        &["--drain-time-s", "1"],
    );
    let admin = envoy.admin();
    eventually("envoy ready", || async move {
        get(admin, "/ready").await.is_some_and(|(s, _, _)| s == 200)
    })
    .await;
    Some((
        envoy,
        admin,
        ([127, 0, 0, 1], inbound).into(),
        ([127, 0, 0, 1], outbound).into(),
    ))
}

#[derive(Default)]
struct Recorded(Mutex<Vec<String>>);

impl LogLevels for Recorded {
    fn apply(&self, directives: &str) -> Result<(), String> {
        self.0.lock().unwrap().push(directives.to_owned());
        Ok(())
    }
}

/// Our proxy, in process, with the same listeners and its admin API, which records the log
/// levels it is told to set.
async fn start_ours(listeners: Vec<Listener>, options: ProxyOptions) -> (Harness, Arc<Recorded>) {
    let mut config = ProxyConfig::default();
    for l in listeners {
        let l = mesh_proxy::xds::convert::listener(l).unwrap();
        config.listeners.insert(l.name.clone(), Arc::new(l));
    }
    let levels = Arc::new(Recorded::default());
    let admin = AdminOptions {
        node_id: "mesh".into(),
        node_cluster: "mesh".into(),
        log_levels: Some(Arc::clone(&levels) as Arc<dyn LogLevels>),
        ..Default::default()
    };
    (Harness::start_with(config, options, admin).await, levels)
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// One request on a fresh connection: status, body, `connection` header.
async fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
) -> Option<(u16, String, Option<String>)> {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Full<Bytes>>();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .ok()?
        .ok()?;
    let status = response.status().as_u16();
    let connection = response
        .headers()
        .get("connection")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((
        status,
        String::from_utf8_lossy(&body).into_owned(),
        connection,
    ))
}

async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String, Option<String>)> {
    request("GET", addr, path).await
}

async fn post(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, body, _) = request("POST", addr, path)
        .await
        .unwrap_or_else(|| panic!("POST {path} to {addr} failed"));
    (status, body)
}

async fn json(addr: SocketAddr, path: &str) -> Value {
    let (status, body, _) = get(addr, path).await.unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// `/listeners` with the ports blanked (the two proxies listen on different ones).
async fn listeners_text(admin: SocketAddr) -> Vec<String> {
    let (status, body, _) = get(admin, "/listeners").await.unwrap();
    assert_eq!(status, 200);
    let mut lines: Vec<String> = body
        .lines()
        .map(|l| {
            let (name, addr) = l.split_once("::").unwrap();
            let addr: SocketAddr = addr.parse().unwrap();
            format!("{name}::{}:PORT", addr.ip())
        })
        .collect();
    lines.sort();
    lines
}

fn blank_ports(mut v: Value) -> Value {
    for status in v["listener_statuses"].as_array_mut().unwrap() {
        let port = &mut status["local_address"]["socket_address"]["port_value"];
        assert!(port.as_u64().is_some_and(|p| p > 0), "{port}");
        *port = Value::Null;
    }
    v
}

/// Whether a listener accepts a connection and answers a request.
async fn serves(addr: SocketAddr) -> bool {
    get(addr, "/").await.is_some_and(|(s, _, _)| s == 200)
}

const POST_ONLY: &[&str] = &[
    "/logging",
    "/logging?level=debug",
    "/drain_listeners",
    "/healthcheck/fail",
    "/healthcheck/ok",
    "/quitquitquit",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_answers_like_envoys() {
    let Some((mut envoy, envoy_admin, envoy_in, envoy_out)) = start_envoy().await else {
        return;
    };
    let (ours, levels) = start_ours(
        vec![
            listener("inbound", 0, INBOUND),
            listener("outbound", 0, OUTBOUND),
        ],
        ProxyOptions::default(),
    )
    .await;
    let our_in = ours.handle.listener_addr("inbound").unwrap();
    let our_out = ours.handle.listener_addr("outbound").unwrap();
    let both = [
        (envoy_admin, envoy_in, envoy_out),
        (ours.admin, our_in, our_out),
    ];

    // Reads answer any method; mutations only POST, with Envoy's 405 and words.
    let mut seen = Vec::new();
    for (admin, _, _) in both {
        let mut answers = Vec::new();
        for path in ["/ready", "/server_info", "/listeners", "/help"] {
            for method in ["GET", "POST"] {
                let (status, _, _) = request(method, admin, path).await.unwrap();
                answers.push(format!("{method} {path}: {status}"));
            }
        }
        for path in POST_ONLY {
            for method in ["GET", "PUT"] {
                let (status, body, _) = request(method, admin, path).await.unwrap();
                answers.push(format!("{method} {path}: {status} {body}"));
            }
        }
        let (status, body, _) = get(admin, "/no/such/page").await.unwrap();
        let first_line = body.lines().next().unwrap_or_default().to_owned();
        answers.push(format!("GET /no/such/page: {status} {first_line}"));
        seen.push(answers);
    }
    assert_eq!(seen[0], seen[1]);
    assert!(
        seen[1]
            .contains(&"GET /quitquitquit: 405 Method GET not allowed, POST required.".to_owned())
    );
    assert!(
        seen[1].contains(&"GET /no/such/page: 404 invalid path. admin commands are:".to_owned())
    );

    // Every POST-only command of ours is POST-only in Envoy's own list, and says so.
    let (_, envoy_help, _) = get(envoy_admin, "/help").await.unwrap();
    let (_, our_help, _) = get(ours.admin, "/help").await.unwrap();
    assert!(our_help.starts_with("admin commands are:\n"));
    for line in our_help.lines().filter(|l| l.starts_with("  /")) {
        let command = line.trim().split(':').next().unwrap();
        assert!(
            envoy_help
                .lines()
                .any(|l| l.trim().starts_with(&format!("{command}:"))),
            "Envoy's /help has no {command:?}"
        );
    }

    // /server_info: Envoy's fields, and its state.
    for (admin, _, _) in both {
        let info = json(admin, "/server_info").await;
        for field in [
            "version",
            "state",
            "uptime_current_epoch",
            "uptime_all_epochs",
            "hot_restart_version",
            "command_line_options",
            "node",
        ] {
            assert!(info.get(field).is_some(), "{admin}: no {field} in {info}");
        }
        assert_eq!(info["state"], "LIVE");
        assert!(
            info["uptime_current_epoch"]
                .as_str()
                .unwrap()
                .ends_with('s')
        );
        assert!(info["node"]["id"].is_string());
    }

    // /listeners: `name::address` lines and the JSON shape.
    assert_eq!(
        listeners_text(envoy_admin).await,
        listeners_text(ours.admin).await
    );
    assert_eq!(
        blank_ports(json(envoy_admin, "/listeners?format=json").await),
        blank_ports(json(ours.admin, "/listeners?format=json").await),
    );

    // /healthcheck/fail: /ready and the state say DRAINING, listeners keep accepting and
    // close each HTTP/1.1 connection after its response; /healthcheck/ok undoes it.
    let mut seen = Vec::new();
    for (admin, inbound, _) in both {
        let mut answers = Vec::new();
        answers.push(format!("{:?}", post(admin, "/healthcheck/fail").await));
        answers.push(format!("{:?}", get(admin, "/ready").await));
        answers.push(json(admin, "/server_info").await["state"].to_string());
        // Ours swaps the listener's connections over to draining on the runtime's loop.
        eventually("responses with connection: close", || async move {
            get(inbound, "/")
                .await
                .is_some_and(|(_, _, c)| c.as_deref() == Some("close"))
        })
        .await;
        answers.push(format!("{:?}", post(admin, "/healthcheck/ok").await));
        answers.push(format!("{:?}", get(admin, "/ready").await));
        eventually("responses without connection: close", || async move {
            get(inbound, "/")
                .await
                .is_some_and(|(s, _, c)| s == 200 && c.is_none())
        })
        .await;
        seen.push(answers);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(
        seen[1],
        [
            "(200, \"OK\\n\")",
            "Some((503, \"DRAINING\\n\", None))",
            "\"DRAINING\"",
            "(200, \"OK\\n\")",
            "Some((200, \"LIVE\\n\", None))",
        ]
    );

    // /logging: the list, one logger, all of them, and Envoy's errors.
    let mut seen = Vec::new();
    for (admin, _, _) in both {
        // The same start: Envoy's loggers begin at its --log-level.
        post(admin, "/logging?level=info").await;
        let mut answers = Vec::new();
        for path in [
            "/logging",
            "/logging?upstream=debug",
            "/logging?level=info",
            "/logging?paths=upstream:debug,http:warning",
            "/logging?level=loud",
            "/logging?nosuch=debug",
            "/logging?paths=upstream",
            "/logging?level=info&upstream=debug",
        ] {
            let (status, body) = post(admin, path).await;
            let first = body.lines().next().unwrap_or_default().to_owned();
            let upstream = body
                .lines()
                .find(|l| l.trim_start().starts_with("upstream:"))
                .unwrap_or_default()
                .to_owned();
            answers.push(format!("{path}: {status} {first} [{upstream}]"));
        }
        post(admin, "/logging?level=info").await;
        seen.push(answers);
    }
    assert_eq!(seen[0], seen[1]);
    let applied = levels.0.lock().unwrap().clone();
    assert!(
        applied.iter().any(
            |d| d.contains("mesh_proxy::upstream=debug") && d.contains("mesh_proxy::http=warn")
        ),
        "{applied:?}"
    );

    // /drain_listeners?inboundonly: the inbound listener stops at once (no graceful period),
    // the outbound one keeps serving, and both are still listed.
    for (admin, inbound, outbound) in both {
        assert_eq!(
            post(admin, "/drain_listeners?inboundonly").await,
            (200, "OK\n".to_owned())
        );
        eventually("the inbound listener to stop", || async move {
            TcpStream::connect(inbound).await.is_err()
        })
        .await;
        assert!(serves(outbound).await);
        assert_eq!(listeners_text(admin).await.len(), 2);
    }

    // /quitquitquit: Envoy exits; ours asks the process to (main drains, then exits).
    assert_eq!(
        post(envoy_admin, "/quitquitquit").await,
        (200, "OK\n".to_owned())
    );
    assert_eq!(
        post(ours.admin, "/quitquitquit").await,
        (200, "OK\n".to_owned())
    );
    tokio::time::timeout(Duration::from_secs(5), ours.handle.exit_requested())
        .await
        .unwrap();
    let exited = tokio::task::spawn_blocking(move || envoy.process.child.wait().unwrap())
        .await
        .unwrap();
    assert!(exited.success(), "{exited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_drain_listeners_keeps_accepting_for_the_drain_time() {
    let (ours, _) = start_ours(
        vec![
            listener("inbound", 0, INBOUND),
            listener("outbound", 0, OUTBOUND),
        ],
        ProxyOptions {
            drain_timeout: Duration::from_millis(600),
            ..ProxyOptions::default()
        },
    )
    .await;
    let inbound = ours.handle.listener_addr("inbound").unwrap();
    let outbound = ours.handle.listener_addr("outbound").unwrap();

    // skip_exit: connections drain, the listeners never stop.
    assert_eq!(
        post(ours.admin, "/drain_listeners?inboundonly&skip_exit").await,
        (200, "OK\n".to_owned())
    );
    eventually("inbound responses with connection: close", || async move {
        get(inbound, "/")
            .await
            .is_some_and(|(_, _, c)| c.as_deref() == Some("close"))
    })
    .await;
    assert_eq!(get(outbound, "/").await.unwrap().2, None);

    // graceful: everything drains, and stops once the drain time is over.
    let started = tokio::time::Instant::now();
    assert_eq!(
        post(ours.admin, "/drain_listeners?graceful").await,
        (200, "OK\n".to_owned())
    );
    eventually("outbound responses with connection: close", || async move {
        get(outbound, "/")
            .await
            .is_some_and(|(_, _, c)| c.as_deref() == Some("close"))
    })
    .await;
    eventually("both listeners to stop", || async move {
        TcpStream::connect(inbound).await.is_err() && TcpStream::connect(outbound).await.is_err()
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(600));
    // The state is unchanged, as in Envoy: draining listeners is not a failed health check.
    assert_eq!(json(ours.admin, "/server_info").await["state"], "LIVE");
}

fn stat_name(addr: SocketAddr) -> String {
    mesh_proxy::metrics::listener_stat_name(&addr)
}

/// Opens a connection that sends part of a request head and waits until the proxy has
/// accepted it.
async fn partial_head(addr: SocketAddr, handle: &ProxyHandle, accepted: u64) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    let stat = format!(
        "listener.{}.downstream_cx_total: {accepted}",
        stat_name(addr)
    );
    eventually("the connection to be accepted", || {
        let stats = handle.stats().render_plain();
        let found = stats.contains(&stat);
        async move { found }
    })
    .await;
    stream
}

/// Whether the proxy closed `stream` (EOF or reset), waiting a little for it.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_partial_heads_make_room_oldest_first() {
    let (ours, _) = start_ours(
        vec![listener("inbound", 0, INBOUND)],
        ProxyOptions {
            max_connections: 4,
            ..ProxyOptions::default()
        },
    )
    .await;
    let addr = ours.handle.listener_addr("inbound").unwrap();

    // One client has finished a request and keeps its connection: never shed.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    // Another holds every other slot with partial heads.
    let mut partial = Vec::new();
    for i in 0..3 {
        partial.push(partial_head(addr, &ours.handle, 2 + i).await);
    }

    // New clients are served, each in the place of the oldest partial head, and keep their
    // connections: the limit stays reached.
    let mut served = Vec::new();
    for i in 0..3 {
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("a new client is served")
            .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        served.push(client);
        assert!(
            closed(&mut partial[i]).await,
            "partial head {i} was not closed"
        );
        for later in &mut partial[i + 1..] {
            let mut byte = [0u8; 1];
            assert!(
                tokio::time::timeout(Duration::from_millis(50), later.read(&mut byte))
                    .await
                    .is_err(),
                "a newer partial head was closed first"
            );
        }
    }
    let stats = ours.handle.stats().render_plain();
    assert!(
        stats.contains(&format!(
            "listener.{}.downstream_cx_shed: 3",
            stat_name(addr)
        )),
        "{stats}"
    );

    // Only connections that have sent a request are left: a new one is refused.
    assert!(get(addr, "/").await.is_none());
    let stats = ours.handle.stats().render_plain();
    assert!(
        stats.contains(&format!(
            "listener.{}.downstream_global_cx_overflow: 1",
            stat_name(addr)
        )),
        "{stats}"
    );
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(50), kept.read(&mut byte))
            .await
            .is_err(),
        "a connection that had sent a request was closed"
    );
    drop(served);
}
