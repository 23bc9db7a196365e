//! `mesh-bench proxy`: our `mesh proxy` (configured by our registry and control plane) next to
//! the peers this machine has (Envoy, nginx, HAProxy), each configured for the same route (one
//! listener, `/` to one cluster with one fixed-response backend) and each with one worker,
//! measured in turn, the same way, in the same run, over several rounds. See README.md.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hyper::Method;
use serde::Serialize;
use serde_json::json;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

use crate::http::Conn;
use crate::load::{self, LoadResult, Percentiles, Protocol, Window};
use crate::process::MeshProcess;
use crate::report::{Table, median};
use crate::system;

const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many idle connections are opened at a time for the memory figure.
const IDLE_BATCH: usize = 50;
/// How long the target may settle after the idle connections are open, before its RSS is read.
const IDLE_SETTLE: Duration = Duration::from_millis(500);
/// nginx's `keepalive_requests`, downstream and upstream: more than any run sends on one
/// connection.
const KEEPALIVE_REQUESTS: u64 = 1_000_000;

#[derive(Debug, Clone, Serialize)]
pub struct ProxyOptions {
    pub duration: Duration,
    pub warmup: Duration,
    /// Closed-loop connections.
    pub connections: usize,
    /// Open-loop connections (the fixed rate is spread over them).
    pub open_connections: usize,
    pub rounds: usize,
    pub rates: Vec<u64>,
    /// Idle keep-alive connections opened for the memory figure.
    pub idle_connections: usize,
    pub protocol: Protocol,
    /// Concurrent streams per h2c connection in closed-loop runs (1 over HTTP/1.1, which
    /// carries one request at a time).
    pub streams: usize,
    /// Only our proxy and Envoy.
    pub only_mesh_and_envoy: bool,
    /// Pin proxies to CPU 1 and the backend to CPU 0 with `taskset`, when it exists.
    pub pin: bool,
    #[serde(skip)]
    pub mesh_bin: PathBuf,
    /// The binary that serves the backend (`mesh-bench backend`).
    #[serde(skip)]
    pub bench_bin: PathBuf,
    #[serde(skip)]
    pub envoy_bin: Option<PathBuf>,
    /// Print a progress line on stderr.
    #[serde(skip)]
    pub progress: bool,
}

impl ProxyOptions {
    pub fn new(mesh_bin: PathBuf, bench_bin: PathBuf) -> ProxyOptions {
        ProxyOptions {
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            connections: 32,
            open_connections: 16,
            rounds: 3,
            rates: vec![1000, 5000],
            idle_connections: 1000,
            protocol: Protocol::Http1,
            streams: 10,
            only_mesh_and_envoy: false,
            pin: true,
            mesh_bin,
            bench_bin,
            envoy_bin: None,
            progress: true,
        }
    }

    /// Seconds, not minutes.
    pub fn smoke(mesh_bin: PathBuf, bench_bin: PathBuf) -> ProxyOptions {
        ProxyOptions {
            duration: Duration::from_millis(500),
            warmup: Duration::from_millis(200),
            connections: 8,
            open_connections: 4,
            rounds: 1,
            rates: vec![200],
            idle_connections: 100,
            streams: 2,
            only_mesh_and_envoy: true,
            ..ProxyOptions::new(mesh_bin, bench_bin)
        }
    }
}

