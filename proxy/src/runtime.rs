//! Turns each configuration the xDS client publishes into running state.
//!
//! Per update, off the hot path: build the runtime state of every changed cluster (balancer,
//! upstream pools taken over from the previous state when the connect settings match, stats),
//! resolve each HTTP listener's route configuration, and publish all of it with the config as
//! one immutable [`Snapshot`] in an `ArcSwap`; requests load it once and keep it to the end,
//! so an update never fails a request in flight. Then reconcile listeners: start new ones,
//! drain removed ones, replace changed ones on the same socket (new connections get the new
//! settings, old ones drain), and keep a listener whose RDS route configuration has not
//! arrived yet warming (its address bound, not accepting), like Envoy. Each apply is reported
//! ([`ApplyReport`]) with the listeners that could not bind, for the xDS client to NACK.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use fnv::FnvHashMap;
use mesh_drain::Watch;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{
    Cluster, HttpFilterKind, Listener, ListenerFilter, NetworkFilter, ProxyConfig, RouteSource,
    TcpTarget, TrafficDirection,
};
use crate::filter::HttpChain;
use crate::http::HttpListener;
use crate::listener::{DEFAULT_BACKLOG, Protocol, RunningListener};
use crate::metrics::{Registry, listener_stat_name};
use crate::restart::Parent;
pub use crate::state::{
    ClusterRuntime, ListenerState, ListenerStatus, ProxyHandle, ProxyOptions, Snapshot,
};
use crate::state::{Command, DrainListeners, Shared};
use crate::tcp::TcpProxyListener;
use crate::upstream;
use crate::xds::{ApplyReport, XdsStats};

/// The proxy before it runs: hand out [`ProxyHandle`]s, then [`Proxy::run`].
pub struct Proxy {
    shared: Arc<Shared>,
    config_rx: watch::Receiver<Arc<ProxyConfig>>,
    commands: mpsc::UnboundedReceiver<Command>,
    parent: Option<Arc<Parent>>,
}

