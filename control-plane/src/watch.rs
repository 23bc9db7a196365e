//! Watches the registry through Consul's HTTP API only (so a real Consul works too): the
//! catalog's service list, each service's health, and each config-entry kind, every one a
//! blocking-query loop. Results flow to one aggregator that owns the [`RegistryView`].
//!
//! Index rules (Consul's "blocking queries" page): block on the last index; reset to 0 when
//! it goes backwards; never spin (a minimum interval between queries that return at once);
//! back off exponentially on errors. While the registry is unreachable the last view stays.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mesh_proto::config_entry::{ConfigEntry, ConfigEntryError, ConfigKind};
use mesh_proto::consul::ServiceEntry;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::model::{EntryProblem, RegistryView};

/// How long each blocking query waits at most.
const WAIT: &str = "5m";
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A query that returns at once with an unchanged index is not repeated faster than this.
const MIN_REQUERY: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{url}: {reason}")]
    Request { url: String, reason: String },
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: missing or bad X-Consul-Index")]
    NoIndex { url: String },
    #[error("{url}: cannot decode answer: {reason}")]
    Decode { url: String, reason: String },
}

/// Whether the registry is reachable, for logs and the admin status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RegistryHealth {
    pub url: String,
    pub reachable: bool,
    pub last_error: Option<String>,
    pub last_ok_unix_ms: u64,
    /// True once every watch has answered at least once.
    pub synced: bool,
}

#[derive(Debug)]
enum Update {
    Services(HashSet<String>),
    Health(String, Vec<ServiceEntry>),
    Config(ConfigKind, Vec<ConfigEntry>, Vec<EntryProblem>),
    Ok,
    Failed(String),
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

#[derive(Clone)]
struct Fetcher {
    client: HttpClient,
    base: String,
}

impl Fetcher {
    /// One blocking GET; returns the new index and the decoded body.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        index: u64,
    ) -> Result<(u64, T), WatchError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}{path}{sep}index={index}&wait={WAIT}", self.base);
        let req_err = |reason: String| WatchError::Request {
            url: url.clone(),
            reason,
        };
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| req_err(e.to_string()))?;
        let resp = self
            .client
            .get(uri)
            .await
            .map_err(|e| req_err(e.to_string()))?;
        let status = resp.status().as_u16();
        let new_index = resp
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| req_err(e.to_string()))?
            .to_bytes();
        if status != 200 {
            let body = String::from_utf8_lossy(&body).trim().to_string();
            return Err(WatchError::Status { url, status, body });
        }
        let new_index = new_index.ok_or_else(|| WatchError::NoIndex { url: url.clone() })?;
        let value = serde_json::from_slice(&body).map_err(|e| WatchError::Decode {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        Ok((new_index, value))
    }
}

/// Consul's rule for the next index to block on.
pub fn next_index(previous: u64, returned: u64) -> u64 {
    if returned < previous { 0 } else { returned }
}

/// Capped exponential backoff with jitter.
fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF_MIN
        .saturating_mul(1u32 << attempt.min(8))
        .min(BACKOFF_MAX);
    base / 2 + Duration::from_millis(fastrand::u64(0..=base.as_millis() as u64 / 2))
}

