use super::*;
use std::net::SocketAddr;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250) as u8 + 1], 8080))
}

fn endpoints(weights: &[u32], healthy: &[bool]) -> Arc<Vec<Endpoint>> {
    Arc::new(
        weights
            .iter()
            .zip(healthy)
            .enumerate()
            .map(|(i, (&weight, &healthy))| Endpoint {
                addr: addr(i),
                weight,
                healthy,
            })
            .collect(),
    )
}

fn all_policies() -> Vec<LbPolicy> {
    vec![
        LbPolicy::RoundRobin,
        LbPolicy::LeastRequest { choice_count: 2 },
        LbPolicy::Random,
        LbPolicy::RingHash {
            minimum_ring_size: 1024,
            maximum_ring_size: MAX_RING_SIZE,
        },
        LbPolicy::Maglev {
            table_size: DEFAULT_MAGLEV_TABLE_SIZE,
        },
    ]
}

/// Picks `n` times (a fresh random hash each time for the hashing policies; least-request
/// requests complete at once) and counts per endpoint.
fn histogram(b: &Balancer, n: usize) -> Vec<usize> {
    let mut counts = vec![0; b.endpoints().len()];
    for _ in 0..n {
        let i = b
            .pick(Some(fastrand::u64(..)), &[])
            .expect("a healthy endpoint");
        counts[i] += 1;
    }
    counts
}

/// Each healthy endpoint's share is within `tolerance` (relative) of its weight's share.
fn assert_follows_weights(eps: &[Endpoint], counts: &[usize], tolerance: f64, what: &str) {
    let total_weight: u64 = eps.iter().filter(|e| e.healthy).map(weight).sum();
    let picks: usize = counts.iter().sum();
    for (e, &count) in eps.iter().zip(counts) {
        if !e.healthy {
            assert_eq!(count, 0, "{what}: unhealthy endpoint picked");
            continue;
        }
        let expected = weight(e) as f64 / total_weight as f64;
        let got = count as f64 / picks as f64;
        assert!(
            (got - expected).abs() <= tolerance * expected,
            "{what}: share {got:.4}, expected {expected:.4} (weights {:?})",
            eps.iter().map(|e| e.weight).collect::<Vec<_>>()
        );
    }
}

#[test]
fn distribution_follows_weights() {
    fastrand::seed(1);
    let weights = [1, 2, 3, 10, 4];
    let eps = endpoints(&weights, &[true; 5]);
    for policy in [
        LbPolicy::RoundRobin,
        LbPolicy::LeastRequest { choice_count: 2 },
        LbPolicy::Random,
        // A large ring: with 1024 points the shares scatter by several percent.
        LbPolicy::RingHash {
            minimum_ring_size: 1 << 16,
            maximum_ring_size: MAX_RING_SIZE,
        },
        LbPolicy::Maglev {
            table_size: DEFAULT_MAGLEV_TABLE_SIZE,
        },
    ] {
        let b = Balancer::new(&policy, eps.clone());
        let counts = histogram(&b, 200_000);
        assert_follows_weights(&eps, &counts, 0.05, &format!("{policy:?}"));
    }
}

#[test]
fn round_robin_is_exact_over_a_cycle() {
    fastrand::seed(2);
    let mut rng = fastrand::Rng::with_seed(2);
    for _ in 0..50 {
        let n = rng.usize(1..10);
        let weights: Vec<u32> = (0..n).map(|_| rng.u32(1..=20)).collect();
        let healthy: Vec<bool> = (0..n).map(|_| rng.u8(..4) != 0).collect();
        let eps = endpoints(&weights, &healthy);
        let b = Balancer::new(&LbPolicy::RoundRobin, eps.clone());
        let g = eps
            .iter()
            .filter(|e| e.healthy)
            .fold(0, |g, e| round_robin_gcd(g, weight(e)));
        let cycle: u64 = eps.iter().filter(|e| e.healthy).map(weight).sum::<u64>() / g.max(1);
        let mut counts = vec![0u64; n];
        for _ in 0..cycle * 3 {
            counts[b.pick(None, &[]).expect("healthy")] += 1;
        }
        for (e, &c) in eps.iter().zip(&counts) {
            let expected = if e.healthy { 3 * weight(e) / g } else { 0 };
            assert_eq!(c, expected, "weights {weights:?} healthy {healthy:?}");
        }
    }
}

fn round_robin_gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { round_robin_gcd(b, a % b) }
}

