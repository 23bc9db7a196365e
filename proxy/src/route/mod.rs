//! Request routing, as Envoy's router does it: the virtual host by domain, then the first route
//! whose match holds, then (for weighted targets) a cluster by weight, and the request's hash
//! for the hashing balancers.
//!
//! Header names seen by matchers and hash policies are what Envoy's header map holds:
//! `:method`, `:path` (with the query string), `:authority` and `:scheme` are the
//! pseudo-headers; `host` is absent, because Envoy keeps the HTTP/1 `Host` header only as
//! `:authority`; a repeated header reads as its values joined with `,`. `:scheme` is always
//! `http`: the proxy terminates no TLS.

mod hash;
mod matcher;
mod vhost;

use crate::config::{HashPolicy, Route, RouteConfig, VirtualHost, WeightedCluster};
use std::borrow::Cow;
use std::net::SocketAddr;

pub use matcher::string_matches;

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
///
/// Domains compare ASCII case-insensitively and a wildcard never matches an empty part
/// (`*.a.com` does not match `.a.com`). When no domain of `config` carries a port, the port
/// is stripped from `authority` before matching. When some domain does, `authority` is
/// matched as given (so `a.com:8080` selects the domain `a.com:8080`), and only if nothing
/// matches is it matched again without its port.
pub fn select_virtual_host<'a>(
    config: &'a RouteConfig,
    authority: &str,
) -> Option<&'a VirtualHost> {
    vhost::select(&config.virtual_hosts, authority)
}

/// The first route of `vh` whose match holds.
///
/// A route matches when its path matcher, every header matcher and every query parameter
/// matcher hold. Path matching follows Envoy: `prefix` applies to the whole `:path`, query
/// string included; `path` (exact) and `safe_regex` apply to the path with the query string
/// and fragment removed; `case_sensitive: false` makes prefix and exact ASCII
/// case-insensitive (it does not affect regexes).
pub fn match_route<'a>(vh: &'a VirtualHost, req: &RequestView<'_>) -> Option<&'a Route> {
    matcher::first_match(&vh.routes, req)
}

/// Picks a weighted cluster with `random` uniformly drawn by the caller. `clusters` is non-empty.
///
/// As Envoy: `random % total_weight` falls into one cluster's share of the cumulative
/// weights, in order; zero-weight clusters are never picked; `None` when all weights are 0.
pub fn pick_weighted(clusters: &[WeightedCluster], random: u64) -> Option<&WeightedCluster> {
    let total: u64 = clusters.iter().map(|c| u64::from(c.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut point = random % total;
    for cluster in clusters {
        let weight = u64::from(cluster.weight);
        if point < weight {
            return Some(cluster);
        }
        point -= weight;
    }
    None
}

/// The request's hash for hashing balancers, from the route's hash policies; `None` when no
/// policy yields a value (the balancer then picks at random).
///
/// Envoy's combination: policies are evaluated in order; each value is XORed into the
/// running hash rotated left by one bit; evaluation stops at a `terminal` policy once some
/// hash exists. A cookie policy whose cookie is absent yields nothing even with a `ttl`
/// (Envoy would generate the cookie; the caller decides whether to).
pub fn request_hash(policies: &[HashPolicy], req: &RequestView<'_>) -> Option<u64> {
    hash::request_hash(policies, req)
}

/// The value matchers see for header `name` (lower-case); see the module docs.
fn header_value<'a>(req: &RequestView<'a>, name: &str) -> Option<Cow<'a, [u8]>> {
    if let Some(value) = pseudo_header(req, name) {
        return Some(Cow::Borrowed(value));
    }
    if name == "host" || name.starts_with(':') {
        return None;
    }
    let mut values = req.headers.get_all(name).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first.as_bytes()));
    };
    let mut joined = first.as_bytes().to_vec();
    for value in std::iter::once(second).chain(values) {
        joined.push(b',');
        joined.extend_from_slice(value.as_bytes());
    }
    Some(Cow::Owned(joined))
}

fn pseudo_header<'a>(req: &RequestView<'a>, name: &str) -> Option<&'a [u8]> {
    match name {
        ":method" => Some(req.method.as_str().as_bytes()),
        ":path" => Some(req.path_and_query.as_bytes()),
        ":authority" => Some(req.authority.as_bytes()),
        ":scheme" => Some(b"http"),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
