//! Checks that span several entries: protocols along a discovery chain, subsets that must exist,
//! redirect loops. Consul runs these by compiling every affected discovery chain on write; the
//! same questions are answered here directly.

use super::{
    ConfigEntry, ConfigEntryError, ConfigKind, Protocol, ProxyDefaults, ServiceIntentions,
    ServiceResolver, ServiceRouter, ServiceSplitter,
};

type Lookup<'a> = &'a dyn Fn(ConfigKind, &str) -> Option<ConfigEntry>;

/// Entries whose validity can depend on other entries.
const DEPENDENT_KINDS: [ConfigKind; 4] = [
    ConfigKind::ServiceRouter,
    ConfigKind::ServiceSplitter,
    ConfigKind::ServiceResolver,
    ConfigKind::ServiceIntentions,
];

/// Cross-entry checks for writing `entry`. `existing` must not return `entry` itself.
///
/// With lookups only, a `proxy-defaults` change cannot be checked against the routers and
/// splitters it affects, nor a `service-defaults` change against other services' routes into
/// that service; [`validate_against_all`] covers those.
pub fn validate_against(
    entry: &ConfigEntry,
    existing: &dyn Fn(ConfigKind, &str) -> Option<ConfigEntry>,
) -> Result<(), ConfigEntryError> {
    check_change(existing, None, entry.kind(), entry.name(), Some(entry))
}

/// Checks that deleting (kind, name) leaves the remaining entries valid.
pub fn validate_delete(
    kind: ConfigKind,
    name: &str,
    existing: &dyn Fn(ConfigKind, &str) -> Option<ConfigEntry>,
) -> Result<(), ConfigEntryError> {
    check_change(existing, None, kind, name, None)
}

/// Like [`validate_against`], given every stored entry, so that all entries a change affects are
/// rechecked. `stored` may include the old version of `entry`.
pub fn validate_against_all(
    entry: &ConfigEntry,
    stored: &[ConfigEntry],
) -> Result<(), ConfigEntryError> {
    let lookup = |kind: ConfigKind, name: &str| find(stored, kind, name);
    check_change(
        &lookup,
        Some(stored),
        entry.kind(),
        entry.name(),
        Some(entry),
    )
}

/// Like [`validate_delete`], given every stored entry.
pub fn validate_delete_all(
    kind: ConfigKind,
    name: &str,
    stored: &[ConfigEntry],
) -> Result<(), ConfigEntryError> {
    let lookup = |kind: ConfigKind, name: &str| find(stored, kind, name);
    check_change(&lookup, Some(stored), kind, name, None)
}

/// The protocol a service speaks: its service-defaults `Protocol`, else proxy-defaults
/// `Config.protocol`, else tcp.
pub fn effective_protocol(
    service: &str,
    existing: &dyn Fn(ConfigKind, &str) -> Option<ConfigEntry>,
) -> String {
    let view = View {
        stored: existing,
        change: None,
    };
    view.protocol(service).as_str().to_string()
}

fn find(entries: &[ConfigEntry], kind: ConfigKind, name: &str) -> Option<ConfigEntry> {
    entries
        .iter()
        .find(|e| e.kind() == kind && e.name() == name)
        .cloned()
}

/// The stored entries, optionally with one of them replaced or removed.
struct View<'a> {
    stored: Lookup<'a>,
    change: Option<(ConfigKind, &'a str, Option<&'a ConfigEntry>)>,
}

impl View<'_> {
    fn get(&self, kind: ConfigKind, name: &str) -> Option<ConfigEntry> {
        match self.change {
            Some((k, n, replacement)) if k == kind && n == name => replacement.cloned(),
            _ => (self.stored)(kind, name),
        }
    }

    fn protocol(&self, service: &str) -> Protocol {
        if let Some(ConfigEntry::ServiceDefaults(d)) =
            self.get(ConfigKind::ServiceDefaults, service)
            && let Some(p) = d.protocol
        {
            return p;
        }
        if let Some(ConfigEntry::ProxyDefaults(p)) =
            self.get(ConfigKind::ProxyDefaults, ProxyDefaults::NAME)
            && let Some(p) = p.protocol()
        {
            return p;
        }
        Protocol::Tcp
    }

    /// A service without a resolver has no subsets; one that redirects is judged by its target.
    fn has_subset(&self, service: &str, subset: &str) -> bool {
        match self.get(ConfigKind::ServiceResolver, service) {
            Some(ConfigEntry::ServiceResolver(r)) => {
                r.redirect.is_some() || r.subsets.contains_key(subset)
            }
            _ => false,
        }
    }
}

