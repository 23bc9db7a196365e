//! The registry benchmark: durable write throughput, and how fast a write wakes many blocking
//! watchers. Each scenario gets a fresh registry, served in this process on 127.0.0.1:0 with
//! its data in a new temporary directory, exactly as `mesh registry` runs it (durable redb
//! commits), and reached over real HTTP/1.1 on loopback.

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use hyper::Method;
use mesh_registry::{RegistryConfig, RegistryError};
use serde::{Serialize, Serializer};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::http::Conn;
use crate::report::{self, Latency, Table, median, ms};
use crate::system;

/// The size of every KV value written.
pub const VALUE_SIZE: usize = 100;
/// How long each watcher asks the registry to block: far longer than a wake-up may take, so
/// a watcher that returns was woken by the write, not by its wait running out.
const WATCH_WAIT: &str = "60s";
/// Open files the process needs besides the benchmark's connections (listener, database,
/// runtime, stdio).
const SPARE_FILES: u64 = 64;

#[derive(Debug, Clone, Serialize)]
pub struct RegistryOptions {
    /// How long each write scenario runs.
    #[serde(rename = "duration_s", serialize_with = "secs")]
    pub duration: Duration,
    /// Concurrent writers, each with its own keep-alive connection.
    pub writers: usize,
    /// Concurrent blocking watchers, each with its own connection.
    pub watchers: usize,
    /// Wake-up rounds.
    pub rounds: usize,
    /// How long the watchers sit parked before the write that wakes them.
    #[serde(rename = "settle_s", serialize_with = "secs")]
    pub settle: Duration,
    /// How long after the write a watcher may take to wake before it counts as not woken.
    #[serde(rename = "wake_timeout_s", serialize_with = "secs")]
    pub wake_timeout: Duration,
    /// Where the registries' temporary data directories go; the system's temp dir if `None`.
    pub data_dir: Option<PathBuf>,
}

impl Default for RegistryOptions {
    fn default() -> RegistryOptions {
        RegistryOptions {
            duration: Duration::from_secs(5),
            writers: 16,
            watchers: 1000,
            rounds: 5,
            settle: Duration::from_secs(1),
            wake_timeout: Duration::from_secs(30),
            data_dir: None,
        }
    }
}

impl RegistryOptions {
    /// Everything tiny, so a test can run the whole benchmark in a few seconds.
    pub fn smoke() -> RegistryOptions {
        RegistryOptions {
            duration: Duration::from_millis(500),
            writers: 4,
            watchers: 50,
            rounds: 1,
            settle: Duration::from_millis(300),
            ..RegistryOptions::default()
        }
    }

    fn validate(&self) -> Result<()> {
        ensure!(self.writers > 0, "--writers must be at least 1");
        ensure!(self.watchers > 0, "--watchers must be at least 1");
        ensure!(self.rounds > 0, "--rounds must be at least 1");
        ensure!(!self.duration.is_zero(), "--duration must be more than 0");
        Ok(())
    }
}

fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[derive(Debug, Clone, Serialize)]
pub struct RegistryReport {
    pub options: RegistryOptions,
    pub machine: Machine,
    pub writes: Vec<WriteReport>,
    pub wake: WakeReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub os: &'static str,
    pub arch: &'static str,
    /// The filesystem that held the data directories.
    pub data_fs: Option<String>,
    pub open_files_limit: Option<u64>,
}