#[test]
fn equal_weight_round_robin_cycles_in_order() {
    fastrand::seed(3);
    let b = Balancer::new(
        &LbPolicy::RoundRobin,
        endpoints(&[1, 1, 1, 1], &[true, false, true, true]),
    );
    let first = b.pick(None, &[]).expect("healthy");
    let seq: Vec<usize> = (0..6)
        .map(|_| b.pick(None, &[]).expect("healthy"))
        .collect();
    let order = [0, 2, 3];
    let at = order
        .iter()
        .position(|&i| i == first)
        .expect("healthy endpoint");
    let expected: Vec<usize> = (1..=6).map(|k| order[(at + k) % 3]).collect();
    assert_eq!(seq, expected);
}

#[test]
fn never_unhealthy_and_none_when_all_unhealthy() {
    fastrand::seed(4);
    let mut rng = fastrand::Rng::with_seed(4);
    for policy in all_policies() {
        assert_eq!(
            Balancer::new(&policy, Arc::new(vec![])).pick(Some(1), &[]),
            None
        );
        let none = Balancer::new(&policy, endpoints(&[1, 5, 2], &[false; 3]));
        assert_eq!(none.pick(Some(7), &[]), None, "{policy:?}");
        assert_eq!(none.pick(None, &[0, 1]), None, "{policy:?}");
        for _ in 0..40 {
            let n = rng.usize(1..16);
            let weights: Vec<u32> = (0..n).map(|_| rng.u32(0..=128)).collect();
            let healthy: Vec<bool> = (0..n).map(|_| rng.bool()).collect();
            let eps = endpoints(&weights, &healthy);
            let b = Balancer::new(&policy, eps.clone());
            assert_eq!(b.healthy_count(), healthy.iter().filter(|&&h| h).count());
            for _ in 0..200 {
                let hash = rng.bool().then(|| rng.u64(..));
                match b.pick(hash, &[]) {
                    Some(i) => assert!(eps[i].healthy, "{policy:?} picked unhealthy {i}"),
                    None => assert!(!healthy.contains(&true), "{policy:?}: None with healthy"),
                }
            }
        }
    }
}

