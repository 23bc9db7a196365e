//! Accept loops: one task per listener generation, one task and one tracing span per
//! connection, TCP_NODELAY, a global limit on concurrent downstream connections (at which the
//! oldest connection that has not sent a whole request yet makes room), and drain with a
//! deadline ([`mesh_drain`]: stop accepting, let connections finish, then close what is left).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_drain::{Blocker, Drained, Signal, Watch};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::config::Listener;
use crate::filter::network::{Admitted, NetworkChain};
use crate::http::HttpListener;
use crate::metrics::ListenerStats;
use crate::state::Shared;
use crate::tcp::TcpProxyListener;

/// Envoy's default on Linux (`tcp_backlog_size` unset): `listen(fd, -1)`, which the kernel
/// reads as `net.core.somaxconn` (4096 on current kernels), rather than tokio's 1024. An
/// explicit size is capped by the same sysctl.
pub(crate) const DEFAULT_BACKLOG: u32 = u32::MAX;

/// A listening socket for `addr` with room for `backlog` connections not yet accepted.
#[cfg(test)]
pub(crate) fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    bind_only(addr)?.listen(backlog)
}

/// A socket bound to `addr` that does not listen yet: what a warming listener holds, so that
/// an address taken by someone else is found when the listener is configured (and the update
/// NACKed), while connections are refused until it serves, as with Envoy.
pub(crate) fn bind_only(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted proxy can bind while old connections linger
    // in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// Envoy's text for a listener that cannot bind: `cannot bind '127.0.0.1:80': Address
/// already in use` (the OS message without Rust's ` (os error 98)`).
pub(crate) fn bind_error(addr: SocketAddr, error: &io::Error) -> String {
    let text = error.to_string();
    let reason = match error.raw_os_error() {
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .unwrap_or(&text),
        None => &text,
    };
    format!("cannot bind '{addr}': {reason}")
}

/// What a listener does with its connections.
#[derive(Clone)]
pub(crate) enum Protocol {
    Http(Arc<HttpListener>),
    Tcp(Arc<TcpProxyListener>),
}

/// Connections that have not sent a complete request yet, oldest first. At the global
/// connection limit the oldest of them is closed to make room for a new one, so a client
/// that opens connections and sends nothing (or a partial head) cannot shut others out.
///
/// Cost: a lock and a map insert when such a connection is accepted, a lock and a remove
/// when its first request is complete (or it closes first); nothing per request.
#[derive(Debug, Default)]
pub(crate) struct Unproven {
    next_id: AtomicU64,
    state: Mutex<UnprovenState>,
}

#[derive(Debug, Default)]
struct UnprovenState {
    /// By accept order.
    conns: BTreeMap<u64, (AbortHandle, Arc<ListenerStats>)>,
    /// Closed since the last log line, and when that was: at most one line a second.
    shed_unlogged: u64,
    logged_at: Option<Instant>,
}

impl Unproven {
    fn lock(&self) -> std::sync::MutexGuard<'_, UnprovenState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove(&self, id: u64) {
        self.lock().conns.remove(&id);
    }

    /// Closes the oldest connection without a complete request; false when there is none.
    fn shed_oldest(&self) -> bool {
        let mut state = self.lock();
        let Some((_, (conn, stats))) = state.conns.pop_first() else {
            return false;
        };
        // Dropping the connection's task closes its socket and releases its slot.
        conn.abort();
        stats.downstream_cx_shed.inc();
        state.shed_unlogged += 1;
        let now = Instant::now();
        if state
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            tracing::warn!(
                closed = state.shed_unlogged,
                waiting = state.conns.len(),
                "connection limit reached: closed the oldest connections that had not sent a complete request"
            );
            state.shed_unlogged = 0;
            state.logged_at = Some(now);
        }
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().conns.len()
    }
}

/// Held by a connection's task for its lifetime: its slot under the global limit, its place
/// in its listener generation's drain, the listener's active-connection gauge, and, until its
/// first request is complete, its place among the connections that can be shed.
pub(crate) struct ConnGuard {
    stats: Arc<ListenerStats>,
    shared: Arc<Shared>,
    /// Its key in [`Unproven`]; 0 once its first request is complete (or for TCP).
    unproven: AtomicU64,
    _blocker: Blocker,
    _permit: OwnedSemaphorePermit,
    /// Its place in the counts of the listener's network filters.
    pub(crate) network: Option<Admitted>,
}

impl ConnGuard {
    /// The connection has sent a whole request (or an HTTP/2 preface): no longer shed at the
    /// connection limit. Called once per connection.
    pub(crate) fn request_seen(&self) {
        let id = self.unproven.swap(0, Relaxed);
        if id != 0 {
            self.shared.unproven.remove(id);
        }
    }
}

impl std::fmt::Debug for ConnGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnGuard")
            .field("unproven", &self.unproven)
            .finish_non_exhaustive()
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.request_seen();
        self.stats.downstream_cx_active.dec();
    }
}

/// A started listener generation: its socket, accept task and drain.
pub(crate) struct RunningListener {
    pub config: Arc<Listener>,
    pub protocol: Protocol,
    pub socket: Arc<TcpListener>,
    pub local_addr: SocketAddr,
    /// Its connections were told to drain while it keeps accepting (a failed health check or
    /// a graceful `/drain_listeners`): new connections start out draining too.
    pub drain_close: bool,
    drain: Signal,
    stop_accepting: oneshot::Sender<()>,
    accept: JoinHandle<()>,
}

