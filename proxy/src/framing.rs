//! HTTP/1.1 message framing (RFC 9112), written once for both directions: the request heads
//! our server reads, the response heads our client reads, the chunked bodies it decodes, and
//! the checks applied to what hyper parses for us. httparse tokenises; the policy is here.
//!
//! The rules follow what a stock Envoy 1.40 accepts and refuses, and are stricter where Envoy
//! is lenient and the leniency could only hide a framing error:
//! - `Content-Length` is `1*DIGIT` (leading zeros allowed, no sign, no list, no overflow);
//!   a second `Content-Length` field is refused even with the same value (Envoy: 400 / 502).
//! - `Transfer-Encoding` must be one field saying exactly `chunked` (any case): other codings
//!   are refused (Envoy: 501 for a request, 502 for a response), and so is a message with both
//!   `Transfer-Encoding` and `Content-Length` (Envoy's default, 400 / 502), in either order.
//! - A 1xx or 204 response may carry neither a body nor a framing field (`Content-Length: 0`
//!   aside); 304 and HEAD responses have no body whatever they announce.
//! - Header fields: httparse refuses whitespace before the colon, obs-fold, bare CR, NUL and
//!   other control characters except HTAB; bare LF line ends are accepted (as by Envoy).
//!   Envoy unfolds obs-fold and drops a bare CR instead: we refuse both, as RFC 9112 allows.
//!   At most [`MAX_HEADERS`] fields.
//! - Chunked bodies: the size is hex digits only and must fit in 64 bits; extensions follow
//!   RFC 9112's grammar and the size line is at most [`MAX_CHUNK_LINE`] bytes (Envoy takes
//!   any bytes but LF there, at any length); every line ends in CRLF (Envoy accepts a bare LF
//!   after chunk data and skips bytes between the data and the line end); trailers are header
//!   fields (no obs-fold), at most [`MAX_TRAILERS`] of them in [`MAX_TRAILER_BYTES`].

use std::fmt;
use std::mem::MaybeUninit;
use std::ops::Range;

use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, Method, StatusCode, Version};

use crate::buffers;
use crate::http::headers::{header_name, is_hop_by_hop, lists_token};

/// Header fields in one head (Envoy's default `max_headers_count`; hyper's default too).
pub const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (size, extensions and CRLF).
pub const MAX_CHUNK_LINE: usize = 4096;
/// Trailer fields after a chunked body.
pub const MAX_TRAILERS: usize = 100;
/// Bytes of the trailer section (Envoy's default header limit, 60 KiB).
pub const MAX_TRAILER_BYTES: usize = 60 * 1024;

/// What makes a message's framing or head unacceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    MalformedHead,
    UnsupportedVersion,
    InvalidMethod,
    InvalidHeaderName,
    TooManyHeaders,
    HeadTooLarge,
    InvalidStatus,
    InvalidContentLength,
    MultipleContentLength,
    UnsupportedTransferEncoding,
    ContentLengthAndTransferEncoding,
    BodyInBodylessResponse,
    InvalidChunkSize,
    InvalidChunkExtension,
    ChunkLineTooLong,
    InvalidChunkEnd,
    InvalidTrailer,
    TrailersTooLarge,
}

