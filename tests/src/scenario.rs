//! The mesh scenario shared by the sidecar end-to-end tests: real registry and control-plane
//! processes, real backends, and a sidecar (a stock Envoy or our own proxy) configured by
//! nothing but the control plane.

use crate::{
    EnvoyProcess, Http, MeshProcess, RegistryProcess, envoy_bin, free_port, mesh_bin,
    spawn_backend, start_control_plane,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarKind {
    Envoy,
    Mesh,
}

/// A running sidecar, killed when dropped.
pub enum Sidecar {
    Envoy(EnvoyProcess),
    Mesh(MeshProcess, SocketAddr),
}

impl Sidecar {
    pub fn admin_url(&self, path: &str) -> String {
        match self {
            Sidecar::Envoy(e) => e.admin_url(path),
            Sidecar::Mesh(_, admin) => format!("http://{admin}{path}"),
        }
    }
}

/// Starts `mesh proxy` for `node_id` against the control plane's xDS address.
pub fn start_mesh_proxy(node_id: &str, xds: SocketAddr, delta: bool) -> Sidecar {
    let url = format!("http://{xds}");
    let mode = if delta { "delta" } else { "sotw" };
    let p = MeshProcess::start(
        &format!("proxy {node_id}"),
        &[
            "proxy",
            "--node-id",
            node_id,
            "--xds-url",
            &url,
            "--admin-addr",
            "127.0.0.1:0",
            "--xds-mode",
            mode,
        ],
        &["admin"],
    );
    let admin = p.addr("admin");
    Sidecar::Mesh(p, admin)
}

/// Within this long a change must reach the traffic (the bound).
const PROPAGATION: Duration = Duration::from_secs(2);

struct Mesh {
    http: Http,
    registry: String,
    outbound: String,
    sidecar: Option<Sidecar>,
    /// Sidecars in front of backends (inbound path), kept alive with the mesh.
    backend_sidecars: Vec<Sidecar>,
    kind: SidecarKind,
    delta: bool,
    control_plane: MeshProcess,
    registry_process: RegistryProcess,
}

impl Mesh {
    async fn put(&self, path: &str, body: serde_json::Value) {
        let r = self
            .http
            .put(&format!("{}{path}", self.registry), body.to_string())
            .await;
        assert_eq!(r.status, 200, "PUT {path}: {}", r.text());
    }

    async fn register_backend(&self, id: &str, version: &str, addr: SocketAddr) {
        self.put(
            "/v1/agent/service/register",
            json!({"Name": "backend", "ID": id, "Address": "127.0.0.1", "Port": addr.port(),
                   "Meta": {"version": version}, "Check": {"TTL": "10m", "Status": "passing"}}),
        )
        .await;
    }

    /// Sends `n` requests through the sidecar's outbound listener and counts answers by backend.
    async fn sample(&self, n: usize, headers: &[(&str, &str)]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let key = match self
                .http
                .request_with_headers("GET", &self.outbound, headers, "")
                .await
            {
                Ok(r) if r.status == 200 => r.text(),
                Ok(r) => format!("HTTP {}", r.status),
                Err(e) => format!("error: {e}"),
            };
            *counts.entry(key).or_insert(0) += 1;
        }
        counts
    }

    /// Samples until `done` holds for a batch; returns how long that took.
    async fn until(
        &self,
        headers: &[(&str, &str)],
        done: impl Fn(&BTreeMap<String, usize>) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let counts = self.sample(20, headers).await;
            if done(&counts) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "never converged; last sample {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn envoy_stat_rejections(&self) -> Vec<String> {
        let stats = self
            .http
            .get(
                &self
                    .sidecar
                    .as_ref()
                    .expect("sidecar started")
                    .admin_url("/stats?filter=update_rejected"),
            )
            .await
            .text();
        stats
            .lines()
            .filter(|l| l.split(':').nth(1).is_some_and(|v| v.trim() != "0"))
            .map(str::to_string)
            .collect()
    }
}

