//! Consul's L7 config entries: typed models, request decoding and write-time validation.
//!
//! The rules follow Consul's own `Validate` methods and discovery-chain checks, so an entry this
//! registry accepts is one Consul would accept. Error texts name the offending field
//! (`Routes[0].Match.HTTP.PathPrefix: ...`) because the registry answers 400 with them verbatim.

#[macro_use]
mod decode;
mod blocks;
mod defaults;
mod graph;
mod intentions;
mod lenient;
mod resolver;
mod router;
mod splitter;
mod support;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

pub use blocks::{
    AccessLogsConfig, DestinationConfig, EnvoyExtension, ExposeConfig, ExposePath, FailoverPolicy,
    FailoverPolicyMode, InstanceLevelRateLimits, InstanceLevelRouteRateLimits,
    IntentionJwtClaimVerification, IntentionJwtProvider, IntentionJwtRequirement,
    MeshGatewayConfig, MeshGatewayMode, MutualTlsMode, PassiveHealthCheck, PrioritizeByLocality,
    PrioritizeByLocalityMode, RateLimits, Support, TransparentProxyConfig, UpstreamConfig,
    UpstreamConfiguration, UpstreamLimits, is_blank,
};
pub use defaults::{
    BalanceInboundConnections, Protocol, ProxyDefaults, ProxyMode, ServiceDefaults,
};
pub use graph::{
    effective_protocol, validate_against, validate_against_all, validate_delete,
    validate_delete_all,
};
pub use intentions::{
    IntentionAction, IntentionHeaderMatch, IntentionHttpPermission, IntentionPermission,
    ServiceIntentions, SourceIntention,
};
pub use resolver::{
    CookieConfig, FailoverTarget, HashPolicy, HashPolicyField, LeastRequestConfig, LoadBalancer,
    LoadBalancerPolicy, ResolverFailover, ResolverRedirect, ResolverSubset, RingHashConfig,
    ServiceResolver,
};
pub use router::{
    HeaderMatch, HeaderModifiers, HttpRouteMatch, QueryParamMatch, Route, RouteDestination,
    RouteMatch, ServiceRouter,
};
pub use splitter::{ServiceSplitter, Split, TOTAL_SCALED_WEIGHT};

