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

/// Keeps an ADS stream to the server open for ever (reconnecting with capped exponential
/// backoff), publishing every accepted configuration through `updates`. While the server is
/// away the last published configuration stays in force. Returns only when `options.server`
/// is not a URI (the error is logged and kept in `stats`).
pub async fn run(
    options: XdsOptions,
    updates: watch::Sender<Arc<ProxyConfig>>,
    stats: Arc<XdsStats>,
) {
    client::run(options, updates, stats).await
}
