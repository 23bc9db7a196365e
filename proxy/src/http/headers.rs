//! Header work on the way through: hop-by-hop stripping, the route's header mutations, the
//! headers Envoy adds, path rewrites and redirect locations.

use http::header::InvalidHeaderName;
use http::header::{
    ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_ENCODING,
    CONTENT_LENGTH, CONTENT_TYPE, DATE, EXPECT, HOST, SERVER, TE, TRANSFER_ENCODING, UPGRADE,
    USER_AGENT,
};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{
    AppendAction, HeaderMutation, PathMatch, RedirectAction, Route, RouteConfig, VirtualHost,
    WeightedCluster,
};
use crate::filter;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");
pub static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// A header name from a parsed head (any case). The names nearly every message carries are
/// told by their length and one or two comparisons: `HeaderName::from_bytes` lowercases
/// each name into a scratch buffer before matching it against every standard name, several
/// times the work.
pub(crate) fn header_name(raw: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    // Lowercase names (hyper's, Envoy's) compare as a few word loads, the length being known.
    let is = |name: &str| raw == name.as_bytes() || raw.eq_ignore_ascii_case(name.as_bytes());
    Ok(match raw.len() {
        4 if is("host") => HOST,
        4 if is("date") => DATE,
        6 if is("accept") => ACCEPT,
        6 if is("server") => SERVER,
        10 if is("user-agent") => USER_AGENT,
        10 if is("connection") => CONNECTION,
        12 if is("content-type") => CONTENT_TYPE,
        12 if is("x-request-id") => X_REQUEST_ID.clone(),
        13 if is("cache-control") => CACHE_CONTROL,
        13 if is("authorization") => AUTHORIZATION,
        14 if is("content-length") => CONTENT_LENGTH,
        15 if is("accept-encoding") => ACCEPT_ENCODING,
        16 if is("content-encoding") => CONTENT_ENCODING,
        17 if is("transfer-encoding") => TRANSFER_ENCODING,
        17 if is("x-forwarded-proto") => X_FORWARDED_PROTO.clone(),
        29 if is("x-envoy-upstream-service-time") => X_ENVOY_UPSTREAM_SERVICE_TIME.clone(),
        _ => return HeaderName::from_bytes(raw),
    })
}

/// Whether the `Connection` header lists `token`.
pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .any(|v| lists_token(v.as_bytes(), token))
}

/// Whether a comma-separated header value lists `token` (ASCII case-insensitive).
pub fn lists_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// What one pass over a request's header names tells the forwarding path, in place of a
/// hashed lookup per name: a request carries a handful of headers, and each lookup or
/// insert-if-absent hashes the name it looks for.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestFacts {
    /// The (first) `content-type` is gRPC's.
    pub grpc: bool,
    pub upgrade: bool,
    pub expect: bool,
    /// Any connection-specific header, `upgrade` included.
    pub hop_by_hop: bool,
    pub x_forwarded_proto: bool,
    pub x_request_id: bool,
    /// A `Host` field.
    pub host: bool,
    /// More than one `Host` field: the request names two authorities.
    pub hosts_conflict: bool,
}

impl RequestFacts {
    pub fn of(headers: &HeaderMap) -> RequestFacts {
        let mut facts = RequestFacts::default();
        let mut content_type = false;
        for (name, value) in headers {
            if name == HOST {
                facts.hosts_conflict |= facts.host;
                facts.host = true;
            } else if name == CONTENT_TYPE {
                if !content_type {
                    content_type = true;
                    facts.grpc = value.as_bytes().starts_with(b"application/grpc");
                }
            } else if name == EXPECT {
                facts.expect = true;
            } else if name == X_REQUEST_ID {
                facts.x_request_id = true;
            } else if name == X_FORWARDED_PROTO {
                facts.x_forwarded_proto = true;
            } else if is_hop_by_hop(name) {
                facts.hop_by_hop = true;
                facts.upgrade |= name == UPGRADE;
            }
        }
        facts
    }
}

pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == TE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Removes connection-specific headers (RFC 9110 7.6.1), including the ones the `Connection`
/// header names; `te: trailers` stays (gRPC needs it).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names costs less than a hashed
    // lookup per name.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(CONNECTION) {
        let mut named: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(CONNECTION) {
            let Ok(value) = value.to_str() else { continue };
            for token in value.split(',').map(str::trim) {
                if token.is_empty()
                    || token.eq_ignore_ascii_case("close")
                    || token.eq_ignore_ascii_case("keep-alive")
                    || token.eq_ignore_ascii_case("upgrade")
                {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(name);
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
        headers.remove(CONNECTION);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(TRANSFER_ENCODING);
    headers.remove(UPGRADE);
    if headers
        .get(TE)
        .is_some_and(|te| !te.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(TE);
    }
}

impl HeaderMutation {
    /// Removes, then adds (each header by its append action).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for h in &self.add {
            match h.action {
                AppendAction::AppendIfExistsOrAdd => {
                    headers.append(h.name.clone(), h.value.clone());
                }
                AppendAction::AddIfAbsent => {
                    if !headers.contains_key(&h.name) {
                        headers.insert(h.name.clone(), h.value.clone());
                    }
                }
                AppendAction::OverwriteIfExistsOrAdd => {
                    headers.insert(h.name.clone(), h.value.clone());
                }
                AppendAction::OverwriteIfExists => {
                    if headers.contains_key(&h.name) {
                        headers.insert(h.name.clone(), h.value.clone());
                    }
                }
            }
        }
    }
}

/// What a matched request carries from its configuration levels (header mutations), and
/// what its HTTP filters left for the response side.
#[derive(Clone, Copy)]
pub struct Levels<'a> {
    pub weighted: Option<&'a WeightedCluster>,
    pub route: &'a Route,
    pub vhost: &'a VirtualHost,
    pub config: &'a RouteConfig,
    /// The request's run through the HTTP filter chain; `None` when the chain is only the
    /// router.
    pub filters: Option<&'a filter::Run>,
}

impl<'a> Levels<'a> {
    /// Each level's request header changes, in Envoy's order: weighted cluster, route,
    /// virtual host, route configuration.
    fn request_changes(&self) -> [Option<&'a HeaderMutation>; 4] {
        [
            self.weighted.map(|w| &w.request_headers),
            Some(&self.route.request_headers),
            Some(&self.vhost.request_headers),
            Some(&self.config.request_headers),
        ]
    }

    /// Each level's response header changes, in the same order.
    fn response_changes(&self) -> [Option<&'a HeaderMutation>; 4] {
        [
            self.weighted.map(|w| &w.response_headers),
            Some(&self.route.response_headers),
            Some(&self.vhost.response_headers),
            Some(&self.config.response_headers),
        ]
    }

    /// Whether any level adds or removes request headers.
    pub fn mutates_request(&self) -> bool {
        changes_any(self.request_changes())
    }

    /// Whether any level adds or removes response headers, or a filter changes them.
    pub fn mutates_response(&self) -> bool {
        changes_any(self.response_changes())
            || self.filters.is_some_and(filter::Run::mutates_response)
    }

    /// Envoy's order (see `request_changes`); each level removes, then adds. Later levels win
    /// (Envoy's default, `most_specific_header_mutations_wins` false).
    pub fn mutate_request(&self, headers: &mut HeaderMap) {
        for mutation in self.request_changes().into_iter().flatten() {
            mutation.apply(headers);
        }
    }

    /// The levels' changes as for the request, then the filters' response side: in Envoy the
    /// router changes the response headers before the filters see them.
    pub fn mutate_response(&self, headers: &mut HeaderMap) {
        for mutation in self.response_changes().into_iter().flatten() {
            mutation.apply(headers);
        }
        if let Some(run) = self.filters {
            run.on_response(headers);
        }
    }
}

fn changes_any(levels: [Option<&HeaderMutation>; 4]) -> bool {
    levels
        .into_iter()
        .flatten()
        .any(|mutation| !mutation.is_empty())
}

/// `x-envoy-upstream-service-time` values; the common small ones are shared, not allocated.
pub fn service_time(ms: u64) -> HeaderValue {
    static SMALL: std::sync::LazyLock<Vec<HeaderValue>> =
        std::sync::LazyLock::new(|| (0..256u64).map(HeaderValue::from).collect());
    usize::try_from(ms)
        .ok()
        .and_then(|i| SMALL.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(ms))
}

/// Request ids made at a time: their text shares one buffer, so an id costs no allocation.
const REQUEST_ID_BATCH: usize = 64;
const UUID_LEN: usize = 36;

