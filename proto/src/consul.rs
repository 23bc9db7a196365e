//! The Consul JSON model: what clients send to the registry and what it answers.
//!
//! Response types serialise with Consul's PascalCase names and turn absent lists into `[]`
//! (some clients fail to decode `null`). Request types accept the canonical names produced by
//! [`crate::json::normalize_keys`].
//!
//! Request types decode every field HashiCorp's Go client (`github.com/hashicorp/consul/api`)
//! marshals. A field the mesh does not honour yet fails the decode with its path and "not
//! supported yet" when it is set to anything but its default, rather than being dropped; the
//! Go client always sends some of them empty (`"MeshGateway":{}`, `"Expose":{}` in every
//! `Proxy`, `"Weights":{"Passing":0,"Warning":0}` and a full check `Definition` in a catalog
//! registration).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::config_entry::{
    AccessLogsConfig, ExposeConfig, MeshGatewayConfig, Support, TransparentProxyConfig, is_blank,
    not_supported,
};
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
    "SocketPath",
    "LocalServiceSocketPath",
    "TransparentProxy",
    "OutboundListenerPort",
    "DialedDirectly",
    "MeshGateway",
    "Expose",
    "Paths",
    "ListenerPort",
    "Path",
    "LocalPathPort",
    "Protocol",
    "ParsedFromCheck",
    "AccessLogs",
    "Enabled",
    "DisableListenerLogs",
    "JSONFormat",
    "TextFormat",
    "LocalBindSocketMode",
    "CentrallyConfigured",
    "Locality",
    "Region",
    "Zone",
    "ExposedPort",
    "TCPUseTLS",
    "H2PingUseTLS",
    "SessionName",
    "PeerName",
    "ContentHash",
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

/// `Status` in a request: the Go client sends `""` for a check without one (`AgentCheck` has
/// no `omitempty`), which Consul reads as unset.
mod opt_status {
    use super::CheckStatus;
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &Option<CheckStatus>, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CheckStatus>, D::Error> {
        match Option::<String>::deserialize(d)?.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => CheckStatus::parse(s).map(Some).ok_or_else(|| {
                D::Error::custom(format!(
                    "unknown status {s:?} (use passing, warning or critical)"
                ))
            }),
        }
    }
}

/// Request fields whose every non-default value the mesh does not honour yet: they decode (so
/// that the Go client's empty values pass) and refuse anything else, naming it.
mod refuse {
    use crate::config_entry::not_supported;
    use serde::{Deserialize, Deserializer, de::Error};

    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let v = Option::<String>::deserialize(d)?.unwrap_or_default();
        if v.is_empty() {
            Ok(v)
        } else {
            Err(D::Error::custom(not_supported(
                Some(&format!("{v:?}")),
                "leave it empty",
            )))
        }
    }

    pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        if Option::<bool>::deserialize(d)?.unwrap_or_default() {
            Err(D::Error::custom(not_supported(
                Some("true"),
                "leave it unset or false",
            )))
        } else {
            Ok(false)
        }
    }

    pub fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        match Option::<u32>::deserialize(d)?.unwrap_or_default() {
            0 => Ok(0),
            n => Err(D::Error::custom(not_supported(
                Some(&n.to_string()),
                "leave it unset or 0",
            ))),
        }
    }

    /// Namespaces and admin partitions: there is one of each, `default`.
    pub fn tenancy<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let v = Option::<String>::deserialize(d)?.unwrap_or_default();
        if v.is_empty() || v == "default" {
            Ok(v)
        } else {
            Err(D::Error::custom(not_supported(
                Some(&format!("{v:?}")),
                "use \"default\" or leave it empty",
            )))
        }
    }
}

/// Where a service runs; only prioritising failover by locality would act on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Locality {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub region: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub zone: String,
}

