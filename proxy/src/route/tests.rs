use super::*;
use crate::balance::xxhash64;
use crate::config::{
    HeaderMatch, HeaderMatcher, PathMatch, QueryParameterMatcher, RouteAction, RouteMatch,
    StringMatch,
};
use regex::Regex;

fn route(name: &str, path: PathMatch) -> Route {
    Route {
        name: name.to_string(),
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

fn prefix(p: &str) -> PathMatch {
    PathMatch::Prefix(p.to_string())
}

fn exact(p: &str) -> PathMatch {
    PathMatch::Exact(p.to_string())
}

/// Anchored, as `xds::convert` compiles it.
fn regex(r: &str) -> Regex {
    Regex::new(&format!("^(?:{r})$")).expect("valid regex")
}

fn vhost(routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: "vh".to_string(),
        domains: vec![crate::config::DomainMatch::Any],
        routes,
        cors: None,
        request_headers: Default::default(),
        response_headers: Default::default(),
        filter_configs: Default::default(),
    }
}

struct Req {
    method: http::Method,
    path: String,
    authority: String,
    headers: http::HeaderMap,
    source: SocketAddr,
}

impl Req {
    fn new(path: &str) -> Req {
        Req {
            method: http::Method::GET,
            path: path.to_string(),
            authority: "svc.local:8080".to_string(),
            headers: http::HeaderMap::new(),
            source: SocketAddr::from(([10, 0, 0, 7], 40000)),
        }
    }

    fn header(mut self, name: &'static str, value: &str) -> Req {
        self.headers
            .append(name, value.parse().expect("header value"));
        self
    }

    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            path_and_query: &self.path,
            authority: &self.authority,
            headers: &self.headers,
            source: self.source,
        }
    }
}

fn matched<'a>(vh: &'a VirtualHost, req: &Req) -> Option<&'a str> {
    match_route(vh, &req.view()).map(|r| r.name.as_str())
}

#[test]
fn path_matchers() {
    let vh = vhost(vec![
        route("exact", exact("/api/v1")),
        route("regex", PathMatch::Regex(regex(r"/users/\d+"))),
        route("prefix", prefix("/api")),
        route("query-prefix", prefix("/search?q=")),
    ]);
    assert_eq!(matched(&vh, &Req::new("/api/v1")), Some("exact"));
    // Exact and regex ignore the query string and fragment.
    assert_eq!(matched(&vh, &Req::new("/api/v1?x=1")), Some("exact"));
    assert_eq!(matched(&vh, &Req::new("/api/v1#top")), Some("exact"));
    assert_eq!(matched(&vh, &Req::new("/users/42?full=1")), Some("regex"));
    // Regexes are whole-path matches.
    assert_eq!(matched(&vh, &Req::new("/users/42/x")), None);
    assert_eq!(matched(&vh, &Req::new("/api/v1/x")), Some("prefix"));
    assert_eq!(matched(&vh, &Req::new("/apix")), Some("prefix"));
    // A prefix sees the whole :path, query string included (Envoy).
    assert_eq!(
        matched(&vh, &Req::new("/search?q=rust")),
        Some("query-prefix")
    );
    assert_eq!(matched(&vh, &Req::new("/search")), None);
    assert_eq!(matched(&vh, &Req::new("/API")), None);
}

#[test]
fn case_insensitive_paths() {
    let mut p = route("prefix", prefix("/Api"));
    p.matcher.case_sensitive = false;
    let mut e = route("exact", exact("/Exact"));
    e.matcher.case_sensitive = false;
    let mut r = route("regex", PathMatch::Regex(regex("/re")));
    r.matcher.case_sensitive = false;
    let vh = vhost(vec![e, p, r]);
    assert_eq!(matched(&vh, &Req::new("/aPI/x")), Some("prefix"));
    assert_eq!(matched(&vh, &Req::new("/EXACT?y")), Some("exact"));
    assert_eq!(matched(&vh, &Req::new("/re")), Some("regex"));
    // case_sensitive does not apply to regexes.
    assert_eq!(matched(&vh, &Req::new("/RE")), None);
}

#[test]
fn first_match_wins() {
    let vh = vhost(vec![
        route("a", prefix("/a")),
        route("ab", prefix("/ab")),
        route("all", prefix("/")),
    ]);
    assert_eq!(matched(&vh, &Req::new("/ab/c")), Some("a"));
    assert_eq!(matched(&vh, &Req::new("/b")), Some("all"));
    assert_eq!(matched(&vhost(vec![]), &Req::new("/")), None);
}

