//! Request routing: virtual host by domain, then the first matching route. (Being written.)

use crate::config::{HashPolicy, Route, RouteConfig, VirtualHost, WeightedCluster};
use std::net::SocketAddr;

/// What routing needs to see of a request.
pub struct RequestView<'a> {
    pub method: &'a http::Method,
    /// Path with query string, as received (`/a/b?x=1`).
    pub path_and_query: &'a str,
    /// Host header or :authority, port included if given.
    pub authority: &'a str,
    pub headers: &'a http::HeaderMap,
    pub source: SocketAddr,
}

/// Envoy's virtual host selection: exact domain, then longest suffix wildcard, then longest
/// prefix wildcard, then `*`. The port is ignored unless a domain names it.
pub fn select_virtual_host<'a>(
    config: &'a RouteConfig,
    authority: &str,
) -> Option<&'a VirtualHost> {
    let _ = authority;
    config.virtual_hosts.first()
}

/// The first route of `vh` whose match holds.
pub fn match_route<'a>(vh: &'a VirtualHost, req: &RequestView<'_>) -> Option<&'a Route> {
    let _ = req;
    vh.routes.first()
}

/// Picks a weighted cluster with `random` uniformly drawn by the caller. `clusters` is non-empty.
pub fn pick_weighted(clusters: &[WeightedCluster], random: u64) -> Option<&WeightedCluster> {
    let _ = random;
    clusters.first()
}

/// The request's hash for hashing balancers, from the route's hash policies; `None` when no
/// policy yields a value (the balancer then picks at random).
pub fn request_hash(policies: &[HashPolicy], req: &RequestView<'_>) -> Option<u64> {
    let _ = (policies, req);
    None
}
