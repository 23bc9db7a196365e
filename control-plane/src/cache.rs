//! The published configuration of every proxy: one immutable map, replaced whole on each
//! change, that ADS streams watch.

use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;

use crate::snapshot::Snapshot;

/// Snapshots by proxy ID (the xDS `node.id`).
pub type Snapshots = Arc<HashMap<String, Arc<Snapshot>>>;

#[derive(Clone)]
pub struct SnapshotCache {
    tx: Arc<watch::Sender<Snapshots>>,
    empty: Arc<Snapshot>,
}

impl Default for SnapshotCache {
    fn default() -> Self {
        SnapshotCache {
            tx: Arc::new(watch::Sender::new(Arc::default())),
            empty: Arc::new(Snapshot::empty()),
        }
    }
}

impl SnapshotCache {
    /// The snapshot of `node_id`; an empty, valid one for a proxy the registry does not know.
    pub fn get(&self, node_id: &str) -> Arc<Snapshot> {
        self.tx
            .borrow()
            .get(node_id)
            .cloned()
            .unwrap_or_else(|| Arc::clone(&self.empty))
    }

    /// Publishes a new set of snapshots; streams whose snapshot changed push it.
    pub fn publish(&self, snapshots: HashMap<String, Arc<Snapshot>>) {
        self.tx.send_replace(Arc::new(snapshots));
    }

    /// Changes after this call wake the receiver.
    pub fn subscribe(&self) -> watch::Receiver<Snapshots> {
        self.tx.subscribe()
    }

    pub fn all(&self) -> Snapshots {
        self.tx.borrow().clone()
    }
}
