//! `mesh-bench`: runs a benchmark, prints its tables and writes its figures as JSON.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use mesh_bench::{
    ProxyOptions, RegistryOptions, XdsOptions, run_proxy_bench, run_registry_bench, run_xds_bench,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "mesh-bench",
    about = "Benchmarks of the mesh over real sockets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Registry write throughput (durable) and blocking-query wake-up latency.
    Registry(RegistryArgs),
    /// Control-plane scale: N simulated sidecars (ADS clients that ACK) against one control
    /// plane; registry write to every sidecar's ACK, and the control plane's RSS and CPU.
    Xds(XdsArgs),
    /// The data plane: our proxy next to Envoy, nginx and HAProxy (those found), one worker
    /// each: requests/s, CPU per request, added latency at fixed rates, memory.
    Proxy(ProxyArgs),
    /// The proxy bench's fixed-response backend (run by `proxy` as a child process).
    #[command(hide = true)]
    Backend {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: std::net::SocketAddr,
    },
}

#[derive(Args)]
struct ProxyArgs {
    /// Measured time per point, as a Go duration [default: 10s; smoke: 500ms]
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Warm-up before each point [default: 2s; smoke: 200ms]
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    /// Closed-loop keep-alive connections [default: 32; smoke: 8]
    #[arg(long)]
    connections: Option<usize>,
    /// Open-loop connections the fixed rate is spread over [default: 16; smoke: 4]
    #[arg(long)]
    open_connections: Option<usize>,
    /// Rounds; the report gives median and min-max [default: 3; smoke: 1]
    #[arg(long)]
    rounds: Option<usize>,
    /// Fixed rates for the latency runs, requests/s, comma separated [default: 1000,5000;
    /// smoke: 200]
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<u64>>,
    /// Idle keep-alive connections for the memory figure [default: 1000; smoke: 100]
    #[arg(long)]
    idle_connections: Option<usize>,
    /// HTTP/2 with prior knowledge (h2c) from the load generator to the proxy
    #[arg(long)]
    h2: bool,
    /// Unary gRPC calls (POST /bench.Bench/Echo) over h2c, HTTP/2 from the proxy to the
    /// backend too; implies --h2. A call succeeds on status 200 with grpc-status 0
    #[arg(long)]
    grpc: bool,
    /// Concurrent streams per h2c connection in closed-loop runs; ignored over HTTP/1.1
    /// [default: 10; smoke: 2]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    streams: Option<u64>,
    /// Do not pin proxies (CPU 1) and backend (CPU 0) with taskset
    #[arg(long)]
    no_pin: bool,
    /// The Envoy binary [default: $MESH_ENVOY, else `envoy` on PATH, else .venv/bin/envoy]
    #[arg(long)]
    envoy_bin: Option<PathBuf>,
    /// The mesh binary to run [default: built with `cargo build --release --bin mesh`]
    #[arg(long, env = "MESH_BIN")]
    mesh_bin: Option<PathBuf>,
    /// Where to write the JSON results (the SVG goes next to it) [default:
    /// bench/results/proxy.json, or proxy-smoke.json with --smoke]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seconds, not minutes: 0.5s per point, 1 round, 8 connections (2 streams each over h2c),
    /// 200 rps, only our proxy and Envoy; options given as well still apply
    #[arg(long)]
    smoke: bool,
}

#[derive(Args)]
struct RegistryArgs {
    /// How long each write scenario runs, as a Go duration [default: 5s]
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Concurrent writers, one keep-alive connection each [default: 16]
    #[arg(long)]
    writers: Option<usize>,
    /// Concurrent blocking watchers, one connection each [default: 1000]
    #[arg(long)]
    watchers: Option<usize>,
    /// Wake-up rounds [default: 5]
    #[arg(long)]
    rounds: Option<usize>,
    /// How long the watchers sit parked before the write that wakes them [default: 1s]
    #[arg(long, value_parser = parse_duration)]
    settle: Option<Duration>,
    /// Folder for the registries' temporary data directories [default: the system temp dir]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where to write the JSON results [default: bench/results/registry.json, or
    /// registry-smoke.json with --smoke]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run everything tiny (0.5s, 4 writers, 50 watchers, 1 round) in a few seconds; options
    /// given as well still apply
    #[arg(long)]
    smoke: bool,
}

#[derive(Args)]
struct XdsArgs {
    /// Services, each with a service-defaults entry (protocol http) [default: 1000]
    #[arg(long)]
    services: Option<usize>,
    /// Instances per service, each on its own node with a passing check [default: 10]
    #[arg(long)]
    instances: Option<usize>,
    /// Simulated sidecars, one ADS stream each [default: 1000]
    #[arg(long)]
    sidecars: Option<usize>,
    /// Incremental (delta) xDS instead of state of the world
    #[arg(long)]
    delta: bool,
    /// Measured registry writes [default: 5]
    #[arg(long)]
    rounds: Option<usize>,
    /// HTTP/2 connections the streams share [default: one per sidecar, if the open-file limit
    /// allows]
    #[arg(long)]
    connections: Option<usize>,
    /// Concurrent writers populating the registry [default: 16]
    #[arg(long)]
    writers: Option<usize>,
    /// How long nothing may arrive before the sidecars count as settled, as a Go duration
    /// [default: 1s]
    #[arg(long, value_parser = parse_duration)]
    settle: Option<Duration>,
    /// How long the initial convergence, and each round, may take [default: 120s]
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Folder for the registry's temporary data directory [default: the system temp dir]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The mesh binary to run [default: built with `cargo build --release --bin mesh`]
    #[arg(long, env = "MESH_BIN")]
    mesh_bin: Option<PathBuf>,
    /// Where to write the JSON results [default: bench/results/xds.json, or xds-smoke.json
    /// with --smoke]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run tiny (20 services x 2 instances, 10 sidecars, 1 round) in a few seconds; options
    /// given as well still apply
    #[arg(long)]
    smoke: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    mesh_proto::duration::parse(s).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Registry(args) => registry(args).await,
        Command::Xds(args) => xds(args).await,
        Command::Proxy(args) => proxy(args).await,
        Command::Backend { addr } => mesh_bench::backend::serve(addr).await,
    }
}

