//! Load balancers over a cluster's endpoints. (Being written.)

use crate::config::{Endpoint, LbPolicy};
use std::sync::Arc;

/// Built once per endpoint set (off the hot path); `pick` is lock-free.
#[derive(Debug)]
pub struct Balancer {
    endpoints: Arc<Vec<Endpoint>>,
}

/// Held while a request is in flight on an endpoint (least-request counts it).
#[derive(Debug)]
pub struct ActiveRequest {
    _private: (),
}

impl Balancer {
    pub fn new(policy: &LbPolicy, endpoints: Arc<Vec<Endpoint>>) -> Balancer {
        let _ = policy;
        Balancer { endpoints }
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// An index into `endpoints()` of a healthy endpoint, or `None` when there is none.
    /// `hash` is used by ring-hash and maglev; `exclude` lists endpoints already tried (retries
    /// avoid them when another healthy one exists).
    pub fn pick(&self, hash: Option<u64>, exclude: &[usize]) -> Option<usize> {
        let _ = (hash, exclude);
        self.endpoints.iter().position(|e| e.healthy)
    }

    /// Counts a request as active on endpoint `index` until the guard drops.
    pub fn start(&self, index: usize) -> ActiveRequest {
        let _ = index;
        ActiveRequest { _private: () }
    }
}
