//! The control-plane scale benchmark: N simulated sidecars (ADS clients that ACK) against one
//! control plane, which watches one registry; both are `mesh` processes of their own, so their
//! memory and CPU time are theirs alone.
//!
//! 1. Start `mesh registry` on 127.0.0.1:0 with a fresh data directory, and register the
//!    layout of [`populate`]: S services of I instances and N connect-proxy sidecars.
//! 2. Start `mesh control-plane` on 127.0.0.1:0 and, as soon as its xDS port is up, open one
//!    ADS stream per sidecar ([`sidecar`]); time until every sidecar has its whole
//!    configuration ACKed.
//! 3. Each round, once every sidecar has ACKed the current state and nothing has moved for
//!    `settle`: T0, one registry write that changes the endpoints of `svc-0`, which every
//!    sidecar has as an upstream; per sidecar, the time from T0 to the first EDS response
//!    whose `svc-0` content differs (received, and ACKed).

mod populate;
mod sidecar;

pub use populate::{Layout, Phase, WATCHED_SERVICE};
pub use sidecar::ConfigSize;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use hyper::Method;
use serde::{Serialize, Serializer};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

use crate::http::Conn;
use crate::process::MeshProcess;
use crate::registry::Machine;
use crate::report::{self, Latency, Table, median, ms};
use crate::system::{self, ProcStats};
use sidecar::{Event, Kind, Spec, What};

/// Open files a process needs besides its connections (listeners, database, runtime, stdio).
const SPARE_FILES: u64 = 64;
/// Blocking queries the control plane keeps besides one per service: the catalog and each
/// config-entry kind (a generous bound).
const OTHER_WATCHES: u64 = 16;
/// How long a `mesh` process may take to report its listeners.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// HTTP/2 connections opened at once.
const CONNECT_CONCURRENCY: usize = 64;

#[derive(Debug, Clone, Serialize)]
pub struct XdsOptions {
    /// Services (`svc-0` ... ), each with a service-defaults entry (protocol http).
    pub services: usize,
    /// Instances per service, each on its own node with a passing check.
    pub instances: usize,
    /// Simulated sidecars, one ADS stream each.
    pub sidecars: usize,
    /// Incremental (delta) xDS instead of state of the world.
    pub delta: bool,
    /// Measured registry writes.
    pub rounds: usize,
    /// HTTP/2 connections the streams share, round robin; `None`: one per sidecar, as real
    /// sidecars have, or as many as the open-file limit allows.
    pub connections: Option<usize>,
    /// Concurrent writers (keep-alive connections) populating the registry.
    pub writers: usize,
    /// How long nothing may arrive before the state counts as settled.
    #[serde(rename = "settle_s", serialize_with = "secs")]
    pub settle: Duration,
    /// How long the initial convergence, and each round, may take.
    #[serde(rename = "timeout_s", serialize_with = "secs")]
    pub timeout: Duration,
    /// Where the registry's temporary data directory goes; the system's temp dir if `None`.
    pub data_dir: Option<PathBuf>,
    /// The `mesh` binary to run.
    pub mesh_bin: PathBuf,
}

impl XdsOptions {
    /// The size: 1,000 services of 10 instances, 1,000 sidecars, 5 rounds.
    pub fn new(mesh_bin: PathBuf) -> XdsOptions {
        XdsOptions {
            services: 1000,
            instances: 10,
            sidecars: 1000,
            delta: false,
            rounds: 5,
            connections: None,
            writers: 16,
            settle: Duration::from_secs(1),
            timeout: Duration::from_secs(120),
            data_dir: None,
            mesh_bin,
        }
    }

    /// Tiny (20 services x 2 instances, 10 sidecars, 1 round): a few seconds.
    pub fn smoke(mesh_bin: PathBuf) -> XdsOptions {
        XdsOptions {
            services: 20,
            instances: 2,
            sidecars: 10,
            rounds: 1,
            writers: 4,
            settle: Duration::from_millis(200),
            timeout: Duration::from_secs(30),
            ..XdsOptions::new(mesh_bin)
        }
    }

    fn validate(&self) -> Result<()> {
        ensure!(self.services > 0, "--services must be at least 1");
        ensure!(self.instances > 0, "--instances must be at least 1");
        ensure!(self.sidecars > 0, "--sidecars must be at least 1");
        ensure!(self.rounds > 0, "--rounds must be at least 1");
        ensure!(self.writers > 0, "--writers must be at least 1");
        ensure!(
            self.connections != Some(0),
            "--connections must be at least 1"
        );
        ensure!(
            self.mesh_bin.is_file(),
            "the mesh binary {} does not exist",
            self.mesh_bin.display()
        );
        Ok(())
    }

