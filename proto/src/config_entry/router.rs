//! `service-router`, plus the HTTP matchers and header modifiers that splitters and intentions
//! share with it.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::decode::one_of;
use super::{ConfigEntryError, invalid, is_false, is_zero_u32, key_path};
use crate::duration::opt_serde;

/// Routes are tried in order; a request matching none goes to the service itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct ServiceRouter {
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct Route {
    /// No match means every request.
    #[serde(rename = "Match", skip_serializing_if = "Option::is_none")]
    pub r#match: Option<RouteMatch>,
    /// No destination means the router's own service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<RouteDestination>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(rename = "HTTP", skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRouteMatch>,
}

/// All conditions must hold for the route to match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct HttpRouteMatch {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path_exact: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path_prefix: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path_regex: String,
    /// Not honoured yet: refused when true.
    #[serde(skip_serializing_if = "is_false")]
    pub case_insensitive: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header: Vec<HeaderMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_param: Vec<QueryParamMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

/// Exactly one of `Present`, `Exact`, `Prefix`, `Suffix`, `Regex` is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    #[serde(skip_serializing_if = "is_false")]
    pub present: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub exact: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub suffix: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub regex: String,
    #[serde(skip_serializing_if = "is_false")]
    pub invert: bool,
}

/// Exactly one of `Present`, `Exact`, `Regex` is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct QueryParamMatch {
    pub name: String,
    #[serde(skip_serializing_if = "is_false")]
    pub present: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub exact: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub regex: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct RouteDestination {
    /// Empty means the router's own service.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_subset: String,
    /// The one namespace and partition there are (`default`) or empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub partition: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub prefix_rewrite: String,
    #[serde(with = "opt_serde", skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<Duration>,
    #[serde(with = "opt_serde", skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub num_retries: u32,
    #[serde(skip_serializing_if = "is_false")]
    pub retry_on_connect_failure: bool,
    /// Envoy `retry_on` conditions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retry_on_status_codes: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderModifiers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderModifiers>,
}

/// `Add` appends a value, `Set` replaces any existing ones, `Remove` drops the header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct HeaderModifiers {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// The retry conditions Consul accepts (a subset of Envoy's `retry_on`).
const RETRY_CONDITIONS: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

impl ServiceRouter {
    pub(super) fn validate(&self) -> Result<(), ConfigEntryError> {
        for (i, route) in self.routes.iter().enumerate() {
            route.validate(&format!("Routes[{i}]"))?;
        }
        Ok(())
    }
}

impl Route {
    fn validate(&self, at: &str) -> Result<(), ConfigEntryError> {
        let http = self.r#match.as_ref().and_then(|m| m.http.as_ref());
        if let Some(http) = http {
            let at = format!("{at}.Match.HTTP");
            validate_paths(&at, &http.path_exact, &http.path_prefix, &http.path_regex)?;
            validate_header_matches(&at, &http.header)?;
            for (j, q) in http.query_param.iter().enumerate() {
                q.validate(&format!("{at}.QueryParam[{j}]"))?;
            }
            validate_methods(&at, &http.methods)?;
        }
        if let Some(dest) = &self.destination {
            let rewritable =
                http.is_some_and(|h| !h.path_exact.is_empty() || !h.path_prefix.is_empty());
            dest.validate(&format!("{at}.Destination"), rewritable)?;
        }
        Ok(())
    }
}

impl QueryParamMatch {
    fn validate(&self, at: &str) -> Result<(), ConfigEntryError> {
        if self.name.is_empty() {
            return Err(invalid(format!("{at}.Name"), "required"));
        }
        let set = [self.present, !self.exact.is_empty(), !self.regex.is_empty()];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(invalid(at, "set exactly one of Present, Exact, Regex"));
        }
        Ok(())
    }
}

impl RouteDestination {
    fn validate(&self, at: &str, rewritable: bool) -> Result<(), ConfigEntryError> {
        if !self.prefix_rewrite.is_empty() && !rewritable {
            return Err(invalid(
                format!("{at}.PrefixRewrite"),
                "needs PathExact or PathPrefix in the route's Match.HTTP",
            ));
        }
        if !self.service_subset.is_empty() {
            super::resolver::validate_subset_name(
                &format!("{at}.ServiceSubset"),
                &self.service_subset,
            )?;
        }
        for (j, cond) in self.retry_on.iter().enumerate() {
            if !RETRY_CONDITIONS.contains(&cond.as_str()) {
                return Err(invalid(
                    format!("{at}.RetryOn[{j}]"),
                    format!(
                        "unknown retry condition {cond:?} (use {})",
                        one_of(RETRY_CONDITIONS)
                    ),
                ));
            }
        }
        for (j, code) in self.retry_on_status_codes.iter().enumerate() {
            if !(100..=599).contains(code) {
                return Err(invalid(
                    format!("{at}.RetryOnStatusCodes[{j}]"),
                    format!("{code} is not an HTTP status code (100-599)"),
                ));
            }
        }
        validate_header_modifiers(
            &format!("{at}.RequestHeaders"),
            self.request_headers.as_ref(),
        )?;
        validate_header_modifiers(
            &format!("{at}.ResponseHeaders"),
            self.response_headers.as_ref(),
        )
    }
}

