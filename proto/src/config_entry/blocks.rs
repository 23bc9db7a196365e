//! Blocks Consul shares between config entries and proxy registrations (`MeshGateway`, `Expose`,
//! `TransparentProxy`, `UpstreamConfig`, ...), decoded with Consul's full schema so that what a
//! real Consul prints reads back, and checked for what the mesh does not honour yet.
//!
//! Consul's Go structs hold most of these by value, so its output always carries them, empty:
//! `"MeshGateway": {}`, `"Expose": {}`, `"TransparentProxy": {}`. An empty block and an absent
//! one mean the same; only a block with something set asks for behaviour.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

use super::decode::{nanos, opt_enum};
use super::{ConfigEntryError, is_false, is_zero_u32};

wire_enum! {
    pub enum MeshGatewayMode: "mesh gateway mode" {
        None = "none",
        Local = "local",
        Remote = "remote",
    }
}

wire_enum! {
    pub enum MutualTlsMode: "MutualTLSMode" {
        Strict = "strict",
        Permissive = "permissive",
    }
}

wire_enum! {
    pub enum FailoverPolicyMode: "failover policy mode" {
        Sequential = "sequential",
        OrderByLocality = "order-by-locality",
    }
}

wire_enum! {
    pub enum PrioritizeByLocalityMode: "PrioritizeByLocality mode" {
        None = "none",
        Failover = "failover",
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct MeshGatewayConfig {
    #[serde(with = "opt_enum", skip_serializing_if = "Option::is_none")]
    pub mode: Option<MeshGatewayMode>,
}

impl MeshGatewayConfig {
    pub fn is_empty(&self) -> bool {
        self.mode.is_none()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct TransparentProxyConfig {
    #[serde(skip_serializing_if = "is_zero_u16")]
    pub outbound_listener_port: u16,
    #[serde(skip_serializing_if = "is_false")]
    pub dialed_directly: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct ExposeConfig {
    #[serde(skip_serializing_if = "is_false")]
    pub checks: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<ExposePath>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct ExposePath {
    #[serde(skip_serializing_if = "is_zero_u16")]
    pub listener_port: u16,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(skip_serializing_if = "is_zero_u16")]
    pub local_path_port: u16,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(skip_serializing_if = "is_false")]
    pub parsed_from_check: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct AccessLogsConfig {
    #[serde(skip_serializing_if = "is_false")]
    pub enabled: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub disable_listener_logs: bool,
    #[serde(rename = "Type", skip_serializing_if = "String::is_empty")]
    pub sink_type: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(rename = "JSONFormat", skip_serializing_if = "String::is_empty")]
    pub json_format: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub text_format: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct EnvoyExtension {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "is_false")]
    pub required: bool,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub arguments: Map<String, Value>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub consul_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub envoy_version: String,
}

/// service-defaults `UpstreamConfig`: per-upstream settings for the service's own proxies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct UpstreamConfiguration {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<UpstreamConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defaults: Option<UpstreamConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct UpstreamConfig {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub partition: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub peer: String,
    #[serde(rename = "EnvoyListenerJSON", skip_serializing_if = "String::is_empty")]
    pub envoy_listener_json: String,
    #[serde(rename = "EnvoyClusterJSON", skip_serializing_if = "String::is_empty")]
    pub envoy_cluster_json: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub connect_timeout_ms: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<UpstreamLimits>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passive_health_check: Option<PassiveHealthCheck>,
    #[serde(skip_serializing_if = "MeshGatewayConfig::is_empty")]
    pub mesh_gateway: MeshGatewayConfig,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub balance_outbound_connections: String,
}

/// Go pointers: a present zero is a setting (no connections at all), not the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct UpstreamLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<i64>,
}

/// Durations are Go `time.Duration`s here, integer nanoseconds on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct PassiveHealthCheck {
    #[serde(with = "nanos", skip_serializing_if = "is_unset_duration")]
    pub interval: Option<Duration>,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub max_failures: u32,
    #[serde(
        rename = "EnforcingConsecutive5xx",
        skip_serializing_if = "Option::is_none"
    )]
    pub enforcing_consecutive_5xx: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
    #[serde(with = "nanos", skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
}

/// service-defaults `Destination`: the service is outside the mesh, at these addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct DestinationConfig {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(skip_serializing_if = "is_zero_u16")]
    pub port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct RateLimits {
    pub instance_level: InstanceLevelRateLimits,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct InstanceLevelRateLimits {
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub requests_per_second: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub requests_max_burst: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<InstanceLevelRouteRateLimits>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct InstanceLevelRouteRateLimits {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path_exact: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path_prefix: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path_regex: String,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub requests_per_second: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub requests_max_burst: u32,
}

/// How a resolver's failover targets are ordered; `sequential` (the default) is list order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct FailoverPolicy {
    #[serde(with = "opt_enum", skip_serializing_if = "Option::is_none")]
    pub mode: Option<FailoverPolicyMode>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct PrioritizeByLocality {
    #[serde(with = "opt_enum", skip_serializing_if = "Option::is_none")]
    pub mode: Option<PrioritizeByLocalityMode>,
}

/// service-intentions `JWT`, at the top level or in a permission.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct IntentionJwtRequirement {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<IntentionJwtProvider>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct IntentionJwtProvider {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verify_claims: Vec<IntentionJwtClaimVerification>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct IntentionJwtClaimVerification {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub value: String,
}

fn is_zero_u16(v: &u16) -> bool {
    *v == 0
}

fn is_unset_duration(v: &Option<Duration>) -> bool {
    v.is_none_or(|d| d.is_zero())
}

/// True when `block` sets nothing: every field is absent or its zero value (fields that are Go
/// pointers count as set when present, even at zero). Relies on each block skipping its zero
/// fields when serialised.
pub fn is_blank<T: Serialize>(block: &T) -> bool {
    fn blank(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Object(map) => map.values().all(blank),
            Value::Array(items) => items.is_empty(),
            _ => false,
        }
    }
    // These types hold only plain values and string-keyed maps; serialising cannot fail, and if
    // it did the block would count as set, which refuses rather than ignores it.
    serde_json::to_value(block).is_ok_and(|v| blank(&v))
}

