//! What every connected xDS stream was sent, ACKed and NACKed: the control plane's view of each
//! proxy, for the admin API. Written by the ADS streams on every send and request; read rarely.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::snapshot::{ResourceType, Snapshot};

/// The ADS variant a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    Sotw,
    Delta,
}

/// One connected stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamStatus {
    /// Unique in this process; a reconnecting proxy gets a new one.
    pub id: u64,
    pub node_id: String,
    pub stream: StreamKind,
    pub connected_at_ms: u64,
    /// Per resource type the proxy has requested, keyed by `ResourceType::short()` ("CDS", ...).
    pub types: BTreeMap<String, TypeStatus>,
}

/// One resource type of one stream. Versions are the snapshot's version of the type
/// (`version_info` in SotW, `system_version_info` in delta).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TypeStatus {
    pub sent_version: Option<String>,
    pub sent_at_ms: Option<u64>,
    pub acked_version: Option<String>,
    pub acked_at_ms: Option<u64>,
    /// The `error_detail` message of the latest NACK (kept after later ACKs, as history).
    pub last_nack: Option<String>,
    /// The version that NACK rejected.
    pub nack_version: Option<String>,
    /// Subscribed resource names, sorted; empty means wildcard.
    pub subscribed: Vec<String>,
}

/// Whether a proxy runs the configuration the control plane holds for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncState {
    /// Every requested type ACKed at the snapshot's version.
    Synced,
    /// Something is not (yet) ACKed at the snapshot's version: in flight, or waiting for the
    /// client to ACK an earlier response.
    Stale,
    /// The proxy rejected the version it was last sent for some type.
    Nacked,
    /// No connect-proxy service has the proxy's node id: it gets an empty configuration.
    Unregistered,
    /// The control plane cannot build the proxy's configuration from the registry; the proxy
    /// keeps the last one that could be built.
    ConfigError,
}

/// Compares what a stream ACKed with the snapshot the control plane holds for its node.
pub fn sync_state(stream: &StreamStatus, snapshot: &Snapshot) -> SyncState {
    if stream.types.values().any(TypeStatus::nacked) {
        return SyncState::Nacked;
    }
    let synced = stream.types.iter().all(|(short, s)| {
        match ResourceType::ALL.into_iter().find(|t| t.short() == short) {
            Some(t) => s.acked_version.as_deref() == Some(snapshot.version(t)),
            None => true,
        }
    });
    if synced {
        SyncState::Synced
    } else {
        SyncState::Stale
    }
}

impl TypeStatus {
    /// The proxy rejected the version it was last sent (and has not ACKed it since).
    pub fn nacked(&self) -> bool {
        self.last_nack.is_some()
            && self.nack_version.is_some()
            && self.nack_version == self.sent_version
            && self.acked_version != self.sent_version
    }
}

/// What the control plane knows of a node besides its stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeFacts<'a> {
    /// Whether a connect-proxy service has the node's id; `None` until the registry has been
    /// read once.
    pub registered: Option<bool>,
    /// Why the node's configuration cannot be built from the current registry view.
    pub config_error: Option<&'a str>,
}

/// A proxy's state and, unless it is in sync, why, one line per reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProxyState {
    pub state: SyncState,
    pub reasons: Vec<String>,
}

/// The state `mesh status` shows. The worst fact wins: no registration, then a configuration
/// that cannot be built, then a NACK, then anything not yet ACKed. Every reason that applies
/// is listed, NACK messages on one line each.
pub fn proxy_state(stream: &StreamStatus, snapshot: &Snapshot, facts: NodeFacts) -> ProxyState {
    let mut reasons = Vec::new();
    let mut state = sync_state(stream, snapshot);
    if facts.registered.is_none() {
        reasons.push("the control plane has not read the registry yet".to_string());
        if state == SyncState::Synced {
            state = SyncState::Stale;
        }
    }
    if let Some(error) = facts.config_error {
        reasons.push(format!("configuration not updated: {error}"));
        state = SyncState::ConfigError;
    }
    for (short, s) in &stream.types {
        if s.nacked() {
            let message = s.last_nack.as_deref().unwrap_or_default();
            reasons.push(format!("{short} rejected: {}", one_line(message)));
        }
    }
    if facts.registered == Some(false) {
        reasons.insert(
            0,
            format!(
                "no connect-proxy service with ID {:?} is registered; the proxy gets an empty configuration",
                stream.node_id
            ),
        );
        state = SyncState::Unregistered;
    }
    ProxyState { state, reasons }
}

