//! Each balancer's `pick` (and the table builds, which run off the hot path on every
//! endpoint update).

use criterion::{BenchmarkId, Criterion, black_box, criterion_group, criterion_main};
use mesh_proxy::balance::Balancer;
use mesh_proxy::config::{Endpoint, LbPolicy};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

fn endpoints(n: usize) -> Arc<Vec<Endpoint>> {
    Arc::new(
        (0..n)
            .map(|i| Endpoint {
                addr: SocketAddr::from(([10, 2, (i / 250) as u8, (i % 250) as u8 + 1], 8080)),
                // Mixed weights, one endpoint in ten unhealthy.
                weight: 1 + (i as u32 * 7) % 5,
                healthy: i % 10 != 3,
            })
            .collect(),
    )
}

fn policies() -> [(&'static str, LbPolicy); 5] {
    [
        ("round_robin", LbPolicy::RoundRobin),
        ("least_request", LbPolicy::LeastRequest { choice_count: 2 }),
        ("random", LbPolicy::Random),
        (
            "ring_hash",
            LbPolicy::RingHash {
                minimum_ring_size: 1024,
                maximum_ring_size: 8 * 1024 * 1024,
            },
        ),
        ("maglev", LbPolicy::Maglev { table_size: 65537 }),
    ]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    for n in [10, 100] {
        for (name, policy) in policies() {
            let b = Balancer::new(&policy, endpoints(n));
            g.bench_with_input(BenchmarkId::new(name, n), &b, |bench, b| {
                let mut hash = 0u64;
                bench.iter(|| {
                    hash = hash.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    b.pick(Some(black_box(hash)), &[])
                })
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("pick_excluding_one");
    for (name, policy) in policies() {
        let b = Balancer::new(&policy, endpoints(10));
        g.bench_with_input(BenchmarkId::new(name, 10), &b, |bench, b| {
            let mut hash = 0u64;
            bench.iter(|| {
                hash = hash.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let first = b.pick(Some(hash), &[]).unwrap_or(0);
                b.pick(Some(black_box(hash)), &[first])
            })
        });
    }
    g.finish();

    c.bench_function("start_and_drop_guard", |bench| {
        let b = Balancer::new(&LbPolicy::LeastRequest { choice_count: 2 }, endpoints(10));
        bench.iter(|| drop(black_box(b.start(black_box(4)))))
    });

    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    for n in [10, 100] {
        for (name, policy) in policies() {
            let eps = endpoints(n);
            g.bench_with_input(BenchmarkId::new(name, n), &eps, |bench, eps| {
                bench.iter(|| Balancer::new(&policy, Arc::clone(eps)))
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