    fn layout(&self) -> Layout {
        Layout {
            services: self.services,
            instances: self.instances,
            sidecars: self.sidecars,
        }
    }

    fn protocol(&self) -> &'static str {
        if self.delta { "delta" } else { "SotW" }
    }
}

fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[derive(Debug, Clone, Serialize)]
pub struct XdsReport {
    pub options: XdsOptions,
    pub machine: Machine,
    /// The 1-minute load average before the run and after it: other work on the machine shows
    /// here (the run itself adds about 1-2).
    pub load_before: Option<f64>,
    pub load_after: Option<f64>,
    /// HTTP/2 connections the sidecars' streams used.
    pub connections: usize,
    pub population: Population,
    pub initial: Initial,
    pub rounds: Vec<Round>,
    pub summary: Summary,
    pub published: Vec<Comparison>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Population {
    pub phases: Vec<Phase>,
    pub writes: usize,
    pub elapsed_s: f64,
    pub writes_per_sec: f64,
    pub registry_rss_mb: f64,
}

/// From starting the control plane (the registry already populated) to every sidecar having
/// its whole configuration ACKed.
#[derive(Debug, Clone, Serialize)]
pub struct Initial {
    /// Until the control plane logged its listeners.
    pub listening_ms: f64,
    /// Until the last sidecar's stream was open.
    pub streams_open_ms: f64,
    pub sidecars: usize,
    /// Sidecars whose configuration became complete within the timeout.
    pub converged: usize,
    /// From starting the control plane to each sidecar's ACK that completed its configuration.
    pub ready: Latency,
    /// The control plane's CPU time and memory at that point, and the registry's.
    pub control_plane_cpu_s: f64,
    pub control_plane_rss_mb: f64,
    pub registry_cpu_s: f64,
    pub registry_rss_mb: f64,
    /// CPU time of this process (the simulated sidecars) over the same span.
    pub bench_cpu_s: f64,
    /// The first sidecar's configuration.
    pub config: Option<ConfigSize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub round: usize,
    pub write: String,
    /// From T0 to the registry's answer to the write (its durable commit included).
    pub write_ack_ms: f64,
    /// Sidecars with a live stream at T0.
    pub sidecars: usize,
    /// Sidecars that received and ACKed a response reflecting the write.
    pub converged: usize,
    /// Sidecars that received changed endpoints that did not reflect the write.
    pub wrong: usize,
    /// From T0 to each converged sidecar's receipt of the response, and to its ACK.
    pub received: Latency,
    pub acked: Latency,
    /// CPU time over the round (T0 to `settle` after the last ACK); memory after it.
    pub control_plane_cpu_s: f64,
    pub control_plane_rss_mb: f64,
    pub registry_cpu_s: f64,
    pub registry_rss_mb: f64,
    pub bench_cpu_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub median_ack_p50_ms: f64,
    pub median_ack_p99_ms: f64,
    pub max_ack_ms: f64,
    /// Every live sidecar converged in every round, and none ended its stream.
    pub all_converged: bool,
    pub median_round_control_plane_cpu_s: f64,
    /// The control plane's CPU time from its start to the end of the last round.
    pub control_plane_cpu_total_s: f64,
    pub control_plane_rss_mb: f64,
    pub control_plane_rss_max_mb: f64,
    pub registry_rss_mb: f64,
    /// Streams that ended (or failed) during the run, and the first reason.
    pub streams_ended: usize,
    pub first_stream_error: Option<String>,
    /// WARN and ERROR lines each process logged.
    pub control_plane_log: LogLines,
    pub registry_log: LogLines,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct LogLines {
    pub warnings: usize,
    pub errors: usize,
}

impl LogLines {
    fn of(process: &MeshProcess) -> LogLines {
        let (warnings, errors) = process.warnings_and_errors();
        LogLines { warnings, errors }
    }
}

/// One published figure next to ours.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub source: &'static str,
    pub published: &'static str,
    pub ours: String,
}

/// Runs the benchmark; progress goes to stderr.
pub async fn run_xds_bench(opts: XdsOptions) -> Result<XdsReport> {
    opts.validate()?;
    let load_before = system::load_average();
    let layout = opts.layout();
    let limit = system::open_files_limit();
    let connections = plan_connections(&opts, limit)?;

    let dir = {
        let mut builder = tempfile::Builder::new();
        builder.prefix("mesh-bench-xds-");
        match &opts.data_dir {
            Some(parent) => builder.tempdir_in(parent),
            None => builder.tempdir(),
        }
        .context("cannot create a temporary data directory")?
    };
    let data_dir = dir.path().to_string_lossy().into_owned();
    eprintln!(
        "xds bench: mesh registry ({}), data in {data_dir}",
        opts.mesh_bin.display()
    );
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
    let machine = Machine {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        os: std::env::consts::OS,
        arch: std::env::consts::ARCH,
        data_fs: system::filesystem_type(dir.path()),
        open_files_limit: limit,
    };

    eprintln!("xds bench: populating the registry at {registry_addr}");
    let start = Instant::now();
    let phases = populate::populate(registry_addr, &layout, opts.writers).await?;
    let elapsed = start.elapsed().as_secs_f64();
    let writes = phases.iter().map(|p| p.writes).sum();
    let population = Population {
        writes,
        elapsed_s: elapsed,
        writes_per_sec: writes as f64 / elapsed.max(1e-9),
        registry_rss_mb: registry.stats()?.rss_mb(),
        phases,
    };

    eprintln!(
        "xds bench: mesh control-plane, then {} {} sidecars on {connections} HTTP/2 \
         connection(s)",
        opts.sidecars,
        opts.protocol()
    );
    let bench_before = system::proc_stats(None)?;
    let registry_before = registry.stats()?;
    let cp_start = Instant::now();
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
    let mut run = Run {
        opts: &opts,
        layout,
        registry,
        control_plane,
        sidecars: JoinSet::new(),
        tracker: None,
    };
    let result = run
        .measure(
            cp_start,
            connections,
            population,
            bench_before,
            registry_before,
            machine,
        )
        .await;
    run.stop().await;
    drop(dir);
    let mut report = result?;
    report.load_before = load_before;
    report.load_after = system::load_average();
    Ok(report)
}

/// The processes and sidecars of one run.
struct Run<'o> {
    opts: &'o XdsOptions,
    layout: Layout,
    registry: MeshProcess,
    control_plane: MeshProcess,
    sidecars: JoinSet<()>,
    tracker: Option<Tracker>,
}

