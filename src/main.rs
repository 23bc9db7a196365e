//! `mesh`: the one binary. Each subcommand runs one piece of the mesh.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::os::fd::AsFd as _;
use std::path::PathBuf;
use std::sync::Arc;

mod demo;
mod ops;
mod status;

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
    /// Run the control plane: watch the registry and serve Envoy's xDS v3 API (ADS, SotW and delta).
    ///
    /// Example: mesh control-plane --registry-url http://127.0.0.1:8500 --xds-addr 127.0.0.1:18000
    ControlPlane(ControlPlaneArgs),
    /// Show each connected proxy's xDS sync state (SYNCED / STALE / NACKED / UNREGISTERED /
    /// CONFIG_ERROR) and why it is not in sync, like `istioctl proxy-status`.
    ///
    /// Example: mesh status --control-plane-url http://127.0.0.1:19100
    Status(StatusArgs),
    /// Print a bootstrap file that points a stock Envoy at the control plane.
    ///
    /// Example: mesh envoy-bootstrap --proxy-id web-sidecar-proxy > envoy.yaml && envoy -c envoy.yaml
    EnvoyBootstrap(BootstrapArgs),
    /// Run the sidecar proxy, configured entirely by an xDS server.
    ///
    /// Example: mesh proxy --node-id web-1-sidecar-proxy --xds-url http://127.0.0.1:18000 --admin-addr 127.0.0.1:19000
    Proxy(ProxyArgs),
    /// Run a whole mesh locally and watch a canary rollout: registry, control plane, demo services
    /// with sidecars, live traffic while a service-splitter and a service-router are pushed.
    ///
    /// Example: mesh demo            (interactive: Enter moves to the next step)
    ///          mesh demo --steps    (non-interactive: runs every step and exits)
    ///          mesh demo --keep-running --envoy
    Demo(demo::DemoArgs),
    /// Write, read and delete L7 config entries (service-splitter, service-router, ...) in the registry.
    ///
    /// Example: mesh config write examples/config/splitter-90-10.json
    Config(ops::ConfigArgs),
    /// Register and deregister services (with their sidecars) in the registry.
    ///
    /// Example: mesh services register backend-v1.json
    Services(ops::ServicesArgs),
    #[command(hide = true, about = demo::DEMO_SERVICE_ABOUT)]
    DemoService(DemoServiceArgs),
}

#[derive(clap::Args)]
struct DemoServiceArgs {
    /// Service name (answered in every response).
    #[arg(long)]
    name: String,
    #[arg(long, default_value = "v1")]
    version: String,
    /// Instance name; defaults to the service name.
    #[arg(long)]
    instance: Option<String>,
    #[arg(long)]
    port: u16,
    /// Call this URL (the sidecar's upstream listener) and wrap its answer.
    #[arg(long)]
    upstream_url: Option<String>,
    /// Fail this percentage of requests with 503 (per request: the x-fail-percent header).
    #[arg(long, default_value_t = 0.0)]
    fail_percent: f64,
    /// Add this latency to every answer (per request: the x-delay-ms header).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum XdsModeArg {
    Sotw,
    Delta,
}

#[derive(clap::Args)]
struct ProxyArgs {
    /// The proxy's xDS node.id: its connect-proxy service ID in the registry.
    #[arg(long)]
    node_id: String,
    /// node.cluster; defaults to the node ID.
    #[arg(long)]
    cluster: Option<String>,
    /// The xDS (ADS) server.
    #[arg(long, env = "MESH_XDS_URL", default_value = "http://127.0.0.1:18000")]
    xds_url: String,
    /// Admin API, like Envoy's (/help lists it); loopback by default, as Envoy's.
    #[arg(long, default_value = "127.0.0.1:19000")]
    admin_addr: SocketAddr,
    /// How long connections get to finish when listeners drain (removed, replaced, or the
    /// process shutting down), like Envoy's --drain-time-s.
    #[arg(long, default_value_t = 10)]
    drain_time_s: u64,
    /// Restart without refusing connections, like Envoy's hot restart: a new `mesh proxy`
    /// started with the same path takes the running one's listening sockets over this Unix
    /// socket, and once it serves every listener of its configuration the old one stops
    /// accepting, drains (--drain-time-s) and exits. The first process creates it.
    #[arg(long)]
    restart_socket: Option<PathBuf>,
    /// State of the world or incremental (delta) xDS.
    #[arg(long, value_enum, default_value = "delta")]
    xds_mode: XdsModeArg,
    /// Worker threads, like Envoy's --concurrency. 1 runs everything on one thread with no
    /// cross-thread scheduling, the cheapest setting for a sidecar; 0 means one per core.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
}

