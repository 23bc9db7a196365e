//! The selectors each Consul endpoint filters on: the exported fields of the Go struct the
//! endpoint filters (go-bexpr derives its selectors from them by reflection), with Go's types,
//! which decide the operators a selector takes and how a value is read (`Port == 80` is an
//! integer comparison, `Port == web` an error). Fields Consul hides from filters (`bexpr:"-"`:
//! raft indexes, enterprise metadata, opaque configs) are absent here too.
//!
//! Sources: consul `agent/structs` (`Node`, `NodeService`, `ServiceNode`, `HealthCheck`,
//! `CheckServiceNode`, `ServiceConfigEntry`) and `api.AgentService`, cross-checked with
//! `agent/structs/structs_filtering_test.go` and the selector tables of the API docs.
//!
//! A selector names the Go field; the value is read from the JSON the endpoint returns, whose
//! keys are the same names. A field absent from that JSON (something this registry does not
//! store) reads as Go's zero value, as it would in Consul.

/// A Go type, as far as filtering cares.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Str,
    /// Go `int`, `int64` and `time.Duration`.
    Int,
    Uint32,
    Uint64,
    Bool,
    /// A slice: of a primitive (`in`, `is empty`), or of structs (selectors continue into the
    /// elements and match when any element does).
    List(&'static Kind),
    /// `map[string]T`; `None` for `map[string]interface{}`, which cannot be indexed further.
    Map(Option<&'static Kind>),
    /// A struct (or a pointer to one). No fields: a struct with nothing selectable, such as
    /// `time.Time`.
    Struct(&'static [Field]),
}

#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    /// An embedded Go struct (`RaftIndex`): selected by its type name, but its fields sit in
    /// the parent's JSON object.
    pub embedded: bool,
}

/// The fields of the type an endpoint filters.
pub type Schema = &'static [Field];

const fn f(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        embedded: false,
    }
}

const fn embedded(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        embedded: true,
    }
}

use Kind::{Bool, Int, Map, Str, Struct, Uint32, Uint64};

const STR_LIST: Kind = Kind::List(&Str);
const STR_MAP: Kind = Map(Some(&Str));
const OPAQUE: Kind = Struct(&[]);

static SERVICE_ADDRESS: [Field; 2] = [f("Address", Str), f("Port", Int)];
static SERVICE_ADDRESS_KIND: Kind = Struct(&SERVICE_ADDRESS);

static WEIGHTS: [Field; 2] = [f("Passing", Int), f("Warning", Int)];
static MESH_GATEWAY: [Field; 1] = [f("Mode", Str)];
static TRANSPARENT_PROXY: [Field; 2] = [f("OutboundListenerPort", Int), f("DialedDirectly", Bool)];
static ACCESS_LOGS: [Field; 6] = [
    f("Enabled", Bool),
    f("DisableListenerLogs", Bool),
    f("Type", Str),
    f("Path", Str),
    f("JSONPath", Str),
    f("TextPath", Str),
];
static EXPOSE_PATH: [Field; 5] = [
    f("ListenerPort", Int),
    f("Path", Str),
    f("LocalPathPort", Int),
    f("Protocol", Str),
    f("ParsedFromCheck", Bool),
];
static EXPOSE_PATH_KIND: Kind = Struct(&EXPOSE_PATH);
static EXPOSE: [Field; 2] = [f("Checks", Bool), f("Paths", Kind::List(&EXPOSE_PATH_KIND))];
static ENVOY_EXTENSION: [Field; 4] = [
    f("Name", Str),
    f("Required", Bool),
    f("ConsulVersion", Str),
    f("EnvoyVersion", Str),
];
static ENVOY_EXTENSION_KIND: Kind = Struct(&ENVOY_EXTENSION);
static UPSTREAM: [Field; 11] = [
    f("DestinationType", Str),
    f("DestinationNamespace", Str),
    f("DestinationPartition", Str),
    f("DestinationPeer", Str),
    f("DestinationName", Str),
    f("Datacenter", Str),
    f("LocalBindAddress", Str),
    f("LocalBindPort", Int),
    f("LocalBindSocketPath", Str),
    f("LocalBindSocketMode", Str),
    f("MeshGateway", Struct(&MESH_GATEWAY)),
];
static UPSTREAM_KIND: Kind = Struct(&UPSTREAM);
static CONNECT_PROXY_CONFIG: [Field; 12] = [
    f("EnvoyExtensions", Kind::List(&ENVOY_EXTENSION_KIND)),
    f("DestinationServiceName", Str),
    f("DestinationServiceID", Str),
    f("LocalServiceAddress", Str),
    f("LocalServicePort", Int),
    f("LocalServiceSocketPath", Str),
    f("Mode", Str),
    f("Upstreams", Kind::List(&UPSTREAM_KIND)),
    f("MeshGateway", Struct(&MESH_GATEWAY)),
    f("Expose", Struct(&EXPOSE)),
    f("TransparentProxy", Struct(&TRANSPARENT_PROXY)),
    f("AccessLogs", Struct(&ACCESS_LOGS)),
];
static SERVICE_CONNECT: [Field; 1] = [f("Native", Bool)];

