//! A Consul-compatible service registry: services, health checks, blocking queries, KV and L7
//! config entries, durable on disk. See ARCHITECTURE.md for how the pieces fit.

pub mod agent;
pub mod api;
pub mod checks;
pub mod db;
pub mod state;
pub mod store;
pub mod tombstones;

use mesh_drain::{Signal, Watch};
use mesh_proto::consul::Node;
use std::future::{Future, IntoFuture as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

use crate::checks::CheckRunner;
use crate::store::{Store, StoreError};

/// The Consul version whose API this registry follows, reported by `/v1/agent/self`.
pub const CONSUL_COMPAT_VERSION: &str = "1.20.0";

/// How long the HTTP server's connections get to finish once it drains. Blocking queries
/// end at once on drain, so only requests in flight are waited for.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub data_dir: PathBuf,
    /// The registry's own node, which agent registrations land on.
    pub node_name: String,
    pub datacenter: String,
    /// The address reported for the node and as the leader.
    pub advertise_addr: String,
    /// How long a deleted KV key's tombstone is kept (see [`tombstones`]).
    pub tombstone_ttl: Duration,
}

impl RegistryConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> RegistryConfig {
        RegistryConfig {
            data_dir: data_dir.into(),
            node_name: "mesh".to_string(),
            datacenter: "dc1".to_string(),
            advertise_addr: "127.0.0.1".to_string(),
            tombstone_ttl: tombstones::DEFAULT_TTL,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("HTTP server failed: {0}")]
    Serve(#[from] std::io::Error),
}

pub struct Registry {
    pub config: RegistryConfig,
    pub node_id: String,
    pub store: Arc<Store>,
    pub checks: Arc<CheckRunner>,
    /// The registry's own drain: ends blocking queries, checks and reapers.
    lifecycle: Signal,
    drain: Watch,
}

impl Registry {
    /// Opens (or creates) the data directory, registers the local node and starts its checks.
    /// Must be called inside a Tokio runtime.
    pub async fn open(config: RegistryConfig) -> Result<Arc<Registry>, RegistryError> {
        let store = Arc::new(Store::open(&config.data_dir)?);
        let existing_id = store
            .read()
            .nodes
            .get(&config.node_name)
            .map(|n| n.id.clone());
        let node_id = existing_id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(new_node_id);
        store
            .ensure_node(Node {
                id: node_id.clone(),
                node: config.node_name.clone(),
                address: config.advertise_addr.clone(),
                datacenter: config.datacenter.clone(),
                tagged_addresses: [
                    ("lan".to_string(), config.advertise_addr.clone()),
                    ("wan".to_string(), config.advertise_addr.clone()),
                ]
                .into(),
                ..Node::default()
            })
            .await?;
        let (lifecycle, drain) = mesh_drain::channel();
        let checks = CheckRunner::new(Arc::clone(&store), config.node_name.clone(), drain.clone());
        checks.reconcile();
        tokio::spawn(Arc::clone(&checks).run_reaper(Duration::from_secs(1)));
        // Consul reaps with a granularity of 30 s; a short TTL (tests) is checked more often.
        tokio::spawn(until_drained(
            drain.clone(),
            tombstones::run_reaper(
                Arc::clone(&store),
                config.tombstone_ttl,
                (config.tombstone_ttl / 4)
                    .clamp(Duration::from_millis(10), Duration::from_secs(30)),
            ),
        ));
        Ok(Arc::new(Registry {
            config,
            node_id,
            store,
            checks,
            lifecycle,
            drain,
        }))
    }

    pub fn leader_addr(&self) -> String {
        format!("{}:8300", self.config.advertise_addr)
    }

    /// Stops the checks and reapers and ends blocked queries.
    pub fn shut_down(&self) {
        self.lifecycle.start();
    }

    /// The registry's drain, for work that must end when it shuts down.
    pub fn drain(&self) -> Watch {
        self.drain.clone()
    }
}

/// Runs `work` until `drain` starts.
pub(crate) async fn until_drained(mut drain: Watch, work: impl Future<Output = ()>) {
    tokio::select! {
        () = work => {}
        () = drain.draining() => {}
    }
}

fn new_node_id() -> String {
    let hex: String = (0..32)
        .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Serves the registry's HTTP API on `listener` until `drain` starts: then the registry
/// shuts down (blocking queries answer at once) and connections get a few seconds to finish.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    drain: Watch,
) -> Result<(), RegistryError> {
    let app = api::router(Arc::clone(&registry));
    let served = mesh_drain::run_with_drain(drain, DRAIN_DEADLINE, |server| {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                server.signaled().await;
                registry.shut_down();
            })
            .into_future()
    })
    .await;
    served.unwrap_or(Ok(()))?;
    Ok(())
}

/// Binds `addr` (port 0 allowed), then serves; returns the bound address and the server task.
pub async fn spawn(
    addr: SocketAddr,
    config: RegistryConfig,
    drain: Watch,
) -> Result<
    (
        SocketAddr,
        tokio::task::JoinHandle<Result<(), RegistryError>>,
    ),
    RegistryError,
> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let registry = Registry::open(config).await?;
    Ok((bound, tokio::spawn(serve(listener, registry, drain))))
}
