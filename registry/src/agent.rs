//! Agent registration semantics: turning a client's service and check definitions into the
//! records the registry stores, with Consul's defaults for IDs, names and initial status.

use mesh_proto::consul::{
    AgentService, CheckDefinition, CheckStatus, HealthCheck, HealthCheckDefinition,
    ServiceDefinition, Weights,
};
use std::time::Duration;

/// Consul's floor for check intervals.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Consul allocates sidecar ports from this range when a sidecar gives none.
pub const SIDECAR_PORTS: std::ops::RangeInclusive<u16> = 21000..=21255;

/// The `Type` of the checks maintenance mode adds; nothing runs them.
pub const MAINTENANCE_CHECK_TYPE: &str = "maintenance";
/// Consul's check IDs and names for maintenance mode (`api.ServiceMaintPrefix`, `api.NodeMaint`).
pub const SERVICE_MAINT_PREFIX: &str = "_service_maintenance:";
pub const NODE_MAINT_CHECK_ID: &str = "_node_maintenance";
const SERVICE_MAINT_NAME: &str = "Service Maintenance Mode";
const NODE_MAINT_NAME: &str = "Node Maintenance Mode";
const DEFAULT_SERVICE_MAINT_REASON: &str = concat!(
    "Maintenance mode is enabled for this service, ",
    "but no reason was provided. This is a default message."
);
const DEFAULT_NODE_MAINT_REASON: &str = concat!(
    "Maintenance mode is enabled for this node, ",
    "but no reason was provided. This is a default message."
);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("Missing service name")]
    MissingName,
    #[error("Invalid check: {0}")]
    InvalidCheck(String),
    #[error("Invalid service: {0}")]
    InvalidService(String),
}

/// A service ready to store, with the checks that belong to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub service: AgentService,
    pub checks: Vec<HealthCheck>,
}

/// Builds the registration(s) for `def`: the service itself and, when it asks for one, its
/// sidecar proxy (`Connect.SidecarService`). `port_taken` tells which sidecar ports are in use.
pub fn build_registrations(
    mut def: ServiceDefinition,
    node: &str,
    datacenter: &str,
    port_taken: &dyn Fn(u16) -> bool,
) -> Result<Vec<Registration>, AgentError> {
    if def.name.is_empty() {
        return Err(AgentError::MissingName);
    }
    if def.id.is_empty() {
        def.id = def.name.clone();
    }
    let sidecar = def.connect.as_mut().and_then(|c| c.sidecar_service.take());
    let mut out = vec![build_one(def.clone(), node, datacenter)?];
    if let Some(sidecar) = sidecar {
        let mut sc = *sidecar;
        if sc.name.is_empty() {
            sc.name = format!("{}-sidecar-proxy", def.name);
        }
        if sc.id.is_empty() {
            sc.id = sidecar_id(&def.id);
        }
        sc.kind = "connect-proxy".to_string();
        if sc.port == 0 {
            sc.port = SIDECAR_PORTS
                .clone()
                .find(|p| !port_taken(*p))
                .ok_or_else(|| {
                    AgentError::InvalidService("no free sidecar port in 21000-21255".into())
                })?;
        }
        if sc.tags.is_none() {
            sc.tags = def.tags.clone();
        }
        let proxy = sc.proxy.get_or_insert_with(Default::default);
        if proxy.destination_service_name.is_empty() {
            proxy.destination_service_name = def.name.clone();
        }
        if proxy.destination_service_id.is_empty() {
            proxy.destination_service_id = def.id.clone();
        }
        if proxy.local_service_address.is_empty() {
            proxy.local_service_address = "127.0.0.1".to_string();
        }
        if proxy.local_service_port == 0 {
            proxy.local_service_port = def.port;
        }
        out.push(build_one(sc, node, datacenter)?);
    }
    Ok(out)
}

