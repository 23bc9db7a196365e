//! Reaping of KV tombstones. A delete leaves an index entry for the key so that watchers of
//! the key or a prefix above it see the delete (see `State::kv_index`); like Consul, the
//! registry forgets such entries once they are older than a time to live (Consul: 15 minutes),
//! long enough for every watcher to have seen the delete.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use crate::store::Store;

/// Consul's `TombstoneTTL`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);

/// The store's last index as sampled over time: the index below which every write is at
/// least a time to live old.
#[derive(Debug, Default)]
pub struct Horizon {
    samples: VecDeque<(Instant, u64)>,
}

impl Horizon {
    /// Records that the store's last index was `index` at `now`, and returns the newest
    /// sampled index that is at least `ttl` old, if a sample became that old since the last
    /// call. Every write at or below it happened `ttl` or longer before `now`.
    pub fn advance(&mut self, now: Instant, index: u64, ttl: Duration) -> Option<u64> {
        self.samples.push_back((now, index));
        let mut horizon = None;
        while let Some(&(at, index)) = self.samples.front() {
            if now.saturating_duration_since(at) < ttl {
                break;
            }
            horizon = Some(index);
            self.samples.pop_front();
        }
        horizon
    }
}

/// Every `period`, reaps the tombstones of deletes that are `ttl` old. Tombstones written
/// before the registry started are reaped `ttl` after the start.
pub async fn run_reaper(store: Arc<Store>, ttl: Duration, period: Duration) {
    let mut horizon = Horizon::default();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let last = store.read().last_index();
        let Some(below) = horizon.advance(Instant::now(), last, ttl) else {
            continue;
        };
        match store.reap_kv_tombstones(below).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(tombstones = n, index = below, "reaped KV tombstones"),
            Err(e) => tracing::warn!(error = %e, "cannot reap KV tombstones"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_horizon_is_the_newest_index_a_ttl_old() {
        let ttl = Duration::from_secs(60);
        let start = Instant::now();
        let mut h = Horizon::default();
        assert_eq!(h.advance(start, 5, ttl), None);
        assert_eq!(h.advance(start + Duration::from_secs(30), 9, ttl), None);
        // Both earlier samples are a minute old now; the newer of them bounds the reaping.
        assert_eq!(h.advance(start + Duration::from_secs(90), 12, ttl), Some(9));
        // Nothing else has aged since.
        assert_eq!(h.advance(start + Duration::from_secs(100), 12, ttl), None);
        assert_eq!(
            h.advance(start + Duration::from_secs(150), 20, ttl),
            Some(12)
        );
    }

    #[tokio::test]
    async fn an_open_registry_reaps_tombstones_after_their_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::RegistryConfig::new(dir.path());
        config.tombstone_ttl = Duration::from_millis(200);
        let registry = crate::Registry::open(config).await.unwrap();
        let store = &registry.store;
        store.kv_put("lock/a", b"held", None, None).await.unwrap();
        store.kv_put("lock/b", b"held", None, None).await.unwrap();
        store.kv_delete("lock/a", false, None).await.unwrap();
        let tombstone = |store: &Store| store.read().indexes.contains_key("kvtomb:lock/a");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tombstone(store) {
            assert!(
                std::time::Instant::now() < deadline,
                "tombstone never reaped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The live key is untouched, and the key's index still never reads below 1.
        assert!(store.read().kv.contains_key("lock/b"));
        assert!(store.read().kv_index("lock/a", true) >= 1);
        registry.shut_down();
    }
}