/// One write scenario: closed-loop writers, each sending its next write when the last is
/// acknowledged.
#[derive(Debug, Clone, Serialize)]
pub struct WriteReport {
    pub request: String,
    pub writers: usize,
    /// From the first write sent to the last acknowledged.
    pub elapsed_s: f64,
    pub writes: u64,
    pub writes_per_sec: f64,
    pub latency: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct WakeReport {
    pub request: String,
    pub watchers: usize,
    pub rounds: Vec<WakeRound>,
    pub median_p50_ms: f64,
    pub median_p99_ms: f64,
    /// Every watcher of every round woke.
    pub all_woke: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct WakeRound {
    pub round: usize,
    /// The index the watchers blocked on.
    pub index: u64,
    pub watchers: usize,
    /// Watchers whose response came with a newer index within the wake timeout.
    pub woke: usize,
    /// The instance registered at T0 to wake them.
    pub registered: String,
    /// From T0 to the registration's own acknowledgement (it includes the durable commit).
    pub write_ack_ms: f64,
    /// From T0 to each watcher's response head.
    pub wake: Latency,
}

/// Runs both parts of the benchmark and returns the figures; prints progress to stderr.
pub async fn run_registry_bench(opts: RegistryOptions) -> Result<RegistryReport> {
    opts.validate()?;
    let needed = 2 * (opts.watchers.max(opts.writers) as u64 + 1) + SPARE_FILES;
    system::ensure_open_files(needed)?;

    let mut writes = Vec::new();
    let mut data_fs = None;
    for kind in [WriteKind::Kv, WriteKind::Register] {
        eprintln!(
            "registry bench: {} with {} writers for {:.1}s",
            kind.describe(),
            opts.writers,
            opts.duration.as_secs_f64()
        );
        let server = Server::start(opts.data_dir.as_deref()).await?;
        data_fs = data_fs.or_else(|| system::filesystem_type(server.data_dir()));
        if let Some(fs) = data_fs.as_deref().filter(|fs| system::is_memory_backed(fs)) {
            eprintln!(
                "warning: the data directory is on {fs}, where fsync costs nothing: the write \
                 figures are not durable ones (pass --data-dir on a disk)"
            );
        }
        let result = write_scenario(server.addr, kind, &opts).await;
        server.stop().await;
        writes.push(result?);
    }

    eprintln!(
        "registry bench: {} watchers woken by one registration, {} round(s)",
        opts.watchers, opts.rounds
    );
    let server = Server::start(opts.data_dir.as_deref()).await?;
    let wake = wake_scenario(server.addr, &opts).await;
    server.stop().await;

    Ok(RegistryReport {
        machine: Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            data_fs,
            open_files_limit: system::open_files_limit(),
        },
        options: opts,
        writes,
        wake: wake?,
    })
}

/// A registry served in this process on a loopback port, with its data in a temporary dir
/// that is removed when it stops.
struct Server {
    addr: SocketAddr,
    shutdown: mesh_drain::Signal,
    task: JoinHandle<Result<(), RegistryError>>,
    dir: TempDir,
}

impl Server {
    async fn start(parent: Option<&Path>) -> Result<Server> {
        let builder = {
            let mut b = tempfile::Builder::new();
            b.prefix("mesh-bench-registry-");
            b
        };
        let dir = match parent {
            Some(parent) => builder.tempdir_in(parent),
            None => builder.tempdir(),
        }
        .context("cannot create a temporary data directory")?;
        let (shutdown, drain) = mesh_drain::channel();
        let (addr, task) = mesh_registry::spawn(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            RegistryConfig::new(dir.path()),
            drain,
        )
        .await
        .context("cannot start the registry")?;
        Ok(Server {
            addr,
            shutdown,
            task,
            dir,
        })
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Shuts the registry down; one that does not stop within 10 s is aborted, with a warning.
    async fn stop(self) {
        let Server {
            shutdown,
            mut task,
            dir,
            ..
        } = self;
        shutdown.start();
        match tokio::time::timeout(Duration::from_secs(10), &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("warning: the registry failed: {e}"),
            Ok(Err(e)) => eprintln!("warning: the registry task failed: {e}"),
            Err(_) => {
                eprintln!("warning: the registry did not shut down within 10s; aborting it");
                task.abort();
            }
        }
        drop(dir);
    }
}

#[derive(Debug, Clone, Copy)]
enum WriteKind {
    Kv,
    Register,
}

impl WriteKind {
    fn describe(self) -> String {
        match self {
            WriteKind::Kv => format!("PUT /v1/kv/bench/<writer>/<i> ({VALUE_SIZE} B value)"),
            WriteKind::Register => {
                "PUT /v1/agent/service/register (new ID, 1 TTL check)".to_string()
            }
        }
    }

