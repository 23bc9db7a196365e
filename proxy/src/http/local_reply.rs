//! Encodes the proxy's own answers as HTTP responses: what to answer is decided in
//! `crate::error` (status, body, flags); this is how it goes out, as plain HTTP or, for gRPC
//! requests, as Envoy's trailers-only translation (HTTP 200 with `grpc-status` and the body
//! as `grpc-message`).

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Response, StatusCode};

use super::body::ResponseBody;
use crate::error::{LocalReply, ProxyError};

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

impl ProxyError {
    /// The local reply for this error on a request tried once.
    pub fn to_response(&self, grpc: bool) -> Response<ResponseBody> {
        self.local_reply(false).into_response(grpc)
    }
}

impl LocalReply {
    pub fn into_response(self, grpc: bool) -> Response<ResponseBody> {
        let body = match self.body {
            std::borrow::Cow::Borrowed(text) => Bytes::from_static(text.as_bytes()),
            std::borrow::Cow::Owned(text) => Bytes::from(text),
        };
        local_reply(self.status, body, grpc)
    }
}

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
