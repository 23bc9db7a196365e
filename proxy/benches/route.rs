//! Router hot path over a realistic table: 10 virtual hosts (the last one `*`) of 5 routes each,
//! mixing prefix, exact and regex paths with header and query matchers.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use mesh_proxy::config::{
    DomainMatch, HashPolicy, HeaderMatch, HeaderMatcher, PathMatch, QueryParameterMatcher, Route,
    RouteAction, RouteConfig, RouteMatch, StringMatch, VirtualHost, WeightedCluster,
};
use mesh_proxy::route::{
    RequestView, match_route, pick_weighted, request_hash, select_virtual_host,
};
use std::net::SocketAddr;
use std::time::Duration;

fn anchored(re: &str) -> regex::Regex {
    regex::Regex::new(&format!("^(?:{re})$")).expect("valid regex")
}

fn route(name: String, path: PathMatch) -> Route {
    Route {
        name,
        matcher: RouteMatch {
            path,
            case_sensitive: true,
            headers: vec![],
            query_parameters: vec![],
        },
        action: RouteAction::DirectResponse {
            status: 200,
            body: None,
        },
        request_headers: Default::default(),
        response_headers: Default::default(),
        filter_configs: Default::default(),
    }
}

fn vhost(i: usize) -> VirtualHost {
    let svc = format!("svc-{i}");
    let mut routes = vec![
        route(format!("{svc}-health"), PathMatch::Exact("/healthz".into())),
        route(
            format!("{svc}-user"),
            PathMatch::Regex(anchored(r"/api/v[0-9]+/users/[0-9]+")),
        ),
        route(format!("{svc}-canary"), PathMatch::Prefix("/api/".into())),
        route(format!("{svc}-search"), PathMatch::Prefix("/search".into())),
        route(format!("{svc}-root"), PathMatch::Prefix("/".into())),
    ];
    routes[2].matcher.headers = vec![
        HeaderMatcher {
            name: "x-canary".into(),
            matcher: HeaderMatch::String(StringMatch::Exact("true".into(), true)),
            invert: false,
        },
        HeaderMatcher {
            name: ":method".into(),
            matcher: HeaderMatch::String(StringMatch::Exact("GET".into(), false)),
            invert: false,
        },
    ];
    routes[3].matcher.query_parameters = vec![QueryParameterMatcher {
        name: "q".into(),
        matcher: Some(StringMatch::Prefix("mesh".into(), false)),
    }];
    let domains = if i == 9 {
        vec![DomainMatch::Any]
    } else {
        vec![
            DomainMatch::Exact(svc.clone()),
            DomainMatch::Exact(format!("{svc}.default.svc.cluster.local")),
            DomainMatch::Suffix(format!(".{svc}.mesh")),
            DomainMatch::Prefix(format!("{svc}.")),
        ]
    };
    VirtualHost {
        name: svc,
        domains,
        routes,
        cors: None,
        request_headers: Default::default(),
        response_headers: Default::default(),
        filter_configs: Default::default(),
    }
}

fn config() -> RouteConfig {
    RouteConfig {
        name: "bench".into(),
        virtual_hosts: (0..10).map(vhost).collect(),
        request_headers: Default::default(),
        response_headers: Default::default(),
        filter_configs: Default::default(),
    }
}

fn headers() -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in [
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("x-request-id", "9f1c2a4e-1111-2222-3333-444455556666"),
        ("x-user", "alice"),
        ("cookie", "theme=dark; session=abc123; lang=en"),
    ] {
        h.insert(k, v.parse().expect("header value"));
    }
    h
}

fn bench(c: &mut Criterion) {
    let config = config();
    let headers = headers();
    let method = http::Method::GET;
    let source: SocketAddr = ([10, 0, 0, 7], 41000).into();
    let view = |path_and_query: &'static str, authority: &'static str| RequestView {
        method: &method,
        path_and_query,
        authority,
        headers: &headers,
        source,
    };

    let mut g = c.benchmark_group("select_virtual_host");
    for (name, authority) in [
        ("exact", "svc-5:8080"),
        ("exact_fqdn", "svc-8.default.svc.cluster.local:8080"),
        ("suffix", "api.svc-3.mesh"),
        ("any", "unknown.example.com:80"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| select_virtual_host(black_box(&config), black_box(authority)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("match_route");
    for (name, path) in [
        ("exact_first", "/healthz"),
        ("regex", "/api/v2/users/12345?expand=1"),
        ("headers_miss_then_query", "/search?q=mesh-proxy&page=2"),
        ("last_route", "/static/app.js"),
    ] {
        let req = view(path, "svc-5:8080");
        let vh = select_virtual_host(&config, req.authority).expect("vhost");
        g.bench_function(name, |b| {
            b.iter(|| match_route(black_box(vh), black_box(&req)))
        });
    }
    g.finish();

    c.bench_function("route/vhost_and_match", |b| {
        let req = view(
            "/search?q=mesh-proxy",
            "svc-7.default.svc.cluster.local:8080",
        );
        b.iter(|| {
            let vh = select_virtual_host(black_box(&config), req.authority)?;
            match_route(vh, black_box(&req))
        })
    });

    let policies = [
        HashPolicy::Header {
            name: "x-user".into(),
            terminal: false,
        },
        HashPolicy::Cookie {
            name: "session".into(),
            ttl: None,
            path: None,
            terminal: false,
        },
        HashPolicy::SourceIp { terminal: false },
    ];
    let mut g = c.benchmark_group("request_hash");
    let req = view("/api?user=alice", "svc-1");
    g.bench_function("header", |b| {
        b.iter(|| request_hash(black_box(&policies[..1]), black_box(&req)))
    });
    g.bench_function("cookie", |b| {
        b.iter(|| request_hash(black_box(&policies[1..2]), black_box(&req)))
    });
    g.bench_function("source_ip", |b| {
        b.iter(|| request_hash(black_box(&policies[2..]), black_box(&req)))
    });
    g.bench_function("all_three", |b| {
        b.iter(|| request_hash(black_box(&policies), black_box(&req)))
    });
    g.finish();

    let clusters: Vec<WeightedCluster> = [70, 20, 10]
        .iter()
        .enumerate()
        .map(|(i, &weight)| WeightedCluster {
            name: format!("c{i}"),
            weight,
            request_headers: Default::default(),
            response_headers: Default::default(),
            filter_configs: Default::default(),
        })
        .collect();
    c.bench_function("pick_weighted/3", |b| {
        b.iter(|| pick_weighted(black_box(&clusters), fastrand::u64(..)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
