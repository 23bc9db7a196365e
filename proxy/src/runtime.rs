//! Turns each configuration the xDS client publishes into running state.
//!
//! Per update, off the hot path: build the runtime state of every changed cluster (balancer,
//! upstream pools taken over from the previous state when the connect settings match, stats),
//! resolve each HTTP listener's route configuration, and publish all of it with the config as
//! one immutable [`Snapshot`] in an `ArcSwap`; requests load it once and keep it to the end,
//! so an update never fails a request in flight. Then reconcile listeners: start new ones,
//! drain removed ones, replace changed ones on the same socket (new connections get the new
//! settings, old ones drain), and keep a listener whose RDS route configuration has not
//! arrived yet warming (not started), like Envoy.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use arc_swap::ArcSwap;
use fnv::FnvHashMap;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::config::{
    Cluster, HttpFilterKind, Listener, ListenerFilter, NetworkFilter, ProxyConfig, RouteSource,
    TcpTarget,
};
use crate::filter::HttpChain;
use crate::http::HttpListener;
use crate::listener::{Protocol, RunningListener};
use crate::metrics::{Registry, listener_stat_name};
use crate::state::Shared;
pub use crate::state::{
    ClusterRuntime, ListenerState, ListenerStatus, ProxyHandle, ProxyOptions, Snapshot,
};
use crate::tcp::TcpProxyListener;
use crate::upstream;
use crate::xds::XdsStats;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("admin server failed: {0}")]
    Admin(#[source] std::io::Error),
}

/// The proxy before it runs: hand out [`ProxyHandle`]s, then [`Proxy::run`].
pub struct Proxy {
    shared: Arc<Shared>,
    config_rx: watch::Receiver<Arc<ProxyConfig>>,
}

impl Proxy {
    pub fn new(
        config_rx: watch::Receiver<Arc<ProxyConfig>>,
        xds: Arc<XdsStats>,
        options: ProxyOptions,
    ) -> Proxy {
        let (applied, _) = watch::channel(Arc::new(ProxyConfig::default()));
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            listeners: ArcSwap::from_pointee(BTreeMap::new()),
            stats: Registry::default(),
            xds,
            conn_limit: Arc::new(Semaphore::new(options.max_connections)),
            ready: AtomicBool::new(false),
            applied,
            options,
        });
        Proxy { shared, config_rx }
    }

    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Applies every configuration published on the channel until `shutdown` resolves, then
    /// drains all listeners (bounded by the drain timeout). Serves the admin API on
    /// `admin_listener` when given. A closed configuration channel keeps the last
    /// configuration in force.
    pub async fn run(
        self,
        admin_listener: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RuntimeError> {
        let Proxy {
            shared,
            mut config_rx,
        } = self;
        let (stop_admin, admin_stopped) = watch::channel(false);
        let admin = admin_listener.map(|listener| {
            let handle = ProxyHandle {
                shared: Arc::clone(&shared),
            };
            let mut stopped = admin_stopped;
            tokio::spawn(crate::admin::serve(listener, handle, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }))
        });
        let mut reconciler = Reconciler {
            shared,
            running: BTreeMap::new(),
            status: BTreeMap::new(),
            draining: Vec::new(),
        };
        let initial = config_rx.borrow_and_update().clone();
        reconciler.apply(initial).await;
        tokio::pin!(shutdown);
        let mut source_open = true;
        let sweep_period = reconciler.shared.options.idle_sweep_period;
        let mut sweep = tokio::time::interval(sweep_period.max(Duration::from_millis(1)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = sweep.tick() => sweep_idle_upstreams(&reconciler.shared, sweep_period),
                changed = config_rx.changed(), if source_open => match changed {
                    Ok(()) => {
                        let config = config_rx.borrow_and_update().clone();
                        reconciler.apply(config).await;
                    }
                    Err(_) => {
                        tracing::warn!("configuration source closed; keeping the last configuration");
                        source_open = false;
                    }
                },
            }
        }
        reconciler.shutdown().await;
        let _ = stop_admin.send(true);
        if let Some(admin) = admin {
            match admin.await {
                Ok(Err(e)) => return Err(RuntimeError::Admin(e)),
                Ok(Ok(())) => {}
                Err(e) => tracing::warn!(error = %e, "admin task failed"),
            }
        }
        Ok(())
    }
}

