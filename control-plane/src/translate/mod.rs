//! Registry view -> each sidecar's xDS resources, following Consul's own xDS generation.
//!
//! A sidecar is a `connect-proxy` registration; its service ID is Envoy's `node.id`. Each gets:
//!
//! | resource | name | what |
//! |---|---|---|
//! | listener | `public_listener` | inbound, `Address` (or `0.0.0.0`) : `Port`, to `local_app` |
//! | cluster | `local_app` | STATIC, `LocalServiceAddress` (127.0.0.1) : `LocalServicePort` |
//! | listener | `<DestinationName>:<bind address>:<bind port>` | one per upstream, outbound |
//! | route | `<DestinationName>` | RDS for an http/http2/grpc upstream, one virtual host of the same name |
//! | cluster + endpoints | `<service>` or `<subset>.<service>` | one EDS cluster per discovery-chain target |
//!
//! Stat prefixes are `public_listener` and `upstream.<DestinationName>`. Cluster names are kept
//! this short on purpose (Consul uses SNI-style names with datacenter and trust domain); a
//! service named `local_app`, or one whose name collides with another's `<subset>.<service>`,
//! is reported as a [`TranslateError::NameCollision`] rather than silently merged.
//!
//! A target with resolver failover is, as in Consul, an aggregate cluster
//! (`envoy.clusters.aggregate`) under the target's name over EDS clusters
//! `failover-target~<i>~<name>`, the target first, then its failover targets in order.
//! Target clusters disable Envoy's panic threshold (Consul does): with no healthy endpoint a
//! cluster answers 503 rather than sending to unhealthy ones, and an aggregate moves on.
//!
//! Not supported: other datacenters (an upstream, redirect or failover naming one is a
//! translation error), prepared-query upstreams (skipped), mTLS between sidecars and
//! intentions (the public listener is plain TCP/HTTP), and checking that RE2 regexes compile
//! (a bad one is NACKed by Envoy, which keeps the previous configuration).

mod chain;
mod check;
mod clusters;
mod endpoints;
mod filter;
mod listeners;
mod proxy;
mod routes;
#[cfg(test)]
mod tests;

pub use chain::{ChainError, FailoverProtocol, OtherDatacenter};
pub use check::{check_resources, check_snapshot, unpack};
pub use clusters::LOCAL_APP_CLUSTER;
pub use listeners::{PUBLIC_LISTENER, upstream_listener_name};

use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address,
    config_source, socket_address as socket,
};
use mesh_proto::config_entry::{
    ConfigEntry, ConfigKind, Protocol, ServiceDefaults, effective_protocol,
};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::model::RegistryView;
use crate::snapshot::Snapshot;
use proxy::Translator;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TranslateError {
    #[error("proxy {proxy:?}: {field} is not set")]
    MissingField { proxy: String, field: String },
    #[error("proxy {proxy:?}: {field} {value:?} is not an IP address")]
    NotAnIp {
        proxy: String,
        field: String,
        value: String,
    },
    #[error("proxy {proxy:?}: upstream {upstream:?}: {source}")]
    Chain {
        proxy: String,
        upstream: String,
        source: ChainError,
    },
    #[error(
        "proxy {proxy:?}: service-resolver {service:?} subset {subset:?}: cannot use Filter {filter:?}: {reason}"
    )]
    SubsetFilter {
        proxy: String,
        service: String,
        subset: String,
        filter: String,
        reason: String,
    },
    #[error(
        "proxy {proxy:?}: {field}: datacenter {datacenter:?} is not supported (the mesh spans this datacenter only, {local:?})"
    )]
    OtherDatacenter {
        proxy: String,
        field: String,
        datacenter: String,
        local: String,
    },
    #[error("proxy {proxy:?}: two different {kind}s would both be named {name:?}")]
    NameCollision {
        proxy: String,
        kind: &'static str,
        name: String,
    },
    #[error("proxy {proxy:?}: inconsistent configuration: {}", .problems.join("; "))]
    Inconsistent {
        proxy: String,
        problems: Vec<String>,
    },
}

/// Snapshots by proxy ID (Envoy's `node.id`).
pub type ProxySnapshots = HashMap<String, Arc<Snapshot>>;

/// The whole configuration of sidecar `proxy_id` (a connect-proxy service ID = Envoy node.id).
/// Unknown id -> `Ok(Snapshot::empty())`.
pub fn snapshot_for(view: &RegistryView, proxy_id: &str) -> Result<Snapshot, TranslateError> {
    match view.proxies().find(|e| e.service.id == proxy_id) {
        Some(entry) => Translator::new(view).snapshot(entry),
        None => Ok(Snapshot::empty()),
    }
}

/// Every known proxy's snapshot; a proxy whose translation fails is left out and its error
/// returned alongside (the caller keeps its last good snapshot).
pub fn all_snapshots(view: &RegistryView) -> (ProxySnapshots, Vec<(String, TranslateError)>) {
    let translator = Translator::new(view);
    let mut snapshots = HashMap::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for proxy in view.proxies() {
        let id = proxy.service.id.as_str();
        // Two nodes may reuse a service ID; like `RegistryView::proxy`, the first one wins.
        if !seen.insert(id) {
            continue;
        }
        match translator.snapshot(proxy) {
            Ok(snapshot) => {
                snapshots.insert(id.to_string(), Arc::new(snapshot));
            }
            Err(error) => errors.push((id.to_string(), error)),
        }
    }
    (snapshots, errors)
}

/// service-defaults `Protocol`, else proxy-defaults `Config.protocol`, else tcp.
fn protocol(view: &RegistryView, service: &str) -> Protocol {
    effective_protocol(service, &view.lookup())
        .parse()
        .unwrap_or(Protocol::Tcp)
}

fn service_defaults<'v>(view: &'v RegistryView, service: &str) -> Option<&'v ServiceDefaults> {
    match view.config_entry(ConfigKind::ServiceDefaults, service) {
        Some(ConfigEntry::ServiceDefaults(d)) => Some(d),
        _ => None,
    }
}

/// Envoy listeners and static endpoints take IP addresses only.
fn ip(proxy: &str, field: &str, value: &str) -> Result<String, TranslateError> {
    value
        .parse::<IpAddr>()
        .map(|ip| ip.to_string())
        .map_err(|_| TranslateError::NotAnIp {
            proxy: proxy.to_string(),
            field: field.to_string(),
            value: value.to_string(),
        })
}

/// A sidecar-local address: 127.0.0.1 when empty, and `localhost` is taken to mean it too.
fn local_ip(proxy: &str, field: &str, value: &str) -> Result<String, TranslateError> {
    match value {
        "" | "localhost" => Ok("127.0.0.1".to_string()),
        _ => ip(proxy, field, value),
    }
}

fn socket_address(ip: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// EDS and RDS come back over the same ADS stream.
fn ads_config_source() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn duration(d: Duration) -> envoy_types::pb::google::protobuf::Duration {
    envoy_types::pb::google::protobuf::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}
