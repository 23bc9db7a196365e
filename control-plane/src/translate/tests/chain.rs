use mesh_proto::config_entry::Protocol;
use serde_json::json;
use std::time::Duration;

use super::super::chain::{ChainError, Destination, Target, compile};
use super::view_with;

fn weights(d: &Destination) -> Vec<(String, u32)> {
    match d {
        Destination::Split(s) => s
            .iter()
            .map(|w| (w.target.cluster_name(), w.weight))
            .collect(),
        Destination::Target(t) => panic!("not a split: {t:?}"),
    }
}

#[test]
fn nested_splitters_flatten_with_exact_weights() {
    let view = view_with(&[
        json!({"Kind": "service-resolver", "Name": "api-v2", "Subsets": {"a": {}, "b": {}}}),
        json!({"Kind": "service-splitter", "Name": "api", "Splits": [
            {"Weight": 50, "Service": "api-v2", "RequestHeaders": {"Set": {"x-outer": "1", "x-both": "outer"}}},
            {"Weight": 50}]}),
        json!({"Kind": "service-splitter", "Name": "api-v2", "Splits": [
            {"Weight": 33.33, "ServiceSubset": "a", "RequestHeaders": {"Set": {"x-both": "inner"}}},
            {"Weight": 66.67, "ServiceSubset": "b"}]}),
    ]);
    let chain = compile(&view, "api", Protocol::Http, "dc1").unwrap();
    // 50% of 33.33% is 16.665%: the half hundredth goes to the first of the tied splits.
    assert_eq!(
        weights(&chain.default.destination),
        [
            ("a.api-v2".to_string(), 1667),
            ("b.api-v2".to_string(), 3333),
            ("api".to_string(), 5000)
        ]
    );
    let Destination::Split(splits) = &chain.default.destination else {
        panic!()
    };
    let headers = splits[0].request_headers.as_ref().unwrap();
    assert_eq!(headers.set["x-both"], "inner");
    assert_eq!(headers.set["x-outer"], "1");
    assert_eq!(chain.targets.len(), 3);
}

#[test]
fn splitter_loops_and_redirect_loops_are_errors() {
    let view = view_with(&[
        json!({"Kind": "service-splitter", "Name": "a", "Splits": [{"Weight": 50, "Service": "b"}, {"Weight": 50}]}),
        json!({"Kind": "service-splitter", "Name": "b", "Splits": [{"Weight": 100, "Service": "a"}]}),
    ]);
    assert_eq!(
        compile(&view, "a", Protocol::Http, "dc1").unwrap_err(),
        ChainError::SplitterLoop(vec!["a".into(), "b".into(), "a".into()])
    );
    let view = view_with(&[
        json!({"Kind": "service-resolver", "Name": "a", "Redirect": {"Service": "b"}}),
        json!({"Kind": "service-resolver", "Name": "b", "Redirect": {"Service": "a"}}),
    ]);
    let err = compile(&view, "a", Protocol::Tcp, "dc1").unwrap_err();
    assert_eq!(
        err.to_string(),
        "service-resolver redirect loop: a -> b -> a"
    );
}

#[test]
fn unknown_subsets_are_errors() {
    let view = view_with(
        &[json!({"Kind": "service-router", "Name": "api", "Routes": [
        {"Destination": {"ServiceSubset": "v9"}}]})],
    );
    assert_eq!(
        compile(&view, "api", Protocol::Http, "dc1").unwrap_err(),
        ChainError::UnknownSubset {
            service: "api".into(),
            subset: "v9".into()
        }
    );
}

#[test]
fn redirect_keeps_or_replaces_the_subset() {
    let view = view_with(&[
        json!({"Kind": "service-resolver", "Name": "old", "Redirect": {"Service": "new", "ServiceSubset": "v2"}}),
        json!({"Kind": "service-resolver", "Name": "new", "DefaultSubset": "v1",
               "ConnectTimeout": "1s", "RequestTimeout": "9s", "Subsets": {"v1": {}, "v2": {"OnlyPassing": true}}}),
        json!({"Kind": "service-resolver", "Name": "dc", "Redirect": {"Datacenter": "dc2"}}),
    ]);
    let chain = compile(&view, "old", Protocol::Tcp, "dc1").unwrap();
    assert_eq!(
        chain.default.destination,
        Destination::Target(Target::new("new", "v2"))
    );
    let resolved = &chain.targets[&Target::new("new", "v2")];
    assert!(resolved.subset.only_passing);
    assert_eq!(resolved.connect_timeout, Duration::from_secs(1));
    assert_eq!(chain.default_timeout, Some(Duration::from_secs(9)));

    let chain = compile(&view, "new", Protocol::Tcp, "dc1").unwrap();
    assert_eq!(
        chain.default.destination,
        Destination::Target(Target::new("new", "v1"))
    );
    // Only this datacenter exists for the mesh: a redirect to another is refused, one to
    // this datacenter changes nothing.
    assert_eq!(
        compile(&view, "dc", Protocol::Tcp, "dc1")
            .unwrap_err()
            .to_string(),
        r#"service-resolver "dc": Redirect.Datacenter: datacenter "dc2" is not supported (the mesh spans this datacenter only, "dc1")"#
    );
    let chain = compile(&view, "dc", Protocol::Tcp, "dc2").unwrap();
    assert_eq!(
        chain.default.destination,
        Destination::Target(Target::new("dc", ""))
    );
    assert_eq!(
        chain.targets[&Target::new("dc", "")].connect_timeout,
        Duration::from_secs(5)
    );
}

#[test]
fn tcp_chains_ignore_routers_and_splitters() {
    let view = view_with(&[
        json!({"Kind": "service-router", "Name": "api", "Routes": [{"Destination": {"Service": "x"}}]}),
        json!({"Kind": "service-splitter", "Name": "api", "Splits": [{"Weight": 100, "Service": "y"}]}),
        json!({"Kind": "service-resolver", "Name": "api", "RequestTimeout": "4s"}),
    ]);
    let chain = compile(&view, "api", Protocol::Tcp, "dc1").unwrap();
    assert!(chain.routes.is_empty());
    assert_eq!(
        chain.default.destination,
        Destination::Target(Target::new("api", ""))
    );
    assert_eq!(chain.targets.len(), 1);

    let chain = compile(&view, "api", Protocol::Http, "dc1").unwrap();
    assert_eq!(chain.routes.len(), 1);
    // Behind a router or splitter the resolver's RequestTimeout does not apply (as in Consul).
    assert_eq!(chain.default_timeout, None);
    assert_eq!(
        weights(&chain.default.destination),
        [("y".to_string(), 10000)]
    );
}

#[test]
fn hash_policies_come_from_the_first_hash_based_resolver() {
    let view = view_with(&[
        json!({"Kind": "service-splitter", "Name": "api", "Splits": [
            {"Weight": 50, "Service": "plain"}, {"Weight": 50, "Service": "sticky"}]}),
        json!({"Kind": "service-resolver", "Name": "plain", "LoadBalancer": {"Policy": "least_request"}}),
        json!({"Kind": "service-resolver", "Name": "sticky", "LoadBalancer": {"Policy": "ring_hash",
            "HashPolicies": [{"SourceIP": true}]}}),
    ]);
    let chain = compile(&view, "api", Protocol::Http, "dc1").unwrap();
    let lb = chain.default.load_balancer.unwrap();
    assert!(lb.hash_policies[0].source_ip);
    let chain = compile(&view, "plain", Protocol::Http, "dc1").unwrap();
    assert_eq!(chain.default.load_balancer, None);
}
