//! Virtual host selection by domain (see `select_virtual_host` for the rules).

use crate::config::{DomainMatch, VirtualHost};

/// How well a domain matches a host; greater is better. Exact beats any suffix wildcard,
/// which beats any prefix wildcard, which beats `*`; among wildcards of one kind the longest
/// wins. Envoy rejects duplicate domains, so equal ranks only come from duplicates, and then
/// the first virtual host wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    Any,
    Prefix(usize),
    Suffix(usize),
    Exact,
}

pub(super) fn select<'a>(vhosts: &'a [VirtualHost], authority: &str) -> Option<&'a VirtualHost> {
    // Envoy matches the authority as sent, port included: `a.com:8080` does not match the
    // domain `a.com` (unless the connection manager strips ports, which `xds::convert`
    // rejects for now).
    best(vhosts, authority, |_| {})
}

/// The best-ranked virtual host for `host`; `visit` sees every domain.
fn best<'a>(
    vhosts: &'a [VirtualHost],
    host: &str,
    mut visit: impl FnMut(&DomainMatch),
) -> Option<&'a VirtualHost> {
    let mut best: Option<(Rank, &VirtualHost)> = None;
    for vh in vhosts {
        for domain in &vh.domains {
            visit(domain);
            if let Some(rank) = rank(domain, host)
                && best.is_none_or(|(r, _)| rank > r)
            {
                best = Some((rank, vh));
            }
        }
    }
    best.map(|(_, vh)| vh)
}

