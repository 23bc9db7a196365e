//! The HTTP chain and CORS on hand-built configurations; Envoy's answers to the same are in
//! `proxy/tests/differential_filters.rs`.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Request};

use super::*;
use crate::config::{
    ClusterTarget, CorsPolicy, FilterConfigs, ForwardAction, Fraction, PathMatch, Route,
    RouteAction, RouteConfig, RouteMatch, StringMatch, VirtualHost, WeightedCluster,
};

const NAME: &str = "envoy.filters.http.cors";

fn forward(cors: Option<CorsPolicy>) -> RouteAction {
    RouteAction::Forward(Arc::new(ForwardAction {
        target: ClusterTarget::Cluster("c".into()),
        prefix_rewrite: None,
        host_rewrite_literal: None,
        timeout: Duration::from_secs(15),
        idle_timeout: None,
        retry: None,
        hash_policy: vec![],
        upgrades: vec![],
        cors: cors.map(Arc::new),
    }))
}

fn route(action: RouteAction, configs: FilterConfigs) -> Route {
    Route {
        name: "r".into(),
        matcher: RouteMatch {
            path: PathMatch::Prefix("/".into()),
            case_sensitive: true,
            headers: vec![],
            query_parameters: vec![],
        },
        action,
        request_headers: Default::default(),
        response_headers: Default::default(),
        filter_configs: configs,
    }
}

fn vhost(configs: FilterConfigs, cors: Option<CorsPolicy>) -> VirtualHost {
    VirtualHost {
        name: "v".into(),
        domains: vec![],
        routes: vec![],
        cors: cors.map(Arc::new),
        request_headers: Default::default(),
        response_headers: Default::default(),
        filter_configs: configs,
    }
}

fn route_config(configs: FilterConfigs) -> RouteConfig {
    RouteConfig {
        name: "rc".into(),
        virtual_hosts: vec![],
        request_headers: Default::default(),
        response_headers: Default::default(),
        filter_configs: configs,
    }
}

fn weighted(configs: FilterConfigs) -> WeightedCluster {
    WeightedCluster {
        name: "c".into(),
        weight: 1,
        request_headers: Default::default(),
        response_headers: Default::default(),
        filter_configs: configs,
    }
}

fn configs(entries: &[(&str, FilterConfig)]) -> FilterConfigs {
    FilterConfigs(
        entries
            .iter()
            .map(|(n, c)| (n.to_string(), c.clone()))
            .collect(),
    )
}

fn cors(policy: CorsPolicy) -> FilterConfig {
    FilterConfig::Cors(Arc::new(policy))
}

fn allow(origins: &[&str]) -> CorsPolicy {
    CorsPolicy {
        allow_origin: origins
            .iter()
            .map(|o| StringMatch::Exact(o.to_string(), false))
            .collect(),
        ..Default::default()
    }
}

fn value(s: &str) -> Option<HeaderValue> {
    Some(HeaderValue::from_str(s).unwrap())
}

/// A route configuration's levels, owned, to lend as `Levels`.
struct Config {
    rc: RouteConfig,
    vh: VirtualHost,
    route: Route,
    weighted: Option<WeightedCluster>,
}

impl Config {
    fn new(route: Route, vh: VirtualHost) -> Config {
        Config {
            rc: route_config(FilterConfigs::default()),
            vh,
            route,
            weighted: None,
        }
    }

    fn levels(&self) -> Levels<'_> {
        Levels {
            weighted: self.weighted.as_ref(),
            route: &self.route,
            vhost: &self.vh,
            config: &self.rc,
            filters: None,
        }
    }
}

fn chain(disabled: bool, registry: &Registry) -> HttpChain {
    HttpChain::build(
        &[HttpFilter {
            name: NAME.into(),
            disabled,
            kind: HttpFilterKind::Cors,
        }],
        registry,
        "ing",
    )
    .unwrap()
}

fn request(method: Method, headers: &[(&str, &str)]) -> Request<DownstreamBody> {
    let mut req = Request::new(DownstreamBody::buffered(bytes::Bytes::new()));
    *req.method_mut() = method;
    for (k, v) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    req
}