impl FramingError {
    /// The reason, for logs and for the upstream protocol error it becomes.
    pub fn as_str(self) -> &'static str {
        match self {
            FramingError::MalformedHead => "malformed head",
            FramingError::UnsupportedVersion => "unsupported HTTP version",
            FramingError::InvalidMethod => "invalid method",
            FramingError::InvalidHeaderName => "invalid header name",
            FramingError::TooManyHeaders => "too many header fields",
            FramingError::HeadTooLarge => "head too large",
            FramingError::InvalidStatus => "invalid status",
            FramingError::InvalidContentLength => "invalid content-length",
            FramingError::MultipleContentLength => "multiple content-length fields",
            FramingError::UnsupportedTransferEncoding => "unsupported transfer-encoding",
            FramingError::ContentLengthAndTransferEncoding => {
                "both content-length and transfer-encoding"
            }
            FramingError::BodyInBodylessResponse => "framing fields in a response without a body",
            FramingError::InvalidChunkSize => "invalid chunk size",
            FramingError::InvalidChunkExtension => "invalid chunk extension",
            FramingError::ChunkLineTooLong => "chunk size line too long",
            FramingError::InvalidChunkEnd => "no CRLF after chunk data",
            FramingError::InvalidTrailer => "invalid trailer field",
            FramingError::TrailersTooLarge => "trailers too large",
        }
    }

    /// What a server answers a request refused for this (Envoy's status for each).
    pub fn request_status(self) -> StatusCode {
        match self {
            FramingError::UnsupportedTransferEncoding => StatusCode::NOT_IMPLEMENTED,
            FramingError::TooManyHeaders | FramingError::HeadTooLarge => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            FramingError::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

// Display by hand: the upstream protocol error it becomes needs the text as a `&'static str`.
impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for FramingError {}

/// How a message body is delimited (RFC 9112 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// Exactly this many bytes (0: no body).
    Length(u64),
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// A `Content-Length` value: `1*DIGIT` between optional SP/HTAB (the field's OWS).
pub fn content_length(value: &[u8]) -> Result<u64, FramingError> {
    let digits = trim_ows(value);
    if digits.is_empty() {
        return Err(FramingError::InvalidContentLength);
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(FramingError::InvalidContentLength);
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(FramingError::InvalidContentLength)?;
    }
    Ok(n)
}

/// Whether a `Transfer-Encoding` value is exactly `chunked` (any case): the only coding
/// accepted, as by Envoy.
pub fn is_chunked(value: &[u8]) -> bool {
    trim_ows(value).eq_ignore_ascii_case(b"chunked")
}

fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// The framing fields of one head, collected field by field; the message length is decided
/// once the head is complete ([`FramingFields::request`], [`FramingFields::response`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct FramingFields {
    content_length: Option<u64>,
    transfer_encodings: u8,
    /// The last `Transfer-Encoding` field said `chunked`.
    chunked: bool,
}

impl FramingFields {
    /// A `Content-Length` field. Refused at once when invalid or not the first.
    pub fn content_length(&mut self, value: &[u8]) -> Result<(), FramingError> {
        if self.content_length.is_some() {
            return Err(FramingError::MultipleContentLength);
        }
        self.content_length = Some(content_length(value)?);
        Ok(())
    }

    /// A `Transfer-Encoding` field.
    pub fn transfer_encoding(&mut self, value: &[u8]) {
        self.transfer_encodings = self.transfer_encodings.saturating_add(1);
        self.chunked = is_chunked(value);
    }

    /// Transfer-Encoding, when present, must be one `chunked` and alone.
    fn coding(&self) -> Result<bool, FramingError> {
        match (self.transfer_encodings, self.content_length) {
            (0, _) => Ok(false),
            (_, Some(_)) => Err(FramingError::ContentLengthAndTransferEncoding),
            (1, None) if self.chunked => Ok(true),
            _ => Err(FramingError::UnsupportedTransferEncoding),
        }
    }

    /// A request's body length: chunked, a length, or none.
    pub fn request(&self) -> Result<BodyLength, FramingError> {
        if self.coding()? {
            return Ok(BodyLength::Chunked);
        }
        Ok(BodyLength::Length(self.content_length.unwrap_or(0)))
    }

    /// A response's body length, for a response to a HEAD request when `head_request`.
    pub fn response(&self, status: u16, head_request: bool) -> Result<BodyLength, FramingError> {
        let chunked = self.coding()?;
        if (100..200).contains(&status) || status == 204 {
            if self.transfer_encodings > 0 || self.content_length.is_some_and(|n| n != 0) {
                return Err(FramingError::BodyInBodylessResponse);
            }
            return Ok(BodyLength::Length(0));
        }
        if status == 304 || head_request {
            return Ok(BodyLength::Length(0));
        }
        Ok(match (chunked, self.content_length) {
            (true, _) => BodyLength::Chunked,
            (false, Some(n)) => BodyLength::Length(n),
            (false, None) => BodyLength::UntilClose,
        })
    }

    /// The framing fields of a parsed header map (hyper's), for [`FramingFields::response`]
    /// or [`FramingFields::request`].
    pub fn of(headers: &HeaderMap) -> Result<FramingFields, FramingError> {
        let mut fields = FramingFields::default();
        for value in headers.get_all(CONTENT_LENGTH) {
            fields.content_length(value.as_bytes())?;
        }
        for value in headers.get_all(TRANSFER_ENCODING) {
            fields.transfer_encoding(value.as_bytes());
        }
        Ok(fields)
    }
}

/// Checks a response head hyper's client parsed against our rules: hyper reads a body
/// framed by both `Transfer-Encoding` and `Content-Length` as chunked and keeps the
/// `Content-Length`, and reads other codings until the close.
pub fn check_response(
    status: StatusCode,
    headers: &HeaderMap,
    head_request: bool,
) -> Result<(), FramingError> {
    // A switch of protocols has no HTTP body to frame.
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(());
    }
    FramingFields::of(headers)?.response(status.as_u16(), head_request)?;
    Ok(())
}

