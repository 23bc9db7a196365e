//! `mesh demo --steps` end to end: the whole mesh starts as child processes, the canary rollout
//! runs, the observed split follows the pushed weights, nothing fails, and every child is gone
//! afterwards. Plus the operator CLI's error handling against a real registry.

#![allow(clippy::unwrap_used)]

use mesh_tests::{RegistryProcess, mesh_bin};
use serde_json::Value;
use std::process::Command;
use std::time::Instant;

#[test]
fn demo_steps_follow_the_pushed_weights_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let summary_path = dir.path().join("summary.json");
    let started = Instant::now();
    let out = Command::new(mesh_bin())
        .args(["demo", "--steps", "--step-seconds", "3", "--rps", "200"])
        .arg("--summary-json")
        .arg(&summary_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "mesh demo --steps failed");
    println!("demo took {:?}", started.elapsed());
    assert!(stdout.contains("Summary"), "no summary table");

    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    let steps = summary["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 5, "{summary:#}");
    for step in steps {
        let name = step["step"].as_str().unwrap();
        let requests = step["requests"].as_u64().unwrap();
        assert!(requests >= 300, "step {name}: only {requests} requests");
        assert_eq!(step["errors"], 0, "step {name} had failures: {step:#}");
        if let Some(v2) = step["weights"]["v2"].as_f64() {
            let want = v2 / 100.0;
            let got = step["v2_share"].as_f64().unwrap();
            // Four standard deviations of a binomial share, at least 1.5 points.
            let tolerance = (4.0 * (want * (1.0 - want) / requests as f64).sqrt()).max(0.015);
            assert!(
                (got - want).abs() <= tolerance,
                "step {name}: v2 share {got:.3}, pushed {want:.2} (tolerance {tolerance:.3})"
            );
        }
    }
    let canary = &steps[4];
    assert_eq!(canary["step"], "canary");
    let header_requests = canary["canary"]["requests"].as_u64().unwrap();
    assert!(header_requests >= 50, "{canary:#}");
    assert_eq!(
        canary["canary"]["v2_share"].as_f64(),
        Some(1.0),
        "x-canary requests did not all reach v2: {canary:#}"
    );
    assert_eq!(
        canary["plain"]["v2"], 0,
        "requests without the header reached v2: {canary:#}"
    );
    // The ACK of each real change was measured.
    for step in &steps[1..] {
        assert!(step["ack_ms"].as_u64().is_some(), "no ACK time: {step:#}");
    }

    // Every child is gone (reaped, so not even a zombie) and none still uses the log folder.
    let pids = summary["pids"].as_array().unwrap();
    assert!(pids.len() >= 9, "{summary:#}");
    for pid in pids {
        let pid = pid.as_u64().unwrap();
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "demo child {pid} is still there"
        );
    }
    let log_dir = summary["log_dir"].as_str().unwrap().to_string();
    let pgrep = Command::new("pgrep").args(["-f", &log_dir]).output();
    if let Ok(p) = pgrep {
        assert!(
            String::from_utf8_lossy(&p.stdout).trim().is_empty(),
            "processes still run with {log_dir}"
        );
    }
    let _ = std::fs::remove_dir_all(&log_dir);
}

fn mesh(args: &[&str], registry: &str) -> (bool, String, String) {
    let out = Command::new(mesh_bin())
        .args(args)
        .env("MESH_REGISTRY_URL", registry)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn operator_cli_writes_reads_deletes_and_names_errors() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(&dir.path().join("registry"));
    let url = format!("http://{}", registry.addr);
    let config = mesh_tests::workspace_root().join("examples/config");

    // Every ready config entry is accepted.
    for file in [
        "service-defaults-http.json",
        "resolver-subsets.json",
        "splitter-90-10.json",
        "splitter-50-50.json",
        "router-canary-header.json",
        "resolver-ring-hash.json",
    ] {
        let path = config.join(file);
        let (ok, _, err) = mesh(&["config", "write", path.to_str().unwrap()], &url);
        assert!(ok, "{file}: {err}");
    }
    let (ok, out, err) = mesh(&["config", "read", "service-splitter", "backend"], &url);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Splits"][1]["Weight"], 50.0);

    // A splitter whose weights do not add up: non-zero exit and the registry's message.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"Kind":"service-splitter","Name":"backend","Splits":[{"Weight":30,"ServiceSubset":"v1"}]}"#,
    )
    .unwrap();
    let (ok, _, err) = mesh(&["config", "write", bad.to_str().unwrap()], &url);
    assert!(!ok);
    assert!(
        err.contains("HTTP 400") && err.contains("bad.json"),
        "{err}"
    );
    // Not JSON at all.
    std::fs::write(&bad, "Kind = splitter").unwrap();
    let (ok, _, err) = mesh(&["config", "write", bad.to_str().unwrap()], &url);
    assert!(!ok);
    assert!(err.contains("not valid JSON"), "{err}");
    // A missing file.
    let (ok, _, err) = mesh(&["config", "write", "/nonexistent/x.json"], &url);
    assert!(!ok);
    assert!(err.contains("cannot read /nonexistent/x.json"), "{err}");

    let (ok, _, err) = mesh(&["config", "delete", "service-router", "backend"], &url);
    assert!(ok, "{err}");
    let (ok, _, err) = mesh(&["config", "read", "service-router", "backend"], &url);
    assert!(!ok);
    assert!(
        err.contains("no config entry service-router/backend"),
        "{err}"
    );

    // Services.
    let svc = dir.path().join("svc.json");
    std::fs::write(
        &svc,
        r#"{"Service": {"Name": "web", "ID": "web-1", "Port": 8080,
            "Connect": {"SidecarService": {}}}}"#,
    )
    .unwrap();
    let (ok, out, err) = mesh(&["services", "register", svc.to_str().unwrap()], &url);
    assert!(ok, "{err}");
    assert!(out.contains("web-1"), "{out}");
    let (ok, _, err) = mesh(&["services", "deregister", "web-1"], &url);
    assert!(ok, "{err}");
    let (ok, _, _) = mesh(&["services", "deregister", "nope"], &url);
    assert!(!ok);

    // No registry there: the error names the address.
    let (ok, _, err) = mesh(
        &["config", "read", "service-router", "backend"],
        "http://127.0.0.1:1",
    );
    assert!(!ok);
    assert!(err.contains("127.0.0.1:1"), "{err}");

    // Help explains with an example.
    let (ok, out, _) = mesh(&["config", "write", "--help"], &url);
    assert!(ok && out.contains("Example:"), "{out}");
}