/// Every PascalCase field name used by the config entry structs.
pub const FIELD_NAMES: &[&str] = &[
    "Kind",
    "Name",
    "Meta",
    "CreateIndex",
    "ModifyIndex",
    "Namespace",
    "Partition",
    "Hash",
    // service-defaults, proxy-defaults
    "Protocol",
    "Mode",
    "MaxInboundConnections",
    "LocalConnectTimeoutMs",
    "LocalRequestTimeoutMs",
    "BalanceInboundConnections",
    "ExternalSNI",
    "Config",
    // the rest of Consul's schema of the two defaults kinds, and the fields the other kinds
    // have in Consul only to refuse them when set (blocks.rs, support.rs)
    "TransparentProxy",
    "OutboundListenerPort",
    "DialedDirectly",
    "MutualTLSMode",
    "MeshGateway",
    "Expose",
    "Checks",
    "Paths",
    "ListenerPort",
    "LocalPathPort",
    "ParsedFromCheck",
    "UpstreamConfig",
    "Overrides",
    "Defaults",
    "Peer",
    "EnvoyListenerJSON",
    "EnvoyClusterJSON",
    "ConnectTimeoutMs",
    "Limits",
    "MaxConnections",
    "MaxPendingRequests",
    "MaxConcurrentRequests",
    "PassiveHealthCheck",
    "Interval",
    "MaxFailures",
    "EnforcingConsecutive5xx",
    "MaxEjectionPercent",
    "BaseEjectionTime",
    "BalanceOutboundConnections",
    "Addresses",
    "Port",
    "RateLimits",
    "InstanceLevel",
    "RequestsPerSecond",
    "RequestsMaxBurst",
    "EnvoyExtensions",
    "Required",
    "Arguments",
    "ConsulVersion",
    "EnvoyVersion",
    "AccessLogs",
    "Enabled",
    "DisableListenerLogs",
    "JSONFormat",
    "TextFormat",
    "FailoverPolicy",
    "Regions",
    "PrioritizeByLocality",
    "SamenessGroup",
    "CaseInsensitive",
    "Contains",
    "IgnoreCase",
    "JWT",
    "Providers",
    "VerifyClaims",
    "Value",
    "LegacyID",
    "LegacyMeta",
    "LegacyCreateTime",
    "LegacyUpdateTime",
    // service-router
    "Routes",
    "Match",
    "HTTP",
    "PathExact",
    "PathPrefix",
    "PathRegex",
    "Header",
    "Present",
    "Exact",
    "Prefix",
    "Suffix",
    "Regex",
    "Invert",
    "QueryParam",
    "Methods",
    "Destination",
    "Service",
    "ServiceSubset",
    "PrefixRewrite",
    "RequestTimeout",
    "IdleTimeout",
    "NumRetries",
    "RetryOnConnectFailure",
    "RetryOn",
    "RetryOnStatusCodes",
    "RequestHeaders",
    "ResponseHeaders",
    "Add",
    "Set",
    "Remove",
    // service-splitter
    "Splits",
    "Weight",
    // service-resolver
    "DefaultSubset",
    "Subsets",
    "Filter",
    "OnlyPassing",
    "ConnectTimeout",
    "Redirect",
    "Datacenter",
    "Datacenters",
    "Failover",
    "Targets",
    "LoadBalancer",
    "Policy",
    "RingHashConfig",
    "MinimumRingSize",
    "MaximumRingSize",
    "LeastRequestConfig",
    "ChoiceCount",
    "HashPolicies",
    "Field",
    "FieldValue",
    "CookieConfig",
    "Session",
    "TTL",
    "Path",
    "SourceIP",
    "Terminal",
    // service-intentions
    "Sources",
    "Action",
    "Permissions",
    "Precedence",
    "Type",
    "Description",
];

/// Top-level keys that clients echo back after reading an entry; they configure nothing here
/// (there is a single namespace and partition, checked by [`TENANCY_KEYS`], and indexes are the
/// registry's own).
const IGNORED_KEYS: &[&str] = &[
    "Kind",
    "CreateIndex",
    "ModifyIndex",
    "Namespace",
    "Partition",
    "Hash",
];

/// Top-level keys naming the namespace and partition, which must be the one there is.
const TENANCY_KEYS: &[&str] = &["Namespace", "Partition"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConfigKind {
    ServiceDefaults,
    ProxyDefaults,
    ServiceRouter,
    ServiceSplitter,
    ServiceResolver,
    ServiceIntentions,
}

impl ConfigKind {
    pub const ALL: [ConfigKind; 6] = [
        ConfigKind::ServiceDefaults,
        ConfigKind::ProxyDefaults,
        ConfigKind::ServiceRouter,
        ConfigKind::ServiceSplitter,
        ConfigKind::ServiceResolver,
        ConfigKind::ServiceIntentions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConfigKind::ServiceDefaults => "service-defaults",
            ConfigKind::ProxyDefaults => "proxy-defaults",
            ConfigKind::ServiceRouter => "service-router",
            ConfigKind::ServiceSplitter => "service-splitter",
            ConfigKind::ServiceResolver => "service-resolver",
            ConfigKind::ServiceIntentions => "service-intentions",
        }
    }

    /// Case-insensitive, like Consul's CLI and API.
    pub fn parse(s: &str) -> Result<ConfigKind, ConfigEntryError> {
        let wanted = s.trim();
        ConfigKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| ConfigEntryError::UnknownKind(s.to_string()))
    }
}

impl fmt::Display for ConfigKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConfigKind {
    type Err = ConfigEntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ConfigKind::parse(s)
    }
}