/// A request head, its target and header values as ranges of the parsed buffer.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub version: Version,
    pub target: Range<usize>,
    pub(crate) headers: buffers::HeaderList,
    /// Bytes of the head, its final CRLF included.
    pub len: usize,
    pub body: BodyLength,
    /// `Connection: close`.
    pub close: bool,
    /// An `Upgrade` field is present.
    pub upgrade: bool,
    /// An `Expect` field is present.
    pub expect: bool,
}

impl RequestHead {
    /// The header fields: names and ranges of the parsed buffer.
    pub fn fields(&self) -> impl Iterator<Item = (&http::HeaderName, Range<usize>)> {
        self.headers
            .iter()
            .map(|(name, range)| (name, range.clone()))
    }
}

/// Where `part` (a slice of `buf`) lies in `buf`.
fn range_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

fn head_error(error: httparse::Error) -> FramingError {
    match error {
        httparse::Error::TooManyHeaders => FramingError::TooManyHeaders,
        httparse::Error::Version => FramingError::UnsupportedVersion,
        httparse::Error::Status => FramingError::InvalidStatus,
        httparse::Error::HeaderName => FramingError::InvalidHeaderName,
        _ => FramingError::MalformedHead,
    }
}

/// Parses a complete request head at the start of `buf` and decides its body length, or
/// says more bytes are needed (Ok(None)). A head longer than `limit` is refused.
pub fn parse_request_head(buf: &[u8], limit: usize) -> Result<Option<RequestHead>, FramingError> {
    // Uninitialised: filling 100 empty headers first costs more than parsing a short head.
    let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > limit {
                Err(FramingError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(e) => return Err(head_error(e)),
    };
    if len > limit {
        return Err(FramingError::HeadTooLarge);
    }
    let version = if parsed.version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let method = Method::from_bytes(parsed.method.unwrap_or("").as_bytes())
        .map_err(|_| FramingError::InvalidMethod)?;
    let target = range_in(buf, parsed.path.unwrap_or("").as_bytes());
    let mut list = buffers::header_list();
    let mut framing = FramingFields::default();
    let (mut close, mut upgrade, mut expect) = (false, false, false);
    for h in parsed.headers.iter() {
        let name = header_name(h.name.as_bytes()).map_err(|_| FramingError::InvalidHeaderName)?;
        // The framing fields first: these few comparisons are all a common head pays.
        if name == CONTENT_LENGTH {
            framing.content_length(h.value)?;
        } else if name == TRANSFER_ENCODING {
            framing.transfer_encoding(h.value);
        } else if name == CONNECTION {
            close |= lists_token(h.value, "close");
        } else if name == UPGRADE {
            upgrade = true;
        } else if name == EXPECT {
            expect = true;
        }
        list.push((name, range_in(buf, h.value)));
    }
    let body = framing.request()?;
    Ok(Some(RequestHead {
        method,
        version,
        target,
        headers: list,
        len,
        body,
        close,
        upgrade,
        expect,
    }))
}

/// A response head, its header values as ranges of the parsed buffer.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub(crate) headers: buffers::HeaderList,
    /// Bytes of the head, its final CRLF included.
    pub len: usize,
    pub body: BodyLength,
    /// The connection may carry another exchange after this one (as far as the head says).
    pub keep_alive: bool,
    /// A connection-specific field is among the headers.
    pub hop_by_hop: bool,
}

