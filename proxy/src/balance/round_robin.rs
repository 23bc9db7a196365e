//! ROUND_ROBIN. Envoy cycles through hosts when weights are equal and runs an earliest-deadline-
//! first schedule when they differ; we precompute one cycle of such a schedule so a pick is a
//! single `fetch_add` and a table read.
//!
//! The cycle holds each endpoint exactly `weight / g` times (`g` the gcd of the weights), so
//! weights hold exactly over every cycle. Deadlines are `(2k + 1) / (2 * weight)` for the
//! endpoint's k-th slot, which spreads an endpoint's slots evenly across the cycle (a heavy
//! endpoint is never served in one burst).

use super::{Candidates, Member};
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Cycles longer than this are built from proportionally scaled-down weights (each at least
/// 1), so weights then hold only approximately. Reached only with weights far beyond the
/// 1..=128 our registry produces, or many thousands of endpoints.
const MAX_CYCLE: u64 = 1 << 18;

pub(super) struct RoundRobin {
    cycle: Box<[u32]>,
    next: AtomicUsize,
}

impl RoundRobin {
    pub(super) fn new(members: &[Member]) -> RoundRobin {
        let cycle = build_cycle(members);
        // A random starting point, as Envoy does, so sidecars that rebuild at the same moment
        // do not all send their next request to the same endpoint.
        let start = if cycle.is_empty() {
            0
        } else {
            fastrand::usize(..cycle.len())
        };
        RoundRobin {
            cycle,
            next: AtomicUsize::new(start),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.cycle.len()
    }

    pub(super) fn pick(&self, c: &Candidates<'_>) -> Option<u32> {
        let n = self.cycle.len();
        if n == 0 {
            return None;
        }
        let at = self.next.fetch_add(1, Ordering::Relaxed) % n;
        // Excluded endpoints are skipped by walking on through the cycle, which keeps the
        // weighted order for the rest.
        (0..n)
            .map(|k| self.cycle[(at + k) % n])
            .find(|&i| c.allows(i))
            .or_else(|| c.any_from(0))
    }
}

fn build_cycle(members: &[Member]) -> Box<[u32]> {
    let Some(first) = members.first() else {
        return Box::default();
    };
    if members.iter().all(|m| m.weight == first.weight) {
        return members.iter().map(|m| m.index).collect();
    }
    let g = members.iter().fold(0, |g, m| gcd(g, m.weight)).max(1);
    let mut weights: Vec<u64> = members.iter().map(|m| m.weight / g).collect();
    let total: u64 = weights.iter().sum();
    if total > MAX_CYCLE {
        for w in &mut weights {
            *w = (u128::from(*w) * u128::from(MAX_CYCLE) / u128::from(total)).max(1) as u64;
        }
    }
    let total: u64 = weights.iter().sum();

    let mut heap: BinaryHeap<Slot> = members
        .iter()
        .zip(&weights)
        .map(|(m, &w)| Slot {
            num: 1,
            den: 2 * w,
            index: m.index,
        })
        .collect();
    let mut cycle = Vec::with_capacity(total as usize);
    while (cycle.len() as u64) < total {
        let Some(mut slot) = heap.pop() else { break };
        cycle.push(slot.index);
        slot.num += 2;
        heap.push(slot);
    }
    cycle.into_boxed_slice()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The next deadline `num / den` of one endpoint. Ordered so that `BinaryHeap` (a max-heap)
/// pops the earliest deadline, ties going to the lower endpoint index.
struct Slot {
    num: u64,
    den: u64,
    index: u32,
}

impl Ord for Slot {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        let lhs = u128::from(self.num) * u128::from(other.den);
        let rhs = u128::from(other.num) * u128::from(self.den);
        rhs.cmp(&lhs).then_with(|| other.index.cmp(&self.index))
    }
}

impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for Slot {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Endpoint;

    fn members(weights: &[u64]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Member {
                index: i as u32,
                weight: w,
                endpoint: Endpoint {
                    addr: ([10, 0, 0, i as u8], 80).into(),
                    weight: w as u32,
                    healthy: true,
                },
            })
            .collect()
    }

    #[test]
    fn cycle_holds_weights_exactly() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let n = rng.usize(1..12);
            let weights: Vec<u64> = (0..n).map(|_| rng.u64(1..=128)).collect();
            let cycle = build_cycle(&members(&weights));
            let g = weights.iter().fold(0, |g, &w| gcd(g, w));
            assert_eq!(cycle.len() as u64, weights.iter().sum::<u64>() / g);
            for (i, &w) in weights.iter().enumerate() {
                let count = cycle.iter().filter(|&&e| e == i as u32).count() as u64;
                assert_eq!(count, w / g, "weights {weights:?}");
            }
        }
    }

    #[test]
    fn cycle_interleaves() {
        // An endpoint's slots are spread over the cycle, not served in one run.
        let cycle = build_cycle(&members(&[3, 1]));
        assert_eq!(&*cycle, &[0, 0, 1, 0]);
        let cycle = build_cycle(&members(&[5, 5, 1]));
        assert_eq!(cycle.len(), 11);
        let longest_run = cycle
            .chunk_by(|a, b| a == b)
            .map(|run| run.len())
            .max()
            .unwrap_or(0);
        assert!(longest_run <= 2, "{cycle:?}");
    }

    #[test]
    fn huge_weights_are_scaled_down() {
        let cycle = build_cycle(&members(&[1_000_000, 999_999, 3]));
        assert!(cycle.len() as u64 <= MAX_CYCLE + 3);
        assert!(cycle.contains(&2));
    }
}
