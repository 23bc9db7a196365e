//! Wires the pieces together: registry watch -> translation -> snapshot cache -> ADS, and the
//! admin API that reports each proxy's sync state.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mesh_drain::Watch;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::future::IntoFuture as _;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

use crate::ads::{self, AdsServer};
use crate::cache::SnapshotCache;
use crate::model::EntryProblem;
use crate::snapshot::ResourceType;
use crate::status::{NodeFacts, ProxyState, StatusTracker, StreamStatus, proxy_state};
use crate::translate;
use crate::watch::{RegistryHealth, RegistryWatch};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("ADS server failed: {0}")]
    Ads(String),
    #[error("admin server failed: {0}")]
    Admin(#[from] std::io::Error),
}

/// Shared by the translator and the admin API.
struct Shared {
    cache: SnapshotCache,
    status: Arc<StatusTracker>,
    watch: RegistryWatch,
    translate_errors: Mutex<BTreeMap<String, String>>,
}

/// How long admin connections get to finish once the control plane drains.
const ADMIN_DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the control plane on already-bound listeners until `drain` starts: then the ADS
/// streams end (UNAVAILABLE) and both servers close their connections.
pub async fn run(
    registry_url: &str,
    xds: TcpListener,
    admin: TcpListener,
    drain: Watch,
) -> Result<(), ServerError> {
    let shared = Arc::new(Shared {
        cache: SnapshotCache::default(),
        status: Arc::new(StatusTracker::new()),
        watch: RegistryWatch::start(registry_url),
        translate_errors: Mutex::new(BTreeMap::new()),
    });
    let translator = tokio::spawn(translate_loop(Arc::clone(&shared)));
    let app = axum::Router::new()
        .route("/status", get(status))
        .route("/ready", get(ready))
        .with_state(Arc::clone(&shared));
    let admin_server = mesh_drain::run_with_drain(drain.clone(), ADMIN_DRAIN_DEADLINE, |server| {
        axum::serve(admin, app)
            .with_graceful_shutdown(server.signaled())
            .into_future()
    });
    let ads_server = ads::serve(
        xds,
        AdsServer::new(shared.cache.clone(), Arc::clone(&shared.status)),
        drain,
    );
    let (a, b) = tokio::join!(
        async {
            admin_server
                .await
                .unwrap_or(Ok(()))
                .map_err(ServerError::Admin)
        },
        async {
            ads_server
                .await
                .map_err(|e| ServerError::Ads(e.to_string()))
        }
    );
    translator.abort();
    a.and(b)
}

/// Turns every new registry view into snapshots. A proxy whose translation fails keeps its
/// last good snapshot, and the error is reported in the status.
async fn translate_loop(shared: Arc<Shared>) {
    let mut views = shared.watch.views.clone();
    while views.changed().await.is_ok() {
        let view = views.borrow_and_update().clone();
        let (mut snapshots, errors) = translate::all_snapshots(&view);
        let previous = shared.cache.all();
        let mut error_map = BTreeMap::new();
        for (proxy, error) in errors {
            tracing::warn!(%proxy, %error, "cannot translate proxy configuration; keeping its last good one");
            if let Some(last) = previous.get(&proxy) {
                snapshots.insert(proxy.clone(), Arc::clone(last));
            }
            error_map.insert(proxy, error.to_string());
        }
        *shared
            .translate_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = error_map;
        let changed = snapshots.len() != previous.len()
            || snapshots
                .iter()
                .any(|(k, v)| previous.get(k).is_none_or(|p| p != v));
        if changed {
            shared
                .cache
                .publish(snapshots.into_iter().collect::<HashMap<_, _>>());
        }
    }
}

#[derive(Serialize)]
struct ProxyView {
    #[serde(flatten)]
    state: ProxyState,
    #[serde(flatten)]
    stream: StreamStatus,
    current_versions: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct StatusView {
    registry: RegistryHealth,
    proxies: Vec<ProxyView>,
    translate_errors: BTreeMap<String, String>,
    /// Config entries the control plane uses only in part, or not at all.
    config_entries: Vec<EntryProblem>,
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    let registry = shared.watch.health();
    let view = shared.watch.views.borrow().clone();
    let translate_errors = shared
        .translate_errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let proxies = shared
        .status
        .streams()
        .into_iter()
        .map(|stream| {
            let snapshot = shared.cache.get(&stream.node_id);
            let facts = NodeFacts {
                registered: registry
                    .synced
                    .then(|| view.proxy(&stream.node_id).is_some()),
                config_error: translate_errors.get(&stream.node_id).map(String::as_str),
            };
            ProxyView {
                state: proxy_state(&stream, &snapshot, facts),
                current_versions: ResourceType::ALL
                    .into_iter()
                    .map(|t| (t.short(), snapshot.version(t).to_string()))
                    .collect(),
                stream,
            }
        })
        .collect();
    let view = StatusView {
        registry,
        proxies,
        translate_errors,
        config_entries: view.entry_problems.clone(),
    };
    axum::Json(view).into_response()
}

/// Ready once the first complete view of the registry has been translated.
async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    if shared.watch.health().synced {
        (axum::http::StatusCode::OK, "ready\n").into_response()
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the registry\n",
        )
            .into_response()
    }
}
