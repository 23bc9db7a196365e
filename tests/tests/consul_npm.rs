#![allow(clippy::unwrap_used)] // test code
//! The real npm `consul` client (2.0.1, installed into tests/node by scripts/test.sh) drives a
//! running `mesh registry` process from a Node script.

use mesh_tests::{RegistryProcess, workspace_root};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The version tests/node/package.json pins.
const CLIENT_VERSION: &str = "2.0.1";

/// Node (`MESH_NODE`, else `node` on the PATH) when it runs and tests/node holds the pinned
/// client. `None` outside CI when either is missing; in CI (`CI=true`) that fails the test.
fn node_with_client() -> Option<PathBuf> {
    let node = std::env::var_os("MESH_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("node"));
    let runs = Command::new(&node)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let manifest = workspace_root().join("tests/node/node_modules/consul/package.json");
    let installed = std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some_and(|m| m["version"] == CLIENT_VERSION);
    if runs && installed {
        return Some(node);
    }
    let msg = if runs {
        format!(
            "no npm consul {CLIENT_VERSION} at {} (run ./scripts/test.sh, or npm ci in tests/node)",
            manifest.display()
        )
    } else {
        format!(
            "no Node.js at {} (install Node, or set MESH_NODE)",
            node.display()
        )
    };
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

#[test]
fn npm_consul_client_works_against_the_registry() {
    let Some(node) = node_with_client() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path());
    let out = Command::new(node)
        .arg(workspace_root().join("tests/node/consul_compat.js"))
        .env("CONSUL_HTTP_ADDR", registry.addr.to_string())
        .output()
        .expect("cannot run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "npm consul compatibility script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all steps passed"));
}