impl Proxy {
    pub fn new(
        config_rx: watch::Receiver<Arc<ProxyConfig>>,
        xds: Arc<XdsStats>,
        options: ProxyOptions,
    ) -> Proxy {
        let (applied, _) = watch::channel(ApplyReport::default());
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            listeners: ArcSwap::from_pointee(BTreeMap::new()),
            stats: Registry::default(),
            xds,
            conn_limit: Arc::new(Semaphore::new(options.max_connections)),
            unproven: Default::default(),
            ready: AtomicBool::new(false),
            applied,
            options,
            started: Instant::now(),
            started_at: SystemTime::now(),
            first_started_at: Mutex::new(SystemTime::now()),
            health_check_failed: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            commands: commands_tx,
            exit: watch::Sender::new(false),
            sockets: Mutex::new(FnvHashMap::default()),
        });
        Proxy {
            shared,
            config_rx,
            commands,
            parent: None,
        }
    }

    /// Takes the listening sockets of new listeners from `parent`, the process this one
    /// replaces, where it has one for the configured address (see [`crate::restart`]).
    pub fn inherit_from(mut self, parent: Arc<Parent>) -> Proxy {
        self.handle()
            .set_first_started_at(parent.first_started_at());
        self.parent = Some(parent);
        self
    }

    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Applies every configuration published on the channel until `drain` starts, then
    /// drains all listeners (each bounded by the drain timeout; all cut off at once if
    /// `drain` is aborted) and returns. `drain`'s signal waits for that through a blocker.
    /// A closed configuration channel keeps the last configuration in force.
    pub async fn run(self, drain: Watch) {
        let Proxy {
            shared,
            mut config_rx,
            mut commands,
            parent,
        } = self;
        let _running = drain.blocker();
        let mut drain = drain;
        let mut reconciler = Reconciler {
            shared,
            running: BTreeMap::new(),
            held: BTreeMap::new(),
            failed: BTreeMap::new(),
            status: BTreeMap::new(),
            draining: Vec::new(),
            health_check_failed: false,
            drain_scope: None,
            stopped: None,
            parent,
        };
        let initial = config_rx.borrow_and_update().clone();
        reconciler.apply(initial).await;
        let mut source_open = true;
        let sweep_period = reconciler.shared.options.idle_sweep_period;
        let mut sweep = tokio::time::interval(sweep_period.max(Duration::from_millis(1)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A graceful `/drain_listeners` stops its listeners when this fires.
        let mut stop_at: Option<(tokio::time::Instant, Scope)> = None;
        loop {
            let stop_timer = async {
                match stop_at {
                    Some((at, _)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = drain.draining() => break,
                _ = sweep.tick() => sweep_idle_upstreams(&reconciler.shared, sweep_period),
                Some(command) = commands.recv() => {
                    if let Some(stop) = reconciler.command(command) {
                        stop_at = Some((tokio::time::Instant::now() + reconciler.shared.options.drain_timeout, stop));
                    }
                }
                () = stop_timer => {
                    if let Some((_, scope)) = stop_at.take() {
                        reconciler.stop_listeners(scope);
                    }
                }
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
        reconciler.shared.shutting_down.store(true, Relaxed);
        tracing::info!("shutting down: draining every listener");
        reconciler.shutdown(&mut drain).await;
    }
}

/// Runs the proxy with default options until `drain` starts: see [`Proxy::run`].
pub async fn run(
    config_rx: watch::Receiver<Arc<ProxyConfig>>,
    xds_stats: Arc<XdsStats>,
    drain: Watch,
) {
    Proxy::new(config_rx, xds_stats, ProxyOptions::default())
        .run(drain)
        .await;
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
        && a.tcp_backlog_size == b.tcp_backlog_size
        && a.direction == b.direction
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

/// Which listeners a `/drain_listeners` applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    All,
    Inbound,
}

impl Scope {
    fn of(how: &DrainListeners) -> Scope {
        if how.inbound_only {
            Scope::Inbound
        } else {
            Scope::All
        }
    }

    fn covers(self, listener: &Listener) -> bool {
        match self {
            Scope::All => true,
            Scope::Inbound => listener.direction == TrafficDirection::Inbound,
        }
    }

    fn widest(a: Option<Scope>, b: Scope) -> Scope {
        match a {
            Some(Scope::All) => Scope::All,
            _ => b,
        }
    }
}

/// The socket of a listener that is not serving yet (warming for its routes).
enum Held {
    /// Bound, not listening: connections are refused until the listener starts.
    Bound(TcpSocket),
    /// Taken over from the process this one replaces, which still accepts on it.
    Listening(TcpListener),
}

struct HeldSocket {
    addr: std::net::SocketAddr,
    socket: Held,
}

impl HeldSocket {
    fn listen(self, backlog: u32) -> std::io::Result<TcpListener> {
        match self.socket {
            Held::Bound(socket) => socket.listen(backlog),
            Held::Listening(listener) => Ok(listener),
        }
    }
}

struct Reconciler {
    shared: Arc<Shared>,
    running: BTreeMap<String, RunningListener>,
    /// Sockets of listeners waiting for their routes, taken when they were configured: an
    /// address someone else holds is found then (and the LDS update NACKed), as in Envoy.
    held: BTreeMap<String, HeldSocket>,
    /// Listeners of the configuration being applied that could not start: name -> Envoy's
    /// error text. Reported to the xDS client with the apply.
    failed: BTreeMap<String, String>,
    status: BTreeMap<String, ListenerStatus>,
    draining: Vec<JoinHandle<()>>,
    /// `/healthcheck/fail` is in force: every generation drains its connections.
    health_check_failed: bool,
    /// A `/drain_listeners` is in force for these listeners: their connections drain.
    drain_scope: Option<Scope>,
    /// Stopped by `/drain_listeners`: these listeners are not started again.
    stopped: Option<Scope>,
    /// The process this one replaces, which has the sockets of its listeners.
    parent: Option<Arc<Parent>>,
}

impl Reconciler {
    async fn apply(&mut self, config: Arc<ProxyConfig>) {
        let shared = Arc::clone(&self.shared);
        let previous = shared.snapshot.load_full();
        let mut clusters =
            FnvHashMap::with_capacity_and_hasher(config.clusters.len(), Default::default());
        for (name, cluster) in &config.clusters {
            if cluster.aggregate.is_some() {
                continue;
            }
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
        // Aggregates are rebuilt every time: they hold the runtimes of their clusters.
        let aggregates: Vec<(String, Arc<ClusterRuntime>)> = config
            .clusters
            .iter()
            .filter(|(_, c)| c.aggregate.is_some())
            .map(|(name, c)| {
                let stats = shared.stats.cluster(name);
                let runtime = ClusterRuntime::build_aggregate(c, stats, &clusters);
                (name.clone(), Arc::new(runtime))
            })
            .collect();
        clusters.extend(aggregates);
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
        self.publish_listeners();
        if !config.versions.is_empty()
            || !config.listeners.is_empty()
            || !config.clusters.is_empty()
        {
            shared.ready.store(true, Relaxed);
        }
        shared.applied.send_replace(ApplyReport {
            config,
            failed_listeners: std::mem::take(&mut self.failed),
        });
    }

    /// Publishes the listeners' status and their sockets by configured address.
    fn publish_listeners(&mut self) {
        self.draining.retain(|task| !task.is_finished());
        self.shared.listeners.store(Arc::new(self.status.clone()));
        let sockets = self
            .running
            .values()
            .filter(|r| r.config.addr.port() != 0)
            .map(|r| (r.config.addr, Arc::clone(&r.socket)))
            .collect();
        *self
            .shared
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = sockets;
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

    /// Whether `listener`'s connections should be draining from the start.
    fn drain_close(&self, listener: &Listener) -> bool {
        self.health_check_failed || self.drain_scope.is_some_and(|s| s.covers(listener))
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
            self.drain_close(listener),
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
        self.draining.push(old.stop(deadline));
    }

    /// Replaces a running generation with a new one on the same socket (new connections get
    /// the new one's settings, the old one's drain).
    fn replace(&mut self, name: &str, listener: &Arc<Listener>, previous: &Snapshot) {
        let Some(socket) = self.running.get(name).map(|r| Arc::clone(&r.socket)) else {
            return;
        };
        match self.start(listener, socket) {
            Ok(next) => {
                if let Some(old) = self.running.insert(name.to_owned(), next) {
                    self.retire(old, previous);
                }
            }
            Err(e) => tracing::error!(listener = %name, error = %e, "cannot replace listener"),
        }
    }

    /// Handles an admin command; returns the scope to stop after the drain timeout when a
    /// graceful `/drain_listeners` asks for it.
    fn command(&mut self, command: Command) -> Option<Scope> {
        match command {
            Command::HealthCheck { failed: true } => {
                self.health_check_failed = true;
                for running in self.running.values_mut() {
                    running.drain_connections();
                }
                None
            }
            Command::HealthCheck { failed: false } => {
                self.health_check_failed = false;
                // Draining cannot be undone on a generation: the ones that drain only because
                // of the health check are replaced by fresh ones on the same sockets.
                let previous = self.shared.snapshot.load_full();
                let names: Vec<(String, Arc<Listener>)> = self
                    .running
                    .iter()
                    .filter(|(_, r)| r.drain_close && !self.drain_close(&r.config))
                    .map(|(name, r)| (name.clone(), Arc::clone(&r.config)))
                    .collect();
                for (name, listener) in names {
                    self.replace(&name, &listener, &previous);
                }
                None
            }
            Command::DrainListeners(how) => {
                let scope = Scope::of(&how);
                if how.graceful
                    && self
                        .drain_scope
                        .is_some_and(|s| Scope::widest(Some(s), scope) == s)
                {
                    // Already draining at least these: Envoy answers OK and does nothing.
                    return None;
                }
                self.drain_scope = Some(Scope::widest(self.drain_scope, scope));
                for running in self.running.values_mut() {
                    if scope.covers(&running.config) {
                        running.drain_connections();
                    }
                }
                tracing::info!(
                    ?scope,
                    graceful = how.graceful,
                    skip_exit = how.skip_exit,
                    "draining listeners"
                );
                if how.skip_exit {
                    None
                } else if how.graceful {
                    Some(scope)
                } else {
                    self.stop_listeners(scope);
                    None
                }
            }
        }
    }

    /// Stops accepting on the listeners in `scope` for good (`/drain_listeners`).
    fn stop_listeners(&mut self, scope: Scope) {
        self.stopped = Some(Scope::widest(self.stopped, scope));
        let previous = self.shared.snapshot.load_full();
        let names: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| scope.covers(&r.config))
            .map(|(name, _)| name.clone())
            .collect();
        for name in names {
            if let Some(old) = self.running.remove(&name) {
                tracing::info!(listener = %name, "listener stopped");
                if let Some(status) = self.status.get_mut(&name) {
                    status.state = ListenerState::Stopped {
                        address: old.local_addr,
                    };
                }
                self.retire(old, &previous);
            }
        }
        self.publish_listeners();
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
        self.held
            .retain(|name, _| config.listeners.contains_key(name));

        for (name, listener) in &config.listeners {
            if self.stopped.is_some_and(|s| s.covers(listener)) {
                self.held.remove(name);
                if let Some(old) = self.running.remove(name) {
                    self.retire(old, previous);
                }
                if !self.status.contains_key(name) {
                    self.status.insert(
                        name.clone(),
                        ListenerStatus {
                            name: name.clone(),
                            configured_address: listener.addr,
                            state: ListenerState::Stopped {
                                address: listener.addr,
                            },
                        },
                    );
                }
                continue;
            }
            let running_at = self.running.get(name).map(|r| r.config.addr);
            if running_at == Some(listener.addr) {
                // Same socket. Until its new routes arrive the running generation serves.
                if missing_routes(listener, config).is_some() {
                    continue;
                }
                if let Some(current) = self.running.get_mut(name)
                    && same_listener(&current.config, listener)
                {
                    current.config = Arc::clone(listener);
                    continue;
                }
                tracing::info!(listener = %name, "listener changed; replacing it in place");
                if let Some(current) = self.running.get(name) {
                    relisten(&current.socket, listener);
                }
                self.replace(name, listener, previous);
                continue;
            }
            // A new socket: for a new listener, or a running one moving to another address
            // (which keeps serving on its old one if the new one cannot be had, as in Envoy).
            let socket = match self.held.remove(name) {
                Some(held) if held.addr == listener.addr => held,
                _ => match self.acquire(listener).await {
                    Ok(socket) => socket,
                    Err(error) => {
                        tracing::error!(listener = %name, %error, "listener failed to bind");
                        self.failed.insert(name.clone(), error.clone());
                        if running_at.is_none() {
                            self.status.insert(
                                name.clone(),
                                ListenerStatus {
                                    name: name.clone(),
                                    configured_address: listener.addr,
                                    state: ListenerState::Failed { error },
                                },
                            );
                        }
                        continue;
                    }
                },
            };
            if let Some(route) = missing_routes(listener, config) {
                self.held.insert(name.clone(), socket);
                if running_at.is_none() {
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
            if let Some(old) = self.running.remove(name) {
                tracing::info!(listener = %name, "listener address changed; draining the old one");
                self.retire(old, previous);
            }
            let started = socket
                .listen(backlog(listener))
                .and_then(|socket| self.start(listener, Arc::new(socket)));
            let state = match started {
                Ok(running) => {
                    tracing::info!(listener = %name, addr = %running.local_addr, "listener started");
                    let address = running.local_addr;
                    self.running.insert(name.clone(), running);
                    ListenerState::Active { address }
                }
                Err(e) => {
                    let error = crate::listener::bind_error(listener.addr, &e);
                    tracing::error!(listener = %name, %error, "listener failed to start");
                    self.failed.insert(name.clone(), error.clone());
                    ListenerState::Failed { error }
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

    /// A socket for a new listener: the one the process this one replaces has for its
    /// address (so connections queued there are accepted here), else a fresh bind. `Err` is
    /// Envoy's text for the failure.
    async fn acquire(&self, listener: &Listener) -> Result<HeldSocket, String> {
        let addr = listener.addr;
        if let Some(parent) = &self.parent
            && addr.port() != 0
        {
            match parent.take(addr).await {
                Ok(Some(socket)) => {
                    tracing::info!(listener = %listener.name, %addr, "took the listening socket over from the process being replaced");
                    let taken = crate::restart::listen(&socket, backlog(listener))
                        .and_then(|()| TcpListener::from_std(socket));
                    return match taken {
                        Ok(socket) => Ok(HeldSocket {
                            addr,
                            socket: Held::Listening(socket),
                        }),
                        Err(e) => Err(crate::listener::bind_error(addr, &e)),
                    };
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(listener = %listener.name, error = %e, "cannot take the listening socket over; binding a new one");
                }
            }
        }
        match crate::listener::bind_only(addr) {
            Ok(socket) => Ok(HeldSocket {
                addr,
                socket: Held::Bound(socket),
            }),
            Err(e) => Err(crate::listener::bind_error(addr, &e)),
        }
    }

    /// Stops every listener; connections get the drain timeout to finish, or are cut off at
    /// once when `process` is aborted.
    async fn shutdown(&mut self, process: &mut Watch) {
        let deadline = self.shared.options.drain_timeout;
        let running = std::mem::take(&mut self.running);
        for (_, listener) in running {
            self.draining.push(listener.stop(deadline));
        }
        self.shared.listeners.store(Arc::new(BTreeMap::new()));
        self.shared
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let all = futures_join(std::mem::take(&mut self.draining));
        tokio::pin!(all);
        tokio::select! {
            () = &mut all => {}
            () = process.aborted() => {
                tracing::info!("shutdown cut off; closing every connection");
                // Dropping a listener's drain signal aborts its connections.
                all.abort();
                all.await;
            }
        }
    }
}

fn backlog(listener: &Listener) -> u32 {
    listener.tcp_backlog_size.unwrap_or(DEFAULT_BACKLOG)
}

/// A listener replaced in place keeps its socket; a changed backlog is applied to it.
fn relisten(socket: &TcpListener, listener: &Listener) {
    if let Err(e) = crate::restart::listen(socket, backlog(listener)) {
        tracing::warn!(listener = %listener.name, error = %e, "cannot change the listen backlog");
    }
}

/// Waits for every task; [`Join::abort`] aborts those still running.
struct Join {
    tasks: Vec<JoinHandle<()>>,
}

fn futures_join(tasks: Vec<JoinHandle<()>>) -> Join {
    Join { tasks }
}

impl Join {
    fn abort(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::future::Future for Join {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.tasks
            .retain_mut(|task| std::pin::Pin::new(task).poll(cx).is_pending());
        if self.tasks.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}
