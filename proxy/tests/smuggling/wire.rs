//! A strict HTTP/1.1 reader for the bytes the battery observes: what an upstream received and
//! what a client received. It accepts only what RFC 9112 lets a recipient read one way: CRLF
//! line ends, no obs-fold, no bare CR, no control characters in values, no whitespace before
//! the colon, at most one framing (`Transfer-Encoding: chunked` alone, or one all-digit
//! `Content-Length`), hex-only chunk sizes. Anything else in bytes a proxy sent is the
//! proxy's fault: a message another parser could read differently.

/// One HTTP/1.1 message read from a byte stream.
#[derive(Debug, Clone)]
pub struct Message {
    /// The request line or the status line.
    pub start: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// Bytes this message took on the wire.
    pub len: usize,
}

impl Message {
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.header_values(name).into_iter().next()
    }

    /// The request target (requests only).
    pub fn target(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or("")
    }

    pub fn method(&self) -> &str {
        self.start.split(' ').next().unwrap_or("")
    }

    /// The status code (responses only).
    pub fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

/// How a stream of bytes ended after its last complete message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// Nothing left.
    Clean,
    /// The start of a message that never completed (`head`: the head was complete).
    Incomplete { head: bool, bytes: usize },
    /// Bytes no strict reader accepts.
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    /// A response to a request with this method (HEAD responses have no body).
    Response {
        head: bool,
    },
}

enum Step {
    Done(Message, usize),
    Incomplete { head: bool },
    Invalid(String),
}

const MAX_CHUNK_EXT: usize = 4096;

/// Reads `buf` as a sequence of messages of `kind`. `eof`: the stream ended after `buf` (a
/// response without framing is read to the end). 1xx responses are returned like the others
/// (callers tell them apart by status).
pub fn read_all(buf: &[u8], kind: Kind, eof: bool) -> (Vec<Message>, Tail) {
    read_responses(buf, |_| kind, eof)
}