/// Median and spread over rounds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    fn of(values: &[f64]) -> Stat {
        if values.is_empty() {
            return Stat::default();
        }
        Stat {
            median: median(values),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OpenRun {
    pub rate: u64,
    pub result: LoadResult,
    /// Proxy CPU µs per request at this rate (None for direct).
    pub cpu_us_per_request: Option<f64>,
    /// Latency percentiles minus those of the direct run at the same rate in the same round.
    pub added: Option<Percentiles>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub closed: LoadResult,
    /// Proxy CPU (utime+stime, all its threads and processes) over the closed-loop window,
    /// per request served.
    pub cpu_us_per_request: Option<f64>,
    pub open: Vec<OpenRun>,
    /// RSS growth per 1,000 idle keep-alive connections, in MB.
    pub rss_mb_per_1000_idle: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AddedSummary {
    pub rate: u64,
    pub p50_us: Stat,
    pub p90_us: Stat,
    pub p99_us: Stat,
    pub p999_us: Stat,
    /// The latency itself (not added), p99.
    pub p99_total_us: Stat,
    /// Proxy CPU µs per request at this fixed rate (None for direct): what
    /// `cpu_us_per_request` is at saturation, where a proxy that saturates its core serves
    /// more requests per wake-up and so pays less per request.
    pub cpu_us_per_request: Option<Stat>,
    /// Envoy's CPU µs per request at this rate over this target's, round by round (see
    /// [`Summary::cpu_vs_envoy`]).
    pub cpu_vs_envoy: Option<Stat>,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub requests_per_sec: Stat,
    pub cpu_us_per_request: Option<Stat>,
    pub added: Vec<AddedSummary>,
    pub idle_rss_mb: Option<f64>,
    /// The private (anonymous) part of the idle RSS; the rest is mostly the binary's pages.
    pub idle_rss_anon_mb: Option<f64>,
    pub rss_mb_per_1000_idle: Option<Stat>,
    /// The first round's figure: the only one taken on a process that never held that many
    /// connections (later rounds reuse memory the first one freed).
    pub rss_mb_per_1000_idle_first: Option<f64>,
    /// 1e6 / the median CPU µs per request: requests served per second of the proxy's CPU.
    pub requests_per_cpu_second: Option<f64>,
    /// `requests_per_cpu_second` over Envoy's (above 1: less CPU per request than Envoy).
    pub requests_per_cpu_second_vs_envoy: Option<f64>,
    /// Envoy's CPU µs per request at saturation over this target's, paired round by round
    /// (how many times less CPU per request than Envoy): median and spread of the per-round
    /// ratios. A round measures every target in turn, so the two figures of a pair are taken
    /// minutes apart on the same machine, where the medians of each may come from rounds far
    /// apart. None for Envoy itself, direct, and runs without Envoy.
    pub cpu_vs_envoy: Option<Stat>,
    /// Errors over every run of this target.
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    pub name: String,
    /// How it was run: version, worker setting, pinning.
    pub setup: String,
    pub rounds: Vec<Round>,
    pub summary: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProxyReport {
    pub options: ProxyOptions,
    pub cpus: usize,
    pub load_average_before: Option<f64>,
    pub load_average_after: Option<f64>,
    pub pinned: bool,
    /// Peers not found, with why.
    pub skipped: Vec<String>,
    /// `direct` first, then each proxy.
    pub targets: Vec<TargetReport>,
}

/// A process of a target whose CPU and memory count as the proxy's.
enum Proc {
    Mesh(MeshProcess),
    Other(OtherProcess),
}

impl Proc {
    fn pid(&self) -> u32 {
        match self {
            Proc::Mesh(p) => p.pid(),
            Proc::Other(p) => p.pid,
        }
    }
}

/// A peer's process (Envoy, nginx, HAProxy), its output in a log file; killed when dropped.
struct OtherProcess {
    child: Child,
    pid: u32,
}

impl OtherProcess {
    fn start(program: &Path, args: &[String], pin: Option<&str>, log: &Path) -> Result<Self> {
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = match pin {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpu]).arg(program);
                c
            }
            None => Command::new(program),
        };
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let pid = child.id().context("the process exited at once")?;
        Ok(OtherProcess { child, pid })
    }

    /// Kills the process and waits for it.
    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// What load is sent to, and the processes that count as it.
struct Target {
    name: String,
    setup: String,
    addr: SocketAddr,
    procs: Vec<Proc>,
    /// Processes that must stay alive but do not count (registry, control plane).
    support: Vec<MeshProcess>,
    idle_rss_mb: Option<f64>,
    idle_rss_anon_mb: Option<f64>,
}

impl Target {
    /// Kills its processes and waits for them: nothing of a run outlives it, not even as a
    /// zombie for init to reap (dropping them only sends the kill).
    async fn stop(self) {
        for p in self.procs {
            match p {
                Proc::Mesh(p) => p.stop().await,
                Proc::Other(p) => p.stop().await,
            }
        }
        for p in self.support {
            p.stop().await;
        }
    }

    fn is_direct(&self) -> bool {
        self.procs.is_empty()
    }

    /// CPU seconds and RSS bytes of every process of the target and their children.
    fn stats(&self) -> Option<(f64, u64)> {
        self.sum_stats().map(|s| (s.cpu_seconds, s.rss_bytes))
    }

    fn sum_stats(&self) -> Option<system::ProcStats> {
        if self.procs.is_empty() {
            return None;
        }
        let mut sum = system::ProcStats::default();
        for p in &self.procs {
            for pid in process_tree(p.pid()) {
                if let Ok(s) = system::proc_stats(Some(pid)) {
                    sum.cpu_seconds += s.cpu_seconds;
                    sum.rss_bytes += s.rss_bytes;
                    sum.rss_anon_bytes += s.rss_anon_bytes;
                }
            }
        }
        Some(sum)
    }
}

/// `pid` and its descendants (nginx's workers), from `/proc/PID/task/*/children`.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for task in tasks.flatten() {
                if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
                    out.extend(
                        children
                            .split_whitespace()
                            .filter_map(|c| c.parse::<u32>().ok()),
                    );
                }
            }
        }
        i += 1;
    }
    out
}

