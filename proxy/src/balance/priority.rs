//! Envoy's priority levels, as an aggregate cluster uses them: how much of the traffic each
//! level (one of its clusters) gets from the health of its endpoints (Envoy's
//! `LoadBalancerBase`: `recalculatePerPriorityState`, `recalculatePerPriorityPanic`,
//! `recalculateLoadInTotalPanic`, `choosePriority`), in Envoy's integer arithmetic so that the
//! shares are the same percentages.
//!
//! - A level's health is `min(100, 140 * healthy / total)`: with the overprovisioning factor
//!   1.4, a level with at least 72% of its endpoints healthy takes all it is offered.
//! - The levels' health, summed and capped at 100, is the total; each level in order takes
//!   `health * 100 / total` of what is left, and rounding leftovers go to the first healthy
//!   level.
//! - Unless the total is 100, a level whose healthy share is below the panic threshold is in
//!   panic; when every level is, the load follows endpoint counts instead, health ignored
//!   (a level with no healthy endpoint then still gets its share, and fails it). With
//!   threshold 0 and no health anywhere, the first level gets everything.

/// The endpoints of one level (levels without endpoints are left out by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub healthy: usize,
    pub total: usize,
}

/// Envoy's overprovisioning factor, in percent.
const OVERPROVISIONING: usize = 140;

/// Each level's share of the traffic, in percent (they sum to 100; empty for no level).
pub fn loads(levels: &[Level], panic_threshold: u32) -> Vec<u32> {
    if levels.is_empty() {
        return Vec::new();
    }
    let health: Vec<u32> = levels
        .iter()
        .map(|l| {
            (OVERPROVISIONING * l.healthy)
                .checked_div(l.total)
                .map_or(0, |h| u32::try_from(h.min(100)).unwrap_or(100))
        })
        .collect();
    let total = health.iter().sum::<u32>().min(100);
    let mut loads = vec![0; levels.len()];
    if total == 0 && panic_threshold == 0 {
        loads[0] = 100;
        return loads;
    }
    if total > 0 {
        let mut left = 100;
        let mut first_healthy = None;
        for (i, h) in health.iter().enumerate() {
            if first_healthy.is_none() && *h > 0 {
                first_healthy = Some(i);
            }
            loads[i] = (h * 100).checked_div(total).unwrap_or(0).min(left);
            left -= loads[i];
        }
        if let Some(first) = first_healthy {
            loads[first] += left;
        }
    }
    let in_panic = |l: &Level| {
        let healthy = if l.total == 0 {
            0.0
        } else {
            100.0 * l.healthy as f64 / l.total as f64
        };
        healthy < f64::from(panic_threshold)
    };
    if total < 100 && levels.iter().all(in_panic) {
        // Every level in panic: by endpoint count.
        let all: usize = levels.iter().map(|l| l.total).sum();
        if all == 0 {
            loads.fill(0);
            loads[0] = 100;
            return loads;
        }
        let mut left = 100;
        for (load, level) in loads.iter_mut().zip(levels) {
            *load = u32::try_from(100 * level.total / all).unwrap_or(0);
            left -= *load;
        }
        if let Some(first) = levels.iter().position(|l| l.total > 0) {
            loads[first] += left;
        }
    }
    loads
}

/// The level a request goes to, from a random number, as Envoy's `choosePriority`.
pub fn choose(loads: &[u32], random: u64) -> usize {
    let point = random % 100 + 1;
    let mut cumulative = 0u64;
    for (i, load) in loads.iter().enumerate() {
        cumulative += u64::from(*load);
        if point <= cumulative {
            return i;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(healthy: usize, total: usize) -> Level {
        Level { healthy, total }
    }

    #[test]
    fn healthy_enough_levels_take_everything() {
        assert_eq!(loads(&[level(3, 3), level(2, 2)], 50), [100, 0]);
        // 3 of 4 healthy: 140 * 3 / 4 = 105, capped.
        assert_eq!(loads(&[level(3, 4), level(2, 2)], 50), [100, 0]);
    }

    #[test]
    fn an_unhealthy_level_spills_over() {
        // Envoy's documented example: 140 * 1 / 2 = 70.
        assert_eq!(loads(&[level(1, 2), level(2, 2)], 50), [70, 30]);
        assert_eq!(loads(&[level(0, 2), level(2, 2)], 50), [0, 100]);
        assert_eq!(
            loads(&[level(0, 2), level(0, 1), level(3, 3)], 0),
            [0, 0, 100]
        );
        // 140 / 3 = 46.
        assert_eq!(loads(&[level(1, 3), level(1, 1)], 50), [46, 54]);
    }

    #[test]
    fn all_levels_in_panic_share_by_endpoint_count() {
        // 46 in total, under 100, and both levels below 50% healthy.
        assert_eq!(loads(&[level(1, 3), level(0, 2)], 50), [60, 40]);
        assert_eq!(loads(&[level(0, 3), level(0, 2)], 50), [60, 40]);
        // Not every level in panic: by health.
        assert_eq!(loads(&[level(1, 3), level(1, 2)], 50), [46, 54]);
        // Nothing healthy and no panic: the first level.
        assert_eq!(loads(&[level(0, 3), level(0, 2)], 0), [100, 0]);
    }

    #[test]
    fn rounding_goes_to_the_first_healthy_level() {
        // 140 * 1 / 7 = 20 each, total 60: 20 * 100 / 60 = 33 each, 1 left over.
        let l = level(1, 7);
        assert_eq!(loads(&[level(0, 1), l, l, l], 0), [0, 34, 33, 33]);
    }

    #[test]
    fn choosing_follows_the_loads() {
        let loads = [30, 0, 70];
        assert_eq!(choose(&loads, 0), 0);
        assert_eq!(choose(&loads, 29), 0);
        assert_eq!(choose(&loads, 30), 2);
        assert_eq!(choose(&loads, 99), 2);
        assert_eq!(choose(&loads, 100), 0);
    }
}
