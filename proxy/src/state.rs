//! The state the data path reads, published by the runtime: the current [`Snapshot`] (the
//! validated config with each cluster's runtime state and each HTTP listener's routes), the
//! listeners' status, stats, and the proxy's options. A leaf below the runtime: the data path
//! (listener, http, tcp) and the admin API import it, never the orchestrator that swaps it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use fnv::FnvHashMap;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::balance::Balancer;
use crate::config::{Cluster, LbPolicy, ProxyConfig, RouteConfig};
use crate::listener::Unproven;
use crate::metrics::{ClusterMembership, ClusterStats, Registry, StatsView};
use crate::upstream::ClusterUpstream;
use crate::xds::{ApplyReport, XdsStats};

#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Concurrent downstream connections over all listeners. At the limit, the oldest
    /// connection that has not sent a complete request is closed to make room; when there is
    /// none, new connections are closed at accept.
    pub max_connections: usize,
    /// How long a removed or replaced listener's connections get to finish, and how long a
    /// graceful `/drain_listeners` keeps accepting (Envoy's `--drain-time-s`).
    pub drain_timeout: Duration,
    /// How often idle upstream connections are checked: closed by their server, or unused
    /// for [`upstream::UPSTREAM_IDLE_TIMEOUT`] (counted in sweeps of this period).
    pub idle_sweep_period: Duration,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            max_connections: 16 * 1024,
            drain_timeout: Duration::from_secs(10),
            idle_sweep_period: Duration::from_secs(5),
        }
    }
}

/// A cluster ready for requests.
#[derive(Debug)]
pub struct ClusterRuntime {
    pub config: Arc<Cluster>,
    pub balancer: Balancer,
    /// Index-aligned with `balancer.endpoints()`.
    pub upstream: ClusterUpstream,
    pub stats: Arc<ClusterStats>,
    /// Whether the balancer uses a request hash (ring hash, maglev).
    pub(crate) hashing: bool,
    /// An aggregate cluster's clusters as they are in this snapshot (its own balancer and
    /// upstream are empty).
    pub(crate) aggregate: Option<AggregateRuntime>,
}

/// The clusters an aggregate cluster can send a try to: those that exist in the snapshot and
/// have endpoints (Envoy leaves the others out), with their share of the traffic.
#[derive(Debug)]
pub(crate) struct AggregateRuntime {
    levels: Vec<Level>,
    /// Percent per level (`balance::priority::loads`).
    loads: Vec<u32>,
}

#[derive(Debug)]
struct Level {
    cluster: Arc<ClusterRuntime>,
    /// Where this level's endpoints start in the keys tries are remembered by: the levels'
    /// endpoints, one after the other.
    offset: usize,
}

/// The endpoint a try goes to.
pub(crate) struct Picked<'c> {
    /// The cluster that owns the endpoint (an aggregate's is one of its clusters).
    pub cluster: &'c ClusterRuntime,
    /// Into `cluster`'s endpoints.
    pub index: usize,
    /// What the try is remembered by, for later tries to avoid it.
    pub key: usize,
}

impl ClusterRuntime {
    /// The endpoint for a try: a healthy one, avoiding those of `tried` (keys of earlier
    /// picks) while another is healthy. An aggregate cluster first picks one of its clusters
    /// by their loads (one draw per try, as Envoy's), then that cluster its endpoint.
    pub(crate) fn pick(&self, hash: Option<u64>, tried: &[usize]) -> Option<Picked<'_>> {
        let Some(aggregate) = &self.aggregate else {
            return self.balancer.pick(hash, tried).map(|index| Picked {
                cluster: self,
                index,
                key: index,
            });
        };
        if aggregate.levels.is_empty() {
            return None;
        }
        let level = &aggregate.levels
            [crate::balance::priority::choose(&aggregate.loads, fastrand::u64(..))];
        let cluster = &*level.cluster;
        let end = level.offset + cluster.balancer.endpoints().len();
        let index = if tried.is_empty() {
            cluster.balancer.pick(hash, &[])
        } else {
            // Only retries get here.
            let mine: Vec<usize> = tried
                .iter()
                .filter(|k| (level.offset..end).contains(*k))
                .map(|k| k - level.offset)
                .collect();
            cluster.balancer.pick(hash, &mine)
        }?;
        Some(Picked {
            cluster,
            index,
            key: level.offset + index,
        })
    }

    /// An aggregate cluster over the clusters of `clusters` its configuration names. It
    /// speaks its clusters' protocol (the xDS client refuses aggregates over clusters that
    /// disagree) and hashes requests if one of them does.
    pub(crate) fn build_aggregate(
        config: &Arc<Cluster>,
        stats: Arc<ClusterStats>,
        clusters: &FnvHashMap<String, Arc<ClusterRuntime>>,
    ) -> ClusterRuntime {
        let names = config
            .aggregate
            .as_ref()
            .map_or(&[][..], |a| a.clusters.as_slice());
        let threshold = config.aggregate.as_ref().map_or(50, |a| a.panic_threshold);
        let mut levels = Vec::new();
        let mut offset = 0;
        for name in names {
            let Some(cluster) = clusters.get(name) else {
                continue;
            };
            let endpoints = cluster.balancer.endpoints().len();
            if cluster.aggregate.is_some() || endpoints == 0 {
                continue;
            }
            levels.push(Level {
                cluster: Arc::clone(cluster),
                offset,
            });
            offset += endpoints;
        }
        let counts: Vec<crate::balance::priority::Level> = levels
            .iter()
            .map(|l| crate::balance::priority::Level {
                healthy: l.cluster.balancer.healthy_count(),
                total: l.cluster.balancer.endpoints().len(),
            })
            .collect();
        let loads = crate::balance::priority::loads(&counts, threshold);
        let http2 = levels.first().is_some_and(|l| l.cluster.config.http2);
        let hashing = levels.iter().any(|l| l.cluster.hashing);
        let config = Arc::new(Cluster {
            http2,
            ..(**config).clone()
        });
        let mut runtime = ClusterRuntime::build(&config, stats, None);
        runtime.hashing = hashing;
        runtime.aggregate = Some(AggregateRuntime { levels, loads });
        runtime
    }

    pub(crate) fn build(
        config: &Arc<Cluster>,
        stats: Arc<ClusterStats>,
        previous: Option<&ClusterRuntime>,
    ) -> ClusterRuntime {
        let balancer = Balancer::new(&config.lb_policy, Arc::clone(&config.endpoints));
        let upstream = ClusterUpstream::build(
            config,
            balancer.endpoints(),
            &stats,
            previous.map(|p| &p.upstream),
        );
        ClusterRuntime {
            config: Arc::clone(config),
            hashing: matches!(
                config.lb_policy,
                LbPolicy::RingHash { .. } | LbPolicy::Maglev { .. }
            ),
            balancer,
            upstream,
            stats,
            aggregate: None,
        }
    }
}