#[derive(clap::Args)]
struct ControlPlaneArgs {
    /// Consul HTTP API to watch: our registry or a real Consul agent.
    #[arg(
        long,
        env = "MESH_REGISTRY_URL",
        default_value = "http://127.0.0.1:8500"
    )]
    registry_url: String,
    /// Address of the xDS (ADS) gRPC server.
    #[arg(long, default_value = "127.0.0.1:18000")]
    xds_addr: SocketAddr,
    /// Address of the admin API (`/status`, `/ready`).
    #[arg(long, default_value = "127.0.0.1:19100")]
    admin_addr: SocketAddr,
}

#[derive(clap::Args)]
struct StatusArgs {
    /// The control plane's admin address.
    #[arg(
        long,
        env = "MESH_CONTROL_PLANE_URL",
        default_value = "http://127.0.0.1:19100"
    )]
    control_plane_url: String,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct BootstrapArgs {
    /// The sidecar's service ID (its xDS node.id).
    #[arg(long)]
    proxy_id: String,
    /// node.cluster; defaults to the proxy ID.
    #[arg(long)]
    cluster: Option<String>,
    /// The control plane's xDS address (host:port).
    #[arg(long, default_value = "127.0.0.1:18000")]
    xds_addr: String,
    /// Envoy's own admin address.
    #[arg(long, default_value = "127.0.0.1:19000")]
    admin_addr: SocketAddr,
    /// Use incremental (delta) xDS instead of state of the world.
    #[arg(long)]
    delta: bool,
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

/// Changes the log filter of the running process (the proxy's admin `/logging`).
struct LogReload(
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
);

impl mesh_proxy::admin::LogLevels for LogReload {
    fn apply(&self, directives: &str) -> Result<(), String> {
        let filter =
            tracing_subscriber::EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}

fn main() -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Reloadable for the admin API; with static directives each callsite's interest is
    // cached, so events and spans that are off cost nothing more than before.
    let (filter, reload) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    let log_reload = Arc::new(LogReload(reload));
    let cli = Cli::parse();
    let runtime = match &cli.command {
        // A single worker needs no work-stealing scheduler: every wake-up stays on the
        // thread, without the multi-thread scheduler's atomics and queues.
        Command::Proxy(args) if args.concurrency == 1 => {
            tokio::runtime::Builder::new_current_thread()
        }
        Command::Proxy(args) if args.concurrency > 1 => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(args.concurrency);
            builder
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()
    .context("cannot start the Tokio runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Registry(args) => run_registry(args).await,
            Command::ControlPlane(args) => run_control_plane(args).await,
            Command::Status(args) => status::run(&args.control_plane_url, args.json).await,
            Command::EnvoyBootstrap(args) => envoy_bootstrap(args),
            Command::Proxy(args) => run_proxy(args, log_reload).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Config(args) => ops::run_config(args).await,
            Command::Services(args) => ops::run_services(args).await,
            Command::DemoService(args) => {
                let opts = mesh_examples::ServiceOptions {
                    instance: args.instance.unwrap_or_else(|| args.name.clone()),
                    name: args.name,
                    version: args.version,
                    addr: SocketAddr::from(([127, 0, 0, 1], args.port)),
                    upstream_url: args.upstream_url,
                    fail_percent: args.fail_percent,
                    delay_ms: args.delay_ms,
                };
                mesh_examples::run(opts, shutdown_signal()).await
            }
        }
    })
}

async fn run_registry(args: RegistryArgs) -> anyhow::Result<()> {
    let config = mesh_registry::RegistryConfig {
        data_dir: args.data_dir.clone(),
        node_name: args.node_name,
        datacenter: args.datacenter,
        advertise_addr: args.advertise_addr,
        tombstone_ttl: mesh_registry::tombstones::DEFAULT_TTL,
    };
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_addr))?;
    let registry = mesh_registry::Registry::open(config)
        .await
        .with_context(|| format!("cannot open the registry in {}", args.data_dir.display()))?;
    tracing::info!(addr = %listener.local_addr()?, data_dir = %args.data_dir.display(), "registry listening");
    until_signal(|drain| mesh_registry::serve(listener, registry, drain)).await?;
    tracing::info!("registry stopped");
    Ok(())
}

