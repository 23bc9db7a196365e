//! Load balancers over a cluster's endpoints, with Envoy's policies.
//!
//! Everything a policy needs (schedules, cumulative weights, rings, Maglev tables) is built in
//! [`Balancer::new`], off the hot path and over the healthy endpoints only. [`Balancer::pick`]
//! then only reads those tables, touches atomics and the thread-local `fastrand` generator: no
//! locks, no allocation.
//!
//! Contract shared by every policy: `pick` returns a healthy endpoint or `None` when none is
//! healthy (Envoy's panic threshold 0, what Consul sets: unhealthy endpoints are never used).
//! Across the clusters of an aggregate cluster, Envoy's priority levels and their panic
//! threshold are implemented in [`priority`].
//! Endpoints listed in `exclude` are avoided while any healthy endpoint is not excluded; once
//! every healthy endpoint is excluded the exclusion is ignored rather than failing the request.
//! A weight of 0 counts as 1 (Envoy's default for an unset weight).

mod least_request;
mod maglev;
pub mod priority;
mod random;
mod ring_hash;
mod round_robin;
mod xxhash;

use crate::config::{Endpoint, LbPolicy};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

pub use xxhash::{xxhash64, xxhash64_chain};

/// Envoy's default `choice_count` for LEAST_REQUEST.
pub const DEFAULT_CHOICE_COUNT: u32 = 2;
/// Envoy's default `minimum_ring_size` for RING_HASH.
pub const DEFAULT_MIN_RING_SIZE: u64 = 1024;
/// Envoy's default and largest `maximum_ring_size` for RING_HASH.
pub const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
/// Envoy's default Maglev `table_size` (a prime).
pub const DEFAULT_MAGLEV_TABLE_SIZE: u64 = 65537;
/// Envoy's largest Maglev `table_size`.
pub const MAX_MAGLEV_TABLE_SIZE: u64 = 5_000_011;

/// Built once per endpoint set (off the hot path); `pick` is lock-free.
pub struct Balancer {
    endpoints: Arc<Vec<Endpoint>>,
    /// Indices of healthy endpoints, ascending.
    healthy: Box<[u32]>,
    /// In-flight requests per endpoint, shared with the [`ActiveRequest`] guards.
    active: Arc<[AtomicU32]>,
    policy: Policy,
}

enum Policy {
    RoundRobin(round_robin::RoundRobin),
    LeastRequest(least_request::LeastRequest),
    Random(random::WeightedDraw),
    RingHash(ring_hash::Ring),
    Maglev(maglev::Table),
}

/// Held while a request is in flight on an endpoint (least-request counts it).
#[derive(Debug)]
pub struct ActiveRequest {
    counters: Arc<[AtomicU32]>,
    /// `usize::MAX` for a guard that counts nothing (index out of range).
    index: usize,
}

impl Balancer {
    pub fn new(policy: &LbPolicy, endpoints: Arc<Vec<Endpoint>>) -> Balancer {
        let healthy: Box<[u32]> = endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| e.healthy)
            .filter_map(|(i, _)| u32::try_from(i).ok())
            .collect();
        let active: Arc<[AtomicU32]> = endpoints.iter().map(|_| AtomicU32::new(0)).collect();
        let members: Vec<Member> = healthy
            .iter()
            .filter_map(|&index| {
                let e = endpoints.get(index as usize)?;
                Some(Member {
                    index,
                    weight: weight(e),
                    endpoint: *e,
                })
            })
            .collect();
        let policy = match policy {
            LbPolicy::RoundRobin => Policy::RoundRobin(round_robin::RoundRobin::new(&members)),
            LbPolicy::LeastRequest { choice_count } => {
                Policy::LeastRequest(least_request::LeastRequest::new(&members, *choice_count))
            }
            LbPolicy::Random => Policy::Random(random::WeightedDraw::new(&members)),
            LbPolicy::RingHash {
                minimum_ring_size,
                maximum_ring_size,
            } => Policy::RingHash(ring_hash::Ring::new(
                &members,
                *minimum_ring_size,
                *maximum_ring_size,
            )),
            LbPolicy::Maglev { table_size } => {
                Policy::Maglev(maglev::Table::new(&members, *table_size))
            }
        };
        Balancer {
            endpoints,
            healthy,
            active,
            policy,
        }
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// How many endpoints `pick` chooses among.
    pub fn healthy_count(&self) -> usize {
        self.healthy.len()
    }

