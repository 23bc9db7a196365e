//! The TCP proxy: pick a cluster (or one of weighted clusters) and an endpoint, connect
//! within the cluster's connect timeout, then copy bytes both ways unchanged, honouring
//! half-close, until both sides are done, the idle timeout passes or the drain deadline hits.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::{TcpProxy, TcpTarget};
use crate::listener::ConnGuard;
use crate::metrics::TcpStats;
use crate::state::Shared;

pub(crate) struct TcpProxyListener {
    pub config: Arc<TcpProxy>,
    pub stats: Arc<TcpStats>,
}

/// Weighted pick among `(cluster, weight)`; zero weights never win.
fn pick_cluster(target: &TcpTarget) -> Option<&str> {
    match target {
        TcpTarget::Cluster(name) => Some(name),
        TcpTarget::Weighted(clusters) => {
            let total: u64 = clusters.iter().map(|(_, w)| u64::from(*w)).sum();
            if total == 0 {
                return None;
            }
            let mut point = fastrand::u64(0..total);
            for (name, weight) in clusters {
                let weight = u64::from(*weight);
                if point < weight {
                    return Some(name);
                }
                point -= weight;
            }
            None
        }
    }
}

/// A stream that notes the time of its last successful read, for the idle timeout.
struct Tracked<'a> {
    io: TcpStream,
    last: &'a AtomicU64,
    epoch: Instant,
}

impl Tracked<'_> {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Relaxed);
    }
}

impl AsyncRead for Tracked<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.touch();
        }
        result
    }
}

impl AsyncWrite for Tracked<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

pub(crate) async fn proxy_connection(
    shared: Arc<Shared>,
    listener: Arc<TcpProxyListener>,
    downstream: TcpStream,
    mut drain: mesh_drain::Watch,
    guard: ConnGuard,
) {
    let _guard = guard;
    let stats = &listener.stats;
    stats.downstream_cx_total.inc();
    let cluster = {
        let snapshot = shared.snapshot.load();
        pick_cluster(&listener.config.cluster)
            .and_then(|name| snapshot.clusters.get(name))
            .cloned()
    };
    let Some(cluster) = cluster else {
        stats.downstream_cx_no_route.inc();
        return;
    };
    let Some(picked) = cluster.pick(None, &[]) else {
        cluster.stats.upstream_cx_none_healthy.inc();
        return;
    };
    let Some(pool) = picked.cluster.upstream.endpoint(picked.index).cloned() else {
        return;
    };
    let _active = picked.cluster.balancer.start(picked.index);
    drop(cluster);
    let (upstream, _cx) = match pool.connect_tcp().await {
        Ok(connected) => connected,
        Err(error) => {
            tracing::debug!(%error, endpoint = %pool.addr, "TCP proxy connect failed");
            return;
        }
    };
    pool.stats.rq_total.inc();
    pool.stats.rq_active.inc();

    let epoch = Instant::now();
    let last = AtomicU64::new(0);
    let mut down = Tracked {
        io: downstream,
        last: &last,
        epoch,
    };
    let mut up = Tracked {
        io: upstream,
        last: &last,
        epoch,
    };
    let idle = listener.config.idle_timeout.filter(|d| !d.is_zero());
    let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
    tokio::pin!(copy);
    let check = tokio::time::sleep(idle.unwrap_or(std::time::Duration::from_secs(3600)));
    tokio::pin!(check);
    loop {
        tokio::select! {
            result = &mut copy => {
                match result {
                    Ok((rx, tx)) => {
                        stats.downstream_cx_rx_bytes_total.add(rx);
                        stats.downstream_cx_tx_bytes_total.add(tx);
                    }
                    Err(e) => tracing::debug!(error = %e, "TCP proxy connection ended with an error"),
                }
                break;
            }
            () = &mut check, if idle.is_some() => {
                let Some(idle) = idle else { continue };
                let idle_at = epoch + std::time::Duration::from_millis(last.load(Relaxed)) + idle;
                if Instant::now() >= idle_at {
                    stats.idle_timeout.inc();
                    break;
                }
                check.as_mut().reset(idle_at);
            }
            () = drain.aborted() => break,
        }
    }
    pool.stats.rq_active.dec();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_pick_follows_weights() {
        let target = TcpTarget::Weighted(vec![("a".into(), 1), ("b".into(), 3), ("z".into(), 0)]);
        let mut b = 0;
        for _ in 0..4000 {
            match pick_cluster(&target) {
                Some("b") => b += 1,
                Some("a") => {}
                other => panic!("unexpected pick {other:?}"),
            }
        }
        assert!((2700..3300).contains(&b), "{b}");
        assert_eq!(
            pick_cluster(&TcpTarget::Weighted(vec![("a".into(), 0)])),
            None
        );
    }
}
