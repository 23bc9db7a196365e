//! CDS: the local application's cluster and one EDS cluster per discovery-chain target; a
//! target with failover becomes an aggregate cluster over one EDS cluster per failover step.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::extensions::clusters::aggregate::v3::ClusterConfig as AggregateConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{UInt32Value, UInt64Value};
use envoy_types::util::pack_any;
use mesh_proto::config_entry::{LoadBalancer, LoadBalancerPolicy, Protocol};
use std::collections::HashMap;
use std::time::Duration;

use super::chain::Resolved;
use super::{ads_config_source, duration, socket_address};

/// The cluster the public listener forwards to: the service this sidecar fronts.
pub const LOCAL_APP_CLUSTER: &str = "local_app";

/// The key Envoy looks up upstream HTTP options under in `typed_extension_protocol_options`.
const HTTP_PROTOCOL_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

pub(crate) fn local_app(
    address: &str,
    port: u16,
    connect_timeout: Duration,
    protocol: Protocol,
) -> Cluster {
    let endpoint = LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket_address(address, port)),
            ..Default::default()
        })),
        ..Default::default()
    };
    Cluster {
        name: LOCAL_APP_CLUSTER.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(duration(connect_timeout)),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: LOCAL_APP_CLUSTER.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![endpoint],
                ..Default::default()
            }],
            ..Default::default()
        }),
        typed_extension_protocol_options: protocol_options(protocol),
        ..Default::default()
    }
}

/// Envoy's name for the aggregate cluster type.
const AGGREGATE_CLUSTER_TYPE: &str = "envoy.clusters.aggregate";

/// Consul's name for step `index` of a failover (0: the target itself) of cluster `name`.
pub(crate) fn failover_cluster_name(index: usize, name: &str) -> String {
    format!("failover-target~{index}~{name}")
}

/// An EDS cluster whose endpoints come over ADS under the cluster's own name. Its panic
/// threshold is 0, as Consul sets it: with no healthy endpoint requests fail (503 `no
/// healthy upstream`) rather than go to the unhealthy ones, and an aggregate cluster over it
/// moves on to the next one.
pub(crate) fn target_cluster(name: &str, resolved: &Resolved, protocol: Protocol) -> Cluster {
    let mut cluster = Cluster {
        common_lb_config: Some(cluster::CommonLbConfig {
            healthy_panic_threshold: Some(Percent { value: 0.0 }),
            ..Default::default()
        }),
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads_config_source()),
            service_name: name.to_string(),
        }),
        connect_timeout: Some(duration(resolved.connect_timeout)),
        typed_extension_protocol_options: protocol_options(protocol),
        ..Default::default()
    };
    if let Some(lb) = &resolved.load_balancer {
        apply_load_balancer(&mut cluster, lb);
    }
    cluster
}

/// Envoy's aggregate cluster over `clusters`, tried in that order: a request goes to the
/// first one with healthy endpoints (spilling over by Envoy's priority rules while it has
/// too few).
pub(crate) fn aggregate_cluster(
    name: &str,
    connect_timeout: Duration,
    clusters: Vec<String>,
) -> Cluster {
    Cluster {
        name: name.to_string(),
        connect_timeout: Some(duration(connect_timeout)),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::ClusterType(
            cluster::CustomClusterType {
                name: AGGREGATE_CLUSTER_TYPE.to_string(),
                typed_config: Some(pack_any(AggregateConfig { clusters })),
            },
        )),
        ..Default::default()
    }
}

fn apply_load_balancer(cluster: &mut Cluster, lb: &LoadBalancer) {
    use cluster::{LbConfig, LbPolicy};
    let Some(policy) = lb.policy else {
        return;
    };
    let (lb_policy, lb_config) = match policy {
        LoadBalancerPolicy::RoundRobin => (LbPolicy::RoundRobin, None),
        LoadBalancerPolicy::Random => (LbPolicy::Random, None),
        LoadBalancerPolicy::Maglev => (LbPolicy::Maglev, None),
        LoadBalancerPolicy::LeastRequest => {
            // Zero keeps Envoy's default choice count.
            let config = lb
                .least_request_config
                .as_ref()
                .filter(|c| c.choice_count > 0)
                .map(|c| {
                    LbConfig::LeastRequestLbConfig(cluster::LeastRequestLbConfig {
                        choice_count: Some(UInt32Value {
                            value: c.choice_count,
                        }),
                        ..Default::default()
                    })
                });
            (LbPolicy::LeastRequest, config)
        }
        LoadBalancerPolicy::RingHash => {
            let size = |v: u64| (v > 0).then_some(UInt64Value { value: v });
            let config = lb.ring_hash_config.as_ref().map(|c| {
                LbConfig::RingHashLbConfig(cluster::RingHashLbConfig {
                    minimum_ring_size: size(c.minimum_ring_size),
                    maximum_ring_size: size(c.maximum_ring_size),
                    ..Default::default()
                })
            });
            (LbPolicy::RingHash, config)
        }
    };
    cluster.lb_policy = lb_policy as i32;
    cluster.lb_config = lb_config;
}

/// HTTP/2 to the upstream for http2 and gRPC services. The typed extension option replaces
/// `Cluster.http2_protocol_options`, which Envoy 1.40 deprecates.
fn protocol_options(protocol: Protocol) -> HashMap<String, envoy_types::pb::google::protobuf::Any> {
    if !matches!(protocol, Protocol::Http2 | Protocol::Grpc) {
        return HashMap::new();
    }
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(
                        http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions::default(),
                        ),
                    ),
                },
            ),
        ),
        ..Default::default()
    };
    // A single entry, so the map's iteration order cannot make encodings differ.
    HashMap::from([(HTTP_PROTOCOL_OPTIONS_KEY.to_string(), pack_any(options))])
}