/// A random UUID v4 for `x-request-id`.
pub fn request_id() -> HeaderValue {
    thread_local! {
        static IDS: std::cell::RefCell<bytes::Bytes> = const {
            std::cell::RefCell::new(bytes::Bytes::new())
        };
    }
    let id = IDS.with(|ids| {
        let mut ids = ids.borrow_mut();
        if ids.is_empty() {
            *ids = request_id_batch();
        }
        ids.split_to(UUID_LEN)
    });
    HeaderValue::from_maybe_shared(id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn request_id_batch() -> bytes::Bytes {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Where each random byte's two hex digits go in the text.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut out = Vec::with_capacity(REQUEST_ID_BATCH * UUID_LEN);
    for _ in 0..REQUEST_ID_BATCH {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
        raw[8..].copy_from_slice(&fastrand::u64(..).to_le_bytes());
        raw[6] = (raw[6] & 0x0f) | 0x40;
        raw[8] = (raw[8] & 0x3f) | 0x80;
        let mut id = *b"00000000-0000-0000-0000-000000000000";
        for (&b, &at) in raw.iter().zip(&AT) {
            id[at] = HEX[usize::from(b >> 4)];
            id[at + 1] = HEX[usize::from(b & 15)];
        }
        out.extend_from_slice(&id);
    }
    bytes::Bytes::from(out)
}

/// The request's authority: the URI's (HTTP/2, absolute-form HTTP/1.1) or the Host header.
pub fn authority<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> &'a str {
    if let Some(a) = uri.authority() {
        return a.as_str();
    }
    headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
}

/// How many bytes of the path the route's matcher "matched", for `prefix_rewrite`: the prefix
/// for prefix matches, the whole path otherwise.
pub fn matched_len(route: &Route, path: &str) -> usize {
    match &route.matcher.path {
        PathMatch::Prefix(p) => p.len().min(path.len()),
        PathMatch::Exact(_) | PathMatch::Regex(_) => path.len(),
    }
}

/// `path_and_query` with its first `matched` bytes replaced by `replacement`.
pub fn rewrite_prefix(path_and_query: &str, matched: usize, replacement: &str) -> String {
    let rest = path_and_query.get(matched..).unwrap_or("");
    let mut out = String::with_capacity(replacement.len() + rest.len());
    out.push_str(replacement);
    out.push_str(rest);
    out
}

/// Splits `host[:port]` (IPv6 in brackets) into the host and the `:port` suffix.
fn split_port(authority: &str) -> (&str, &str) {
    let colon = if authority.starts_with('[') {
        authority.rfind("]:").map(|i| i + 1)
    } else {
        authority.rfind(':')
    };
    match colon {
        Some(i) => authority.split_at(i),
        None => (authority, ""),
    }
}

/// The `Location` of a redirect, built like Envoy's `RouteEntryImplBase::newUri`.
pub fn redirect_location(
    redirect: &RedirectAction,
    route: &Route,
    headers: &HeaderMap,
    authority: &str,
    path_and_query: &str,
) -> String {
    let request_scheme = headers
        .get(&X_FORWARDED_PROTO)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http");
    let scheme = redirect.scheme.as_deref().unwrap_or(request_scheme);
    let port = redirect.port.map(|p| format!(":{p}"));
    let host = match &redirect.host {
        Some(host) => host.as_str(),
        None => {
            let (host, request_port) = split_port(authority);
            // A new port replaces the old one; a scheme change drops the old scheme's
            // default port.
            let drop_port = port.is_some()
                || (scheme != request_scheme
                    && ((request_scheme == "https" && request_port == ":443")
                        || (request_scheme == "http" && request_port == ":80")));
            if drop_port { host } else { authority }
        }
    };
    let (path, query) = match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    };
    let mut location = String::with_capacity(scheme.len() + host.len() + path_and_query.len() + 16);
    location.push_str(scheme);
    location.push_str("://");
    location.push_str(host);
    if let Some(port) = &port {
        location.push_str(port);
    }
    if let Some(new_path) = &redirect.path {
        location.push_str(new_path);
        if !new_path.contains('?') && !redirect.strip_query {
            location.push_str(query);
        }
    } else if let Some(prefix) = &redirect.prefix_rewrite {
        let rewritten = rewrite_prefix(path, matched_len(route, path), prefix);
        location.push_str(&rewritten);
        if !redirect.strip_query {
            location.push_str(query);
        }
    } else {
        location.push_str(path);
        if !redirect.strip_query {
            location.push_str(query);
        }
    }
    location
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RouteAction, RouteMatch};

    #[test]
    fn parsed_names_are_the_names_http_makes_in_any_case() {
        for raw in [
            "Host",
            "DATE",
            "accept",
            "Server",
            "User-Agent",
            "connection",
            "Content-Type",
            "X-Request-Id",
            "cache-control",
            "Authorization",
            "Content-Length",
            "Accept-Encoding",
            "content-encoding",
            "Transfer-Encoding",
            "x-forwarded-proto",
            "X-Envoy-Upstream-Service-Time",
            // Lengths with common names, and others.
            "hose",
            "x-custom",
            "X-Request-Ix",
        ] {
            let expected = HeaderName::from_bytes(raw.as_bytes()).unwrap();
            assert_eq!(header_name(raw.as_bytes()).unwrap(), expected, "{raw}");
            assert_eq!(
                header_name(raw.as_bytes()).unwrap().as_str(),
                raw.to_ascii_lowercase()
            );
        }
        for bad in ["", "bad name", "h\u{e9}te", "host:"] {
            assert!(header_name(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    fn route(prefix: &str) -> Route {
        Route {
            name: "r".into(),
            matcher: RouteMatch {
                path: PathMatch::Prefix(prefix.into()),
                case_sensitive: true,
                headers: vec![],
                query_parameters: vec![],
            },
            action: RouteAction::DirectResponse {
                status: 200,
                body: None,
            },
            request_headers: Default::default(),
            response_headers: Default::default(),
            filter_configs: Default::default(),
        }
    }

    fn redirect() -> RedirectAction {
        RedirectAction {
            scheme: None,
            host: None,
            port: None,
            path: None,
            prefix_rewrite: None,
            status: 301,
            strip_query: false,
        }
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["te", "x-kept"]);
        let mut h = HeaderMap::new();
        h.insert(TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let id = request_id();
        let s = id.to_str().unwrap_or("");
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert_eq!(s.matches('-').count(), 4);
        assert_ne!(request_id(), id);
        // Across batches too, and every one well formed.
        let ids: std::collections::HashSet<_> =
            (0..3 * REQUEST_ID_BATCH).map(|_| request_id()).collect();
        assert_eq!(ids.len(), 3 * REQUEST_ID_BATCH);
        assert!(
            ids.iter()
                .all(|id| id.len() == UUID_LEN && id.as_bytes()[14] == b'4')
        );
    }

    #[test]
    fn redirects_like_envoy() {
        let h = HeaderMap::new();
        let r = route("/old/");
        let mut red = redirect();
        assert_eq!(
            redirect_location(&red, &r, &h, "a.com:8080", "/old/x?q=1"),
            "http://a.com:8080/old/x?q=1"
        );
        red.scheme = Some("https".into());
        assert_eq!(
            redirect_location(&red, &r, &h, "a.com:80", "/p"),
            "https://a.com/p"
        );
        red.port = Some(8443);
        assert_eq!(
            redirect_location(&red, &r, &h, "a.com:80", "/p"),
            "https://a.com:8443/p"
        );
        let mut red = redirect();
        red.prefix_rewrite = Some("/new/".into());
        red.strip_query = true;
        assert_eq!(
            redirect_location(&red, &r, &h, "a.com", "/old/x?q=1"),
            "http://a.com/new/x"
        );
        let mut red = redirect();
        red.host = Some("b.com".into());
        red.path = Some("/landing".into());
        assert_eq!(
            redirect_location(&red, &r, &h, "[::1]:80", "/old?q=1"),
            "http://b.com/landing?q=1"
        );
        assert_eq!(split_port("[::1]:80"), ("[::1]", ":80"));
        assert_eq!(split_port("[::1]"), ("[::1]", ""));
    }

    #[test]
    fn prefix_rewrite_replaces_the_matched_prefix() {
        let r = route("/api/");
        let p = "/api/users?x=1";
        assert_eq!(
            rewrite_prefix(p, matched_len(&r, "/api/users"), "/"),
            "/users?x=1"
        );
    }
}