/// `structs.Node`: `/v1/catalog/nodes`, and `Node` inside a health entry.
pub static NODE: [Field; 8] = [
    f("ID", Str),
    f("Node", Str),
    f("Partition", Str),
    f("PeerName", Str),
    f("Address", Str),
    f("Datacenter", Str),
    f("TaggedAddresses", STR_MAP),
    f("Meta", STR_MAP),
];

/// `structs.NodeService` and `api.AgentService` (Consul keeps their selectors identical):
/// `/v1/agent/services`, `/v1/catalog/node/:node`, `/v1/catalog/node-services/:node`, and
/// `Service` inside a health entry.
pub static NODE_SERVICE: [Field; 14] = [
    f("Kind", Str),
    f("ID", Str),
    f("Service", Str),
    f("Tags", STR_LIST),
    f("Address", Str),
    f("TaggedAddresses", Map(Some(&SERVICE_ADDRESS_KIND))),
    f("Meta", STR_MAP),
    f("Port", Int),
    f("SocketPath", Str),
    f("Weights", Struct(&WEIGHTS)),
    f("EnableTagOverride", Bool),
    f("Proxy", Struct(&CONNECT_PROXY_CONFIG)),
    f("Connect", Struct(&SERVICE_CONNECT)),
    f("PeerName", Str),
];

/// `structs.ServiceNode`: `/v1/catalog/service/:name`, `/v1/catalog/connect/:name`, and each
/// instance behind `/v1/catalog/services`.
pub static SERVICE_NODE: [Field; 20] = [
    f("ID", Str),
    f("Node", Str),
    f("Address", Str),
    f("Datacenter", Str),
    f("TaggedAddresses", STR_MAP),
    f("NodeMeta", STR_MAP),
    f("ServiceKind", Str),
    f("ServiceID", Str),
    f("ServiceName", Str),
    f("ServiceTags", STR_LIST),
    f("ServiceAddress", Str),
    f("ServiceTaggedAddresses", Map(Some(&SERVICE_ADDRESS_KIND))),
    f("ServiceMeta", STR_MAP),
    f("ServicePort", Int),
    f("ServiceSocketPath", Str),
    f("ServiceWeights", Struct(&WEIGHTS)),
    f("ServiceEnableTagOverride", Bool),
    f("ServiceProxy", Struct(&CONNECT_PROXY_CONFIG)),
    f("ServiceConnect", Struct(&SERVICE_CONNECT)),
    f("PeerName", Str),
];

/// `structs.HealthCheck`: `/v1/agent/checks`, `/v1/health/{node,checks,state}/...`, and each
/// element of `Checks` inside a health entry.
pub static HEALTH_CHECK: [Field; 15] = [
    f("Node", Str),
    f("CheckID", Str),
    f("Name", Str),
    f("Status", Str),
    f("Notes", Str),
    f("Output", Str),
    f("ServiceID", Str),
    f("ServiceName", Str),
    f("ServiceTags", STR_LIST),
    f("Type", Str),
    f("Interval", Str),
    f("Timeout", Str),
    f("ExposedPort", Int),
    f("PeerName", Str),
    f("LastCheckStartTime", OPAQUE),
];
static HEALTH_CHECK_KIND: Kind = Struct(&HEALTH_CHECK);