fn refuse_locality<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Locality>, D::Error> {
    let v = Option::<Locality>::deserialize(d)?;
    if v.as_ref().is_some_and(|l| !is_blank(l)) {
        return Err(serde::de::Error::custom(not_supported(
            None,
            "leave it empty",
        )));
    }
    Ok(None)
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
    #[serde(skip_serializing_if = "String::is_empty")]
    pub destination_namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub destination_partition: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub destination_peer: String,
    pub destination_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub datacenter: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub local_bind_address: String,
    pub local_bind_port: u16,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub local_bind_socket_path: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub local_bind_socket_mode: String,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub config: serde_json::Map<String, Value>,
    #[serde(skip_serializing_if = "MeshGatewayConfig::is_empty")]
    pub mesh_gateway: MeshGatewayConfig,
    /// Set by Consul on upstreams it added from service-defaults; informational.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub centrally_configured: bool,
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
    pub local_service_socket_path: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mode: String,
    #[serde(skip_serializing_if = "is_blank")]
    pub transparent_proxy: TransparentProxyConfig,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub config: serde_json::Map<String, Value>,
    pub upstreams: Vec<Upstream>,
    #[serde(skip_serializing_if = "MeshGatewayConfig::is_empty")]
    pub mesh_gateway: MeshGatewayConfig,
    #[serde(skip_serializing_if = "is_blank")]
    pub expose: ExposeConfig,
    #[serde(skip_serializing_if = "is_blank")]
    pub access_logs: AccessLogsConfig,
}

impl ConnectProxyConfig {
    /// The fields set here that the mesh does not honour yet, with paths relative to the
    /// `Proxy` block. `Config` maps are the proxy's own and are not judged here.
    pub fn unsupported(&self) -> Vec<crate::config_entry::ConfigEntryError> {
        let mut s = Support::default();
        s.empty_str(
            "",
            "LocalServiceSocketPath",
            &self.local_service_socket_path,
        );
        s.proxy_mode("", &self.mode);
        s.blank("", "TransparentProxy", &self.transparent_proxy);
        s.mesh_gateway("", &self.mesh_gateway);
        s.blank("", "Expose", &self.expose);
        s.blank("", "AccessLogs", &self.access_logs);
        for (i, u) in self.upstreams.iter().enumerate() {
            let at = format!("Upstreams[{i}]");
            s.tenancy(&at, "DestinationNamespace", &u.destination_namespace);
            s.tenancy(&at, "DestinationPartition", &u.destination_partition);
            s.empty_str(&at, "DestinationPeer", &u.destination_peer);
            s.empty_str(&at, "LocalBindSocketPath", &u.local_bind_socket_path);
            s.empty_str(&at, "LocalBindSocketMode", &u.local_bind_socket_mode);
            s.mesh_gateway(&at, &u.mesh_gateway);
        }
        s.into_errors()
    }
}

