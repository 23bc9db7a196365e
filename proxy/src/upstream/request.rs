//! The request every try sends upstream, made once per downstream request by the router
//! (rewritten target, mutated headers, the body read ahead when a retry may replay it).
//!
//! Our own HTTP/1.1 client writes it out by reference, so a try builds nothing; hyper's
//! clients need a `Request` of their own: the head is moved into it, or cloned when another
//! try may need it, and a request hyper hands back unsent is kept for the next try.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri, Version};

use crate::buffers;
use crate::http::body::{DownstreamBody, RequestBody};

/// Where a try's body comes from.
#[derive(Debug)]
pub enum BodySource {
    Empty,
    /// Read whole before the first try, so every try can send it.
    Buffered(Bytes),
    /// Sent by one try only (taken by it).
    Stream(Option<DownstreamBody>),
}

#[derive(Debug)]
pub struct UpstreamRequest {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: BodySource,
    /// Another try may follow: hyper's clients get a copy of the head.
    pub keep: bool,
    /// The request asks for a protocol upgrade (only hyper's HTTP/1.1 client carries one).
    pub upgrade: bool,
    /// A request hyper handed back unsent, for the next try.
    returned: Option<Box<Request<RequestBody>>>,
}

impl UpstreamRequest {
    pub fn new(
        method: Method,
        uri: Uri,
        version: Version,
        headers: HeaderMap,
        body: BodySource,
        keep: bool,
        upgrade: bool,
    ) -> UpstreamRequest {
        UpstreamRequest {
            method,
            uri,
            version,
            headers,
            body,
            keep,
            upgrade,
            returned: None,
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
            BodySource::Stream(body) => RequestBody::Stream(body.take()?),
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
        Some(req)
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