/// Everything a request needs, published as one unit.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub config: Arc<ProxyConfig>,
    /// Looked up by name on every request. FNV instead of SipHash: the names come from the
    /// control plane, not from requests, so a keyed hash buys nothing here.
    pub clusters: FnvHashMap<String, Arc<ClusterRuntime>>,
    /// Each HTTP listener's route configuration (inline, or its RDS one once it arrived).
    pub(crate) listener_routes: FnvHashMap<String, Arc<RouteConfig>>,
}

impl Snapshot {
    pub fn route_config(&self, listener: &str) -> Option<&RouteConfig> {
        self.listener_routes.get(listener).map(|rc| &**rc)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ListenerState {
    Active {
        address: SocketAddr,
    },
    /// Waiting for its RDS route configuration.
    Warming {
        route_config: String,
    },
    /// Could not bind (Envoy's text). Tried again with the next configuration that has it;
    /// the xDS client NACKs the update and takes the listener out of its configuration.
    Failed {
        error: String,
    },
    /// Stopped by `/drain_listeners`; not started again.
    Stopped {
        address: SocketAddr,
    },
}

/// Envoy's `ServerInfo.State`, for `/ready` and `/server_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// No configuration applied yet.
    PreInitializing,
    Live,
    /// Health checks failed by `/healthcheck/fail`, or the process is shutting down.
    Draining,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::PreInitializing => "PRE_INITIALIZING",
            ServerState::Live => "LIVE",
            ServerState::Draining => "DRAINING",
        }
    }
}

/// `/drain_listeners`: which listeners, and whether they keep accepting for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainListeners {
    /// Only listeners whose `traffic_direction` is `INBOUND`.
    pub inbound_only: bool,
    /// Keep accepting for the drain timeout before stopping (connections drain meanwhile).
    pub graceful: bool,
    /// Drain connections but never stop the listeners.
    pub skip_exit: bool,
}

/// Asked of the runtime by the admin API.
#[derive(Debug)]
pub(crate) enum Command {
    HealthCheck { failed: bool },
    DrainListeners(DrainListeners),
}

#[derive(Debug, Clone, Serialize)]
pub struct ListenerStatus {
    pub name: String,
    pub configured_address: SocketAddr,
    #[serde(flatten)]
    pub state: ListenerState,
}

/// State shared by the runtime, the data path and the admin API.
pub(crate) struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub listeners: ArcSwap<BTreeMap<String, ListenerStatus>>,
    pub stats: Registry,
    pub xds: Arc<XdsStats>,
    pub conn_limit: Arc<Semaphore>,
    pub unproven: Unproven,
    pub ready: AtomicBool,
    /// The latest configuration applied, listeners included, and what failed of it.
    pub applied: watch::Sender<ApplyReport>,
    pub options: ProxyOptions,
    pub started: Instant,
    pub started_at: SystemTime,
    /// When the first process of a chain of restarts started (`uptime_all_epochs`).
    pub first_started_at: Mutex<SystemTime>,
    pub health_check_failed: AtomicBool,
    /// The process is shutting down (its listeners drain).
    pub shutting_down: AtomicBool,
    pub commands: mpsc::UnboundedSender<Command>,
    /// Set by `/quitquitquit`; the wiring that owns the process watches it.
    pub exit: watch::Sender<bool>,
    /// The listening socket of each running listener by configured address, for a restarted
    /// process to take over (ports fixed in the configuration only).
    pub sockets: Mutex<FnvHashMap<SocketAddr, Arc<TcpListener>>>,
}

