//! EDS: the instances behind each target cluster, with Consul's health and weight rules.

use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use mesh_proto::consul::{CheckStatus, ServiceEntry, Weights};
use std::collections::BTreeMap;
use std::net::IpAddr;

use super::chain::{Resolved, Target};
use super::filter::Filter;
use super::socket_address;
use crate::model::RegistryView;

/// Envoy's range for `load_balancing_weight` is 1..=128 in Consul's use of it.
const MAX_WEIGHT: i32 = 128;

/// Where an instance's mesh traffic enters: the connect-proxy registered on the same node for
/// it (by `DestinationServiceID`, or by `DestinationServiceName` when the proxy names no ID).
pub(crate) struct Sidecars<'v> {
    by_id: BTreeMap<(&'v str, &'v str), &'v ServiceEntry>,
    by_name: BTreeMap<(&'v str, &'v str), &'v ServiceEntry>,
}

impl<'v> Sidecars<'v> {
    pub(crate) fn index(view: &'v RegistryView) -> Sidecars<'v> {
        let mut sidecars = Sidecars {
            by_id: BTreeMap::new(),
            by_name: BTreeMap::new(),
        };
        for entry in view.proxies() {
            let Some(proxy) = &entry.service.proxy else {
                continue;
            };
            let node = entry.node.node.as_str();
            // First registration wins, so a duplicate cannot make the result depend on order
            // within the registry's answer beyond the view itself.
            if proxy.destination_service_id.is_empty() {
                sidecars
                    .by_name
                    .entry((node, &proxy.destination_service_name))
                    .or_insert(entry);
            } else {
                sidecars
                    .by_id
                    .entry((node, &proxy.destination_service_id))
                    .or_insert(entry);
            }
        }
        sidecars
    }

    pub(crate) fn of(&self, instance: &ServiceEntry) -> Option<&'v ServiceEntry> {
        let node = instance.node.node.as_str();
        self.by_id
            .get(&(node, instance.service.id.as_str()))
            .or_else(|| self.by_name.get(&(node, instance.service.service.as_str())))
            .copied()
    }
}

/// The endpoints of `target`: instances of its service (plain services, not proxies or
/// gateways) that pass its subset's filter, at their sidecar's address when they have one.
pub(crate) fn load_assignment(
    view: &RegistryView,
    sidecars: &Sidecars<'_>,
    target: &Target,
    resolved: &Resolved,
    filter: &Filter,
) -> ClusterLoadAssignment {
    let mut endpoints: Vec<(IpAddr, u16, LbEndpoint)> = Vec::new();
    for instance in view.instances(&target.service) {
        if !instance.service.kind.is_empty() || !filter.matches(instance) {
            continue;
        }
        let sidecar = sidecars.of(instance);
        let (ip, port) = match address_of(sidecar.unwrap_or(instance)) {
            Some(addr) => addr,
            None => {
                tracing::warn!(
                    service = %target.service,
                    instance = %instance.service.id,
                    "skipping an instance without an IP address and port"
                );
                continue;
            }
        };
        let checks = instance
            .checks
            .iter()
            .chain(sidecar.into_iter().flat_map(|s| s.checks.iter()))
            .map(|c| c.status);
        let (health, weight) = health_and_weight(
            checks,
            &instance.service.weights,
            resolved.subset.only_passing,
        );
        let endpoint = LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(socket_address(&ip.to_string(), port)),
                ..Default::default()
            })),
            health_status: health as i32,
            load_balancing_weight: Some(UInt32Value { value: weight }),
            ..Default::default()
        };
        endpoints.push((ip, port, endpoint));
    }
    // The registry's order is not part of the configuration; sorting keeps versions stable.
    endpoints.sort_by_key(|e| (e.0, e.1));
    ClusterLoadAssignment {
        cluster_name: target.cluster_name(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: endpoints.into_iter().map(|(_, _, e)| e).collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// `Service.Address`, else the node's address, with `Service.Port`. EDS only takes IPs.
fn address_of(entry: &ServiceEntry) -> Option<(IpAddr, u16)> {
    let address = if entry.service.address.is_empty() {
        &entry.node.address
    } else {
        &entry.service.address
    };
    let ip = address.parse().ok()?;
    (entry.service.port != 0).then_some((ip, entry.service.port))
}

/// Consul's rules: any critical check (maintenance included) makes the endpoint unhealthy, and
/// so does any non-passing one for an `OnlyPassing` subset; the weight is `Weights.Warning`
/// while a check warns, else `Weights.Passing`. A weight below 1 means "send nothing" (so
/// unhealthy, weight 1); above 128 is clamped.
pub(crate) fn health_and_weight(
    checks: impl IntoIterator<Item = CheckStatus>,
    weights: &Weights,
    only_passing: bool,
) -> (HealthStatus, u32) {
    let mut healthy = true;
    let mut weight = weights.passing;
    for status in checks {
        match status {
            CheckStatus::Critical | CheckStatus::Maintenance => healthy = false,
            CheckStatus::Warning => {
                weight = weights.warning;
                healthy &= !only_passing;
            }
            CheckStatus::Passing => {}
        }
    }
    if weight < 1 {
        healthy = false;
        weight = 1;
    }
    let health = if healthy {
        HealthStatus::Healthy
    } else {
        HealthStatus::Unhealthy
    };
    (health, weight.min(MAX_WEIGHT).unsigned_abs())
}