    fn request(self, writer: usize, i: u64, value: &Bytes) -> (String, Bytes) {
        match self {
            WriteKind::Kv => (format!("/v1/kv/bench/{writer}/{i}"), value.clone()),
            WriteKind::Register => {
                let id = format!("bench-{writer}-{i}");
                let body = serde_json::json!({
                    "ID": id,
                    "Name": format!("bench-{writer}"),
                    "Port": 8080,
                    // Far longer than the run, so no check expires (and writes) during it.
                    "Check": { "CheckID": format!("{id}-ttl"), "TTL": "1h" },
                });
                (
                    "/v1/agent/service/register".to_string(),
                    Bytes::from(body.to_string()),
                )
            }
        }
    }
}

async fn write_scenario(
    addr: SocketAddr,
    kind: WriteKind,
    opts: &RegistryOptions,
) -> Result<WriteReport> {
    let value = Bytes::from(vec![b'x'; VALUE_SIZE]);
    let mut conns = Vec::with_capacity(opts.writers);
    for _ in 0..opts.writers {
        conns.push(Conn::connect(addr).await?);
    }
    let start = Instant::now();
    let deadline = start + opts.duration;
    let mut writers = JoinSet::new();
    for (writer, mut conn) in conns.into_iter().enumerate() {
        let value = value.clone();
        writers.spawn(async move {
            let mut hist = report::new_histogram()?;
            let mut i = 0;
            while Instant::now() < deadline {
                let (path, body) = kind.request(writer, i, &value);
                let sent = Instant::now();
                conn.request(Method::PUT, &path, body)
                    .await
                    .and_then(|r| r.ensure_success(&format!("PUT {path}")))?;
                report::record(&mut hist, sent.elapsed());
                i += 1;
            }
            anyhow::Ok(hist)
        });
    }
    let mut total = report::new_histogram()?;
    while let Some(joined) = writers.join_next().await {
        let hist = joined.context("a writer panicked")??;
        total
            .add(&hist)
            .map_err(|e| anyhow::anyhow!("cannot merge histograms: {e:?}"))?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let latency = Latency::from_histogram(&total);
    Ok(WriteReport {
        request: kind.describe(),
        writers: opts.writers,
        elapsed_s: elapsed,
        writes: latency.count,
        writes_per_sec: latency.count as f64 / elapsed,
        latency,
    })
}

async fn wake_scenario(addr: SocketAddr, opts: &RegistryOptions) -> Result<WakeReport> {
    let mut control = Conn::connect(addr).await?;
    register_web(&mut control, 1).await?;
    let mut rounds = Vec::with_capacity(opts.rounds);
    for round in 1..=opts.rounds {
        let result = wake_round(addr, &mut control, round, opts).await?;
        eprintln!(
            "  round {round}: {}/{} woke, p50 {} ms, p99 {} ms",
            result.woke,
            result.watchers,
            ms(result.wake.p50_ms),
            ms(result.wake.p99_ms)
        );
        rounds.push(result);
    }
    let p50s: Vec<f64> = rounds.iter().map(|r| r.wake.p50_ms).collect();
    let p99s: Vec<f64> = rounds.iter().map(|r| r.wake.p99_ms).collect();
    Ok(WakeReport {
        request: format!("GET /v1/health/service/web?index=<idx>&wait={WATCH_WAIT}"),
        watchers: opts.watchers,
        all_woke: rounds.iter().all(|r| r.woke == r.watchers),
        median_p50_ms: median(&p50s),
        median_p99_ms: median(&p99s),
        rounds,
    })
}

/// Registers instance `web-<n>` of service `web` with the registry's agent.
async fn register_web(control: &mut Conn, n: usize) -> Result<String> {
    let id = format!("web-{n}");
    let body = serde_json::json!({ "ID": id, "Name": "web", "Port": 8000 + n % 1000 });
    control
        .request(
            Method::PUT,
            "/v1/agent/service/register",
            Bytes::from(body.to_string()),
        )
        .await?
        .ensure_success(&format!("registering {id}"))?;
    Ok(id)
}

/// One round: every watcher opens its own connection and blocks on the current index; once
/// all are parked, T0, one registration; each watcher notes when its response head arrives.
async fn wake_round(
    addr: SocketAddr,
    control: &mut Conn,
    round: usize,
    opts: &RegistryOptions,
) -> Result<WakeRound> {
    let index = control
        .request(Method::GET, "/v1/health/service/web", Bytes::new())
        .await?
        .ensure_success("reading service web")?
        .consul_index()?;

    let mut conns = Vec::with_capacity(opts.watchers);
    for _ in 0..opts.watchers {
        conns.push(Conn::connect(addr).await?);
    }
    let path: Arc<str> = format!("/v1/health/service/web?index={index}&wait={WATCH_WAIT}").into();
    let returned = Arc::new(AtomicUsize::new(0));
    let (sent_tx, mut sent_rx) = mpsc::channel::<()>(opts.watchers);
    let mut watchers = JoinSet::new();
    for mut conn in conns {
        let (path, returned, sent_tx) = (Arc::clone(&path), Arc::clone(&returned), sent_tx.clone());
        watchers.spawn(async move {
            let response = conn.send(Method::GET, &path, Bytes::new()).await?;
            let _ = sent_tx.send(()).await;
            drop(sent_tx);
            let response = response.await;
            returned.fetch_add(1, Ordering::SeqCst);
            let response = response?.ensure_success("blocking read of service web")?;
            let new_index = response.consul_index()?;
            ensure!(
                new_index > index,
                "returned index {new_index}, not past {index}"
            );
            anyhow::Ok(response.head_at)
        });
    }
    drop(sent_tx);

    let all_sent = async {
        for _ in 0..opts.watchers {
            sent_rx.recv().await?;
        }
        Some(())
    };
    match tokio::time::timeout(Duration::from_secs(30), all_sent).await {
        Ok(Some(())) => {}
        _ => {
            let failure = first_failure(&mut watchers).await;
            bail!("not every watcher could send its request within 30s{failure}");
        }
    }
    // Give the server time to read every request and park it on the index.
    tokio::time::sleep(opts.settle).await;
    let early = returned.load(Ordering::SeqCst);
    if early > 0 {
        let failure = first_failure(&mut watchers).await;
        bail!(
            "{early} of {} watchers returned before the write, so they were not parked on \
             index {index}{failure}",
            opts.watchers
        );
    }

    let t0 = Instant::now();
    let registered = register_web(control, round + 1).await?;
    let write_ack = t0.elapsed();

    let mut hist = report::new_histogram()?;
    let mut failures = Vec::new();
    let collect = async {
        while let Some(joined) = watchers.join_next().await {
            match joined {
                Ok(Ok(head_at)) => report::record(&mut hist, head_at.saturating_duration_since(t0)),
                Ok(Err(e)) => failures.push(e.to_string()),
                Err(e) => failures.push(format!("watcher task failed: {e}")),
            }
        }
    };
    if tokio::time::timeout(opts.wake_timeout, collect)
        .await
        .is_err()
    {
        watchers.abort_all();
    }
    let wake = Latency::from_histogram(&hist);
    let woke = wake.count as usize;
    if woke < opts.watchers {
        let mut msg = format!(
            "warning: round {round}: {} of {} watchers did not wake within {:.0}s",
            opts.watchers - woke,
            opts.watchers,
            opts.wake_timeout.as_secs_f64()
        );
        if let Some(first) = failures.first() {
            let _ = write!(msg, " (first error: {first})");
        }
        eprintln!("{msg}");
    }
    Ok(WakeRound {
        round,
        index,
        watchers: opts.watchers,
        woke,
        registered,
        write_ack_ms: write_ack.as_secs_f64() * 1000.0,
        wake,
    })
}

/// The first error among watchers that already finished, as `": <error>"`, for messages.
async fn first_failure(watchers: &mut JoinSet<Result<Instant>>) -> String {
    while let Some(joined) = watchers.try_join_next() {
        match joined {
            Ok(Err(e)) => return format!(": {e:#}"),
            Err(e) => return format!(": watcher task failed: {e}"),
            Ok(Ok(_)) => {}
        }
    }
    String::new()
}

impl RegistryReport {
    /// The results as plain-text tables.
    pub fn render(&self) -> String {
        let o = &self.options;
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "machine: {} CPUs, {}/{}; data dir on {}; open files limit {}",
            m.cpus,
            m.os,
            m.arch,
            m.data_fs.as_deref().unwrap_or("an unknown filesystem"),
            m.open_files_limit
                .map_or("unknown".to_string(), |n| n.to_string()),
        );
        let _ = writeln!(
            out,
            "\nWrite throughput: durable commits (fsync), {} closed-loop writers on keep-alive \
             connections, {:.1}s per row, a fresh registry per row",
            o.writers,
            o.duration.as_secs_f64()
        );
        let mut table = Table::new(&[
            "request", "writes", "writes/s", "p50 ms", "p99 ms", "max ms",
        ]);
        for w in &self.writes {
            table.row(vec![
                w.request.clone(),
                w.writes.to_string(),
                format!("{:.0}", w.writes_per_sec),
                ms(w.latency.p50_ms),
                ms(w.latency.p99_ms),
                ms(w.latency.max_ms),
            ]);
        }
        out.push_str(&table.render());

        let wake = &self.wake;
        let _ = writeln!(
            out,
            "\nWake-up latency: {} watchers, one connection each, blocked on\n  {}\n\
             T0 = just before the registration that wakes them; latency = T0 to each \
             watcher's response head",
            wake.watchers, wake.request
        );
        let mut table = Table::new(&[
            "round",
            "index",
            "woke",
            "write ack ms",
            "p50 ms",
            "p99 ms",
            "max ms",
        ]);
        for r in &wake.rounds {
            table.row(vec![
                r.round.to_string(),
                r.index.to_string(),
                format!("{}/{}", r.woke, r.watchers),
                ms(r.write_ack_ms),
                ms(r.wake.p50_ms),
                ms(r.wake.p99_ms),
                ms(r.wake.max_ms),
            ]);
        }
        out.push_str(&table.render());
        let _ = writeln!(
            out,
            "median over {} round(s): p50 {} ms, p99 {} ms; {}",
            wake.rounds.len(),
            ms(wake.median_p50_ms),
            ms(wake.median_p99_ms),
            if wake.all_woke {
                "every watcher woke"
            } else {
                "SOME WATCHERS DID NOT WAKE"
            }
        );
        out
    }
}