fn build_one(
    def: ServiceDefinition,
    node: &str,
    datacenter: &str,
) -> Result<Registration, AgentError> {
    match def.kind.as_str() {
        "" | "typical" => {}
        "connect-proxy" => {
            let proxy = def.proxy.as_ref().ok_or_else(|| {
                AgentError::InvalidService("Proxy is required for Kind connect-proxy".into())
            })?;
            if proxy.destination_service_name.is_empty() {
                return Err(AgentError::InvalidService(
                    "Proxy.DestinationServiceName must be set for Kind connect-proxy".into(),
                ));
            }
            if def.port == 0 {
                return Err(AgentError::InvalidService(
                    "Port must be set for a connect-proxy".into(),
                ));
            }
        }
        other => {
            return Err(AgentError::InvalidService(format!(
                "Kind {other:?} is not supported (use \"\" or \"connect-proxy\")"
            )));
        }
    }
    let weights = def.weights.clone().unwrap_or_default();
    if weights.passing < 1 || weights.warning < 0 {
        return Err(AgentError::InvalidService(
            "Weights.Passing must be greater than 0 and Weights.Warning not negative".into(),
        ));
    }
    let service = AgentService {
        kind: if def.kind == "typical" {
            String::new()
        } else {
            def.kind.clone()
        },
        id: def.id.clone(),
        service: def.name.clone(),
        tags: def.tags.clone().unwrap_or_default(),
        meta: def.meta.clone(),
        port: def.port,
        address: def.address.clone(),
        tagged_addresses: def.tagged_addresses.clone(),
        weights: Weights {
            passing: weights.passing,
            warning: weights.warning,
        },
        enable_tag_override: def.enable_tag_override,
        proxy: def.proxy.clone(),
        connect: def.connect.clone().filter(|c| c.native),
        datacenter: datacenter.to_string(),
        create_index: 0,
        modify_index: 0,
    };
    let defs: Vec<&CheckDefinition> = def.check.iter().chain(def.checks.iter()).collect();
    let numbered = defs.len() > 1;
    let mut checks = Vec::with_capacity(defs.len());
    for (i, c) in defs.into_iter().enumerate() {
        let mut c = c.clone();
        c.service_id = service.id.clone();
        if c.check_id.is_empty() {
            c.check_id = if numbered {
                format!("service:{}:{}", service.id, i + 1)
            } else {
                format!("service:{}", service.id)
            };
        }
        if c.name.is_empty() {
            c.name = format!("Service '{}' check", service.service);
        }
        checks.push(build_check(&c, node, Some(&service))?);
    }
    Ok(Registration { service, checks })
}

/// The ID Consul gives the sidecar of service `service_id` (and deregisters with it).
pub fn sidecar_id(service_id: &str) -> String {
    format!("{service_id}-sidecar-proxy")
}

/// Whether `candidate` is the sidecar that `Connect.SidecarService` registered for service
/// `parent_id`: Consul marks such a sidecar and removes it with its parent. We keep no mark;
/// the sidecar ID, kind and destination together say the same.
pub fn is_sidecar_of(candidate: &AgentService, parent_id: &str) -> bool {
    candidate.id == sidecar_id(parent_id)
        && candidate.kind == "connect-proxy"
        && candidate
            .proxy
            .as_ref()
            .is_some_and(|p| p.destination_service_id == parent_id)
}

/// The critical check that puts service `service` into maintenance (Consul's
/// `EnableServiceMaintenance`).
pub fn service_maintenance_check(node: &str, service: &AgentService, reason: &str) -> HealthCheck {
    HealthCheck {
        node: node.to_string(),
        check_id: format!("{SERVICE_MAINT_PREFIX}{}", service.id),
        name: SERVICE_MAINT_NAME.to_string(),
        status: CheckStatus::Critical,
        notes: if reason.is_empty() {
            DEFAULT_SERVICE_MAINT_REASON.to_string()
        } else {
            reason.to_string()
        },
        service_id: service.id.clone(),
        service_name: service.service.clone(),
        service_tags: service.tags.clone(),
        check_type: MAINTENANCE_CHECK_TYPE.to_string(),
        ..HealthCheck::default()
    }
}