impl Run<'_> {
    async fn stop(self) {
        let Run {
            mut sidecars,
            registry,
            control_plane,
            ..
        } = self;
        sidecars.abort_all();
        while sidecars.join_next().await.is_some() {}
        control_plane.stop().await;
        registry.stop().await;
    }

    async fn measure(
        &mut self,
        cp_start: Instant,
        connections: usize,
        population: Population,
        bench_before: ProcStats,
        registry_before: ProcStats,
        machine: Machine,
    ) -> Result<XdsReport> {
        let opts = self.opts;
        let listening = cp_start.elapsed();
        let xds = self.control_plane.addr("xds")?;
        let channels = connect(xds, connections).await?;
        let (events, rx) = mpsc::unbounded_channel();
        let watched: Arc<str> = WATCHED_SERVICE.into();
        for k in 0..opts.sidecars {
            let spec = Spec {
                index: k,
                node_id: self.layout.sidecar_id(k),
                watched: Arc::clone(&watched),
                delta: opts.delta,
            };
            let channel = channels[k % channels.len()].clone();
            self.sidecars
                .spawn(sidecar::run(spec, channel, events.clone()));
        }
        drop(events);
        let tracker = self.tracker.insert(Tracker::new(rx, opts.sidecars));

        let deadline = Instant::now() + opts.timeout;
        tracker
            .until(deadline, |t| {
                t.views
                    .iter()
                    .all(|v| v.opened.is_some() || v.ended.is_some())
            })
            .await;
        let streams_open = tracker
            .views
            .iter()
            .filter_map(|v| v.opened)
            .max()
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(cp_start));
        let all_ready = tracker
            .until(deadline, |t| {
                t.views
                    .iter()
                    .all(|v| v.ready.is_some() || v.ended.is_some())
            })
            .await;
        let cp_stats = self.control_plane.stats()?;
        let registry_stats = self.registry.stats()?;
        let bench_stats = system::proc_stats(None)?;
        let mut ready = report::new_histogram()?;
        for (at, _) in tracker.views.iter().filter_map(|v| v.ready) {
            report::record(&mut ready, at.saturating_duration_since(cp_start));
        }
        let initial = Initial {
            listening_ms: listening.as_secs_f64() * 1000.0,
            streams_open_ms: streams_open.as_secs_f64() * 1000.0,
            sidecars: opts.sidecars,
            converged: tracker.views.iter().filter(|v| v.ready.is_some()).count(),
            ready: Latency::from_histogram(&ready),
            control_plane_cpu_s: cp_stats.cpu_seconds,
            control_plane_rss_mb: cp_stats.rss_mb(),
            registry_cpu_s: registry_stats.cpu_seconds - registry_before.cpu_seconds,
            registry_rss_mb: registry_stats.rss_mb(),
            bench_cpu_s: bench_stats.cpu_seconds - bench_before.cpu_seconds,
            config: tracker.views.iter().find_map(|v| v.ready.map(|(_, c)| c)),
        };
        eprintln!(
            "  initial convergence: {}/{} sidecars complete, the last {} ms after the control \
             plane started",
            initial.converged,
            initial.sidecars,
            ms(initial.ready.max_ms)
        );
        if !all_ready {
            eprintln!(
                "warning: {} sidecar(s) did not get a complete configuration within {}s{}",
                opts.sidecars - initial.converged,
                opts.timeout.as_secs(),
                tracker
                    .first_end()
                    .map_or(String::new(), |e| format!(" (first stream error: {e})"))
            );
        }
        self.control_plane.ensure_running()?;

        let mut control = Conn::connect(self.registry_addr()?).await?;
        let mut rounds = Vec::with_capacity(opts.rounds);
        self.settle().await;
        for round in 1..=opts.rounds {
            let r = self.round(&mut control, round).await?;
            eprintln!(
                "  round {round}: {}/{} converged, ACK p50 {} ms, p99 {} ms, max {} ms; \
                 control plane {:.3} CPU s",
                r.converged,
                r.sidecars,
                ms(r.acked.p50_ms),
                ms(r.acked.p99_ms),
                ms(r.acked.max_ms),
                r.control_plane_cpu_s
            );
            rounds.push(r);
            self.control_plane.ensure_running()?;
        }

        let cp_final = self.control_plane.stats()?;
        let registry_final = self.registry.stats()?;
        let tracker = self.tracker()?;
        let p50s: Vec<f64> = rounds.iter().map(|r| r.acked.p50_ms).collect();
        let p99s: Vec<f64> = rounds.iter().map(|r| r.acked.p99_ms).collect();
        let cpus: Vec<f64> = rounds.iter().map(|r| r.control_plane_cpu_s).collect();
        let streams_ended = tracker.views.iter().filter(|v| v.ended.is_some()).count();
        let summary = Summary {
            median_ack_p50_ms: median(&p50s),
            median_ack_p99_ms: median(&p99s),
            max_ack_ms: rounds.iter().map(|r| r.acked.max_ms).fold(0.0, f64::max),
            all_converged: streams_ended == 0
                && initial.converged == opts.sidecars
                && rounds
                    .iter()
                    .all(|r| r.converged == opts.sidecars && r.wrong == 0),
            median_round_control_plane_cpu_s: median(&cpus),
            control_plane_cpu_total_s: cp_final.cpu_seconds,
            control_plane_rss_mb: cp_final.rss_mb(),
            control_plane_rss_max_mb: rounds
                .iter()
                .map(|r| r.control_plane_rss_mb)
                .chain([initial.control_plane_rss_mb, cp_final.rss_mb()])
                .fold(0.0, f64::max),
            registry_rss_mb: registry_final.rss_mb(),
            streams_ended,
            first_stream_error: tracker.first_end().map(str::to_string),
            control_plane_log: LogLines::of(&self.control_plane),
            registry_log: LogLines::of(&self.registry),
        };
        let published = compare(opts, &summary);
        Ok(XdsReport {
            options: opts.clone(),
            machine,
            load_before: None,
            load_after: None,
            connections,
            population,
            initial,
            rounds,
            summary,
            published,
        })
    }

    fn registry_addr(&self) -> Result<SocketAddr> {
        self.registry.addr("registry")
    }

    fn tracker(&mut self) -> Result<&mut Tracker> {
        self.tracker
            .as_mut()
            .context("the sidecars were not started")
    }

    /// Waits until nothing has arrived for `settle` (at most `timeout`), and warns when the
    /// sidecars then disagree about the watched endpoints or lack their configuration.
    async fn settle(&mut self) {
        let (settle, timeout) = (self.opts.settle, self.opts.timeout);
        let Ok(tracker) = self.tracker() else {
            return;
        };
        if !tracker.quiet(settle, Instant::now() + timeout).await {
            eprintln!(
                "warning: the sidecars were still receiving responses after {}s",
                timeout.as_secs()
            );
        }
        let live: Vec<&View> = tracker.views.iter().filter(|v| v.ended.is_none()).collect();
        let incomplete = live.iter().filter(|v| !v.complete).count();
        let digests: std::collections::BTreeSet<Option<u64>> =
            live.iter().map(|v| v.watched.map(|w| w.digest)).collect();
        if incomplete > 0 || digests.len() > 1 {
            eprintln!(
                "warning: after settling, {incomplete} live sidecar(s) lack a complete \
                 configuration and the sidecars hold {} different versions of {WATCHED_SERVICE}",
                digests.len()
            );
        }
    }

    async fn round(&mut self, control: &mut Conn, round: usize) -> Result<Round> {
        let (write, path, body, unhealthy) = self.layout.round_write(round);
        let timeout = self.opts.timeout;
        let cp_before = self.control_plane.stats()?;
        let registry_before = self.registry.stats()?;
        let tracker = self
            .tracker
            .as_mut()
            .context("the sidecars were not started")?;
        let baseline: Vec<Option<u64>> = tracker
            .views
            .iter()
            .map(|v| v.watched.map(|w| w.digest))
            .collect();
        let live: Vec<bool> = tracker.views.iter().map(|v| v.ended.is_none()).collect();
        let mut pending = live.iter().filter(|l| **l).count();
        let sidecars = pending;
        let bench_before = system::proc_stats(None)?;

        let t0 = Instant::now();
        control
            .request(Method::PUT, path, Bytes::from(body))
            .await?
            .ensure_success(&write)?;
        let write_ack = t0.elapsed();

        let mut converged = vec![false; live.len()];
        let mut wrong = vec![false; live.len()];
        let mut received = report::new_histogram()?;
        let mut acked = report::new_histogram()?;
        let deadline = t0 + timeout;
        while pending > 0 {
            let Some(event) = tracker.recv(deadline).await else {
                break;
            };
            let i = event.sidecar;
            match &event.what {
                What::Response {
                    kind: Kind::Eds,
                    received: at,
                    acked: ack,
                    watched: Some(w),
                    ..
                } if live[i] && !converged[i] && *at >= t0 && baseline[i] != Some(w.digest) => {
                    if w.unhealthy == unhealthy {
                        converged[i] = true;
                        pending -= 1;
                        report::record(&mut received, at.saturating_duration_since(t0));
                        report::record(&mut acked, ack.saturating_duration_since(t0));
                    } else {
                        wrong[i] = true;
                    }
                }
                What::Ended(_) if live[i] && !converged[i] => pending -= 1,
                _ => {}
            }
            tracker.apply(event);
        }
        if pending > 0 {
            eprintln!(
                "warning: round {round}: {pending} sidecar(s) did not converge within {}s",
                timeout.as_secs()
            );
        }
        let bench_after = system::proc_stats(None)?;
        self.settle().await;
        let cp_after = self.control_plane.stats()?;
        let registry_after = self.registry.stats()?;
        Ok(Round {
            round,
            write,
            write_ack_ms: write_ack.as_secs_f64() * 1000.0,
            sidecars,
            converged: converged.iter().filter(|c| **c).count(),
            wrong: wrong.iter().filter(|w| **w).count(),
            received: Latency::from_histogram(&received),
            acked: Latency::from_histogram(&acked),
            control_plane_cpu_s: cp_after.cpu_seconds - cp_before.cpu_seconds,
            control_plane_rss_mb: cp_after.rss_mb(),
            registry_cpu_s: registry_after.cpu_seconds - registry_before.cpu_seconds,
            registry_rss_mb: registry_after.rss_mb(),
            bench_cpu_s: bench_after.cpu_seconds - bench_before.cpu_seconds,
        })
    }
}