/// A multi-line message (Envoy ends each failed listener's line with a newline) as one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every connected stream. Share it as `Arc<StatusTracker>`.
#[derive(Debug, Default)]
pub struct StatusTracker {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    streams: HashMap<u64, StreamStatus>,
}

impl StatusTracker {
    pub fn new() -> StatusTracker {
        StatusTracker::default()
    }

    /// Every connected stream, sorted by node id (then stream id).
    pub fn streams(&self) -> Vec<StreamStatus> {
        let mut out: Vec<StreamStatus> = self.lock().streams.values().cloned().collect();
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id).then(a.id.cmp(&b.id)));
        out
    }

    /// Records a new stream; it is removed when the returned handle is dropped, so a stream
    /// task that ends in any way (client gone, error, shutdown) leaves no entry behind.
    pub fn register(self: &Arc<Self>, node_id: &str, stream: StreamKind) -> StreamHandle {
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.streams.insert(
            id,
            StreamStatus {
                id,
                node_id: node_id.to_string(),
                stream,
                connected_at_ms: now_ms(),
                types: BTreeMap::new(),
            },
        );
        StreamHandle {
            tracker: Arc::clone(self),
            id,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The map stays consistent whatever a panicking holder did: every update is one
        // assignment.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One stream's entry in the tracker; dropping it removes the entry.
#[derive(Debug)]
pub struct StreamHandle {
    tracker: Arc<StatusTracker>,
    id: u64,
}

impl StreamHandle {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The client subscribed (or re-subscribed) to `t`; `names` empty means wildcard.
    pub fn subscribed(&self, t: ResourceType, mut names: Vec<String>) {
        names.sort();
        self.update(t, |s| s.subscribed = names);
    }

    pub fn sent(&self, t: ResourceType, version: &str) {
        self.update(t, |s| {
            s.sent_version = Some(version.to_string());
            s.sent_at_ms = Some(now_ms());
        });
    }

    pub fn acked(&self, t: ResourceType, version: &str) {
        self.update(t, |s| {
            s.acked_version = Some(version.to_string());
            s.acked_at_ms = Some(now_ms());
        });
    }

    pub fn nacked(&self, t: ResourceType, version: &str, message: &str) {
        self.update(t, |s| {
            s.last_nack = Some(message.to_string());
            s.nack_version = Some(version.to_string());
        });
    }

    /// The client already has everything of `version` it subscribed to, without a response
    /// (delta: nothing it cares about changed). Counts as sent and ACKed.
    pub fn in_sync(&self, t: ResourceType, version: &str) {
        self.update(t, |s| {
            if s.acked_version.as_deref() == Some(version) {
                return;
            }
            let now = now_ms();
            s.sent_version = Some(version.to_string());
            s.sent_at_ms = Some(now);
            s.acked_version = Some(version.to_string());
            s.acked_at_ms = Some(now);
        });
    }

    fn update(&self, t: ResourceType, f: impl FnOnce(&mut TypeStatus)) {
        let mut inner = self.tracker.lock();
        if let Some(stream) = inner.streams.get_mut(&self.id) {
            f(stream.types.entry(t.short().to_string()).or_default());
        }
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        self.tracker.lock().streams.remove(&self.id);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;

    fn snapshot(cluster: &str) -> Snapshot {
        Snapshot::new(
            vec![Cluster {
                name: cluster.into(),
                ..Default::default()
            }],
            vec![],
            vec![],
            vec![],
        )
    }

    #[test]
    fn streams_are_listed_by_node_and_removed_on_drop() {
        let tracker = Arc::new(StatusTracker::new());
        let b = tracker.register("b", StreamKind::Delta);
        let a = tracker.register("a", StreamKind::Sotw);
        let nodes: Vec<String> = tracker.streams().into_iter().map(|s| s.node_id).collect();
        assert_eq!(nodes, ["a", "b"]);
        drop(a);
        let left = tracker.streams();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, b.id());
        assert_eq!(left[0].stream, StreamKind::Delta);
    }

    #[test]
    fn sync_state_follows_acks_and_nacks() {
        let tracker = Arc::new(StatusTracker::new());
        let h = tracker.register("a", StreamKind::Sotw);
        let v1 = snapshot("one");
        let v2 = snapshot("two");
        let cds = ResourceType::Cluster;
        let state = |snap: &Snapshot| sync_state(&tracker.streams()[0], snap);

        h.subscribed(cds, vec![]);
        assert_eq!(state(&v1), SyncState::Stale);
        h.sent(cds, v1.version(cds));
        assert_eq!(state(&v1), SyncState::Stale);
        h.acked(cds, v1.version(cds));
        assert_eq!(state(&v1), SyncState::Synced);
        assert_eq!(state(&v2), SyncState::Stale);

        h.sent(cds, v2.version(cds));
        h.nacked(cds, v2.version(cds), "bad cluster");
        assert_eq!(state(&v2), SyncState::Nacked);
        let status = &tracker.streams()[0].types["CDS"];
        assert_eq!(status.last_nack.as_deref(), Some("bad cluster"));
        assert_eq!(status.acked_version.as_deref(), Some(v1.version(cds)));

        let json = serde_json::to_value(state(&v2)).unwrap_or_default();
        assert_eq!(json, "NACKED");
    }

    #[test]
    fn proxy_state_names_the_worst_fact_and_every_reason() {
        let tracker = Arc::new(StatusTracker::new());
        let h = tracker.register("ghost", StreamKind::Sotw);
        let empty = Snapshot::empty();
        let lds = ResourceType::Listener;
        h.subscribed(lds, vec![]);
        h.sent(lds, empty.version(lds));
        h.acked(lds, empty.version(lds));
        let stream = || tracker.streams().remove(0);
        let facts = |registered, config_error| NodeFacts {
            registered,
            config_error,
        };

        // ACKed the empty configuration: in sync, but nothing is registered for it.
        let state = proxy_state(&stream(), &empty, facts(Some(false), None));
        assert_eq!(state.state, SyncState::Unregistered);
        assert_eq!(
            state.reasons,
            [
                "no connect-proxy service with ID \"ghost\" is registered; the proxy gets an empty configuration"
            ]
        );
        assert_eq!(
            proxy_state(&stream(), &empty, facts(Some(true), None)),
            ProxyState {
                state: SyncState::Synced,
                reasons: vec![]
            }
        );
        let before_sync = proxy_state(&stream(), &empty, facts(None, None));
        assert_eq!(before_sync.state, SyncState::Stale);

        // A NACK from Envoy: one line per failed listener, joined.
        let v2 = snapshot("two");
        h.sent(lds, "v2");
        h.nacked(
            lds,
            "v2",
            "Error adding/updating listener(s) a: cannot bind '127.0.0.1:1': Address already in use\nb: cannot bind '127.0.0.1:2': Address already in use\n",
        );
        let nacked = proxy_state(&stream(), &v2, facts(Some(true), None));
        assert_eq!(nacked.state, SyncState::Nacked);
        assert_eq!(
            nacked.reasons,
            [
                "LDS rejected: Error adding/updating listener(s) a: cannot bind '127.0.0.1:1': Address already in use; b: cannot bind '127.0.0.1:2': Address already in use"
            ]
        );

        let broken = proxy_state(
            &stream(),
            &v2,
            facts(Some(true), Some("proxy \"ghost\": boom")),
        );
        assert_eq!(broken.state, SyncState::ConfigError);
        assert_eq!(
            broken.reasons[0],
            "configuration not updated: proxy \"ghost\": boom"
        );
        assert_eq!(broken.reasons.len(), 2);
        assert_eq!(
            serde_json::to_value(broken.state).unwrap_or_default(),
            "CONFIG_ERROR"
        );
        assert_eq!(
            serde_json::to_value(SyncState::Unregistered).unwrap_or_default(),
            "UNREGISTERED"
        );
    }
}
