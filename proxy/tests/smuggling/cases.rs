//! The battery's table: one entry per case, with Envoy's answer as observed with Envoy 1.40
//! (default HCM settings). Request bytes are written with `{p}` where the case's path prefix
//! goes (`/c007`), so that every case reaches its own route and upstream.

use crate::client::Step;
use crate::resources::{MAIN, UP_HCM, UP_NONE, UP_ROUTE};
use crate::upstream::Mode;

/// One final response the client gets, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Final {
    /// The proxy answers by itself (a refusal).
    Local(u16),
    /// The upstream's answer, passed on.
    Up(u16),
}

impl Final {
    pub fn status(self) -> u16 {
        match self {
            Final::Local(s) | Final::Up(s) => s,
        }
    }
}

/// What Envoy does with a case.
#[derive(Debug, Clone)]
pub struct Want {
    pub finals: Vec<Final>,
    pub interim: Vec<u16>,
    /// The last response's body ends early (the connection closes or the stream is reset).
    pub truncated: bool,
    /// The proxy closes the connection (h2c: resets the stream).
    pub closed: bool,
    /// The requests the upstream receives whole: their paths after the case's prefix.
    pub upstream: Vec<&'static str>,
    /// The upstream receives the start of a message that never completes; `None`: either
    /// (Envoy streams a request head before it reads the body, so whether the head went out
    /// before a body error depends on how the bytes arrived).
    pub partial: Option<bool>,
    /// Bytes the upstream receives after it switched protocols.
    pub tunnel: &'static str,
}

pub fn refuse(status: u16) -> Want {
    Want {
        finals: vec![Final::Local(status)],
        interim: vec![],
        truncated: false,
        closed: true,
        upstream: vec![],
        partial: Some(false),
        tunnel: "",
    }
}

/// A refusal of a body: the request head may have been forwarded before the error was seen.
pub fn refuse_body(status: u16) -> Want {
    Want {
        partial: None,
        ..refuse(status)
    }
}

/// Envoy forwards the head and what it has of the body, and waits for the rest: no answer.
pub fn waits() -> Want {
    Want {
        finals: vec![],
        interim: vec![],
        truncated: false,
        closed: false,
        upstream: vec![],
        partial: Some(true),
        tunnel: "",
    }
}

