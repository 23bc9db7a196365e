//! A stock Envoy and our proxy fed by one ADS server (ours), for differential tests: the
//! same resources go to node "envoy" and node "mesh", with only the listener ports differing.

use mesh_control_plane::ads::{AdsServer, serve};
use mesh_control_plane::bootstrap::{BootstrapOptions, render};
use mesh_control_plane::cache::SnapshotCache;
use mesh_control_plane::snapshot::Snapshot;
use mesh_control_plane::status::StatusTracker;
use mesh_proxy::config::ProxyConfig;
use mesh_proxy::runtime::{Proxy, ProxyHandle, ProxyOptions};
use mesh_proxy::xds::{XdsMode, XdsOptions, XdsStats};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Envoy: `MESH_ENVOY`, else `<workspace>/.venv/bin/envoy`. `None` (the test skips, loudly)
/// when missing, except in CI, where a missing Envoy fails the test.
pub fn envoy_bin() -> Option<PathBuf> {
    let candidate = std::env::var_os("MESH_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map(|p| p.join(".venv/bin/envoy"))
                .unwrap_or_default()
        });
    let works = Command::new(&candidate)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Some(candidate);
    }
    let msg = format!(
        "no Envoy at {} (run ./scripts/test.sh, or set MESH_ENVOY)",
        candidate.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// A free port below the kernel's ephemeral range (32768+), so that no `bind(0)` or outgoing
/// connection takes it between this check and Envoy binding it.
pub fn free_port() -> u16 {
    (0..1000)
        .map(|_| fastrand::u16(20_000..32_000))
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("no free port in 20000-32000")
}

/// Both proxies and the ADS server; everything stops when dropped.
pub struct Pair {
    pub envoy_admin: SocketAddr,
    pub mesh: ProxyHandle,
    child: Child,
    log: PathBuf,
    tasks: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Pair {
    /// Starts Envoy and our proxy on `envoy` and `mesh` (the same resources but the listener
    /// ports: see the callers).
    pub async fn start(envoy: Snapshot, mesh: Snapshot) -> Option<Pair> {
        let envoy_bin = envoy_bin()?;
        let mut tasks = Vec::new();
        let cache = SnapshotCache::default();
        let xds = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let xds_addr = xds.local_addr().unwrap();
        let server = AdsServer::new(cache.clone(), Arc::new(StatusTracker::new()));
        tasks.push(tokio::spawn(async move {
            let (_keep, drain) = mesh_drain::channel();
            serve(xds, server, drain).await.unwrap();
        }));
        cache.publish(HashMap::from([
            ("envoy".to_string(), Arc::new(envoy)),
            ("mesh".to_string(), Arc::new(mesh)),
        ]));

        let dir = tempfile::tempdir().unwrap();
        let admin_port = free_port();
        let bootstrap = render(&BootstrapOptions {
            proxy_id: "envoy".into(),
            cluster: "envoy".into(),
            xds_host: "127.0.0.1".into(),
            xds_port: xds_addr.port(),
            admin_host: "127.0.0.1".into(),
            admin_port,
            delta: false,
        })
        .unwrap();
        let config = dir.path().join("envoy.yaml");
        std::fs::write(&config, bootstrap).unwrap();
        let log = dir.path().join("envoy.log");
        let child = Command::new(envoy_bin)
            .arg("-c")
            .arg(&config)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("cannot start envoy");

        let (tx, rx) = watch::channel(Arc::new(ProxyConfig::default()));
        let stats = Arc::new(XdsStats::default());
        let proxy = Proxy::new(rx, Arc::clone(&stats), ProxyOptions::default());
        let mesh = proxy.handle();
        tasks.push(tokio::spawn(async move {
            let (_keep, drain) = mesh_drain::channel();
            proxy.run(drain).await;
        }));
        let options = XdsOptions {
            node_id: "mesh".into(),
            cluster: "mesh".into(),
            server: format!("http://{xds_addr}"),
            mode: XdsMode::Sotw,
        };
        tasks.push(tokio::spawn(mesh_proxy::xds::run(options, tx, stats)));
        Some(Pair {
            envoy_admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            mesh,
            child,
            log,
            tasks,
            _dir: dir,
        })
    }

    pub fn envoy_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with Envoy's log if it exited.
    pub fn check_envoy(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("envoy exited ({status}):\n{}", self.envoy_log());
        }
    }

    /// Our listener's bound address, once it is accepting.
    pub async fn mesh_listener(&mut self, name: &str, within: Duration) -> SocketAddr {
        let deadline = Instant::now() + within;
        loop {
            if let Some(addr) = self.mesh.listener_addr(name) {
                return addr;
            }
            self.check_envoy();
            assert!(
                Instant::now() < deadline,
                "the mesh proxy never started listener {name}; xDS: {:?}",
                self.mesh.xds_stats().view()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Envoy's `/stats` as name -> value (counters and gauges).
    pub async fn envoy_stats(&self) -> BTreeMap<String, i64> {
        let request = http::Request::get("/stats")
            .header("host", "admin")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let answer = super::backend::send_once(self.envoy_admin, request)
            .await
            .unwrap();
        parse_stats(&String::from_utf8_lossy(&answer.body))
    }

    pub fn mesh_stats(&self) -> BTreeMap<String, i64> {
        parse_stats(&self.mesh.stats().render_plain())
    }
}

fn parse_stats(text: &str) -> BTreeMap<String, i64> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(": ")?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}
