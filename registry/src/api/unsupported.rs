//! Consul endpoints this registry deliberately does not serve, refused with a message that
//! says so (501) instead of a bare 404 a client would read as "no such key" or retry: cluster
//! membership, sessions and locks, events, prepared queries, transactions, snapshots, the
//! Connect CA. ACL endpoints answer as a Consul without ACLs does.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::any;
use std::sync::Arc;

use super::ApiError;
use crate::Registry;

/// The 501 answer for an endpoint the registry does not implement.
pub fn refusal(what: &str, why: &str) -> ApiError {
    ApiError {
        status: StatusCode::NOT_IMPLEMENTED,
        message: format!("{what} is not supported by this registry: {why}"),
    }
}

const SINGLE_NODE: &str = "it is a single server with no cluster to join or leave";
const NO_CONNECT_CA: &str = "the mesh does not issue Consul Connect certificates";

/// Path, what it is, and why the registry does not serve it.
const REFUSED: &[(&str, &str, &str)] = &[
    ("/v1/agent/join/{address}", "agent join", SINGLE_NODE),
    ("/v1/agent/leave", "agent leave", SINGLE_NODE),
    (
        "/v1/agent/force-leave/{node}",
        "agent force-leave",
        SINGLE_NODE,
    ),
    (
        "/v1/agent/reload",
        "agent reload",
        "its settings are command-line flags, with no configuration files to reload",
    ),
    (
        "/v1/agent/host",
        "agent host",
        "it does not report host information",
    ),
    (
        "/v1/agent/metrics",
        "agent metrics",
        "it exports no Consul telemetry",
    ),
    (
        "/v1/agent/metrics/stream",
        "agent metrics",
        "it exports no Consul telemetry",
    ),
    (
        "/v1/agent/monitor",
        "agent monitor",
        "its logs go to its own standard error",
    ),
    (
        "/v1/agent/connect/{*rest}",
        "the Connect CA and authorization",
        NO_CONNECT_CA,
    ),
    (
        "/v1/connect/{*rest}",
        "the Connect CA and intentions API",
        "the mesh does not issue Consul Connect certificates; write service-intentions config entries",
    ),
    (
        "/v1/session/{*rest}",
        "sessions",
        "sessions and locks are not implemented",
    ),
    (
        "/v1/event/{*rest}",
        "events",
        "user events are not implemented",
    ),
    (
        "/v1/query",
        "prepared queries",
        "prepared queries are not implemented",
    ),
    (
        "/v1/query/{*rest}",
        "prepared queries",
        "prepared queries are not implemented",
    ),
    (
        "/v1/txn",
        "transactions",
        "transactions are not implemented",
    ),
    (
        "/v1/snapshot",
        "snapshots",
        "its data directory is its durable store; back it up instead",
    ),
    (
        "/v1/operator/{*rest}",
        "operator endpoints",
        "there is no Raft cluster, keyring or autopilot",
    ),
];

pub fn routes() -> Router<Arc<Registry>> {
    let mut router = Router::new()
        .route("/v1/acl/{*rest}", any(acl_disabled))
        .route("/v1/agent/token/{kind}", any(acl_disabled));
    for &(path, what, why) in REFUSED {
        router = router.route(path, any(move || async move { refusal(what, why) }));
    }
    router
}

/// What Consul answers on `/v1/acl/*` and `/v1/agent/token/*` when ACLs are disabled (tokens
/// sent with other requests are accepted and ignored, as there).
async fn acl_disabled() -> ApiError {
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: "ACL support disabled".to_string(),
    }
}