/// A cheap handle on a running proxy, for the admin API and tests.
#[derive(Clone)]
pub struct ProxyHandle {
    pub(crate) shared: Arc<Shared>,
}

impl ProxyHandle {
    /// True once a non-empty configuration has been applied.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Relaxed)
    }

    pub fn server_state(&self) -> ServerState {
        let shared = &self.shared;
        if !shared.ready.load(Relaxed) {
            ServerState::PreInitializing
        } else if shared.health_check_failed.load(Relaxed) || shared.shutting_down.load(Relaxed) {
            ServerState::Draining
        } else {
            ServerState::Live
        }
    }

    pub fn uptime(&self) -> Duration {
        self.shared.started.elapsed()
    }

    pub fn started_at(&self) -> SystemTime {
        self.shared.started_at
    }

    /// When the first of the processes this one replaced (through restarts) started.
    pub fn first_started_at(&self) -> SystemTime {
        *self
            .shared
            .first_started_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_first_started_at(&self, at: SystemTime) {
        *self
            .shared
            .first_started_at
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = at;
    }

    /// `/healthcheck/fail` and `/healthcheck/ok`: while failed, `/ready` answers 503
    /// DRAINING and every listener's connections drain (HTTP/1.1 responses say
    /// `Connection: close`, HTTP/2 gets GOAWAY), as in Envoy; listeners keep accepting.
    pub fn set_health_check_failed(&self, failed: bool) {
        self.shared.health_check_failed.store(failed, Relaxed);
        let _ = self.shared.commands.send(Command::HealthCheck { failed });
    }

    pub fn drain_listeners(&self, how: DrainListeners) {
        let _ = self.shared.commands.send(Command::DrainListeners(how));
    }

    /// `/quitquitquit`: asks whoever runs the process to shut it down.
    pub fn request_exit(&self) {
        self.shared.exit.send_replace(true);
    }

    /// Resolves once an exit was asked for.
    pub async fn exit_requested(&self) {
        let mut exit = self.shared.exit.subscribe();
        let _ = exit.wait_for(|asked| *asked).await;
    }

    /// The listening socket of the running listener configured at `addr`.
    pub fn listening_socket(&self, addr: SocketAddr) -> Option<Arc<TcpListener>> {
        self.shared
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)
            .cloned()
    }

    /// Resolves once the listeners from the control plane (LDS) are applied and every one
    /// of them is started (none waiting for its routes); one that failed to bind counts as
    /// settled. What a restarted process waits for before the old one stops accepting.
    pub async fn wait_serving(&self) {
        let mut applied = self.shared.applied.subscribe();
        let shared = Arc::clone(&self.shared);
        let _ = applied
            .wait_for(|report| {
                report.config.versions.contains_key("LDS")
                    && !shared
                        .listeners
                        .load()
                        .values()
                        .any(|l| matches!(l.state, ListenerState::Warming { .. }))
            })
            .await;
    }

    /// The address a listener is accepting on (the bound one, when configured with port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        match &self.shared.listeners.load().get(name)?.state {
            ListenerState::Active { address } => Some(*address),
            _ => None,
        }
    }

    pub fn listeners(&self) -> Arc<BTreeMap<String, ListenerStatus>> {
        self.shared.listeners.load_full()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    pub fn xds_stats(&self) -> &XdsStats {
        &self.shared.xds
    }

    /// Waits until `config` (the latest one published) has been applied, listeners included.
    pub async fn wait_applied(&self, config: &Arc<ProxyConfig>) {
        let mut applied = self.shared.applied.subscribe();
        let _ = applied
            .wait_for(|report| Arc::ptr_eq(&report.config, config))
            .await;
    }

    /// Every configuration the runtime applies, with what failed of it: what the xDS client
    /// waits for before answering an LDS response ([`crate::xds::run`]).
    pub fn apply_reports(&self) -> watch::Receiver<ApplyReport> {
        self.shared.applied.subscribe()
    }

    /// Counters for `/stats` and `/stats/prometheus`.
    pub fn stats(&self) -> StatsView {
        let snapshot = self.shared.snapshot.load();
        let membership: BTreeMap<String, ClusterMembership> = snapshot
            .clusters
            .iter()
            .map(|(name, c)| {
                let endpoints = c.balancer.endpoints();
                let healthy = endpoints.iter().filter(|e| e.healthy).count() as u64;
                (
                    name.clone(),
                    ClusterMembership {
                        healthy,
                        total: endpoints.len() as u64,
                    },
                )
            })
            .collect();
        StatsView::gather(
            &self.shared.stats,
            &self.shared.xds.view(),
            self.is_ready(),
            &membership,
        )
    }
}
