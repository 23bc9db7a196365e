//! `service-defaults` and `proxy-defaults`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

use super::blocks::{
    AccessLogsConfig, DestinationConfig, EnvoyExtension, ExposeConfig, FailoverPolicy,
    MeshGatewayConfig, MutualTlsMode, PrioritizeByLocality, RateLimits, TransparentProxyConfig,
    UpstreamConfiguration, is_blank,
};
use super::decode::opt_enum;
use super::{ConfigEntryError, invalid, is_zero_u32, key_path};

wire_enum! {
    /// What a service speaks; anything but tcp gets an HTTP connection manager and L7 routing.
    pub enum Protocol: "protocol" {
        Tcp = "tcp",
        Http = "http",
        Http2 = "http2",
        Grpc = "grpc",
    }
}

impl Protocol {
    pub fn is_l7(self) -> bool {
        self != Protocol::Tcp
    }
}

wire_enum! {
    pub enum ProxyMode: "mode" {
        Direct = "direct",
        Transparent = "transparent",
    }
}

wire_enum! {
    pub enum BalanceInboundConnections: "BalanceInboundConnections value" {
        ExactBalance = "exact_balance",
    }
}

/// Consul's whole service-defaults schema decodes; what the mesh does not honour yet is refused
/// when set (see `support.rs`). Empty blocks are skipped on output, as they mean nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct ServiceDefaults {
    pub name: String,
    #[serde(with = "opt_enum", skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(with = "opt_enum", skip_serializing_if = "Option::is_none")]
    pub mode: Option<ProxyMode>,
    #[serde(skip_serializing_if = "is_blank")]
    pub transparent_proxy: TransparentProxyConfig,
    #[serde(
        rename = "MutualTLSMode",
        with = "opt_enum",
        skip_serializing_if = "Option::is_none"
    )]
    pub mutual_tls_mode: Option<MutualTlsMode>,
    #[serde(skip_serializing_if = "MeshGatewayConfig::is_empty")]
    pub mesh_gateway: MeshGatewayConfig,
    #[serde(skip_serializing_if = "is_blank")]
    pub expose: ExposeConfig,
    #[serde(rename = "ExternalSNI", skip_serializing_if = "String::is_empty")]
    pub external_sni: String,
    #[serde(skip_serializing_if = "is_blank")]
    pub upstream_config: Option<UpstreamConfiguration>,
    #[serde(skip_serializing_if = "is_blank")]
    pub destination: Option<DestinationConfig>,
    /// Caps concurrent inbound connections to the service instance; 0 means no limit.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub max_inbound_connections: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub local_connect_timeout_ms: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub local_request_timeout_ms: u32,
    #[serde(with = "opt_enum", skip_serializing_if = "Option::is_none")]
    pub balance_inbound_connections: Option<BalanceInboundConnections>,
    #[serde(skip_serializing_if = "is_blank")]
    pub rate_limits: Option<RateLimits>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub envoy_extensions: Vec<EnvoyExtension>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

impl ServiceDefaults {
    pub(super) fn validate(&self) -> Result<(), ConfigEntryError> {
        // Every field is constrained by its type; only Meta (checked by the caller) is free-form.
        Ok(())
    }
}

/// The mesh-wide proxy defaults. Consul keeps exactly one, named `global`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct ProxyDefaults {
    pub name: String,
    /// Opaque proxy configuration; `protocol` is the only key the mesh itself interprets.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub config: Map<String, Value>,
    #[serde(with = "opt_enum", skip_serializing_if = "Option::is_none")]
    pub mode: Option<ProxyMode>,
    #[serde(skip_serializing_if = "is_blank")]
    pub transparent_proxy: TransparentProxyConfig,
    #[serde(
        rename = "MutualTLSMode",
        with = "opt_enum",
        skip_serializing_if = "Option::is_none"
    )]
    pub mutual_tls_mode: Option<MutualTlsMode>,
    #[serde(skip_serializing_if = "MeshGatewayConfig::is_empty")]
    pub mesh_gateway: MeshGatewayConfig,
    #[serde(skip_serializing_if = "is_blank")]
    pub expose: ExposeConfig,
    #[serde(skip_serializing_if = "is_blank")]
    pub access_logs: AccessLogsConfig,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub envoy_extensions: Vec<EnvoyExtension>,
    #[serde(skip_serializing_if = "is_blank")]
    pub failover_policy: Option<FailoverPolicy>,
    #[serde(skip_serializing_if = "is_blank")]
    pub prioritize_by_locality: Option<PrioritizeByLocality>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

impl ProxyDefaults {
    pub const NAME: &'static str = "global";

