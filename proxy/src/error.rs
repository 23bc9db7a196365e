//! Why a request ended without an upstream response, who is to blame, whether trying again is
//! safe, and — in exactly one place — the local reply the client gets for it.
//!
//! Mapping (status, body, Envoy response flag):
//! - no route: 404, empty (NR)
//! - route names an unknown cluster: 503, empty (NC)
//! - no healthy endpoint: 503 `no healthy upstream` (UH)
//! - connect failure or connect timeout: 502 `upstream connect error or disconnect/reset before
//!   headers. reset reason: connection failure` (UF; Envoy itself answers 503 here, the mesh
//!   answers 502 as its issue asks)
//! - upstream reset before response headers: 502, same text with `connection termination` (UC)
//! - upstream response head not valid HTTP/1.1: 502, same text with `protocol error` (UPE)
//! - route timeout or per-try timeout on the last try: 504 `upstream request timeout` (UT)
//! - downstream body failed: 400 (DPE)
//!
//! Malformed requests (400) and too-large request heads (431) never reach the service: the
//! HTTP/1.1 server (`http/h1.rs`) or hyper answers them on the connection, then closes it.
//! gRPC requests get Envoy's trailers-only translation: HTTP 200 with `grpc-status`
//! (UNAVAILABLE for 502/503/504, UNIMPLEMENTED for 404, ...) and the body as `grpc-message`.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Response, StatusCode};

use crate::http::body::{BoxError, ResponseBody};

/// Who failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
    Internal,
}