/// A free port below the kernel's ephemeral range (32768+): a released `bind(0)` port is
/// soon handed to another `bind(0)`, and the program we pass it to would then fail to bind.
fn free_port() -> Result<u16> {
    for _ in 0..1000 {
        let port = fastrand::u16(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port in 20000-32000")
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `--envoy-bin`, else `MESH_ENVOY`, else `envoy` on PATH, else `<workspace>/.venv/bin/envoy`.
pub fn find_envoy(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit
        .or_else(|| std::env::var_os("MESH_ENVOY").map(PathBuf::from))
        .filter(|p| p.is_file())
        .or_else(|| on_path("envoy"))
        .or_else(|| {
            let venv = crate::process::workspace_root().join(".venv/bin/envoy");
            venv.is_file().then_some(venv)
        })
}

/// One progress line on a terminal (rewritten in place); a line per step otherwise.
struct Progress {
    on: bool,
    tty: bool,
}

impl Progress {
    fn say(&self, text: &str) {
        match (self.on, self.tty) {
            (true, true) => eprint!("\r\x1b[K[proxy bench] {text}"),
            (true, false) => eprintln!("[proxy bench] {text}"),
            _ => {}
        }
    }
    fn done(&self) {
        if self.on && self.tty {
            eprintln!();
        }
    }
}

/// Waits until a request of the run's kind through `addr` is answered as expected.
async fn wait_ready(addr: SocketAddr, protocol: Protocol, what: &str) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(mut conn) = load::LoadConn::connect(addr, protocol).await
            && conn.request().await == load::Outcome::Success
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{what} did not answer a {protocol} request as expected on {addr} within \
                 {START_TIMEOUT:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put(conn: &mut Conn, path: &str, body: serde_json::Value) -> Result<()> {
    conn.request(Method::PUT, path, Bytes::from(body.to_string()))
        .await?
        .ensure_success(&format!("PUT {path}"))?;
    Ok(())
}

/// Registry + control plane + `mesh proxy --node-id bench-sidecar-proxy`; load goes to its
/// upstream listener for `bench-backend`.
async fn start_mesh(
    opts: &ProxyOptions,
    backend: SocketAddr,
    dir: &Path,
    pin: Option<&str>,
) -> Result<Target> {
    let data_dir = dir.join("registry");
    let data_dir = data_dir.to_string_lossy();
    let registry = MeshProcess::start(
        &opts.mesh_bin,
        "registry",
        &[
            "registry",
            "--http-addr",
            "127.0.0.1:0",
            "--data-dir",
            &data_dir,
        ],
        &["registry"],
        START_TIMEOUT,
    )
    .await?;
    let registry_addr = registry.addr("registry")?;
    let registry_url = format!("http://{registry_addr}");
    let control_plane = MeshProcess::start(
        &opts.mesh_bin,
        "control-plane",
        &[
            "control-plane",
            "--registry-url",
            &registry_url,
            "--xds-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ],
        &["xds", "admin"],
        START_TIMEOUT,
    )
    .await?;
    // The control plane starts on an empty registry and the bench's entries arrive as changes
    // once it has synced: it publishes a view only when a batch of updates changes it, so
    // entries already there at start can all land in the batches before it has synced, and
    // then the proxy waits for a change that never comes.
    wait_synced(control_plane.addr("admin")?)
        .await
        .with_context(|| {
            format!(
                "the last log lines:\n{}\n{}",
                control_plane.log_tail(),
                registry.log_tail()
            )
        })?;
    let mut conn = Conn::connect(registry_addr).await?;
    let (upstream_port, public_port) = (free_port()?, free_port()?);
    put(
        &mut conn,
        "/v1/config",
        // gRPC makes our control plane give the cluster HTTP/2 upstream options: the proxy
        // then speaks h2c to the backend, as Envoy does in this mode.
        json!({"Kind": "service-defaults", "Name": "bench-backend",
               "Protocol": if opts.protocol == Protocol::Grpc { "grpc" } else { "http" }}),
    )
    .await?;
    put(
        &mut conn,
        "/v1/agent/service/register",
        json!({"Name": "bench-backend", "ID": "bench-backend-1", "Address": "127.0.0.1",
               "Port": backend.port(), "Check": {"TTL": "1h", "Status": "passing"}}),
    )
    .await?;
    put(
        &mut conn,
        "/v1/agent/service/register",
        json!({"Kind": "connect-proxy", "Name": "bench-sidecar-proxy", "ID": "bench-sidecar-proxy",
               "Address": "127.0.0.1", "Port": public_port,
               "Proxy": {"DestinationServiceName": "bench-client", "LocalServicePort": backend.port(),
                         "Upstreams": [{"DestinationName": "bench-backend",
                                        "LocalBindPort": upstream_port}]}}),
    )
    .await?;
    let xds_url = format!("http://{}", control_plane.addr("xds")?);
    let mesh_bin = opts.mesh_bin.to_string_lossy();
    let mut args: Vec<&str> = Vec::new();
    if let Some(cpu) = pin {
        args.extend(["-c", cpu, &mesh_bin]);
    }
    args.extend([
        "proxy",
        "--node-id",
        "bench-sidecar-proxy",
        "--xds-url",
        &xds_url,
        "--admin-addr",
        "127.0.0.1:0",
    ]);
    // One worker, as every peer gets: `--concurrency 1` runs the proxy on one thread.
    args.extend(["--concurrency", "1"]);
    let program = if pin.is_some() {
        PathBuf::from("taskset")
    } else {
        opts.mesh_bin.clone()
    };
    let proxy = MeshProcess::start(&program, "proxy", &args, &["admin"], START_TIMEOUT).await?;
    let addr: SocketAddr = ([127, 0, 0, 1], upstream_port).into();
    wait_ready(addr, opts.protocol, "mesh proxy")
        .await
        .with_context(|| {
            format!(
                "the last log lines:\n{}\n{}\n{}",
                proxy.log_tail(),
                control_plane.log_tail(),
                registry.log_tail()
            )
        })?;
    Ok(Target {
        name: "mesh proxy".into(),
        setup: format!(
            "--concurrency 1{}; configured over ADS by mesh control-plane{}",
            pin.map(|c| format!(", taskset -c {c}")).unwrap_or_default(),
            if opts.protocol == Protocol::Grpc {
                " (service-defaults protocol grpc: HTTP/2 upstream)"
            } else {
                ""
            }
        ),
        addr,
        procs: vec![Proc::Mesh(proxy)],
        support: vec![control_plane, registry],
        idle_rss_mb: None,
        idle_rss_anon_mb: None,
    })
}

/// Waits until the control plane's `/ready` says it has synced with the registry.
async fn wait_synced(admin: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(mut conn) = Conn::connect(admin).await
            && let Ok(response) = conn.request(Method::GET, "/ready", Bytes::new()).await
            && response.status.is_success()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the control plane did not sync with the registry within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn version_line(program: &Path, arg: &str) -> String {
    std::process::Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .map(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).to_string();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

async fn start_envoy(
    opts: &ProxyOptions,
    envoy: &Path,
    backend: SocketAddr,
    dir: &Path,
    pin: Option<&str>,
) -> Result<Target> {
    let (port, admin) = (free_port()?, free_port()?);
    let socket =
        |port: u16| json!({"socket_address": {"address": "127.0.0.1", "port_value": port}});
    let mut cluster = json!({
        "name": "bench-backend",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "bench-backend", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": socket(backend.port())}}]}]}
    });
    if opts.protocol == Protocol::Grpc {
        // gRPC needs HTTP/2 to the backend (trailers); plain h2c runs keep HTTP/1.1 upstream,
        // as our proxy does for protocol http.
        cluster["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        });
    }
    let config = json!({
        "admin": {"address": socket(admin)},
        "static_resources": {
            "listeners": [{
                "name": "bench",
                "address": socket(port),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "bench",
                        "codec_type": "AUTO",
                        "route_config": {"name": "bench", "virtual_hosts": [{
                            "name": "bench", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "bench-backend"}}]
                        }]},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
                    }
                }]}]
            }],
            "clusters": [cluster]
        }
    });
    let config_path = dir.join("envoy.json");
    std::fs::write(&config_path, config.to_string())?;
    let args: Vec<String> = [
        "-c",
        &config_path.to_string_lossy(),
        "--concurrency",
        "1",
        "--disable-hot-restart",
        "-l",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let process = OtherProcess::start(envoy, &args, pin, &dir.join("envoy.log"))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_ready(addr, opts.protocol, "envoy")
        .await
        .with_context(|| log_tail(&dir.join("envoy.log")))?;
    Ok(Target {
        name: "envoy".into(),
        setup: format!(
            "{}; --concurrency 1{}; static config{}",
            version_line(envoy, "--version")
                .split("version: ")
                .nth(1)
                .unwrap_or("envoy"),
            pin.map(|c| format!(", taskset -c {c}")).unwrap_or_default(),
            if opts.protocol == Protocol::Grpc {
                ", HTTP/2 upstream"
            } else {
                ""
            }
        ),
        addr,
        procs: vec![Proc::Other(process)],
        support: Vec::new(),
        idle_rss_mb: None,
        idle_rss_anon_mb: None,
    })
}

async fn start_nginx(
    opts: &ProxyOptions,
    nginx: &Path,
    backend: SocketAddr,
    dir: &Path,
    pin: Option<&str>,
) -> Result<Target> {
    let port = free_port()?;
    let d = dir.join("nginx");
    std::fs::create_dir_all(&d)?;
    let ds = d.to_string_lossy();
    // `master_process off`: one process that serves (the one worker), so the SIGKILL the
    // harness sends on drop ends all of nginx; a master's workers would outlive it.
    // `keepalive_requests`: nginx closes a keep-alive connection after 1000 requests by
    // default, downstream and upstream; Envoy and our proxy never do, so lift it past any run.
    let config = format!(
        "master_process off;\nworker_processes 1;\ndaemon off;\npid {ds}/nginx.pid;\n\
         error_log {ds}/error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {ds};\n  proxy_temp_path {ds};\n  \
         fastcgi_temp_path {ds};\n  uwsgi_temp_path {ds};\n  scgi_temp_path {ds};\n  \
         upstream backend {{ server 127.0.0.1:{bp}; keepalive 64; \
         keepalive_requests {KEEPALIVE_REQUESTS}; }}\n  \
         server {{\n    listen 127.0.0.1:{port};\n    \
         keepalive_requests {KEEPALIVE_REQUESTS};\n    location / {{\n      \
         proxy_pass http://backend;\n      proxy_http_version 1.1;\n      \
         proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
        bp = backend.port()
    );
    let config_path = d.join("nginx.conf");
    std::fs::write(&config_path, config)?;
    let args: Vec<String> = vec![
        "-p".into(),
        ds.to_string(),
        "-c".into(),
        config_path.to_string_lossy().to_string(),
        "-e".into(),
        format!("{ds}/error.log"),
    ];
    let process = OtherProcess::start(nginx, &args, pin, &d.join("stderr.log"))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_ready(addr, opts.protocol, "nginx")
        .await
        .with_context(|| log_tail(&d.join("error.log")))?;
    Ok(Target {
        name: "nginx".into(),
        setup: format!(
            "{}; master_process off (one process), upstream keepalive 64, keepalive_requests \
             {KEEPALIVE_REQUESTS} (both sides), access_log off{}",
            version_line(nginx, "-v"),
            pin.map(|c| format!(", taskset -c {c}")).unwrap_or_default()
        ),
        addr,
        procs: vec![Proc::Other(process)],
        support: Vec::new(),
        idle_rss_mb: None,
        idle_rss_anon_mb: None,
    })
}

async fn start_haproxy(
    opts: &ProxyOptions,
    haproxy: &Path,
    backend: SocketAddr,
    dir: &Path,
    pin: Option<&str>,
) -> Result<Target> {
    let port = free_port()?;
    let config = format!(
        "global\n  nbthread 1\n  maxconn 4096\n\
         defaults\n  mode http\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n  \
         http-reuse always\n\
         frontend bench\n  bind 127.0.0.1:{port}\n  default_backend backend\n\
         backend backend\n  server s1 127.0.0.1:{}\n",
        backend.port()
    );
    let config_path = dir.join("haproxy.cfg");
    std::fs::write(&config_path, config)?;
    let args: Vec<String> = vec![
        "-f".into(),
        config_path.to_string_lossy().to_string(),
        "-db".into(),
    ];
    let process = OtherProcess::start(haproxy, &args, pin, &dir.join("haproxy.log"))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_ready(addr, opts.protocol, "haproxy")
        .await
        .with_context(|| log_tail(&dir.join("haproxy.log")))?;
    Ok(Target {
        name: "haproxy".into(),
        setup: format!(
            "{}; nbthread 1, http-reuse always{}",
            version_line(haproxy, "-v"),
            pin.map(|c| format!(", taskset -c {c}")).unwrap_or_default()
        ),
        addr,
        procs: vec![Proc::Other(process)],
        support: Vec::new(),
        idle_rss_mb: None,
        idle_rss_anon_mb: None,
    })
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    format!("its last log lines ({}):\n{tail}", path.display())
}

/// Runs one load pattern against a target, reading the target's CPU time at the start and the
/// end of the measured window. Returns the result and CPU µs per request.
async fn measure(
    target: &Target,
    opts: &ProxyOptions,
    rate: Option<u64>,
) -> Result<(LoadResult, Option<f64>)> {
    let n = if rate.is_some() {
        opts.open_connections
    } else {
        opts.connections
    };
    let conns = load::connect_all(target.addr, opts.protocol, n).await?;
    let window = Window {
        start: Instant::now(),
        warmup: opts.warmup,
        duration: opts.duration,
    };
    let sampler = async {
        tokio::time::sleep_until(window.measure_from().into()).await;
        let before = target.stats();
        tokio::time::sleep_until(window.end().into()).await;
        let after = target.stats();
        before.zip(after).map(|((a, _), (b, _))| b - a)
    };
    let run = async {
        match rate {
            Some(rate) => load::open_loop(conns, rate, window).await,
            None => load::closed_loop(conns, opts.streams, window).await,
        }
    };
    let (result, cpu) = tokio::join!(run, sampler);
    let result = result?;
    let per_request = cpu.map(|cpu| {
        if result.requests == 0 {
            0.0
        } else {
            cpu * 1e6 / result.requests as f64
        }
    });
    Ok((result, per_request))
}

/// RSS growth per 1,000 idle keep-alive connections, in MB.
async fn idle_memory(target: &Target, opts: &ProxyOptions) -> Result<Option<f64>> {
    let Some((_, before)) = target.stats() else {
        return Ok(None);
    };
    let conns = load::idle_connections(
        target.addr,
        opts.protocol,
        opts.idle_connections,
        IDLE_BATCH,
    )
    .await?;
    tokio::time::sleep(IDLE_SETTLE).await;
    let after = target.stats().map(|(_, rss)| rss).unwrap_or(before);
    drop(conns);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let growth = after as f64 - before as f64;
    Ok(Some(
        growth / (1024.0 * 1024.0) * 1000.0 / opts.idle_connections.max(1) as f64,
    ))
}

pub async fn run_proxy_bench(mut opts: ProxyOptions) -> Result<ProxyReport> {
    if !opts.protocol.is_h2() {
        opts.streams = 1;
    }
    opts.streams = opts.streams.max(1);
    system::ensure_open_files(2 * opts.idle_connections as u64 + 256)?;
    let progress = Progress {
        on: opts.progress,
        tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let load_before = system::load_average();
    let dir = tempfile::tempdir()?;
    let pinned = opts.pin && on_path("taskset").is_some();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (proxy_cpu, backend_cpu) = if pinned && cpus >= 2 {
        (Some("1"), Some("0"))
    } else {
        (None, None)
    };

    progress.say("starting the backend");
    let bench_bin = opts.bench_bin.to_string_lossy();
    let backend_process = match backend_cpu {
        Some(cpu) => {
            MeshProcess::start(
                Path::new("taskset"),
                "backend",
                &["-c", cpu, &bench_bin, "backend", "--addr", "127.0.0.1:0"],
                &["backend"],
                START_TIMEOUT,
            )
            .await?
        }
        None => {
            MeshProcess::start(
                &opts.bench_bin,
                "backend",
                &["backend", "--addr", "127.0.0.1:0"],
                &["backend"],
                START_TIMEOUT,
            )
            .await?
        }
    };
    let backend = backend_process.addr("backend")?;
    wait_ready(backend, opts.protocol, "the backend").await?;

    let mut skipped = Vec::new();
    let mut targets = vec![Target {
        name: "direct".into(),
        setup: format!(
            "mesh-bench backend, no proxy{}",
            backend_cpu
                .map(|c| format!(" (backend: taskset -c {c})"))
                .unwrap_or_default()
        ),
        addr: backend,
        procs: Vec::new(),
        support: Vec::new(),
        idle_rss_mb: None,
        idle_rss_anon_mb: None,
    }];
    progress.say("starting mesh proxy (registry, control plane, proxy)");
    targets.push(start_mesh(&opts, backend, dir.path(), proxy_cpu).await?);
    match find_envoy(opts.envoy_bin.clone()) {
        Some(envoy) => {
            progress.say("starting envoy");
            targets.push(start_envoy(&opts, &envoy, backend, dir.path(), proxy_cpu).await?);
        }
        None => skipped.push(
            "envoy: not found (--envoy-bin, MESH_ENVOY, `envoy` on PATH, .venv/bin/envoy)".into(),
        ),
    }
    if opts.only_mesh_and_envoy {
        skipped.push("nginx, haproxy: not run in smoke mode".into());
    } else if opts.protocol.is_h2() {
        skipped.push(format!(
            "nginx, haproxy: not configured for {} downstream here",
            opts.protocol
        ));
    } else {
        match on_path("nginx") {
            Some(nginx) => {
                progress.say("starting nginx");
                targets.push(start_nginx(&opts, &nginx, backend, dir.path(), proxy_cpu).await?);
            }
            None => skipped.push("nginx: not found on PATH (Debian: nginx-light)".into()),
        }
        match on_path("haproxy") {
            Some(haproxy) => {
                progress.say("starting haproxy");
                targets.push(start_haproxy(&opts, &haproxy, backend, dir.path(), proxy_cpu).await?);
            }
            None => skipped.push("haproxy: not found on PATH (Debian: haproxy)".into()),
        }
    }
    if progress.on {
        progress.done();
        for s in &skipped {
            eprintln!("[proxy bench] skipped {s}");
        }
    }
    // Idle RSS: configured and answered one request, no load yet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for t in &mut targets {
        let idle = t.sum_stats();
        t.idle_rss_mb = idle.map(|s| s.rss_bytes as f64 / (1024.0 * 1024.0));
        t.idle_rss_anon_mb = idle.map(|s| s.rss_anon_bytes as f64 / (1024.0 * 1024.0));
    }

    let mut rounds: Vec<Vec<Round>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 0..opts.rounds {
        let mut direct_latency: Vec<Percentiles> = Vec::new();
        for (i, target) in targets.iter().enumerate() {
            let label = format!("round {}/{}: {}", round + 1, opts.rounds, target.name);
            progress.say(&format!(
                "{label}: closed loop, {} connections",
                opts.connections
            ));
            let (closed, cpu) = measure(target, &opts, None).await?;
            let mut open = Vec::new();
            for (k, &rate) in opts.rates.iter().enumerate() {
                progress.say(&format!("{label}: open loop at {rate} rps"));
                let (result, cpu) = measure(target, &opts, Some(rate)).await?;
                let added = if target.is_direct() {
                    direct_latency.push(result.latency);
                    None
                } else {
                    direct_latency.get(k).map(|d| result.latency.minus(d))
                };
                open.push(OpenRun {
                    rate,
                    result,
                    cpu_us_per_request: cpu,
                    added,
                });
            }
            let rss_mb_per_1000_idle = if target.is_direct() {
                None
            } else {
                progress.say(&format!(
                    "{label}: {} idle keep-alive connections",
                    opts.idle_connections
                ));
                idle_memory(target, &opts).await?
            };
            rounds[i].push(Round {
                closed,
                cpu_us_per_request: cpu,
                open,
                rss_mb_per_1000_idle,
            });
        }
    }
    progress.say("done");
    progress.done();

    let mut reports: Vec<TargetReport> = targets
        .iter()
        .zip(rounds)
        .map(|(t, rounds)| TargetReport {
            name: t.name.clone(),
            setup: t.setup.clone(),
            summary: summarize(&opts, t, &rounds),
            rounds,
        })
        .collect();
    compare_with_envoy(&mut reports);
    for t in targets {
        t.stop().await;
    }
    backend_process.stop().await;
    Ok(ProxyReport {
        options: opts,
        cpus,
        load_average_before: load_before,
        load_average_after: system::load_average(),
        pinned: proxy_cpu.is_some(),
        skipped,
        targets: reports,
    })
}

/// Fills each target's CPU figures relative to Envoy's, when Envoy was measured.
fn compare_with_envoy(reports: &mut [TargetReport]) {
    let Some(envoy) = reports.iter().find(|t| t.name == "envoy") else {
        return;
    };
    let envoy_per_cpu_second = envoy.summary.requests_per_cpu_second.filter(|r| *r > 0.0);
    let envoy_rounds = envoy.rounds.clone();
    for t in reports {
        t.summary.requests_per_cpu_second_vs_envoy = envoy_per_cpu_second
            .zip(t.summary.requests_per_cpu_second)
            .map(|(envoy, ours)| ours / envoy);
        if t.name == "envoy" || t.name == "direct" {
            continue;
        }
        t.summary.cpu_vs_envoy = paired_ratio(
            envoy_rounds.iter().map(|r| r.cpu_us_per_request),
            t.rounds.iter().map(|r| r.cpu_us_per_request),
        );
        for (k, at) in t.summary.added.iter_mut().enumerate() {
            let at_rate = |r: &Round| r.open.get(k).and_then(|o| o.cpu_us_per_request);
            at.cpu_vs_envoy = paired_ratio(
                envoy_rounds.iter().map(at_rate),
                t.rounds.iter().map(at_rate),
            );
        }
    }
}

/// Envoy's figure over ours, round by round; rounds where either read zero (CPU time comes in
/// 10 ms ticks) are left out.
fn paired_ratio(
    envoy: impl Iterator<Item = Option<f64>>,
    ours: impl Iterator<Item = Option<f64>>,
) -> Option<Stat> {
    let ratios: Vec<f64> = envoy
        .zip(ours)
        .filter_map(|pair| match pair {
            (Some(envoy), Some(ours)) if envoy > 0.0 && ours > 0.0 => Some(envoy / ours),
            _ => None,
        })
        .collect();
    (!ratios.is_empty()).then(|| Stat::of(&ratios))
}

fn summarize(opts: &ProxyOptions, target: &Target, rounds: &[Round]) -> Summary {
    let rps: Vec<f64> = rounds.iter().map(|r| r.closed.requests_per_sec).collect();
    let cpu: Vec<f64> = rounds.iter().filter_map(|r| r.cpu_us_per_request).collect();
    let idle: Vec<f64> = rounds
        .iter()
        .filter_map(|r| r.rss_mb_per_1000_idle)
        .collect();
    let mut errors: u64 = rounds.iter().map(|r| r.closed.errors).sum();
    let mut added = Vec::new();
    for (k, &rate) in opts.rates.iter().enumerate() {
        let runs: Vec<&OpenRun> = rounds.iter().filter_map(|r| r.open.get(k)).collect();
        let rate_errors: u64 = runs.iter().map(|r| r.result.errors).sum();
        errors += rate_errors;
        let pick = |f: fn(&Percentiles) -> f64| {
            Stat::of(
                &runs
                    .iter()
                    .filter_map(|r| r.added.as_ref().map(f))
                    .collect::<Vec<_>>(),
            )
        };
        added.push(AddedSummary {
            rate,
            p50_us: pick(|p| p.p50_us),
            p90_us: pick(|p| p.p90_us),
            p99_us: pick(|p| p.p99_us),
            p999_us: pick(|p| p.p999_us),
            p99_total_us: Stat::of(
                &runs
                    .iter()
                    .map(|r| r.result.latency.p99_us)
                    .collect::<Vec<_>>(),
            ),
            cpu_us_per_request: {
                let cpu: Vec<f64> = runs.iter().filter_map(|r| r.cpu_us_per_request).collect();
                (!cpu.is_empty()).then(|| Stat::of(&cpu))
            },
            cpu_vs_envoy: None,
            errors: rate_errors,
        });
    }
    let cpu_us_per_request = (!cpu.is_empty()).then(|| Stat::of(&cpu));
    Summary {
        requests_per_sec: Stat::of(&rps),
        cpu_us_per_request,
        requests_per_cpu_second: cpu_us_per_request
            .map(|c| c.median)
            .filter(|us| *us > 0.0)
            .map(|us| 1e6 / us),
        requests_per_cpu_second_vs_envoy: None,
        cpu_vs_envoy: None,
        added,
        idle_rss_mb: target.idle_rss_mb,
        idle_rss_anon_mb: target.idle_rss_anon_mb,
        rss_mb_per_1000_idle: (!idle.is_empty()).then(|| Stat::of(&idle)),
        rss_mb_per_1000_idle_first: idle.first().copied(),
        errors,
    }
}

fn spread(s: &Stat, digits: usize) -> String {
    format!(
        "{:.digits$} [{:.digits$}-{:.digits$}]",
        s.median, s.min, s.max
    )
}

/// A ratio to Envoy's figure for a table cell: `4.02x [3.10-5.20]`, or `-`.
fn times(s: Option<&Stat>) -> String {
    s.map_or("-".into(), |s| {
        format!("{:.2}x [{:.2}-{:.2}]", s.median, s.min, s.max)
    })
}

impl ProxyReport {
    pub fn render(&self) -> String {
        let o = &self.options;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "proxy bench: {}, {}, {} round(s), {:?} warm-up + {:?} per point, {} closed-loop / {} \
             open-loop connections, {} CPUs, proxies {}",
            o.protocol,
            if o.protocol.is_h2() {
                format!(
                    "{} concurrent streams per connection closed loop, a stream per request open \
                     loop",
                    o.streams
                )
            } else {
                "one request in flight per connection".to_string()
            },
            o.rounds,
            o.warmup,
            o.duration,
            o.connections,
            o.open_connections,
            self.cpus,
            if self.pinned {
                "pinned to CPU 1 and the backend to CPU 0 (taskset); load generator unpinned"
            } else {
                "not pinned"
            }
        );
        let _ = writeln!(
            out,
            "load average before/after: {}/{}",
            self.load_average_before
                .map_or("?".into(), |l| format!("{l:.2}")),
            self.load_average_after
                .map_or("?".into(), |l| format!("{l:.2}"))
        );
        for s in &self.skipped {
            let _ = writeln!(out, "skipped {s}");
        }
        out.push('\n');
        // Over h2c, where one connection multiplexes many requests, CPU per request is the
        // figure that tells proxies apart, so it is also given the other way up.
        let per_cpu_second = o.protocol.is_h2();
        let mut header = vec!["target", "req/s closed loop", "CPU µs/req", "CPU vs envoy"];
        if per_cpu_second {
            header.push("req per CPU-s");
        }
        header.extend([
            "idle RSS MB",
            "of it private MB",
            "MB per 1k idle conns (1st round)",
            "errors",
        ]);
        let mut t = Table::new(&header);
        for target in &self.targets {
            let s = &target.summary;
            let mut row = vec![
                target.name.clone(),
                spread(&s.requests_per_sec, 0),
                s.cpu_us_per_request
                    .as_ref()
                    .map_or("-".into(), |c| spread(c, 1)),
                times(s.cpu_vs_envoy.as_ref()),
            ];
            if per_cpu_second {
                row.push(
                    s.requests_per_cpu_second
                        .map_or("-".into(), |r| format!("{r:.0}")),
                );
            }
            row.extend([
                s.idle_rss_mb.map_or("-".into(), |m| format!("{m:.1}")),
                s.idle_rss_anon_mb.map_or("-".into(), |m| format!("{m:.1}")),
                s.rss_mb_per_1000_idle_first
                    .map_or("-".into(), |m| format!("{m:.2}")),
                s.errors.to_string(),
            ]);
            t.row(row);
        }
        out.push_str(&t.render());
        out.push_str(
            "median [min-max] over rounds; CPU vs envoy = Envoy's CPU per request over the \
             target's, paired round by round",
        );
        if per_cpu_second {
            out.push_str("; req per CPU-s = 1e6 / median CPU µs per request");
        }
        out.push('\n');
        for (k, rate) in o.rates.iter().enumerate() {
            let _ = writeln!(
                out,
                "\nat {rate} rps: added latency (µs, proxy minus direct in the same round; \
                 direct row: its own latency) and proxy CPU per request"
            );
            let mut t = Table::new(&[
                "target",
                "p50",
                "p90",
                "p99",
                "p99.9",
                "p99 total",
                "CPU µs/req",
                "CPU vs envoy",
                "errors",
            ]);
            for target in &self.targets {
                let Some(a) = target.summary.added.get(k) else {
                    continue;
                };
                if target.name == "direct" {
                    let lat: Vec<Percentiles> = target
                        .rounds
                        .iter()
                        .filter_map(|r| r.open.get(k).map(|o| o.result.latency))
                        .collect();
                    let col = |f: fn(&Percentiles) -> f64| {
                        spread(&Stat::of(&lat.iter().map(f).collect::<Vec<_>>()), 0)
                    };
                    t.row(vec![
                        "direct".into(),
                        col(|p| p.p50_us),
                        col(|p| p.p90_us),
                        col(|p| p.p99_us),
                        col(|p| p.p999_us),
                        spread(&a.p99_total_us, 0),
                        "-".into(),
                        "-".into(),
                        a.errors.to_string(),
                    ]);
                } else {
                    t.row(vec![
                        target.name.clone(),
                        spread(&a.p50_us, 0),
                        spread(&a.p90_us, 0),
                        spread(&a.p99_us, 0),
                        spread(&a.p999_us, 0),
                        spread(&a.p99_total_us, 0),
                        a.cpu_us_per_request
                            .as_ref()
                            .map_or("-".into(), |c| spread(c, 1)),
                        times(a.cpu_vs_envoy.as_ref()),
                        a.errors.to_string(),
                    ]);
                }
            }
            out.push_str(&t.render());
        }
        out.push('\n');
        for target in &self.targets {
            let _ = writeln!(out, "{}: {}", target.name, target.setup);
        }
        out
    }

    /// A hand-written SVG: CPU µs per request per proxy, and added p99 latency per proxy at
    /// each rate, as bars with min-max whiskers.
    pub fn svg(&self) -> String {
        let proxies: Vec<&TargetReport> =
            self.targets.iter().filter(|t| t.name != "direct").collect();
        let colors = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2"];
        let (w, h) = (900.0_f64, 420.0_f64);
        let (top, bottom, panel_w) = (60.0, 340.0, 380.0);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">mesh-bench proxy: {}, median of {} round(s), whiskers min-max</text>"#,
            w / 2.0,
            self.options.protocol,
            self.options.rounds
        );
        // Panel 1: CPU µs per request.
        let cpu: Vec<(String, Stat)> = proxies
            .iter()
            .filter_map(|t| t.summary.cpu_us_per_request.map(|c| (t.name.clone(), c)))
            .collect();
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">proxy CPU µs per request, one worker</text>"#,
            50.0 + panel_w / 2.0,
            top - 10.0
        );
        let mut groups = vec![("closed loop".to_string(), cpu)];
        for (k, rate) in self.options.rates.iter().enumerate() {
            groups.push((
                format!("{rate} rps"),
                proxies
                    .iter()
                    .filter_map(|t| {
                        let a = t.summary.added.get(k)?;
                        Some((t.name.clone(), a.cpu_us_per_request?))
                    })
                    .collect(),
            ));
        }
        draw_panel(&mut s, 50.0, top, panel_w, bottom, &groups, &colors, "µs");
        // Panel 2: added p99 per rate.
        let groups: Vec<(String, Vec<(String, Stat)>)> = self
            .options
            .rates
            .iter()
            .enumerate()
            .map(|(k, rate)| {
                (
                    format!("{rate} rps"),
                    proxies
                        .iter()
                        .filter_map(|t| t.summary.added.get(k).map(|a| (t.name.clone(), a.p99_us)))
                        .collect(),
                )
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">added p99 latency (µs) over direct</text>"#,
            500.0 + panel_w / 2.0,
            top - 10.0
        );
        draw_panel(&mut s, 500.0, top, panel_w, bottom, &groups, &colors, "µs");
        // Legend.
        for (i, t) in proxies.iter().enumerate() {
            let x = 50.0 + i as f64 * 160.0;
            let _ = writeln!(
                s,
                r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
                h - 30.0,
                colors[i % colors.len()],
                x + 16.0,
                h - 20.0,
                xml_escape(&t.name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Bars grouped by `groups` (one bar per proxy in each), on a shared linear axis from 0.
#[allow(clippy::too_many_arguments)]
fn draw_panel(
    s: &mut String,
    x0: f64,
    top: f64,
    width: f64,
    bottom: f64,
    groups: &[(String, Vec<(String, Stat)>)],
    colors: &[&str],
    unit: &str,
) {
    let max = groups
        .iter()
        .flat_map(|(_, bars)| bars.iter().map(|(_, st)| st.max.max(st.median)))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let min = groups
        .iter()
        .flat_map(|(_, bars)| bars.iter().map(|(_, st)| st.min.min(st.median)))
        .fold(0.0_f64, f64::min);
    let span = max - min;
    let y = |v: f64| bottom - (v - min) / span * (bottom - top);
    // Axis and gridlines.
    for i in 0..=4 {
        let v = min + span * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end" font-size="10">{v:.0}</text>"##,
            x0 + width,
            y(v),
            y(v),
            x0 - 4.0,
            y(v) + 3.0
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{x0}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        x0 + width,
        y(0.0),
        y(0.0)
    );
    let group_w = width / groups.len().max(1) as f64;
    for (g, (label, bars)) in groups.iter().enumerate() {
        let gx = x0 + g as f64 * group_w;
        let bar_w = (group_w * 0.8) / bars.len().max(1) as f64;
        for (b, (_, st)) in bars.iter().enumerate() {
            let bx = gx + group_w * 0.1 + b as f64 * bar_w;
            let (y1, y2) = (y(st.median.max(0.0)), y(st.median.min(0.0)));
            let _ = writeln!(
                s,
                r#"<rect x="{bx:.1}" y="{y1:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
                bar_w * 0.9,
                (y2 - y1).max(0.5),
                colors[b % colors.len()]
            );
            let cx = bx + bar_w * 0.45;
            let _ = writeln!(
                s,
                r##"<line x1="{cx:.1}" x2="{cx:.1}" y1="{:.1}" y2="{:.1}" stroke="#222"/><text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="10">{:.1} {unit}</text>"##,
                y(st.min),
                y(st.max),
                y(st.max.max(st.median)) - 4.0,
                st.median
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            gx + group_w / 2.0,
            bottom + 18.0,
            xml_escape(label)
        );
    }
}
