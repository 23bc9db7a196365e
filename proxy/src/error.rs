//! Why a request ended without an upstream response, who is to blame, whether trying again is
//! safe, and the local reply it gets: status, body and Envoy's response flag, decided here and
//! nowhere else (`http::local_reply` only encodes what this module decides, as HTTP or gRPC).
//! A leaf: it imports nothing from the rest of the proxy.
//!
//! Mapping (status, body, Envoy response flag), Envoy 1.40's answers, checked by the
//! differential tests:
//! - no route: 404, empty (NR)
//! - route names an unknown cluster: 503, empty (NC)
//! - no healthy endpoint: 503 `no healthy upstream` (UH)
//! - connect refused or failed: 503 `upstream connect error or disconnect/reset before headers.
//!   reset reason: remote connection failure` (UF); a connect timeout says `connection timeout`
//! - upstream reset before response headers: 503, same text with `connection termination` (UC)
//! - HTTP/2 upstream refused the stream (`REFUSED_STREAM`): 503, same text with `remote
//!   refused stream reset` (UR)
//! - after retries, the text says `retried and the latest reset reason: ...` (and URX is added)
//! - upstream response head not valid HTTP/1.1: 502, same text with `protocol error` (UPE)
//! - route timeout or per-try timeout on the last try: 504 `upstream request timeout` (UT)
//! - the stream idle timeout while the response is awaited: 504 `stream timeout` (SI)
//! - downstream body failed: 400 (DPE)
//!
//! Malformed requests (400) and too-large request heads (431) never reach the service: the
//! HTTP/1.1 server (`http/h1.rs`) or hyper answers them on the connection, then closes it.
//! gRPC requests get Envoy's trailers-only translation: HTTP 200 with `grpc-status`
//! (UNAVAILABLE for 502/503/504, UNIMPLEMENTED for 404, ...) and the body as `grpc-message`.

use std::borrow::Cow;

