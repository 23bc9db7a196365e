//! xDS client counters, in Envoy's terms (`update_attempt`, `update_success`,
//! `update_rejected` per type), for the admin API and `/stats/prometheus`.

use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Index with `TYPES`.
pub const TYPES: [&str; 4] = ["CDS", "EDS", "LDS", "RDS"];

#[derive(Debug, Default)]
pub struct TypeCounters {
    pub update_attempt: AtomicU64,
    pub update_success: AtomicU64,
    pub update_rejected: AtomicU64,
}

#[derive(Debug, Default)]
pub struct XdsStats {
    pub types: [TypeCounters; 4],
    pub connected: AtomicBool,
    /// Streams opened, including the first.
    pub connects: AtomicU64,
    last_error: Mutex<Option<String>>,
    last_rejection: Mutex<Option<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TypeCountersView {
    pub update_attempt: u64,
    pub update_success: u64,
    pub update_rejected: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct XdsStatsView {
    pub connected: bool,
    pub connects: u64,
    pub last_error: Option<String>,
    pub last_rejection: Option<String>,
    pub types: Vec<(&'static str, TypeCountersView)>,
}

impl XdsStats {
    pub fn type_index(short: &str) -> Option<usize> {
        TYPES.iter().position(|t| *t == short)
    }

    pub fn attempt(&self, t: usize) {
        self.types[t].update_attempt.fetch_add(1, Ordering::Relaxed);
    }

    pub fn success(&self, t: usize) {
        self.types[t].update_success.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self, t: usize, reason: String) {
        self.types[t]
            .update_rejected
            .fetch_add(1, Ordering::Relaxed);
        *self
            .last_rejection
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }

    pub fn set_connected(&self, connected: bool, error: Option<String>) {
        if connected {
            self.connects.fetch_add(1, Ordering::Relaxed);
        }
        self.connected.store(connected, Ordering::Relaxed);
        if error.is_some() || connected {
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
        }
    }

    pub fn view(&self) -> XdsStatsView {
        XdsStatsView {
            connected: self.connected.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            last_rejection: self
                .last_rejection
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            types: TYPES
                .iter()
                .zip(&self.types)
                .map(|(name, c)| {
                    (
                        *name,
                        TypeCountersView {
                            update_attempt: c.update_attempt.load(Ordering::Relaxed),
                            update_success: c.update_success.load(Ordering::Relaxed),
                            update_rejected: c.update_rejected.load(Ordering::Relaxed),
                        },
                    )
                })
                .collect(),
        }
    }
}