fn check_change(
    stored: Lookup<'_>,
    all: Option<&[ConfigEntry]>,
    kind: ConfigKind,
    name: &str,
    entry: Option<&ConfigEntry>,
) -> Result<(), ConfigEntryError> {
    let after = View {
        stored,
        change: Some((kind, name, entry)),
    };
    if let Some(entry) = entry {
        check_entry(&after, entry)?;
    }
    let before = View {
        stored,
        change: None,
    };
    for dependent in dependents(&after, all, kind, name) {
        let Err(inner) = check_entry(&after, &dependent) else {
            continue;
        };
        // Only blame this change for what it breaks, not for a problem that was already there.
        if check_entry(&before, &dependent).is_ok() {
            let verb = if entry.is_some() {
                "writing"
            } else {
                "deleting"
            };
            return Err(ConfigEntryError::WouldBreak {
                action: format!("{verb} {kind} {name:?}"),
                inner: Box::new(inner),
            });
        }
    }
    Ok(())
}

fn dependents(
    view: &View<'_>,
    all: Option<&[ConfigEntry]>,
    kind: ConfigKind,
    name: &str,
) -> Vec<ConfigEntry> {
    match all {
        Some(all) => all
            .iter()
            .filter(|e| DEPENDENT_KINDS.contains(&e.kind()))
            .filter(|e| !(e.kind() == kind && e.name() == name))
            .cloned()
            .collect(),
        // Without a listing only the entries of the same service can be found, which covers
        // the common case of a service's own router, splitter and intentions.
        None => match kind {
            ConfigKind::ServiceDefaults | ConfigKind::ServiceResolver => DEPENDENT_KINDS
                .into_iter()
                .filter(|k| *k != kind)
                .filter_map(|k| view.get(k, name))
                .collect(),
            _ => Vec::new(),
        },
    }
}

fn check_entry(view: &View<'_>, entry: &ConfigEntry) -> Result<(), ConfigEntryError> {
    match entry {
        ConfigEntry::ServiceRouter(r) => check_router(view, r),
        ConfigEntry::ServiceSplitter(s) => check_splitter(view, s),
        ConfigEntry::ServiceResolver(r) => check_resolver(view, r),
        ConfigEntry::ServiceIntentions(i) => check_intentions(view, i),
        ConfigEntry::ServiceDefaults(_) | ConfigEntry::ProxyDefaults(_) => Ok(()),
    }
}

fn or_self<'a>(service: &'a str, own: &'a str) -> &'a str {
    if service.is_empty() { own } else { service }
}

/// What a router or splitter needs of its own service before looking at its targets.
fn own_l7_protocol(
    view: &View<'_>,
    kind: ConfigKind,
    name: &str,
) -> Result<Protocol, ConfigEntryError> {
    let protocol = view.protocol(name);
    if protocol.is_l7() {
        Ok(protocol)
    } else {
        Err(ConfigEntryError::ProtocolNotL7 {
            kind,
            name: name.to_string(),
            path: String::new(),
            service: name.to_string(),
            protocol: protocol.as_str().to_string(),
        })
    }
}

/// A route or split target: another service must speak the same L7 protocol (Consul refuses
/// chains with mixed protocols), and a named subset must exist in the target's resolver.
fn check_target(
    view: &View<'_>,
    kind: ConfigKind,
    name: &str,
    own: Protocol,
    at: &str,
    service: &str,
    subset: &str,
) -> Result<(), ConfigEntryError> {
    if service != name {
        let protocol = view.protocol(service);
        if !protocol.is_l7() {
            return Err(ConfigEntryError::ProtocolNotL7 {
                kind,
                name: name.to_string(),
                path: format!("{at}.Service"),
                service: service.to_string(),
                protocol: protocol.as_str().to_string(),
            });
        }
        if protocol != own {
            return Err(ConfigEntryError::ProtocolMismatch {
                kind,
                name: name.to_string(),
                path: format!("{at}.Service"),
                service: service.to_string(),
                protocol: protocol.as_str().to_string(),
                expected: own.as_str().to_string(),
            });
        }
    }
    check_subset(
        view,
        kind,
        name,
        &format!("{at}.ServiceSubset"),
        service,
        subset,
    )
}

