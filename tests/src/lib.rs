//! Helpers for end-to-end tests: run the `mesh` binary as a real process, find the real
//! clients (Python with py-consul), and talk HTTP to what runs.
//!
//! In CI (`CI=true`) a missing Python environment fails the test; elsewhere the test says
//! loudly that it skipped.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The `mesh` binary: `MESH_BIN` if set, else built once with the same cargo that runs us.
pub fn mesh_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("MESH_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--bin", "mesh"])
            .current_dir(workspace_root())
            .status()
            .expect("cannot run cargo build for the mesh binary");
        assert!(status.success(), "cargo build --bin mesh failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"));
        target.join("debug").join("mesh")
    })
    .clone()
}

/// The Python that has the test clients installed (the README's test command makes it).
/// `None` outside CI when it is missing; in CI a missing Python fails the test.
pub fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("MESH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    let ok = Command::new(&candidate)
        .args(["-c", "import consul"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(candidate);
    }
    let msg = format!(
        "no Python with py-consul at {} (run ./scripts/test.sh, or set MESH_PYTHON)",
        candidate.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// A `mesh registry` process. Killed (SIGKILL) when dropped.
pub struct RegistryProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl RegistryProcess {
    /// Starts a registry on a free port with its data in `data_dir`, and waits until it
    /// listens.
    pub fn start(data_dir: &Path) -> RegistryProcess {
        let mut child = Command::new(mesh_bin())
            .args(["registry", "--http-addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("MESH_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start mesh registry");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[registry] {line}");
                if let Some(addr) = line
                    .split("addr=")
                    .nth(1)
                    .filter(|_| line.contains("listening"))
                {
                    let addr = addr
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the registry did not report its address")
            .parse()
            .expect("bad address in the registry's log");
        RegistryProcess {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn index(&self) -> u64 {
        self.headers
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("missing X-Consul-Index")
    }
}

/// A plain HTTP/1.1 client for tests.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl Http {
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        body: impl Into<Bytes>,
    ) -> Result<HttpResponse, String> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(url)
            .body(Full::new(body.into()))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }

    pub async fn get(&self, url: &str) -> HttpResponse {
        self.request("GET", url, Bytes::new())
            .await
            .expect("GET failed")
    }

    pub async fn put(&self, url: &str, body: impl Into<Bytes>) -> HttpResponse {
        self.request("PUT", url, body).await.expect("PUT failed")
    }

    pub async fn delete(&self, url: &str) -> HttpResponse {
        self.request("DELETE", url, Bytes::new())
            .await
            .expect("DELETE failed")
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
