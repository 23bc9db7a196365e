use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter,
};
use envoy_types::util::pack_any;
use mesh_proto::config_entry::Protocol;

use super::super::chain::compile;
use super::super::check::{check_resources, unpack};
use super::super::listeners::{Handler, listener};
use super::super::{clusters, routes};
use super::view_with;

fn tcp_listener(name: &str, port: u16, cluster: &str) -> Listener {
    listener(
        name,
        "127.0.0.1",
        port,
        TrafficDirection::Outbound,
        "upstream.x",
        Handler::Tcp(cluster.into()),
    )
}

fn eds(name: &str) -> envoy_types::pb::envoy::config::cluster::v3::Cluster {
    let view = view_with(&[]);
    let chain = compile(&view, name, Protocol::Tcp, "dc1").unwrap();
    let resolved = chain.targets.values().next().unwrap();
    clusters::target_cluster(name, resolved, Protocol::Tcp)
}

fn cla(name: &str) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        ..Default::default()
    }
}

#[test]
fn a_consistent_set_has_no_problems() {
    let problems = check_resources(
        &[eds("db")],
        &[cla("db")],
        &[tcp_listener("db:127.0.0.1:1", 1, "db")],
        &[],
    );
    assert_eq!(problems, Vec::<String>::new());
}

#[test]
fn dangling_references_and_orphans() {
    let view = view_with(&[]);
    let chain = compile(&view, "api", Protocol::Http, "dc1").unwrap();
    let problems = check_resources(
        &[eds("db")],
        &[cla("other")],
        &[
            tcp_listener("a", 1, "nowhere"),
            listener(
                "b",
                "127.0.0.1",
                2,
                TrafficDirection::Outbound,
                "upstream.b",
                Handler::HttpRds("missing".into()),
            ),
        ],
        &[routes::route_config("api", &chain)],
    );
    assert_eq!(
        problems,
        [
            "cluster \"db\": no endpoint assignment \"db\"",
            "endpoint assignment \"other\": no EDS cluster uses it",
            "listener \"a\": cluster \"nowhere\" does not exist",
            "listener \"b\": no route configuration \"missing\"",
            "route configuration \"api\": routes[0]: cluster \"api\" does not exist",
            "route configuration \"api\": no listener uses it",
        ]
    );
}

#[test]
fn duplicates_binds_stat_prefixes_and_filter_order() {
    let mut bad = listener(
        "c",
        "127.0.0.1",
        3,
        TrafficDirection::Outbound,
        "",
        Handler::HttpRds("r".into()),
    );
    // Put a second HTTP filter after the router.
    let Some(filter::ConfigType::TypedConfig(any)) = &bad.filter_chains[0].filters[0].config_type
    else {
        panic!()
    };
    let mut hcm: HttpConnectionManager = unpack(any).unwrap();
    hcm.http_filters.push(HttpFilter {
        name: "envoy.filters.http.cors".into(),
        ..Default::default()
    });
    bad.filter_chains[0].filters[0].config_type =
        Some(filter::ConfigType::TypedConfig(pack_any(hcm)));
    let view = view_with(&[]);
    let chain = compile(&view, "db", Protocol::Http, "dc1").unwrap();
    let mut rc = routes::route_config("r", &chain);
    rc.name = "r".into();
    let problems = check_resources(
        &[eds("db"), eds("db")],
        &[cla("db")],
        &[tcp_listener("a", 1, "db"), tcp_listener("b", 1, "db"), bad],
        &[rc],
    );
    assert_eq!(
        problems,
        [
            "cluster \"db\" appears more than once",
            "listener \"b\": binds 127.0.0.1:1 like listener \"a\"",
            "listener \"c\": HCM stat_prefix is empty",
            "listener \"c\": the last HTTP filter is not the router",
        ]
    );
}