impl ResponseHead {
    pub fn fields(&self) -> impl Iterator<Item = (&http::HeaderName, Range<usize>)> {
        self.headers
            .iter()
            .map(|(name, range)| (name, range.clone()))
    }
}

/// Parses a complete response head at the start of `buf`, the answer to a HEAD request when
/// `head_request`, or says more bytes are needed (Ok(None)).
pub fn parse_response_head(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<ResponseHead>, FramingError> {
    let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let parse = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut headers,
    );
    let len = match parse {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(head_error(e)),
    };
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| FramingError::InvalidStatus)?;
    let version = if parsed.version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let mut keep_alive = version == Version::HTTP_11;
    let mut framing = FramingFields::default();
    let mut list = buffers::header_list();
    let mut hop_by_hop = false;
    for h in parsed.headers.iter() {
        let name = header_name(h.name.as_bytes()).map_err(|_| FramingError::InvalidHeaderName)?;
        hop_by_hop |= is_hop_by_hop(&name);
        if name == CONTENT_LENGTH {
            framing.content_length(h.value)?;
        } else if name == TRANSFER_ENCODING {
            framing.transfer_encoding(h.value);
        } else if name == CONNECTION {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                    keep_alive = true;
                }
            }
        }
        list.push((name, range_in(buf, h.value)));
    }
    let body = framing.response(code, head_request)?;
    if body == BodyLength::UntilClose {
        keep_alive = false;
    }
    Ok(Some(ResponseHead {
        status,
        version,
        headers: list,
        len,
        body,
        keep_alive,
        hop_by_hop,
    }))
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// The first hex digit of a chunk size.
    SizeStart,
    Size,
    /// Whitespace after the size, before `;` or CR.
    SizeWs,
    /// After `;`: whitespace, then an extension's name.
    ExtNameStart,
    ExtName,
    /// Whitespace after an extension's name.
    ExtNameWs,
    /// After `=`: whitespace, then the value.
    ExtValueStart,
    ExtToken,
    ExtQuoted,
    ExtQuotedEscape,
    /// Whitespace after an extension's value.
    ExtValueEnd,
    /// The LF ending the size line.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// The start of a trailer line, or of the empty line that ends the body.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// What [`ChunkedDecoder::step`] made of the front of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkStep {
    /// The first `n` bytes were framing (n may be 0 only for empty input): skip them.
    Framing(usize),
    /// The first `n` bytes (n > 0) are body data.
    Data(usize),
    /// The body ended with the first `n` bytes; what follows is not part of it.
    End(usize),
}

/// A chunked body's decoder: framing bytes are checked one by one, data is handed on in
/// whole slices. It keeps no buffer, so any split of the input decodes alike.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: Chunk,
    /// The chunk size being read, then the data left in the chunk.
    size: u64,
    /// Bytes of the current size line.
    line: usize,
    trailers: usize,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// qdtext (RFC 9110 5.6.4), and the octets a quoted-pair may escape but `"` and `\`.
fn is_qdtext(b: u8) -> bool {
    b == b'\t'
        || b == b' '
        || b == 0x21
        || (0x23..=0x5b).contains(&b)
        || (0x5d..=0x7e).contains(&b)
        || b >= 0x80
}

/// A field value's octets: VCHAR, obs-text, SP and HTAB.
fn is_field_vchar(b: u8) -> bool {
    b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80
}

