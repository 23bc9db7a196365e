//! The xDS-to-config conversion on any bytes decoded as the resource the first byte picks:
//! a resource is converted or refused with an error, never a panic.
#![no_main]

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use libfuzzer_sys::fuzz_target;
use mesh_proxy::xds::convert;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 4 {
        0 => {
            if let Ok(l) = Listener::decode(bytes) {
                let _ = convert::listener(l);
            }
        }
        1 => {
            if let Ok(c) = Cluster::decode(bytes) {
                let _ = convert::cluster(c);
            }
        }
        2 => {
            if let Ok(rc) = RouteConfiguration::decode(bytes) {
                let _ = convert::route_configuration(rc);
            }
        }
        _ => {
            if let Ok(cla) = ClusterLoadAssignment::decode(bytes) {
                let _ = convert::load_assignment(cla);
            }
        }
    }
});
