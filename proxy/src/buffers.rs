//! Read and write buffers belong to requests, not connections (as in nginx): a connection
//! going idle gives its buffer back to a small per-thread stock, and the next request on the
//! thread takes one from there, so idle connections hold none and busy ones do not allocate
//! one per request. Both the downstream HTTP/1.1 server and the upstream HTTP/1.1 client take
//! from the same stock. Header maps (two allocations each, a request's and a response's) are
//! kept the same way, and so are the boxes the HTTP/1.1 server runs each request's future in.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use http::{HeaderMap, HeaderName};

/// A buffer's first size: most heads fit.
pub(crate) const READ_CHUNK: usize = 4096;

/// The stock's size bounds what idle time keeps: 64 x 4 KiB per thread.
const MAX_SPARE: usize = 64;

/// A header map with room for more than this many entries is freed, not kept.
const MAX_KEPT_HEADERS: usize = 64;

/// Request-future boxes kept per thread: about one per request in flight on it.
const MAX_SPARE_FUTURES: usize = 32;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static SPARE_MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
    /// One stock per future type (in practice one: the HTTP/1.1 request's), each a
    /// `Vec<Slot<F>>` behind `dyn Any`: boxes go in and out without a box around each.
    static SPARE_FUTURES: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
    static SPARE_LISTS: RefCell<Vec<HeaderList>> = const { RefCell::new(Vec::new()) };
}

type Stock<T> = std::thread::LocalKey<RefCell<Vec<T>>>;

/// Puts `item` into `stock` unless the stock already holds `max` (then it is dropped).
fn keep<T>(stock: &'static Stock<T>, item: T, max: usize) {
    stock.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < max {
            spare.push(item);
        }
    });
}

/// A parsed head's header names, each with its value's place in the read buffer (the values
/// become `HeaderValue`s sharing the buffer once the head is frozen).
pub(crate) type HeaderList = Vec<(HeaderName, std::ops::Range<usize>)>;

/// An empty header list.
pub(crate) fn header_list() -> HeaderList {
    SPARE_LISTS
        .with(|spare| spare.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(16))
}

/// Gives a header list back once its entries have been moved out.
pub(crate) fn put_header_list(mut list: HeaderList) {
    if list.capacity() > MAX_KEPT_HEADERS {
        return;
    }
    list.clear();
    keep(&SPARE_LISTS, list, MAX_SPARE);
}

/// How deep [`take`] looks for a buffer whose bytes are all released.
const RECLAIM_DEPTH: usize = 4;

/// A buffer with room for at least [`READ_CHUNK`] bytes.
pub(crate) fn take() -> BytesMut {
    // A buffer comes back while `Bytes` cut from it may still be alive (the upstream
    // client's read buffer goes back while its response is being written), and reserving
    // room in it then allocates anew. The newest spare is often such a one: look a little
    // deeper for a buffer nothing shares any more, and leave the others to be released.
    let reclaimed = SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        let depth = spare.len().min(RECLAIM_DEPTH);
        let start = spare.len() - depth;
        let found = spare[start..]
            .iter_mut()
            .rposition(|buf| buf.capacity() >= READ_CHUNK || buf.try_reclaim(READ_CHUNK))?;
        // The order of the spares does not matter: no shifting of the ones above it.
        Some(spare.swap_remove(start + found))
    });
    reclaimed.unwrap_or_else(|| BytesMut::with_capacity(READ_CHUNK))
}

/// Gives a buffer back; its contents are dropped.
pub(crate) fn put(mut buf: BytesMut) {
    // Only a buffer of the usual size is worth keeping; a grown one (a large head) is freed.
    buf.clear();
    if buf.capacity() == 0 || buf.capacity() > 4 * READ_CHUNK {
        return;
    }
    keep(&SPARE, buf, MAX_SPARE);
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
    keep(&SPARE_MAPS, map, MAX_SPARE);
}

/// A future pinned in a box from the per-thread stock; the box goes back to it when this is
/// dropped.
///
/// Why: a request's future is several kilobytes (routing, retries, the upstream exchange).
/// Boxed anew per request it costs glibc's slow path twice (beyond its per-thread cache's
/// 1 KiB limit) and it cannot live in the connection's task, which every idle connection
/// keeps.
pub(crate) struct Reused<F: 'static>(Option<Slot<F>>);

type Slot<F> = Pin<Box<Option<F>>>;

/// Runs `f` on the thread's stock of boxes for futures of type `F`.
fn with_slots<F: 'static, R>(f: impl FnOnce(&mut Vec<Slot<F>>) -> R) -> R {
    SPARE_FUTURES.with(|stocks| {
        let mut stocks = stocks.borrow_mut();
        if let Some(slots) = stocks
            .iter_mut()
            .find_map(|s| s.downcast_mut::<Vec<Slot<F>>>())
        {
            return f(slots);
        }
        let mut slots = Vec::new();
        let result = f(&mut slots);
        stocks.push(Box::new(slots));
        result
    })
}

/// Pins the future `start` makes in a box from the stock, or a new one. Made in place: an
/// async fn's new future holds only its arguments, where moving it would copy its whole size.
pub(crate) fn reuse<F: Future + 'static>(start: impl FnOnce() -> F) -> Reused<F> {
    let slot = match with_slots::<F, _>(Vec::pop) {
        Some(mut slot) => {
            slot.set(Some(start()));
            slot
        }
        None => Box::pin(Some(start())),
    };
    Reused(Some(slot))
}

impl<F: Future + 'static> Future for Reused<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(slot) = self.0.as_mut() else {
            return Poll::Pending;
        };
        let Some(future) = slot.as_mut().as_pin_mut() else {
            // Polled again after it finished.
            return Poll::Pending;
        };
        let output = std::task::ready!(future.poll(cx));
        slot.set(None);
        Poll::Ready(output)
    }
}

impl<F: 'static> Drop for Reused<F> {
    fn drop(&mut self) {
        let Some(mut slot) = self.0.take() else {
            return;
        };
        slot.set(None);
        with_slots(|slots| {
            if slots.len() < MAX_SPARE_FUTURES {
                slots.push(slot);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_still_shared_is_passed_over_until_its_bytes_are_released() {
        let mut buf = take();
        let start = buf.as_ptr();
        buf.extend_from_slice(b"response head");
        let head = buf.split_to(4).freeze();
        put(buf);
        // Reserving room in it now would allocate: another buffer comes instead.
        let other = take();
        assert_ne!(other.as_ptr(), start);
        drop(head);
        // Released: the same allocation comes back, from its start.
        let again = take();
        assert_eq!(again.as_ptr(), start);
        assert!(again.capacity() >= READ_CHUNK);
    }

    /// Answers, when polled, where it is.
    struct Whereabouts(u64);

    impl Future for Whereabouts {
        type Output = usize;

        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<usize> {
            Poll::Ready(std::ptr::from_ref(&self.0) as usize)
        }
    }

    async fn request() -> usize {
        Whereabouts(0).await
    }

    #[tokio::test]
    async fn a_finished_request_future_leaves_its_box_to_the_next() {
        let first = reuse(request).await;
        let second = reuse(request).await;
        assert_eq!(first, second);
        // Another kind of future has boxes of its own and leaves this kind's alone.
        let other = reuse(|| Whereabouts(1)).await;
        assert_ne!(other, first);
        assert_eq!(reuse(request).await, first);
        // Two in flight at once need two boxes.
        let (a, b) = tokio::join!(reuse(request), reuse(request));
        assert_ne!(a, b);
    }
}
