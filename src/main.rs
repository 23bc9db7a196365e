//! `mesh`: the one binary. Each subcommand runs one piece of the mesh.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "mesh",
    version,
    about = "A small service mesh: registry, control plane and sidecar in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Consul-compatible service registry.
    ///
    /// Example: mesh registry --http-addr 127.0.0.1:8500 --data-dir ./mesh-data
    Registry(RegistryArgs),
}

#[derive(clap::Args)]
struct RegistryArgs {
    /// Address of the HTTP API (Consul's default port is 8500).
    #[arg(long, default_value = "127.0.0.1:8500")]
    http_addr: SocketAddr,
    /// Directory for the registry's database; created if missing.
    #[arg(long, default_value = "mesh-data/registry")]
    data_dir: PathBuf,
    /// Name of the registry's own node, which agent registrations land on.
    #[arg(long, default_value = "mesh")]
    node_name: String,
    #[arg(long, default_value = "dc1")]
    datacenter: String,
    /// Address reported for the node and as the leader.
    #[arg(long, default_value = "127.0.0.1")]
    advertise_addr: String,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the Tokio runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Registry(args) => run_registry(args).await,
        }
    })
}

async fn run_registry(args: RegistryArgs) -> anyhow::Result<()> {
    let config = mesh_registry::RegistryConfig {
        data_dir: args.data_dir.clone(),
        node_name: args.node_name,
        datacenter: args.datacenter,
        advertise_addr: args.advertise_addr,
    };
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_addr))?;
    let registry = mesh_registry::Registry::open(config)
        .await
        .with_context(|| format!("cannot open the registry in {}", args.data_dir.display()))?;
    tracing::info!(addr = %listener.local_addr()?, data_dir = %args.data_dir.display(), "registry listening");
    mesh_registry::serve(listener, registry, shutdown_signal()).await?;
    tracing::info!("registry stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