/// How many HTTP/2 connections the sidecars get: the number asked for, else one per sidecar;
/// fewer, with a note, when the open-file limit of this process or the control plane's (the
/// same limit: they inherit it) would not allow that many.
fn plan_connections(opts: &XdsOptions, limit: Option<u64>) -> Result<usize> {
    let wanted = opts
        .connections
        .unwrap_or(opts.sidecars)
        .clamp(1, opts.sidecars);
    let Some(limit) = limit else {
        return Ok(wanted);
    };
    // The control plane holds a blocking query (one connection) per service: S services and
    // up to S sidecar services; the registry holds the other end of each.
    let watches = (opts.services + opts.sidecars.min(opts.services)) as u64 + OTHER_WATCHES;
    let writers = opts.writers as u64;
    let registry_needs = watches + writers + SPARE_FILES;
    if registry_needs > limit {
        bail!(
            "the registry would need about {registry_needs} open files (the control plane's \
             {watches} blocking queries) but the limit is {limit}: raise it with `ulimit -n \
             {registry_needs}` (or more), or ask for fewer services"
        );
    }
    let fixed = watches.max(writers) + SPARE_FILES;
    let fits = usize::try_from(limit.saturating_sub(fixed)).unwrap_or(usize::MAX);
    if wanted <= fits {
        return Ok(wanted);
    }
    let needed = wanted as u64 + fixed;
    if opts.connections.is_some() || fits == 0 {
        bail!(
            "{wanted} connections need about {needed} open files in this process and in the \
             control plane, but the limit is {limit}: raise it with `ulimit -n {needed}`, or \
             ask for fewer --connections"
        );
    }
    eprintln!(
        "note: the open-file limit ({limit}) allows {fits} connections, not one per sidecar \
         ({wanted}); the streams share them (`ulimit -n {needed}` gives each its own)"
    );
    Ok(fits)
}

