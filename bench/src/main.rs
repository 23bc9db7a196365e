//! `mesh-bench`: runs a benchmark, prints its tables and writes its figures as JSON.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use mesh_bench::{RegistryOptions, XdsOptions, run_registry_bench, run_xds_bench};
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

/// `bench/results` in the source tree (git-ignored).
fn results_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("results")
}
