//! `mesh-bench`: runs a benchmark, prints its tables and writes its figures as JSON.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use mesh_bench::{RegistryOptions, run_registry_bench};
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

fn parse_duration(s: &str) -> Result<Duration, String> {
    mesh_proto::duration::parse(s).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Registry(args) => registry(args).await,
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

/// `bench/results` in the source tree (git-ignored).
fn results_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("results")
}
