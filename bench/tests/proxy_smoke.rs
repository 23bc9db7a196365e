#![allow(clippy::unwrap_used)] // test code
//! The proxy benchmark's smoke mode, run through the library entry: the fixed-response backend
//! (this package's own `mesh-bench backend`), `mesh proxy` configured by real `mesh registry` and
//! `mesh control-plane` processes (the debug binary: `MESH_BIN`, else `cargo build --bin
//! mesh`), and Envoy when it is found. The report must be sane: requests served, no errors
//! through our proxy, CPU time per request above zero.

use mesh_bench::{ProxyOptions, run_proxy_bench};
use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_bench_smoke_mode_measures_our_proxy() {
    let mesh_bin = mesh_bench::process::mesh_bin(false, true).unwrap();
    let bench_bin = PathBuf::from(env!("CARGO_BIN_EXE_mesh-bench"));
    let mut opts = ProxyOptions::smoke(mesh_bin, bench_bin);
    opts.progress = false;
    let report = run_proxy_bench(opts.clone()).await.unwrap();
    println!("{}", report.render());

    let names: Vec<&str> = report.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(&names[..2], ["direct", "mesh proxy"], "{names:?}");
    for target in &report.targets {
        assert_eq!(target.rounds.len(), opts.rounds, "{}", target.name);
        for round in &target.rounds {
            assert!(round.closed.requests > 0, "{}: {round:?}", target.name);
            assert_eq!(round.open.len(), opts.rates.len());
            for open in &round.open {
                assert!(open.result.requests > 0, "{}: {open:?}", target.name);
            }
        }
    }
    let direct = &report.targets[0];
    assert_eq!(
        direct.summary.errors, 0,
        "errors going direct to the backend"
    );
    let mesh = &report.targets[1];
    assert_eq!(mesh.summary.errors, 0, "errors through our proxy: {mesh:?}");
    let cpu = mesh.summary.cpu_us_per_request.unwrap();
    assert!(cpu.median > 0.0, "no CPU time per request: {cpu:?}");
    assert!(mesh.summary.idle_rss_mb.unwrap() > 0.0);
    assert!(mesh.summary.requests_per_sec.median > 0.0);
    assert!(mesh.rounds[0].open[0].added.is_some());

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["targets"][1]["name"], "mesh proxy");
    let svg = report.svg();
    assert!(
        svg.starts_with("<svg") && svg.contains("mesh proxy"),
        "{svg}"
    );
}
