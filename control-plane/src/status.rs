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
#[serde(rename_all = "UPPERCASE")]
pub enum SyncState {
    /// Every requested type ACKed at the snapshot's version.
    Synced,
    /// Something is not (yet) ACKed at the snapshot's version: in flight, or waiting for the
    /// client to ACK an earlier response.
    Stale,
    /// The proxy rejected the version it was last sent for some type.
    Nacked,
}

/// Compares what a stream ACKed with the snapshot the control plane holds for its node.
pub fn sync_state(stream: &StreamStatus, snapshot: &Snapshot) -> SyncState {
    let nacked = stream.types.values().any(|s| {
        s.last_nack.is_some()
            && s.nack_version.is_some()
            && s.nack_version == s.sent_version
            && s.acked_version != s.sent_version
    });
    if nacked {
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
}