fn with_headers(name: &str, headers: Vec<HeaderMatcher>) -> Route {
    let mut r = route(name, prefix("/"));
    r.matcher.headers = headers;
    r
}

fn header(name: &str, matcher: HeaderMatch, invert: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        matcher,
        invert,
    }
}

fn string(m: StringMatch) -> HeaderMatch {
    HeaderMatch::String(m)
}

#[test]
fn header_matchers() {
    let exact_v2 = || string(StringMatch::Exact("v2".into(), false));
    let vh = |h: HeaderMatcher| vhost(vec![with_headers("r", vec![h])]);
    let with_v2 = Req::new("/").header("x-version", "v2");
    let with_v3 = Req::new("/").header("x-version", "v3");
    let without = Req::new("/");

    let m = vh(header("x-version", exact_v2(), false));
    assert_eq!(matched(&m, &with_v2), Some("r"));
    assert_eq!(matched(&m, &with_v3), None);
    assert_eq!(matched(&m, &without), None);

    // Inverted: a present, different value matches; a missing header still does not.
    let m = vh(header("x-version", exact_v2(), true));
    assert_eq!(matched(&m, &with_v2), None);
    assert_eq!(matched(&m, &with_v3), Some("r"));
    assert_eq!(matched(&m, &without), None);

    let present = |want, invert| vh(header("x-version", HeaderMatch::Present(want), invert));
    assert_eq!(matched(&present(true, false), &with_v3), Some("r"));
    assert_eq!(matched(&present(true, false), &without), None);
    assert_eq!(matched(&present(false, false), &without), Some("r"));
    assert_eq!(matched(&present(false, false), &with_v3), None);
    assert_eq!(matched(&present(true, true), &without), Some("r"));
    assert_eq!(matched(&present(true, true), &with_v3), None);
    assert_eq!(matched(&present(false, true), &with_v3), Some("r"));

    let ic = vh(header(
        "x-version",
        string(StringMatch::Exact("V2".into(), true)),
        false,
    ));
    assert_eq!(matched(&ic, &with_v2), Some("r"));
    let cs = vh(header(
        "x-version",
        string(StringMatch::Exact("V2".into(), false)),
        false,
    ));
    assert_eq!(matched(&cs, &with_v2), None);

    let re = vh(header(
        "x-id",
        string(StringMatch::Regex(regex(r"\d{3}"))),
        false,
    ));
    assert_eq!(
        matched(&re, &Req::new("/").header("x-id", "123")),
        Some("r")
    );
    assert_eq!(matched(&re, &Req::new("/").header("x-id", "1234")), None);
    let re = vh(header(
        "x-id",
        string(StringMatch::Regex(regex(r"\d{3}"))),
        true,
    ));
    assert_eq!(
        matched(&re, &Req::new("/").header("x-id", "1234")),
        Some("r")
    );
}

#[test]
fn all_header_matchers_must_hold() {
    let vh = vhost(vec![with_headers(
        "r",
        vec![
            header("a", HeaderMatch::Present(true), false),
            header("b", string(StringMatch::Prefix("x".into(), false)), false),
        ],
    )]);
    assert_eq!(
        matched(&vh, &Req::new("/").header("a", "1").header("b", "xy")),
        Some("r")
    );
    assert_eq!(
        matched(&vh, &Req::new("/").header("a", "1").header("b", "y")),
        None
    );
    assert_eq!(matched(&vh, &Req::new("/").header("b", "xy")), None);
}

#[test]
fn pseudo_headers_and_host() {
    let eq = |s: &str| string(StringMatch::Exact(s.into(), false));
    let vh = vhost(vec![
        with_headers("post", vec![header(":method", eq("POST"), false)]),
        with_headers("path", vec![header(":path", eq("/p?q=1"), false)]),
        with_headers(
            "authority",
            vec![header(":authority", eq("svc.local:8080"), false)],
        ),
    ]);
    let mut post = Req::new("/x");
    post.method = http::Method::POST;
    assert_eq!(matched(&vh, &post), Some("post"));
    assert_eq!(matched(&vh, &Req::new("/p?q=1")), Some("path"));
    assert_eq!(matched(&vh, &Req::new("/other")), Some("authority"));

    let scheme = vhost(vec![with_headers(
        "s",
        vec![header(":scheme", eq("http"), false)],
    )]);
    assert_eq!(matched(&scheme, &Req::new("/")), Some("s"));

    // Envoy holds Host only as :authority: a `host` matcher never sees it.
    let host = vhost(vec![with_headers(
        "h",
        vec![header("host", HeaderMatch::Present(true), false)],
    )]);
    assert_eq!(
        matched(&host, &Req::new("/").header("host", "svc.local")),
        None
    );
}

