//! LEAST_REQUEST: power of `choice_count` random choices, fewest active requests wins.
//!
//! With equal weights this is exactly Envoy's: `choice_count` independent uniform draws
//! among healthy endpoints (with replacement), the one with the fewest active requests wins,
//! ties going to the earlier draw.
//!
//! With unequal weights Envoy switches to an EDF schedule over `weight / (active + 1)`, which
//! needs a lock. We stay lock-free instead: candidates are drawn in proportion to weight and
//! compared on `active / weight` (lower wins, ties to the earlier draw). Idle endpoints are
//! then chosen exactly in proportion to their weights (as Envoy's schedule does), and under
//! load in-flight requests settle in proportion to weight (tested).

use super::random::WeightedDraw;
use super::{Candidates, DEFAULT_CHOICE_COUNT, Member};
use crate::config::Endpoint;
use std::sync::atomic::{AtomicU32, Ordering};

pub(super) struct LeastRequest {
    draw: WeightedDraw,
    choices: u32,
}

impl LeastRequest {
    /// `choice_count` 0 means unset (Envoy's default of 2).
    pub(super) fn new(members: &[Member], choice_count: u32) -> LeastRequest {
        let choices = if choice_count == 0 {
            DEFAULT_CHOICE_COUNT
        } else {
            choice_count
        };
        LeastRequest {
            draw: WeightedDraw::new(members),
            choices,
        }
    }

    pub(super) fn pick(
        &self,
        c: &Candidates<'_>,
        endpoints: &[Endpoint],
        active: &[AtomicU32],
    ) -> Option<u32> {
        let load = |i: u32| {
            let active = active
                .get(i as usize)
                .map_or(0, |a| a.load(Ordering::Relaxed));
            let weight = endpoints.get(i as usize).map_or(1, super::weight);
            (u64::from(active), weight)
        };
        let mut best: Option<(u32, u64, u64)> = None;
        for _ in 0..self.choices {
            let Some(i) = self.draw.draw() else { break };
            if !c.allows(i) {
                continue;
            }
            let (a, w) = load(i);
            // a / w < best_a / best_w, without division.
            let better = best.is_none_or(|(_, ba, bw)| {
                u128::from(a) * u128::from(bw) < u128::from(ba) * u128::from(w)
            });
            if better {
                best = Some((i, a, w));
            }
        }
        match best {
            Some((i, _, _)) => Some(i),
            // Every draw hit an excluded endpoint.
            None => c.any_from(fastrand::usize(..c.healthy.len().max(1))),
        }
    }
}
