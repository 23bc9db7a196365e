//! The ADS client and the conversion of xDS resources into [`crate::config`].
//!
//! | file | what |
//! |---|---|
//! | `convert/` | protos -> config types, validated (what is supported, ignored, rejected) |
//! | `store.rs` | accepted resources per type; the `ProxyConfig` built from them |
//! | `client.rs` | connection, reconnect backoff, the per-stream driver |
//! | `sotw.rs`, `delta.rs` | the two ADS variants' request/ACK/NACK logic |
//! | `stats.rs` | Envoy-style counters |

mod client;
pub mod convert;
mod delta;
mod sotw;
pub mod stats;
mod store;

use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

use crate::config::ProxyConfig;
pub use stats::XdsStats;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdsMode {
    Sotw,
    Delta,
}

#[derive(Debug, Clone)]
pub struct XdsOptions {
    /// The proxy's `node.id` (its connect-proxy service ID).
    pub node_id: String,
    /// `node.cluster`.
    pub cluster: String,
    /// The ADS server, e.g. `http://127.0.0.1:18000`.
    pub server: String,
    pub mode: XdsMode,
}

/// What the runtime made of a configuration the client published. Before answering an LDS
/// response the client waits for the report on the configuration it published, so that a
/// listener that cannot bind is NACKed, as Envoy does, rather than ACKed and left dead.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// The configuration applied (the client compares it by `Arc::ptr_eq`).
    pub config: Arc<ProxyConfig>,
    /// Listeners of `config` this apply could not start, with Envoy's error text
    /// (`cannot bind '127.0.0.1:80': Address already in use`). A listener already running
    /// that was moved to an address it cannot bind keeps serving on its old one.
    pub failed_listeners: BTreeMap<String, String>,
}

/// Keeps an ADS stream to the server open for ever (reconnecting with capped exponential
/// backoff), publishing every accepted configuration through `updates`. While the server is
/// away the last published configuration stays in force. With `applied` (the runtime's
/// reports, [`crate::runtime::ProxyHandle::apply_reports`]) an LDS response is answered once
/// its listeners are started, and NACKed when one cannot bind; without it, as soon as the
/// response is converted. Returns only when `options.server` is not a URI (the error is
/// logged and kept in `stats`).
pub async fn run(
    options: XdsOptions,
    updates: watch::Sender<Arc<ProxyConfig>>,
    applied: Option<watch::Receiver<ApplyReport>>,
    stats: Arc<XdsStats>,
) {
    client::run(options, updates, applied, stats).await
}