#[test]
fn repeated_headers_match_line_by_line() {
    // Envoy 1.40: a header sent on several lines matches when any line matches.
    let exact = |v: &str, invert: bool| {
        vhost(vec![with_headers(
            "r",
            vec![header(
                "x-tag",
                string(StringMatch::Exact(v.into(), false)),
                invert,
            )],
        )])
    };
    let two_lines = Req::new("/").header("x-tag", "a").header("x-tag", "b");
    assert_eq!(matched(&exact("b", false), &two_lines), Some("r"));
    assert_eq!(matched(&exact("a,b", false), &two_lines), None);
    // Inverted: no line may match.
    assert_eq!(matched(&exact("a", true), &two_lines), None);
    assert_eq!(matched(&exact("c", true), &two_lines), Some("r"));
    // One line holding a comma is one value.
    assert_eq!(
        matched(&exact("a,b", false), &Req::new("/").header("x-tag", "a,b")),
        Some("r")
    );
}

#[test]
fn query_parameter_matchers() {
    let mut r = route("r", prefix("/"));
    r.matcher.query_parameters = vec![
        QueryParameterMatcher {
            name: "debug".into(),
            matcher: None,
        },
        QueryParameterMatcher {
            name: "v".into(),
            matcher: Some(StringMatch::Exact("2".into(), false)),
        },
    ];
    let vh = vhost(vec![r]);
    assert_eq!(matched(&vh, &Req::new("/x?debug&v=2")), Some("r"));
    assert_eq!(matched(&vh, &Req::new("/x?v=2&debug=0")), Some("r"));
    assert_eq!(matched(&vh, &Req::new("/x?v=2")), None);
    assert_eq!(matched(&vh, &Req::new("/x?debug&v=3")), None);
    // The first occurrence counts.
    assert_eq!(matched(&vh, &Req::new("/x?debug&v=3&v=2")), None);
    assert_eq!(matched(&vh, &Req::new("/x?debug&v=2&v=3")), Some("r"));
    // Names are case-sensitive and values compared raw.
    assert_eq!(matched(&vh, &Req::new("/x?DEBUG&v=2")), None);
    assert_eq!(matched(&vh, &Req::new("/x?debug&v=%32")), None);
    // A fragment is not part of the query.
    assert_eq!(matched(&vh, &Req::new("/x#?debug&v=2")), None);
}

/// Random route tables of prefix/exact routes against the rules written the slow way.
#[test]
fn path_matching_oracle() {
    let mut rng = fastrand::Rng::with_seed(21);
    let seg = ["a", "B", "ab", "Ab", "c"];
    let path = |rng: &mut fastrand::Rng| -> String {
        (0..rng.usize(0..4))
            .map(|_| format!("/{}", seg[rng.usize(..seg.len())]))
            .collect()
    };
    for _ in 0..500 {
        let routes: Vec<Route> = (0..rng.usize(1..8))
            .map(|i| {
                let p = path(&mut rng);
                let mut r = if rng.bool() {
                    route(&i.to_string(), prefix(&p))
                } else {
                    route(&i.to_string(), exact(&p))
                };
                r.matcher.case_sensitive = rng.bool();
                r
            })
            .collect();
        let vh = vhost(routes);
        for _ in 0..20 {
            let mut p = path(&mut rng);
            if p.is_empty() {
                p.push('/');
            }
            if rng.bool() {
                p.push_str("?a=1");
            }
            let expected = vh.routes.iter().find(|r| {
                let fold = |s: &str| {
                    if r.matcher.case_sensitive {
                        s.to_string()
                    } else {
                        s.to_lowercase()
                    }
                };
                let without_query = p.split('?').next().unwrap_or("");
                match &r.matcher.path {
                    PathMatch::Prefix(x) => fold(&p).starts_with(&fold(x)),
                    PathMatch::Exact(x) => fold(without_query) == fold(x),
                    PathMatch::Regex(_) => unreachable!(),
                }
            });
            assert_eq!(
                matched(&vh, &Req::new(&p)),
                expected.map(|r| r.name.as_str()),
                "{p}"
            );
        }
    }
}