/// Opens `n` HTTP/2 connections to the ADS server.
async fn connect(addr: SocketAddr, n: usize) -> Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10));
    let mut channels = Vec::with_capacity(n);
    while channels.len() < n {
        let batch = CONNECT_CONCURRENCY.min(n - channels.len());
        let mut connects = JoinSet::new();
        for _ in 0..batch {
            let endpoint = endpoint.clone();
            connects.spawn(async move { endpoint.connect().await });
        }
        while let Some(joined) = connects.join_next().await {
            let channel = joined
                .context("a connect task panicked")?
                .with_context(|| format!("cannot connect to the control plane at {addr}"))?;
            channels.push(channel);
        }
    }
    Ok(channels)
}

/// What the benchmark knows of each sidecar, from its events.
struct Tracker {
    rx: mpsc::UnboundedReceiver<Event>,
    views: Vec<View>,
}

#[derive(Default)]
struct View {
    opened: Option<Instant>,
    /// When its configuration first became complete (the ACK), and its size then.
    ready: Option<(Instant, ConfigSize)>,
    /// Whether its configuration is complete now.
    complete: bool,
    watched: Option<sidecar::Watched>,
    ended: Option<String>,
}

impl Tracker {
    fn new(rx: mpsc::UnboundedReceiver<Event>, sidecars: usize) -> Tracker {
        Tracker {
            rx,
            views: (0..sidecars).map(|_| View::default()).collect(),
        }
    }