/// Starts registry, control plane and the frontend's sidecar of `kind`. `None` when the
/// sidecar's binary is missing outside CI (the lookup panics in CI).
async fn start_mesh(kind: SidecarKind, delta: bool, dir: &Path) -> Option<Mesh> {
    let envoy = match kind {
        SidecarKind::Envoy => Some(envoy_bin()?),
        SidecarKind::Mesh => None,
    };
    let registry = RegistryProcess::start(&dir.join("registry"));
    let control_plane = start_control_plane(registry.addr);
    let http = Http::default();
    let base = format!("http://{}", registry.addr);
    let (public_port, outbound_port) = (free_port(), free_port());
    let frontend = spawn_backend("frontend").await;
    let mesh = Mesh {
        http,
        registry: base,
        outbound: format!("http://127.0.0.1:{outbound_port}/"),
        // Started once the registrations are in.
        sidecar: None,
        backend_sidecars: Vec::new(),
        kind,
        delta,
        control_plane,
        registry_process: registry,
    };
    mesh.put(
        "/v1/agent/service/register",
        json!({
            "Name": "frontend", "ID": "frontend-1", "Port": frontend.port(),
            "Connect": {"SidecarService": {"Port": public_port, "Address": "127.0.0.1", "Proxy": {
                "Upstreams": [{"DestinationName": "backend", "LocalBindPort": outbound_port}]}}},
        }),
    )
    .await;
    mesh.put(
        "/v1/config",
        json!({"Kind": "service-defaults", "Name": "backend", "Protocol": "http"}),
    )
    .await;
    mesh.put(
        "/v1/config",
        json!({"Kind": "service-resolver", "Name": "backend", "DefaultSubset": "v1",
        "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"},
                    "v2": {"Filter": "Service.Meta.version == v2"}}}),
    )
    .await;
    let xds = mesh.control_plane.addr("xds");
    let sidecar = match envoy {
        Some(envoy) => start_envoy(&envoy, "frontend-1-sidecar-proxy", xds, delta, dir),
        None => start_mesh_proxy("frontend-1-sidecar-proxy", xds, delta),
    };
    Some(Mesh {
        sidecar: Some(sidecar),
        ..mesh
    })
}

/// Starts a stock Envoy for `node_id` with the bootstrap `mesh envoy-bootstrap` prints, after
/// checking Envoy accepts it.
pub fn start_envoy(
    envoy: &Path,
    node_id: &str,
    xds: SocketAddr,
    delta: bool,
    dir: &Path,
) -> Sidecar {
    let xds = xds.to_string();
    let admin = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "envoy-bootstrap",
        "--proxy-id",
        node_id,
        "--xds-addr",
        &xds,
        "--admin-addr",
        &admin,
    ];
    if delta {
        args.push("--delta");
    }
    let out = std::process::Command::new(mesh_bin())
        .args(&args)
        .output()
        .expect("mesh envoy-bootstrap");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bootstrap = String::from_utf8(out.stdout).expect("utf-8 bootstrap");
    let validate = std::process::Command::new(envoy)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "--config-yaml",
            &bootstrap,
        ])
        .output()
        .expect("envoy --mode validate");
    assert!(
        validate.status.success(),
        "Envoy rejects our bootstrap: {}",
        String::from_utf8_lossy(&validate.stderr)
    );
    Sidecar::Envoy(EnvoyProcess::start(
        envoy,
        &bootstrap,
        admin.parse().expect("admin addr"),
        dir,
    ))
}