/// `Proxy` of a registration request: refused when it sets what the mesh does not honour yet.
fn supported_proxy<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<ConnectProxyConfig>, D::Error> {
    let proxy = Option::<ConnectProxyConfig>::deserialize(d)?;
    if let Some(first) = proxy.iter().flat_map(|p| p.unsupported()).next() {
        return Err(serde::de::Error::custom(first));
    }
    Ok(proxy)
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
    #[serde(with = "opt_status")]
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
    /// No check the registry runs speaks TLS; the TLS settings are refused when set.
    #[serde(
        rename = "TLSServerName",
        deserialize_with = "refuse::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub tls_server_name: String,
    #[serde(rename = "TCP")]
    pub tcp: String,
    #[serde(
        rename = "TCPUseTLS",
        deserialize_with = "refuse::flag",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub tcp_use_tls: bool,
    #[serde(rename = "GRPC")]
    pub grpc: String,
    #[serde(rename = "GRPCUseTLS", deserialize_with = "refuse::flag")]
    pub grpc_use_tls: bool,
    #[serde(
        rename = "H2PING",
        deserialize_with = "refuse::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub h2ping: String,
    #[serde(
        rename = "H2PingUseTLS",
        deserialize_with = "refuse::flag",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub h2ping_use_tls: bool,
    #[serde(
        rename = "UDP",
        deserialize_with = "refuse::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub udp: String,
    #[serde(
        rename = "OSService",
        deserialize_with = "refuse::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub os_service: String,
    #[serde(
        deserialize_with = "refuse::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub alias_node: String,
    #[serde(
        deserialize_with = "refuse::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub alias_service: String,
    #[serde(with = "opt_serde")]
    pub interval: Option<Duration>,
    #[serde(with = "opt_serde")]
    pub timeout: Option<Duration>,
    pub success_before_passing: u32,
    #[serde(
        deserialize_with = "refuse::count",
        skip_serializing_if = "is_zero_u32"
    )]
    pub failures_before_warning: u32,
    pub failures_before_critical: u32,
    #[serde(with = "opt_serde")]
    pub deregister_critical_service_after: Option<Duration>,
    pub args: Vec<String>,
    pub script_args: Vec<String>,
    #[serde(rename = "DockerContainerID")]
    pub docker_container_id: String,
    #[serde(
        deserialize_with = "refuse::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub shell: String,
    #[serde(
        deserialize_with = "refuse::tenancy",
        skip_serializing_if = "String::is_empty"
    )]
    pub namespace: String,
    #[serde(
        deserialize_with = "refuse::tenancy",
        skip_serializing_if = "String::is_empty"
    )]
    pub partition: String,
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
    /// A unix socket instead of `Address:Port`; the data path only dials TCP.
    #[serde(
        deserialize_with = "refuse::string",
        skip_serializing_if = "String::is_empty"
    )]
    pub socket_path: String,
    pub meta: BTreeMap<String, String>,
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub enable_tag_override: bool,
    pub weights: Option<Weights>,
    pub kind: String,
    #[serde(deserialize_with = "supported_proxy")]
    pub proxy: Option<ConnectProxyConfig>,
    pub connect: Option<ServiceConnect>,
    pub check: Option<CheckDefinition>,
    pub checks: Vec<CheckDefinition>,
    #[serde(
        deserialize_with = "refuse_locality",
        skip_serializing_if = "Option::is_none"
    )]
    pub locality: Option<Locality>,
    #[serde(
        deserialize_with = "refuse::tenancy",
        skip_serializing_if = "String::is_empty"
    )]
    pub namespace: String,
    #[serde(
        deserialize_with = "refuse::tenancy",
        skip_serializing_if = "String::is_empty"
    )]
    pub partition: String,
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
    #[serde(rename = "TLSServerName", skip_serializing_if = "String::is_empty")]
    pub tls_server_name: String,
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
    #[serde(rename = "TCPUseTLS", skip_serializing_if = "std::ops::Not::not")]
    pub tcp_use_tls: bool,
    #[serde(rename = "UDP", skip_serializing_if = "String::is_empty")]
    pub udp: String,
    #[serde(rename = "GRPC", skip_serializing_if = "String::is_empty")]
    pub grpc: String,
    #[serde(rename = "GRPCUseTLS", skip_serializing_if = "std::ops::Not::not")]
    pub grpc_use_tls: bool,
    #[serde(rename = "OSService", skip_serializing_if = "String::is_empty")]
    pub os_service: String,
    #[serde(rename = "H2PING", skip_serializing_if = "String::is_empty")]
    pub h2ping: String,
    #[serde(rename = "H2PingUseTLS", skip_serializing_if = "std::ops::Not::not")]
    pub h2ping_use_tls: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub session_name: String,
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
    #[serde(deserialize_with = "refuse::tenancy")]
    pub partition: String,
    #[serde(deserialize_with = "refuse_locality")]
    pub locality: Option<Locality>,
}

