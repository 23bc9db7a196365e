//! The proxy benchmark's fixed-response backend: `mesh-bench backend` answers every request
//! with `200 OK` and a fixed 13-byte body, over HTTP/1.1 (keep-alive) and h2c; an HTTP/2
//! request whose content-type is `application/grpc...` gets a unary gRPC answer instead: one
//! fixed message, then `grpc-status: 0` in the trailers. It runs as its own process so its CPU
//! time is not the load generator's, and logs `backend listening addr=...`.

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use tokio::net::TcpListener;

/// The body every plain answer carries.
pub const BODY: &[u8] = b"hello, bench\n";

/// The gRPC method the load generator calls (the backend answers any).
pub const GRPC_PATH: &str = "/bench.Bench/Echo";

/// The load generator's gRPC request: a length-prefixed message (flag 0, uncompressed; 4-byte
/// big-endian length 16) and 16 bytes of payload.
pub const GRPC_REQUEST: &[u8] = b"\x00\x00\x00\x00\x10bench-grpc-echo!";

/// The backend's gRPC answer: a length-prefixed message (uncompressed, 13 bytes) holding
/// [`BODY`].
pub const GRPC_REPLY: &[u8] = b"\x00\x00\x00\x00\x0dhello, bench\n";

/// An answer's body: its data in one frame, then its trailers, if any.
pub struct Reply {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Exact only without trailers, so that a plain answer carries a content-length (as
        // `Full` gave it) and a gRPC one, like a gRPC server's, does not.
        match (&self.data, &self.trailers) {
            (Some(data), None) => SizeHint::with_exact(data.len() as u64),
            (None, None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

fn is_grpc(request: &Request<Incoming>) -> bool {
    request.version() == Version::HTTP_2
        && request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

async fn answer(request: Request<Incoming>) -> Result<Response<Reply>, Infallible> {
    if !is_grpc(&request) {
        let mut response = Response::new(Reply {
            data: Some(Bytes::from_static(BODY)),
            trailers: None,
        });
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return Ok(response);
    }
    // A unary gRPC server reads the whole request message before it answers.
    let status = match request.into_body().collect().await {
        Ok(_) => "0",
        // INTERNAL: the load generator counts anything but 0 as an error.
        Err(_) => "13",
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static(status));
    let mut response = Response::new(Reply {
        data: Some(Bytes::from_static(GRPC_REPLY)),
        trailers: Some(trailers),
    });
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    Ok(response)
}

/// Serves until the process is killed.
pub async fn serve(addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind {addr}"))?;
    eprintln!(
        "mesh-bench: backend listening addr={}",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The length prefix of a gRPC message, checked against its payload.
    fn prefixed_length(frame: &[u8]) -> (u8, usize, usize) {
        let length = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]);
        (frame[0], length as usize, frame.len() - 5)
    }

    #[test]
    fn grpc_messages_are_well_framed() {
        assert_eq!(prefixed_length(GRPC_REQUEST), (0, 16, 16));
        assert_eq!(prefixed_length(GRPC_REPLY), (0, BODY.len(), BODY.len()));
        assert_eq!(&GRPC_REPLY[5..], BODY);
    }
}