/// `invert` flips a value matcher on a present header and never helps a missing one.
#[test]
fn invert_property() {
    let mut rng = fastrand::Rng::with_seed(22);
    let vals = ["", "a", "ab", "abc", "b", "ba"];
    for _ in 0..2_000 {
        let pat = vals[rng.usize(1..vals.len())].to_string();
        let ic = rng.bool();
        let m = match rng.u8(..4) {
            0 => StringMatch::Exact(pat, ic),
            1 => StringMatch::Prefix(pat, ic),
            2 => StringMatch::Suffix(pat, ic),
            _ => StringMatch::Contains(pat, ic),
        };
        let plain = vhost(vec![with_headers(
            "r",
            vec![header("x", string(m.clone()), false)],
        )]);
        let inverted = vhost(vec![with_headers("r", vec![header("x", string(m), true)])]);
        let req = if rng.u8(..4) == 0 {
            Req::new("/")
        } else {
            Req::new("/").header("x", vals[rng.usize(..vals.len())])
        };
        let present = req.headers.contains_key("x");
        let (a, b) = (
            matched(&plain, &req).is_some(),
            matched(&inverted, &req).is_some(),
        );
        if present {
            assert_ne!(a, b);
        } else {
            assert!(!a && !b);
        }
    }
}

fn weighted(weights: &[u32]) -> Vec<WeightedCluster> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| WeightedCluster {
            name: format!("c{i}"),
            weight,
            request_headers: Default::default(),
            response_headers: Default::default(),
            filter_configs: Default::default(),
        })
        .collect()
}

#[test]
fn pick_weighted_boundaries() {
    let cs = weighted(&[1, 0, 2]);
    let name = |r| pick_weighted(&cs, r).map(|c| c.name.as_str());
    assert_eq!(name(0), Some("c0"));
    assert_eq!(name(1), Some("c2"));
    assert_eq!(name(2), Some("c2"));
    assert_eq!(name(3), Some("c0"));
    assert_eq!(name(u64::MAX), Some("c0")); // u64::MAX % 3 == 0
    assert!(pick_weighted(&weighted(&[0, 0]), 5).is_none());
    assert!(pick_weighted(&[], 5).is_none());
    assert_eq!(
        pick_weighted(&weighted(&[u32::MAX, u32::MAX]), u64::from(u32::MAX))
            .map(|c| c.name.as_str()),
        Some("c1")
    );
}

#[test]
fn pick_weighted_distribution() {
    let mut rng = fastrand::Rng::with_seed(23);
    for _ in 0..20 {
        let weights: Vec<u32> = (0..rng.usize(1..8)).map(|_| rng.u32(0..100)).collect();
        let total: u32 = weights.iter().sum();
        if total == 0 {
            continue;
        }
        let cs = weighted(&weights);
        let draws = 100_000;
        let mut counts = vec![0u32; cs.len()];
        for _ in 0..draws {
            let c = pick_weighted(&cs, rng.u64(..)).expect("a cluster");
            counts[cs
                .iter()
                .position(|x| std::ptr::eq(x, c))
                .expect("from the list")] += 1;
        }
        // Pearson's chi-square over the clusters with weight; zero weights are never picked.
        let mut chi2 = 0.0;
        let mut cells = 0;
        for (&w, &n) in weights.iter().zip(&counts) {
            if w == 0 {
                assert_eq!(n, 0);
                continue;
            }
            let expected = f64::from(draws) * f64::from(w) / f64::from(total);
            chi2 += (f64::from(n) - expected).powi(2) / expected;
            cells += 1;
        }
        // Far beyond the 99.9th percentile for <= 7 degrees of freedom (24.3).
        assert!(
            chi2 < 30.0,
            "chi2 {chi2} over {cells} cells, weights {weights:?}"
        );
    }
}

fn header_policy(name: &str, terminal: bool) -> HashPolicy {
    HashPolicy::Header {
        name: name.to_string(),
        terminal,
    }
}