pub(super) fn validate_paths(
    at: &str,
    exact: &str,
    prefix: &str,
    regex: &str,
) -> Result<(), ConfigEntryError> {
    if [exact, prefix, regex]
        .iter()
        .filter(|p| !p.is_empty())
        .count()
        > 1
    {
        return Err(invalid(
            at,
            "at most one of PathExact, PathPrefix, PathRegex may be set",
        ));
    }
    for (field, value) in [("PathExact", exact), ("PathPrefix", prefix)] {
        if !value.is_empty() && !value.starts_with('/') {
            return Err(invalid(
                format!("{at}.{field}"),
                format!("must start with \"/\" (got {value:?})"),
            ));
        }
    }
    Ok(())
}

pub(super) fn validate_header_matches(
    at: &str,
    headers: &[HeaderMatch],
) -> Result<(), ConfigEntryError> {
    for (j, h) in headers.iter().enumerate() {
        let kinds = [
            h.present,
            !h.exact.is_empty(),
            !h.prefix.is_empty(),
            !h.suffix.is_empty(),
            !h.regex.is_empty(),
        ];
        validate_header_match(&format!("{at}.Header[{j}]"), &h.name, &kinds)?;
    }
    Ok(())
}

/// `kinds` says which of the matcher's kinds (`Present`, `Exact`, ...) are set.
pub(super) fn validate_header_match(
    at: &str,
    name: &str,
    kinds: &[bool],
) -> Result<(), ConfigEntryError> {
    if name.is_empty() {
        return Err(invalid(format!("{at}.Name"), "required"));
    }
    if kinds.iter().filter(|s| **s).count() != 1 {
        return Err(invalid(
            at,
            "set exactly one of Present, Exact, Prefix, Suffix, Regex",
        ));
    }
    Ok(())
}

/// Methods are matched against `:method` verbatim, so a lowercase one would never match.
pub(super) fn validate_methods(at: &str, methods: &[String]) -> Result<(), ConfigEntryError> {
    let mut seen = BTreeSet::new();
    for (j, method) in methods.iter().enumerate() {
        let at = format!("{at}.Methods[{j}]");
        if !is_token(method) {
            return Err(invalid(at, format!("invalid HTTP method {method:?}")));
        }
        if method.bytes().any(|b| b.is_ascii_lowercase()) {
            return Err(invalid(
                at,
                format!(
                    "invalid HTTP method {method:?} (methods are case-sensitive; use {:?})",
                    method.to_ascii_uppercase()
                ),
            ));
        }
        if !seen.insert(method.as_str()) {
            return Err(invalid(at, format!("{method:?} is listed more than once")));
        }
    }
    Ok(())
}