impl ChunkedDecoder {
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder {
            state: Chunk::SizeStart,
            size: 0,
            line: 0,
            trailers: 0,
            trailer_bytes: 0,
        }
    }

    /// The body has ended.
    pub fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Decodes the front of `input`.
    pub fn step(&mut self, input: &[u8]) -> Result<ChunkStep, FramingError> {
        match self.state {
            Chunk::Data => {
                if input.is_empty() {
                    return Ok(ChunkStep::Framing(0));
                }
                let n = usize::try_from(self.size)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = Chunk::DataCr;
                }
                return Ok(ChunkStep::Data(n));
            }
            Chunk::Done => return Ok(ChunkStep::End(0)),
            _ => {}
        }
        for (i, &b) in input.iter().enumerate() {
            self.byte(b)?;
            match self.state {
                Chunk::Data => return Ok(ChunkStep::Framing(i + 1)),
                Chunk::Done => return Ok(ChunkStep::End(i + 1)),
                _ => {}
            }
        }
        Ok(ChunkStep::Framing(input.len()))
    }

    fn byte(&mut self, b: u8) -> Result<(), FramingError> {
        use Chunk::*;
        if matches!(
            self.state,
            SizeStart
                | Size
                | SizeWs
                | ExtNameStart
                | ExtName
                | ExtNameWs
                | ExtValueStart
                | ExtToken
                | ExtQuoted
                | ExtQuotedEscape
                | ExtValueEnd
                | SizeLf
        ) {
            self.line += 1;
            if self.line > MAX_CHUNK_LINE {
                return Err(FramingError::ChunkLineTooLong);
            }
        }
        if matches!(
            self.state,
            TrailerStart | TrailerName | TrailerValue | TrailerLf | EndLf
        ) {
            self.trailer_bytes += 1;
            if self.trailer_bytes > MAX_TRAILER_BYTES {
                return Err(FramingError::TrailersTooLarge);
            }
        }
        let ws = b == b' ' || b == b'\t';
        self.state = match (self.state, b) {
            (SizeStart | Size, _) if b.is_ascii_hexdigit() => {
                // Leading zeros are fine; a value past 64 bits is not.
                if self.size >> 60 != 0 {
                    return Err(FramingError::InvalidChunkSize);
                }
                let digit = char::from(b).to_digit(16).unwrap_or(0);
                self.size = (self.size << 4) | u64::from(digit);
                Size
            }
            (SizeStart, _) => return Err(FramingError::InvalidChunkSize),
            (Size | SizeWs, _) if ws => SizeWs,
            (Size | SizeWs | ExtNameWs | ExtToken | ExtValueEnd, b';') => ExtNameStart,
            (Size | SizeWs | ExtName | ExtNameWs | ExtToken | ExtValueEnd, b'\r') => SizeLf,
            (Size | SizeWs, _) => return Err(FramingError::InvalidChunkSize),
            (ExtNameStart, _) if ws => ExtNameStart,
            (ExtNameStart | ExtName, _) if is_tchar(b) => ExtName,
            (ExtName, b';') => ExtNameStart,
            (ExtName | ExtNameWs, _) if ws => ExtNameWs,
            (ExtName | ExtNameWs, b'=') => ExtValueStart,
            (ExtValueStart, _) if ws => ExtValueStart,
            (ExtValueStart, b'"') => ExtQuoted,
            (ExtValueStart | ExtToken, _) if is_tchar(b) => ExtToken,
            (ExtToken | ExtValueEnd, _) if ws => ExtValueEnd,
            (ExtQuoted, b'"') => ExtValueEnd,
            (ExtQuoted, b'\\') => ExtQuotedEscape,
            (ExtQuoted, _) if is_qdtext(b) => ExtQuoted,
            (ExtQuotedEscape, _) if is_field_vchar(b) => ExtQuoted,
            (
                ExtNameStart | ExtName | ExtNameWs | ExtValueStart | ExtToken | ExtQuoted
                | ExtQuotedEscape | ExtValueEnd,
                _,
            ) => return Err(FramingError::InvalidChunkExtension),
            (SizeLf, b'\n') => {
                self.line = 0;
                if self.size == 0 { TrailerStart } else { Data }
            }
            (SizeLf, _) => return Err(FramingError::InvalidChunkSize),
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => {
                self.size = 0;
                SizeStart
            }
            (DataCr | DataLf, _) => return Err(FramingError::InvalidChunkEnd),
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart, _) if is_tchar(b) => {
                self.trailers += 1;
                if self.trailers > MAX_TRAILERS {
                    return Err(FramingError::TrailersTooLarge);
                }
                TrailerName
            }
            (TrailerName, _) if is_tchar(b) => TrailerName,
            (TrailerName, b':') => TrailerValue,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, _) if is_field_vchar(b) => TrailerValue,
            (TrailerLf, b'\n') => TrailerStart,
            (TrailerStart | TrailerName | TrailerValue | TrailerLf, _) => {
                return Err(FramingError::InvalidTrailer);
            }
            (EndLf, b'\n') => Done,
            (EndLf, _) => return Err(FramingError::InvalidTrailer),
            (Data | Done, _) => self.state,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests;
