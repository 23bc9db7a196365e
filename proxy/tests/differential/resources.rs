//! The xDS resources both proxies get: built by hand from envoy-types, identical for Envoy
//! and for ours except the listener's port.
//!
//! Every route adds the request header `x-route: <route name>` and every virtual host
//! `x-vhost: <name>` (request and response), so the backend's echo tells which virtual host
//! and which route matched, not only which cluster.

use crate::support::xds::{
    add, direct, eds_cluster, hcm, hcm_filter, listener, load_assignment, loopback, ms, path,
    prefix, rds, static_cluster, to,
};
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValueOption, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, header_matcher,
    query_parameter_matcher, redirect_action, route, route_action, route_match, weighted_cluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use mesh_control_plane::snapshot::Snapshot;
use std::net::SocketAddr;

pub const LISTENER: &str = "main";
pub const ROUTES: &str = "routes";

/// The backends' addresses; `dead` is a closed port (a connect failure).
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub a: SocketAddr,
    pub b: SocketAddr,
    pub c: SocketAddr,
    /// Two instances of one backend, "r": retries may take either and still compare equal.
    pub r1: SocketAddr,
    pub r2: SocketAddr,
    pub dead: SocketAddr,
}

/// The whole configuration, with the listener on `port` (0: any).
pub fn snapshot(port: u16, addrs: &Addrs) -> Snapshot {
    Snapshot::new(
        vec![
            static_cluster("a", &[addrs.a]),
            static_cluster("b", &[addrs.b]),
            static_cluster("c", &[addrs.c]),
            static_cluster("r", &[addrs.r1, addrs.r2]),
            static_cluster("dead", &[addrs.dead]),
            static_cluster("half_dead", &[addrs.dead, addrs.a]),
            static_cluster("empty", &[]),
            eds_cluster("eds_c"),
        ],
        vec![load_assignment("eds_c", &[addrs.c])],
        vec![main_listener(port)],
        vec![route_configuration()],
    )
}

fn main_listener(port: u16) -> Listener {
    listener(
        LISTENER,
        loopback(port),
        vec![hcm_filter(hcm(LISTENER, rds(ROUTES)))],
    )
}

// ---- small builders ----

fn header(name: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        append_action: action as i32,
        ..add(name, value)
    }
}

fn overwrite(name: &str, value: &str) -> HeaderValueOption {
    header(name, value, HeaderAppendAction::OverwriteIfExistsOrAdd)
}

fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.into(),
        ..Default::default()
    }
}

fn string(pattern: string_matcher::MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    }
}

fn hdr(name: &str, spec: header_matcher::HeaderMatchSpecifier, invert: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(spec),
        invert_match: invert,
        ..Default::default()
    }
}

fn hdr_string(name: &str, pattern: string_matcher::MatchPattern) -> HeaderMatcher {
    hdr(
        name,
        header_matcher::HeaderMatchSpecifier::StringMatch(string(pattern)),
        false,
    )
}

fn query(
    name: &str,
    spec: query_parameter_matcher::QueryParameterMatchSpecifier,
) -> QueryParameterMatcher {
    QueryParameterMatcher {
        name: name.into(),
        query_parameter_match_specifier: Some(spec),
    }
}

fn retry(on: &str, retries: u32) -> RetryPolicy {
    RetryPolicy {
        retry_on: on.into(),
        num_retries: Some(UInt32Value { value: retries }),
        ..Default::default()
    }
}

/// A route named `name` (it adds `x-route: name` to the request).
fn route(name: &str, m: RouteMatch, action: route::Action) -> Route {
    Route {
        name: name.into(),
        r#match: Some(m),
        action: Some(action),
        request_headers_to_add: vec![add("x-route", name)],
        ..Default::default()
    }
}

fn fwd(name: &str, m: RouteMatch, action: RouteAction) -> Route {
    route(name, m, route::Action::Route(action))
}

fn vhost(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| (*d).into()).collect(),
        routes,
        request_headers_to_add: vec![add("x-vhost", name)],
        response_headers_to_add: vec![add("x-vhost", name)],
        ..Default::default()
    }
}

// ---- routes ----