    fn apply(&mut self, event: Event) {
        let Some(view) = self.views.get_mut(event.sidecar) else {
            return;
        };
        match event.what {
            What::Opened(at) => view.opened = Some(at),
            What::Response {
                acked,
                complete,
                watched,
                ..
            } => {
                view.complete = complete.is_some();
                if let (None, Some(size)) = (view.ready, complete) {
                    view.ready = Some((acked, size));
                }
                if watched.is_some() {
                    view.watched = watched;
                }
            }
            What::Ended(reason) => view.ended = Some(reason),
        }
    }

    /// The next event, or `None` at `deadline` or once every sidecar has stopped.
    async fn recv(&mut self, deadline: Instant) -> Option<Event> {
        tokio::time::timeout_at(deadline.into(), self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Applies events until `done` holds (true) or `deadline` passes (false).
    async fn until(&mut self, deadline: Instant, done: impl Fn(&Tracker) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            match self.recv(deadline).await {
                Some(event) => self.apply(event),
                None => return done(self),
            }
        }
    }

    /// Applies events until none has arrived for `settle` (true), or `deadline` (false).
    async fn quiet(&mut self, settle: Duration, deadline: Instant) -> bool {
        loop {
            let quiet_at = Instant::now() + settle;
            let wait_until = quiet_at.min(deadline);
            match tokio::time::timeout_at(wait_until.into(), self.rx.recv()).await {
                Ok(Some(event)) => self.apply(event),
                // Every sidecar has stopped: nothing more can come.
                Ok(None) => return true,
                Err(_) => return quiet_at <= deadline,
            }
        }
    }

    fn first_end(&self) -> Option<&str> {
        self.views.iter().find_map(|v| v.ended.as_deref())
    }
}

/// The published figures of `shared/brief/benchmarks.md` next to ours.
fn compare(opts: &XdsOptions, s: &Summary) -> Vec<Comparison> {
    let instances = opts.services * opts.instances;
    let per_change = s.median_round_control_plane_cpu_s;
    vec![
        Comparison {
            source: "Consul (2021 global scale benchmark)",
            published: "an endpoint change reached 172,000 service instances on 10,000 nodes \
                        in under 1 s",
            ours: format!(
                "an endpoint change reached {} sidecars (of {} services, {instances} \
                 instances) on one 2-core machine: ACK p99 {} ms, all by {} ms",
                opts.sidecars,
                opts.services,
                ms(s.median_ack_p99_ms),
                ms(s.max_ack_ms)
            ),
        },
        Comparison {
            source: "Airbnb on Istio (production)",
            published: "proxy convergence p90 of 1.5 s",
            ours: format!(
                "ACK p50 {} ms, p99 {} ms (median over rounds)",
                ms(s.median_ack_p50_ms),
                ms(s.median_ack_p99_ms)
            ),
        },
        Comparison {
            source: "istiod (Istio 1.24 docs), memory",
            published: "1.5 GB for 1000 services / 2000 sidecars",
            ours: format!(
                "{:.0} MB RSS for {} services / {} sidecars ({:.0}x less), plus {:.0} MB for \
                 the registry",
                s.control_plane_rss_max_mb,
                opts.services,
                opts.sidecars,
                1536.0 / s.control_plane_rss_max_mb.max(0.001),
                s.registry_rss_mb
            ),
        },
        Comparison {
            source: "istiod (Istio 1.24 docs), CPU",
            published: "1 vCPU for 1000 services / 2000 sidecars (under steady churn)",
            ours: format!(
                "{:.3} CPU s per endpoint change pushed to {} sidecars: 1 vCPU would sustain \
                 about {:.0} such changes/s",
                per_change,
                opts.sidecars,
                if per_change > 0.0 {
                    1.0 / per_change
                } else {
                    f64::INFINITY
                }
            ),
        },
    ]
}

impl XdsReport {
    /// The results as plain-text tables.
    pub fn render(&self) -> String {
        let o = &self.options;
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "machine: {} CPUs, {}/{}; registry data on {}; open files limit {}",
            m.cpus,
            m.os,
            m.arch,
            m.data_fs.as_deref().unwrap_or("an unknown filesystem"),
            m.open_files_limit
                .map_or("unknown".to_string(), |n| n.to_string()),
        );
        let load = |l: Option<f64>| l.map_or("unknown".to_string(), |l| format!("{l:.2}"));
        let _ = writeln!(
            out,
            "load average (1 min): {} before, {} after{}",
            load(self.load_before),
            load(self.load_after),
            if self.load_before.is_some_and(|l| l > 0.5 * m.cpus as f64) {
                " -- THE MACHINE WAS BUSY BEFORE THE RUN: the figures are noisy"
            } else {
                ""
            }
        );
        let _ = writeln!(out, "mesh binary: {}", o.mesh_bin.display());
        let _ = writeln!(
            out,
            "layout: {} services x {} instances, {} sidecars ({} ADS, {} HTTP/2 connection(s))",
            o.services,
            o.instances,
            o.sidecars,
            o.protocol(),
            self.connections
        );
        if let Some(c) = &self.initial.config {
            let _ = writeln!(
                out,
                "each sidecar: {} clusters, {} endpoints, {} listeners, {} routes ({:.1} KB \
                 encoded)",
                c.clusters,
                c.endpoints,
                c.listeners,
                c.routes,
                c.bytes as f64 / 1024.0
            );
        }

