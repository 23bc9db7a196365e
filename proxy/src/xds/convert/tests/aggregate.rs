//! Aggregate clusters, the panic threshold, and the endpoint policy they depend on.

use envoy_types::pb::envoy::config::endpoint::v3::cluster_load_assignment;
use envoy_types::pb::envoy::extensions::clusters::aggregate::v3::ClusterConfig as AggregateConfig;
use envoy_types::pb::envoy::r#type::v3::Percent;

use super::*;

fn aggregate(name: &str, clusters: &[&str]) -> Cluster {
    Cluster {
        name: name.into(),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::ClusterType(
            cluster::CustomClusterType {
                name: "envoy.clusters.aggregate".into(),
                typed_config: Some(pack_any(AggregateConfig {
                    clusters: clusters.iter().map(|c| c.to_string()).collect(),
                })),
            },
        )),
        ..Default::default()
    }
}

fn panic_threshold(value: f64) -> Option<cluster::CommonLbConfig> {
    Some(cluster::CommonLbConfig {
        healthy_panic_threshold: Some(Percent { value }),
        ..Default::default()
    })
}

#[test]
fn an_aggregate_cluster_names_its_clusters_in_order() {
    let c = cluster(aggregate("api", &["primary", "backup"])).unwrap();
    assert_eq!(c.eds_service_name, None);
    let a = c.cluster.aggregate.as_ref().unwrap();
    assert_eq!(a.clusters, ["primary", "backup"]);
    // Envoy's default.
    assert_eq!(a.panic_threshold, 50);
    assert!(c.cluster.endpoints.is_empty());

    let mut c = aggregate("api", &["primary"]);
    c.common_lb_config = panic_threshold(20.4);
    let c = cluster(c).unwrap();
    assert_eq!(c.cluster.aggregate.as_ref().unwrap().panic_threshold, 20);
}

#[test]
fn what_an_aggregate_cluster_refuses() {
    let mut c = aggregate("api", &["primary"]);
    c.lb_policy = cluster::LbPolicy::RoundRobin as i32;
    assert_eq!(
        cluster_error(c),
        r#"cluster "api": lb_policy: an aggregate cluster needs CLUSTER_PROVIDED"#
    );
    assert_eq!(
        cluster_error(aggregate("api", &[])),
        r#"cluster "api": cluster_type.typed_config.clusters: must not be empty"#
    );
    let mut c = aggregate("api", &["primary"]);
    if let Some(cluster::ClusterDiscoveryType::ClusterType(custom)) = &mut c.cluster_discovery_type
    {
        custom.typed_config = Some(pack_any(Router::default()));
    }
    assert_eq!(
        cluster_error(c),
        r#"cluster "api": cluster_type.typed_config: expected envoy.extensions.clusters.aggregate.v3.ClusterConfig, got "envoy.extensions.filters.http.router.v3.Router""#
    );
}

#[test]
fn plain_clusters_take_a_panic_threshold_of_zero_only() {
    let mut c = eds_cluster("api");
    c.common_lb_config = panic_threshold(0.0);
    assert!(cluster(c).is_ok());
    let mut c = eds_cluster("api");
    c.common_lb_config = panic_threshold(50.0);
    assert_eq!(
        cluster_error(c),
        r#"cluster "api": common_lb_config.healthy_panic_threshold: panic mode is not supported: only 0 (never send to unhealthy endpoints)"#
    );
    let mut c = eds_cluster("api");
    c.common_lb_config = Some(cluster::CommonLbConfig {
        close_connections_on_host_set_change: true,
        ..Default::default()
    });
    assert!(
        cluster_error(c)
            .ends_with("common_lb_config.close_connections_on_host_set_change: not supported")
    );
}

#[test]
fn the_endpoint_policy_that_decides_spill_over() {
    let mut cla = assignment("api", vec![lb_endpoint(1, HealthStatus::Healthy, None)]);
    cla.policy = Some(cluster_load_assignment::Policy {
        overprovisioning_factor: Some(UInt32Value { value: 140 }),
        ..Default::default()
    });
    assert!(load_assignment(cla.clone()).is_ok());
    cla.policy = Some(cluster_load_assignment::Policy {
        overprovisioning_factor: Some(UInt32Value { value: 100 }),
        ..Default::default()
    });
    assert_eq!(
        load_assignment(cla.clone()).unwrap_err().to_string(),
        r#"cluster load assignment "api": policy.overprovisioning_factor: only Envoy's default, 140, is supported"#
    );
    cla.policy = Some(cluster_load_assignment::Policy {
        weighted_priority_health: true,
        ..Default::default()
    });
    assert!(load_assignment(cla).is_err());
}
