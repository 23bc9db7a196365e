//! A bootstrap file that points a stock Envoy at our control plane, like
//! `consul connect envoy -bootstrap`: node identity, admin, and ADS over gRPC.

use std::fmt::Write as _;
use std::net::IpAddr;

#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    /// The sidecar's service ID, which becomes the xDS `node.id`.
    pub proxy_id: String,
    /// `node.cluster`; Consul uses the proxy's service name.
    pub cluster: String,
    pub xds_host: String,
    pub xds_port: u16,
    pub admin_host: String,
    pub admin_port: u16,
    /// Incremental xDS (`DELTA_GRPC`) instead of state of the world (`GRPC`).
    pub delta: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("--proxy-id must not be empty")]
    EmptyProxyId,
    #[error("--admin-addr must be an IP address and port, got {0:?}")]
    AdminAddr(String),
}

/// JSON-quotes a string; JSON strings are valid YAML scalars.
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Renders the bootstrap YAML.
pub fn render(o: &BootstrapOptions) -> Result<String, BootstrapError> {
    if o.proxy_id.is_empty() {
        return Err(BootstrapError::EmptyProxyId);
    }
    if o.admin_host.parse::<IpAddr>().is_err() {
        return Err(BootstrapError::AdminAddr(format!(
            "{}:{}",
            o.admin_host, o.admin_port
        )));
    }
    // A literal IP can be a STATIC endpoint; a name needs DNS resolution.
    let xds_type = if o.xds_host.parse::<IpAddr>().is_ok() {
        "STATIC"
    } else {
        "STRICT_DNS"
    };
    let api_type = if o.delta { "DELTA_GRPC" } else { "GRPC" };
    let mut y = String::new();
    let _ = write!(
        y,
        "\
node:
  id: {id}
  cluster: {cluster}
admin:
  address:
    socket_address: {{ address: {admin_host}, port_value: {admin_port} }}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services:
      - envoy_grpc: {{ cluster_name: mesh_xds }}
  cds_config: {{ resource_api_version: V3, ads: {{}} }}
  lds_config: {{ resource_api_version: V3, ads: {{}} }}
static_resources:
  clusters:
    - name: mesh_xds
      type: {xds_type}
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {{}}
      load_assignment:
        cluster_name: mesh_xds
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: {xds_host}, port_value: {xds_port} }}
",
        id = q(&o.proxy_id),
        cluster = q(&o.cluster),
        admin_host = q(&o.admin_host),
        admin_port = o.admin_port,
        xds_host = q(&o.xds_host),
        xds_port = o.xds_port,
    );
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> BootstrapOptions {
        BootstrapOptions {
            proxy_id: "web-sidecar-proxy".into(),
            cluster: "web".into(),
            xds_host: "127.0.0.1".into(),
            xds_port: 18000,
            admin_host: "127.0.0.1".into(),
            admin_port: 19000,
            delta: false,
        }
    }

    #[test]
    fn renders_sotw_and_delta() {
        let y = render(&opts()).unwrap();
        assert!(y.contains("id: \"web-sidecar-proxy\""));
        assert!(y.contains("api_type: GRPC"));
        assert!(y.contains("type: STATIC"));
        let d = render(&BootstrapOptions {
            delta: true,
            xds_host: "cp.local".into(),
            ..opts()
        })
        .unwrap();
        assert!(d.contains("api_type: DELTA_GRPC"));
        assert!(d.contains("type: STRICT_DNS"));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(
            render(&BootstrapOptions {
                proxy_id: String::new(),
                ..opts()
            })
            .is_err()
        );
        assert!(
            render(&BootstrapOptions {
                admin_host: "localhost".into(),
                ..opts()
            })
            .is_err()
        );
    }
}