#[test]
fn hash_policies() {
    let req = Req::new("/p?user=alice&x=1")
        .header("x-user", "bob")
        .header("cookie", "sid=s1; other=2");
    let v = req.view();
    assert_eq!(request_hash(&[], &v), None);
    assert_eq!(
        request_hash(&[header_policy("x-user", false)], &v),
        Some(xxhash64(b"bob", 0))
    );
    assert_eq!(request_hash(&[header_policy("missing", false)], &v), None);
    assert_eq!(
        request_hash(&[header_policy(":authority", false)], &v),
        Some(xxhash64(b"svc.local:8080", 0))
    );
    assert_eq!(request_hash(&[header_policy("host", false)], &v), None);
    let cookie = HashPolicy::Cookie {
        name: "sid".into(),
        ttl: Some(std::time::Duration::from_secs(60)),
        path: None,
        terminal: false,
    };
    assert_eq!(
        request_hash(std::slice::from_ref(&cookie), &v),
        Some(xxhash64(b"s1", 0))
    );
    let no_cookie = HashPolicy::Cookie {
        name: "absent".into(),
        ttl: Some(std::time::Duration::from_secs(60)),
        path: None,
        terminal: false,
    };
    assert_eq!(request_hash(&[no_cookie], &v), None);
    let query = HashPolicy::QueryParameter {
        name: "user".into(),
        terminal: false,
    };
    assert_eq!(
        request_hash(std::slice::from_ref(&query), &v),
        Some(xxhash64(b"alice", 0))
    );
    let ip = HashPolicy::SourceIp { terminal: false };
    assert_eq!(
        request_hash(std::slice::from_ref(&ip), &v),
        Some(xxhash64(b"10.0.0.7", 0))
    );

    // Combination: rotate the running hash left by one, XOR the next value.
    let h1 = xxhash64(b"bob", 0);
    let h2 = xxhash64(b"alice", 0);
    assert_eq!(
        request_hash(&[header_policy("x-user", false), query.clone()], &v),
        Some(h1.rotate_left(1) ^ h2)
    );
    // The same policy twice does not cancel out.
    assert_eq!(
        request_hash(
            &[
                header_policy("x-user", false),
                header_policy("x-user", false)
            ],
            &v
        ),
        Some(h1.rotate_left(1) ^ h1)
    );
    // A terminal policy that produced a hash ends evaluation; one that did not, does not.
    assert_eq!(
        request_hash(&[header_policy("x-user", true), query.clone()], &v),
        Some(h1)
    );
    assert_eq!(
        request_hash(
            &[
                header_policy("missing", true),
                query.clone(),
                header_policy("x-user", false)
            ],
            &v
        ),
        Some(h2.rotate_left(1) ^ h1)
    );
    // Terminal also stops on a hash computed by earlier policies.
    assert_eq!(
        request_hash(
            &[
                query.clone(),
                header_policy("missing", true),
                header_policy("x-user", false)
            ],
            &v
        ),
        Some(h2)
    );
}

#[test]
fn source_ip_hash_ignores_the_port() {
    let mut a = Req::new("/");
    let mut b = Req::new("/");
    a.source = SocketAddr::from(([192, 168, 1, 1], 1000));
    b.source = SocketAddr::from(([192, 168, 1, 1], 2000));
    let ip = [HashPolicy::SourceIp { terminal: false }];
    assert_eq!(request_hash(&ip, &a.view()), request_hash(&ip, &b.view()));
    b.source = "[2001:db8::1]:80".parse().expect("addr");
    assert_eq!(
        request_hash(&ip, &b.view()),
        Some(xxhash64(b"2001:db8::1", 0))
    );
}

#[test]
fn header_hash_ignores_value_order() {
    let a = Req::new("/").header("x-k", "one").header("x-k", "two");
    let b = Req::new("/").header("x-k", "two").header("x-k", "one");
    let c = Req::new("/").header("x-k", "one");
    let p = [header_policy("x-k", false)];
    assert_eq!(request_hash(&p, &a.view()), request_hash(&p, &b.view()));
    assert_ne!(request_hash(&p, &a.view()), request_hash(&p, &c.view()));
}

#[test]
fn realistic_table() {
    let config = RouteConfig {
        name: "rc".into(),
        virtual_hosts: vec![
            VirtualHost {
                name: "web".into(),
                domains: vec![
                    crate::config::DomainMatch::Exact("web".into()),
                    crate::config::DomainMatch::Suffix(".web.svc".into()),
                ],
                ..vhost(vec![
                    route("web-api", prefix("/api")),
                    route("web-root", prefix("/")),
                ])
            },
            VirtualHost {
                name: "default".into(),
                ..vhost(vec![route("fallback", prefix("/"))])
            },
        ],
        request_headers: Default::default(),
        response_headers: Default::default(),
        filter_configs: Default::default(),
    };
    let vh = select_virtual_host(&config, "api.web.svc").expect("vhost");
    assert_eq!(vh.name, "web");
    assert_eq!(matched(vh, &Req::new("/api/x")), Some("web-api"));
    let vh = select_virtual_host(&config, "other:80").expect("vhost");
    assert_eq!(vh.name, "default");
}