impl Serialize for ConfigKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ConfigKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ConfigKind::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigEntryError {
    #[error("config entry must be a JSON object")]
    NotAnObject,
    #[error("{field}: required")]
    Missing { field: &'static str },
    #[error("Kind: unknown config entry kind {0:?}")]
    UnknownKind(String),
    #[error("{}unknown field {field:?}{}", at(.path), expected_hint(.expected))]
    UnknownField {
        path: String,
        field: String,
        /// The field names that are allowed there.
        expected: Vec<String>,
    },
    #[error("{}{message}", at(.path))]
    Invalid { path: String, message: String },
    /// A field Consul has that the mesh does not honour yet, set to something other than its
    /// default. `value` is the offending value when it is a scalar.
    #[error("{}{}", at(.path), not_supported(.value.as_deref(), .hint))]
    Unsupported {
        path: String,
        value: Option<String>,
        hint: &'static str,
    },
    #[error(
        "{kind} {name:?}: {}service {service:?} uses protocol {protocol:?}; {} need http, http2 or grpc (set Protocol in its service-defaults)",
        at(.path),
        l7_users(.kind)
    )]
    ProtocolNotL7 {
        kind: ConfigKind,
        name: String,
        path: String,
        service: String,
        protocol: String,
    },
    #[error(
        "{kind} {name:?}: {}service {service:?} uses protocol {protocol:?} but {name:?} uses {expected:?}; every service a route or split reaches needs the same protocol",
        at(.path)
    )]
    ProtocolMismatch {
        kind: ConfigKind,
        name: String,
        path: String,
        service: String,
        protocol: String,
        expected: String,
    },
    #[error(
        "{kind} {name:?}: {}service {service:?} has no subset {subset:?} (define it in service-resolver {service:?})",
        at(.path)
    )]
    UnknownSubset {
        kind: ConfigKind,
        name: String,
        path: String,
        service: String,
        subset: String,
    },
    #[error("Redirect: redirect loop {}", .chain.join(" -> "))]
    RedirectLoop { chain: Vec<String> },
    /// A write or delete that is fine on its own but invalidates another stored entry.
    #[error("{action} would break {inner}")]
    WouldBreak {
        action: String,
        inner: Box<ConfigEntryError>,
    },
}

fn at(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

/// `"x" is not supported yet (hint)`, the text of [`ConfigEntryError::Unsupported`] after its
/// path; request decoders that report the path themselves use it alone.
pub fn not_supported(value: Option<&str>, hint: &str) -> String {
    match value {
        Some(v) => format!("{v} is not supported yet ({hint})"),
        None => format!("not supported yet ({hint})"),
    }
}

fn expected_hint(expected: &[String]) -> String {
    if expected.is_empty() {
        String::new()
    } else {
        format!(" (expected one of {})", expected.join(", "))
    }
}

fn l7_users(kind: &ConfigKind) -> &'static str {
    match kind {
        ConfigKind::ServiceIntentions => "intentions with Permissions",
        _ => "routers and splitters",
    }
}

pub(crate) fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigEntryError {
    ConfigEntryError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

/// Appends a map key to an error path: `Subsets.v1`, or `Failover["*"]` when the key is not a
/// plain word.
pub(crate) fn key_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{key:?}]"),
    }
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

