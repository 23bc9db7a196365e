#![allow(clippy::unwrap_used)] // test code
//! The real py-consul client's `filter_expr` and `dc` against a running `mesh registry`.

use mesh_tests::{RegistryProcess, python, workspace_root};
use std::process::Command;

#[test]
fn py_consul_filters_and_datacenters() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path());
    let out = Command::new(python)
        .arg(workspace_root().join("tests/py/consul_filter.py"))
        .env("CONSUL_HTTP_ADDR", registry.addr.to_string())
        .output()
        .expect("cannot run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "py-consul filter script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all steps passed"), "{stdout}");
}