/// Collects the fields a value sets that the mesh does not honour yet, with their paths.
#[derive(Debug, Default)]
pub struct Support {
    found: Vec<ConfigEntryError>,
}

pub(crate) fn join(at: &str, field: &str) -> String {
    if at.is_empty() {
        field.to_string()
    } else {
        format!("{at}.{field}")
    }
}

impl Support {
    pub fn into_errors(self) -> Vec<ConfigEntryError> {
        self.found
    }

    pub fn push(&mut self, path: String, value: Option<String>, hint: &'static str) {
        self.found
            .push(ConfigEntryError::Unsupported { path, value, hint });
    }

    /// A block that must set nothing.
    pub fn blank<T: Serialize>(&mut self, at: &str, field: &str, block: &T) {
        if !is_blank(block) {
            self.push(join(at, field), None, "leave it empty");
        }
    }

    pub fn empty_str(&mut self, at: &str, field: &str, value: &str) {
        if !value.is_empty() {
            self.push(
                join(at, field),
                Some(format!("{value:?}")),
                "leave it empty",
            );
        }
    }

    pub fn zero(&mut self, at: &str, field: &str, value: u32) {
        if value != 0 {
            self.push(
                join(at, field),
                Some(value.to_string()),
                "leave it unset or 0",
            );
        }
    }

    pub fn falsy(&mut self, at: &str, field: &str, value: bool) {
        if value {
            self.push(
                join(at, field),
                Some("true".into()),
                "leave it unset or false",
            );
        }
    }

    pub fn unset<T: std::fmt::Display>(&mut self, at: &str, field: &str, value: Option<T>) {
        if let Some(v) = value {
            self.push(join(at, field), Some(format!("\"{v}\"")), "leave it empty");
        }
    }

    /// Namespaces and admin partitions: there is exactly one of each, `default`.
    pub fn tenancy(&mut self, at: &str, field: &str, value: &str) {
        if !value.is_empty() && value != "default" {
            self.push(
                join(at, field),
                Some(format!("{value:?}")),
                "use \"default\" or leave it empty",
            );
        }
    }

    /// Mesh gateways: none is what the mesh does, so `none` is honoured.
    pub fn mesh_gateway(&mut self, at: &str, m: &MeshGatewayConfig) {
        if let Some(mode) = m.mode.filter(|m| *m != MeshGatewayMode::None) {
            self.push(
                join(at, "MeshGateway.Mode"),
                Some(format!("\"{mode}\"")),
                "use \"none\" or leave it empty",
            );
        }
    }

    /// `direct` is how every proxy of the mesh is reached; transparent proxying is not done.
    pub fn proxy_mode(&mut self, at: &str, mode: &str) {
        if !mode.is_empty() && mode != "direct" {
            self.push(
                join(at, "Mode"),
                Some(format!("{mode:?}")),
                "use \"direct\" or leave it empty",
            );
        }
    }

    /// `field` is `FailoverPolicy` in proxy-defaults and `Policy` in a resolver's failover.
    pub fn failover_policy(&mut self, at: &str, field: &str, policy: Option<&FailoverPolicy>) {
        let Some(p) = policy else { return };
        let at = join(at, field);
        if p.mode == Some(FailoverPolicyMode::OrderByLocality) {
            self.push(
                join(&at, "Mode"),
                Some("\"order-by-locality\"".into()),
                "use \"sequential\" or leave it empty",
            );
        }
        if !p.regions.is_empty() {
            self.push(join(&at, "Regions"), None, "leave it empty");
        }
    }

    pub fn prioritize_by_locality(&mut self, at: &str, p: Option<&PrioritizeByLocality>) {
        if let Some(mode) = p
            .and_then(|p| p.mode)
            .filter(|m| *m != PrioritizeByLocalityMode::None)
        {
            self.push(
                join(at, "PrioritizeByLocality.Mode"),
                Some(format!("\"{mode}\"")),
                "use \"none\" or leave it empty",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_blocks() {
        assert!(is_blank(&ExposeConfig::default()));
        assert!(is_blank(&UpstreamConfiguration {
            overrides: vec![],
            defaults: Some(UpstreamConfig::default()),
        }));
        assert!(!is_blank(&ExposeConfig {
            checks: true,
            ..Default::default()
        }));
        // A Go pointer set to zero is a setting.
        assert!(!is_blank(&UpstreamLimits {
            max_connections: Some(0),
            ..Default::default()
        }));
        assert!(is_blank(&PassiveHealthCheck {
            interval: Some(Duration::ZERO),
            ..Default::default()
        }));
        assert!(!is_blank(&PassiveHealthCheck {
            base_ejection_time: Some(Duration::ZERO),
            ..Default::default()
        }));
    }
}