/// Runs the proxy with default options: see [`Proxy::run`].
pub async fn run(
    config_rx: watch::Receiver<Arc<ProxyConfig>>,
    xds_stats: Arc<XdsStats>,
    admin_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError> {
    Proxy::new(config_rx, xds_stats, ProxyOptions::default())
        .run(admin_listener, shutdown)
        .await
}

/// Closes idle upstream connections their server closed, or unused for
/// [`upstream::UPSTREAM_IDLE_TIMEOUT`], in every cluster of the current snapshot.
fn sweep_idle_upstreams(shared: &Shared, period: Duration) {
    let max_sweeps =
        u32::try_from(upstream::UPSTREAM_IDLE_TIMEOUT.as_millis() / period.as_millis().max(1))
            .unwrap_or(u32::MAX);
    let snapshot = shared.snapshot.load();
    let closed: usize = snapshot
        .clusters
        .values()
        .flat_map(|cluster| cluster.upstream.endpoints())
        .map(|pool| pool.sweep_idle(max_sweeps))
        .sum();
    if closed > 0 {
        tracing::debug!(closed, "closed idle upstream connections");
    }
}

fn same_cluster(a: &Cluster, b: &Cluster) -> bool {
    a.name == b.name
        && a.connect_timeout == b.connect_timeout
        && a.lb_policy == b.lb_policy
        && a.http2 == b.http2
        && a.eds == b.eds
        && a.max_requests_per_connection == b.max_requests_per_connection
        && (Arc::ptr_eq(&a.endpoints, &b.endpoints) || a.endpoints == b.endpoints)
}

fn same_tcp_target(a: &TcpTarget, b: &TcpTarget) -> bool {
    match (a, b) {
        (TcpTarget::Cluster(a), TcpTarget::Cluster(b)) => a == b,
        (TcpTarget::Weighted(a), TcpTarget::Weighted(b)) => a == b,
        _ => false,
    }
}

/// Whether a running listener can keep serving `b`'s configuration. Route configurations do
/// not count: requests read them from the snapshot.
fn same_listener(a: &Listener, b: &Listener) -> bool {
    a.addr == b.addr
        && a.network_filters == b.network_filters
        && match (&a.filter, &b.filter) {
            (ListenerFilter::Http(x), ListenerFilter::Http(y)) => {
                Arc::ptr_eq(x, y)
                    || (x.stat_prefix == y.stat_prefix
                        && x.max_request_headers_bytes == y.max_request_headers_bytes
                        && x.idle_timeout == y.idle_timeout
                        && x.request_headers_timeout == y.request_headers_timeout
                        && x.stream_idle_timeout == y.stream_idle_timeout
                        && x.http_filters == y.http_filters)
            }
            (ListenerFilter::Tcp(x), ListenerFilter::Tcp(y)) => {
                Arc::ptr_eq(x, y)
                    || (x.stat_prefix == y.stat_prefix
                        && x.idle_timeout == y.idle_timeout
                        && same_tcp_target(&x.cluster, &y.cluster))
            }
            _ => false,
        }
}

/// The RDS route configuration an HTTP listener waits for, if it has not arrived.
fn missing_routes<'a>(listener: &'a Listener, config: &ProxyConfig) -> Option<&'a str> {
    match &listener.filter {
        ListenerFilter::Http(hcm) => match &hcm.routes {
            RouteSource::Rds(name) if !config.routes.contains_key(name) => Some(name),
            _ => None,
        },
        ListenerFilter::Tcp(_) => None,
    }
}

struct Reconciler {
    shared: Arc<Shared>,
    running: BTreeMap<String, RunningListener>,
    status: BTreeMap<String, ListenerStatus>,
    draining: Vec<JoinHandle<()>>,
}