fn get(origin: &str) -> Request<DownstreamBody> {
    request(Method::GET, &[("origin", origin)])
}

fn preflight(origin: &str) -> Request<DownstreamBody> {
    request(
        Method::OPTIONS,
        &[
            ("origin", origin),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-a, x-b"),
        ],
    )
}

type Fields = Vec<(String, String)>;

/// The access-control-* response headers a request gets: from the response side (`Ok`) or
/// from a local answer (`Err`, with its status).
fn outcome(
    chain: &HttpChain,
    config: &Config,
    req: &Request<DownstreamBody>,
) -> Result<Fields, (u16, Fields)> {
    let pick = |h: &HeaderMap| {
        let mut v: Vec<(String, String)> = h
            .iter()
            .filter(|(n, _)| n.as_str().starts_with("access-control-"))
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        v.sort();
        v
    };
    let mut run = Run::default();
    match chain.on_request(&config.levels(), req, &mut run) {
        None => {
            let mut h = HeaderMap::new();
            run.on_response(&mut h);
            assert_eq!(run.mutates_response(), !h.is_empty());
            Ok(pick(&h))
        }
        Some(answer) => Err((answer.status().as_u16(), pick(answer.headers()))),
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn preflights_are_answered_and_allowed_origins_get_their_headers() {
    let registry = Registry::default();
    let chain = chain(false, &registry);
    let policy = CorsPolicy {
        allow_methods: value("GET, PUT"),
        allow_headers: value("x-a"),
        expose_headers: value("x-e"),
        max_age: value("100"),
        ..allow(&["https://a.example"])
    };
    let config = Config::new(
        route(forward(None), FilterConfigs::default()),
        vhost(configs(&[(NAME, cors(policy))]), None),
    );
    // Envoy's answer: the preflight headers, and the response side's on top.
    assert_eq!(
        outcome(&chain, &config, &preflight("https://a.example")),
        Err((
            200,
            pairs(&[
                ("access-control-allow-origin", "https://a.example"),
                ("access-control-allow-methods", "GET, PUT"),
                ("access-control-allow-headers", "x-a"),
                ("access-control-max-age", "100"),
                ("access-control-expose-headers", "x-e"),
            ])
        ))
    );
    // A refused origin's preflight goes on to the service (forward_not_matching_preflights
    // defaults to true), with nothing added.
    assert_eq!(
        outcome(&chain, &config, &preflight("https://b.example")),
        Ok(vec![])
    );
    assert_eq!(
        outcome(&chain, &config, &get("https://a.example")),
        Ok(pairs(&[
            ("access-control-allow-origin", "https://a.example"),
            ("access-control-expose-headers", "x-e"),
        ]))
    );
    assert_eq!(
        outcome(&chain, &config, &get("https://b.example")),
        Ok(vec![])
    );
    // No Origin, or an OPTIONS without Access-Control-Request-Method: not CORS, not counted.
    assert_eq!(
        outcome(&chain, &config, &request(Method::OPTIONS, &[])),
        Ok(vec![])
    );
    assert_eq!(
        outcome(
            &chain,
            &config,
            &request(Method::OPTIONS, &[("origin", "https://a.example")])
        ),
        Ok(pairs(&[
            ("access-control-allow-origin", "https://a.example"),
            ("access-control-expose-headers", "x-e"),
        ]))
    );
    let stats = registry.cors("ing");
    assert_eq!(
        (stats.origin_valid.get(), stats.origin_invalid.get()),
        (3, 2)
    );
}

#[test]
fn the_most_specific_policy_sets_each_field() {
    let registry = Registry::default();
    let chain = chain(false, &registry);
    let route_policy = CorsPolicy {
        forward_not_matching_preflights: Some(false),
        allow_credentials: Some(true),
        ..Default::default()
    };
    let vhost_policy = CorsPolicy {
        allow_methods: value("*"),
        allow_headers: value("*"),
        allow_credentials: Some(false),
        allow_private_network_access: Some(true),
        ..allow(&["https://a.example"])
    };
    let rc_policy = CorsPolicy {
        max_age: value("7"),
        ..allow(&["https://never.example"])
    };
    let mut config = Config::new(
        route(forward(None), configs(&[(NAME, cors(route_policy))])),
        vhost(configs(&[(NAME, cors(vhost_policy))]), None),
    );
    config.rc = route_config(configs(&[(NAME, cors(rc_policy))]));
    let mut asked = preflight("https://a.example");
    asked.headers_mut().insert(
        "access-control-request-private-network",
        HeaderValue::from_static("true"),
    );
    assert_eq!(
        outcome(&chain, &config, &asked),
        Err((
            200,
            pairs(&[
                ("access-control-allow-origin", "https://a.example"),
                ("access-control-allow-credentials", "true"),
                ("access-control-allow-methods", "PUT"),
                ("access-control-allow-headers", "x-a, x-b"),
                ("access-control-max-age", "7"),
                ("access-control-allow-private-network", "true"),
            ])
        ))
    );
    // Refused, not forwarded (the route says so): answered without Allow-Origin.
    assert_eq!(
        outcome(&chain, &config, &preflight("https://b.example")),
        Err((
            200,
            pairs(&[
                ("access-control-allow-credentials", "true"),
                ("access-control-allow-methods", "PUT"),
                ("access-control-allow-headers", "x-a, x-b"),
                ("access-control-max-age", "7"),
            ])
        ))
    );
    // A weighted cluster's policy is more specific still.
    config.weighted = Some(weighted(configs(&[(
        NAME,
        cors(allow(&["https://b.example"])),
    )])));
    assert_eq!(
        outcome(&chain, &config, &get("https://b.example")),
        Ok(pairs(&[
            ("access-control-allow-origin", "https://b.example"),
            ("access-control-allow-credentials", "true"),
        ]))
    );
    assert_eq!(
        outcome(&chain, &config, &get("https://a.example")),
        Ok(vec![])
    );
}

#[test]
fn any_origin_matcher_that_matches_a_star_allows_every_origin() {
    let registry = Registry::default();
    let chain = chain(false, &registry);
    let policy = CorsPolicy {
        allow_origin: vec![StringMatch::Prefix("*".into(), false)],
        ..Default::default()
    };
    let config = Config::new(
        route(forward(None), configs(&[(NAME, cors(policy))])),
        vhost(FilterConfigs::default(), None),
    );
    assert_eq!(
        outcome(&chain, &config, &get("https://anything.example")),
        Ok(pairs(&[(
            "access-control-allow-origin",
            "https://anything.example"
        )]))
    );
}

#[test]
fn inline_policies_count_only_without_per_filter_ones() {
    let registry = Registry::default();
    let chain = chain(false, &registry);
    let config = Config::new(
        route(
            forward(Some(allow(&["https://route.example"]))),
            FilterConfigs::default(),
        ),
        vhost(
            FilterConfigs::default(),
            Some(CorsPolicy {
                expose_headers: value("x-vh"),
                ..allow(&["https://vhost.example"])
            }),
        ),
    );
    assert_eq!(
        outcome(&chain, &config, &get("https://route.example")),
        Ok(pairs(&[
            ("access-control-allow-origin", "https://route.example"),
            ("access-control-expose-headers", "x-vh"),
        ]))
    );
    assert_eq!(
        outcome(&chain, &config, &get("https://vhost.example")),
        Ok(vec![])
    );
    // A per-filter policy anywhere replaces both inline ones.
    let mut typed = config;
    typed.rc = route_config(configs(&[(NAME, cors(allow(&["https://typed.example"])))]));
    assert_eq!(
        outcome(&chain, &typed, &get("https://typed.example")),
        Ok(pairs(&[(
            "access-control-allow-origin",
            "https://typed.example"
        )]))
    );
    assert_eq!(
        outcome(&chain, &typed, &get("https://route.example")),
        Ok(vec![])
    );
}

#[test]
fn direct_responses_and_redirects_have_no_cors() {
    let registry = Registry::default();
    let chain = chain(false, &registry);
    let config = Config::new(
        route(
            RouteAction::DirectResponse {
                status: 200,
                body: None,
            },
            configs(&[(NAME, cors(allow(&["https://a.example"])))]),
        ),
        vhost(FilterConfigs::default(), None),
    );
    assert_eq!(
        outcome(&chain, &config, &preflight("https://a.example")),
        Ok(vec![])
    );
    assert_eq!(registry.cors("ing").origin_valid.get(), 0);
}

#[test]
fn disabled_filters_run_where_the_most_specific_level_enables_them() {
    let registry = Registry::default();
    let policy = || configs(&[(NAME, cors(allow(&["https://a.example"])))]);
    let allowed = |chain: &HttpChain, config: &Config| {
        outcome(chain, config, &get("https://a.example")).is_ok_and(|h| !h.is_empty())
    };
    let disabled_chain = chain(true, &registry);
    let enabled_chain = chain(false, &registry);

    // The policy at the virtual host enables the disabled filter (any config does).
    let config = Config::new(
        route(forward(None), FilterConfigs::default()),
        vhost(policy(), None),
    );
    assert!(allowed(&disabled_chain, &config));

    // Enabled with an empty FilterConfig, the policy coming from a level above.
    let mut config = Config::new(
        route(forward(None), configs(&[(NAME, FilterConfig::Enabled)])),
        vhost(FilterConfigs::default(), None),
    );
    config.rc = route_config(policy());
    assert!(allowed(&disabled_chain, &config));

    // Not enabled anywhere: the filter stays off even with an inline policy.
    let config = Config::new(
        route(
            forward(Some(allow(&["https://a.example"]))),
            FilterConfigs::default(),
        ),
        vhost(FilterConfigs::default(), None),
    );
    assert!(!allowed(&disabled_chain, &config));
    assert!(allowed(&enabled_chain, &config));

    // The route disables what the virtual host enables, and the other way round.
    let config = Config::new(
        route(forward(None), configs(&[(NAME, FilterConfig::Disabled)])),
        vhost(policy(), None),
    );
    assert!(!allowed(&enabled_chain, &config));
    let mut config = Config::new(
        route(forward(None), policy()),
        vhost(configs(&[(NAME, FilterConfig::Disabled)]), None),
    );
    assert!(allowed(&disabled_chain, &config));
    // ... and a weighted cluster over the route.
    config.weighted = Some(weighted(configs(&[(NAME, FilterConfig::Disabled)])));
    assert!(!allowed(&enabled_chain, &config));

    // Configs keyed by another name do not touch this filter.
    let config = Config::new(
        route(
            forward(None),
            configs(&[("other", cors(allow(&["https://a.example"])))]),
        ),
        vhost(FilterConfigs::default(), None),
    );
    assert!(!allowed(&enabled_chain, &config));
}

#[test]
fn filter_enabled_and_shadow_mode() {
    let registry = Registry::default();
    let chain = chain(false, &registry);
    let never = Fraction {
        numerator: 0,
        denominator: 100,
    };
    let always = Fraction {
        numerator: 100,
        denominator: 100,
    };
    let with = |enabled: Option<Fraction>, shadow: Option<Fraction>| {
        let policy = CorsPolicy {
            filter_enabled: enabled,
            shadow_enabled: shadow,
            ..allow(&["https://a.example"])
        };
        Config::new(
            route(forward(None), configs(&[(NAME, cors(policy))])),
            vhost(FilterConfigs::default(), None),
        )
    };
    let stats = registry.cors("ing");
    assert_eq!(
        outcome(
            &chain,
            &with(Some(never), None),
            &preflight("https://a.example")
        ),
        Ok(vec![])
    );
    assert_eq!(stats.origin_valid.get(), 0);
    // Shadow mode: counted, nothing else.
    assert_eq!(
        outcome(
            &chain,
            &with(Some(never), Some(always)),
            &preflight("https://a.example")
        ),
        Ok(vec![])
    );
    assert_eq!(stats.origin_valid.get(), 1);
    assert!(
        outcome(
            &chain,
            &with(Some(always), None),
            &preflight("https://a.example")
        )
        .is_err()
    );
    // A fraction samples each request.
    let half = with(
        Some(Fraction {
            numerator: 50,
            denominator: 100,
        }),
        None,
    );
    let answered = (0..400)
        .filter(|_| outcome(&chain, &half, &preflight("https://a.example")).is_err())
        .count();
    assert!((120..280).contains(&answered), "{answered}");
}