/// Scenarios run one after the other: each asserts propagation times, and two meshes on two
/// cores would measure the machine, not the mesh.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The whole scenario: split, 0/100, a critical instance drained, a new instance served, a
/// header route, no rejected update, `mesh status` in sync, and traffic surviving the
/// registry's death. With `inbound_sidecar`, instance v2-a sits behind its own `mesh proxy`
/// so traffic also crosses an inbound (public) listener.
pub async fn run_scenario(kind: SidecarKind, delta: bool, inbound_sidecar: bool) {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut mesh) = start_mesh(kind, delta, dir.path()).await else {
        return;
    };
    let v1a = spawn_backend("v1-a").await;
    let v1b = spawn_backend("v1-b").await;
    let v2a = spawn_backend("v2-a").await;
    mesh.register_backend("v1-a", "v1", v1a).await;
    mesh.register_backend("v1-b", "v1", v1b).await;
    if inbound_sidecar {
        let public_port = free_port();
        mesh.put(
            "/v1/agent/service/register",
            json!({"Name": "backend", "ID": "v2-a", "Address": "127.0.0.1", "Port": v2a.port(),
                   "Meta": {"version": "v2"}, "Check": {"TTL": "10m", "Status": "passing"},
                   "Connect": {"SidecarService": {"Port": public_port, "Address": "127.0.0.1"}}}),
        )
        .await;
        let xds = mesh.control_plane.addr("xds");
        mesh.backend_sidecars
            .push(start_mesh_proxy("v2-a-sidecar-proxy", xds, mesh.delta));
    } else {
        mesh.register_backend("v2-a", "v2", v2a).await;
    }

    // Requests through the outbound listener reach the healthy v1 instances (the default subset).
    let took = mesh
        .until(&[], |c| {
            c.keys().all(|k| k.starts_with("v1-")) && c.len() == 2
        })
        .await;
    println!("first traffic through the sidecar after {took:?}");

    // A 90/10 split holds within a few percent over 2,000 requests.
    mesh.put(
        "/v1/config",
        json!({"Kind": "service-splitter", "Name": "backend",
        "Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}]}),
    )
    .await;
    mesh.until(&[], |c| c.contains_key("v2-a")).await;
    let counts = mesh.sample(2000, &[]).await;
    let v2 = counts.get("v2-a").copied().unwrap_or(0) as f64 / 2000.0;
    println!("90/10 split observed: {counts:?}");
    assert!(
        (0.07..=0.13).contains(&v2),
        "v2 share {v2} is not ~10%: {counts:?}"
    );
    assert!(
        counts.keys().all(|k| k.starts_with("v")),
        "errors: {counts:?}"
    );

    // 0/100 moves all traffic within 2 s.
    mesh.put(
        "/v1/config",
        json!({"Kind": "service-splitter", "Name": "backend",
        "Splits": [{"Weight": 0, "ServiceSubset": "v1"}, {"Weight": 100, "ServiceSubset": "v2"}]}),
    )
    .await;
    let took = mesh.until(&[], |c| c.keys().all(|k| k == "v2-a")).await;
    println!("0/100 took effect after {took:?}");
    assert!(took < PROPAGATION, "0/100 took {took:?}");

    // Back to v1 only, then a critical instance stops getting traffic and a new one starts.
    mesh.put(
        "/v1/config",
        json!({"Kind": "service-splitter", "Name": "backend",
        "Splits": [{"Weight": 100, "ServiceSubset": "v1"}]}),
    )
    .await;
    mesh.until(&[], |c| {
        c.keys().all(|k| k.starts_with("v1-")) && c.len() == 2
    })
    .await;
    mesh.put("/v1/agent/check/fail/service:v1-a?note=down", json!(null))
        .await;
    let took = mesh.until(&[], |c| c.keys().all(|k| k == "v1-b")).await;
    println!("critical instance drained after {took:?}");
    assert!(
        took < PROPAGATION,
        "critical instance still served after {took:?}"
    );
    let v1c = spawn_backend("v1-c").await;
    mesh.register_backend("v1-c", "v1", v1c).await;
    let took = mesh.until(&[], |c| c.contains_key("v1-c")).await;
    println!("new instance served after {took:?}");
    assert!(took < PROPAGATION, "new instance unused after {took:?}");

    // A service-router header match sends matching requests to the other subset.
    mesh.put(
        "/v1/config",
        json!({"Kind": "service-router", "Name": "backend", "Routes": [
        {"Match": {"HTTP": {"Header": [{"Name": "x-canary", "Exact": "1"}]}},
         "Destination": {"ServiceSubset": "v2"}}]}),
    )
    .await;
    mesh.until(&[("x-canary", "1")], |c| c.keys().all(|k| k == "v2-a"))
        .await;
    let plain = mesh.sample(50, &[]).await;
    assert!(
        plain.keys().all(|k| k == "v1-b" || k == "v1-c"),
        "{plain:?}"
    );

    // Envoy rejected nothing along the way, and its config came from us.
    assert_eq!(mesh.envoy_stat_rejections().await, Vec::<String>::new());
    let dump = mesh
        .http
        .get(
            &mesh
                .sidecar
                .as_ref()
                .expect("sidecar started")
                .admin_url("/config_dump"),
        )
        .await;
    assert_eq!(dump.status, 200);
    let dump = dump.text();
    if mesh.kind == SidecarKind::Envoy {
        assert!(
            dump.contains("frontend-1-sidecar-proxy"),
            "node id missing from config_dump"
        );
    }
    assert!(
        dump.contains("public_listener"),
        "inbound listener missing from config_dump"
    );

    // The control plane reports the proxy in sync, and `mesh status` shows it.
    let cp_admin = format!("http://{}", mesh.control_plane.addr("admin"));
    let synced = crate::eventually(Duration::from_secs(5), async || {
        let v = mesh.http.get(&format!("{cp_admin}/status")).await.json();
        v["proxies"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["node_id"] == "frontend-1-sidecar-proxy" && p["state"] == "SYNCED")
        })
    })
    .await;
    assert!(
        synced,
        "{}",
        mesh.http.get(&format!("{cp_admin}/status")).await.text()
    );
    let out = std::process::Command::new(mesh_bin())
        .args(["status", "--control-plane-url", &cp_admin])
        .output()
        .expect("mesh status");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("frontend-1-sidecar-proxy"))
        .unwrap_or_else(|| panic!("{table}"));
    let stream = if mesh.delta { "delta" } else { "sotw" };
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        [
            "frontend-1-sidecar-proxy",
            stream,
            "SYNCED",
            "SYNCED",
            "SYNCED",
            "SYNCED",
            "SYNCED"
        ],
        "{table}"
    );

    // With the registry gone, traffic keeps flowing on the last good configuration and the
    // control plane says the registry is unreachable.
    mesh.registry_process.kill9();
    let down = crate::eventually(Duration::from_secs(5), async || {
        mesh.http.get(&format!("{cp_admin}/status")).await.json()["registry"]["reachable"] == false
    })
    .await;
    assert!(
        down,
        "the control plane did not notice the registry is down"
    );
    let counts = mesh.sample(50, &[]).await;
    assert!(
        counts.keys().all(|k| k == "v1-b" || k == "v1-c"),
        "{counts:?}"
    );
}