impl RunningListener {
    /// Starts accepting on `socket` (a fresh bind, the socket of the generation this one
    /// replaces, or one inherited from the process this one replaces, so no connection
    /// attempt is refused during the switch).
    pub fn start(
        shared: Arc<Shared>,
        config: Arc<Listener>,
        socket: Arc<TcpListener>,
        protocol: Protocol,
        stats: Arc<ListenerStats>,
        drain_close: bool,
    ) -> io::Result<RunningListener> {
        let local_addr = socket.local_addr()?;
        let (drain, watch) = mesh_drain::channel();
        if drain_close {
            drain.start();
        }
        let (stop_accepting, stopped) = oneshot::channel();
        let span = tracing::info_span!("listener", listener = %config.name, addr = %local_addr);
        let network = NetworkChain::build(&config.network_filters, &shared.stats);
        let accept = tokio::spawn(
            accept_loop(
                shared,
                Arc::clone(&socket),
                network,
                protocol.clone(),
                stats,
                watch,
                stopped,
            )
            .instrument(span),
        );
        Ok(RunningListener {
            config,
            protocol,
            socket,
            local_addr,
            drain_close,
            drain,
            stop_accepting,
            accept,
        })
    }

    /// Tells its connections to drain (HTTP/1.1 answers `Connection: close`, HTTP/2 gets
    /// GOAWAY) while it keeps accepting; connections accepted from now on drain too.
    pub fn drain_connections(&mut self) {
        self.drain.start();
        self.drain_close = true;
    }

    /// Stops accepting and drains: connections get `deadline` to finish, then are closed.
    /// The returned task ends when every connection is gone; aborting it aborts the drain.
    pub fn stop(self, deadline: Duration) -> JoinHandle<()> {
        let RunningListener {
            config,
            socket,
            drain,
            stop_accepting,
            accept,
            ..
        } = self;
        drop(socket);
        let _ = stop_accepting.send(());
        tokio::spawn(async move {
            // Once the accept loop is gone every accepted connection holds a blocker.
            let _ = accept.await;
            if let Drained::Aborted { left } = drain.drain(deadline).await {
                tracing::info!(
                    listener = %config.name,
                    left,
                    "drain deadline passed; closed the remaining connections"
                );
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
    drain: Watch,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut stop => break,
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
        let Some(permit) = admit(&shared).await else {
            stats.downstream_global_cx_overflow.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        stats.downstream_cx_total.inc();
        stats.downstream_cx_active.inc();
        // Only HTTP connections wait for a request; a TCP proxy connection is never shed.
        let sheddable = matches!(protocol, Protocol::Http(_));
        let id = if sheddable {
            shared.unproven.next_id.fetch_add(1, Relaxed) + 1
        } else {
            0
        };
        let guard = ConnGuard {
            stats: Arc::clone(&stats),
            shared: Arc::clone(&shared),
            unproven: AtomicU64::new(id),
            _blocker: drain.blocker(),
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
        // Registered under the lock it is spawned under, so that the connection cannot
        // unregister (first request, or gone) before it is registered.
        let mut unproven = sheddable.then(|| shared.unproven.lock());
        let task = match &protocol {
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
        if let Some(unproven) = unproven.as_mut() {
            unproven
                .conns
                .insert(id, (task.abort_handle(), Arc::clone(&stats)));
        }
        drop(unproven);
    }
    tracing::debug!("stopped accepting");
}

/// A slot under the global connection limit: a free one, or the slot of the oldest
/// connection that has not sent a complete request, which is closed for it.
async fn admit(shared: &Shared) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = Arc::clone(&shared.conn_limit).try_acquire_owned() {
        return Some(permit);
    }
    if !shared.unproven.shed_oldest() {
        return None;
    }
    // The shed connection's slot comes back once its task is dropped, on its next turn.
    tokio::time::timeout(
        Duration::from_secs(1),
        Arc::clone(&shared.conn_limit).acquire_owned(),
    )
    .await
    .ok()?
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bind_listens_with_the_backlog_asked_for() {
        // Nothing accepts: the kernel completes handshakes until the accept queue holds
        // backlog + 1, and leaves the rest unanswered.
        let listener = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connects = tokio::task::JoinSet::new();
        for _ in 0..12 {
            connects.spawn(async move {
                tokio::time::timeout(
                    Duration::from_millis(1500),
                    tokio::net::TcpStream::connect(addr),
                )
                .await
            });
        }
        let mut connected = Vec::new();
        while let Some(result) = connects.join_next().await {
            if let Ok(Ok(stream)) = result.unwrap() {
                connected.push(stream);
            }
        }
        assert_eq!(connected.len(), 4);

        let listener = bind("127.0.0.1:0".parse().unwrap(), DEFAULT_BACKLOG).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut streams = Vec::new();
        for _ in 0..1100 {
            let stream =
                tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                    .await
                    .expect("the default backlog is larger than tokio's 1024")
                    .unwrap();
            streams.push(stream);
        }
    }

    #[test]
    fn unproven_connections_are_shed_oldest_first() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let unproven = Unproven::default();
            let stats = Arc::new(ListenerStats::default());
            let mut tasks = Vec::new();
            for id in 1..=3 {
                let task = tokio::spawn(std::future::pending::<()>());
                unproven
                    .lock()
                    .conns
                    .insert(id, (task.abort_handle(), Arc::clone(&stats)));
                tasks.push(task);
            }
            unproven.remove(2);
            assert!(unproven.shed_oldest());
            assert!(tasks.remove(0).await.unwrap_err().is_cancelled());
            assert!(unproven.shed_oldest());
            assert!(!unproven.shed_oldest());
            assert_eq!(unproven.len(), 0);
            assert_eq!(stats.downstream_cx_shed.get(), 2);
            // The one that had sent its request was left alone.
            assert!(!tasks[0].is_finished());
        });
    }
}
