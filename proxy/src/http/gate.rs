//! What hyper reads of an HTTP/1.1 connection our server handed to it: every request head
//! and the body it frames pass the framing rules (`crate::framing`) before hyper sees a byte
//! of them, so that the requests hyper parses after the first (which our server checked) are
//! held to the same rules: a head refused here is answered as our server answers it, and a
//! malformed chunked body ends the request as a downstream body error (400).
//!
//! A refused head is never given to hyper: the gate then holds hyper's reads, tells the
//! connection's loop (which asks hyper to finish what it is writing and close), and writes
//! the refusal when hyper shuts the connection down, after the last response.
//!
//! Bytes after an `Upgrade` or `CONNECT` request pass unchecked: they may be another
//! protocol once the upstream agreed.
//!
//! The gate also keeps the connection manager's deadline on each head, from the head's
//! first byte (hyper's own `header_read_timeout` would run from the end of the previous
//! response, closing idle keep-alive connections, and close without an answer): a head not
//! whole in time is refused with Envoy's 408, as our server refuses it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use http::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use tokio::time::{Instant, Sleep};

use super::h1::{ReadLimits, ReadTimeout, timeout_reply};
use crate::buffers::{self, READ_CHUNK};
use crate::framing::{self, BodyLength, ChunkStep, ChunkedDecoder, FramingError};
use crate::metrics::HttpStats;

#[derive(Debug)]
enum State {
    Head,
    /// Body bytes still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// After an upgrade or CONNECT: everything passes.
    Through,
    /// A head was refused: nothing more passes.
    Refused,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Gate {
    /// Read from the socket, not yet given to hyper; the first `ready` bytes have passed.
    pending: BytesMut,
    ready: usize,
    state: State,
    /// What follows the current body: another head, or (after an upgrade) anything.
    then_through: bool,
    head_limit: usize,
    /// A chunked body was refused: hyper's next read fails with it.
    body_error: Option<FramingError>,
    refused: Arc<Notify>,
    /// The refusal's answer, still to write before the connection closes.
    answer: Option<BytesMut>,
    limits: ReadLimits,
    /// The deadline of the head being read, from its first byte.
    head_deadline: Option<(Pin<Box<Sleep>>, ReadTimeout)>,
    stats: Arc<HttpStats>,
}

/// What the gate made of what it holds.
enum Progress {
    Ready,
    NeedMore,
    Refused,
}

impl Gate {
    /// `read`: what our server read and did not consume (it starts with a head it checked).
    pub(crate) fn new(
        read: BytesMut,
        head_limit: usize,
        limits: ReadLimits,
        stats: Arc<HttpStats>,
    ) -> Gate {
        Gate {
            pending: read,
            ready: 0,
            state: State::Head,
            then_through: false,
            head_limit,
            body_error: None,
            refused: Arc::new(Notify::new()),
            answer: None,
            limits,
            head_deadline: None,
            stats,
        }
    }

    /// Notified once a head is refused.
    pub(crate) fn refusals(&self) -> Arc<Notify> {
        Arc::clone(&self.refused)
    }

    fn after_body(&self) -> State {
        if self.then_through {
            State::Through
        } else {
            State::Head
        }
    }

    /// Moves what `pending` holds through the rules, as far as they allow.
    fn advance(&mut self) -> Progress {
        match &mut self.state {
            State::Refused => Progress::Refused,
            State::Through if self.pending.is_empty() => Progress::NeedMore,
            State::Through => {
                self.ready = self.pending.len();
                Progress::Ready
            }
            State::Head => match framing::parse_request_head(&self.pending, self.head_limit) {
                Ok(None) => Progress::NeedMore,
                Ok(Some(head)) => {
                    self.head_deadline = None;
                    self.ready = head.len;
                    self.then_through = head.upgrade || head.method == Method::CONNECT;
                    self.state = match head.body {
                        BodyLength::Length(0) | BodyLength::UntilClose => self.after_body(),
                        BodyLength::Length(n) => State::Length(n),
                        BodyLength::Chunked => State::Chunked(ChunkedDecoder::new()),
                    };
                    buffers::put_header_list(head.headers);
                    Progress::Ready
                }
                Err(e) => {
                    tracing::debug!(error = %e, "request refused");
                    self.refuse(e.request_status())
                }
            },
            State::Length(_) if self.pending.is_empty() => Progress::NeedMore,
            State::Length(left) => {
                let n = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(self.pending.len());
                *left -= n as u64;
                self.ready = n;
                if *left == 0 {
                    self.state = self.after_body();
                }
                Progress::Ready
            }
            State::Chunked(decoder) => {
                let mut ended = false;
                while self.ready < self.pending.len() {
                    match decoder.step(&self.pending[self.ready..]) {
                        Ok(ChunkStep::Framing(n) | ChunkStep::Data(n)) => self.ready += n,
                        Ok(ChunkStep::End(n)) => {
                            self.ready += n;
                            ended = true;
                            break;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "request body refused");
                            self.body_error = Some(e);
                            self.state = State::Refused;
                            break;
                        }
                    }
                }
                if ended {
                    self.state = self.after_body();
                }
                if self.ready > 0 || self.body_error.is_some() {
                    Progress::Ready
                } else {
                    Progress::NeedMore
                }
            }
        }
    }

