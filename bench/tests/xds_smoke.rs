#![allow(clippy::unwrap_used)] // test code
//! The xDS benchmark's smoke mode, run through the library entry against real `mesh registry`
//! and `mesh control-plane` processes (the debug binary: `MESH_BIN`, else `cargo build --bin
//! mesh`): every sidecar must get its configuration and converge on the round's write.

use mesh_bench::xds::WATCHED_SERVICE;
use mesh_bench::{XdsOptions, XdsReport, run_xds_bench};

fn check(opts: &XdsOptions, report: &XdsReport) {
    println!("{}", report.render());
    let n = opts.sidecars;

    let p = &report.population;
    assert_eq!(
        p.writes,
        opts.services + opts.services * opts.instances + n,
        "{p:?}"
    );
    assert!(p.registry_rss_mb > 0.0);

    let i = &report.initial;
    assert_eq!(
        i.converged, n,
        "not every sidecar got its configuration: {i:?}"
    );
    assert_eq!(i.ready.count as usize, n);
    let config = i.config.unwrap();
    // local_app + svc-0 + two more upstreams; a public listener and one per upstream.
    assert_eq!(
        (config.clusters, config.listeners, config.routes),
        (4, 4, 3)
    );
    assert_eq!(config.endpoints, 3 * opts.instances, "{config:?}");
    assert!(
        i.control_plane_rss_mb > 0.0 && i.control_plane_cpu_s > 0.0,
        "{i:?}"
    );

    assert_eq!(report.rounds.len(), opts.rounds);
    for r in &report.rounds {
        assert_eq!(r.sidecars, n, "{r:?}");
        assert_eq!(
            r.converged, n,
            "not every sidecar saw {WATCHED_SERVICE} change: {r:?}"
        );
        assert_eq!(r.wrong, 0, "{r:?}");
        assert_eq!(r.acked.count as usize, n);
        assert!(
            r.received.p50_ms > 0.0 && r.received.max_ms <= r.acked.max_ms,
            "{r:?}"
        );
        assert!(
            r.acked.max_ms < opts.timeout.as_secs_f64() * 1000.0,
            "{r:?}"
        );
    }
    let s = &report.summary;
    assert!(s.all_converged, "{s:?}");
    assert_eq!(s.streams_ended, 0, "{s:?}");
    assert_eq!(
        s.control_plane_log.errors, 0,
        "the control plane logged errors"
    );
    assert_eq!(s.registry_log.errors, 0, "the registry logged errors");
    assert!(s.control_plane_cpu_total_s >= i.control_plane_cpu_s);

    let json = serde_json::to_value(report).unwrap();
    assert_eq!(json["options"]["sidecars"], n);
    assert!(json["summary"]["median_ack_p99_ms"].as_f64().unwrap() > 0.0);
}

fn mesh_bin() -> std::path::PathBuf {
    mesh_bench::process::mesh_bin(false, true).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_bench_smoke_mode_converges_every_sidecar() {
    let opts = XdsOptions::smoke(mesh_bin());
    let report = run_xds_bench(opts.clone()).await.unwrap();
    check(&opts, &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_bench_smoke_mode_converges_every_sidecar_over_delta_and_shared_connections() {
    let mut opts = XdsOptions::smoke(mesh_bin());
    opts.delta = true;
    opts.rounds = 2;
    opts.connections = Some(3);
    let report = run_xds_bench(opts.clone()).await.unwrap();
    assert_eq!(report.connections, 3);
    check(&opts, &report);
}
