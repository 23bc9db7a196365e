//! Read and write buffers belong to requests, not connections (as in nginx): a connection
//! going idle gives its buffer back to a small per-thread stock, and the next request on the
//! thread takes one from there, so idle connections hold none and busy ones do not allocate
//! one per request. Both the downstream HTTP/1.1 server and the upstream HTTP/1.1 client take
//! from the same stock. Header maps (two allocations each, a request's and a response's) are
//! kept the same way.

use bytes::BytesMut;
use http::HeaderMap;
use std::cell::RefCell;

/// A buffer's first size: most heads fit.
pub(crate) const READ_CHUNK: usize = 4096;

/// The stock's size bounds what idle time keeps: 64 x 4 KiB per thread.
const MAX_SPARE: usize = 64;

/// A header map with room for more than this many entries is freed, not kept.
const MAX_KEPT_HEADERS: usize = 64;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static SPARE_MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// A buffer with room for at least [`READ_CHUNK`] bytes.
pub(crate) fn take() -> BytesMut {
    let mut buf = SPARE
        .with(|spare| spare.borrow_mut().pop())
        .unwrap_or_default();
    // Reuses the allocation when nothing else shares it, else allocates.
    buf.reserve(READ_CHUNK);
    buf
}

/// Gives a buffer back; its contents are dropped.
pub(crate) fn put(mut buf: BytesMut) {
    // Only a buffer of the usual size is worth keeping; a grown one (a large head) is freed.
    buf.clear();
    if buf.capacity() == 0 || buf.capacity() > 4 * READ_CHUNK {
        return;
    }
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < MAX_SPARE {
            spare.push(buf);
        }
    });
}

/// An empty header map with room for `capacity` entries.
pub(crate) fn header_map(capacity: usize) -> HeaderMap {
    match SPARE_MAPS.with(|spare| spare.borrow_mut().pop()) {
        Some(mut map) => {
            map.reserve(capacity);
            map
        }
        None => HeaderMap::with_capacity(capacity),
    }
}

/// Gives a header map back once a message is done with it; its entries are dropped.
pub(crate) fn put_header_map(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > MAX_KEPT_HEADERS {
        return;
    }
    map.clear();
    SPARE_MAPS.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < MAX_SPARE {
            spare.push(map);
        }
    });
}
