//! RING_HASH: Envoy's ketama ring.
//!
//! Sizing follows Envoy: with weights normalised to sum 1 and `min` the smallest normalised
//! weight, the ring gets `scale = min(ceil(min * minimum_ring_size) / min, maximum_ring_size)`
//! points in all, each endpoint `scale * weight` of them (rounded by accumulating, so the
//! total is exact). An endpoint's points are XXH64 (seed 0) of `"<addr>_<i>"` for
//! i = 0, 1, .., the same keys Envoy hashes. A request goes to the first point at or after
//! its hash, wrapping to the first point.

use super::{Candidates, DEFAULT_MIN_RING_SIZE, MAX_RING_SIZE, Member, xxhash64};
use std::fmt::Write;

pub(super) struct Ring {
    /// Point hashes, ascending.
    hashes: Box<[u64]>,
    /// The endpoint owning each point, parallel to `hashes`.
    owners: Box<[u32]>,
}

impl Ring {
    /// `minimum`/`maximum` 0 mean unset (1024 and 8M). Both are capped at 8M and the minimum
    /// at the maximum (Envoy rejects such configs; we are given validated ones).
    pub(super) fn new(members: &[Member], minimum: u64, maximum: u64) -> Ring {
        let maximum = match maximum {
            0 => MAX_RING_SIZE,
            m => m.min(MAX_RING_SIZE),
        };
        let minimum = match minimum {
            0 => DEFAULT_MIN_RING_SIZE,
            m => m,
        }
        .min(maximum);
        let total: u64 = members.iter().map(|m| m.weight).sum();
        let Some(smallest) = members.iter().map(|m| m.weight).min() else {
            return Ring {
                hashes: Box::default(),
                owners: Box::default(),
            };
        };
        let min_normalised = smallest as f64 / total as f64;
        let scale = ((min_normalised * minimum as f64).ceil() / min_normalised).min(maximum as f64);

        let mut points: Vec<(u64, u32)> = Vec::with_capacity(scale as usize + members.len());
        let mut key = String::new();
        let mut placed = 0.0;
        let mut target = 0.0;
        for m in members {
            target += scale * (m.weight as f64 / total as f64);
            let mut i = 0u64;
            while placed < target {
                key.clear();
                // Writing into a String cannot fail.
                let _ = write!(key, "{}_{i}", m.endpoint.addr);
                points.push((xxhash64(key.as_bytes(), 0), m.index));
                i += 1;
                placed += 1.0;
            }
        }
        // Owner as tie-break keeps the ring independent of the order endpoints arrived in.
        points.sort_unstable();
        let (hashes, owners) = points.into_iter().unzip::<_, _, Vec<_>, Vec<_>>();
        Ring {
            hashes: hashes.into_boxed_slice(),
            owners: owners.into_boxed_slice(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.hashes.len()
    }

    /// The endpoint owning the first point at or after `hash`, walking on past excluded ones.
    pub(super) fn pick(&self, hash: u64, c: &Candidates<'_>) -> Option<u32> {
        let n = self.hashes.len();
        if n == 0 {
            return c.any_from(0);
        }
        let start = self.hashes.partition_point(|&h| h < hash) % n;
        (0..n)
            .map(|k| self.owners[(start + k) % n])
            .find(|&i| c.allows(i))
            // An endpoint with no point (a maximum smaller than the endpoint count).
            .or_else(|| c.any_from(start))
    }
}