        let p = &self.population;
        let _ = writeln!(
            out,
            "\nPopulation (before the control plane starts; {} concurrent writers)",
            o.writers
        );
        let mut table = Table::new(&["phase", "writes", "s", "writes/s"]);
        for phase in &p.phases {
            table.row(vec![
                phase.what.clone(),
                phase.writes.to_string(),
                format!("{:.2}", phase.elapsed_s),
                format!("{:.0}", phase.writes_per_sec),
            ]);
        }
        table.row(vec![
            "total".to_string(),
            p.writes.to_string(),
            format!("{:.2}", p.elapsed_s),
            format!("{:.0}", p.writes_per_sec),
        ]);
        out.push_str(&table.render());
        let _ = writeln!(
            out,
            "registry RSS after population: {:.1} MB",
            p.registry_rss_mb
        );

        let i = &self.initial;
        let _ = writeln!(
            out,
            "\nInitial convergence: from starting the control plane (registry populated) to \
             each sidecar's ACK that completed its configuration"
        );
        let mut table = Table::new(&["step", "ms"]);
        table.row(vec![
            "control plane listening".to_string(),
            ms(i.listening_ms),
        ]);
        table.row(vec![
            format!("all {} streams open", i.sidecars),
            ms(i.streams_open_ms),
        ]);
        table.row(vec![
            "sidecar configuration complete, p50".to_string(),
            ms(i.ready.p50_ms),
        ]);
        table.row(vec![
            "sidecar configuration complete, p99".to_string(),
            ms(i.ready.p99_ms),
        ]);
        table.row(vec![
            format!("last sidecar complete ({}/{})", i.converged, i.sidecars),
            ms(i.ready.max_ms),
        ]);
        out.push_str(&table.render());
        let _ = writeln!(
            out,
            "control plane by then: {:.2} CPU s, RSS {:.1} MB; registry: {:.2} CPU s, RSS \
             {:.1} MB; sidecar simulator: {:.2} CPU s",
            i.control_plane_cpu_s,
            i.control_plane_rss_mb,
            i.registry_cpu_s,
            i.registry_rss_mb,
            i.bench_cpu_s
        );