/// Runs one blocking-query loop forever, sending each changed result through `on_change`.
async fn watch_loop<T, F>(
    fetcher: Fetcher,
    path: String,
    updates: mpsc::UnboundedSender<Update>,
    on_change: F,
) where
    T: serde::de::DeserializeOwned,
    F: Fn(T) -> Option<Update>,
{
    let mut index = 0u64;
    let mut failures = 0u32;
    loop {
        let started = tokio::time::Instant::now();
        match fetcher.get::<T>(&path, index).await {
            Ok((new_index, value)) => {
                if failures > 0 {
                    let _ = updates.send(Update::Ok);
                }
                failures = 0;
                let changed = index == 0 || new_index != index;
                index = next_index(index, new_index);
                if changed {
                    match on_change(value) {
                        Some(update) => {
                            if updates.send(update).is_err() {
                                return;
                            }
                        }
                        None => {
                            let _ = updates.send(Update::Ok);
                        }
                    }
                }
                let elapsed = started.elapsed();
                if elapsed < MIN_REQUERY {
                    tokio::time::sleep(MIN_REQUERY - elapsed).await;
                }
            }
            Err(e) => {
                if updates.send(Update::Failed(e.to_string())).is_err() {
                    return;
                }
                // The registry may have restarted with a lower index: start over.
                index = 0;
                tokio::time::sleep(backoff(failures)).await;
                failures = failures.saturating_add(1);
            }
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The running watch: the latest complete view and the registry's reachability.
pub struct RegistryWatch {
    pub views: watch::Receiver<Arc<RegistryView>>,
    pub health: Arc<Mutex<RegistryHealth>>,
    task: JoinHandle<()>,
}

impl Drop for RegistryWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RegistryWatch {
    /// Starts watching the Consul HTTP API at `registry_url` (e.g. `http://127.0.0.1:8500`).
    /// The first view is published once every watch has answered.
    pub fn start(registry_url: &str) -> RegistryWatch {
        let base = registry_url.trim_end_matches('/').to_string();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build_http();
        let fetcher = Fetcher {
            client,
            base: base.clone(),
        };
        let (views_tx, views) = watch::channel(Arc::new(RegistryView::default()));
        let health = Arc::new(Mutex::new(RegistryHealth {
            url: base,
            ..Default::default()
        }));
        let task = tokio::spawn(aggregate(fetcher, views_tx, Arc::clone(&health)));
        RegistryWatch {
            views,
            health,
            task,
        }
    }

    pub fn health(&self) -> RegistryHealth {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Owns the view: starts and stops per-service watches as the catalog changes, applies
/// updates, and publishes a new view after each batch once the initial sync is complete.
async fn aggregate(
    fetcher: Fetcher,
    views: watch::Sender<Arc<RegistryView>>,
    health: Arc<Mutex<RegistryHealth>>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Update>();
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    tasks.push(tokio::spawn(watch_loop(
        fetcher.clone(),
        "/v1/catalog/services".to_string(),
        tx.clone(),
        |services: BTreeMap<String, Vec<String>>| {
            Some(Update::Services(services.into_keys().collect()))
        },
    )));
    for kind in ConfigKind::ALL {
        tasks.push(tokio::spawn(watch_loop(
            fetcher.clone(),
            format!("/v1/config/{}", kind.as_str()),
            tx.clone(),
            move |entries: Vec<serde_json::Value>| {
                let (entries, problems) = parse_entries(kind, entries);
                Some(Update::Config(kind, entries, problems))
            },
        )));
    }
    let mut service_tasks: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut pending: HashSet<String> = ConfigKind::ALL
        .iter()
        .map(|k| format!("config:{}", k.as_str()))
        .collect();
    pending.insert("catalog".to_string());
    let mut view = RegistryView::default();
    let mut was_reachable = true;
    // Changes seen but not yet published. It survives batches: changes that arrive before
    // every watch has answered are published with the batch that completes the sync, even
    // when that batch changes nothing itself (an empty config kind answering last).
    let mut unpublished = true;

    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut changed = false;
        for update in batch {
            match update {
                Update::Services(names) => {
                    pending.remove("catalog");
                    service_tasks.retain(|name, task| {
                        let keep = names.contains(name);
                        if !keep {
                            task.abort();
                        }
                        keep
                    });
                    for name in &names {
                        if service_tasks.contains_key(name) {
                            continue;
                        }
                        pending.insert(format!("service:{name}"));
                        let service = name.clone();
                        service_tasks.insert(
                            name.clone(),
                            tokio::spawn(watch_loop(
                                fetcher.clone(),
                                format!("/v1/health/service/{}", path_escape(name)),
                                tx.clone(),
                                move |entries: Vec<ServiceEntry>| {
                                    Some(Update::Health(service.clone(), entries))
                                },
                            )),
                        );
                    }
                    let before = view.services.len();
                    view.services.retain(|name, _| names.contains(name));
                    pending
                        .retain(|p| p.strip_prefix("service:").is_none_or(|n| names.contains(n)));
                    changed |= view.services.len() != before;
                    mark_ok(&health, &mut was_reachable);
                }
                Update::Health(name, entries) => {
                    pending.remove(&format!("service:{name}"));
                    if service_tasks.contains_key(&name)
                        && view.services.get(&name) != Some(&entries)
                    {
                        view.services.insert(name, entries);
                        changed = true;
                    }
                    mark_ok(&health, &mut was_reachable);
                }
                Update::Config(kind, entries, problems) => {
                    pending.remove(&format!("config:{}", kind.as_str()));
                    let before: Vec<ConfigEntry> = view
                        .config
                        .iter()
                        .filter(|((k, _), _)| *k == kind)
                        .map(|(_, e)| e.clone())
                        .collect();
                    if before != entries {
                        view.config.retain(|(k, _), _| *k != kind);
                        for e in entries {
                            view.config.insert((kind, e.name().to_string()), e);
                        }
                        changed = true;
                    }
                    let problems_before = view.entry_problems.iter().filter(|p| p.kind == kind);
                    if !problems_before.eq(problems.iter()) {
                        view.entry_problems.retain(|p| p.kind != kind);
                        view.entry_problems.extend(problems);
                        view.entry_problems
                            .sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
                        changed = true;
                    }
                    mark_ok(&health, &mut was_reachable);
                }
                Update::Ok => mark_ok(&health, &mut was_reachable),
                Update::Failed(error) => {
                    let mut h = health.lock().unwrap_or_else(|e| e.into_inner());
                    if was_reachable {
                        tracing::warn!(%error, "registry unreachable; serving the last good configuration");
                        was_reachable = false;
                    }
                    h.reachable = false;
                    h.last_error = Some(error);
                }
            }
        }
        unpublished |= changed;
        let synced = pending.is_empty();
        health.lock().unwrap_or_else(|e| e.into_inner()).synced |= synced;
        if unpublished && synced {
            views.send_replace(Arc::new(view.clone()));
            unpublished = false;
        }
    }
    for t in tasks.into_iter().chain(service_tasks.into_values()) {
        t.abort();
    }
}

fn mark_ok(health: &Mutex<RegistryHealth>, was_reachable: &mut bool) {
    let mut h = health.lock().unwrap_or_else(|e| e.into_inner());
    if !*was_reachable {
        tracing::info!("registry reachable again");
        *was_reachable = true;
    }
    h.reachable = true;
    h.last_error = None;
    h.last_ok_unix_ms = unix_ms();
}

/// A real Consul holds what this mesh refuses at write: fields it does not honour are left
/// out of an entry, and an entry it cannot read at all is skipped; both are reported in the
/// view (and so in `/status`), not only logged.
fn parse_entries(
    kind: ConfigKind,
    entries: Vec<serde_json::Value>,
) -> (Vec<ConfigEntry>, Vec<EntryProblem>) {
    let mut read = Vec::new();
    let mut problems = Vec::new();
    for value in entries {
        let name = entry_name(&value);
        match ConfigEntry::from_registry(value) {
            Ok((entry, left_out)) => {
                if !left_out.is_empty() {
                    let not_honoured: Vec<String> = left_out.iter().map(left_out_field).collect();
                    tracing::warn!(kind = kind.as_str(), name = entry.name(), not_honoured = ?not_honoured, "using a config entry without the fields this mesh does not honour");
                    problems.push(EntryProblem {
                        kind,
                        name: entry.name().to_string(),
                        not_honoured,
                        ignored: None,
                    });
                }
                read.push(entry);
            }
            Err(error) => {
                tracing::warn!(kind = kind.as_str(), %name, %error, "skipping a config entry the control plane cannot read");
                problems.push(EntryProblem {
                    kind,
                    name,
                    not_honoured: Vec::new(),
                    ignored: Some(error.to_string()),
                });
            }
        }
    }
    (read, problems)
}

/// A field left out of an entry, named first.
fn left_out_field(error: &ConfigEntryError) -> String {
    match error {
        // Only top-level ones are left out; the fields it could have been are noise here.
        ConfigEntryError::UnknownField { field, .. } => format!("{field}: unknown to this mesh"),
        other => other.to_string(),
    }
}

/// An entry's `Name` as the registry wrote it (any key case), for reporting one that cannot
/// be read.
fn entry_name(value: &serde_json::Value) -> String {
    value
        .as_object()
        .and_then(|map| map.iter().find(|(k, _)| k.eq_ignore_ascii_case("name")))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or("?")
        .to_string()
}

/// Service names are DNS-like, but escape anything that would break the path.
fn path_escape(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_a_real_consul_holds_are_used_in_part_and_reported() {
        let (entries, problems) = parse_entries(
            ConfigKind::ServiceDefaults,
            vec![
                serde_json::json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http",
                    "NewConsulField": "x", "CreateIndex": 7}),
                serde_json::json!({"Kind": "service-defaults", "Name": "api", "Protocol": 5}),
                serde_json::json!({"Kind": "service-defaults", "Name": "db"}),
            ],
        );
        let names: Vec<&str> = entries.iter().map(ConfigEntry::name).collect();
        assert_eq!(names, ["web", "db"]);
        assert_eq!(entries[0].to_json()["Protocol"], "http");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].name, "web");
        assert_eq!(
            problems[0].not_honoured,
            ["NewConsulField: unknown to this mesh"]
        );
        assert_eq!(problems[0].ignored, None);
        assert_eq!(problems[1].name, "api");
        assert!(problems[1].not_honoured.is_empty());
        assert!(
            problems[1]
                .ignored
                .as_deref()
                .is_some_and(|e| e.starts_with("Protocol: "))
        );
    }

    #[test]
    fn index_resets_when_it_goes_backwards() {
        assert_eq!(next_index(10, 12), 12);
        assert_eq!(next_index(10, 10), 10);
        assert_eq!(next_index(10, 3), 0);
    }

    #[test]
    fn backoff_is_capped_and_grows() {
        assert!(backoff(0) <= BACKOFF_MIN);
        assert!(backoff(3) >= BACKOFF_MIN * 4);
        for attempt in [10, 20, 40] {
            assert!(backoff(attempt) <= BACKOFF_MAX);
            assert!(backoff(attempt) >= BACKOFF_MAX / 2);
        }
    }

    #[test]
    fn escapes_odd_service_names() {
        assert_eq!(path_escape("web-v1"), "web-v1");
        assert_eq!(path_escape("a b/c"), "a%20b%2Fc");
    }
}