/// `Connect` of a catalog registration: a catalog entry does not carry it yet.
fn refuse_connect<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<ServiceConnect>, D::Error> {
    match Option::<ServiceConnect>::deserialize(d)? {
        Some(c) if c.native || c.sidecar_service.is_some() => Err(serde::de::Error::custom(
            not_supported(None, "leave it empty"),
        )),
        _ => Ok(None),
    }
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
    #[serde(deserialize_with = "refuse::string")]
    pub socket_path: String,
    pub meta: BTreeMap<String, String>,
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    /// The Go client always sends this (`{"Passing":0,"Warning":0}` when unset): Consul
    /// stores it as given.
    pub weights: Option<Weights>,
    pub enable_tag_override: bool,
    #[serde(deserialize_with = "supported_proxy")]
    pub proxy: Option<ConnectProxyConfig>,
    #[serde(deserialize_with = "refuse_connect")]
    pub connect: Option<ServiceConnect>,
    #[serde(deserialize_with = "refuse::string")]
    pub peer_name: String,
    #[serde(deserialize_with = "refuse_locality")]
    pub locality: Option<Locality>,
    #[serde(deserialize_with = "refuse::tenancy")]
    pub namespace: String,
    #[serde(deserialize_with = "refuse::tenancy")]
    pub partition: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CatalogRegistrationCheck {
    pub node: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub name: String,
    #[serde(with = "opt_status")]
    pub status: Option<CheckStatus>,
    pub notes: String,
    pub output: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// Informational: the registry takes the name from the service the check belongs to.
    pub service_name: String,
    /// Informational: nothing runs catalog checks, their registrant reports them.
    #[serde(rename = "Type")]
    pub check_type: String,
    pub exposed_port: u16,
    pub definition: HealthCheckDefinition,
    #[serde(deserialize_with = "refuse::tenancy")]
    pub namespace: String,
    #[serde(deserialize_with = "refuse::tenancy")]
    pub partition: String,
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
    #[serde(deserialize_with = "refuse::tenancy")]
    pub namespace: String,
    #[serde(deserialize_with = "refuse::tenancy")]
    pub partition: String,
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

/// The exact bodies HashiCorp's Go client (`github.com/hashicorp/consul/api`) marshals: value
/// structs always present (`"MeshGateway":{}`), nil slices, maps and un-`omitempty` pointers as
/// `null`, and a catalog check's `Definition` in full with `"0s"` durations.
#[cfg(test)]
mod go_client_tests {
    use super::*;
    use serde::de::DeserializeOwned;

    fn decode<T: DeserializeOwned>(body: &str) -> Result<T, String> {
        let mut v: Value = serde_json::from_str(body).unwrap();
        crate::json::normalize_keys(&mut v);
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn agent_service_register_without_checks() {
        let def: ServiceDefinition =
            decode(r#"{"Name":"web","Port":8080,"Check":null,"Checks":null}"#).unwrap();
        assert_eq!((def.name.as_str(), def.port), ("web", 8080));
        assert!(def.check.is_none() && def.checks.is_empty());
    }

    #[test]
    fn agent_service_register_with_checks_and_a_sidecar() {
        let def: ServiceDefinition = decode(
            r#"{"ID":"web-1","Name":"web","Tags":["v1"],"Port":8080,"Address":"127.0.0.1",
            "Meta":{"version":"1"},"Weights":{"Passing":3,"Warning":1},
            "Check":{"CheckID":"web-ttl","TTL":"10s","Status":"passing"},
            "Checks":[{"Name":"http","Interval":"10s","Timeout":"1s","HTTP":"http://127.0.0.1:8080/health",
                "Header":{"X-Probe":["1"]},"Method":"HEAD"},
                {"TCP":"127.0.0.1:8080","Interval":"5s","DeregisterCriticalServiceAfter":"1m"}],
            "Connect":{"SidecarService":{"Check":null,"Checks":null,
                "Proxy":{"Upstreams":[{"DestinationName":"db","LocalBindPort":9191,"MeshGateway":{}}],
                    "MeshGateway":{},"Expose":{}}}}}"#,
        )
        .unwrap();
        assert_eq!(
            def.weights,
            Some(Weights {
                passing: 3,
                warning: 1
            })
        );
        let check = def.check.as_ref().unwrap();
        assert_eq!(check.status, Some(CheckStatus::Passing));
        assert_eq!(check.ttl, Some(Duration::from_secs(10)));
        assert_eq!(def.checks[0].header["X-Probe"], ["1"]);
        assert_eq!(
            def.checks[1].deregister_critical_service_after,
            Some(Duration::from_secs(60))
        );
        let sidecar = def.connect.unwrap().sidecar_service.unwrap();
        let proxy = sidecar.proxy.unwrap();
        assert_eq!(proxy.upstreams[0].destination_name, "db");
        assert_eq!(proxy.upstreams[0].local_bind_port, 9191);
        assert!(proxy.unsupported().is_empty());
        // Empty blocks are left out when the registration is shown again.
        let shown = serde_json::to_value(&proxy).unwrap();
        assert!(shown.get("MeshGateway").is_none() && shown.get("Expose").is_none());
    }

    #[test]
    fn tagged_address_fields_match_in_any_case() {
        let def: ServiceDefinition = decode(
            r#"{"name":"web","tagged_addresses":{"lan_ipv4":{"address":"10.0.0.1","port":80}}}"#,
        )
        .unwrap();
        assert_eq!(
            def.tagged_addresses["lan_ipv4"],
            ServiceAddress {
                address: "10.0.0.1".into(),
                port: 80
            }
        );
        let reg: CatalogRegistration =
            decode(r#"{"node":"n","address":"a","tagged_addresses":{"wan":"1.2.3.4"}}"#).unwrap();
        assert_eq!(reg.tagged_addresses["wan"], "1.2.3.4");
    }

    #[test]
    fn agent_check_register_and_ttl_update() {
        let check: CheckDefinition =
            decode(r#"{"ID":"mem","Name":"Memory","ServiceID":"web-1","TTL":"30s"}"#).unwrap();
        assert_eq!(check.check_id, "mem");
        assert_eq!(check.service_id, "web-1");
        let update: CheckUpdate = decode(r#"{"Status":"passing","Output":"ok"}"#).unwrap();
        assert_eq!(update.status, "passing");
    }

    #[test]
    fn catalog_register_and_deregister() {
        let reg: CatalogRegistration = decode(
            r#"{"ID":"","Node":"ext-node","Address":"10.1.2.3","TaggedAddresses":null,"NodeMeta":null,
            "Datacenter":"","Service":{"ID":"ext-web-1","Service":"ext-web","Tags":null,"Meta":null,
                "Port":80,"Address":"","Weights":{"Passing":0,"Warning":0},"EnableTagOverride":false},
            "Check":{"Node":"ext-node","CheckID":"alive","Name":"alive","Status":"","Notes":"",
                "Output":"","ServiceID":"ext-web-1","ServiceName":"ext-web","Type":"","ExposedPort":0,
                "Definition":{"Interval":"0s","Timeout":"0s","DeregisterCriticalServiceAfter":"0s",
                    "HTTP":"","Header":null,"Method":"","Body":"","TLSServerName":"",
                    "TLSSkipVerify":false,"TCP":"","TCPUseTLS":false,"UDP":"","GRPC":"",
                    "OSService":"","GRPCUseTLS":false}},
            "Checks":null,"SkipNodeUpdate":false}"#,
        )
        .unwrap();
        assert!(reg.tagged_addresses.is_empty() && reg.node_meta.is_empty());
        let service = reg.service.unwrap();
        assert_eq!(
            service.weights,
            Some(Weights {
                passing: 0,
                warning: 0
            })
        );
        let check = reg.check.unwrap();
        assert_eq!(
            check.status, None,
            "\"\" is unset: the registry makes it critical"
        );
        assert_eq!(check.definition.interval, Some(Duration::ZERO));

        let dereg: CatalogDeregistration =
            decode(r#"{"Node":"ext-node","Datacenter":"","ServiceID":"ext-web-1","CheckID":""}"#)
                .unwrap();
        assert_eq!(dereg.service_id, "ext-web-1");
    }

    #[test]
    fn catalog_check_definition_keeps_what_an_external_checker_reads() {
        let reg: CatalogRegistration = decode(
            r#"{"Node":"n","Address":"10.0.0.1","Check":{"CheckID":"tls","Status":"passing",
            "Definition":{"TCP":"10.0.0.1:443","TCPUseTLS":true,"TLSServerName":"web.internal",
                "Interval":"10s"}}}"#,
        )
        .unwrap();
        let def = reg.check.unwrap().definition;
        assert!(def.tcp_use_tls);
        assert_eq!(def.tls_server_name, "web.internal");
        let shown = serde_json::to_value(&def).unwrap();
        assert_eq!(shown["TLSServerName"], "web.internal");
        assert_eq!(shown["TCPUseTLS"], true);
    }

    #[test]
    fn unsupported_registration_fields_are_refused_by_name() {
        let err = |body: &str| decode::<ServiceDefinition>(body).unwrap_err();
        assert_eq!(
            err(r#"{"Name":"web","SocketPath":"/run/web.sock"}"#),
            "\"/run/web.sock\" is not supported yet (leave it empty)"
        );
        assert_eq!(
            err(r#"{"Name":"web","Namespace":"team-a"}"#),
            "\"team-a\" is not supported yet (use \"default\" or leave it empty)"
        );
        assert!(decode::<ServiceDefinition>(r#"{"Name":"web","Namespace":"default"}"#).is_ok());
        assert_eq!(
            err(r#"{"Name":"web","Locality":{"Region":"eu"}}"#),
            "not supported yet (leave it empty)"
        );
        let proxy = |p: &str| {
            err(&format!(
                r#"{{"Name":"p","Kind":"connect-proxy","Port":21000,"Proxy":{p}}}"#
            ))
        };
        assert_eq!(
            proxy(r#"{"DestinationServiceName":"web","MeshGateway":{"Mode":"local"}}"#),
            "MeshGateway.Mode: \"local\" is not supported yet (use \"none\" or leave it empty)"
        );
        assert_eq!(
            proxy(r#"{"Expose":{"Checks":true}}"#),
            "Expose: not supported yet (leave it empty)"
        );
        assert_eq!(
            proxy(r#"{"Mode":"transparent"}"#),
            "Mode: \"transparent\" is not supported yet (use \"direct\" or leave it empty)"
        );
        assert_eq!(
            proxy(r#"{"TransparentProxy":{"OutboundListenerPort":15001}}"#),
            "TransparentProxy: not supported yet (leave it empty)"
        );
        assert_eq!(
            proxy(r#"{"LocalServiceSocketPath":"/run/a.sock"}"#),
            "LocalServiceSocketPath: \"/run/a.sock\" is not supported yet (leave it empty)"
        );
        assert_eq!(
            proxy(r#"{"AccessLogs":{"Enabled":true}}"#),
            "AccessLogs: not supported yet (leave it empty)"
        );
        assert_eq!(
            proxy(r#"{"Upstreams":[{"DestinationName":"db","MeshGateway":{"Mode":"remote"}}]}"#),
            "Upstreams[0].MeshGateway.Mode: \"remote\" is not supported yet (use \"none\" or leave it empty)"
        );
        assert_eq!(
            proxy(r#"{"Upstreams":[{"DestinationName":"db","DestinationPeer":"other"}]}"#),
            "Upstreams[0].DestinationPeer: \"other\" is not supported yet (leave it empty)"
        );
        assert_eq!(
            proxy(r#"{"Upstreams":[{"DestinationName":"db","LocalBindSocketPath":"/s"}]}"#),
            "Upstreams[0].LocalBindSocketPath: \"/s\" is not supported yet (leave it empty)"
        );
        // What is honoured, or means what the mesh does anyway, passes.
        assert!(
            decode::<ServiceDefinition>(
                r#"{"Name":"p","Proxy":{"Mode":"direct","MeshGateway":{"Mode":"none"},
                "Upstreams":[{"DestinationName":"db","DestinationNamespace":"default"}]}}"#
            )
            .is_ok()
        );
    }

    #[test]
    fn unsupported_check_fields_are_refused() {
        let err = |body: &str| decode::<CheckDefinition>(body).unwrap_err();
        for (body, message) in [
            (
                r#"{"TCP":"a:1","Interval":"1s","TLSServerName":"x"}"#,
                "\"x\" is not supported yet (leave it empty)",
            ),
            (
                r#"{"TCP":"a:1","Interval":"1s","TCPUseTLS":true}"#,
                "true is not supported yet (leave it unset or false)",
            ),
            (
                r#"{"GRPC":"a:1","Interval":"1s","GRPCUseTLS":true}"#,
                "true is not supported yet (leave it unset or false)",
            ),
            (
                r#"{"H2PING":"a:1","Interval":"1s"}"#,
                "\"a:1\" is not supported yet (leave it empty)",
            ),
            (
                r#"{"UDP":"a:1","Interval":"1s"}"#,
                "\"a:1\" is not supported yet (leave it empty)",
            ),
            (
                r#"{"OSService":"sshd","Interval":"1s"}"#,
                "\"sshd\" is not supported yet (leave it empty)",
            ),
            (
                r#"{"AliasService":"db"}"#,
                "\"db\" is not supported yet (leave it empty)",
            ),
            (
                r#"{"AliasNode":"n1"}"#,
                "\"n1\" is not supported yet (leave it empty)",
            ),
            (
                r#"{"TTL":"10s","FailuresBeforeWarning":2}"#,
                "2 is not supported yet (leave it unset or 0)",
            ),
            (
                r#"{"TTL":"10s","Shell":"/bin/sh"}"#,
                "\"/bin/sh\" is not supported yet (leave it empty)",
            ),
        ] {
            assert_eq!(err(body), message, "{body}");
        }
        assert_eq!(
            err(r#"{"TTL":"10s","Status":"fine"}"#),
            "unknown status \"fine\" (use passing, warning or critical)"
        );
    }

    #[test]
    fn catalog_fields_a_catalog_entry_cannot_hold_are_refused() {
        let err = |body: &str| decode::<CatalogRegistration>(body).unwrap_err();
        assert_eq!(
            err(
                r#"{"Node":"n","Address":"a","Service":{"Service":"s","Connect":{"Native":true}}}"#
            ),
            "not supported yet (leave it empty)"
        );
        assert_eq!(
            err(r#"{"Node":"n","Address":"a","Service":{"Service":"s","PeerName":"p"}}"#),
            "\"p\" is not supported yet (leave it empty)"
        );
        assert_eq!(
            err(r#"{"Node":"n","Address":"a","Partition":"p"}"#),
            "\"p\" is not supported yet (use \"default\" or leave it empty)"
        );
        assert!(
            decode::<CatalogRegistration>(
                r#"{"Node":"n","Address":"a","Service":{"Service":"s","Connect":{}}}"#
            )
            .is_ok()
        );
    }
}
