#![allow(clippy::unwrap_used)] // test code
//! `mesh status` tells the truth: a proxy whose node id nothing is registered for, a proxy
//! whose configuration cannot be translated, a proxy that NACKs (its listener's port is
//! taken), and a config entry field the mesh does not honour, each with its reason in the
//! plain table. With our proxy and with a stock Envoy, against our registry and against a
//! stand-in for a real Consul (which holds what our registry refuses at write).

use bytes::Bytes;
use http_body_util::Full;
use mesh_tests::scenario::{Sidecar, start_envoy, start_mesh_proxy};
use mesh_tests::{
    Http, MeshProcess, RegistryProcess, envoy_bin, eventually, free_port, mesh_bin,
    start_control_plane,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a state may take to show.
const PATIENCE: Duration = Duration::from_secs(20);
/// What our proxy logs, once, when its configuration is empty.
const NOTHING_REGISTERED: &str = "nothing is registered for it";

fn control_plane_on(registry: SocketAddr, xds: u16, admin: u16) -> MeshProcess {
    let (registry, xds, admin) = (
        format!("http://{registry}"),
        format!("127.0.0.1:{xds}"),
        format!("127.0.0.1:{admin}"),
    );
    MeshProcess::start(
        "control-plane",
        &[
            "control-plane",
            "--registry-url",
            &registry,
            "--xds-addr",
            &xds,
            "--admin-addr",
            &admin,
        ],
        &["xds", "admin"],
    )
}

async fn status_json(http: &Http, admin: SocketAddr) -> Value {
    http.get(&format!("http://{admin}/status")).await.json()
}

fn proxy<'a>(status: &'a Value, node: &str) -> Option<&'a Value> {
    status["proxies"]
        .as_array()?
        .iter()
        .find(|p| p["node_id"] == node)
}

/// Waits until `node` shows `state` in `/status`; returns that proxy's entry.
async fn until_state(http: &Http, admin: SocketAddr, node: &str, state: &str) -> Value {
    let mut last = Value::Null;
    let reached = eventually(PATIENCE, async || {
        last = status_json(http, admin).await;
        proxy(&last, node).is_some_and(|p| p["state"] == state)
    })
    .await;
    assert!(reached, "{node} never {state}: {last:#}");
    proxy(&last, node).cloned().unwrap()
}

