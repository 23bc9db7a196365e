//! A stock Envoy as a child process, our ADS server, and the two side by side: Envoy (node
//! "envoy") and our proxy in process (node "mesh") fed by one ADS server, for differential
//! tests.
//!
//! Envoy comes from `MESH_ENVOY` or `<workspace>/.venv/bin/envoy` ([`envoy_bin`]). Without
//! it a test skips loudly, except in CI (`CI=true`), where it fails.

use super::harness::Harness;
use mesh_control_plane::ads::{AdsServer, serve};
use mesh_control_plane::bootstrap::{BootstrapOptions, render};
use mesh_control_plane::cache::SnapshotCache;
use mesh_control_plane::snapshot::Snapshot;
use mesh_control_plane::status::StatusTracker;
use mesh_proxy::xds::XdsMode;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

pub use mesh_tests::{EnvoyProcess, envoy_bin, free_port};

/// A stock Envoy in a temporary directory of its own (bootstrap and log); killed when dropped.
pub struct Envoy {
    pub process: EnvoyProcess,
    _dir: tempfile::TempDir,
}

impl Envoy {
    /// Envoy on `bootstrap` (YAML), whose admin listens on 127.0.0.1:`admin_port`, with
    /// `args` after the usual ones (one worker, no hot restart, log level warn).
    pub fn start(bin: &Path, bootstrap: &str, admin_port: u16, args: &[&str]) -> Envoy {
        let dir = tempfile::tempdir().unwrap();
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        let process = EnvoyProcess::start_with_args(bin, bootstrap, admin, dir.path(), args);
        Envoy { process, _dir: dir }
    }

    /// Envoy configured by the ADS server at `ads` as node "envoy" (cluster "envoy"), with the
    /// bootstrap `mesh envoy-bootstrap` writes.
    pub fn start_ads(bin: &Path, ads: SocketAddr, mode: XdsMode) -> Envoy {
        let admin_port = free_port();
        let bootstrap = render(&BootstrapOptions {
            proxy_id: "envoy".into(),
            cluster: "envoy".into(),
            xds_host: "127.0.0.1".into(),
            xds_port: ads.port(),
            admin_host: "127.0.0.1".into(),
            admin_port,
            delta: mode == XdsMode::Delta,
        })
        .unwrap();
        Envoy::start(bin, &bootstrap, admin_port, &[])
    }

    pub fn admin(&self) -> SocketAddr {
        self.process.admin
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Panics, with its log, if Envoy has exited.
    pub fn assert_running(&mut self) {
        self.process.assert_running();
    }

    /// Polls `check` until it holds; fails with what it last said and Envoy's log once
    /// `deadline` passes, and at once if Envoy exits.
    pub async fn wait_until(
        &mut self,
        deadline: Instant,
        mut check: impl AsyncFnMut() -> Result<(), String>,
    ) {
        loop {
            let Err(why) = check().await else {
                return;
            };
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "{why}\nenvoy log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its `/stats` as name -> value (counters and gauges).
    pub async fn stats(&self) -> BTreeMap<String, i64> {
        let (_, text) = super::get(self.admin(), "/stats").await;
        super::parse_stats(&text)
    }
}

/// Our ADS server on a loopback port, serving what is published per node; stops when dropped.
pub struct Ads {
    pub addr: SocketAddr,
    pub cache: SnapshotCache,
    pub status: Arc<StatusTracker>,
    stop: mesh_drain::Signal,
    task: JoinHandle<()>,
}

impl Drop for Ads {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Ads {
    pub async fn start() -> Ads {
        Ads::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// On `addr`: the same address again is a restarted server.
    pub async fn start_on(addr: SocketAddr) -> Ads {
        let cache = SnapshotCache::default();
        let status = Arc::new(StatusTracker::new());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, drain) = mesh_drain::channel();
        let server = AdsServer::new(cache.clone(), Arc::clone(&status));
        let task = tokio::spawn(async move {
            serve(listener, server, drain).await.unwrap();
        });
        Ads {
            addr,
            cache,
            status,
            stop,
            task,
        }
    }

    /// From now on, `snapshots` (node id, resources) and nothing else.
    pub fn publish<'a>(&self, snapshots: impl IntoIterator<Item = (&'a str, Snapshot)>) {
        self.cache.publish(
            snapshots
                .into_iter()
                .map(|(node, snapshot)| (node.to_string(), Arc::new(snapshot)))
                .collect::<HashMap<_, _>>(),
        );
    }

    /// Drains the server and waits, up to `within`, until it has stopped.
    pub async fn stop(mut self, within: Duration) {
        self.stop.start();
        tokio::time::timeout(within, &mut self.task)
            .await
            .expect("the ADS server did not stop")
            .unwrap();
    }
}

/// A stock Envoy (node "envoy") and our proxy (node "mesh") fed by our ADS server; everything
/// stops when dropped.
pub struct Pair {
    pub envoy: Envoy,
    pub mesh: Harness,
    pub ads: Ads,
}

impl Pair {
    /// Publishes `snapshots`, which name "envoy" and "mesh" (and may name more nodes), then
    /// starts both proxies. `None` (the test skips) without an Envoy, outside CI.
    pub async fn start<'a>(
        mode: XdsMode,
        snapshots: impl IntoIterator<Item = (&'a str, Snapshot)>,
    ) -> Option<Pair> {
        let bin = envoy_bin()?;
        let ads = Ads::start().await;
        ads.publish(snapshots);
        let envoy = Envoy::start_ads(&bin, ads.addr, mode);
        let mesh = Harness::start_xds("mesh", ads.addr, mode).await;
        Some(Pair { envoy, mesh, ads })
    }

    /// Our listener's bound address, once it is accepting.
    pub async fn mesh_listener(&mut self, name: &str, within: Duration) -> SocketAddr {
        self.envoy.assert_running();
        let addr = self.mesh.wait_addr(name, within).await;
        self.envoy.assert_running();
        addr
    }
}
