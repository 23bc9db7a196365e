//! The request every try sends upstream, made once per downstream request by the router
//! (rewritten target, mutated headers, the body read ahead when a retry may replay it).
//!
//! Our own HTTP/1.1 client writes it out by reference, so a try builds nothing; hyper's
//! clients need a `Request` of their own: the head is moved into it, or cloned when another
//! try may need it, and a request hyper hands back unsent is kept for the next try.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use crate::buffers;
use crate::http::body::{DownstreamBody, RequestBody};
use crate::http::headers::{X_FORWARDED_PROTO, X_REQUEST_ID};

/// Where a try's body comes from.
#[derive(Debug)]
pub enum BodySource {
    Empty,
    /// Read whole before the first try, so every try can send it.
    Buffered(Bytes),
    /// Sent by one try only (taken by it).
    Stream(Option<DownstreamBody>),
}

/// Fields the proxy adds to every request it forwards unless the client sent them (Envoy's
/// `x-forwarded-proto` and `x-request-id`), kept out of the header map: an insert hashes the
/// name and probes the map, and our own HTTP/1.1 client only writes them out.
#[derive(Debug, Default)]
pub struct Added {
    pub forwarded_proto: Option<HeaderValue>,
    pub request_id: Option<HeaderValue>,
}

impl Added {
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        fn field<'a>(
            name: &'a HeaderName,
            value: &'a HeaderValue,
        ) -> (&'a HeaderName, &'a HeaderValue) {
            (name, value)
        }
        let proto = self
            .forwarded_proto
            .iter()
            .map(|v| field(&X_FORWARDED_PROTO, v));
        let id = self.request_id.iter().map(|v| field(&X_REQUEST_ID, v));
        proto.chain(id)
    }
}

#[derive(Debug)]
pub struct UpstreamRequest {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    /// The request's fields; then `added`'s.
    pub headers: HeaderMap,
    pub added: Added,
    pub body: BodySource,
    /// Another try may follow: hyper's clients get a copy of the head.
    pub keep: bool,
    /// The request asks for a protocol upgrade (only hyper's HTTP/1.1 client carries one).
    pub upgrade: bool,
    /// A request hyper handed back unsent, for the next try.
    returned: Option<Box<Request<RequestBody>>>,
    /// Raised when the streamed body the client sends fails (see `RequestBody::Stream`).
    stream_failed: Option<Arc<AtomicBool>>,
}

impl UpstreamRequest {
    /// A request that adds no fields and is sent once, without an upgrade (set the fields
    /// for more).
    pub fn new(
        method: Method,
        uri: Uri,
        version: Version,
        headers: HeaderMap,
        body: BodySource,
    ) -> UpstreamRequest {
        UpstreamRequest {
            method,
            uri,
            version,
            headers,
            added: Added::default(),
            body,
            keep: false,
            upgrade: false,
            returned: None,
            stream_failed: None,
        }
    }

    /// Whether a try that reached the upstream can be followed by another.
    pub fn replayable(&self) -> bool {
        !matches!(self.body, BodySource::Stream(_))
    }

    /// The body if it is in memory, for our own HTTP/1.1 client: `None` when it streams
    /// (or the request is an upgrade).
    pub(crate) fn body_in_memory(&self) -> Option<Option<Bytes>> {
        if self.upgrade {
            return None;
        }
        match &self.body {
            BodySource::Empty => Some(None),
            BodySource::Buffered(bytes) => Some(Some(bytes.clone())),
            BodySource::Stream(Some(DownstreamBody::Buffered(bytes))) => Some(bytes.clone()),
            BodySource::Stream(_) => None,
        }
    }

    /// The request for a try through hyper's clients: the one the last try handed back, or
    /// a new one. `None` once a streamed body has been taken by an earlier try.
    pub(crate) fn for_hyper(&mut self) -> Option<Request<RequestBody>> {
        if let Some(returned) = self.returned.take() {
            return Some(*returned);
        }
        let body = match &mut self.body {
            BodySource::Empty => RequestBody::Empty,
            BodySource::Buffered(bytes) => RequestBody::full(bytes.clone()),
            BodySource::Stream(body) => {
                let body = body.take()?;
                let failed = Arc::new(AtomicBool::new(false));
                self.stream_failed = Some(Arc::clone(&failed));
                RequestBody::Stream(body, failed)
            }
        };
        let mut req = Request::new(body);
        if self.keep {
            *req.method_mut() = self.method.clone();
            *req.uri_mut() = self.uri.clone();
            *req.headers_mut() = self.headers.clone();
        } else {
            *req.method_mut() = std::mem::take(&mut self.method);
            *req.uri_mut() = std::mem::take(&mut self.uri);
            *req.headers_mut() = std::mem::take(&mut self.headers);
        }
        *req.version_mut() = self.version;
        for (name, value) in self.added.fields() {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        Some(req)
    }

    /// Whether the client's streamed body failed while a try sent it.
    pub(crate) fn body_failed(&self) -> bool {
        self.stream_failed
            .as_ref()
            .is_some_and(|failed| failed.load(Relaxed))
    }

    /// Keeps a request hyper did not send for the next try.
    pub(crate) fn hand_back(&mut self, req: Box<Request<RequestBody>>) {
        self.returned = Some(req);
    }
}

impl Drop for UpstreamRequest {
    fn drop(&mut self) {
        // The header map goes back to the thread's stock (one that went to hyper left an
        // empty one here, which the stock refuses).
        buffers::put_header_map(std::mem::take(&mut self.headers));
    }
}
