//! RANDOM: one weighted draw per pick. Also the candidate draw of LEAST_REQUEST.

use super::{Candidates, Member};

/// Draws among the healthy endpoints with probability proportional to weight: a binary
/// search over cumulative weights, or a plain uniform index when all weights are equal.
pub(super) struct WeightedDraw {
    indices: Box<[u32]>,
    /// Running sum of weights, parallel to `indices`; empty when all weights are equal.
    cumulative: Box<[u64]>,
}

/// Redraws before walking the healthy list, when a draw lands on an excluded endpoint.
const REDRAWS: usize = 4;

impl WeightedDraw {
    pub(super) fn new(members: &[Member]) -> WeightedDraw {
        let indices = members.iter().map(|m| m.index).collect();
        let uniform = members.windows(2).all(|w| w[0].weight == w[1].weight);
        let cumulative = if uniform {
            Box::default()
        } else {
            members
                .iter()
                .scan(0u64, |sum, m| {
                    *sum = sum.saturating_add(m.weight);
                    Some(*sum)
                })
                .collect()
        };
        WeightedDraw {
            indices,
            cumulative,
        }
    }

    /// One weighted draw, exclusions not considered. `None` only when there is no endpoint.
    pub(super) fn draw(&self) -> Option<u32> {
        let n = self.indices.len();
        if n == 0 {
            return None;
        }
        let position = match self.cumulative.last() {
            None => fastrand::usize(..n),
            Some(&total) => {
                let r = fastrand::u64(..total);
                self.cumulative.partition_point(|&c| c <= r)
            }
        };
        self.indices.get(position).copied()
    }

    pub(super) fn pick(&self, c: &Candidates<'_>) -> Option<u32> {
        for _ in 0..=REDRAWS {
            let i = self.draw()?;
            if c.allows(i) {
                return Some(i);
            }
        }
        c.any_from(fastrand::usize(..c.healthy.len().max(1)))
    }
}