/// The critical node check that puts every service of `node` into maintenance.
pub fn node_maintenance_check(node: &str, reason: &str) -> HealthCheck {
    HealthCheck {
        node: node.to_string(),
        check_id: NODE_MAINT_CHECK_ID.to_string(),
        name: NODE_MAINT_NAME.to_string(),
        status: CheckStatus::Critical,
        notes: if reason.is_empty() {
            DEFAULT_NODE_MAINT_REASON.to_string()
        } else {
            reason.to_string()
        },
        check_type: MAINTENANCE_CHECK_TYPE.to_string(),
        ..HealthCheck::default()
    }
}

/// Whether `check` is one of maintenance mode's checks.
pub fn is_maintenance(check: &HealthCheck) -> bool {
    check.check_id == NODE_MAINT_CHECK_ID || check.check_id.starts_with(SERVICE_MAINT_PREFIX)
}

/// The status of a set of checks as Consul's agent health endpoints aggregate it: maintenance
/// wins, then the worst of critical, warning and passing; no checks is passing.
pub fn aggregated_status(checks: &[HealthCheck]) -> CheckStatus {
    if checks.iter().any(is_maintenance) {
        return CheckStatus::Maintenance;
    }
    checks
        .iter()
        .map(|c| c.status)
        .max_by_key(|s| match s {
            CheckStatus::Passing => 0,
            CheckStatus::Warning => 1,
            CheckStatus::Critical | CheckStatus::Maintenance => 2,
        })
        .unwrap_or(CheckStatus::Passing)
}