fn route_configuration() -> RouteConfiguration {
    use header_matcher::HeaderMatchSpecifier as H;
    use query_parameter_matcher::QueryParameterMatchSpecifier as Q;
    use string_matcher::MatchPattern as P;

    let weighted = |name: &str, weight: u32| weighted_cluster::ClusterWeight {
        name: name.into(),
        weight: Some(UInt32Value { value: weight }),
        request_headers_to_add: vec![add("x-weighted", name)],
        response_headers_to_add: vec![add("x-weighted", name)],
        ..Default::default()
    };
    let redirect = |r: RedirectAction| route::Action::Redirect(r);

    let main = vec![
        fwd("hello", prefix("/hello"), to("a")),
        // Path matching.
        fwd("exact", path("/exact"), to("a")),
        fwd(
            "regex",
            RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::SafeRegex(regex(
                    "/regex/[0-9]+",
                ))),
                ..Default::default()
            },
            to("b"),
        ),
        fwd(
            "caseless",
            RouteMatch {
                case_sensitive: Some(BoolValue { value: false }),
                ..prefix("/CaseLess")
            },
            to("c"),
        ),
        // Header matching, first match wins.
        fwd(
            "hdr-exact",
            RouteMatch {
                headers: vec![hdr_string("x-variant", P::Exact("blue".into()))],
                ..prefix("/hdr")
            },
            to("b"),
        ),
        fwd(
            "hdr-and",
            RouteMatch {
                headers: vec![
                    hdr_string("x-variant", P::Prefix("gr".into())),
                    hdr_string("x-tier", P::SafeRegex(regex("t[0-9]"))),
                ],
                ..prefix("/hdr")
            },
            to("c"),
        ),
        fwd(
            "hdr-suffix",
            RouteMatch {
                headers: vec![hdr_string("x-variant", P::Suffix("-beta".into()))],
                ..prefix("/hdr")
            },
            to("b"),
        ),
        fwd(
            "hdr-contains",
            RouteMatch {
                headers: vec![hdr_string("x-variant", P::Contains("urpl".into()))],
                ..prefix("/hdr")
            },
            to("c"),
        ),
        fwd(
            "hdr-method",
            RouteMatch {
                headers: vec![hdr_string(":method", P::Exact("POST".into()))],
                ..prefix("/hdr")
            },
            to("b"),
        ),
        fwd(
            "hdr-invert",
            RouteMatch {
                headers: vec![hdr(
                    "x-variant",
                    H::StringMatch(string(P::Exact("red".into()))),
                    true,
                )],
                ..prefix("/hdr")
            },
            to("c"),
        ),
        fwd(
            "hdr-absent",
            RouteMatch {
                headers: vec![hdr("x-variant", H::PresentMatch(false), false)],
                ..prefix("/hdr")
            },
            to("b"),
        ),
        fwd("hdr-fallback", prefix("/hdr"), to("a")),
        // Query parameters.
        fwd(
            "q-exact",
            RouteMatch {
                query_parameters: vec![query("q", Q::StringMatch(string(P::Exact("yes".into()))))],
                ..prefix("/query")
            },
            to("b"),
        ),
        fwd(
            "q-present",
            RouteMatch {
                query_parameters: vec![query("flag", Q::PresentMatch(true))],
                ..prefix("/query")
            },
            to("c"),
        ),
        fwd(
            "q-regex",
            RouteMatch {
                query_parameters: vec![query(
                    "id",
                    Q::StringMatch(string(P::SafeRegex(regex("[0-9]+")))),
                )],
                ..prefix("/query")
            },
            to("b"),
        ),
        fwd("q-fallback", prefix("/query"), to("a")),
        // Rewrites.
        fwd(
            "rewrite",
            prefix("/rewrite/"),
            RouteAction {
                prefix_rewrite: "/new/".into(),
                ..to("a")
            },
        ),
        fwd(
            "strip",
            prefix("/strip"),
            RouteAction {
                prefix_rewrite: "/".into(),
                ..to("a")
            },
        ),
        fwd(
            "exact-rewrite",
            path("/exact-rewrite"),
            RouteAction {
                prefix_rewrite: "/replaced".into(),
                ..to("a")
            },
        ),
        fwd(
            "host-rewrite",
            prefix("/host-rewrite"),
            RouteAction {
                host_rewrite_specifier: Some(
                    route_action::HostRewriteSpecifier::HostRewriteLiteral("rewritten.test".into()),
                ),
                ..to("a")
            },
        ),
        // Weighted clusters: distributions are compared by a test of their own.
        fwd(
            "weighted",
            prefix("/weighted"),
            RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
                    WeightedCluster {
                        clusters: vec![weighted("a", 60), weighted("b", 30), weighted("c", 10)],
                        ..Default::default()
                    },
                )),
                ..Default::default()
            },
        ),
        // Timeouts.
        fwd(
            "timeout",
            prefix("/timeout"),
            RouteAction {
                timeout: Some(ms(300)),
                ..to("a")
            },
        ),
        fwd(
            "no-timeout",
            prefix("/no-timeout"),
            RouteAction {
                timeout: Some(ms(0)),
                ..to("a")
            },
        ),
        // Retries.
        fwd(
            "retry-5xx",
            prefix("/retry-5xx"),
            RouteAction {
                retry_policy: Some(retry("5xx", 2)),
                ..to("r")
            },
        ),
        fwd(
            "retry-codes",
            prefix("/retry-codes"),
            RouteAction {
                retry_policy: Some(RetryPolicy {
                    retriable_status_codes: vec![409],
                    ..retry("retriable-status-codes", 2)
                }),
                ..to("r")
            },
        ),
        fwd(
            "retry-reset",
            prefix("/retry-reset"),
            RouteAction {
                retry_policy: Some(retry("reset", 2)),
                ..to("r")
            },
        ),
        fwd(
            "retry-connect",
            prefix("/retry-connect"),
            RouteAction {
                retry_policy: Some(retry("connect-failure", 3)),
                ..to("half_dead")
            },
        ),
        fwd(
            "retry-per-try",
            prefix("/retry-per-try"),
            RouteAction {
                timeout: Some(ms(3000)),
                retry_policy: Some(RetryPolicy {
                    per_try_timeout: Some(ms(200)),
                    ..retry("5xx", 1)
                }),
                ..to("r")
            },
        ),
        fwd("no-retry", prefix("/no-retry"), to("r")),
        // Local answers.
        fwd("connect-fail", prefix("/connect-fail"), to("dead")),
        fwd("no-healthy", prefix("/no-healthy"), to("empty")),
        fwd(
            "unknown-cluster",
            prefix("/unknown-cluster"),
            to("nonexistent"),
        ),
        fwd("eds", prefix("/eds"), to("eds_c")),
        // Header mutations at every level (this route, the virtual host, the configuration).
        Route {
            request_headers_to_add: vec![
                add("x-route", "headers"),
                add("x-append", "route"),
                overwrite("x-overwrite", "route"),
                header("x-if-absent", "route", HeaderAppendAction::AddIfAbsent),
                header(
                    "x-if-exists",
                    "route",
                    HeaderAppendAction::OverwriteIfExists,
                ),
                overwrite("x-level", "route"),
            ],
            request_headers_to_remove: vec!["x-drop-me".into()],
            response_headers_to_add: vec![
                add("x-resp-route", "1"),
                overwrite("x-backend", "overridden"),
                header("x-resp-if-absent", "route", HeaderAppendAction::AddIfAbsent),
            ],
            response_headers_to_remove: vec!["x-backend-extra".into()],
            ..fwd("headers", prefix("/headers"), to("a"))
        },
        // Direct responses and redirects.
        Route {
            response_headers_to_add: vec![add("x-direct", "yes")],
            ..route(
                "direct",
                path("/direct"),
                direct(200, Some("direct hello\n")),
            )
        },
        route(
            "direct-403",
            path("/direct-403"),
            direct(403, Some("forbidden")),
        ),
        route("direct-empty", path("/direct-empty"), direct(503, None)),
        route(
            "redirect-path",
            prefix("/redirect-path"),
            redirect(RedirectAction {
                path_rewrite_specifier: Some(redirect_action::PathRewriteSpecifier::PathRedirect(
                    "/landing".into(),
                )),
                ..Default::default()
            }),
        ),
        route(
            "redirect-https",
            prefix("/redirect-https"),
            redirect(RedirectAction {
                host_redirect: "secure.test".into(),
                response_code: redirect_action::RedirectResponseCode::Found as i32,
                scheme_rewrite_specifier: Some(
                    redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true),
                ),
                ..Default::default()
            }),
        ),
        route(
            "redirect-prefix",
            prefix("/redirect-prefix/"),
            redirect(RedirectAction {
                port_redirect: 8443,
                strip_query: true,
                response_code: redirect_action::RedirectResponseCode::TemporaryRedirect as i32,
                path_rewrite_specifier: Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(
                    "/moved/".into(),
                )),
                ..Default::default()
            }),
        ),
    ];

    let mut main_vhost = vhost("main", &["*"], main);
    main_vhost
        .request_headers_to_add
        .push(add("x-level", "vhost"));
    main_vhost
        .request_headers_to_remove
        .push("x-vhost-drop".into());
    main_vhost
        .response_headers_to_add
        .push(add("x-resp-level", "vhost"));

    RouteConfiguration {
        name: ROUTES.into(),
        virtual_hosts: vec![
            vhost(
                "exact",
                &["exact.test"],
                vec![fwd("exact-any", prefix("/"), to("a"))],
            ),
            vhost(
                "suffix",
                &["*.suffix.test"],
                vec![fwd("suffix-any", prefix("/"), to("b"))],
            ),
            vhost(
                "deep",
                &["*.deep.suffix.test"],
                vec![fwd("deep-any", prefix("/"), to("c"))],
            ),
            vhost(
                "prefix",
                &["prefix.*"],
                vec![fwd("prefix-any", prefix("/"), to("c"))],
            ),
            main_vhost,
        ],
        request_headers_to_add: vec![add("x-config", "rc"), add("x-level", "config")],
        request_headers_to_remove: vec!["x-config-drop".into()],
        response_headers_to_add: vec![add("x-config", "rc")],
        response_headers_to_remove: vec!["x-config-resp-drop".into()],
        ..Default::default()
    }
}