        let _ = writeln!(
            out,
            "\nRounds: T0 = just before one registry write that changes {WATCHED_SERVICE}'s \
             endpoints (every sidecar's upstream);\nlatency = T0 to each sidecar's receipt \
             (recv) and ACK of the first EDS response that reflects it"
        );
        let mut table = Table::new(&[
            "round",
            "converged",
            "write ms",
            "recv p50",
            "ack p50",
            "ack p99",
            "ack max",
            "cp CPU s",
            "cp RSS MB",
            "reg CPU s",
            "sim CPU s",
        ]);
        for r in &self.rounds {
            table.row(vec![
                r.round.to_string(),
                if r.wrong > 0 {
                    format!("{}/{} ({} wrong)", r.converged, r.sidecars, r.wrong)
                } else {
                    format!("{}/{}", r.converged, r.sidecars)
                },
                ms(r.write_ack_ms),
                ms(r.received.p50_ms),
                ms(r.acked.p50_ms),
                ms(r.acked.p99_ms),
                ms(r.acked.max_ms),
                format!("{:.3}", r.control_plane_cpu_s),
                format!("{:.1}", r.control_plane_rss_mb),
                format!("{:.3}", r.registry_cpu_s),
                format!("{:.3}", r.bench_cpu_s),
            ]);
        }
        out.push_str(&table.render());
        let s = &self.summary;
        let _ = writeln!(
            out,
            "median over {} round(s): ACK p50 {} ms, p99 {} ms; max {} ms; {}",
            self.rounds.len(),
            ms(s.median_ack_p50_ms),
            ms(s.median_ack_p99_ms),
            ms(s.max_ack_ms),
            if s.all_converged {
                "every sidecar converged, every time"
            } else {
                "NOT EVERY SIDECAR CONVERGED"
            }
        );
        let _ = writeln!(
            out,
            "control plane: {:.2} CPU s in total since it started, {:.3} per round (median); \
             RSS {:.1} MB now, {:.1} MB at most; registry RSS {:.1} MB",
            s.control_plane_cpu_total_s,
            s.median_round_control_plane_cpu_s,
            s.control_plane_rss_mb,
            s.control_plane_rss_max_mb,
            s.registry_rss_mb
        );
        let _ = writeln!(
            out,
            "errors: {} stream(s) ended{}; log lines WARN/ERROR: control plane {}/{}, \
             registry {}/{}",
            s.streams_ended,
            s.first_stream_error
                .as_deref()
                .map_or(String::new(), |e| format!(" (first: {e})")),
            s.control_plane_log.warnings,
            s.control_plane_log.errors,
            s.registry_log.warnings,
            s.registry_log.errors
        );

        let _ = writeln!(
            out,
            "\nPublished figures (other machines, other scales: read bench/README.md before \
             comparing)"
        );
        for c in &self.published {
            let _ = writeln!(out, "- {}: {}\n  here: {}", c.source, c.published, c.ours);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(sidecars: usize, connections: Option<usize>) -> XdsOptions {
        XdsOptions {
            sidecars,
            connections,
            ..XdsOptions::new(PathBuf::from("mesh"))
        }
    }

    #[test]
    fn connections_default_to_one_per_sidecar_and_shrink_to_the_limit() {
        assert_eq!(plan_connections(&opts(1000, None), None).unwrap(), 1000);
        assert_eq!(
            plan_connections(&opts(1000, None), Some(20000)).unwrap(),
            1000
        );
        assert_eq!(
            plan_connections(&opts(1000, Some(4)), Some(20000)).unwrap(),
            4
        );
        // 2016 watches + 64 spare leave 920 of 3000.
        assert_eq!(
            plan_connections(&opts(1000, None), Some(3000)).unwrap(),
            920
        );
        assert!(plan_connections(&opts(1000, Some(1000)), Some(3000)).is_err());
        assert!(plan_connections(&opts(1000, None), Some(1024)).is_err());
    }
}