/// `mesh status` as the operator runs it.
fn mesh_status(admin: SocketAddr) -> String {
    let out = std::process::Command::new(mesh_bin())
        .args(["status", "--control-plane-url", &format!("http://{admin}")])
        .output()
        .expect("mesh status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `node`'s STATE and REASON cells, found under their headings (every column but the last is
/// padded to its width).
fn state_and_reason(table: &str, node: &str) -> (String, String) {
    let header = table.lines().next().unwrap_or_default();
    let (state_at, reason_at) = (
        header.find("STATE").unwrap(),
        header.find("REASON").unwrap(),
    );
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("{node} ")))
        .unwrap_or_else(|| panic!("no row for {node}:\n{table}"));
    let cell = |from: usize, to: usize| {
        row.get(from..to.min(row.len()))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    (cell(state_at, reason_at), cell(reason_at, row.len()))
}

fn sidecar(id: &str, port: u16) -> Value {
    json!({
        "Name": id, "ID": id, "Port": 9,
        "Connect": {"SidecarService": {"Port": port, "Address": "127.0.0.1"}},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_nothing_is_registered_for_is_unregistered_until_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(&dir.path().join("registry"));
    let (xds_port, admin_port) = (free_port(), free_port());
    let mut control_plane = control_plane_on(registry.addr, xds_port, admin_port);
    let (xds, admin) = (control_plane.addr("xds"), control_plane.addr("admin"));
    let http = Http::default();

    let ours = start_mesh_proxy("ghost-sidecar-proxy", xds, false);
    let Sidecar::Mesh(ours_process, _) = &ours else {
        unreachable!()
    };
    let envoy =
        envoy_bin().map(|bin| start_envoy(&bin, "spook-sidecar-proxy", xds, true, dir.path()));
    let mut nodes = vec!["ghost-sidecar-proxy"];
    if envoy.is_some() {
        nodes.push("spook-sidecar-proxy");
    }

    for node in &nodes {
        let p = until_state(&http, admin, node, "UNREGISTERED").await;
        let reason = format!(
            "no connect-proxy service with ID \"{node}\" is registered; the proxy gets an empty configuration"
        );
        assert_eq!(p["reasons"], json!([reason]), "{p:#}");
    }
    let table = mesh_status(admin);
    for node in &nodes {
        let (state, reason) = state_and_reason(&table, node);
        assert_eq!(state, "UNREGISTERED", "{table}");
        assert_eq!(
            reason,
            format!(
                "no connect-proxy service with ID \"{node}\" is registered; the proxy gets an empty configuration"
            ),
            "{table}"
        );
    }
    // A stock Envoy takes the empty configuration and runs.
    if let Some(envoy) = &envoy {
        let mut ready = (0, String::new());
        let live = eventually(PATIENCE, async || {
            let r = http.get(&envoy.admin_url("/ready")).await;
            ready = (r.status, r.text());
            ready == (200, "LIVE\n".to_string())
        })
        .await;
        assert!(live, "Envoy: {ready:?}");
    }
    assert!(
        eventually(PATIENCE, async || ours_process
            .log_lines(NOTHING_REGISTERED)
            .len()
            == 1)
        .await,
        "our proxy did not say nothing is registered for it"
    );

    // A new control plane, the same empty configuration again: not said a second time.
    control_plane.kill9();
    let control_plane = control_plane_on(registry.addr, xds_port, admin_port);
    let admin = control_plane.addr("admin");
    for node in &nodes {
        until_state(&http, admin, node, "UNREGISTERED").await;
    }

    // Registered: served, and in sync.
    for (service, port) in [("ghost", free_port()), ("spook", free_port())] {
        let r = http
            .put(
                &registry.url("/v1/agent/service/register"),
                sidecar(service, port).to_string(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for node in &nodes {
        let p = until_state(&http, admin, node, "SYNCED").await;
        assert_eq!(p["reasons"], json!([]), "{p:#}");
    }
    // Everything the proxy logged before starting its listener is in: one line, not two.
    assert!(
        eventually(PATIENCE, async || !ours_process
            .log_lines("listener started")
            .is_empty())
        .await
    );
    assert_eq!(
        ours_process.log_lines(NOTHING_REGISTERED).len(),
        1,
        "{:?}",
        ours_process.log_lines(NOTHING_REGISTERED)
    );
    drop(envoy);
}

// ---- a stand-in for a real Consul ----

/// Answers Consul's read endpoints from `data` (path -> JSON); a blocking query (`index`
/// set) on unchanged data waits, as Consul does, instead of answering at once.
async fn fake_consul(data: BTreeMap<String, Value>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let data = Arc::new(data);
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let data = Arc::clone(&data);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let data = Arc::clone(&data);
                    async move {
                        let blocking = req
                            .uri()
                            .query()
                            .unwrap_or_default()
                            .split('&')
                            .any(|kv| kv.starts_with("index=") && kv != "index=0");
                        if blocking {
                            tokio::time::sleep(Duration::from_secs(300)).await;
                        }
                        let body = data.get(req.uri().path()).cloned().unwrap_or(json!([]));
                        let response = hyper::Response::builder()
                            .header("content-type", "application/json")
                            .header("x-consul-index", "1")
                            .body(Full::new(Bytes::from(body.to_string())))
                            .unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    addr
}

fn health_entry(service: Value) -> Value {
    json!([{"Node": {"Node": "node-1", "Address": "127.0.0.1", "Datacenter": "dc1"},
            "Service": service, "Checks": []}])
}

fn instance(name: &str, port: u16) -> Value {
    health_entry(json!({"ID": name, "Service": name, "Port": port, "Address": "127.0.0.1"}))
}

fn sidecar_entry(of: &str, port: u16, upstreams: Value) -> Value {
    let id = format!("{of}-sidecar-proxy");
    health_entry(json!({
        "Kind": "connect-proxy", "ID": id, "Service": id, "Port": port,
        "Address": "127.0.0.1",
        "Proxy": {"DestinationServiceName": of, "DestinationServiceID": of,
                  "LocalServicePort": 9, "Upstreams": upstreams},
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translation_errors_nacks_and_fields_not_honoured_are_in_the_plain_table() {
    let dir = tempfile::tempdir().unwrap();
    // db's and cache's public ports are taken.
    let taken_db = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_cache = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let db_port = taken_db.local_addr().unwrap().port();
    let cache_port = taken_cache.local_addr().unwrap().port();
    let services = ["web", "api", "api2", "db", "cache"]
        .into_iter()
        .flat_map(|s| [s.to_string(), format!("{s}-sidecar-proxy")])
        .map(|s| (s, json!([])))
        .collect::<serde_json::Map<_, _>>();
    let data = BTreeMap::from([
        ("/v1/catalog/services".to_string(), Value::Object(services)),
        ("/v1/health/service/web".into(), instance("web", 9)),
        ("/v1/health/service/api".into(), instance("api", 9)),
        ("/v1/health/service/db".into(), instance("db", 9)),
        ("/v1/health/service/cache".into(), instance("cache", 9)),
        (
            "/v1/health/service/web-sidecar-proxy".into(),
            sidecar_entry(
                "web",
                free_port(),
                json!([{"DestinationName": "api", "LocalBindPort": free_port()}]),
            ),
        ),
        (
            "/v1/health/service/db-sidecar-proxy".into(),
            sidecar_entry("db", db_port, json!([])),
        ),
        (
            "/v1/health/service/cache-sidecar-proxy".into(),
            sidecar_entry("cache", cache_port, json!([])),
        ),
        // Consul refuses a redirect loop at write; one that got in anyway cannot be
        // translated.
        (
            "/v1/config/service-resolver".into(),
            json!([
                {"Kind": "service-resolver", "Name": "api", "Redirect": {"Service": "api2"}},
                {"Kind": "service-resolver", "Name": "api2", "Redirect": {"Service": "api"}},
            ]),
        ),
        // A field a real Consul accepts and this mesh does not honour.
        (
            "/v1/config/service-defaults".into(),
            json!([{"Kind": "service-defaults", "Name": "db", "Protocol": "tcp",
                    "MutualTLSMode": "strict", "CreateIndex": 5, "ModifyIndex": 5}]),
        ),
    ]);
    let consul = fake_consul(data).await;
    let control_plane = start_control_plane(consul);
    let (xds, admin) = (control_plane.addr("xds"), control_plane.addr("admin"));
    let http = Http::default();
    let _web = start_mesh_proxy("web-sidecar-proxy", xds, false);
    let _db = start_mesh_proxy("db-sidecar-proxy", xds, true);
    let envoy =
        envoy_bin().map(|bin| start_envoy(&bin, "cache-sidecar-proxy", xds, false, dir.path()));

    until_state(&http, admin, "web-sidecar-proxy", "CONFIG_ERROR").await;
    let mut nacked = vec![("db-sidecar-proxy", db_port)];
    if envoy.is_some() {
        nacked.push(("cache-sidecar-proxy", cache_port));
    }
    for (node, _) in &nacked {
        until_state(&http, admin, node, "NACKED").await;
    }

    let table = mesh_status(admin);
    assert_eq!(
        state_and_reason(&table, "web-sidecar-proxy"),
        (
            "CONFIG_ERROR".to_string(),
            "configuration not updated: proxy \"web-sidecar-proxy\": upstream \"api\": service-resolver redirect loop: api -> api2 -> api".to_string()
        ),
        "{table}"
    );
    // Our proxy's NACK and Envoy's read the same.
    for (node, port) in &nacked {
        assert_eq!(
            state_and_reason(&table, node),
            (
                "NACKED".to_string(),
                format!(
                    "LDS rejected: Error adding/updating listener(s) public_listener: cannot bind '127.0.0.1:{port}': Address already in use"
                )
            ),
            "{table}"
        );
    }
    let below: Vec<&str> = table
        .lines()
        .skip(1)
        .filter(|l| !l.contains("-sidecar-proxy "))
        .collect();
    // "unknown to this mesh" today; "not supported yet" once the registry knows the field.
    assert_eq!(below.len(), 1, "{table}");
    assert!(
        below[0].starts_with("service-defaults \"db\": not honoured: MutualTLSMode: "),
        "{table}"
    );
    drop((taken_db, taken_cache, envoy));
}