async fn run_control_plane(args: ControlPlaneArgs) -> anyhow::Result<()> {
    let xds = tokio::net::TcpListener::bind(args.xds_addr)
        .await
        .with_context(|| format!("cannot listen on {} (xDS)", args.xds_addr))?;
    let admin = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", args.admin_addr))?;
    tracing::info!(addr = %xds.local_addr()?, "xds listening");
    tracing::info!(addr = %admin.local_addr()?, "admin listening");
    tracing::info!(registry = %args.registry_url, "watching the registry");
    until_signal(|drain| mesh_control_plane::server::run(&args.registry_url, xds, admin, drain))
        .await?;
    tracing::info!("control plane stopped");
    Ok(())
}

async fn run_proxy(args: ProxyArgs, log_reload: Arc<LogReload>) -> anyhow::Result<()> {
    use mesh_proxy::restart;
    use mesh_proxy::xds::{XdsMode, XdsOptions, XdsStats};
    anyhow::ensure!(!args.node_id.is_empty(), "--node-id must not be empty");
    let parent = match &args.restart_socket {
        Some(path) => restart::Parent::connect(path)
            .await
            .context("cannot take over from the running proxy")?
            .map(Arc::new),
        None => None,
    };
    if parent.is_some() {
        tracing::info!("taking over from the running proxy");
    }
    let admin = admin_socket(args.admin_addr, parent.as_deref()).await?;
    // Kept to hand the admin socket to a successor; accepting stays with the admin server.
    let admin_handover = admin.as_fd().try_clone_to_owned()?;
    tracing::info!(addr = %admin.local_addr()?, "admin listening");
    let (updates, configs) =
        tokio::sync::watch::channel(Arc::new(mesh_proxy::config::ProxyConfig::default()));
    let stats = Arc::new(XdsStats::default());
    let options = XdsOptions {
        cluster: args.cluster.unwrap_or_else(|| args.node_id.clone()),
        node_id: args.node_id,
        server: args.xds_url,
        mode: match args.xds_mode {
            XdsModeArg::Sotw => XdsMode::Sotw,
            XdsModeArg::Delta => XdsMode::Delta,
        },
    };
    let drain_timeout = std::time::Duration::from_secs(args.drain_time_s);
    let admin_options = mesh_proxy::admin::AdminOptions {
        node_id: options.node_id.clone(),
        node_cluster: options.cluster.clone(),
        command_line_options: serde_json::json!({
            "admin_address": args.admin_addr.to_string(),
            "concurrency": args.concurrency,
            "drain_time": format!("{}s", args.drain_time_s),
            "restart_socket": args.restart_socket,
            "xds_address": options.server,
        }),
        log_levels: Some(log_reload),
        initial_level: std::env::var("MESH_LOG").ok(),
    };
    tracing::info!(node = %options.node_id, server = %options.server, "connecting to xDS");
    let mut proxy = mesh_proxy::runtime::Proxy::new(
        configs,
        Arc::clone(&stats),
        mesh_proxy::runtime::ProxyOptions {
            drain_timeout,
            ..Default::default()
        },
    );
    if let Some(parent) = &parent {
        proxy = proxy.inherit_from(Arc::clone(parent));
    }
    let handle = proxy.handle();
    let xds = tokio::spawn(mesh_proxy::xds::run(
        options,
        updates,
        Some(handle.apply_reports()),
        stats,
    ));
    // One drain for the process (the proxy's listeners), one for the admin server, which
    // answers (DRAINING) until the listeners are done.
    let (process, process_watch) = mesh_drain::channel();
    let (admin_stop, admin_watch) = mesh_drain::channel();
    let admin = tokio::spawn(mesh_proxy::admin::serve(
        admin,
        handle.clone(),
        admin_options,
        admin_watch,
    ));
    let proxy = tokio::spawn(proxy.run(process_watch));
    let (took_over, taken_over) = tokio::sync::oneshot::channel();
    let handoff = args.restart_socket.map(|path| {
        tokio::spawn(serve_handoff(
            path,
            parent,
            handle.clone(),
            (args.admin_addr, admin_handover),
            took_over,
        ))
    });
    let replaced = tokio::select! {
        () = shutdown_signal() => {
            tracing::info!("signal received; shutting down");
            false
        }
        () = handle.exit_requested() => {
            tracing::info!("exit asked for on the admin API; shutting down");
            false
        }
        Ok(()) = taken_over => {
            tracing::info!("a new process took over; draining");
            true
        }
    };
    if replaced {
        // The successor serves the admin socket too.
        admin_stop.start();
    }
    if let Some(handoff) = handoff {
        handoff.abort();
    }
    // The proxy bounds each listener's drain by the drain timeout itself.
    process
        .drain(drain_timeout + std::time::Duration::from_secs(5))
        .await;
    xds.abort();
    admin_stop.drain(std::time::Duration::from_secs(5)).await;
    let _ = proxy.await;
    if let Ok(Err(e)) = admin.await {
        return Err(anyhow::Error::new(e).context("admin server failed"));
    }
    tracing::info!("proxy stopped");
    Ok(())
}