/// `structs.CheckServiceNode`: `/v1/health/service/:name`, `/v1/health/connect/:name`, and
/// what a service-resolver subset `Filter` selects instances with.
pub static CHECK_SERVICE_NODE: [Field; 3] = [
    f("Node", Struct(&NODE)),
    f("Service", Struct(&NODE_SERVICE)),
    f("Checks", Kind::List(&HEALTH_CHECK_KIND)),
];

static UPSTREAM_LIMITS: [Field; 3] = [
    f("MaxConnections", Int),
    f("MaxPendingRequests", Int),
    f("MaxConcurrentRequests", Int),
];
static PASSIVE_HEALTH_CHECK: [Field; 5] = [
    f("Interval", Int),
    f("MaxFailures", Uint32),
    f("EnforcingConsecutive5xx", Uint32),
    f("MaxEjectionPercent", Uint32),
    f("BaseEjectionTime", Int),
];
static UPSTREAM_CONFIG: [Field; 11] = [
    f("Name", Str),
    embedded("EnterpriseMeta", OPAQUE),
    f("Peer", Str),
    f("EnvoyListenerJSON", Str),
    f("EnvoyClusterJSON", Str),
    f("Protocol", Str),
    f("ConnectTimeoutMs", Int),
    f("Limits", Struct(&UPSTREAM_LIMITS)),
    f("PassiveHealthCheck", Struct(&PASSIVE_HEALTH_CHECK)),
    f("MeshGateway", Struct(&MESH_GATEWAY)),
    f("BalanceOutboundConnections", Str),
];
static UPSTREAM_CONFIG_KIND: Kind = Struct(&UPSTREAM_CONFIG);
static UPSTREAM_CONFIGURATION: [Field; 2] = [
    f("Overrides", Kind::List(&UPSTREAM_CONFIG_KIND)),
    f("Defaults", Struct(&UPSTREAM_CONFIG)),
];
static DESTINATION: [Field; 2] = [f("Addresses", STR_LIST), f("Port", Int)];
static ROUTE_RATE_LIMIT: [Field; 5] = [
    f("PathExact", Str),
    f("PathPrefix", Str),
    f("PathRegex", Str),
    f("RequestsPerSecond", Int),
    f("RequestsMaxBurst", Int),
];
static ROUTE_RATE_LIMIT_KIND: Kind = Struct(&ROUTE_RATE_LIMIT);
static INSTANCE_LEVEL: [Field; 3] = [
    f("RequestsPerSecond", Int),
    f("RequestsMaxBurst", Int),
    f("Routes", Kind::List(&ROUTE_RATE_LIMIT_KIND)),
];
static RATE_LIMITS: [Field; 1] = [f("InstanceLevel", Struct(&INSTANCE_LEVEL))];
static RAFT_INDEX: [Field; 2] = [f("CreateIndex", Uint64), f("ModifyIndex", Uint64)];

/// `structs.ServiceConfigEntry`: `/v1/config/service-defaults` (the only kind Consul filters).
pub static SERVICE_CONFIG_ENTRY: [Field; 21] = [
    f("Kind", Str),
    f("Name", Str),
    f("Protocol", Str),
    f("Mode", Str),
    f("TransparentProxy", Struct(&TRANSPARENT_PROXY)),
    f("MutualTLSMode", Str),
    f("MeshGateway", Struct(&MESH_GATEWAY)),
    f("Expose", Struct(&EXPOSE)),
    f("ExternalSNI", Str),
    f("UpstreamConfig", Struct(&UPSTREAM_CONFIGURATION)),
    f("Destination", Struct(&DESTINATION)),
    f("MaxInboundConnections", Int),
    f("LocalConnectTimeoutMs", Int),
    f("LocalRequestTimeoutMs", Int),
    f("BalanceInboundConnections", Str),
    f("RateLimits", Struct(&RATE_LIMITS)),
    f("EnvoyExtensions", Kind::List(&ENVOY_EXTENSION_KIND)),
    f("Meta", STR_MAP),
    f("Hash", Uint64),
    embedded("EnterpriseMeta", OPAQUE),
    embedded("RaftIndex", Struct(&RAFT_INDEX)),
];
