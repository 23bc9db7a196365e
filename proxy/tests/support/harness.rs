//! Our proxy in process, with its admin API, configured through its watch channel (a
//! configuration built by hand) or by our ADS server, and stopped by a drain.

use http::StatusCode;
use mesh_proxy::admin::AdminOptions;
use mesh_proxy::config::ProxyConfig;
use mesh_proxy::runtime::{Proxy, ProxyHandle, ProxyOptions};
use mesh_proxy::xds::{XdsMode, XdsOptions, XdsStats};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The proxy under test. Dropped, it stops at once (its drain aborted); [`Harness::shutdown`]
/// drains it.
pub struct Harness {
    pub handle: ProxyHandle,
    /// The admin API's address.
    pub admin: SocketAddr,
    pub xds: Arc<XdsStats>,
    /// `None` when an xDS client feeds the proxy.
    tx: Option<watch::Sender<Arc<ProxyConfig>>>,
    stop: Option<mesh_drain::Signal>,
    task: Option<JoinHandle<()>>,
    xds_client: Option<JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(client) = &self.xds_client {
            client.abort();
        }
    }
}

impl Harness {
    /// On `config`, with a short drain and an idle sweep that every test's traffic meets.
    pub async fn start(config: ProxyConfig) -> Harness {
        let options = ProxyOptions {
            drain_timeout: Duration::from_secs(2),
            idle_sweep_period: Duration::from_millis(50),
            ..ProxyOptions::default()
        };
        Harness::start_with(config, options, AdminOptions::default()).await
    }

    /// On `config`, once it is applied.
    pub async fn start_with(
        config: ProxyConfig,
        options: ProxyOptions,
        admin: AdminOptions,
    ) -> Harness {
        let config = Arc::new(config);
        let (tx, rx) = watch::channel(Arc::clone(&config));
        let mut h = Harness::spawn(rx, options, admin).await;
        h.tx = Some(tx);
        h.handle.wait_applied(&config).await;
        h
    }

    /// Configured by the ADS server at `ads` as node `node` (the cluster too).
    pub async fn start_xds(node: &str, ads: SocketAddr, mode: XdsMode) -> Harness {
        let (tx, rx) = watch::channel(Arc::new(ProxyConfig::default()));
        let mut h = Harness::spawn(rx, ProxyOptions::default(), AdminOptions::default()).await;
        let options = XdsOptions {
            node_id: node.into(),
            cluster: node.into(),
            server: format!("http://{ads}"),
            mode,
        };
        h.xds_client = Some(tokio::spawn(mesh_proxy::xds::run(
            options,
            tx,
            Some(h.handle.apply_reports()),
            Arc::clone(&h.xds),
        )));
        h
    }

    async fn spawn(
        rx: watch::Receiver<Arc<ProxyConfig>>,
        options: ProxyOptions,
        admin_options: AdminOptions,
    ) -> Harness {
        let xds = Arc::new(XdsStats::default());
        let proxy = Proxy::new(rx, Arc::clone(&xds), options);
        let handle = proxy.handle();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let (stop, drain) = mesh_drain::channel();
        tokio::spawn(mesh_proxy::admin::serve(
            admin_listener,
            handle.clone(),
            admin_options,
            drain.clone(),
        ));
        let task = tokio::spawn(proxy.run(drain));
        Harness {
            handle,
            admin,
            xds,
            tx: None,
            stop: Some(stop),
            task: Some(task),
            xds_client: None,
        }
    }

    /// Publishes `config` and waits until it is applied.
    pub async fn push(&self, config: ProxyConfig) {
        let config = Arc::new(config);
        let tx = self
            .tx
            .as_ref()
            .expect("an xDS client configures this proxy");
        tx.send_replace(Arc::clone(&config));
        tokio::time::timeout(Duration::from_secs(5), self.handle.wait_applied(&config))
            .await
            .unwrap();
    }

    /// The address `listener` is bound to; it must be active.
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.handle.listener_addr(listener).unwrap_or_else(|| {
            panic!(
                "listener {listener} not active: {:?}",
                self.handle.listeners()
            )
        })
    }

    /// The address of `listener`, once it is active (an xDS client may still be fetching it).
    pub async fn wait_addr(&self, listener: &str, within: Duration) -> SocketAddr {
        let deadline = Instant::now() + within;
        loop {
            if let Some(addr) = self.handle.listener_addr(listener) {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "the mesh proxy never started listener {listener}; xDS: {:?}",
                self.xds.view()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, listener: &str, path: &str) -> String {
        format!("http://{}{path}", self.addr(listener))
    }

    pub async fn admin_get(&self, path: &str) -> (StatusCode, String) {
        super::get(self.admin, path).await
    }

    /// Its stats as name -> value (counters and gauges).
    pub fn stats(&self) -> BTreeMap<String, i64> {
        super::parse_stats(&self.handle.stats().render_plain())
    }

    /// Drains the proxy and waits until it has stopped.
    pub async fn shutdown(mut self) {
        // Kept until the proxy is done: dropping the signal would cut the drain short.
        let stop = self.stop.take();
        if let Some(stop) = &stop {
            stop.start();
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .unwrap()
                .unwrap();
        }
        drop(stop);
    }
}
