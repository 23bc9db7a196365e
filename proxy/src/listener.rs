//! Accept loops: one task per listener, one task and one tracing span per connection,
//! TCP_NODELAY, a global limit on concurrent downstream connections, and drain with a
//! deadline (stop accepting, let connections finish, then close what is left).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::config::Listener;
use crate::filter::network::{Admitted, NetworkChain};
use crate::http::HttpListener;
use crate::metrics::ListenerStats;
use crate::state::Shared;
use crate::tcp::TcpProxyListener;

/// A listener generation's lifecycle, watched by its accept loop and its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    Running,
    /// Stop accepting; connections finish what they are doing (HTTP/1.1 closes after the
    /// in-flight response, HTTP/2 sends GOAWAY, TCP keeps copying).
    Draining,
    /// The drain deadline passed: close now.
    Abort,
}

/// Resolves when `drain` says abort (or its listener is gone).
pub(crate) async fn aborted(drain: &mut watch::Receiver<Drain>) {
    let _ = drain.wait_for(|d| *d == Drain::Abort).await;
}

/// What a listener does with its connections.
#[derive(Clone)]
pub(crate) enum Protocol {
    Http(Arc<HttpListener>),
    Tcp(Arc<TcpProxyListener>),
}

/// Connections of one listener generation still open.
#[derive(Debug, Default)]
struct ConnTracker {
    active: AtomicUsize,
    none_left: Notify,
}

impl ConnTracker {
    async fn wait_empty(&self) {
        loop {
            let notified = self.none_left.notified();
            if self.active.load(Relaxed) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Held by a connection's task for its lifetime: its slot under the global limit, its place
/// in the listener's drain accounting, and the listener's active-connection gauge.
#[derive(Debug)]
pub(crate) struct ConnGuard {
    tracker: Arc<ConnTracker>,
    stats: Arc<ListenerStats>,
    _permit: OwnedSemaphorePermit,
    /// Its place in the counts of the listener's network filters.
    pub(crate) network: Option<Admitted>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.stats.downstream_cx_active.dec();
        if self.tracker.active.fetch_sub(1, Relaxed) == 1 {
            self.tracker.none_left.notify_waiters();
        }
    }
}

/// A started listener: its socket, accept task and drain control.
pub(crate) struct RunningListener {
    pub config: Arc<Listener>,
    pub protocol: Protocol,
    pub socket: Arc<TcpListener>,
    pub local_addr: SocketAddr,
    drain: watch::Sender<Drain>,
    tracker: Arc<ConnTracker>,
    accept: JoinHandle<()>,
}

impl RunningListener {
    /// Starts accepting on `socket` (a fresh bind, or the socket of the generation this one
    /// replaces, so no connection attempt is refused during the switch).
    pub fn start(
        shared: Arc<Shared>,
        config: Arc<Listener>,
        socket: Arc<TcpListener>,
        protocol: Protocol,
        stats: Arc<ListenerStats>,
    ) -> std::io::Result<RunningListener> {
        let local_addr = socket.local_addr()?;
        let (drain, drain_rx) = watch::channel(Drain::Running);
        let tracker = Arc::new(ConnTracker::default());
        let name: Arc<str> = Arc::from(config.name.as_str());
        let span = tracing::info_span!("listener", listener = %name, addr = %local_addr);
        let network = NetworkChain::build(&config.network_filters, &shared.stats);
        let accept = tokio::spawn(
            accept_loop(
                shared,
                Arc::clone(&socket),
                network,
                protocol.clone(),
                stats,
                Arc::clone(&tracker),
                drain_rx,
            )
            .instrument(span),
        );
        Ok(RunningListener {
            config,
            protocol,
            socket,
            local_addr,
            drain,
            tracker,
            accept,
        })
    }

    /// Stops accepting and drains: connections get `deadline` to finish, then are closed.
    /// The returned task ends when every connection is gone.
    pub fn drain(self, deadline: Duration) -> JoinHandle<()> {
        let RunningListener {
            config,
            socket,
            drain,
            tracker,
            accept,
            ..
        } = self;
        drop(socket);
        tokio::spawn(async move {
            let _ = drain.send(Drain::Draining);
            // Once the accept loop is gone every accepted connection is tracked.
            let _ = accept.await;
            if tokio::time::timeout(deadline, tracker.wait_empty())
                .await
                .is_err()
            {
                tracing::info!(
                    listener = %config.name,
                    open = tracker.active.load(Relaxed),
                    "drain deadline passed; closing the remaining connections"
                );
                let _ = drain.send(Drain::Abort);
                let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait_empty()).await;
            }
        })
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    socket: Arc<TcpListener>,
    network: Option<Arc<NetworkChain>>,
    protocol: Protocol,
    stats: Arc<ListenerStats>,
    tracker: Arc<ConnTracker>,
    mut drain: watch::Receiver<Drain>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = drain.changed() => break,
            accepted = socket.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&shared.conn_limit).try_acquire_owned() else {
            stats.downstream_global_cx_overflow.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        stats.downstream_cx_total.inc();
        stats.downstream_cx_active.inc();
        tracker.active.fetch_add(1, Relaxed);
        let guard = ConnGuard {
            tracker: Arc::clone(&tracker),
            stats: Arc::clone(&stats),
            _permit: permit,
            network: None,
        };
        // Network filters before the terminal one (`crate::filter::network`).
        let Some((stream, guard)) =
            crate::filter::network::on_new_connection(network.as_ref(), stream, guard, &drain)
        else {
            continue;
        };
        // Debug level: an enabled span is entered and left on every poll of the connection, a
        // cost per request that only debugging should pay.
        let span = tracing::debug_span!("conn", %peer);
        let conn_drain = drain.clone();
        match &protocol {
            Protocol::Http(http) => tokio::spawn(
                crate::http::serve_connection(
                    Arc::clone(&shared),
                    Arc::clone(http),
                    stream,
                    peer,
                    conn_drain,
                    guard,
                )
                .instrument(span),
            ),
            Protocol::Tcp(tcp) => tokio::spawn(
                crate::tcp::proxy_connection(
                    Arc::clone(&shared),
                    Arc::clone(tcp),
                    stream,
                    conn_drain,
                    guard,
                )
                .instrument(span),
            ),
        };
    }
    tracing::debug!("stopped accepting");
}