use http::StatusCode;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    /// An HTTP/2 upstream reset the stream with `REFUSED_STREAM`: it did not process it.
    #[error("upstream refused the stream: {0}")]
    UpstreamRefusedStream(#[source] BoxError),
    #[error("upstream sent an invalid response: {0}")]
    UpstreamProtocol(&'static str),
    #[error("upstream per-try timeout")]
    PerTryTimeout,
    #[error("upstream request timeout")]
    Timeout,
    /// Nothing happened on the stream for its idle timeout while the response was awaited.
    #[error("stream idle timeout")]
    StreamIdleTimeout,
    #[error("upgrades to HTTP/2 clusters are not supported")]
    UpgradeToHttp2,
    #[error("downstream request body failed: {0}")]
    DownstreamBody(#[source] hyper::Error),
}

/// What the client is told when the proxy answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: StatusCode,
    pub body: Cow<'static, str>,
    /// Envoy's response flags, comma-separated (for logs).
    pub flags: &'static str,
}

const BEFORE_HEADERS: &str = "upstream connect error or disconnect/reset before headers. ";

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
            | ProxyError::UpstreamRefusedStream(_)
            | ProxyError::UpstreamProtocol(_)
            | ProxyError::PerTryTimeout
            | ProxyError::Timeout
            | ProxyError::StreamIdleTimeout => Side::Upstream,
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            ProxyError::ConnectFailure(_) | ProxyError::ConnectTimeout => Retry::Safe,
            ProxyError::Handshake(_)
            | ProxyError::UpstreamReset(_)
            | ProxyError::UpstreamRefusedStream(_)
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
            ProxyError::UnknownCluster
            | ProxyError::NoHealthyUpstream
            | ProxyError::ConnectFailure(_)
            | ProxyError::ConnectTimeout
            | ProxyError::Handshake(_)
            | ProxyError::UpstreamReset(_)
            | ProxyError::UpstreamRefusedStream(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamProtocol(_) | ProxyError::UpgradeToHttp2 => StatusCode::BAD_GATEWAY,
            // Envoy answers 504 to a stream idle timeout once the request is complete (408
            // while it is still arriving; that case is answered by the HTTP/1.1 server).
            ProxyError::PerTryTimeout | ProxyError::Timeout | ProxyError::StreamIdleTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::DownstreamBody(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Envoy's reset reason for a failure before the response headers (its
    /// `resetReasonToString`), if this is one.
    fn reset_reason(&self) -> Option<&'static str> {
        Some(match self {
            ProxyError::ConnectFailure(_) | ProxyError::Handshake(_) => "remote connection failure",
            ProxyError::ConnectTimeout => "connection timeout",
            ProxyError::UpstreamReset(_) => "connection termination",
            ProxyError::UpstreamRefusedStream(_) => "remote refused stream reset",
            ProxyError::UpstreamProtocol(_) => "protocol error",
            _ => return None,
        })
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
            ProxyError::UpstreamRefusedStream(_) => "UR",
            ProxyError::PerTryTimeout | ProxyError::Timeout => "UT",
            ProxyError::StreamIdleTimeout => "SI",
            ProxyError::UpgradeToHttp2 | ProxyError::UpstreamProtocol(_) => "UPE",
            ProxyError::DownstreamBody(_) => "DPE",
        }
    }

    /// The local reply for this error; `retried` when it ends a request that was tried more
    /// than once.
    pub fn local_reply(&self, retried: bool) -> LocalReply {
        let body: Cow<'static, str> = match (self, self.reset_reason()) {
            (_, Some(reason)) => {
                let latest = if retried {
                    "retried and the latest "
                } else {
                    ""
                };
                Cow::Owned(format!("{BEFORE_HEADERS}{latest}reset reason: {reason}"))
            }
            (ProxyError::NoHealthyUpstream, None) => Cow::Borrowed("no healthy upstream"),
            (ProxyError::UpgradeToHttp2, None) => Cow::Borrowed("upgrade failed"),
            (ProxyError::PerTryTimeout | ProxyError::Timeout, None) => {
                Cow::Borrowed("upstream request timeout")
            }
            (ProxyError::StreamIdleTimeout, None) => Cow::Borrowed("stream timeout"),
            (_, None) => Cow::Borrowed(""),
        };
        let flags = match (self.flag(), retried && self.reset_reason().is_some()) {
            ("UF", true) => "UF,URX",
            ("UC", true) => "UC,URX",
            ("UR", true) => "UR,URX",
            (flag, _) => flag,
        };
        LocalReply {
            status: self.status(),
            body,
            flags,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_follows_envoy() {
        assert_eq!(ProxyError::NoRoute.status(), 404);
        assert_eq!(ProxyError::NoHealthyUpstream.status(), 503);
        assert_eq!(ProxyError::UnknownCluster.status(), 503);
        assert_eq!(ProxyError::ConnectTimeout.status(), 503);
        assert_eq!(ProxyError::UpstreamProtocol("x").status(), 502);
        assert_eq!(ProxyError::Timeout.status(), 504);
        assert_eq!(ProxyError::ConnectTimeout.retry(), Retry::Safe);
        assert_eq!(ProxyError::PerTryTimeout.retry(), Retry::IfReplayable);
        assert_eq!(ProxyError::NoRoute.retry(), Retry::Never);
        assert_eq!(ProxyError::Timeout.side(), Side::Upstream);
    }

    #[test]
    fn reset_replies_name_the_reason_and_the_retries() {
        let refused = ProxyError::ConnectFailure(std::io::ErrorKind::ConnectionRefused.into());
        let once = refused.local_reply(false);
        assert_eq!((once.status.as_u16(), once.flags), (503, "UF"));
        assert_eq!(
            once.body,
            "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
        );
        let reset = ProxyError::UpstreamReset("eof".into()).local_reply(true);
        assert_eq!(reset.flags, "UC,URX");
        assert_eq!(
            reset.body,
            "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: connection termination"
        );
        assert_eq!(
            ProxyError::Timeout.local_reply(true).body,
            "upstream request timeout"
        );
        assert_eq!(ProxyError::NoRoute.local_reply(false).body, "");
    }
}