/// Validates one check definition and builds its stored form (initially `critical` unless a
/// `Status` is given).
pub fn build_check(
    def: &CheckDefinition,
    node: &str,
    service: Option<&AgentService>,
) -> Result<HealthCheck, AgentError> {
    let invalid = |m: &str| AgentError::InvalidCheck(m.to_string());
    if !def.args.is_empty() || !def.script_args.is_empty() || !def.docker_container_id.is_empty() {
        return Err(invalid(
            "script and docker checks are disabled on this registry; use TTL, HTTP or TCP",
        ));
    }
    let kinds = [
        def.ttl.is_some(),
        !def.http.is_empty(),
        !def.tcp.is_empty(),
        !def.grpc.is_empty(),
    ];
    let check_type = match kinds {
        [true, false, false, false] => "ttl",
        [false, true, false, false] => "http",
        [false, false, true, false] => "tcp",
        [false, false, false, true] => "grpc",
        [false, false, false, false] => {
            return Err(invalid("one of TTL, HTTP, TCP or GRPC must be set"));
        }
        _ => return Err(invalid("only one of TTL, HTTP, TCP or GRPC may be set")),
    };
    if check_type == "ttl" && def.ttl.is_some_and(|t| t.is_zero()) {
        return Err(invalid("TTL must be > 0 for TTL checks"));
    }
    let interval = if check_type == "ttl" {
        None
    } else {
        match def.interval {
            Some(i) if !i.is_zero() => Some(i.max(MIN_CHECK_INTERVAL)),
            _ => {
                return Err(invalid(
                    "Interval must be > 0 for HTTP, TCP and GRPC checks",
                ));
            }
        }
    };
    if check_type == "http"
        && !(def.http.starts_with("http://") || def.http.starts_with("https://"))
    {
        return Err(invalid(&format!(
            "HTTP must be an http:// or https:// URL, got {:?}",
            def.http
        )));
    }
    if check_type == "tcp" && !def.tcp.contains(':') {
        return Err(invalid(&format!(
            "TCP must be host:port, got {:?}",
            def.tcp
        )));
    }
    if !def.method.is_empty() && !def.method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(invalid(&format!(
            "Method {:?} is not an HTTP method",
            def.method
        )));
    }
    if def.check_id.is_empty() {
        return Err(invalid("CheckID (or Name) must be set"));
    }
    Ok(HealthCheck {
        node: node.to_string(),
        check_id: def.check_id.clone(),
        name: if def.name.is_empty() {
            def.check_id.clone()
        } else {
            def.name.clone()
        },
        status: def.status.unwrap_or(CheckStatus::Critical),
        notes: def.notes.clone(),
        output: String::new(),
        service_id: service
            .map(|s| s.id.clone())
            .unwrap_or_else(|| def.service_id.clone()),
        service_name: service.map(|s| s.service.clone()).unwrap_or_default(),
        service_tags: service.map(|s| s.tags.clone()).unwrap_or_default(),
        check_type: check_type.to_string(),
        definition: HealthCheckDefinition {
            http: def.http.clone(),
            tls_skip_verify: def.tls_skip_verify,
            header: def.header.clone(),
            method: def.method.clone(),
            body: def.body.clone(),
            tcp: def.tcp.clone(),
            grpc: def.grpc.clone(),
            ttl: def.ttl,
            interval,
            timeout: if check_type == "ttl" {
                None
            } else {
                Some(
                    def.timeout
                        .filter(|t| !t.is_zero())
                        .unwrap_or(DEFAULT_CHECK_TIMEOUT),
                )
            },
            deregister_critical_service_after: def.deregister_critical_service_after,
            success_before_passing: def.success_before_passing,
            failures_before_critical: def.failures_before_critical,
            // The TLS, UDP, OSService and H2PING settings are refused when the request is decoded.
            ..Default::default()
        },
        create_index: 0,
        modify_index: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::consul::{ConnectProxyConfig, ServiceConnect};

    fn ttl_check(ttl: u64) -> CheckDefinition {
        CheckDefinition {
            ttl: Some(Duration::from_secs(ttl)),
            ..Default::default()
        }
    }

    #[test]
    fn check_ids_and_names_follow_consul_defaults() {
        let def = ServiceDefinition {
            name: "web".into(),
            check: Some(ttl_check(10)),
            checks: vec![CheckDefinition {
                tcp: "127.0.0.1:80".into(),
                interval: Some(Duration::from_millis(100)),
                ..Default::default()
            }],
            ..Default::default()
        };
        let regs = build_registrations(def, "n1", "dc1", &|_| false).unwrap();
        let reg = &regs[0];
        assert_eq!(reg.service.id, "web");
        assert_eq!(reg.checks[0].check_id, "service:web:1");
        assert_eq!(reg.checks[1].check_id, "service:web:2");
        assert_eq!(reg.checks[0].name, "Service 'web' check");
        assert_eq!(
            reg.checks[0].status,
            CheckStatus::Critical,
            "new checks start critical"
        );
        assert_eq!(reg.checks[1].definition.interval, Some(MIN_CHECK_INTERVAL));
        assert_eq!(
            reg.checks[1].definition.timeout,
            Some(DEFAULT_CHECK_TIMEOUT)
        );

        let single = ServiceDefinition {
            name: "db".into(),
            id: "db-1".into(),
            checks: vec![CheckDefinition {
                status: Some(CheckStatus::Passing),
                ..ttl_check(5)
            }],
            ..Default::default()
        };
        let reg = &build_registrations(single, "n1", "dc1", &|_| false).unwrap()[0];
        assert_eq!(reg.checks[0].check_id, "service:db-1");
        assert_eq!(reg.checks[0].status, CheckStatus::Passing);
    }

    #[test]
    fn invalid_checks_are_named() {
        let both = CheckDefinition {
            http: "http://x/".into(),
            ..ttl_check(1)
        };
        let err = build_check(
            &CheckDefinition {
                check_id: "c".into(),
                ..both
            },
            "n",
            None,
        );
        assert!(matches!(err, Err(AgentError::InvalidCheck(m)) if m.contains("only one")));
        let no_interval = CheckDefinition {
            check_id: "c".into(),
            tcp: "h:1".into(),
            ..Default::default()
        };
        assert!(
            build_check(&no_interval, "n", None)
                .unwrap_err()
                .to_string()
                .contains("Interval")
        );
        let script = CheckDefinition {
            check_id: "c".into(),
            args: vec!["true".into()],
            ..Default::default()
        };
        assert!(build_check(&script, "n", None).is_err());
    }

    #[test]
    fn sidecar_service_gets_consul_defaults() {
        let def = ServiceDefinition {
            name: "web".into(),
            port: 8080,
            connect: Some(ServiceConnect {
                native: false,
                sidecar_service: Some(Box::new(ServiceDefinition::default())),
            }),
            ..Default::default()
        };
        let regs = build_registrations(def, "n1", "dc1", &|p| p == 21000).unwrap();
        assert_eq!(regs.len(), 2);
        let sc = &regs[1].service;
        assert_eq!(sc.id, "web-sidecar-proxy");
        assert_eq!(sc.kind, "connect-proxy");
        assert_eq!(sc.port, 21001, "first free port of the sidecar range");
        let proxy: &ConnectProxyConfig = sc.proxy.as_ref().unwrap();
        assert_eq!(proxy.destination_service_name, "web");
        assert_eq!(proxy.local_service_port, 8080);
        assert!(regs[0].service.connect.is_none());
    }

    #[test]
    fn only_the_registered_sidecar_goes_with_its_service() {
        let def = ServiceDefinition {
            name: "web".into(),
            id: "web-1".into(),
            port: 8080,
            connect: Some(ServiceConnect {
                native: false,
                sidecar_service: Some(Box::new(ServiceDefinition::default())),
            }),
            ..Default::default()
        };
        let regs = build_registrations(def, "n1", "dc1", &|_| false).unwrap();
        let sidecar = &regs[1].service;
        assert!(is_sidecar_of(sidecar, "web-1"));
        assert!(!is_sidecar_of(sidecar, "web"));
        // A proxy that merely has the name, in front of another instance, is not it.
        let mut stranger = sidecar.clone();
        stranger.proxy.as_mut().unwrap().destination_service_id = "web-2".into();
        assert!(!is_sidecar_of(&stranger, "web-1"));
        assert!(!is_sidecar_of(&regs[0].service, "web-1"));
    }

    #[test]
    fn aggregated_status_is_consuls() {
        let check = |id: &str, status| HealthCheck {
            check_id: id.into(),
            status,
            ..Default::default()
        };
        assert_eq!(aggregated_status(&[]), CheckStatus::Passing);
        let mixed = [
            check("a", CheckStatus::Passing),
            check("b", CheckStatus::Warning),
        ];
        assert_eq!(aggregated_status(&mixed), CheckStatus::Warning);
        let critical = [
            check("a", CheckStatus::Critical),
            check("b", CheckStatus::Warning),
        ];
        assert_eq!(aggregated_status(&critical), CheckStatus::Critical);
        // Maintenance wins over everything, whatever the other checks say.
        let service = AgentService {
            id: "web-1".into(),
            ..Default::default()
        };
        let maint = [
            check("a", CheckStatus::Passing),
            service_maintenance_check("n", &service, ""),
        ];
        assert_eq!(aggregated_status(&maint), CheckStatus::Maintenance);
        assert_eq!(
            aggregated_status(&[node_maintenance_check("n", "why")]),
            CheckStatus::Maintenance
        );
    }

    #[test]
    fn connect_proxy_needs_its_destination() {
        let def = ServiceDefinition {
            name: "p".into(),
            kind: "connect-proxy".into(),
            port: 21000,
            ..Default::default()
        };
        assert!(build_registrations(def, "n", "dc", &|_| false).is_err());
    }
}