#[test]
fn exclusions_are_honoured_while_possible() {
    fastrand::seed(5);
    let mut rng = fastrand::Rng::with_seed(5);
    for policy in all_policies() {
        for _ in 0..60 {
            let n = rng.usize(1..12);
            let weights: Vec<u32> = (0..n).map(|_| rng.u32(1..=128)).collect();
            let healthy: Vec<bool> = (0..n).map(|_| rng.u8(..5) != 0).collect();
            let eps = endpoints(&weights, &healthy);
            let b = Balancer::new(&policy, eps.clone());
            for _ in 0..100 {
                // Random indices, some unhealthy, some repeated, some out of range.
                let exclude: Vec<usize> = (0..rng.usize(0..=n + 2))
                    .map(|_| rng.usize(..n + 2))
                    .collect();
                let allowed_exists = eps
                    .iter()
                    .enumerate()
                    .any(|(i, e)| e.healthy && !exclude.contains(&i));
                let picked = b.pick(Some(rng.u64(..)), &exclude);
                match picked {
                    None => assert!(!healthy.contains(&true)),
                    Some(i) => {
                        assert!(eps[i].healthy, "{policy:?}");
                        if allowed_exists {
                            assert!(!exclude.contains(&i), "{policy:?} picked excluded {i}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn excluding_every_healthy_endpoint_still_picks_one() {
    fastrand::seed(6);
    for policy in all_policies() {
        let eps = endpoints(&[1, 1, 1], &[true, false, true]);
        let b = Balancer::new(&policy, eps);
        let i = b
            .pick(Some(42), &[0, 2, 2])
            .expect("falls back to an excluded endpoint");
        assert!(i == 0 || i == 2, "{policy:?}");
    }
}

#[test]
fn active_requests_are_counted_by_guards() {
    let b = Balancer::new(&LbPolicy::Random, endpoints(&[1, 1], &[true, true]));
    let g1 = b.start(1);
    let g2 = b.start(1);
    assert_eq!(b.active_requests(1), 2);
    drop(g1);
    assert_eq!(b.active_requests(1), 1);
    drop(g2);
    assert_eq!(b.active_requests(1), 0);
    // Unknown index: counts nothing, drops cleanly.
    drop(b.start(9));
    assert_eq!(b.active_requests(9), 0);
    // A guard outlives its balancer (an EDS update replaced it mid-request).
    let g = b.start(0);
    drop(b);
    drop(g);
}

#[test]
fn least_request_prefers_idle_endpoints() {
    fastrand::seed(7);
    let b = Balancer::new(
        &LbPolicy::LeastRequest { choice_count: 2 },
        endpoints(&[1, 1, 1], &[true; 3]),
    );
    let _busy: Vec<ActiveRequest> = (0..5).map(|_| b.start(0)).collect();
    let counts = histogram(&b, 90_000);
    // Endpoint 0 only wins when both draws land on it: 1/9 of picks.
    let share0 = counts[0] as f64 / 90_000.0;
    assert!(
        (share0 - 1.0 / 9.0).abs() < 0.01,
        "busy endpoint share {share0}"
    );
    let share1 = counts[1] as f64 / 90_000.0;
    assert!(
        (share1 - 4.0 / 9.0).abs() < 0.015,
        "idle endpoint share {share1}"
    );

    // With every endpoint drawn, the least loaded always wins.
    let b = Balancer::new(
        &LbPolicy::LeastRequest { choice_count: 64 },
        endpoints(&[1, 1, 1], &[true; 3]),
    );
    let _held: Vec<ActiveRequest> = [0, 1, 2, 2].iter().map(|&i| b.start(i)).collect();
    let counts = histogram(&b, 1_000);
    assert!(counts[0] + counts[1] >= 999, "{counts:?}");
}

#[test]
fn least_request_balances_held_requests_by_weight() {
    fastrand::seed(8);
    // Requests that stay in flight: active counts settle in proportion to weight.
    let eps = endpoints(&[1, 3], &[true, true]);
    let b = Balancer::new(&LbPolicy::LeastRequest { choice_count: 2 }, eps);
    let held: Vec<ActiveRequest> = (0..4_000)
        .map(|_| b.start(b.pick(None, &[]).expect("healthy")))
        .collect();
    let share1 = f64::from(b.active_requests(1)) / held.len() as f64;
    assert!(
        (share1 - 0.75).abs() < 0.03,
        "weight-3 endpoint holds {share1}"
    );
}

#[test]
fn least_request_choice_count_defaults_to_two() {
    fastrand::seed(9);
    let b = Balancer::new(
        &LbPolicy::LeastRequest { choice_count: 0 },
        endpoints(&[1, 1], &[true; 2]),
    );
    let _busy = b.start(0);
    let counts = histogram(&b, 40_000);
    // Two draws: endpoint 0 wins only when both draw it (1/4), not half the time.
    let share0 = counts[0] as f64 / 40_000.0;
    assert!((share0 - 0.25).abs() < 0.015, "{share0}");
}

fn hashing_policies() -> [LbPolicy; 2] {
    [
        LbPolicy::RingHash {
            minimum_ring_size: 1024,
            maximum_ring_size: MAX_RING_SIZE,
        },
        LbPolicy::Maglev {
            table_size: DEFAULT_MAGLEV_TABLE_SIZE,
        },
    ]
}

#[test]
fn hashing_is_consistent_for_a_hash() {
    fastrand::seed(10);
    let mut rng = fastrand::Rng::with_seed(10);
    for policy in hashing_policies() {
        let eps = endpoints(&[1, 2, 3, 4, 5, 6], &[true; 6]);
        let b1 = Balancer::new(&policy, eps.clone());
        let b2 = Balancer::new(&policy, eps.clone());
        // The same endpoints in another order: the same addresses are chosen.
        let mut reversed: Vec<Endpoint> = eps.iter().copied().collect();
        reversed.reverse();
        let b3 = Balancer::new(&policy, Arc::new(reversed));
        for _ in 0..5_000 {
            let h = rng.u64(..);
            let a = b1.pick(Some(h), &[]).expect("healthy");
            assert_eq!(b1.pick(Some(h), &[]), Some(a), "{policy:?}");
            assert_eq!(b2.pick(Some(h), &[]), Some(a), "{policy:?}");
            let c = b3.pick(Some(h), &[]).expect("healthy");
            assert_eq!(b3.endpoints()[c].addr, eps[a].addr, "{policy:?}");
            // Retries are deterministic too and avoid the first choice.
            let retry = b1.pick(Some(h), &[a]).expect("healthy");
            assert_ne!(retry, a);
            assert_eq!(b2.pick(Some(h), &[a]), Some(retry));
        }
    }
}

#[test]
fn hashing_moves_few_keys_when_an_endpoint_is_added() {
    fastrand::seed(11);
    let mut rng = fastrand::Rng::with_seed(11);
    for n in [3usize, 5, 10, 25] {
        for policy in hashing_policies() {
            let before = Balancer::new(&policy, endpoints(&vec![1; n], &vec![true; n]));
            let after = Balancer::new(&policy, endpoints(&vec![1; n + 1], &vec![true; n + 1]));
            let keys = 20_000;
            let moved = (0..keys)
                .filter(|_| {
                    let h = rng.u64(..);
                    before.pick(Some(h), &[]) != after.pick(Some(h), &[])
                })
                .count();
            let fraction = moved as f64 / keys as f64;
            let bound = 2.0 / n as f64 + 0.03;
            assert!(
                fraction < bound,
                "{policy:?} n={n}: moved {fraction:.3} >= {bound:.3}"
            );
            // And the new endpoint does get its share.
            assert!(
                fraction > 0.5 / (n + 1) as f64,
                "{policy:?} n={n}: moved {fraction:.3}"
            );
        }
    }
}

#[test]
fn hashing_moves_only_the_lost_endpoints_keys_when_one_turns_unhealthy() {
    fastrand::seed(12);
    let mut rng = fastrand::Rng::with_seed(12);
    for policy in hashing_policies() {
        let n = 8;
        let before = Balancer::new(&policy, endpoints(&vec![1; n], &vec![true; n]));
        let mut healthy = vec![true; n];
        healthy[3] = false;
        let after = Balancer::new(&policy, endpoints(&vec![1; n], &healthy));
        let moved = (0..20_000)
            .filter(|_| {
                let h = rng.u64(..);
                before.pick(Some(h), &[]) != after.pick(Some(h), &[])
            })
            .count();
        let fraction = moved as f64 / 20_000.0;
        assert!(
            fraction < 2.0 / n as f64 + 0.03,
            "{policy:?}: moved {fraction:.3}"
        );
    }
}

#[test]
fn ring_size_follows_envoy() {
    let members = |weights: &[u64]| -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Member {
                index: i as u32,
                weight: w,
                endpoint: Endpoint {
                    addr: addr(i),
                    weight: w as u32,
                    healthy: true,
                },
            })
            .collect()
    };
    // Equal weights: ceil(1024 / n) points each.
    assert_eq!(
        ring_hash::Ring::new(&members(&[1; 10]), 1024, MAX_RING_SIZE).len(),
        1030
    );
    // 1:3 -> the light endpoint gets 256 points, the ring 1024.
    assert_eq!(
        ring_hash::Ring::new(&members(&[1, 3]), 1024, MAX_RING_SIZE).len(),
        1024
    );
    // The maximum wins over the minimum; unset means 1024.
    assert_eq!(
        ring_hash::Ring::new(&members(&[1, 1]), 4096, 100).len(),
        100
    );
    assert_eq!(ring_hash::Ring::new(&members(&[1, 1]), 0, 0).len(), 1024);
    assert_eq!(ring_hash::Ring::new(&[], 1024, 2048).len(), 0);
}

#[test]
fn maglev_sizes() {
    let b = |size| {
        maglev::Table::new(
            &[Member {
                index: 0,
                weight: 1,
                endpoint: Endpoint {
                    addr: addr(0),
                    weight: 1,
                    healthy: true,
                },
            }],
            size,
        )
        .len()
    };
    assert_eq!(b(0), 65537);
    assert_eq!(b(1000), 1009);
    assert_eq!(b(u64::MAX), MAX_MAGLEV_TABLE_SIZE as usize);
}

#[test]
fn hashing_without_a_hash_spreads_at_random() {
    fastrand::seed(13);
    for policy in hashing_policies() {
        let eps = endpoints(&[1, 1, 1, 1], &[true; 4]);
        let b = Balancer::new(&policy, eps);
        let mut counts = [0usize; 4];
        for _ in 0..4_000 {
            counts[b.pick(None, &[]).expect("healthy")] += 1;
        }
        assert!(counts.iter().all(|&c| c > 700), "{policy:?}: {counts:?}");
    }
}

#[test]
fn debug_is_short() {
    let b = Balancer::new(
        &LbPolicy::Maglev { table_size: 0 },
        endpoints(&[1, 1], &[true, false]),
    );
    let s = format!("{b:?}");
    assert!(
        s.contains("maglev") && s.contains("65537") && s.len() < 120,
        "{s}"
    );
}

#[test]
fn shareable_across_tasks() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Balancer>();
    assert_send_sync::<ActiveRequest>();
}