    /// Requests currently in flight on endpoint `index` (0 for an unknown index).
    pub fn active_requests(&self, index: usize) -> u32 {
        self.active
            .get(index)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// An index into `endpoints()` of a healthy endpoint, or `None` when there is none.
    /// `hash` is used by ring-hash and maglev; `exclude` lists endpoints already tried (retries
    /// avoid them when another healthy one exists).
    pub fn pick(&self, hash: Option<u64>, exclude: &[usize]) -> Option<usize> {
        if self.healthy.is_empty() {
            return None;
        }
        let exclude = if self.all_healthy_excluded(exclude) {
            &[]
        } else {
            exclude
        };
        let c = Candidates {
            healthy: &self.healthy,
            exclude,
        };
        let picked = match &self.policy {
            Policy::RoundRobin(rr) => rr.pick(&c),
            Policy::LeastRequest(lr) => lr.pick(&c, &self.endpoints, &self.active),
            Policy::Random(draw) => draw.pick(&c),
            Policy::RingHash(ring) => ring.pick(hash.unwrap_or_else(|| fastrand::u64(..)), &c),
            Policy::Maglev(table) => table.pick(hash.unwrap_or_else(|| fastrand::u64(..)), &c),
        };
        // Every policy already falls back to any allowed healthy endpoint; this only guards
        // against a table that somehow lost one.
        picked.or_else(|| c.any_from(0)).map(|i| i as usize)
    }

    /// Counts a request as active on endpoint `index` until the guard drops.
    pub fn start(&self, index: usize) -> ActiveRequest {
        match self.active.get(index) {
            Some(counter) => {
                counter.fetch_add(1, Ordering::Relaxed);
                ActiveRequest {
                    counters: Arc::clone(&self.active),
                    index,
                }
            }
            None => ActiveRequest {
                counters: Arc::clone(&self.active),
                index: usize::MAX,
            },
        }
    }

    /// True when every healthy endpoint appears in `exclude` (duplicates and unhealthy or
    /// unknown indices do not count). `exclude` is a retry's short list, so quadratic is fine.
    fn all_healthy_excluded(&self, exclude: &[usize]) -> bool {
        if exclude.len() < self.healthy.len() {
            return false;
        }
        let mut distinct = 0;
        for (k, &i) in exclude.iter().enumerate() {
            let healthy = self.endpoints.get(i).is_some_and(|e| e.healthy);
            if healthy && !exclude[..k].contains(&i) {
                distinct += 1;
            }
        }
        distinct >= self.healthy.len()
    }

    /// The policy's name and the size of its precomputed table (schedule, ring, Maglev table).
    fn shape(&self) -> (&'static str, usize) {
        match &self.policy {
            Policy::RoundRobin(rr) => ("round_robin", rr.len()),
            Policy::LeastRequest(_) => ("least_request", 0),
            Policy::Random(_) => ("random", 0),
            Policy::RingHash(ring) => ("ring_hash", ring.len()),
            Policy::Maglev(table) => ("maglev", table.len()),
        }
    }
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The tables can hold millions of entries: show their shape, not their content.
        let (policy, table) = self.shape();
        f.debug_struct("Balancer")
            .field("policy", &policy)
            .field("table", &table)
            .field("endpoints", &self.endpoints.len())
            .field("healthy", &self.healthy.len())
            .finish_non_exhaustive()
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        if let Some(counter) = self.counters.get(self.index) {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A healthy endpoint as the table builders see it.
#[derive(Debug, Clone, Copy)]
struct Member {
    index: u32,
    weight: u64,
    endpoint: Endpoint,
}

/// The healthy endpoints and the exclusions in force for one pick. When `exclude` is
/// non-empty at least one healthy endpoint is allowed (`Balancer::pick` ensures it).
struct Candidates<'a> {
    healthy: &'a [u32],
    exclude: &'a [usize],
}

impl Candidates<'_> {
    fn allows(&self, index: u32) -> bool {
        !self.exclude.contains(&(index as usize))
    }

    /// The first allowed healthy endpoint at or after position `start` of the healthy list,
    /// wrapping around: the last resort of every policy.
    fn any_from(&self, start: usize) -> Option<u32> {
        let n = self.healthy.len();
        (0..n)
            .map(|k| self.healthy[(start + k) % n])
            .find(|&i| self.allows(i))
    }
}

fn weight(e: &Endpoint) -> u64 {
    u64::from(e.weight.max(1))
}

#[cfg(test)]
mod tests;
