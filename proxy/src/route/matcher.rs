//! Route matching: path, headers, query parameters (see `match_route` for the rules).

use super::{RequestView, header_value};
use crate::config::{
    HeaderMatch, HeaderMatcher, PathMatch, QueryParameterMatcher, Route, RouteMatch, StringMatch,
};

pub(super) fn first_match<'a>(routes: &'a [Route], req: &RequestView<'_>) -> Option<&'a Route> {
    let (path, query) = split_path(req.path_and_query);
    routes
        .iter()
        .find(|route| route_matches(&route.matcher, req, path, query))
}

fn route_matches(m: &RouteMatch, req: &RequestView<'_>, path: &str, query: &str) -> bool {
    path_matches(m, req.path_and_query, path)
        && m.headers.iter().all(|h| header_matches(h, req))
        && m.query_parameters.iter().all(|q| query_matches(q, query))
}

fn path_matches(m: &RouteMatch, full: &str, path: &str) -> bool {
    match &m.path {
        // Envoy matches a prefix against the whole `:path`, query string included.
        PathMatch::Prefix(prefix) => {
            starts_with(full.as_bytes(), prefix.as_bytes(), !m.case_sensitive)
        }
        PathMatch::Exact(exact) => {
            if m.case_sensitive {
                path == exact
            } else {
                path.eq_ignore_ascii_case(exact)
            }
        }
        // Compiled anchored by `xds::convert`; `case_sensitive` does not apply, as in Envoy.
        PathMatch::Regex(re) => re.is_match(path),
    }
}

/// Envoy's header matcher. A missing header fails every value matcher whether inverted or
/// not (Envoy: the rule "will be ignored so it will not match"); `Present(p)` holds when the
/// header's presence equals `p`, and `invert` flips it. A header sent on several lines
/// matches when any line does (Envoy 1.40; older versions joined the lines with ",").
fn header_matches(h: &HeaderMatcher, req: &RequestView<'_>) -> bool {
    match &h.matcher {
        HeaderMatch::Present(want) => (header_value(req, &h.name).is_some() == *want) != h.invert,
        HeaderMatch::String(m) => {
            if h.name.starts_with(':') {
                return match header_value(req, &h.name) {
                    Some(value) => bytes_match(m, &value) != h.invert,
                    None => false,
                };
            }
            if h.name == "host" {
                return false;
            }
            let mut lines = req.headers.get_all(h.name.as_str()).iter().peekable();
            if lines.peek().is_none() {
                return false;
            }
            lines.any(|line| bytes_match(m, line.as_bytes())) != h.invert
        }
    }
}

/// Envoy's query parameter matcher: the parameter must be present; the first occurrence's
/// raw (not percent-decoded) value is compared.
fn query_matches(q: &QueryParameterMatcher, query: &str) -> bool {
    match (first_query_value(query, &q.name), &q.matcher) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(value), Some(m)) => string_matches(m, value),
    }
}

/// Envoy's `StringMatcher` on a value: `ignore_case` is ASCII case folding; regexes are
/// compiled anchored (whole value) by `xds::convert`.
pub fn string_matches(m: &StringMatch, value: &str) -> bool {
    match m {
        StringMatch::Regex(re) => re.is_match(value),
        _ => bytes_match(m, value.as_bytes()),
    }
}

fn bytes_match(m: &StringMatch, value: &[u8]) -> bool {
    match m {
        StringMatch::Exact(s, ignore_case) => {
            if *ignore_case {
                value.eq_ignore_ascii_case(s.as_bytes())
            } else {
                value == s.as_bytes()
            }
        }
        StringMatch::Prefix(s, ignore_case) => starts_with(value, s.as_bytes(), *ignore_case),
        StringMatch::Suffix(s, ignore_case) => {
            let s = s.as_bytes();
            value.len() >= s.len() && eq(&value[value.len() - s.len()..], s, *ignore_case)
        }
        StringMatch::Contains(s, ignore_case) => {
            let s = s.as_bytes();
            s.is_empty() || value.windows(s.len()).any(|w| eq(w, s, *ignore_case))
        }
        StringMatch::Regex(re) => match std::str::from_utf8(value) {
            Ok(v) => re.is_match(v),
            Err(_) => re.is_match(&String::from_utf8_lossy(value)),
        },
    }
}

fn starts_with(value: &[u8], prefix: &[u8], ignore_case: bool) -> bool {
    value.len() >= prefix.len() && eq(&value[..prefix.len()], prefix, ignore_case)
}