impl Reconciler {
    async fn apply(&mut self, config: Arc<ProxyConfig>) {
        let shared = Arc::clone(&self.shared);
        let previous = shared.snapshot.load_full();
        let mut clusters =
            FnvHashMap::with_capacity_and_hasher(config.clusters.len(), Default::default());
        for (name, cluster) in &config.clusters {
            let stats = shared.stats.cluster(name);
            let old = previous.clusters.get(name);
            let runtime = match old {
                Some(old)
                    if Arc::ptr_eq(&old.stats, &stats) && same_cluster(&old.config, cluster) =>
                {
                    Arc::clone(old)
                }
                _ => Arc::new(ClusterRuntime::build(cluster, stats, old.map(|o| &**o))),
            };
            clusters.insert(name.clone(), runtime);
        }
        shared
            .stats
            .retain_clusters(|name| config.clusters.contains_key(name));
        let mut listener_routes = FnvHashMap::default();
        for (name, listener) in &config.listeners {
            if let ListenerFilter::Http(hcm) = &listener.filter {
                let routes = match &hcm.routes {
                    RouteSource::Inline(rc) => Some(Arc::clone(rc)),
                    RouteSource::Rds(route) => config.routes.get(route).cloned(),
                };
                if let Some(routes) = routes {
                    listener_routes.insert(name.clone(), routes);
                }
            }
        }
        shared.snapshot.store(Arc::new(Snapshot {
            config: Arc::clone(&config),
            clusters,
            listener_routes,
        }));
        self.reconcile_listeners(&config, &previous).await;
        drop(previous);
        self.draining.retain(|task| !task.is_finished());
        shared.listeners.store(Arc::new(self.status.clone()));
        if !config.versions.is_empty()
            || !config.listeners.is_empty()
            || !config.clusters.is_empty()
        {
            shared.ready.store(true, Relaxed);
        }
        shared.applied.send_replace(config);
    }

    fn protocol(&self, listener: &Listener) -> Protocol {
        match &listener.filter {
            ListenerFilter::Http(hcm) => Protocol::Http(Arc::new(HttpListener::new(
                &listener.name,
                Arc::clone(hcm),
                self.shared.stats.http(&hcm.stat_prefix),
                HttpChain::build(&hcm.http_filters, &self.shared.stats, &hcm.stat_prefix),
            ))),
            ListenerFilter::Tcp(tcp) => Protocol::Tcp(Arc::new(TcpProxyListener {
                config: Arc::clone(tcp),
                stats: self.shared.stats.tcp(&tcp.stat_prefix),
            })),
        }
    }

    fn start(
        &self,
        listener: &Arc<Listener>,
        socket: Arc<TcpListener>,
    ) -> std::io::Result<RunningListener> {
        let local = socket.local_addr()?;
        RunningListener::start(
            Arc::clone(&self.shared),
            Arc::clone(listener),
            socket,
            self.protocol(listener),
            self.shared.stats.listener(&listener_stat_name(&local)),
        )
    }

    /// Drains `old`. `previous` is the snapshot it served with: a removed HTTP listener's
    /// draining connections keep its routes.
    fn retire(&mut self, old: RunningListener, previous: &Snapshot) {
        if let Protocol::Http(http) = &old.protocol
            && let Some(routes) = previous.listener_routes.get(&old.config.name)
        {
            http.retired_routes.store(Some(Arc::clone(routes)));
        }
        let deadline = self.shared.options.drain_timeout;
        self.draining.push(old.drain(deadline));
    }

