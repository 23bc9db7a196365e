//! Hash policies (see `request_hash` for how they combine). Each yields XXH64 (seed 0) of
//! the same bytes Envoy hashes, so a request hashes as it would in Envoy.

use super::matcher::{first_query_value, split_path};
use super::{RequestView, pseudo_header};
use crate::balance::{xxhash64, xxhash64_chain};
use crate::config::HashPolicy;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};

pub(super) fn request_hash(policies: &[HashPolicy], req: &RequestView<'_>) -> Option<u64> {
    let mut hash: Option<u64> = None;
    for policy in policies {
        if let Some(value) = evaluate(policy, req) {
            // Rotating keeps two identical policies from cancelling out.
            hash = Some(hash.map_or(0, |h| h.rotate_left(1)) ^ value);
        }
        if terminal(policy) && hash.is_some() {
            break;
        }
    }
    hash
}

fn terminal(policy: &HashPolicy) -> bool {
    match policy {
        HashPolicy::Header { terminal, .. }
        | HashPolicy::Cookie { terminal, .. }
        | HashPolicy::SourceIp { terminal }
        | HashPolicy::QueryParameter { terminal, .. } => *terminal,
    }
}

fn evaluate(policy: &HashPolicy, req: &RequestView<'_>) -> Option<u64> {
    match policy {
        HashPolicy::Header { name, .. } => header_hash(req, name),
        HashPolicy::Cookie { name, .. } => cookie(req.headers, name).map(|v| xxhash64(v, 0)),
        HashPolicy::SourceIp { .. } => {
            // Envoy hashes the address as text, without the port.
            let mut buf = StackStr::default();
            match req.source.ip() {
                IpAddr::V4(v4) => buf.push_ipv4(v4),
                // At most 45 bytes: always fits.
                IpAddr::V6(v6) => write!(buf, "{v6}").ok()?,
            }
            Some(xxhash64(buf.as_bytes(), 0))
        }
        HashPolicy::QueryParameter { name, .. } => {
            let (_, query) = split_path(req.path_and_query);
            first_query_value(query, name).map(|v| xxhash64(v.as_bytes(), 0))
        }
    }
}

/// Envoy hashes every value of the header, sorted so their order does not matter.
fn header_hash(req: &RequestView<'_>, name: &str) -> Option<u64> {
    if let Some(value) = pseudo_header(req, name) {
        return Some(xxhash64(value, 0));
    }
    if name == "host" || name.starts_with(':') {
        return None;
    }
    let mut values = req.headers.get_all(name).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(xxhash64(first.as_bytes(), 0));
    };
    let mut all: Vec<&[u8]> = vec![first.as_bytes(), second.as_bytes()];
    all.extend(values.map(|v| v.as_bytes()));
    all.sort_unstable();
    Some(xxhash64_chain(all))
}

/// The value of cookie `name` in the request's `Cookie` headers (the first one found), with
/// surrounding double quotes removed as Envoy does.
pub(super) fn cookie<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|h| h.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (key, value) = (&pair[..eq], &pair[eq + 1..]);
            (key == name.as_bytes()).then(|| {
                match value
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                {
                    Some(unquoted) => unquoted,
                    None => value,
                }
            })
        })
}

/// A fixed buffer for formatting an IP address without allocating.
struct StackStr {
    buf: [u8; 64],
    len: usize,
}

impl Default for StackStr {
    fn default() -> Self {
        StackStr {
            buf: [0; 64],
            len: 0,
        }
    }
}

impl StackStr {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Dotted decimal, as `Ipv4Addr`'s `Display` writes it, without the formatting machinery.
    fn push_ipv4(&mut self, ip: Ipv4Addr) {
        for (i, octet) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                self.push(b'.');
            }
            if octet >= 100 {
                self.push(b'0' + octet / 100);
            }
            if octet >= 10 {
                self.push(b'0' + octet / 10 % 10);
            }
            self.push(b'0' + octet % 10);
        }
    }

    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }
}

impl Write for StackStr {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies() {
        let mut h = http::HeaderMap::new();
        h.append("cookie", "a=1; session=\"abc\";b=2".parse().expect("value"));
        h.append("cookie", "c=3; a=later".parse().expect("value"));
        assert_eq!(cookie(&h, "a"), Some(&b"1"[..]));
        assert_eq!(cookie(&h, "session"), Some(&b"abc"[..]));
        assert_eq!(cookie(&h, "b"), Some(&b"2"[..]));
        assert_eq!(cookie(&h, "c"), Some(&b"3"[..]));
        assert_eq!(cookie(&h, "A"), None);
        assert_eq!(cookie(&h, "missing"), None);
        assert_eq!(cookie(&http::HeaderMap::new(), "a"), None);
    }

    #[test]
    fn ipv4_text_matches_display() {
        let mut rng = fastrand::Rng::with_seed(5);
        let mut cases: Vec<Ipv4Addr> = vec![
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            Ipv4Addr::new(10, 0, 100, 9),
        ];
        cases.extend((0..1_000).map(|_| Ipv4Addr::from(rng.u32(..))));
        for ip in cases {
            let mut s = StackStr::default();
            s.push_ipv4(ip);
            assert_eq!(s.as_bytes(), ip.to_string().as_bytes());
        }
    }

    #[test]
    fn stack_str_overflow_is_an_error() {
        let mut s = StackStr::default();
        assert!(write!(s, "{}", "x".repeat(64)).is_ok());
        assert!(write!(s, "y").is_err());
    }
}
