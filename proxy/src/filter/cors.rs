//! `envoy.filters.http.cors`, as Envoy runs it (`cors_filter.cc`):
//! - Policies come from the route's per-filter configs for this filter's name, most specific
//!   first (weighted cluster, route, virtual host, route configuration); when there are none,
//!   from the deprecated inline `cors` of the route action, then of the virtual host. Each
//!   field is taken from the first policy that sets it; whether the filter is enabled
//!   (`filter_enabled`, `shadow_enabled`) only from the first policy.
//! - Only routes that forward have a CORS policy in Envoy (a direct response or a redirect
//!   has no route entry): the filter leaves their requests alone.
//! - A request with a non-empty `Origin` is a CORS request. Its origin is checked against the
//!   allowed ones (`http.<prefix>.cors.origin_valid` / `origin_invalid`, counted in shadow
//!   mode too). A preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered 200
//!   here, unless its origin is refused and `forward_not_matching_preflights` (default true)
//!   sends it on. The response to an allowed origin gets `Access-Control-Allow-Origin` (the
//!   origin), `-Allow-Credentials` and `-Expose-Headers`.

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};

use crate::config::{CorsPolicy, FilterConfig, Fraction, RouteAction};
use crate::http::body::{DownstreamBody, ResponseBody};
use crate::http::headers::Levels;
use crate::http::local_reply::local_reply;
use crate::metrics::CorsStats;
use crate::route::string_matches;

static ACCESS_CONTROL_REQUEST_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-request-private-network");
static ACCESS_CONTROL_ALLOW_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-allow-private-network");

/// What the response to an allowed origin gets.
#[derive(Debug)]
pub(crate) struct Latched {
    origin: HeaderValue,
    credentials: bool,
    expose_headers: Option<HeaderValue>,
}

impl Latched {
    pub(crate) fn on_response(&self, headers: &mut HeaderMap) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.origin.clone());
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose_headers {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

/// The policies that apply, most specific first (at most one per level).
struct Policies<'a> {
    list: [Option<&'a CorsPolicy>; 4],
}

impl<'a> Policies<'a> {
    fn of(name: &'a str, levels: &Levels<'a>, inline: Option<&'a CorsPolicy>) -> Policies<'a> {
        let mut list = [None; 4];
        let typed = super::per_filter(levels, name).filter_map(|config| match config {
            FilterConfig::Cors(policy) => Some(&**policy),
            FilterConfig::Disabled | FilterConfig::Enabled => None,
        });
        for (slot, policy) in list.iter_mut().zip(typed) {
            *slot = Some(policy);
        }
        if list[0].is_none() {
            // Only when no level has a per-filter policy (Envoy ignores the inline ones then).
            list = [inline, levels.vhost.cors.as_deref(), None, None];
            if list[0].is_none() {
                list.swap(0, 1);
            }
        }
        Policies { list }
    }

    fn iter(&self) -> impl Iterator<Item = &'a CorsPolicy> + '_ {
        self.list.iter().flatten().copied()
    }

    /// The field from the first policy that sets it.
    fn first<T>(&self, field: impl Fn(&'a CorsPolicy) -> Option<T>) -> Option<T> {
        self.iter().find_map(field)
    }

    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        let allowed = self
            .iter()
            .map(|p| &p.allow_origin)
            .find(|list| !list.is_empty());
        let origin = origin.to_str().ok();
        allowed.is_some_and(|list| {
            list.iter()
                .any(|m| string_matches(m, "*") || origin.is_some_and(|o| string_matches(m, o)))
        })
    }
}

/// Envoy's `featureEnabled` on a fractional percent without a runtime value.
fn sampled(fraction: Fraction) -> bool {
    fraction.numerator >= fraction.denominator
        || fastrand::u32(0..fraction.denominator) < fraction.numerator
}

/// The request side: `latched` is set when the origin is allowed; `Some` is a preflight
/// answered here.
pub(crate) fn on_request(
    name: &str,
    levels: &Levels<'_>,
    req: &Request<DownstreamBody>,
    stats: &CorsStats,
    latched: &mut Option<Latched>,
) -> Option<Response<ResponseBody>> {
    let RouteAction::Forward(action) = &levels.route.action else {
        return None;
    };
    let policies = Policies::of(name, levels, action.cors.as_deref());
    let most_specific = policies.list[0]?;
    let enabled = most_specific.filter_enabled.is_none_or(sampled);
    let shadow = most_specific.shadow_enabled.is_some_and(sampled);
    if !enabled && !shadow {
        return None;
    }
    let headers = req.headers();
    let origin = headers.get(ORIGIN).filter(|o| !o.is_empty())?;
    let allowed = policies.origin_allowed(origin);
    if allowed {
        stats.origin_valid.inc();
    } else {
        stats.origin_invalid.inc();
    }
    if !enabled {
        return None;
    }
    let credentials = policies.first(|p| p.allow_credentials).unwrap_or(false);
    if allowed {
        *latched = Some(Latched {
            origin: origin.clone(),
            credentials,
            expose_headers: policies.first(|p| p.expose_headers.clone()),
        });
    }
    if req.method() != Method::OPTIONS {
        return None;
    }
    let request_method = headers
        .get(ACCESS_CONTROL_REQUEST_METHOD)
        .filter(|m| !m.is_empty())?;
    if !allowed
        && policies
            .first(|p| p.forward_not_matching_preflights)
            .unwrap_or(true)
    {
        return None;
    }

    let mut response = local_reply(StatusCode::OK, Bytes::new(), false);
    let out = response.headers_mut();
    if allowed {
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    if credentials {
        out.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    // `*` echoes what the preflight asks for.
    if let Some(methods) = policies.first(|p| p.allow_methods.as_ref()) {
        let value = if methods == "*" {
            request_method
        } else {
            methods
        };
        out.insert(ACCESS_CONTROL_ALLOW_METHODS, value.clone());
    }
    if let Some(allow) = policies.first(|p| p.allow_headers.as_ref()) {
        let value = if allow == "*" {
            headers
                .get(ACCESS_CONTROL_REQUEST_HEADERS)
                .cloned()
                .unwrap_or_else(|| HeaderValue::from_static(""))
        } else {
            allow.clone()
        };
        out.insert(ACCESS_CONTROL_ALLOW_HEADERS, value);
    }
    if let Some(max_age) = policies.first(|p| p.max_age.as_ref()) {
        out.insert(ACCESS_CONTROL_MAX_AGE, max_age.clone());
    }
    if policies
        .first(|p| p.allow_private_network_access)
        .unwrap_or(false)
        && headers
            .get(&ACCESS_CONTROL_REQUEST_PRIVATE_NETWORK)
            .is_some_and(|v| v == "true")
    {
        out.insert(
            ACCESS_CONTROL_ALLOW_PRIVATE_NETWORK.clone(),
            HeaderValue::from_static("true"),
        );
    }
    Some(response)
}