    async fn reconcile_listeners(&mut self, config: &ProxyConfig, previous: &Snapshot) {
        let removed: Vec<String> = self
            .running
            .keys()
            .filter(|name| !config.listeners.contains_key(*name))
            .cloned()
            .collect();
        for name in removed {
            if let Some(old) = self.running.remove(&name) {
                tracing::info!(listener = %name, "listener removed; draining");
                self.retire(old, previous);
            }
        }
        self.status
            .retain(|name, _| config.listeners.contains_key(name));

        for (name, listener) in &config.listeners {
            if let Some(route) = missing_routes(listener, config) {
                // Warming: a running generation keeps serving until the routes arrive.
                if !self.running.contains_key(name) {
                    self.status.insert(
                        name.clone(),
                        ListenerStatus {
                            name: name.clone(),
                            configured_address: listener.addr,
                            state: ListenerState::Warming {
                                route_config: route.to_owned(),
                            },
                        },
                    );
                }
                continue;
            }
            let next = match self.running.get_mut(name) {
                Some(current) if same_listener(&current.config, listener) => {
                    current.config = Arc::clone(listener);
                    continue;
                }
                Some(current) if current.config.addr == listener.addr => {
                    Some(Arc::clone(&current.socket))
                }
                Some(_) => None,
                None => None,
            };
            if let Some(socket) = next {
                match self.start(listener, socket) {
                    Ok(next) => {
                        tracing::info!(listener = %name, "listener changed; replacing it in place");
                        if let Some(old) = self.running.insert(name.clone(), next) {
                            self.retire(old, previous);
                        }
                    }
                    Err(e) => {
                        tracing::error!(listener = %name, error = %e, "cannot replace listener");
                    }
                }
                continue;
            }
            if let Some(old) = self.running.remove(name) {
                tracing::info!(listener = %name, "listener address changed; draining the old one");
                self.retire(old, previous);
            }
            let state = match TcpListener::bind(listener.addr).await {
                Ok(socket) => match self.start(listener, Arc::new(socket)) {
                    Ok(running) => {
                        tracing::info!(listener = %name, addr = %running.local_addr, "listener started");
                        let address = running.local_addr;
                        self.running.insert(name.clone(), running);
                        ListenerState::Active { address }
                    }
                    Err(e) => ListenerState::Failed {
                        error: e.to_string(),
                    },
                },
                Err(e) => {
                    tracing::error!(listener = %name, addr = %listener.addr, error = %e, "cannot bind listener");
                    ListenerState::Failed {
                        error: format!("bind {}: {e}", listener.addr),
                    }
                }
            };
            self.status.insert(
                name.clone(),
                ListenerStatus {
                    name: name.clone(),
                    configured_address: listener.addr,
                    state,
                },
            );
        }

        let stats = &self.shared.stats;
        let bound: Vec<String> = self
            .running
            .values()
            .map(|r| listener_stat_name(&r.local_addr))
            .collect();
        let prefixes = |tcp: bool| -> Vec<String> {
            config
                .listeners
                .values()
                .filter_map(|l| match (&l.filter, tcp) {
                    (ListenerFilter::Http(h), false) => Some(h.stat_prefix.clone()),
                    (ListenerFilter::Tcp(t), true) => Some(t.stat_prefix.clone()),
                    _ => None,
                })
                .collect()
        };
        let (http, tcp) = (prefixes(false), prefixes(true));
        stats.retain_listeners(
            |n| bound.iter().any(|b| b == n),
            |p| http.iter().any(|h| h == p),
            |p| tcp.iter().any(|t| t == p),
        );
        let cors: Vec<&str> = config
            .listeners
            .values()
            .filter_map(|l| match &l.filter {
                ListenerFilter::Http(h)
                    if h.http_filters
                        .iter()
                        .any(|f| f.kind == HttpFilterKind::Cors) =>
                {
                    Some(h.stat_prefix.as_str())
                }
                _ => None,
            })
            .collect();
        let limits: Vec<&str> = config
            .listeners
            .values()
            .flat_map(|l| &l.network_filters)
            .map(|f| match f {
                NetworkFilter::ConnectionLimit(c) => c.stat_prefix.as_str(),
            })
            .collect();
        stats.retain_filters(|p| cors.contains(&p), |p| limits.contains(&p));
    }

    async fn shutdown(&mut self) {
        let deadline = self.shared.options.drain_timeout;
        let running = std::mem::take(&mut self.running);
        for (_, listener) in running {
            self.draining.push(listener.drain(deadline));
        }
        for task in self.draining.drain(..) {
            let _ = task.await;
        }
        self.shared.listeners.store(Arc::new(BTreeMap::new()));
    }
}