fn rank(domain: &DomainMatch, host: &str) -> Option<Rank> {
    let host = host.as_bytes();
    match domain {
        DomainMatch::Exact(d) => host
            .eq_ignore_ascii_case(d.as_bytes())
            .then_some(Rank::Exact),
        DomainMatch::Suffix(s) => {
            let s = s.as_bytes();
            // The wildcard stands for at least one character.
            let matches =
                host.len() > s.len() && host[host.len() - s.len()..].eq_ignore_ascii_case(s);
            matches.then_some(Rank::Suffix(s.len()))
        }
        DomainMatch::Prefix(p) => {
            let p = p.as_bytes();
            let matches = host.len() > p.len() && host[..p.len()].eq_ignore_ascii_case(p);
            matches.then_some(Rank::Prefix(p.len()))
        }
        DomainMatch::Any => Some(Rank::Any),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vh(name: &str, domains: &[&str]) -> VirtualHost {
        VirtualHost {
            name: name.to_string(),
            domains: domains.iter().map(|d| parse(d)).collect(),
            routes: vec![],
            cors: None,
            request_headers: Default::default(),
            response_headers: Default::default(),
            filter_configs: Default::default(),
        }
    }

    /// The proto form, as `xds::convert` stores it.
    fn parse(d: &str) -> DomainMatch {
        if d == "*" {
            DomainMatch::Any
        } else if let Some(s) = d.strip_prefix('*') {
            DomainMatch::Suffix(s.to_string())
        } else if let Some(p) = d.strip_suffix('*') {
            DomainMatch::Prefix(p.to_string())
        } else {
            DomainMatch::Exact(d.to_string())
        }
    }

    fn pick<'a>(vhosts: &'a [VirtualHost], authority: &str) -> Option<&'a str> {
        select(vhosts, authority).map(|v| v.name.as_str())
    }

    #[test]
    fn preference_order() {
        let vhosts = [
            vh("any", &["*"]),
            vh("prefix", &["api.*"]),
            vh("suffix", &["*.example.com"]),
            vh("longer-suffix", &["*.api.example.com"]),
            vh("exact", &["api.example.com"]),
            vh("dash-suffix", &["*-bar.example.com"]),
            vh("longer-prefix", &["api.example.*"]),
        ];
        assert_eq!(pick(&vhosts, "api.example.com"), Some("exact"));
        assert_eq!(pick(&vhosts, "v1.api.example.com"), Some("longer-suffix"));
        assert_eq!(pick(&vhosts, "www.example.com"), Some("suffix"));
        assert_eq!(pick(&vhosts, "foo-bar.example.com"), Some("dash-suffix"));
        assert_eq!(pick(&vhosts, "api.example.org"), Some("longer-prefix"));
        assert_eq!(pick(&vhosts, "api.other"), Some("prefix"));
        assert_eq!(pick(&vhosts, "elsewhere"), Some("any"));
        assert_eq!(pick(&vhosts, ""), Some("any"));
    }

    #[test]
    fn wildcards_do_not_match_empty() {
        let vhosts = [vh("suffix", &["*.example.com"]), vh("prefix", &["api.*"])];
        assert_eq!(pick(&vhosts, ".example.com"), None);
        assert_eq!(pick(&vhosts, "example.com"), None);
        assert_eq!(pick(&vhosts, "api."), None);
        assert_eq!(pick(&vhosts, "x.example.com"), Some("suffix"));
    }

    #[test]
    fn case_insensitive() {
        let vhosts = [
            vh("exact", &["Api.Example.com"]),
            vh("suffix", &["*.EXAMPLE.org"]),
        ];
        assert_eq!(pick(&vhosts, "API.example.COM"), Some("exact"));
        assert_eq!(pick(&vhosts, "www.example.ORG"), Some("suffix"));
    }

    #[test]
    fn the_port_is_part_of_the_host() {
        let vhosts = [
            vh("a", &["a.com"]),
            vh("b", &["*.b.com"]),
            vh("a80", &["a.com:80"]),
        ];
        assert_eq!(pick(&vhosts, "a.com:80"), Some("a80"));
        assert_eq!(pick(&vhosts, "a.com:8080"), None);
        // `*.b.com` matches `x.b.com:443`'s suffix only without the port: no match.
        assert_eq!(pick(&vhosts, "x.b.com:443"), None);
        let with_any = [vh("a", &["a.com"]), vh("any", &["*"])];
        assert_eq!(pick(&with_any, "a.com:8080"), Some("any"));
        assert_eq!(pick(&with_any, "a.com"), Some("a"));
    }

    #[test]
    fn ipv6_authorities_match_as_sent() {
        let vhosts = [vh("v6", &["[::1]"]), vh("v6p", &["[::1]:15001"])];
        assert_eq!(pick(&vhosts, "[::1]"), Some("v6"));
        assert_eq!(pick(&vhosts, "[::1]:15001"), Some("v6p"));
        assert_eq!(pick(&vhosts, "[::1]:9"), None);
    }

    /// Against a brute-force oracle over random hosts and domain sets.
    #[test]
    fn matches_oracle_on_random_inputs() {
        let mut rng = fastrand::Rng::with_seed(17);
        let labels = ["a", "b", "api", "x-y", "c"];
        let word = |rng: &mut fastrand::Rng, max_parts: usize| {
            let parts = rng.usize(1..=max_parts);
            (0..parts)
                .map(|_| labels[rng.usize(..labels.len())])
                .collect::<Vec<_>>()
                .join(".")
        };
        for _ in 0..2_000 {
            let mut vhosts = vec![];
            let mut seen = std::collections::HashSet::new();
            for v in 0..rng.usize(1..5) {
                let mut domains = vec![];
                for _ in 0..rng.usize(1..4) {
                    let d = match rng.u8(..4) {
                        0 => word(&mut rng, 3),
                        1 => format!("*.{}", word(&mut rng, 2)),
                        2 => format!("{}.*", word(&mut rng, 2)),
                        _ => "*".to_string(),
                    };
                    if seen.insert(d.clone()) {
                        domains.push(d);
                    }
                }
                let domains: Vec<&str> = domains.iter().map(String::as_str).collect();
                vhosts.push(vh(&format!("v{v}"), &domains));
            }
            let host = word(&mut rng, 4);
            let authority = if rng.bool() {
                format!("{host}:8080")
            } else {
                host.clone()
            };
            assert_eq!(
                pick(&vhosts, &authority),
                oracle(&vhosts, &authority),
                "{authority} in {:?}",
                vhosts.iter().map(|v| &v.domains).collect::<Vec<_>>()
            );
        }
    }

    /// Envoy's documented order, written the slow way.
    fn oracle<'a>(vhosts: &'a [VirtualHost], host: &str) -> Option<&'a str> {
        let all = || {
            vhosts
                .iter()
                .flat_map(|v| v.domains.iter().map(move |d| (v, d)))
        };
        if let Some((v, _)) = all().find(|(_, d)| **d == DomainMatch::Exact(host.to_string())) {
            return Some(&v.name);
        }
        let suffix = all()
            .filter_map(|(v, d)| match d {
                DomainMatch::Suffix(s) if host.ends_with(s.as_str()) && host.len() > s.len() => {
                    Some((s.len(), v))
                }
                _ => None,
            })
            .max_by_key(|(len, _)| *len);
        if let Some((_, v)) = suffix {
            return Some(&v.name);
        }
        let prefix = all()
            .filter_map(|(v, d)| match d {
                DomainMatch::Prefix(p) if host.starts_with(p.as_str()) && host.len() > p.len() => {
                    Some((p.len(), v))
                }
                _ => None,
            })
            .max_by_key(|(len, _)| *len);
        if let Some((_, v)) = prefix {
            return Some(&v.name);
        }
        all()
            .find(|(_, d)| **d == DomainMatch::Any)
            .map(|(v, _)| v.name.as_str())
    }
}