/// The admin listener: the running proxy's socket when taking over from one that has it at
/// this address, else a new one.
async fn admin_socket(
    addr: SocketAddr,
    parent: Option<&mesh_proxy::restart::Parent>,
) -> anyhow::Result<tokio::net::TcpListener> {
    if let Some(parent) = parent
        && addr.port() != 0
    {
        match parent.take(addr).await {
            Ok(Some(socket)) => return Ok(tokio::net::TcpListener::from_std(socket)?),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the admin socket over; binding a new one")
            }
        }
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (admin)"))
}

/// The restart handoff: once this process serves (after the one it replaces, if any, was
/// told to drain), serves the handoff socket for its own successor; `took_over` fires when
/// one asks this process to drain.
async fn serve_handoff(
    path: PathBuf,
    parent: Option<Arc<mesh_proxy::restart::Parent>>,
    handle: mesh_proxy::runtime::ProxyHandle,
    admin: (SocketAddr, std::os::fd::OwnedFd),
    took_over: tokio::sync::oneshot::Sender<()>,
) {
    use mesh_proxy::restart;
    if parent.is_some() {
        handle.wait_serving().await;
        for listener in handle.listeners().values() {
            if let mesh_proxy::runtime::ListenerState::Failed { error } = &listener.state {
                tracing::warn!(listener = %listener.name, %error, "taking over without this listener");
            }
        }
    }
    // Bound (renamed over the old one's) before the old process is told to drain, so that
    // the path always leads to a process that can hand the sockets on.
    let listener = restart::bind(&path);
    if let Some(parent) = parent {
        match parent.drain().await {
            Ok(()) => tracing::info!("serving every listener; the replaced proxy drains"),
            Err(e) => tracing::warn!(error = %e, "could not tell the replaced proxy to drain"),
        }
    }
    let listener = match listener {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot bind the restart socket; a new process cannot take over from this one");
            return;
        }
    };
    tracing::info!(path = %path.display(), "restart socket listening");
    let first_started_at = handle.first_started_at();
    let (admin_addr, admin_fd) = admin;
    let sockets: restart::Sockets = Arc::new(move |addr| {
        if addr == admin_addr {
            return admin_fd.try_clone().ok();
        }
        handle
            .listening_socket(addr)
            .and_then(|socket| socket.as_fd().try_clone_to_owned().ok())
    });
    restart::serve(listener, sockets, first_started_at, took_over).await;
}

fn envoy_bootstrap(args: BootstrapArgs) -> anyhow::Result<()> {
    let (xds_host, xds_port) = args
        .xds_addr
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_matches(['[', ']']).to_string(),
                p.parse::<u16>().ok()?,
            ))
        })
        .with_context(|| format!("--xds-addr must be host:port, got {:?}", args.xds_addr))?;
    let yaml =
        mesh_control_plane::bootstrap::render(&mesh_control_plane::bootstrap::BootstrapOptions {
            cluster: args.cluster.unwrap_or_else(|| args.proxy_id.clone()),
            proxy_id: args.proxy_id,
            xds_host,
            xds_port,
            admin_host: args.admin_addr.ip().to_string(),
            admin_port: args.admin_addr.port(),
            delta: args.delta,
        })?;
    print!("{yaml}");
    Ok(())
}

/// Runs a server until it ends or SIGINT/SIGTERM starts its drain (each server bounds its
/// own drain with a deadline).
async fn until_signal<F: std::future::Future>(
    server: impl FnOnce(mesh_drain::Watch) -> F,
) -> F::Output {
    let (stop, drain) = mesh_drain::channel();
    let server = server(drain);
    tokio::pin!(server);
    tokio::select! {
        out = &mut server => return out,
        () = shutdown_signal() => tracing::info!("signal received; shutting down"),
    }
    stop.start();
    server.await
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