fn check_subset(
    view: &View<'_>,
    kind: ConfigKind,
    name: &str,
    path: &str,
    service: &str,
    subset: &str,
) -> Result<(), ConfigEntryError> {
    if subset.is_empty() || view.has_subset(service, subset) {
        return Ok(());
    }
    Err(ConfigEntryError::UnknownSubset {
        kind,
        name: name.to_string(),
        path: path.to_string(),
        service: service.to_string(),
        subset: subset.to_string(),
    })
}

fn check_router(view: &View<'_>, r: &ServiceRouter) -> Result<(), ConfigEntryError> {
    let kind = ConfigKind::ServiceRouter;
    let own = own_l7_protocol(view, kind, &r.name)?;
    for (i, route) in r.routes.iter().enumerate() {
        if let Some(d) = &route.destination {
            let at = format!("Routes[{i}].Destination");
            let service = or_self(&d.service, &r.name);
            check_target(view, kind, &r.name, own, &at, service, &d.service_subset)?;
        }
    }
    Ok(())
}

fn check_splitter(view: &View<'_>, s: &ServiceSplitter) -> Result<(), ConfigEntryError> {
    let kind = ConfigKind::ServiceSplitter;
    let own = own_l7_protocol(view, kind, &s.name)?;
    for (i, split) in s.splits.iter().enumerate() {
        let service = or_self(&split.service, &s.name);
        check_target(
            view,
            kind,
            &s.name,
            own,
            &format!("Splits[{i}]"),
            service,
            &split.service_subset,
        )?;
    }
    Ok(())
}

fn check_resolver(view: &View<'_>, r: &ServiceResolver) -> Result<(), ConfigEntryError> {
    let kind = ConfigKind::ServiceResolver;
    if let Some(chain) = redirect_loop(view, &r.name) {
        return Err(ConfigEntryError::RedirectLoop { chain });
    }
    // Targets in other datacenters cannot be checked from here; local ones in this service
    // were checked with the entry itself.
    if let Some(rd) = &r.redirect
        && rd.datacenter.is_empty()
    {
        let service = or_self(&rd.service, &r.name);
        check_subset(
            view,
            kind,
            &r.name,
            "Redirect.ServiceSubset",
            service,
            &rd.service_subset,
        )?;
    }
    for (key, f) in &r.failover {
        let at = super::key_path("Failover", key);
        let service = or_self(&f.service, &r.name);
        if f.datacenters.is_empty() && service != r.name {
            check_subset(
                view,
                kind,
                &r.name,
                &format!("{at}.ServiceSubset"),
                service,
                &f.service_subset,
            )?;
        }
        for (j, t) in f.targets.iter().enumerate() {
            let service = or_self(&t.service, &r.name);
            if t.datacenter.is_empty() && service != r.name {
                let path = format!("{at}.Targets[{j}].ServiceSubset");
                check_subset(view, kind, &r.name, &path, service, &t.service_subset)?;
            }
        }
    }
    Ok(())
}

/// Follows `Redirect.Service` from `start` through the resolvers in `view`; returns the chain
/// if it comes back to a service already visited. Cross-datacenter hops end the walk.
fn redirect_loop(view: &View<'_>, start: &str) -> Option<Vec<String>> {
    let mut chain = vec![start.to_string()];
    loop {
        let current = chain.last()?;
        let Some(ConfigEntry::ServiceResolver(r)) = view.get(ConfigKind::ServiceResolver, current)
        else {
            return None;
        };
        let redirect = r.redirect.as_ref()?;
        if !redirect.datacenter.is_empty() {
            return None;
        }
        let next = or_self(&redirect.service, current).to_string();
        let seen = chain.contains(&next);
        chain.push(next);
        if seen {
            return Some(chain);
        }
    }
}