/// RFC 9110 `token`, the syntax of methods and header names.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Envoy refuses pseudo-headers (`:path`) and malformed names in header manipulation, and would
/// reject the whole route configuration, so they are caught here instead.
pub(super) fn validate_header_modifiers(
    at: &str,
    modifiers: Option<&HeaderModifiers>,
) -> Result<(), ConfigEntryError> {
    let Some(m) = modifiers else {
        return Ok(());
    };
    let check = |path: String, name: &str| {
        if is_token(name) {
            Ok(())
        } else {
            Err(invalid(path, format!("invalid header name {name:?}")))
        }
    };
    for name in m.add.keys() {
        check(key_path(&format!("{at}.Add"), name), name)?;
    }
    for name in m.set.keys() {
        check(key_path(&format!("{at}.Set"), name), name)?;
    }
    for (j, name) in m.remove.iter().enumerate() {
        check(format!("{at}.Remove[{j}]"), name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::ConfigEntry;
    use super::*;
    use serde_json::{Value, json};

    fn router(routes: Value) -> Result<ServiceRouter, String> {
        match ConfigEntry::from_json(
            json!({"Kind": "service-router", "Name": "web", "Routes": routes}),
        ) {
            Ok(ConfigEntry::ServiceRouter(r)) => Ok(r),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    fn http(m: Value) -> Result<ServiceRouter, String> {
        router(json!([{"Match": {"HTTP": m}}]))
    }

    fn dest(d: Value) -> Result<ServiceRouter, String> {
        router(json!([{"Match": {"HTTP": {"PathPrefix": "/api"}}, "Destination": d}]))
    }

    #[test]
    fn parses_a_full_router_from_snake_case() {
        let r = router(json!([{
            "match": {"http": {
                "path_prefix": "/api",
                "header": [{"name": "x-debug", "present": true, "invert": true}],
                "query_param": [{"name": "v", "exact": "2"}],
                "methods": ["GET", "POST"],
            }},
            "destination": {
                "service": "api", "service_subset": "v2", "prefix_rewrite": "/",
                "request_timeout": "5s", "idle_timeout": "1m", "num_retries": 3,
                "retry_on_connect_failure": true, "retry_on": ["5xx", "reset"],
                "retry_on_status_codes": [503],
                "request_headers": {"add": {"X-From": "mesh"}, "remove": ["x-internal"]},
                "response_headers": {"set": {"Cache-Control": "no-store"}},
            },
        }]))
        .unwrap();
        let route = &r.routes[0];
        let m = route.r#match.as_ref().unwrap().http.as_ref().unwrap();
        assert_eq!(m.path_prefix, "/api");
        assert_eq!(
            m.header[0],
            HeaderMatch {
                name: "x-debug".into(),
                present: true,
                invert: true,
                ..Default::default()
            }
        );
        assert_eq!(m.query_param[0].exact, "2");
        assert_eq!(m.methods, ["GET", "POST"]);
        let d = route.destination.as_ref().unwrap();
        assert_eq!(d.service, "api");
        assert_eq!(d.service_subset, "v2");
        assert_eq!(d.request_timeout, Some(Duration::from_secs(5)));
        assert_eq!(d.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(d.num_retries, 3);
        assert!(d.retry_on_connect_failure);
        assert_eq!(d.retry_on_status_codes, [503]);
        let req = d.request_headers.as_ref().unwrap();
        assert_eq!(req.add["X-From"], "mesh");
        assert_eq!(req.remove, ["x-internal"]);
        assert_eq!(
            d.response_headers.as_ref().unwrap().set["Cache-Control"],
            "no-store"
        );
    }

    #[test]
    fn routes_may_be_empty_or_match_everything() {
        assert!(router(json!([])).is_ok());
        assert!(router(json!([{"Destination": {"Service": "api"}}])).is_ok());
    }

    #[test]
    fn at_most_one_path_matcher() {
        assert!(http(json!({"PathRegex": "/v[0-9]+/.*"})).is_ok());
        assert_eq!(
            http(json!({"PathExact": "/a", "PathPrefix": "/b"})).unwrap_err(),
            "Routes[0].Match.HTTP: at most one of PathExact, PathPrefix, PathRegex may be set"
        );
        assert!(http(json!({"PathPrefix": "/b", "PathRegex": "x"})).is_err());
    }

    #[test]
    fn paths_start_with_a_slash() {
        assert!(http(json!({"PathExact": "/health"})).is_ok());
        assert_eq!(
            http(json!({"PathExact": "health"})).unwrap_err(),
            "Routes[0].Match.HTTP.PathExact: must start with \"/\" (got \"health\")"
        );
        assert_eq!(
            http(json!({"PathPrefix": "api"})).unwrap_err(),
            "Routes[0].Match.HTTP.PathPrefix: must start with \"/\" (got \"api\")"
        );
    }

    #[test]
    fn header_matchers_need_a_name_and_exactly_one_kind() {
        for ok in [
            json!({"Name": "x", "Present": true}),
            json!({"Name": "x", "Exact": "1"}),
            json!({"Name": "x", "Prefix": "a"}),
            json!({"Name": "x", "Suffix": "z"}),
            json!({"Name": "x", "Regex": "a.*", "Invert": true}),
        ] {
            assert!(http(json!({"Header": [ok.clone()]})).is_ok(), "{ok}");
        }
        assert_eq!(
            http(json!({"Header": [{"Name": "x", "Exact": "1"}, {"Exact": "1"}]})).unwrap_err(),
            "Routes[0].Match.HTTP.Header[1].Name: required"
        );
        let two = "Routes[0].Match.HTTP.Header[0]: set exactly one of Present, Exact, Prefix, Suffix, Regex";
        assert_eq!(
            http(json!({"Header": [{"Name": "x", "Exact": "1", "Prefix": "a"}]})).unwrap_err(),
            two
        );
        assert_eq!(
            http(json!({"Header": [{"Name": "x", "Present": true, "Regex": "a"}]})).unwrap_err(),
            two
        );
        assert_eq!(http(json!({"Header": [{"Name": "x"}]})).unwrap_err(), two);
    }

    #[test]
    fn query_matchers_need_a_name_and_exactly_one_kind() {
        assert!(http(json!({"QueryParam": [{"Name": "v", "Present": true}]})).is_ok());
        assert!(http(json!({"QueryParam": [{"Name": "v", "Regex": "[0-9]+"}]})).is_ok());
        assert_eq!(
            http(json!({"QueryParam": [{"Exact": "1"}]})).unwrap_err(),
            "Routes[0].Match.HTTP.QueryParam[0].Name: required"
        );
        assert_eq!(
            http(json!({"QueryParam": [{"Name": "v", "Exact": "1", "Present": true}]}))
                .unwrap_err(),
            "Routes[0].Match.HTTP.QueryParam[0]: set exactly one of Present, Exact, Regex"
        );
        assert_eq!(
            http(json!({"QueryParam": [{"Name": "v", "Prefix": "1"}]})).unwrap_err(),
            "Routes[0].Match.HTTP.QueryParam[0]: unknown field \"Prefix\" (expected one of Name, Present, Exact, Regex)"
        );
    }

    #[test]
    fn methods_are_uppercase_tokens_listed_once() {
        assert!(http(json!({"Methods": ["GET", "PROPFIND", "M-SEARCH"]})).is_ok());
        assert_eq!(
            http(json!({"Methods": ["GET", "post"]})).unwrap_err(),
            "Routes[0].Match.HTTP.Methods[1]: invalid HTTP method \"post\" (methods are case-sensitive; use \"POST\")"
        );
        assert_eq!(
            http(json!({"Methods": ["GET POST"]})).unwrap_err(),
            "Routes[0].Match.HTTP.Methods[0]: invalid HTTP method \"GET POST\""
        );
        assert!(http(json!({"Methods": [""]})).is_err());
        assert_eq!(
            http(json!({"Methods": ["GET", "GET"]})).unwrap_err(),
            "Routes[0].Match.HTTP.Methods[1]: \"GET\" is listed more than once"
        );
    }

    #[test]
    fn prefix_rewrite_needs_a_path_exact_or_prefix() {
        assert!(dest(json!({"PrefixRewrite": "/"})).is_ok());
        assert!(
            router(json!([{"Match": {"HTTP": {"PathExact": "/a"}}, "Destination": {"PrefixRewrite": "/b"}}]))
                .is_ok()
        );
        let err = "Routes[0].Destination.PrefixRewrite: needs PathExact or PathPrefix in the route's Match.HTTP";
        assert_eq!(
            router(json!([{"Match": {"HTTP": {"PathRegex": "/a.*"}}, "Destination": {"PrefixRewrite": "/"}}]))
                .unwrap_err(),
            err
        );
        assert_eq!(
            router(json!([{"Destination": {"PrefixRewrite": "/"}}])).unwrap_err(),
            err
        );
    }

    #[test]
    fn retry_conditions_and_status_codes() {
        assert!(dest(json!({"RetryOn": ["gateway-error", "unavailable"], "RetryOnStatusCodes": [100, 599]})).is_ok());
        assert!(
            dest(json!({"RetryOn": ["sometimes"]}))
                .unwrap_err()
                .starts_with("Routes[0].Destination.RetryOn[0]: unknown retry condition \"sometimes\" (use 5xx, ")
        );
        assert_eq!(
            dest(json!({"RetryOnStatusCodes": [503, 600]})).unwrap_err(),
            "Routes[0].Destination.RetryOnStatusCodes[1]: 600 is not an HTTP status code (100-599)"
        );
        assert!(dest(json!({"RetryOnStatusCodes": [99]})).is_err());
    }

    #[test]
    fn header_modifiers_need_real_header_names() {
        assert!(dest(json!({"RequestHeaders": {"Set": {"x-a": "1"}, "Remove": ["x-b"]}})).is_ok());
        assert_eq!(
            dest(json!({"RequestHeaders": {"Set": {":path": "/x"}}})).unwrap_err(),
            "Routes[0].Destination.RequestHeaders.Set[\":path\"]: invalid header name \":path\""
        );
        assert_eq!(
            dest(json!({"ResponseHeaders": {"Remove": ["bad header"]}})).unwrap_err(),
            "Routes[0].Destination.ResponseHeaders.Remove[0]: invalid header name \"bad header\""
        );
    }

    #[test]
    fn durations_and_numbers_are_type_checked_with_their_path() {
        assert_eq!(
            dest(json!({"NumRetries": "three"})).unwrap_err(),
            "Routes[0].Destination.NumRetries: invalid type: string \"three\", expected u32"
        );
        assert_eq!(
            dest(json!({"RequestTimeout": "5 parsecs"})).unwrap_err(),
            "Routes[0].Destination.RequestTimeout: invalid duration \"5 parsecs\": unknown unit (use ns, us, ms, s, m or h)"
        );
        assert_eq!(
            http(json!({"PathExcat": "/a"})).unwrap_err(),
            "Routes[0].Match.HTTP: unknown field \"PathExcat\" (expected one of PathExact, PathPrefix, PathRegex, CaseInsensitive, Header, QueryParam, Methods)"
        );
    }
}