/// Whether the request may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Nothing reached the upstream: trying again is always safe.
    Safe,
    /// The upstream may have seen (part of) the request: only if the body can be replayed and
    /// the route's retry policy asks for it.
    IfReplayable,
    Never,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matched the request")]
    NoRoute,
    #[error("the route's cluster is not configured")]
    UnknownCluster,
    #[error("no healthy upstream")]
    NoHealthyUpstream,
    #[error("upstream connect failure: {0}")]
    ConnectFailure(#[source] std::io::Error),
    #[error("upstream connect timeout")]
    ConnectTimeout,
    #[error("upstream handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("upstream reset before response headers: {0}")]
    UpstreamReset(#[source] BoxError),
    #[error("upstream sent an invalid response: {0}")]
    UpstreamProtocol(&'static str),
    #[error("upstream per-try timeout")]
    PerTryTimeout,
    #[error("upstream request timeout")]
    Timeout,
    #[error("upgrades to HTTP/2 clusters are not supported")]
    UpgradeToHttp2,
    #[error("downstream request body failed: {0}")]
    DownstreamBody(#[source] hyper::Error),
}

const CONNECT_FAILURE: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
const PROTOCOL_ERROR: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: protocol error";
const RESET: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection termination";

impl ProxyError {
    pub fn side(&self) -> Side {
        match self {
            ProxyError::NoRoute | ProxyError::DownstreamBody(_) => Side::Downstream,
            ProxyError::UnknownCluster | ProxyError::UpgradeToHttp2 => Side::Internal,
            ProxyError::NoHealthyUpstream
            | ProxyError::ConnectFailure(_)
            | ProxyError::ConnectTimeout
            | ProxyError::Handshake(_)
            | ProxyError::UpstreamReset(_)
            | ProxyError::UpstreamProtocol(_)
            | ProxyError::PerTryTimeout
            | ProxyError::Timeout => Side::Upstream,
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            ProxyError::ConnectFailure(_) | ProxyError::ConnectTimeout => Retry::Safe,
            ProxyError::Handshake(_)
            | ProxyError::UpstreamReset(_)
            | ProxyError::UpstreamProtocol(_)
            | ProxyError::PerTryTimeout => Retry::IfReplayable,
            _ => Retry::Never,
        }
    }

    /// A connect-level failure, which Envoy's `connect-failure` retry condition covers.
    pub fn is_connect_failure(&self) -> bool {
        matches!(
            self,
            ProxyError::ConnectFailure(_) | ProxyError::ConnectTimeout | ProxyError::Handshake(_)
        )
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::UnknownCluster | ProxyError::NoHealthyUpstream => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::ConnectFailure(_)
            | ProxyError::ConnectTimeout
            | ProxyError::Handshake(_)
            | ProxyError::UpstreamReset(_)
            | ProxyError::UpstreamProtocol(_)
            | ProxyError::UpgradeToHttp2 => StatusCode::BAD_GATEWAY,
            ProxyError::PerTryTimeout | ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::DownstreamBody(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn body(&self) -> &'static str {
        match self {
            ProxyError::NoRoute | ProxyError::UnknownCluster | ProxyError::DownstreamBody(_) => "",
            ProxyError::NoHealthyUpstream => "no healthy upstream",
            ProxyError::ConnectFailure(_)
            | ProxyError::ConnectTimeout
            | ProxyError::Handshake(_) => CONNECT_FAILURE,
            ProxyError::UpstreamReset(_) => RESET,
            ProxyError::UpstreamProtocol(_) => PROTOCOL_ERROR,
            ProxyError::UpgradeToHttp2 => "upgrade failed",
            ProxyError::PerTryTimeout | ProxyError::Timeout => "upstream request timeout",
        }
    }

    /// Envoy's access-log response flag.
    pub fn flag(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "NR",
            ProxyError::UnknownCluster => "NC",
            ProxyError::NoHealthyUpstream => "UH",
            ProxyError::ConnectFailure(_)
            | ProxyError::ConnectTimeout
            | ProxyError::Handshake(_) => "UF",
            ProxyError::UpstreamReset(_) => "UC",
            ProxyError::PerTryTimeout | ProxyError::Timeout => "UT",
            ProxyError::UpgradeToHttp2 | ProxyError::UpstreamProtocol(_) => "UPE",
            ProxyError::DownstreamBody(_) => "DPE",
        }
    }

    /// The local reply for this error; `grpc` when the request was gRPC.
    pub fn to_response(&self, grpc: bool) -> Response<ResponseBody> {
        local_reply(
            self.status(),
            Bytes::from_static(self.body().as_bytes()),
            grpc,
        )
    }
}

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Envoy's `Grpc::Utility::httpToGrpcStatus`.
fn grpc_status_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "13",
        401 => "16",
        403 => "7",
        404 => "12",
        429 | 502 | 503 | 504 => "14",
        _ => "2",
    }
}

/// Percent-encodes what gRPC does not allow raw in `grpc-message`.
fn grpc_message(body: &[u8]) -> Option<HeaderValue> {
    if body.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(body.len());
    for &b in body {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
    HeaderValue::from_bytes(&out).ok()
}

/// Builds every response the proxy makes itself: error replies, direct responses.
pub fn local_reply(status: StatusCode, body: Bytes, grpc: bool) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    if !grpc {
        *response.status_mut() = status;
    }
    let headers = response.headers_mut();
    if grpc {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(
            GRPC_STATUS.clone(),
            HeaderValue::from_static(grpc_status_for(status)),
        );
        if let Some(message) = grpc_message(&body) {
            headers.insert(GRPC_MESSAGE.clone(), message);
        }
        return response;
    }
    if !body.is_empty() {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        *response.body_mut() = ResponseBody::full(body);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_follows_the_issue() {
        assert_eq!(ProxyError::NoRoute.status(), 404);
        assert_eq!(ProxyError::NoHealthyUpstream.status(), 503);
        assert_eq!(ProxyError::UnknownCluster.status(), 503);
        assert_eq!(ProxyError::ConnectTimeout.status(), 502);
        assert_eq!(ProxyError::Timeout.status(), 504);
        assert_eq!(ProxyError::ConnectTimeout.retry(), Retry::Safe);
        assert_eq!(ProxyError::PerTryTimeout.retry(), Retry::IfReplayable);
        assert_eq!(ProxyError::NoRoute.retry(), Retry::Never);
        assert_eq!(ProxyError::Timeout.side(), Side::Upstream);
    }

    #[test]
    fn grpc_requests_get_trailers_only_replies() {
        let r = ProxyError::NoHealthyUpstream.to_response(true);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-message"], "no healthy upstream");
        assert_eq!(
            grpc_message(b"a%\n").as_ref().map(|v| v.as_bytes()),
            Some(&b"a%25%0A"[..])
        );
    }

    #[test]
    fn empty_bodies_have_no_content_type() {
        let r = ProxyError::NoRoute.to_response(false);
        assert_eq!(r.status(), 404);
        assert!(r.headers().get(CONTENT_TYPE).is_none());
    }
}