/// Consul's limits on config entry `Meta`.
fn validate_meta(meta: &BTreeMap<String, String>) -> Result<(), ConfigEntryError> {
    const MAX_PAIRS: usize = 64;
    const MAX_KEY_LEN: usize = 128;
    const MAX_VALUE_LEN: usize = 512;
    if meta.len() > MAX_PAIRS {
        return Err(invalid(
            "Meta",
            format!("at most {MAX_PAIRS} pairs (got {})", meta.len()),
        ));
    }
    for (key, value) in meta {
        if key.is_empty() {
            return Err(invalid("Meta", "keys must not be empty"));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(invalid(
                key_path("Meta", key),
                format!("keys are at most {MAX_KEY_LEN} bytes"),
            ));
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(invalid(
                key_path("Meta", key),
                format!("values are at most {MAX_VALUE_LEN} bytes"),
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConfigEntry {
    ServiceDefaults(ServiceDefaults),
    ProxyDefaults(ProxyDefaults),
    ServiceRouter(ServiceRouter),
    ServiceSplitter(ServiceSplitter),
    ServiceResolver(ServiceResolver),
    ServiceIntentions(ServiceIntentions),
}

macro_rules! each_entry {
    ($entry:expr, $inner:ident => $body:expr) => {
        match $entry {
            ConfigEntry::ServiceDefaults($inner) => $body,
            ConfigEntry::ProxyDefaults($inner) => $body,
            ConfigEntry::ServiceRouter($inner) => $body,
            ConfigEntry::ServiceSplitter($inner) => $body,
            ConfigEntry::ServiceResolver($inner) => $body,
            ConfigEntry::ServiceIntentions($inner) => $body,
        }
    };
}

impl ConfigEntry {
    /// Parses a `PUT /v1/config` body, accepting any key spelling Consul accepts, and validates
    /// the result on its own (cross-entry checks are [`validate_against`]'s). A field the mesh
    /// does not honour yet, set to something other than its default, is an error naming it.
    pub fn from_json(value: Value) -> Result<ConfigEntry, ConfigEntryError> {
        let (entry, unsupported) = ConfigEntry::parse(value)?;
        if let Some(first) = unsupported.into_iter().next() {
            return Err(first);
        }
        entry.validate()?;
        Ok(entry)
    }

    /// Like [`ConfigEntry::from_json`] for an entry a real Consul already holds: fields the mesh
    /// does not honour yet are listed beside the entry instead of failing it, so that a reader
    /// can use the rest and say what it is not honouring.
    pub fn from_consul(
        value: Value,
    ) -> Result<(ConfigEntry, Vec<ConfigEntryError>), ConfigEntryError> {
        let (entry, unsupported) = ConfigEntry::parse(value)?;
        entry.validate()?;
        Ok((entry, unsupported))
    }

    fn parse(mut value: Value) -> Result<(ConfigEntry, Vec<ConfigEntryError>), ConfigEntryError> {
        crate::json::normalize_keys(&mut value);
        let Value::Object(mut map) = value else {
            return Err(ConfigEntryError::NotAnObject);
        };
        normalize_header_matchers(&mut map);
        strip_nulls(&mut map);

        let kind = match map.get("Kind") {
            Some(Value::String(s)) if !s.is_empty() => ConfigKind::parse(s)?,
            Some(Value::String(_)) | None => {
                return Err(ConfigEntryError::Missing { field: "Kind" });
            }
            Some(_) => return Err(invalid("Kind", "must be a string")),
        };
        match map.get("Name") {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(Value::String(_)) | None => {
                return Err(ConfigEntryError::Missing { field: "Name" });
            }
            Some(_) => return Err(invalid("Name", "must be a string")),
        }
        let mut support = Support::default();
        for field in TENANCY_KEYS {
            match map.get(*field) {
                None => {}
                Some(Value::String(s)) => support.tenancy("", field, s),
                Some(_) => return Err(invalid(*field, "must be a string")),
            }
        }
        for key in IGNORED_KEYS {
            map.remove(*key);
        }

        let value = Value::Object(map);
        let mut entry = match kind {
            ConfigKind::ServiceDefaults => ConfigEntry::ServiceDefaults(decode::decode(&value)?),
            ConfigKind::ProxyDefaults => ConfigEntry::ProxyDefaults(decode::decode(&value)?),
            ConfigKind::ServiceRouter => ConfigEntry::ServiceRouter(decode::decode(&value)?),
            ConfigKind::ServiceSplitter => ConfigEntry::ServiceSplitter(decode::decode(&value)?),
            ConfigKind::ServiceResolver => ConfigEntry::ServiceResolver(decode::decode(&value)?),
            ConfigKind::ServiceIntentions => {
                ConfigEntry::ServiceIntentions(decode::decode(&value)?)
            }
        };
        entry.normalize();
        entry.check_support(&mut support);
        Ok((entry, support.into_errors()))
    }

    /// The fields of this entry that the mesh does not honour yet, each set to something other
    /// than its default.
    pub fn unsupported(&self) -> Vec<ConfigEntryError> {
        let mut support = Support::default();
        self.check_support(&mut support);
        support.into_errors()
    }

    pub fn kind(&self) -> ConfigKind {
        match self {
            ConfigEntry::ServiceDefaults(_) => ConfigKind::ServiceDefaults,
            ConfigEntry::ProxyDefaults(_) => ConfigKind::ProxyDefaults,
            ConfigEntry::ServiceRouter(_) => ConfigKind::ServiceRouter,
            ConfigEntry::ServiceSplitter(_) => ConfigKind::ServiceSplitter,
            ConfigEntry::ServiceResolver(_) => ConfigKind::ServiceResolver,
            ConfigEntry::ServiceIntentions(_) => ConfigKind::ServiceIntentions,
        }
    }

    pub fn name(&self) -> &str {
        each_entry!(self, e => &e.name)
    }

    pub fn meta(&self) -> &BTreeMap<String, String> {
        each_entry!(self, e => &e.meta)
    }

    /// Canonical PascalCase JSON with `Kind`; empty fields are left out, as Consul does.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("Kind".to_string(), Value::from(self.kind().as_str()));
        // These types only hold string-keyed maps and plain values, so serialisation cannot fail.
        if let Ok(Value::Object(fields)) = each_entry!(self, e => serde_json::to_value(e)) {
            out.extend(fields);
        }
        Value::Object(out)
    }

    /// Fills the fields Consul computes on write (intention `Precedence` and `Type`).
    pub fn normalize(&mut self) {
        if let ConfigEntry::ServiceIntentions(e) = self {
            e.normalize();
        }
    }

    pub fn validate(&self) -> Result<(), ConfigEntryError> {
        if self.name().is_empty() {
            return Err(ConfigEntryError::Missing { field: "Name" });
        }
        validate_meta(self.meta())?;
        match self {
            ConfigEntry::ServiceDefaults(e) => e.validate(),
            ConfigEntry::ProxyDefaults(e) => e.validate(),
            ConfigEntry::ServiceRouter(e) => e.validate(),
            ConfigEntry::ServiceSplitter(e) => e.validate(),
            ConfigEntry::ServiceResolver(e) => e.validate(),
            ConfigEntry::ServiceIntentions(e) => e.validate(),
        }
    }
}

impl Serialize for ConfigEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

/// Goes through [`ConfigEntry::from_json`], so stored entries are re-validated when loaded.
impl<'de> Deserialize<'de> for ConfigEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ConfigEntry::from_json(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

macro_rules! entry_from {
    ($($variant:ident),+) => {
        $(impl From<$variant> for ConfigEntry {
            fn from(e: $variant) -> Self {
                ConfigEntry::$variant(e)
            }
        })+
    };
}

entry_from!(
    ServiceDefaults,
    ProxyDefaults,
    ServiceRouter,
    ServiceSplitter,
    ServiceResolver,
    ServiceIntentions
);

/// `normalize_keys` leaves everything under `Header` alone because a check's `Header` is a user
/// map; in routers and intentions it is a list of matchers whose keys do need renaming.
fn normalize_header_matchers(map: &mut Map<String, Value>) {
    fn fix(http: Option<&mut Value>) {
        if let Some(Value::Array(items)) = http.and_then(|h| h.get_mut("Header")) {
            items.iter_mut().for_each(crate::json::normalize_keys);
        }
    }
    if let Some(Value::Array(routes)) = map.get_mut("Routes") {
        for route in routes {
            fix(route.pointer_mut("/Match/HTTP"));
        }
    }
    if let Some(Value::Array(sources)) = map.get_mut("Sources") {
        for source in sources {
            if let Some(Value::Array(perms)) = source.get_mut("Permissions") {
                for perm in perms {
                    fix(perm.get_mut("HTTP"));
                }
            }
        }
    }
}

/// Go clients send `null` for unset slices and structs; treat it as absent. `Config` is left
/// as written because it is passed through to the proxy untouched.
fn strip_nulls(map: &mut Map<String, Value>) {
    map.retain(|_, v| !v.is_null());
    for (key, value) in map.iter_mut() {
        if key != "Config" {
            strip_nulls_in(value);
        }
    }
}

fn strip_nulls_in(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls_in);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls_in),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
