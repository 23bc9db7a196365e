#![allow(clippy::unwrap_used)] // test code
//! The real py-consul 1.8.0 client drives a running `mesh registry` process.

use mesh_tests::{RegistryProcess, python, workspace_root};
use std::process::Command;

#[test]
fn py_consul_client_works_against_the_registry() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path());
    let out = Command::new(python)
        .arg(workspace_root().join("tests/py/consul_compat.py"))
        .env("CONSUL_HTTP_ADDR", registry.addr.to_string())
        .output()
        .expect("cannot run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "py-consul compatibility script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all steps passed"));
}