/// As [`read_all`], with the kind of the n-th final response given by `kind_of(n)` (whether
/// it answers a HEAD).
pub fn read_responses(
    buf: &[u8],
    kind_of: impl Fn(usize) -> Kind,
    eof: bool,
) -> (Vec<Message>, Tail) {
    let mut out = Vec::new();
    let mut at = 0;
    let mut finals = 0;
    while at < buf.len() {
        match read_one(&buf[at..], kind_of(finals), eof) {
            Step::Done(mut m, used) => {
                m.len = used;
                if !(100..200).contains(&m.status()) {
                    finals += 1;
                }
                at += used;
                out.push(m);
            }
            Step::Incomplete { head } => {
                return (
                    out,
                    Tail::Incomplete {
                        head,
                        bytes: buf.len() - at,
                    },
                );
            }
            Step::Invalid(why) => return (out, Tail::Invalid(why)),
        }
    }
    (out, Tail::Clean)
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn read_one(buf: &[u8], kind: Kind, eof: bool) -> Step {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        // A head with a bare LF never completes under CRLF rules: say so rather than wait.
        if let Some(why) = bad_line_ends(buf) {
            return Step::Invalid(why);
        }
        return Step::Incomplete { head: false };
    };
    let head = &buf[..end];
    if let Some(why) = bad_line_ends(head) {
        return Step::Invalid(why);
    }
    let mut lines = head
        .split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let start = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    if let Err(why) = check_start(&start, kind) {
        return Step::Invalid(why);
    }
    let mut headers = Vec::new();
    for line in lines {
        if line.first().is_some_and(|c| *c == b' ' || *c == b'\t') {
            return Step::Invalid(format!("obs-fold line {:?}", lossy(line)));
        }
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            return Step::Invalid(format!("header line without a colon {:?}", lossy(line)));
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&c| is_tchar(c)) {
            return Step::Invalid(format!("bad header name {:?}", lossy(name)));
        }
        let value = trim_ows(&line[colon + 1..]);
        if let Some(c) = value
            .iter()
            .find(|&&c| (c < 0x20 && c != b'\t') || c == 0x7f)
        {
            return Step::Invalid(format!(
                "control character {c:#04x} in header {:?}",
                lossy(name)
            ));
        }
        headers.push((String::from_utf8_lossy(name).into_owned(), value.to_vec()));
    }
    let mut m = Message {
        start,
        headers,
        body: Vec::new(),
        len: 0,
    };
    let rest = &buf[end + 4..];
    let framing = match framing(&m, kind) {
        Ok(f) => f,
        Err(why) => return Step::Invalid(why),
    };
    match framing {
        Framing::None => Step::Done(m, end + 4),
        Framing::Length(n) => {
            if (rest.len() as u64) < n {
                return Step::Incomplete { head: true };
            }
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            m.body = rest[..n].to_vec();
            Step::Done(m, end + 4 + n)
        }
        Framing::Close => {
            if !eof {
                return Step::Incomplete { head: true };
            }
            m.body = rest.to_vec();
            Step::Done(m, buf.len())
        }
        Framing::Chunked => match dechunk(rest) {
            Ok(Some((body, used))) => {
                m.body = body;
                Step::Done(m, end + 4 + used)
            }
            Ok(None) => Step::Incomplete { head: true },
            Err(why) => Step::Invalid(why),
        },
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn bad_line_ends(head: &[u8]) -> Option<String> {
    for (i, &c) in head.iter().enumerate() {
        if c == b'\n' && (i == 0 || head[i - 1] != b'\r') {
            return Some(format!("bare LF at byte {i}"));
        }
        if c == b'\r' && head.get(i + 1).is_some_and(|&n| n != b'\n') {
            return Some(format!("bare CR at byte {i}"));
        }
        if c == 0 {
            return Some(format!("NUL at byte {i}"));
        }
    }
    None
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&c| c != b' ' && c != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

fn check_start(start: &str, kind: Kind) -> Result<(), String> {
    let parts: Vec<&str> = start.splitn(3, ' ').collect();
    match kind {
        Kind::Request => {
            let ok = parts.len() == 3
                && !parts[0].is_empty()
                && parts[0].bytes().all(is_tchar)
                && !parts[1].is_empty()
                && !parts[1].contains(' ')
                && (parts[2] == "HTTP/1.1" || parts[2] == "HTTP/1.0");
            if ok {
                Ok(())
            } else {
                Err(format!("bad request line {start:?}"))
            }
        }
        Kind::Response { .. } => {
            let ok = parts.len() >= 2
                && (parts[0] == "HTTP/1.1" || parts[0] == "HTTP/1.0")
                && parts[1].len() == 3
                && parts[1].bytes().all(|c| c.is_ascii_digit());
            if ok {
                Ok(())
            } else {
                Err(format!("bad status line {start:?}"))
            }
        }
    }
}

enum Framing {
    None,
    Length(u64),
    Chunked,
    /// A response read to the end of the connection.
    Close,
}

/// RFC 9112 §6.3, refusing everything a lenient reader would have to guess at.
fn framing(m: &Message, kind: Kind) -> Result<Framing, String> {
    let te = m.header_values("transfer-encoding");
    let cl = m.header_values("content-length");
    if !te.is_empty() && !cl.is_empty() {
        return Err(format!(
            "both Transfer-Encoding {te:?} and Content-Length {cl:?}"
        ));
    }
    let status = m.status();
    if let Kind::Response { head } = kind {
        // No body whatever the headers say (RFC 9112 §6.3 rule 1).
        if head || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(Framing::None);
        }
    }
    if !te.is_empty() {
        if te.len() != 1 || !te[0].eq_ignore_ascii_case("chunked") {
            return Err(format!(
                "Transfer-Encoding other than one `chunked`: {te:?}"
            ));
        }
        return Ok(Framing::Chunked);
    }
    match cl.as_slice() {
        [] => Ok(match kind {
            Kind::Request => Framing::None,
            Kind::Response { .. } => Framing::Close,
        }),
        [one] if !one.is_empty() && one.len() <= 18 && one.bytes().all(|c| c.is_ascii_digit()) => {
            Ok(Framing::Length(one.parse().unwrap_or(0)))
        }
        _ => Err(format!("Content-Length not one 1*DIGIT value: {cl:?}")),
    }
}

/// A chunked body: `Ok(None)` while incomplete; `(body, bytes used)` once the last chunk and
/// the trailers are in.
pub fn dechunk(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(eol) = find(&buf[at..], b"\r\n") else {
            if buf.len() - at > 16 + MAX_CHUNK_EXT {
                return Err("chunk size line too long".into());
            }
            if let Some(why) = bad_line_ends(&buf[at..]) {
                return Err(format!("chunk size line: {why}"));
            }
            return Ok(None);
        };
        let line = &buf[at..at + eol];
        if let Some(why) = bad_line_ends(line) {
            return Err(format!("chunk size line: {why}"));
        }
        let (size, ext) = match line.iter().position(|&c| c == b';') {
            Some(i) => (&line[..i], &line[i..]),
            None => (line, &[][..]),
        };
        if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!("chunk size {:?}", lossy(size)));
        }
        if ext.len() > MAX_CHUNK_EXT {
            return Err(format!("chunk extension of {} bytes", ext.len()));
        }
        let n = usize::from_str_radix(std::str::from_utf8(size).unwrap_or("0"), 16)
            .map_err(|e| e.to_string())?;
        at += eol + 2;
        if n == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(eol) = find(&buf[at..], b"\r\n") else {
                    return Ok(None);
                };
                let line = &buf[at..at + eol];
                at += eol + 2;
                if line.is_empty() {
                    return Ok(Some((body, at)));
                }
                if bad_line_ends(line).is_some()
                    || line.first().is_some_and(|c| *c == b' ' || *c == b'\t')
                    || !line.contains(&b':')
                {
                    return Err(format!("bad trailer line {:?}", lossy(line)));
                }
            }
        }
        if buf.len() < at + n + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + n]);
        if &buf[at + n..at + n + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        at += n + 2;
    }
}