    fn refuse(&mut self, status: StatusCode) -> Progress {
        self.refuse_with(super::h1::reject(status))
    }

    fn refuse_with(&mut self, answer: BytesMut) -> Progress {
        self.state = State::Refused;
        self.answer = Some(answer);
        self.refused.notify_one();
        Progress::Refused
    }

    /// A head has begun: whether its deadline passed (the deadline is set at the first call).
    fn head_late(&mut self, cx: &mut Context<'_>) -> bool {
        let (sleep, why) = self.head_deadline.get_or_insert_with(|| {
            let (at, why) = self.limits.start(Instant::now()).head();
            (Box::pin(tokio::time::sleep_until(at)), why)
        });
        if sleep.as_mut().poll(cx).is_pending() {
            return false;
        }
        let answer = timeout_reply(&self.stats, *why);
        self.head_deadline = None;
        self.refuse_with(answer);
        true
    }

    pub(crate) fn poll_read(
        &mut self,
        stream: &mut TcpStream,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.ready > 0 {
                let n = self.ready.min(out.remaining());
                out.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                self.ready -= n;
                // Like our server, hold no buffer between messages.
                if self.pending.is_empty() {
                    buffers::put(std::mem::take(&mut self.pending));
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = self.body_error.take() {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
            match self.advance() {
                Progress::Ready => continue,
                // hyper waits; the connection's loop has it finish and shut down.
                Progress::Refused => return Poll::Pending,
                Progress::NeedMore => {}
            }
            // A body's bytes, or anything after an upgrade, go straight to hyper's buffer.
            let direct = match self.state {
                State::Length(left) if self.pending.is_empty() => {
                    Some(usize::try_from(left).unwrap_or(usize::MAX))
                }
                State::Through if self.pending.is_empty() => Some(usize::MAX),
                _ => None,
            };
            if let Some(limit) = direct {
                let room = out.initialize_unfilled_to(limit.min(out.remaining()));
                let mut read = ReadBuf::new(room);
                ready!(Pin::new(&mut *stream).poll_read(cx, &mut read))?;
                let n = read.filled().len();
                out.advance(n);
                if let State::Length(left) = &mut self.state {
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = self.after_body();
                    }
                }
                return Poll::Ready(Ok(()));
            }
            if self.pending.capacity() == 0 {
                self.pending = buffers::take();
            } else if self.pending.capacity() - self.pending.len() < 1024 {
                self.pending.reserve(READ_CHUNK);
            }
            if matches!(self.state, State::Head) && !self.pending.is_empty() && self.head_late(cx) {
                return Poll::Pending;
            }
            let before = self.pending.len();
            let read = tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, &mut self.pending);
            if read.is_pending() && self.pending.is_empty() {
                // An idle connection holds no buffer.
                buffers::put(std::mem::take(&mut self.pending));
            }
            ready!(read)?;
            if self.pending.len() == before {
                // Closed: what did not pass never reaches hyper, which sees the close.
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Writes a refusal's answer, if any, before the connection is shut down.
    pub(crate) fn poll_answer(
        &mut self,
        stream: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while let Some(answer) = &mut self.answer {
            if answer.is_empty() {
                self.answer = None;
                break;
            }
            let n = ready!(Pin::new(&mut *stream).poll_write(cx, answer))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            answer.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests;
