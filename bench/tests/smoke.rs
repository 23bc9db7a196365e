//! The registry benchmark's smoke mode, run through the library entry: it must finish and
//! its figures must make sense.

use mesh_bench::{RegistryOptions, run_registry_bench};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_bench_smoke_mode_reports_sane_figures() {
    let opts = RegistryOptions::smoke();
    let report = run_registry_bench(opts.clone()).await.unwrap();
    println!("{}", report.render());

    assert_eq!(report.writes.len(), 2, "a KV row and a registration row");
    for w in &report.writes {
        assert!(w.writes > 0 && w.writes_per_sec > 0.0, "no writes: {w:?}");
        assert_eq!(w.latency.count, w.writes);
        assert!(w.latency.p50_ms > 0.0, "{w:?}");
        assert!(w.latency.p50_ms <= w.latency.p99_ms && w.latency.p99_ms <= w.latency.max_ms);
    }

    let wake = &report.wake;
    assert_eq!(wake.rounds.len(), opts.rounds);
    assert!(wake.all_woke, "not every watcher woke: {:?}", wake.rounds);
    for r in &wake.rounds {
        assert_eq!(r.woke, opts.watchers, "{r:?}");
        assert!(
            r.wake.p50_ms > 0.0 && r.wake.p50_ms <= r.wake.p99_ms,
            "{r:?}"
        );
        assert!(
            r.wake.max_ms < opts.wake_timeout.as_secs_f64() * 1000.0,
            "{r:?}"
        );
    }

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["options"]["watchers"], opts.watchers);
    assert!(json["wake"]["median_p99_ms"].as_f64().unwrap() > 0.0);
}
