//! The filter chains: HTTP filters ahead of the router, and network filters ahead of the
//! terminal network filter (the HTTP connection manager or the TCP proxy).
//!
//! The filters we run are an enum of known filters with a `match` per hook, not trait
//! objects. We implement every filter ourselves and validate its configuration at the proto
//! boundary, so the set is closed; a request's filter state ([`Run`]) has a known size and
//! lives in the request's future (no allocation, no vtable); and the async step the next
//! filters need (fault injection's delay) is a `match` arm awaited in place, where a `dyn`
//! filter would box a future per call.
//!
//! An HTTP request, in Envoy's order:
//! 1. The router's half of routing: virtual host, route, weighted cluster. As in Envoy the
//!    chain is made for the route first matched, so a filter disabled or enabled per route
//!    (`typed_per_filter_config`, the most specific level wins) is decided then.
//! 2. Request side, in chain order ([`HttpChain::on_request`]): each filter sees the request
//!    head and may answer locally (built by `crate::http::local_reply`, from what `crate::error` decides). A local answer goes
//!    back through the response side of the filters that ran, and not through the route's
//!    header changes (those are the router's, which did not run).
//! 3. The router: forward, direct response, redirect, or its own local reply.
//! 4. Response side, in reverse chain order ([`Run::on_response`]), after the route's
//!    response header changes (`Levels::mutate_response`).
//!
//! Room for the next filters: RBAC and local rate limits decide in step 2 (a local 403/429);
//! fault injection aborts there, and delays by awaiting in step 2 before the next filter;
//! tracing reads the request head in step 2 and needs the end of the stream, as access logs
//! do. [`Run`] owns what it keeps (no borrow of the snapshot) so that a filter told of the
//! end of the stream can move its part of it into the response body, next to the request's
//! accounting guard (`ResponseBody::attach`), whose drop is that end. A filter that changes
//! request headers makes the router re-read what routing read of them (the view, the request
//! facts); today's filters only read them, so the request is lent shared.
//!
//! An HCM whose only filter is the router has no chain (`None`): a request pays one branch.
//! Network filters run when a connection is accepted ([`network`]).

pub(crate) mod cors;
pub(crate) mod network;

use std::sync::Arc;

use http::{HeaderMap, Request, Response};

use crate::config::{FilterConfig, HttpFilter, HttpFilterKind};
use crate::http::body::{DownstreamBody, ResponseBody};
use crate::http::headers::Levels;
use crate::metrics::{CorsStats, Registry};

/// One HTTP listener's filters before the router.
#[derive(Debug)]
pub(crate) struct HttpChain {
    filters: Box<[ChainFilter]>,
}

#[derive(Debug)]
struct ChainFilter {
    name: String,
    disabled: bool,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Cors(Arc<CorsStats>),
}

impl HttpChain {
    /// `None` when the router is the only filter.
    pub(crate) fn build(
        filters: &[HttpFilter],
        registry: &Registry,
        stat_prefix: &str,
    ) -> Option<HttpChain> {
        if filters.is_empty() {
            return None;
        }
        let filters = filters
            .iter()
            .map(|f| ChainFilter {
                name: f.name.clone(),
                disabled: f.disabled,
                kind: match f.kind {
                    HttpFilterKind::Cors => Kind::Cors(registry.cors(stat_prefix)),
                },
            })
            .collect();
        Some(HttpChain { filters })
    }

    /// The request side, in chain order, noting in `run` what the response side needs.
    /// `Some` is a local answer, already through the response side of the filters that ran.
    pub(crate) fn on_request(
        &self,
        levels: &Levels<'_>,
        req: &Request<DownstreamBody>,
        run: &mut Run,
    ) -> Option<Response<ResponseBody>> {
        for filter in self.filters.iter() {
            if !enabled(filter, levels) {
                continue;
            }
            let answer = match &filter.kind {
                Kind::Cors(stats) => {
                    cors::on_request(&filter.name, levels, req, stats, &mut run.cors)
                }
            };
            if let Some(mut answer) = answer {
                run.on_response(answer.headers_mut());
                return Some(answer);
            }
        }
        None
    }
}

/// Whether a filter runs for this request: the most specific level that names it decides
/// (a `FilterConfig { disabled: true }` turns it off, any other config turns it on), else
/// the filter's own `disabled`.
fn enabled(filter: &ChainFilter, levels: &Levels<'_>) -> bool {
    match per_filter(levels, &filter.name).next() {
        Some(FilterConfig::Disabled) => false,
        Some(FilterConfig::Enabled | FilterConfig::Cors(_)) => true,
        None => !filter.disabled,
    }
}

/// The per-filter configs the levels hold for the filter named `name`, most specific first:
/// weighted cluster, route, virtual host, route configuration (Envoy's order).
pub(crate) fn per_filter<'a>(
    levels: &Levels<'a>,
    name: &'a str,
) -> impl Iterator<Item = &'a FilterConfig> + 'a {
    [
        levels.weighted.map(|w| &w.filter_configs),
        Some(&levels.route.filter_configs),
        Some(&levels.vhost.filter_configs),
        Some(&levels.config.filter_configs),
    ]
    .into_iter()
    .flatten()
    .filter_map(move |configs| configs.get(name))
}

/// What the filters that ran on a request left for its response side. One field per kind
/// of filter: a chain holds at most one filter of each kind (checked at conversion).
#[derive(Debug, Default)]
pub struct Run {
    cors: Option<cors::Latched>,
}

impl Run {
    /// Whether the response side changes response headers.
    pub fn mutates_response(&self) -> bool {
        self.cors.is_some()
    }

    /// The response side, in reverse chain order.
    pub fn on_response(&self, headers: &mut HeaderMap) {
        if let Some(latched) = &self.cors {
            latched.on_response(headers);
        }
    }
}

#[cfg(test)]
mod tests;
