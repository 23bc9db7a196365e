//! The ADS client and the conversion of xDS resources into [`crate::config`]. (Being written.)

pub mod stats;

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
/// away the last published configuration stays in force.
pub async fn run(
    options: XdsOptions,
    updates: watch::Sender<Arc<ProxyConfig>>,
    stats: Arc<XdsStats>,
) {
    let _ = (options, updates, stats);
    std::future::pending::<()>().await
}