async fn registry(args: RegistryArgs) -> Result<()> {
    let mut opts = if args.smoke {
        RegistryOptions::smoke()
    } else {
        RegistryOptions::default()
    };
    opts.duration = args.duration.unwrap_or(opts.duration);
    opts.writers = args.writers.unwrap_or(opts.writers);
    opts.watchers = args.watchers.unwrap_or(opts.watchers);
    opts.rounds = args.rounds.unwrap_or(opts.rounds);
    opts.settle = args.settle.unwrap_or(opts.settle);
    opts.data_dir = args.data_dir;
    let out = args.out.unwrap_or_else(|| {
        let name = if args.smoke {
            "registry-smoke.json"
        } else {
            "registry.json"
        };
        results_dir().join(name)
    });

    let report = run_registry_bench(opts).await?;
    print!("{}", report.render());
    mesh_bench::report::write_json(&out, &report)?;
    println!("\nresults written to {}", out.display());
    Ok(())
}

async fn xds(args: XdsArgs) -> Result<()> {
    let mesh_bin = match args.mesh_bin {
        Some(bin) => bin,
        None => {
            eprintln!("xds bench: building the mesh binary (cargo build --release --bin mesh)");
            tokio::task::spawn_blocking(|| mesh_bench::process::build_mesh_bin(true, false))
                .await??
        }
    };
    let mut opts = if args.smoke {
        XdsOptions::smoke(mesh_bin)
    } else {
        XdsOptions::new(mesh_bin)
    };
    opts.services = args.services.unwrap_or(opts.services);
    opts.instances = args.instances.unwrap_or(opts.instances);
    opts.sidecars = args.sidecars.unwrap_or(opts.sidecars);
    opts.delta |= args.delta;
    opts.rounds = args.rounds.unwrap_or(opts.rounds);
    opts.connections = args.connections.or(opts.connections);
    opts.writers = args.writers.unwrap_or(opts.writers);
    opts.settle = args.settle.unwrap_or(opts.settle);
    opts.timeout = args.timeout.unwrap_or(opts.timeout);
    opts.data_dir = args.data_dir;
    let out = args.out.unwrap_or_else(|| {
        let name = if args.smoke {
            "xds-smoke.json"
        } else {
            "xds.json"
        };
        results_dir().join(name)
    });

    let report = run_xds_bench(opts).await?;
    print!("{}", report.render());
    mesh_bench::report::write_json(&out, &report)?;
    println!("\nresults written to {}", out.display());
    Ok(())
}

async fn proxy(args: ProxyArgs) -> Result<()> {
    let mesh_bin = match args.mesh_bin {
        Some(bin) => bin,
        None => {
            eprintln!("proxy bench: building the mesh binary (cargo build --release --bin mesh)");
            tokio::task::spawn_blocking(|| mesh_bench::process::build_mesh_bin(true, false))
                .await??
        }
    };
    let bench_bin = std::env::current_exe()?;
    let mut opts = if args.smoke {
        ProxyOptions::smoke(mesh_bin, bench_bin)
    } else {
        ProxyOptions::new(mesh_bin, bench_bin)
    };
    opts.duration = args.duration.unwrap_or(opts.duration);
    opts.warmup = args.warmup.unwrap_or(opts.warmup);
    opts.connections = args.connections.unwrap_or(opts.connections);
    opts.open_connections = args.open_connections.unwrap_or(opts.open_connections);
    opts.rounds = args.rounds.unwrap_or(opts.rounds).max(1);
    opts.rates = args.rates.unwrap_or(opts.rates);
    opts.idle_connections = args.idle_connections.unwrap_or(opts.idle_connections);
    if args.grpc {
        opts.protocol = mesh_bench::load::Protocol::Grpc;
    } else if args.h2 {
        opts.protocol = mesh_bench::load::Protocol::H2c;
    }
    if let Some(streams) = args.streams {
        opts.streams = usize::try_from(streams)?;
    }
    opts.pin &= !args.no_pin;
    opts.envoy_bin = args.envoy_bin;
    let out = args.out.unwrap_or_else(|| {
        let name = if args.smoke {
            "proxy-smoke.json"
        } else {
            "proxy.json"
        };
        results_dir().join(name)
    });

    let report = run_proxy_bench(opts).await?;
    print!("{}", report.render());
    mesh_bench::report::write_json(&out, &report)?;
    let svg = out.with_extension("svg");
    std::fs::write(&svg, report.svg())?;
    println!(
        "\nresults written to {} and {}",
        out.display(),
        svg.display()
    );
    Ok(())
}

/// `bench/results` in the source tree (git-ignored).
fn results_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("results")
}