/// L7 permissions turn into HTTP RBAC rules, which a tcp listener cannot apply.
fn check_intentions(view: &View<'_>, i: &ServiceIntentions) -> Result<(), ConfigEntryError> {
    if i.name == "*" {
        return Ok(());
    }
    let Some(idx) = i.sources.iter().position(|s| !s.permissions.is_empty()) else {
        return Ok(());
    };
    let protocol = view.protocol(&i.name);
    if protocol.is_l7() {
        return Ok(());
    }
    Err(ConfigEntryError::ProtocolNotL7 {
        kind: ConfigKind::ServiceIntentions,
        name: i.name.clone(),
        path: format!("Sources[{idx}].Permissions"),
        service: i.name.clone(),
        protocol: protocol.as_str().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn entry(v: Value) -> ConfigEntry {
        ConfigEntry::from_json(v).unwrap()
    }

    fn defaults(name: &str, protocol: &str) -> ConfigEntry {
        entry(json!({"Kind": "service-defaults", "Name": name, "Protocol": protocol}))
    }

    fn global(protocol: &str) -> ConfigEntry {
        entry(json!({"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": protocol}}))
    }

    fn router_to(name: &str, service: &str, subset: &str) -> ConfigEntry {
        entry(json!({"Kind": "service-router", "Name": name, "Routes": [
            {"Match": {"HTTP": {"PathPrefix": "/x"}}, "Destination": {"Service": service, "ServiceSubset": subset}}]}))
    }

    fn splitter(name: &str, splits: Value) -> ConfigEntry {
        entry(json!({"Kind": "service-splitter", "Name": name, "Splits": splits}))
    }

    fn redirect(name: &str, to: &str) -> ConfigEntry {
        entry(json!({"Kind": "service-resolver", "Name": name, "Redirect": {"Service": to}}))
    }

    fn subsets(name: &str, names: &[&str]) -> ConfigEntry {
        let subsets: serde_json::Map<String, Value> =
            names.iter().map(|n| (n.to_string(), json!({}))).collect();
        entry(json!({"Kind": "service-resolver", "Name": name, "Subsets": subsets}))
    }

    fn write(e: &ConfigEntry, stored: &[ConfigEntry]) -> Result<(), String> {
        let lookup = |kind: ConfigKind, name: &str| find(stored, kind, name);
        validate_against(e, &lookup).map_err(|e| e.to_string())
    }

    fn write_all(e: &ConfigEntry, stored: &[ConfigEntry]) -> Result<(), String> {
        validate_against_all(e, stored).map_err(|e| e.to_string())
    }

    fn delete(kind: ConfigKind, name: &str, stored: &[ConfigEntry]) -> Result<(), String> {
        let lookup = |kind: ConfigKind, name: &str| find(stored, kind, name);
        validate_delete(kind, name, &lookup).map_err(|e| e.to_string())
    }

    #[test]
    fn effective_protocol_prefers_service_defaults_then_global() {
        let lookup_in = |stored: Vec<ConfigEntry>| {
            move |kind: ConfigKind, name: &str| find(&stored, kind, name)
        };
        assert_eq!(effective_protocol("web", &lookup_in(vec![])), "tcp");
        assert_eq!(
            effective_protocol("web", &lookup_in(vec![global("HTTP2")])),
            "http2"
        );
        assert_eq!(
            effective_protocol(
                "web",
                &lookup_in(vec![global("http"), defaults("web", "grpc")])
            ),
            "grpc"
        );
        assert_eq!(
            effective_protocol(
                "api",
                &lookup_in(vec![global("http"), defaults("web", "grpc")])
            ),
            "http"
        );
        // A service-defaults without Protocol does not override the global default.
        let bare = entry(json!({"Kind": "service-defaults", "Name": "web"}));
        assert_eq!(
            effective_protocol("web", &lookup_in(vec![global("http"), bare])),
            "http"
        );
    }

    #[test]
    fn router_needs_an_l7_service() {
        let r = router_to("web", "", "");
        assert_eq!(
            write(&r, &[]).unwrap_err(),
            "service-router \"web\": service \"web\" uses protocol \"tcp\"; routers and splitters need http, http2 or grpc (set Protocol in its service-defaults)"
        );
        assert!(write(&r, &[defaults("web", "http")]).is_ok());
        assert!(write(&r, &[global("http")]).is_ok());
        assert!(write(&r, &[global("http"), defaults("web", "tcp")]).is_err());
    }

    #[test]
    fn splitter_needs_an_l7_service() {
        let s = splitter("web", json!([{"Weight": 100}]));
        assert!(
            write(&s, &[])
                .unwrap_err()
                .starts_with("service-splitter \"web\": service \"web\" uses protocol \"tcp\"")
        );
        assert!(write(&s, &[defaults("web", "grpc")]).is_ok());
    }

    #[test]
    fn targets_need_the_same_l7_protocol() {
        let r = router_to("web", "api", "");
        assert_eq!(
            write(&r, &[defaults("web", "http")]).unwrap_err(),
            "service-router \"web\": Routes[0].Destination.Service: service \"api\" uses protocol \"tcp\"; routers and splitters need http, http2 or grpc (set Protocol in its service-defaults)"
        );
        assert_eq!(
            write(&r, &[defaults("web", "http"), defaults("api", "grpc")]).unwrap_err(),
            "service-router \"web\": Routes[0].Destination.Service: service \"api\" uses protocol \"grpc\" but \"web\" uses \"http\"; every service a route or split reaches needs the same protocol"
        );
        assert!(write(&r, &[defaults("web", "http"), defaults("api", "http")]).is_ok());

        let s = splitter(
            "web",
            json!([{"Weight": 50}, {"Weight": 50, "Service": "web-v2"}]),
        );
        assert!(
            write(&s, &[global("http"), defaults("web-v2", "tcp")])
                .unwrap_err()
                .starts_with("service-splitter \"web\": Splits[1].Service: service \"web-v2\" uses protocol \"tcp\"")
        );
        assert!(write(&s, &[global("http")]).is_ok());
    }

    #[test]
    fn target_subsets_must_exist() {
        let stored = [global("http"), subsets("api", &["v1"])];
        assert!(write(&router_to("web", "api", "v1"), &stored).is_ok());
        assert_eq!(
            write(&router_to("web", "api", "v2"), &stored).unwrap_err(),
            "service-router \"web\": Routes[0].Destination.ServiceSubset: service \"api\" has no subset \"v2\" (define it in service-resolver \"api\")"
        );
        assert!(write(&router_to("web", "other", "v1"), &stored).is_err());
        let s = splitter(
            "api",
            json!([{"Weight": 50, "ServiceSubset": "v1"}, {"Weight": 50, "ServiceSubset": "v3"}]),
        );
        assert!(
            write(&s, &stored)
                .unwrap_err()
                .starts_with("service-splitter \"api\": Splits[1].ServiceSubset: service \"api\" has no subset \"v3\"")
        );
    }

    #[test]
    fn making_a_routed_service_tcp_is_rejected() {
        let stored = [defaults("web", "http"), router_to("web", "", "")];
        assert_eq!(
            write(&defaults("web", "tcp"), &stored).unwrap_err(),
            "writing service-defaults \"web\" would break service-router \"web\": service \"web\" uses protocol \"tcp\"; routers and splitters need http, http2 or grpc (set Protocol in its service-defaults)"
        );
        assert!(write(&defaults("web", "http2"), &stored).is_ok());
        assert_eq!(
            delete(ConfigKind::ServiceDefaults, "web", &stored).unwrap_err(),
            "deleting service-defaults \"web\" would break service-router \"web\": service \"web\" uses protocol \"tcp\"; routers and splitters need http, http2 or grpc (set Protocol in its service-defaults)"
        );
        assert!(delete(ConfigKind::ServiceRouter, "web", &stored).is_ok());
        assert!(delete(ConfigKind::ServiceDefaults, "other", &stored).is_ok());
        // With a global http default, the service stays http without its own defaults.
        let with_global = [
            global("http"),
            defaults("web", "http"),
            router_to("web", "", ""),
        ];
        assert!(delete(ConfigKind::ServiceDefaults, "web", &with_global).is_ok());
    }

    #[test]
    fn global_protocol_changes_need_the_full_listing() {
        let stored = [global("http"), router_to("web", "", "")];
        assert!(
            write_all(&global("tcp"), &stored).unwrap_err().starts_with(
                "writing proxy-defaults \"global\" would break service-router \"web\""
            )
        );
        assert!(
            validate_delete_all(ConfigKind::ProxyDefaults, "global", &stored)
                .unwrap_err()
                .to_string()
                .starts_with(
                    "deleting proxy-defaults \"global\" would break service-router \"web\""
                )
        );
        assert!(write_all(&global("http"), &stored).is_ok());
        // Lookups alone cannot enumerate the routers a global change affects.
        assert!(write(&global("tcp"), &stored).is_ok());
    }

    #[test]
    fn listing_finds_routes_into_a_changed_service() {
        let stored = [
            global("http"),
            router_to("web", "api", "v1"),
            subsets("api", &["v1"]),
        ];
        assert!(
            write_all(&defaults("api", "grpc"), &stored)
                .unwrap_err()
                .starts_with("writing service-defaults \"api\" would break service-router \"web\": Routes[0].Destination.Service")
        );
        assert_eq!(
            validate_delete_all(ConfigKind::ServiceResolver, "api", &stored)
                .unwrap_err()
                .to_string(),
            "deleting service-resolver \"api\" would break service-router \"web\": Routes[0].Destination.ServiceSubset: service \"api\" has no subset \"v1\" (define it in service-resolver \"api\")"
        );
        assert!(write_all(&subsets("api", &["v1", "v2"]), &stored).is_ok());
        assert!(write_all(&subsets("api", &["v2"]), &stored).is_err());
    }

    #[test]
    fn breakage_that_predates_the_change_is_not_blamed_on_it() {
        // The stored router is already invalid (its service is tcp); an unrelated write passes.
        let stored = [router_to("web", "", "")];
        assert!(write_all(&defaults("api", "http"), &stored).is_ok());
    }

    #[test]
    fn own_resolver_subsets_are_checked_on_delete() {
        let stored = [
            defaults("web", "http"),
            subsets("web", &["v1"]),
            router_to("web", "", "v1"),
        ];
        assert!(
            delete(ConfigKind::ServiceResolver, "web", &stored)
                .unwrap_err()
                .starts_with(
                    "deleting service-resolver \"web\" would break service-router \"web\""
                )
        );
    }

    #[test]
    fn redirect_loops_are_rejected() {
        let stored = [redirect("a", "b")];
        assert_eq!(
            write(&redirect("b", "a"), &stored).unwrap_err(),
            "Redirect: redirect loop b -> a -> b"
        );
        assert!(write(&redirect("b", "c"), &stored).is_ok());

        let chain = [redirect("a", "b"), redirect("b", "c")];
        assert_eq!(
            write(&redirect("c", "a"), &chain).unwrap_err(),
            "Redirect: redirect loop c -> a -> b -> c"
        );
        // The entry being written replaces the stored one of the same name.
        let stored = [redirect("a", "b"), redirect("b", "a")];
        assert!(write(&redirect("b", "c"), &stored).is_ok());
        // A hop to another datacenter ends the walk.
        let remote = entry(
            json!({"Kind": "service-resolver", "Name": "b", "Redirect": {"Service": "a", "Datacenter": "dc2"}}),
        );
        assert!(write(&remote, &[redirect("a", "b")]).is_ok());
    }

    #[test]
    fn redirect_and_failover_subsets_must_exist() {
        let stored = [subsets("api", &["v1"])];
        let to = |subset: &str| {
            entry(
                json!({"Kind": "service-resolver", "Name": "web", "Redirect": {"Service": "api", "ServiceSubset": subset}}),
            )
        };
        assert!(write(&to("v1"), &stored).is_ok());
        assert_eq!(
            write(&to("v2"), &stored).unwrap_err(),
            "service-resolver \"web\": Redirect.ServiceSubset: service \"api\" has no subset \"v2\" (define it in service-resolver \"api\")"
        );
        let failover = |subset: &str| {
            entry(
                json!({"Kind": "service-resolver", "Name": "web", "Failover": {"*": {"Targets": [{"Service": "api", "ServiceSubset": subset}]}}}),
            )
        };
        assert!(write(&failover("v1"), &stored).is_ok());
        assert!(
            write(&failover("v2"), &stored)
                .unwrap_err()
                .starts_with("service-resolver \"web\": Failover[\"*\"].Targets[0].ServiceSubset: service \"api\" has no subset \"v2\"")
        );
    }

    #[test]
    fn l7_intentions_need_an_l7_service() {
        let l7 = entry(
            json!({"Kind": "service-intentions", "Name": "web", "Sources": [
            {"Name": "a", "Action": "allow"},
            {"Name": "b", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]}]}),
        );
        assert_eq!(
            write(&l7, &[]).unwrap_err(),
            "service-intentions \"web\": Sources[1].Permissions: service \"web\" uses protocol \"tcp\"; intentions with Permissions need http, http2 or grpc (set Protocol in its service-defaults)"
        );
        assert!(write(&l7, &[defaults("web", "http")]).is_ok());
        let l4 = entry(
            json!({"Kind": "service-intentions", "Name": "web", "Sources": [{"Name": "a", "Action": "allow"}]}),
        );
        assert!(write(&l4, &[]).is_ok());
        assert!(
            write(&defaults("web", "tcp"), &[defaults("web", "http"), l7])
                .unwrap_err()
                .starts_with(
                    "writing service-defaults \"web\" would break service-intentions \"web\""
                )
        );
    }
}
