//! The Consul JSON model: what clients send to the registry and what it answers.
//!
//! Response types serialise with Consul's PascalCase names and turn absent lists into `[]`
//! (some clients fail to decode `null`). Request types accept the canonical names produced by
//! [`crate::json::normalize_keys`].

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::duration::opt_serde;

/// Every field name of this module's request types, for key normalisation.
pub const FIELD_NAMES: &[&str] = &[
    "ID",
    "Name",
    "Tags",
    "Address",
    "Port",
    "Meta",
    "TaggedAddresses",
    "EnableTagOverride",
    "Weights",
    "Passing",
    "Warning",
    "Kind",
    "Proxy",
    "Connect",
    "Check",
    "Checks",
    "Native",
    "SidecarService",
    "DestinationServiceName",
    "DestinationServiceID",
    "LocalServiceAddress",
    "LocalServicePort",
    "LocalServiceSocketPath",
    "Mode",
    "Upstreams",
    "DestinationType",
    "DestinationNamespace",
    "DestinationPartition",
    "DestinationPeer",
    "DestinationName",
    "Datacenter",
    "LocalBindAddress",
    "LocalBindPort",
    "LocalBindSocketPath",
    "Config",
    "CheckID",
    "Notes",
    "ServiceID",
    "Status",
    "Output",
    "TTL",
    "HTTP",
    "Method",
    "Header",
    "Body",
    "TLSSkipVerify",
    "TLSServerName",
    "TCP",
    "GRPC",
    "GRPCUseTLS",
    "Interval",
    "Timeout",
    "SuccessBeforePassing",
    "FailuresBeforeCritical",
    "FailuresBeforeWarning",
    "DeregisterCriticalServiceAfter",
    "Args",
    "ScriptArgs",
    "DockerContainerID",
    "Shell",
    "H2PING",
    "UDP",
    "OSService",
    "AliasNode",
    "AliasService",
    "Node",
    "NodeMeta",
    "Service",
    "SkipNodeUpdate",
    "ServiceName",
    "ServiceTags",
    "Type",
    "Definition",
    "Namespace",
    "Partition",
    "Key",
    "Flags",
    "Value",
    "LockIndex",
    "Session",
    "CreateIndex",
    "ModifyIndex",
];

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Passing,
    Warning,
    #[default]
    Critical,
    Maintenance,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passing => "passing",
            CheckStatus::Warning => "warning",
            CheckStatus::Critical => "critical",
            CheckStatus::Maintenance => "maintenance",
        }
    }

    pub fn parse(s: &str) -> Option<CheckStatus> {
        match s {
            "passing" => Some(CheckStatus::Passing),
            "warning" => Some(CheckStatus::Warning),
            "critical" => Some(CheckStatus::Critical),
            "maintenance" => Some(CheckStatus::Maintenance),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    pub passing: i32,
    pub warning: i32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            passing: 1,
            warning: 1,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceAddress {
    pub address: String,
    pub port: u16,
}

/// An upstream of a connect-proxy: the service it reaches and the local port it listens on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Upstream {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub destination_type: String,
    pub destination_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub datacenter: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub local_bind_address: String,
    pub local_bind_port: u16,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub config: serde_json::Map<String, Value>,
}

/// The `Proxy` block of a `connect-proxy` registration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ConnectProxyConfig {
    pub destination_service_name: String,
    #[serde(
        rename = "DestinationServiceID",
        skip_serializing_if = "String::is_empty"
    )]
    pub destination_service_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub local_service_address: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub local_service_port: u16,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mode: String,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub config: serde_json::Map<String, Value>,
    pub upstreams: Vec<Upstream>,
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceConnect {
    pub native: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecar_service: Option<Box<ServiceDefinition>>,
}

/// A check as a client defines it (agent service/check registration).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CheckDefinition {
    #[serde(rename = "CheckID", alias = "ID")]
    pub check_id: String,
    pub name: String,
    pub notes: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub status: Option<CheckStatus>,
    #[serde(rename = "TTL", with = "opt_serde")]
    pub ttl: Option<Duration>,
    #[serde(rename = "HTTP")]
    pub http: String,
    pub method: String,
    pub header: BTreeMap<String, Vec<String>>,
    pub body: String,
    #[serde(rename = "TLSSkipVerify")]
    pub tls_skip_verify: bool,
    #[serde(rename = "TCP")]
    pub tcp: String,
    #[serde(rename = "GRPC")]
    pub grpc: String,
    #[serde(rename = "GRPCUseTLS")]
    pub grpc_use_tls: bool,
    #[serde(with = "opt_serde")]
    pub interval: Option<Duration>,
    #[serde(with = "opt_serde")]
    pub timeout: Option<Duration>,
    pub success_before_passing: u32,
    pub failures_before_critical: u32,
    #[serde(with = "opt_serde")]
    pub deregister_critical_service_after: Option<Duration>,
    pub args: Vec<String>,
    pub script_args: Vec<String>,
    #[serde(rename = "DockerContainerID")]
    pub docker_container_id: String,
}

/// `PUT /v1/agent/service/register`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceDefinition {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub tags: Option<Vec<String>>,
    pub address: String,
    pub port: u16,
    pub meta: BTreeMap<String, String>,
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub enable_tag_override: bool,
    pub weights: Option<Weights>,
    pub kind: String,
    pub proxy: Option<ConnectProxyConfig>,
    pub connect: Option<ServiceConnect>,
    pub check: Option<CheckDefinition>,
    pub checks: Vec<CheckDefinition>,
}