    /// `Config.protocol`, the default for services without their own `Protocol`.
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol_entry()
            .and_then(|(_, v)| v.as_str())
            .and_then(|s| s.parse().ok())
    }

    /// Consul decodes `Config` case-insensitively, so `Protocol` counts too.
    fn protocol_entry(&self) -> Option<(&String, &Value)> {
        self.config.get_key_value("protocol").or_else(|| {
            self.config
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("protocol"))
        })
    }

    pub(super) fn validate(&self) -> Result<(), ConfigEntryError> {
        if self.name != Self::NAME {
            return Err(invalid(
                "Name",
                format!(
                    "proxy-defaults must be named \"global\" (got {:?})",
                    self.name
                ),
            ));
        }
        if let Some((key, value)) = self.protocol_entry() {
            let path = key_path("Config", key);
            match value {
                Value::String(s) if s.is_empty() => {}
                Value::String(s) => {
                    s.parse::<Protocol>().map_err(|m| invalid(&path, m))?;
                }
                _ => return Err(invalid(path, "must be a string")),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigEntry, ConfigKind};
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ConfigEntry, String> {
        ConfigEntry::from_json(v).map_err(|e| e.to_string())
    }

    #[test]
    fn protocol_is_case_insensitive_and_stored_lowercase() {
        let e = parse(json!({"kind": "service-defaults", "name": "web", "protocol": "HTTP"}));
        let Ok(ConfigEntry::ServiceDefaults(d)) = e else {
            panic!("{e:?}")
        };
        assert_eq!(d.protocol, Some(Protocol::Http));
        assert_eq!(
            ConfigEntry::ServiceDefaults(d).to_json(),
            json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"})
        );
    }

    #[test]
    fn empty_protocol_is_unset() {
        let e = parse(json!({"Kind": "service-defaults", "Name": "web", "Protocol": ""}));
        assert!(matches!(
            e,
            Ok(ConfigEntry::ServiceDefaults(ServiceDefaults {
                protocol: None,
                ..
            }))
        ));
    }

    #[test]
    fn rejects_unknown_protocol() {
        assert_eq!(
            parse(json!({"Kind": "service-defaults", "Name": "web", "Protocol": "udp"}))
                .unwrap_err(),
            "Protocol: unknown protocol \"udp\" (use tcp, http, http2 or grpc)"
        );
    }

    #[test]
    fn service_defaults_common_fields() {
        let e = parse(json!({
            "Kind": "service-defaults", "Name": "web", "mode": "direct",
            "local_connect_timeout_ms": 500, "local_request_timeout_ms": 2000,
            "meta": {"Owner": "team-a"},
        }))
        .unwrap();
        let ConfigEntry::ServiceDefaults(d) = &e else {
            panic!()
        };
        assert_eq!(d.mode, Some(ProxyMode::Direct));
        assert_eq!(d.local_connect_timeout_ms, 500);
        assert_eq!(d.local_request_timeout_ms, 2000);
        assert_eq!(d.meta["Owner"], "team-a");
        assert_eq!(parse(e.to_json()).unwrap(), e);

        // Fields the data path does not act on decode (a real Consul may hold them) but are
        // refused at write.
        let held = json!({
            "Kind": "service-defaults", "Name": "web", "mode": "transparent",
            "max_inbound_connections": 100, "balance_inbound_connections": "exact_balance",
            "external_sni": "web.example.com",
        });
        let (e, unsupported) = ConfigEntry::from_consul(held.clone()).unwrap();
        let ConfigEntry::ServiceDefaults(d) = &e else {
            panic!()
        };
        assert_eq!(d.mode, Some(ProxyMode::Transparent));
        assert_eq!(d.max_inbound_connections, 100);
        assert_eq!(
            d.balance_inbound_connections,
            Some(BalanceInboundConnections::ExactBalance)
        );
        assert_eq!(d.external_sni, "web.example.com");
        assert_eq!(unsupported.len(), 4);
        assert_eq!(
            parse(held).unwrap_err(),
            "Mode: \"transparent\" is not supported yet (use \"direct\" or leave it empty)"
        );
        assert!(
            parse(json!({"Kind": "service-defaults", "Name": "web", "Mode": "sideways"}))
                .unwrap_err()
                .starts_with("Mode: unknown mode \"sideways\"")
        );
        assert_eq!(
            parse(json!({"Kind": "service-defaults", "Name": "web", "MaxInboundConnections": -1}))
                .unwrap_err(),
            "MaxInboundConnections: invalid value: integer `-1`, expected u32"
        );
    }

    #[test]
    fn proxy_defaults_must_be_global() {
        assert!(parse(json!({"Kind": "proxy-defaults", "Name": "global"})).is_ok());
        assert_eq!(
            parse(json!({"Kind": "proxy-defaults", "Name": "local"})).unwrap_err(),
            "Name: proxy-defaults must be named \"global\" (got \"local\")"
        );
    }

    #[test]
    fn proxy_defaults_config_protocol() {
        let e = parse(json!({
            "kind": "proxy-defaults", "name": "global",
            "config": {"protocol": "GRPC", "envoy_extra": {"Keep_Case": true}},
        }))
        .unwrap();
        let ConfigEntry::ProxyDefaults(p) = &e else {
            panic!()
        };
        assert_eq!(p.protocol(), Some(Protocol::Grpc));
        // Config belongs to the user: keys and values are kept as written.
        assert_eq!(p.config["envoy_extra"], json!({"Keep_Case": true}));
        assert_eq!(e.kind(), ConfigKind::ProxyDefaults);

        assert_eq!(
            parse(
                json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "udp"}})
            )
            .unwrap_err(),
            "Config.protocol: unknown protocol \"udp\" (use tcp, http, http2 or grpc)"
        );
        assert_eq!(
            parse(json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"Protocol": 7}}))
                .unwrap_err(),
            "Config.Protocol: must be a string"
        );
    }
}