pub fn forward(paths: &[&'static str]) -> Want {
    Want {
        finals: paths.iter().map(|_| Final::Up(200)).collect(),
        interim: vec![],
        truncated: false,
        closed: false,
        upstream: paths.to_vec(),
        partial: Some(false),
        tunnel: "",
    }
}

impl Want {
    fn finals(mut self, finals: &[Final]) -> Want {
        self.finals = finals.to_vec();
        self
    }

    fn closed(mut self, closed: bool) -> Want {
        self.closed = closed;
        self
    }

    fn interim(mut self, interim: &[u16]) -> Want {
        self.interim = interim.to_vec();
        self
    }

    fn truncated(mut self) -> Want {
        self.truncated = true;
        self.closed = true;
        self
    }

    fn tunnel(mut self, bytes: &'static str) -> Want {
        self.tunnel = bytes;
        self
    }
}

#[derive(Debug, Clone)]
pub enum Client {
    /// Raw bytes; `{p}` in them is replaced by the case's path prefix (`/c07`).
    H1 { steps: Vec<Step>, heads: Vec<bool> },
    H2 {
        method: &'static str,
        authority: &'static str,
        path: &'static str,
        headers: Vec<(&'static str, &'static str)>,
    },
}

pub struct Case {
    pub name: &'static str,
    pub listener: &'static str,
    pub client: Client,
    pub upstream: Mode,
    /// Websocket turned on (or off) on this case's route.
    pub route_websocket: Option<bool>,
    /// The case's route takes every path (`/`), after the other cases' routes.
    pub catch_all: bool,
    /// The requests the client means to send: their paths after the prefix. The upstream
    /// must never receive another one.
    pub intended: Vec<&'static str>,
    /// The most final responses a client may get on the connection.
    pub responses: usize,
    pub envoy: Want,
    /// Compare 1xx responses too (where the case is about them).
    pub compare_interim: bool,
    /// An invariant Envoy itself breaks, recorded; ours must not.
    pub envoy_breaks: Option<&'static str>,
}

/// A request sent in one write.
pub fn h1(name: &'static str, bytes: &[u8], envoy: Want) -> Case {
    h1_steps(name, vec![Step::Send(bytes.to_vec())], envoy)
}

pub fn h1_steps(name: &'static str, steps: Vec<Step>, envoy: Want) -> Case {
    Case {
        name,
        listener: MAIN,
        responses: 1,
        client: Client::H1 {
            steps,
            heads: vec![],
        },
        upstream: Mode::Record,
        route_websocket: None,
        catch_all: false,
        intended: vec!["/x"],
        envoy,
        compare_interim: false,
        envoy_breaks: None,
    }
}

pub fn h2c(
    name: &'static str,
    authority: &'static str,
    path: &'static str,
    headers: &[(&'static str, &'static str)],
    envoy: Want,
) -> Case {
    Case {
        name,
        listener: MAIN,
        client: Client::H2 {
            method: "GET",
            authority,
            path,
            headers: headers.to_vec(),
        },
        upstream: Mode::Record,
        route_websocket: None,
        catch_all: false,
        intended: vec![path],
        responses: 1,
        envoy,
        compare_interim: false,
        envoy_breaks: None,
    }
}

/// The length of `bytes` once every `{p}` is replaced by a case's prefix (`/c007`).
pub fn sized(bytes: &[u8]) -> usize {
    let placeholders = bytes.windows(3).filter(|w| w == b"{p}").count();
    bytes.len() + placeholders * (PREFIX_LEN - 3)
}

pub const PREFIX_LEN: usize = "/c000".len();

pub fn with_prefix(bytes: &[u8], prefix: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at..].starts_with(b"{p}") {
            out.extend_from_slice(prefix.as_bytes());
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    out
}

impl Case {
    fn on(mut self, listener: &'static str) -> Case {
        self.listener = listener;
        self
    }

    fn intended(mut self, paths: &[&'static str]) -> Case {
        self.intended = paths.to_vec();
        self.responses = paths.len().max(1);
        self
    }

    fn responses(mut self, n: usize) -> Case {
        self.responses = n;
        self
    }

    fn websocket_on_route(mut self, on: bool) -> Case {
        self.route_websocket = Some(on);
        self
    }

    fn catch_all(mut self) -> Case {
        self.catch_all = true;
        self
    }

    fn compare_interim(mut self) -> Case {
        self.compare_interim = true;
        self
    }

    fn envoy_breaks(mut self, what: &'static str) -> Case {
        self.envoy_breaks = Some(what);
        self
    }
}

pub fn post(path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("POST {{p}}{path} HTTP/1.1\r\nHost: backend\r\n{headers}\r\n").into_bytes();
    out.extend_from_slice(body);
    out
}

pub fn get(path: &str) -> Vec<u8> {
    format!("GET {{p}}{path} HTTP/1.1\r\nHost: backend\r\n\r\n").into_bytes()
}

pub const CHUNKED: &[u8] = b"5\r\nhello\r\n0\r\n\r\n";
/// A chunked body that ends early, followed by a whole request: what a proxy that framed
/// by Content-Length would pass on as body, and one that framed by chunks would forward as
/// a second request.
pub const SMUGGLE: &[u8] = b"0\r\n\r\nGET {p}/smuggled HTTP/1.1\r\nHost: backend\r\n\r\n";
pub const WEBSOCKET: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

pub fn websocket(name: &'static str, listener: &'static str, envoy: Want) -> Case {
    h1_steps(
        name,
        vec![
            Step::Send(
                format!("GET {{p}}/ws HTTP/1.1\r\nHost: backend\r\n{WEBSOCKET}\r\n").into_bytes(),
            ),
            Step::Await,
            Step::Send(b"AFTER-101".to_vec()),
        ],
        envoy,
    )
    .on(listener)
    .intended(&["/ws"])
}

/// A response-side case over HTTP/1.1: the scripted upstream answers `GET {p}/script` with
/// `script`, then the client asks `GET {p}/plain` on the same connection.
pub fn answer(name: &'static str, script: &'static [u8], close: bool, envoy: Want) -> Case {
    let mut case = h1_steps(
        name,
        vec![
            Step::Send(get("/script")),
            Step::Await,
            Step::Send(get("/plain")),
        ],
        envoy,
    )
    .intended(&["/script", "/plain"]);
    case.upstream = Mode::Script {
        bytes: script,
        close,
    };
    case
}

/// The same script over h2c: one request.
pub fn answer_h2(name: &'static str, script: &'static [u8], close: bool, envoy: Want) -> Case {
    let mut case = h2c(name, "backend", "/script", &[], envoy);
    case.upstream = Mode::Script {
        bytes: script,
        close,
    };
    case
}

pub fn head(mut case: Case) -> Case {
    if let Client::H1 { steps, heads } = &mut case.client {
        if let Some(Step::Send(first)) = steps.first_mut() {
            *first = String::from_utf8_lossy(first)
                .replacen("GET ", "HEAD ", 1)
                .into_bytes();
        }
        *heads = vec![true, false];
    }
    if let Client::H2 { method, .. } = &mut case.client {
        *method = "HEAD";
    }
    case
}

// Response scripts.
pub const SPLIT: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n44\r\nHELLOHTTP/1.1 200 OK\r\nX-Injected: yes\r\nContent-Length: 8\r\n\r\nINJECTED\r\n0\r\n\r\n";
pub const SPLIT_TE_FIRST: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n44\r\nHELLOHTTP/1.1 200 OK\r\nX-Injected: yes\r\nContent-Length: 8\r\n\r\nINJECTED\r\n0\r\n\r\n";
pub const TE_IDENTITY: &[u8] =
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello";
pub const CL_PLUS: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello";
pub const CL_DUP: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
pub const CL_DUP_EQUAL: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello";
pub const CONTINUE: &[u8] =
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
pub const EARLY_HINTS: &[u8] = b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
pub const SWITCHING: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nRAWDATA";
pub const NO_CONTENT_BODY: &[u8] = b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello";
pub const NO_CONTENT_CHUNKED: &[u8] =
    b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
pub const NOT_MODIFIED_BODY: &[u8] = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello";
pub const HEAD_BODY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
pub const CUT_LENGTH: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello";
pub const CUT_CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhello";
pub const CHUNK_HEX_PREFIX: &[u8] =
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n";
pub const CHUNK_PLUS: &[u8] =
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n";
pub const CHUNK_OVERFLOW: &[u8] =
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n";
pub const OBS_FOLD: &[u8] = b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok";
pub const BARE_CR: &[u8] = b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok";

pub const BAD_GATEWAY_THEN_PLAIN: [Final; 2] = [Final::Local(502), Final::Up(200)];
pub const BOTH_FORWARDED: [Final; 2] = [Final::Up(200), Final::Up(200)];

pub fn cases() -> Vec<Case> {
    use Final::{Local, Up};
    let mut cases = vec![
        // ---- Content-Length and Transfer-Encoding together ----
        h1(
            "CL + TE",
            &post(
                "/x",
                &format!(
                    "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                    sized(SMUGGLE)
                ),
                SMUGGLE,
            ),
            refuse(400),
        )
        .intended(&["/x"]),
        h1(
            "TE + CL",
            &post(
                "/x",
                &format!(
                    "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                    sized(SMUGGLE)
                ),
                SMUGGLE,
            ),
            refuse(400),
        )
        .intended(&["/x"]),
        // ---- Content-Length ----
        h1(
            "CL duplicate, equal",
            &post("/x", "Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
            refuse(400),
        ),
        h1(
            "CL duplicate, differing",
            &post("/x", "Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"),
            refuse(400),
        ),
        h1(
            "CL list in one line",
            &post("/x", "Content-Length: 5, 5\r\n", b"hello"),
            refuse(400),
        ),
        h1("CL +5", &post("/x", "Content-Length: +5\r\n", b"hello"), refuse(400)),
        h1("CL -1", &post("/x", "Content-Length: -1\r\n", b"hello"), refuse(400)),
        h1(
            "CL with extra whitespace (valid OWS)",
            &post("/x", "Content-Length:  5 \r\n", b"hello"),
            forward(&["/x"]),
        ),
        h1("CL '5 5'", &post("/x", "Content-Length: 5 5\r\n", b"hello"), refuse(400)),
        h1("CL 0x5", &post("/x", "Content-Length: 0x5\r\n", b"hello"), refuse(400)),
        h1(
            "CL 5 then NBSP",
            &post("/x", "Content-Length: 5\u{a0}\r\n", b"hello"),
            refuse(400),
        ),
        h1(
            "CL NBSP then 5",
            &post("/x", "Content-Length: \u{a0}5\r\n", b"hello"),
            refuse(400),
        ),
        h1(
            "CL empty",
            &post("/x", "Content-Length: \r\n", b"hello"),
            refuse(400),
        ),
        // ---- Transfer-Encoding ----
        h1(
            "TE identity",
            &post("/x", "Transfer-Encoding: identity\r\n", CHUNKED),
            refuse(501),
        ),
        h1(
            "TE chunked, chunked",
            &post("/x", "Transfer-Encoding: chunked, chunked\r\n", CHUNKED),
            refuse(501),
        ),
        h1(
            "TE gzip, chunked",
            &post("/x", "Transfer-Encoding: gzip, chunked\r\n", CHUNKED),
            refuse(501),
        ),
        h1(
            "TE chunked, gzip",
            &post("/x", "Transfer-Encoding: chunked, gzip\r\n", CHUNKED),
            refuse(501),
        ),
        h1(
            "TE xchunked",
            &post("/x", "Transfer-Encoding: xchunked\r\n", CHUNKED),
            refuse(501),
        ),
        h1(
            "TE chunked, trailing space",
            &post("/x", "Transfer-Encoding: chunked \r\n", CHUNKED),
            forward(&["/x"]),
        ),
        h1(
            "TE chunked, trailing tab",
            &post("/x", "Transfer-Encoding: chunked\t\r\n", CHUNKED),
            forward(&["/x"]),
        ),
        h1(
            "TE \\x0b chunked",
            &post("/x", "Transfer-Encoding: \x0bchunked\r\n", CHUNKED),
            refuse(400),
        ),
        h1(
            "TE CHUNKED in capitals",
            &post("/x", "Transfer-Encoding: CHUNKED\r\n", CHUNKED),
            forward(&["/x"]),
        ),
        h1(
            "TE in two headers, gzip then chunked",
            &post(
                "/x",
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                CHUNKED,
            ),
            refuse(501),
        ),
        h1(
            "TE in two headers, chunked twice",
            &post(
                "/x",
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                CHUNKED,
            ),
            refuse(501),
        ),
        h1(
            "TE with a space before the colon",
            &post("/x", "Transfer-Encoding : chunked\r\n", CHUNKED),
            refuse(400),
        ),
        // Not a Transfer-Encoding: Envoy forwards the header (underscores are allowed by
        // default) and a bodiless request, then reads the chunks as a request and refuses it.
        h1(
            "Transfer_Encoding with an underscore",
            &post("/x", "Transfer_Encoding: chunked\r\n", CHUNKED),
            forward(&["/x"]).finals(&[Up(200), Local(400)]).closed(true),
        )
        .responses(2),
        // ---- chunk sizes and extensions ----
        h1(
            "chunk size 0x5",
            &post("/x", "Transfer-Encoding: chunked\r\n", b"0x5\r\nhello\r\n0\r\n\r\n"),
            refuse_body(400),
        ),
        h1(
            "chunk size +5",
            &post("/x", "Transfer-Encoding: chunked\r\n", b"+5\r\nhello\r\n0\r\n\r\n"),
            refuse_body(400),
        ),
        h1(
            "chunk size with trailing space",
            &post("/x", "Transfer-Encoding: chunked\r\n", b"5 \r\nhello\r\n0\r\n\r\n"),
            forward(&["/x"]),
        ),
        h1(
            "chunk size of 17 hex digits",
            &post(
                "/x",
                "Transfer-Encoding: chunked\r\n",
                b"10000000000000005\r\nhello\r\n0\r\n\r\n",
            ),
            refuse_body(400),
        ),
        // Envoy takes 2^64-1 as a size and waits for the rest of that chunk.
        h1(
            "chunk size 2^64-1",
            &post(
                "/x",
                "Transfer-Encoding: chunked\r\n",
                b"ffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            ),
            waits(),
        ),
        h1(
            "chunk size -5",
            &post("/x", "Transfer-Encoding: chunked\r\n", b"-5\r\nhello\r\n0\r\n\r\n"),
            refuse_body(400),
        ),
        h1(
            "chunk size empty",
            &post("/x", "Transfer-Encoding: chunked\r\n", b"\r\nhello\r\n0\r\n\r\n"),
            refuse_body(400),
        ),
        h1(
            "chunk extension",
            &post(
                "/x",
                "Transfer-Encoding: chunked\r\n",
                b"5;name=value\r\nhello\r\n0\r\n\r\n",
            ),
            forward(&["/x"]),
        ),
        h1(
            "chunk extension ending in a bare LF",
            &post(
                "/x",
                "Transfer-Encoding: chunked\r\n",
                b"5;name=value\nhello\r\n0\r\n\r\n",
            ),
            refuse_body(400),
        ),
        // Envoy accepts a 64 KiB chunk extension and drops it.
        h1(
            "chunk extension of 64 KiB",
            &post(
                "/x",
                "Transfer-Encoding: chunked\r\n",
                &[b"5;".as_slice(), &[b'a'; 65536], b"\r\nhello\r\n0\r\n\r\n"].concat(),
            ),
            forward(&["/x"]),
        ),
        h1(
            "chunk data not followed by CRLF",
            &post(
                "/x",
                "Transfer-Encoding: chunked\r\n",
                b"5\r\nhelloXX0\r\n\r\n",
            ),
            refuse_body(400),
        ),
        h1(
            "chunk data followed by a bare LF",
            &post(
                "/x",
                "Transfer-Encoding: chunked\r\n",
                b"5\r\nhello\n0\r\n\r\n",
            ),
            forward(&["/x"]),
        ),
        // ---- line ends and header syntax ----
        h1(
            "bare LF line ends",
            b"GET {p}/x HTTP/1.1\nHost: backend\n\n",
            forward(&["/x"]),
        ),
        h1(
            "bare LF ending one header line",
            b"GET {p}/x HTTP/1.1\r\nHost: backend\r\nX-A: a\nX-B: b\r\n\r\n",
            forward(&["/x"]),
        ),
        h1(
            "bare CR in a header value",
            b"GET {p}/x HTTP/1.1\r\nHost: backend\r\nX-A: a\rb\r\n\r\n",
            forward(&["/x"]),
        ),
        h1(
            "obs-fold",
            b"GET {p}/x HTTP/1.1\r\nHost: backend\r\nX-A: a\r\n b\r\n\r\n",
            forward(&["/x"]),
        ),
        h1(
            "NUL in a header value",
            b"GET {p}/x HTTP/1.1\r\nHost: backend\r\nX-A: a\x00b\r\n\r\n",
            refuse(400),
        ),
        h1(
            "space before the colon",
            b"GET {p}/x HTTP/1.1\r\nHost: backend\r\nX-A : b\r\n\r\n",
            refuse(400),
        ),
        // ---- the authority ----
        h1(
            "absolute-form target, another Host",
            b"GET http://evil.example{p}/x HTTP/1.1\r\nHost: backend\r\n\r\n",
            forward(&["/x"]),
        ),
        h1(
            "absolute-form target, same Host",
            b"GET http://backend{p}/x HTTP/1.1\r\nHost: backend\r\n\r\n",
            forward(&["/x"]),
        ),
        h1(
            "Host twice, equal",
            b"GET {p}/x HTTP/1.1\r\nHost: backend\r\nHost: backend\r\n\r\n",
            forward(&["/x"]),
        ),
        h1(
            "Host twice, differing",
            b"GET {p}/x HTTP/1.1\r\nHost: backend\r\nHost: evil.example\r\n\r\n",
            forward(&["/x"]),
        ),
        h1("Host missing", b"GET {p}/x HTTP/1.1\r\n\r\n", refuse(400)),
        h2c(
            "h2c :authority and another host header",
            "backend",
            "/x",
            &[("host", "evil.example")],
            forward(&["/x"]),
        ),
        // ---- upgrades ----
        // Envoy strips the h2c upgrade and forwards a plain request; the preface the client
        // sends next is then a bad HTTP/1.1 request.
        h1_steps(
            "h2c upgrade",
            vec![
                Step::Send(
                    b"GET {p}/x HTTP/1.1\r\nHost: backend\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n".to_vec(),
                ),
                Step::Await,
                Step::Send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
            ],
            forward(&["/x"]).finals(&[Up(200), Local(400)]).closed(true),
        )
        .intended(&["/x"])
        .responses(2),
        websocket(
            "websocket without upgrade_configs",
            UP_NONE,
            refuse(403),
        ),
        websocket(
            "websocket, upgrade_configs on the HCM",
            UP_HCM,
            forward(&["/ws"]).finals(&[Up(101)]).tunnel("AFTER-101"),
        ),
        websocket(
            "websocket, on the HCM, off on the route",
            UP_HCM,
            refuse(403),
        )
        .websocket_on_route(false),
        websocket(
            "websocket, upgrade_configs on the route",
            UP_ROUTE,
            forward(&["/ws"]).finals(&[Up(101)]).tunnel("AFTER-101"),
        )
        .websocket_on_route(true),
        websocket(
            "websocket, upgrade_configs on another route",
            UP_ROUTE,
            refuse(403),
        ),
        // Envoy's prefix routes never match CONNECT (that takes a `connect_matcher`), so even a
        // route for `/` leaves it unrouted: 404.
        h1_steps(
            "CONNECT",
            vec![
                Step::Send(b"CONNECT backend:443 HTTP/1.1\r\nHost: backend:443\r\n\r\n".to_vec()),
                Step::Await,
                Step::Send(b"AFTER-CONNECT".to_vec()),
            ],
            refuse(404),
        )
        .intended(&["CONNECT backend:443"])
        .catch_all(),
        // ---- several requests on a connection ----
        h1(
            "pipelining, two requests",
            &[get("/p1"), get("/p2")].concat(),
            forward(&["/p1", "/p2"]),
        )
        .intended(&["/p1", "/p2"]),
        h1(
            "pipelining, three requests",
            &[get("/p1"), get("/p2"), get("/p3")].concat(),
            forward(&["/p1", "/p2", "/p3"]),
        )
        .intended(&["/p1", "/p2", "/p3"]),
        h1(
            "pipelining, a body that holds a request",
            &[
                post(
                    "/outer",
                    &format!("Content-Length: {}\r\n", sized(&get("/inner"))),
                    &get("/inner"),
                ),
                get("/third"),
            ]
            .concat(),
            forward(&["/outer", "/third"]),
        )
        .intended(&["/outer", "/third"]),
        h1_steps(
            "Expect: 100-continue",
            vec![
                Step::Send(post(
                    "/x",
                    "Expect: 100-continue\r\nContent-Length: 5\r\n",
                    b"",
                )),
                Step::Await,
                Step::Send(b"hello".to_vec()),
            ],
            forward(&["/x"]).interim(&[100]),
        )
        .intended(&["/x"])
        .compare_interim(),
        // Envoy refuses HTTP/1.0 unless `http_protocol_options.accept_http_10`.
        h1(
            "HTTP/1.0",
            b"GET {p}/x HTTP/1.0\r\nHost: backend\r\n\r\n",
            refuse(426),
        ),
        h1(
            "HTTP/1.0 keep-alive",
            b"GET {p}/x HTTP/1.0\r\nHost: backend\r\nConnection: keep-alive\r\n\r\n",
            refuse(426),
        ),
        h1(
            "HTTP/1.0 without Host",
            b"GET {p}/x HTTP/1.0\r\n\r\n",
            refuse(426),
        ),
        h1(
            "Connection: close",
            b"GET {p}/x HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n",
            forward(&["/x"]).closed(true),
        ),
        // ---- response side, HTTP/1.1: the answer, then the next request ----
        answer(
            "response CL + TE (splitting)",
            SPLIT,
            false,
            forward(&["/script", "/plain"]).finals(&BAD_GATEWAY_THEN_PLAIN),
        ),
        answer(
            "response TE + CL (splitting)",
            SPLIT_TE_FIRST,
            false,
            forward(&["/script", "/plain"]).finals(&BAD_GATEWAY_THEN_PLAIN),
        ),
        answer(
            "response TE identity",
            TE_IDENTITY,
            false,
            forward(&["/script", "/plain"]).finals(&BAD_GATEWAY_THEN_PLAIN),
        ),
        answer(
            "response CL +5",
            CL_PLUS,
            false,
            forward(&["/script", "/plain"]).finals(&BAD_GATEWAY_THEN_PLAIN),
        ),
        answer(
            "response CL duplicate, differing",
            CL_DUP,
            false,
            forward(&["/script", "/plain"]).finals(&BAD_GATEWAY_THEN_PLAIN),
        ),
        answer(
            "response CL duplicate, equal",
            CL_DUP_EQUAL,
            false,
            forward(&["/script", "/plain"]).finals(&BAD_GATEWAY_THEN_PLAIN),
        ),
        answer(
            "response 100 before the final response",
            CONTINUE,
            false,
            forward(&["/script", "/plain"]).finals(&BOTH_FORWARDED),
        ),
        answer(
            "response 103 before the final response",
            EARLY_HINTS,
            false,
            forward(&["/script", "/plain"]).finals(&BOTH_FORWARDED),
        ),
        answer(
            "response 204 with a body",
            NO_CONTENT_BODY,
            false,
            forward(&["/script", "/plain"]).finals(&BAD_GATEWAY_THEN_PLAIN),
        ),
        answer(
            "response 204 chunked",
            NO_CONTENT_CHUNKED,
            false,
            forward(&["/script", "/plain"]).finals(&BAD_GATEWAY_THEN_PLAIN),
        ),
        answer(
            "response 304 with a body",
            NOT_MODIFIED_BODY,
            false,
            forward(&["/script", "/plain"]).finals(&[Up(304), Up(200)]),
        ),
        head(answer(
            "response to HEAD with a body",
            HEAD_BODY,
            false,
            forward(&["/script", "/plain"]).finals(&BOTH_FORWARDED),
        )),
        answer(
            "response cut short, Content-Length",
            CUT_LENGTH,
            true,
            forward(&["/script"]).finals(&[Up(200)]).truncated(),
        ),
        answer(
            "response cut short, chunked",
            CUT_CHUNKED,
            true,
            forward(&["/script"]).finals(&[Up(200)]).truncated(),
        ),
        answer(
            "response chunk size 0x5",
            CHUNK_HEX_PREFIX,
            false,
            forward(&["/script"]).finals(&[Up(200)]).truncated(),
        ),
        answer(
            "response chunk size +5",
            CHUNK_PLUS,
            false,
            forward(&["/script"]).finals(&[Up(200)]).truncated(),
        ),
        answer(
            "response chunk size of 17 hex digits",
            CHUNK_OVERFLOW,
            false,
            forward(&["/script"]).finals(&[Up(200)]).truncated(),
        ),
        answer(
            "response obs-fold",
            OBS_FOLD,
            false,
            forward(&["/script", "/plain"]).finals(&BOTH_FORWARDED),
        ),
        answer(
            "response bare CR in a header",
            BARE_CR,
            false,
            forward(&["/script", "/plain"]).finals(&BOTH_FORWARDED),
        ),
    ];
    // A 101 nobody asked for: Envoy passes the 101 on (without its Upgrade header) and keeps
    // speaking HTTP/1.1, answering the next request; the upstream's bytes after the 101 are
    // dropped.
    cases.push(
        answer(
            "response 101 to a request that did not ask",
            SWITCHING,
            false,
            forward(&["/script", "/plain"]).finals(&[Up(101)]),
        )
        .responses(2),
    );
    // ---- response side, h2c ----
    let h2_502 = || forward(&["/script"]).finals(&[Local(502)]).closed(false);
    cases.extend([
        answer_h2("h2c response CL + TE (splitting)", SPLIT, false, h2_502()),
        answer_h2(
            "h2c response TE + CL (splitting)",
            SPLIT_TE_FIRST,
            false,
            h2_502(),
        ),
        answer_h2("h2c response TE identity", TE_IDENTITY, false, h2_502()),
        answer_h2("h2c response CL +5", CL_PLUS, false, h2_502()),
        answer_h2(
            "h2c response CL duplicate, differing",
            CL_DUP,
            false,
            h2_502(),
        ),
        answer_h2(
            "h2c response CL duplicate, equal",
            CL_DUP_EQUAL,
            false,
            h2_502(),
        ),
        answer_h2(
            "h2c response 100 before the final response",
            CONTINUE,
            false,
            forward(&["/script"]),
        ),
        answer_h2(
            "h2c response 103 before the final response",
            EARLY_HINTS,
            false,
            forward(&["/script"]),
        ),
        answer_h2(
            "h2c response 204 with a body",
            NO_CONTENT_BODY,
            false,
            h2_502(),
        ),
        answer_h2(
            "h2c response 204 chunked",
            NO_CONTENT_CHUNKED,
            false,
            h2_502(),
        ),
        answer_h2(
            "h2c response 304 with a body",
            NOT_MODIFIED_BODY,
            false,
            forward(&["/script"]).finals(&[Up(304)]),
        ),
        head(answer_h2(
            "h2c response to HEAD with a body",
            HEAD_BODY,
            false,
            forward(&["/script"]),
        )),
        answer_h2(
            "h2c response cut short, Content-Length",
            CUT_LENGTH,
            true,
            forward(&["/script"]).truncated(),
        ),
        answer_h2(
            "h2c response cut short, chunked",
            CUT_CHUNKED,
            true,
            forward(&["/script"]).truncated(),
        ),
        answer_h2(
            "h2c response chunk size 0x5",
            CHUNK_HEX_PREFIX,
            false,
            forward(&["/script"]).truncated(),
        ),
        answer_h2(
            "h2c response chunk size +5",
            CHUNK_PLUS,
            false,
            forward(&["/script"]).truncated(),
        ),
        answer_h2(
            "h2c response chunk size of 17 hex digits",
            CHUNK_OVERFLOW,
            false,
            forward(&["/script"]).truncated(),
        ),
        answer_h2(
            "h2c response obs-fold",
            OBS_FOLD,
            false,
            forward(&["/script"]),
        ),
        answer_h2(
            "h2c response bare CR in a header",
            BARE_CR,
            false,
            forward(&["/script"]),
        ),
        // Envoy sends the 101 as HEADERS and the upstream's bytes after it as DATA: a
        // malformed HTTP/2 response (the client's stack ends the connection).
        answer_h2(
            "h2c response 101 to a request that did not ask",
            SWITCHING,
            false,
            forward(&["/script"]).finals(&[]),
        )
        .envoy_breaks("HEADERS :status 101 followed by DATA"),
    ]);
    cases
}