/// A service instance as the registry stores it and `/v1/agent/services` and health entries show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AgentService {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub port: u16,
    pub address: String,
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub weights: Weights,
    pub enable_tag_override: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ConnectProxyConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<ServiceConnect>,
    pub datacenter: String,
    pub create_index: u64,
    pub modify_index: u64,
}

/// How a stored check is run. Consul shows it as `Definition` in catalog and health output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthCheckDefinition {
    #[serde(rename = "HTTP", skip_serializing_if = "String::is_empty")]
    pub http: String,
    #[serde(rename = "TLSSkipVerify")]
    pub tls_skip_verify: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub header: BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub method: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub body: String,
    #[serde(rename = "TCP", skip_serializing_if = "String::is_empty")]
    pub tcp: String,
    #[serde(rename = "GRPC", skip_serializing_if = "String::is_empty")]
    pub grpc: String,
    #[serde(
        rename = "TTL",
        with = "opt_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<Duration>,
    #[serde(with = "opt_serde", skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(with = "opt_serde", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(with = "opt_serde", skip_serializing_if = "Option::is_none")]
    pub deregister_critical_service_after: Option<Duration>,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub success_before_passing: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub failures_before_critical: u32,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// A check and its current state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthCheck {
    pub node: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub name: String,
    pub status: CheckStatus,
    pub notes: String,
    pub output: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    #[serde(rename = "Type")]
    pub check_type: String,
    pub definition: HealthCheckDefinition,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub meta: BTreeMap<String, String>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// One element of `GET /v1/health/service/:name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    pub node: Node,
    pub service: AgentService,
    pub checks: Vec<HealthCheck>,
}

/// One element of `GET /v1/catalog/service/:name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CatalogService {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub node_meta: BTreeMap<String, String>,
    pub service_kind: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    pub service_address: String,
    pub service_tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub service_weights: Weights,
    pub service_meta: BTreeMap<String, String>,
    pub service_port: u16,
    pub service_enable_tag_override: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_proxy: Option<ConnectProxyConfig>,
    /// `{"Native": true}` for a natively connect-aware instance (`/v1/catalog/connect`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_connect: Option<ServiceConnect>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// `PUT /v1/catalog/register`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CatalogRegistration {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub node_meta: BTreeMap<String, String>,
    pub service: Option<CatalogRegistrationService>,
    pub check: Option<CatalogRegistrationCheck>,
    pub checks: Vec<CatalogRegistrationCheck>,
    pub skip_node_update: bool,
}

/// The `Service` of a catalog registration; Consul names its service field `Service`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CatalogRegistrationService {
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    pub kind: String,
    pub tags: Option<Vec<String>>,
    pub address: String,
    pub port: u16,
    pub meta: BTreeMap<String, String>,
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub weights: Option<Weights>,
    pub enable_tag_override: bool,
    pub proxy: Option<ConnectProxyConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CatalogRegistrationCheck {
    pub node: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub name: String,
    pub status: Option<CheckStatus>,
    pub notes: String,
    pub output: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub definition: HealthCheckDefinition,
}

/// `PUT /v1/catalog/deregister`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CatalogDeregistration {
    pub node: String,
    pub datacenter: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
}

/// Body of `PUT /v1/agent/check/update/:check_id`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CheckUpdate {
    pub status: String,
    pub output: String,
}

/// A KV entry as the registry stores it and answers it (`Value` is base64 on the wire).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct KvPair {
    pub lock_index: u64,
    pub key: String,
    pub flags: u64,
    pub value: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub session: String,
    pub create_index: u64,
    pub modify_index: u64,
}

impl KvPair {
    /// Decodes the base64 `Value`.
    pub fn decoded_value(&self) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let value = self.value.as_ref()?;
        base64::engine::general_purpose::STANDARD.decode(value).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_definition_from_py_consul_style_json() {
        let mut v = json!({
            "name": "web", "id": "web-1", "port": 8080, "enabletagoverride": true,
            "checks": [{"ttl": "10s"}, {"http": "http://127.0.0.1:8080/health", "interval": "5s"}],
            "kind": "connect-proxy",
            "proxy": {"destination_service_name": "web", "upstreams": [
                {"destination_name": "db", "local_bind_port": 9191}]},
        });
        crate::json::normalize_keys(&mut v);
        let def: ServiceDefinition = serde_json::from_value(v).unwrap();
        assert_eq!(def.name, "web");
        assert_eq!(def.id, "web-1");
        assert!(def.enable_tag_override);
        assert_eq!(def.checks[0].ttl, Some(Duration::from_secs(10)));
        assert_eq!(def.checks[1].interval, Some(Duration::from_secs(5)));
        let proxy = def.proxy.unwrap();
        assert_eq!(proxy.upstreams[0].destination_name, "db");
        assert_eq!(proxy.upstreams[0].local_bind_port, 9191);
    }

    #[test]
    fn responses_render_empty_lists_not_null() {
        let v = serde_json::to_value(HealthCheck::default()).unwrap();
        assert_eq!(v["ServiceTags"], json!([]));
        let v = serde_json::to_value(AgentService::default()).unwrap();
        assert_eq!(v["Tags"], json!([]));
        assert_eq!(v["Weights"], json!({"Passing": 1, "Warning": 1}));
    }
}