fn eq(a: &[u8], b: &[u8], ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// The path without query string and fragment, and the query string (without `?`, up to any
/// fragment; empty when there is none).
pub(super) fn split_path(path_and_query: &str) -> (&str, &str) {
    let end = path_and_query
        .bytes()
        .position(|b| b == b'?' || b == b'#')
        .unwrap_or(path_and_query.len());
    let path = &path_and_query[..end];
    let query = match path_and_query[end..].strip_prefix('?') {
        Some(rest) => rest.split('#').next().unwrap_or(""),
        None => "",
    };
    (path, query)
}

/// The raw value of the first `name` parameter in `query` (`a=1&b&c=`: `b` and `c` are
/// present with empty values), as Envoy's `parseQueryString` reads it.
pub(super) fn first_query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .find_map(|pair| match pair.split_once('=') {
            Some((key, value)) => (key == name).then_some(value),
            None => (pair == name).then_some(""),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_path_and_query() {
        assert_eq!(split_path("/a/b?x=1&y"), ("/a/b", "x=1&y"));
        assert_eq!(split_path("/a"), ("/a", ""));
        assert_eq!(split_path("/a?"), ("/a", ""));
        assert_eq!(split_path("/a#frag"), ("/a", ""));
        assert_eq!(split_path("/a?q=1#frag"), ("/a", "q=1"));
        assert_eq!(split_path(""), ("", ""));
    }

    #[test]
    fn query_values() {
        let q = "a=1&b&c=&a=2&d=x%20y&e=a=b";
        assert_eq!(first_query_value(q, "a"), Some("1"));
        assert_eq!(first_query_value(q, "b"), Some(""));
        assert_eq!(first_query_value(q, "c"), Some(""));
        assert_eq!(first_query_value(q, "d"), Some("x%20y"));
        assert_eq!(first_query_value(q, "e"), Some("a=b"));
        assert_eq!(first_query_value(q, "A"), None);
        assert_eq!(first_query_value(q, "z"), None);
        assert_eq!(first_query_value("", "a"), None);
        assert_eq!(first_query_value("&&a=1", "a"), Some("1"));
    }

    #[test]
    fn string_matchers() {
        let s = |x: &str| x.to_string();
        assert!(string_matches(&StringMatch::Exact(s("AbC"), false), "AbC"));
        assert!(!string_matches(&StringMatch::Exact(s("AbC"), false), "abc"));
        assert!(string_matches(&StringMatch::Exact(s("AbC"), true), "abc"));
        assert!(string_matches(&StringMatch::Prefix(s("ab"), false), "abc"));
        assert!(!string_matches(&StringMatch::Prefix(s("AB"), false), "abc"));
        assert!(string_matches(&StringMatch::Prefix(s("AB"), true), "abc"));
        assert!(!string_matches(
            &StringMatch::Prefix(s("abcd"), true),
            "abc"
        ));
        assert!(string_matches(&StringMatch::Suffix(s("bc"), false), "abc"));
        assert!(string_matches(&StringMatch::Suffix(s("BC"), true), "abc"));
        assert!(!string_matches(&StringMatch::Suffix(s("BC"), false), "abc"));
        assert!(string_matches(&StringMatch::Contains(s("b"), false), "abc"));
        assert!(string_matches(&StringMatch::Contains(s("B"), true), "abc"));
        assert!(!string_matches(
            &StringMatch::Contains(s("B"), false),
            "abc"
        ));
        assert!(!string_matches(
            &StringMatch::Contains(s("abcd"), false),
            "abc"
        ));
        let re = regex::Regex::new(r"^(?:\d{3})$").expect("regex");
        assert!(string_matches(&StringMatch::Regex(re.clone()), "123"));
        assert!(!string_matches(&StringMatch::Regex(re), "1234"));
    }

    /// Prefix/suffix/contains against their definitions on random ASCII strings.
    #[test]
    fn string_matchers_oracle() {
        let mut rng = fastrand::Rng::with_seed(3);
        let text = |rng: &mut fastrand::Rng, max: usize| -> String {
            (0..rng.usize(0..max))
                .map(|_| ['a', 'B', 'b', 'A', '-'][rng.usize(..5)])
                .collect()
        };
        for _ in 0..5_000 {
            let value = text(&mut rng, 8);
            let pat = text(&mut rng, 4);
            let ic = rng.bool();
            let fold = |x: &str| {
                if ic {
                    x.to_ascii_lowercase()
                } else {
                    x.to_string()
                }
            };
            let (v, p) = (fold(&value), fold(&pat));
            assert_eq!(
                string_matches(&StringMatch::Exact(pat.clone(), ic), &value),
                v == p
            );
            assert_eq!(
                string_matches(&StringMatch::Prefix(pat.clone(), ic), &value),
                v.starts_with(&p)
            );
            assert_eq!(
                string_matches(&StringMatch::Suffix(pat.clone(), ic), &value),
                v.ends_with(&p)
            );
            assert_eq!(
                string_matches(&StringMatch::Contains(pat.clone(), ic), &value),
                v.contains(&p)
            );
        }
    }
}
