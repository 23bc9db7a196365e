#![allow(clippy::unwrap_used)] // test code
//! The proxy benchmark's smoke mode, run through the library entry: the fixed-response backend
//! (this package's own `mesh-bench backend`), `mesh proxy` configured by real `mesh registry` and
//! `mesh control-plane` processes (the debug binary: `MESH_BIN`, else `cargo build --bin
//! mesh`), and Envoy (`MESH_ENVOY`, `envoy` on PATH or `.venv/bin/envoy`; without it the runs go
//! on with our proxy alone, loudly, except in CI, where a missing Envoy fails). Over HTTP/1.1,
//! over h2c with two streams per connection, and as unary gRPC calls. The reports must be sane:
//! requests served and no errors through every target, CPU time per request above zero.

use mesh_bench::load::Protocol;
use mesh_bench::{ProxyOptions, ProxyReport, run_proxy_bench};
use std::path::PathBuf;

/// One smoke run at a time: each pins its proxies to the same CPU, so runs side by side
/// would load each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Envoy, when this machine has it; in CI it must.
fn envoy() -> Option<PathBuf> {
    let envoy = mesh_bench::proxy::find_envoy(None);
    if envoy.is_none() {
        let msg = "no Envoy (set MESH_ENVOY, put `envoy` on PATH, or run ./scripts/test.sh)";
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED the Envoy part: {msg}");
    }
    envoy
}

async fn run(protocol: Protocol, streams: usize) -> (ProxyOptions, ProxyReport, bool) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mesh_bin = mesh_bench::process::mesh_bin(false, true).unwrap();
    let bench_bin = PathBuf::from(env!("CARGO_BIN_EXE_mesh-bench"));
    let mut opts = ProxyOptions::smoke(mesh_bin, bench_bin);
    opts.progress = false;
    opts.protocol = protocol;
    opts.streams = streams;
    let envoy = envoy();
    let with_envoy = envoy.is_some();
    opts.envoy_bin = envoy;
    let report = run_proxy_bench(opts.clone()).await.unwrap();
    println!("{}", report.render());
    (opts, report, with_envoy)
}

/// Every target served requests in every run, without a single error.
fn check(opts: &ProxyOptions, report: &ProxyReport, with_envoy: bool) {
    let names: Vec<&str> = report.targets.iter().map(|t| t.name.as_str()).collect();
    let expected: &[&str] = if with_envoy {
        &["direct", "mesh proxy", "envoy"]
    } else {
        &["direct", "mesh proxy"]
    };
    assert_eq!(names, expected, "skipped: {:?}", report.skipped);
    for target in &report.targets {
        let name = &target.name;
        assert_eq!(target.rounds.len(), opts.rounds, "{name}");
        for round in &target.rounds {
            assert!(round.closed.requests > 0, "{name}: {round:?}");
            assert_eq!(round.closed.errors, 0, "{name}: {round:?}");
            assert_eq!(round.open.len(), opts.rates.len());
            for open in &round.open {
                assert!(open.result.requests > 0, "{name}: {open:?}");
                assert_eq!(open.result.errors, 0, "{name}: {open:?}");
            }
        }
        assert_eq!(
            target.summary.errors, 0,
            "errors through {name}: {target:?}"
        );
        assert!(target.summary.requests_per_sec.median > 0.0, "{name}");
        if name != "direct" {
            let cpu = target.summary.cpu_us_per_request.unwrap();
            assert!(cpu.median > 0.0, "{name}: no CPU time per request: {cpu:?}");
            let (rss, private) = (
                target.summary.idle_rss_mb.unwrap(),
                target.summary.idle_rss_anon_mb.unwrap(),
            );
            assert!(
                rss > 0.0 && private > 0.0 && private < rss,
                "{name}: {rss} {private}"
            );
            assert!(target.rounds[0].open[0].added.is_some(), "{name}");
            // CPU per request at each fixed rate too (it may round to zero in a short run:
            // /proc counts CPU time in 10 ms ticks).
            for at in &target.summary.added {
                assert!(at.cpu_us_per_request.is_some(), "{name}: {at:?}");
            }
            assert!(target.summary.requests_per_cpu_second.unwrap() > 0.0);
        }
    }
    let vs_envoy = report.targets[1].summary.requests_per_cpu_second_vs_envoy;
    assert_eq!(vs_envoy.is_some(), with_envoy, "{vs_envoy:?}");
    // Envoy's CPU per request over ours, round by round: for our proxy when Envoy ran, and
    // the same figure as the two CPU columns give in a one-round run.
    let paired = report.targets[1].summary.cpu_vs_envoy;
    assert_eq!(paired.is_some(), with_envoy, "{paired:?}");
    if let (Some(paired), Some(envoy)) = (paired, report.targets.get(2)) {
        let ours = report.targets[1].summary.cpu_us_per_request.unwrap().median;
        let theirs = envoy.summary.cpu_us_per_request.unwrap().median;
        assert!(
            (paired.median - theirs / ours).abs() < 1e-9,
            "{paired:?} vs {theirs}/{ours}"
        );
        assert!(envoy.summary.cpu_vs_envoy.is_none());
        assert!(report.render().contains("CPU vs envoy"));
    }

    let json = serde_json::to_value(report).unwrap();
    assert_eq!(json["targets"][1]["name"], "mesh proxy");
    assert_eq!(
        json["options"]["protocol"],
        serde_json::to_value(opts.protocol).unwrap()
    );
    let streams = if opts.protocol.is_h2() {
        opts.streams
    } else {
        1
    };
    assert_eq!(json["options"]["streams"], streams);
    let svg = report.svg();
    assert!(
        svg.starts_with("<svg") && svg.contains("mesh proxy"),
        "{svg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_bench_smoke_mode_measures_our_proxy() {
    let (opts, report, with_envoy) = run(Protocol::Http1, 2).await;
    check(&opts, &report, with_envoy);
    assert!(
        report
            .render()
            .contains("one request in flight per connection")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_bench_smoke_mode_over_h2c_with_concurrent_streams() {
    let (opts, report, with_envoy) = run(Protocol::H2c, 2).await;
    check(&opts, &report, with_envoy);
    let text = report.render();
    assert!(
        text.contains("2 concurrent streams per connection"),
        "{text}"
    );
    assert!(text.contains("req per CPU-s"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_bench_smoke_mode_with_grpc_calls() {
    let (opts, report, with_envoy) = run(Protocol::Grpc, 2).await;
    // A gRPC call only succeeds when the proxy spoke HTTP/2 to the backend (it answers gRPC
    // over HTTP/2 only) and passed its trailers on: zero errors says both.
    check(&opts, &report, with_envoy);
    let text = report.render();
    assert!(text.contains("gRPC"), "{text}");
    assert!(text.contains("req per CPU-s"), "{text}");
}
