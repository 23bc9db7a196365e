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

pub fn routes() -> Router<Arc<Registry>> {
    let refuse =
        |what: &'static str, why: &'static str| any(move || async move { refusal(what, why) });
    Router::new()
        .route("/v1/agent/join/{address}", refuse("agent join", SINGLE_NODE))
        .route("/v1/agent/leave", refuse("agent leave", SINGLE_NODE))
        .route("/v1/agent/force-leave/{node}", refuse("agent force-leave", SINGLE_NODE))
        .route(
            "/v1/agent/reload",
            refuse("agent reload", "its settings are command-line flags, with no configuration files to reload"),
        )
        .route("/v1/agent/host", refuse("agent host", "it does not report host information"))
        .route("/v1/agent/metrics", refuse("agent metrics", "it exports no Consul telemetry"))
        .route("/v1/agent/metrics/stream", refuse("agent metrics", "it exports no Consul telemetry"))
        .route("/v1/agent/monitor", refuse("agent monitor", "its logs go to its own standard error"))
        .route("/v1/agent/token/{kind}", any(acl_disabled))
        .route(
            "/v1/agent/connect/{*rest}",
            refuse("the Connect CA and authorization", "the mesh does not issue Consul Connect certificates"),
        )
        .route(
            "/v1/connect/{*rest}",
            refuse("the Connect CA and intentions API", "the mesh does not issue Consul Connect certificates; write service-intentions config entries"),
        )
        .route("/v1/acl/{*rest}", any(acl_disabled))
        .route("/v1/session/{*rest}", refuse("sessions", "sessions and locks are not implemented"))
        .route("/v1/event/{*rest}", refuse("events", "user events are not implemented"))
        .route("/v1/query", refuse("prepared queries", "prepared queries are not implemented"))
        .route("/v1/query/{*rest}", refuse("prepared queries", "prepared queries are not implemented"))
        .route("/v1/txn", refuse("transactions", "transactions are not implemented"))
        .route("/v1/snapshot", refuse("snapshots", "its data directory is its durable store; back it up instead"))
        .route("/v1/operator/{*rest}", refuse("operator endpoints", "there is no Raft cluster, keyring or autopilot"))
}

/// What Consul answers on `/v1/acl/*` and `/v1/agent/token/*` when ACLs are disabled (tokens
/// sent with other requests are accepted and ignored, as there).
async fn acl_disabled() -> ApiError {
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: "ACL support disabled".to_string(),
    }
}
