//! Network filters ahead of the terminal one, run when a connection is accepted (Envoy's
//! `onNewConnection`), in order: each lets the connection through or refuses it, and the
//! filters after a refusing one do not see it.
//!
//! Only `envoy.filters.network.connection_limit` so far: at most `max_connections` of the
//! listener's connections at once go on to the terminal filter; the others count in
//! `connection_limit.<prefix>.limited_connections` and are closed, at once or after `delay`
//! (held unread meanwhile, and still counted as active, as in Envoy). RBAC and rate limits on
//! connections decide at the same point. Filters that need the bytes (RBAC on SNI, per-read
//! rate limits) will wrap the stream before the terminal filter gets it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::config::{ConnectionLimit, NetworkFilter};
use crate::listener::ConnGuard;
use crate::metrics::{ConnectionLimitStats, Registry};
use mesh_drain::Watch;

/// One listener generation's network filters, with their state (a listener replaced in
/// place starts new counts, as a new Envoy filter chain does).
#[derive(Debug)]
pub(crate) struct NetworkChain {
    limits: Box<[Limit]>,
}

#[derive(Debug)]
struct Limit {
    config: ConnectionLimit,
    /// Connections counted against `max_connections`, refused ones included until closed.
    connections: AtomicU64,
    stats: Arc<ConnectionLimitStats>,
}

impl NetworkChain {
    /// `None` when there are no network filters before the terminal one.
    pub(crate) fn build(
        filters: &[NetworkFilter],
        registry: &Registry,
    ) -> Option<Arc<NetworkChain>> {
        if filters.is_empty() {
            return None;
        }
        let limits = filters
            .iter()
            .map(|filter| match filter {
                NetworkFilter::ConnectionLimit(config) => Limit {
                    stats: registry.connection_limit(&config.stat_prefix),
                    config: config.clone(),
                    connections: AtomicU64::new(0),
                },
            })
            .collect();
        Some(Arc::new(NetworkChain { limits }))
    }

    /// Runs the filters on a new connection: `Err` when one refuses it. Either way the
    /// returned token undoes the counts when the connection ends.
    fn on_new_connection(self: &Arc<Self>) -> Result<Admitted, (Admitted, Option<Duration>)> {
        for (i, limit) in self.limits.iter().enumerate() {
            if !limit.config.enabled {
                continue;
            }
            limit.stats.active_connections.inc();
            let max = limit.config.max_connections;
            let admitted = limit
                .connections
                .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
                .is_ok();
            if !admitted {
                limit.stats.limited_connections.inc();
                // Counted anyway until it is closed, as Envoy does.
                limit.connections.fetch_add(1, Relaxed);
                let token = Admitted {
                    chain: Arc::clone(self),
                    counted: i + 1,
                };
                return Err((token, limit.config.delay.filter(|d| !d.is_zero())));
            }
        }
        Ok(Admitted {
            chain: Arc::clone(self),
            counted: self.limits.len(),
        })
    }
}

/// Held with the connection (in its [`ConnGuard`]): the counts of the filters it passed (or
/// that refused it) are taken back when it ends.
#[derive(Debug)]
pub(crate) struct Admitted {
    chain: Arc<NetworkChain>,
    counted: usize,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        for limit in self.chain.limits.iter().take(self.counted) {
            if limit.config.enabled {
                limit.connections.fetch_sub(1, Relaxed);
                limit.stats.active_connections.dec();
            }
        }
    }
}

/// The hook in the accept loop: the connection and its guard when the filters let it
/// through, `None` when one refused it (it is then closed here, after the filter's delay).
/// Without network filters this is one branch.
#[inline]
pub(crate) fn on_new_connection(
    chain: Option<&Arc<NetworkChain>>,
    stream: TcpStream,
    mut guard: ConnGuard,
    drain: &Watch,
) -> Option<(TcpStream, ConnGuard)> {
    let Some(chain) = chain else {
        return Some((stream, guard));
    };
    match chain.on_new_connection() {
        Ok(admitted) => {
            guard.network = Some(admitted);
            Some((stream, guard))
        }
        Err((admitted, delay)) => {
            guard.network = Some(admitted);
            tokio::spawn(refuse(stream, guard, delay, drain.clone()));
            None
        }
    }
}

/// Closes a refused connection, after `delay` (unread until then) unless the listener's
/// drain deadline comes first.
async fn refuse(stream: TcpStream, guard: ConnGuard, delay: Option<Duration>, mut drain: Watch) {
    if let Some(delay) = delay {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = drain.aborted() => {}
        }
    }
    tracing::debug!("connection refused by the connection limit");
    drop(stream);
    drop(guard);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(limits: &[(u64, bool)], registry: &Registry) -> Arc<NetworkChain> {
        let filters: Vec<NetworkFilter> = limits
            .iter()
            .enumerate()
            .map(|(i, &(max, enabled))| {
                NetworkFilter::ConnectionLimit(ConnectionLimit {
                    stat_prefix: format!("l{i}"),
                    max_connections: max,
                    delay: None,
                    enabled,
                })
            })
            .collect();
        NetworkChain::build(&filters, registry).unwrap()
    }

    #[test]
    fn at_most_max_connections_at_once_and_refused_ones_count_until_closed() {
        let registry = Registry::default();
        let chain = chain(&[(2, true)], &registry);
        let stats = registry.connection_limit("l0");
        let a = chain.on_new_connection().unwrap();
        let b = chain.on_new_connection().unwrap();
        let (refused, delay) = chain.on_new_connection().unwrap_err();
        assert_eq!(delay, None);
        assert_eq!(stats.limited_connections.get(), 1);
        assert_eq!(stats.active_connections.get(), 3);
        drop(a);
        // The refused one still holds a slot until it is closed.
        assert!(chain.on_new_connection().is_err());
        drop(refused);
        let c = chain.on_new_connection().unwrap();
        assert_eq!(stats.limited_connections.get(), 2);
        drop((b, c));
        assert_eq!(stats.active_connections.get(), 0);
        assert_eq!(chain.limits[0].connections.load(Relaxed), 0);
    }

    #[test]
    fn later_filters_do_not_see_refused_connections_and_disabled_ones_count_nothing() {
        let registry = Registry::default();
        let chain = chain(&[(5, false), (1, true), (1, true)], &registry);
        let first = chain.on_new_connection().unwrap();
        let refused = chain.on_new_connection().unwrap_err();
        assert_eq!(registry.connection_limit("l0").active_connections.get(), 0);
        assert_eq!(registry.connection_limit("l1").limited_connections.get(), 1);
        assert_eq!(registry.connection_limit("l2").active_connections.get(), 1);
        assert_eq!(registry.connection_limit("l2").limited_connections.get(), 0);
        drop((first, refused));
        for prefix in ["l0", "l1", "l2"] {
            assert_eq!(
                registry.connection_limit(prefix).active_connections.get(),
                0
            );
        }
    }
}
