//! Discovery chains: an upstream's service-router, service-splitter and service-resolver entries
//! compiled into routes that end at targets, the way Consul's `discoverychain` compiler does.
//!
//! - Only the upstream service's own router is consulted; a route without a subset continues at
//!   its service's splitter if it has one, else at its resolver. The catch-all goes the same way.
//! - Splitters that split to another service's splitter are flattened into one list of weighted
//!   targets (weights multiplied, still summing to `TOTAL_SCALED_WEIGHT` (10000)).
//! - A resolver's `Redirect` moves the target to another service (dropping the subset unless the
//!   redirect names one); `DefaultSubset` applies when no subset is named.
//! - Routers and splitters only apply to L7 protocols; a tcp chain is its resolver alone.
//! - `Failover` of the resolver that finally resolved a target (the entry of its subset, else
//!   `*`) lists the targets to use, in order, when the target has no healthy endpoint: each is
//!   the target rewritten by `Service`/`ServiceSubset` (another service drops the subset), once
//!   per entry of `Datacenters` or `Targets`, then resolved through its own resolver's
//!   redirect and default subset (not its failover). A target equal to the one failed over is
//!   left out. Failover targets must speak the protocol of the target they back up.
//!
//! Only this datacenter exists for the mesh (no mesh gateways): a `Datacenter` (redirect,
//! failover target) or `Datacenters` entry naming another one is an error; naming this one
//! is the same as leaving it out.

use mesh_proto::config_entry::{
    ConfigEntry, ConfigKind, HeaderModifiers, LoadBalancer, Protocol, ResolverSubset, Route,
    ServiceResolver, ServiceRouter, ServiceSplitter,
};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::RegistryView;

/// Consul's connect timeout when a resolver sets none.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One service, optionally narrowed to a resolver subset: one EDS cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Target {
    pub service: String,
    pub subset: String,
}

impl Target {
    pub(crate) fn new(service: &str, subset: &str) -> Target {
        Target {
            service: service.to_string(),
            subset: subset.to_string(),
        }
    }

    /// `<service>`, or `<subset>.<service>` for a subset.
    pub(crate) fn cluster_name(&self) -> String {
        if self.subset.is_empty() {
            self.service.clone()
        } else {
            format!("{}.{}", self.subset, self.service)
        }
    }
}

/// What the resolver that finally resolved a target (after redirects) says about it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resolved {
    pub connect_timeout: Duration,
    pub request_timeout: Option<Duration>,
    pub load_balancer: Option<LoadBalancer>,
    pub subset: ResolverSubset,
    /// Where requests go, in this order, when the target has no healthy endpoint.
    pub failover: Vec<FailoverTarget>,
}

/// A failover target, resolved, with the subset its endpoints are chosen by.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FailoverTarget {
    pub target: Target,
    pub subset: ResolverSubset,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WeightedTarget {
    pub target: Target,
    /// In hundredths of a percent.
    pub weight: u32,
    pub request_headers: Option<HeaderModifiers>,
    pub response_headers: Option<HeaderModifiers>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Destination {
    Target(Target),
    /// Weights sum to `TOTAL_SCALED_WEIGHT` (10000).
    Split(Vec<WeightedTarget>),
}

/// Where a route sends requests, and the hash-based load balancer (if any) whose hash policies
/// the route must carry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hop {
    pub destination: Destination,
    pub load_balancer: Option<LoadBalancer>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChainRoute<'v> {
    pub definition: &'v Route,
    pub hop: Hop,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chain<'v> {
    /// The router's routes in order; the catch-all is `default`.
    pub routes: Vec<ChainRoute<'v>>,
    pub default: Hop,
    /// The resolver's `RequestTimeout`, only when the chain is a resolver alone: like Consul, a
    /// timeout is not taken from resolvers behind a router or a split.
    pub default_timeout: Option<Duration>,
    /// Every target any route reaches.
    pub targets: BTreeMap<Target, Resolved>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("service {service:?} has no subset {subset:?} in its service-resolver")]
    UnknownSubset { service: String, subset: String },
    #[error("service-resolver redirect loop: {}", .0.join(" -> "))]
    RedirectLoop(Vec<String>),
    #[error("service-splitter loop: {}", .0.join(" -> "))]
    SplitterLoop(Vec<String>),
    #[error("service-splitter {0:?} has no split with a weight")]
    NoWeight(String),
    #[error("{0}")]
    OtherDatacenter(Box<OtherDatacenter>),
    #[error("{0}")]
    FailoverProtocol(Box<FailoverProtocol>),
}

/// A resolver names a datacenter other than the sidecar's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "service-resolver {resolver:?}: {field}: datacenter {datacenter:?} is not supported (the mesh spans this datacenter only, {local:?})"
)]
pub struct OtherDatacenter {
    pub resolver: String,
    pub field: String,
    pub datacenter: String,
    pub local: String,
}

/// A failover target speaks another protocol than the target it backs up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "service-resolver {resolver:?}: {field}: failover target {target:?} speaks {found}, the service it backs up {expected}"
)]
pub struct FailoverProtocol {
    pub resolver: String,
    pub field: String,
    pub target: String,
    pub expected: Protocol,
    pub found: Protocol,
}

/// The discovery chain of `service` for a sidecar in datacenter `datacenter`.
pub(crate) fn compile<'v>(
    view: &'v RegistryView,
    service: &str,
    protocol: Protocol,
    datacenter: &str,
) -> Result<Chain<'v>, ChainError> {
    let mut c = Compiler {
        view,
        l7: protocol.is_l7(),
        datacenter,
        targets: BTreeMap::new(),
    };
    let router = if c.l7 { router(view, service) } else { None };
    let mut routes = Vec::new();
    for definition in router.map_or(&[][..], |r| r.routes.as_slice()) {
        let dest = definition.destination.as_ref();
        let to = dest.map_or("", |d| d.service.as_str());
        let to = if to.is_empty() { service } else { to };
        let subset = dest.map_or("", |d| d.service_subset.as_str());
        let hop = if subset.is_empty() {
            c.split_or_resolve(to)?
        } else {
            let target = c.resolve(Target::new(to, subset))?;
            c.hop_to(target)
        };
        routes.push(ChainRoute { definition, hop });
    }
    let default = c.split_or_resolve(service)?;
    let default_timeout = match &default.destination {
        Destination::Target(t) if router.is_none() => {
            c.targets.get(t).and_then(|r| r.request_timeout)
        }
        _ => None,
    };
    Ok(Chain {
        routes,
        default,
        default_timeout: default_timeout.filter(|d| !d.is_zero()),
        targets: c.targets,
    })
}

struct Compiler<'v, 'd> {
    view: &'v RegistryView,
    l7: bool,
    /// The sidecar's datacenter.
    datacenter: &'d str,
    targets: BTreeMap<Target, Resolved>,
}

impl Compiler<'_, '_> {
    fn hop_to(&self, target: Target) -> Hop {
        let load_balancer = self.hash_lb(&target);
        Hop {
            destination: Destination::Target(target),
            load_balancer,
        }
    }

    fn hash_lb(&self, target: &Target) -> Option<LoadBalancer> {
        self.targets
            .get(target)
            .and_then(|r| r.load_balancer.clone())
            .filter(|lb| lb.policy.is_some_and(|p| p.is_hash_based()))
    }

    fn split_or_resolve(&mut self, service: &str) -> Result<Hop, ChainError> {
        if self.l7
            && let Some(splits) = self.flatten_splitter(service, &mut Vec::new())?
        {
            // One route carries one set of hash policies: like Consul, take the first
            // hash-based load balancer among the split's targets.
            let load_balancer = splits.iter().find_map(|s| self.hash_lb(&s.target));
            return Ok(Hop {
                destination: Destination::Split(splits),
                load_balancer,
            });
        }
        let target = self.resolve(Target::new(service, ""))?;
        Ok(self.hop_to(target))
    }

    /// The splitter of `service` as weighted targets, or `None` without a splitter.
    fn flatten_splitter(
        &mut self,
        service: &str,
        visiting: &mut Vec<String>,
    ) -> Result<Option<Vec<WeightedTarget>>, ChainError> {
        let Some(splitter) = splitter(self.view, service) else {
            return Ok(None);
        };
        if visiting.iter().any(|v| v == service) {
            let mut chain = visiting.clone();
            chain.push(service.to_string());
            return Err(ChainError::SplitterLoop(chain));
        }
        visiting.push(service.to_string());
        let mut out: Vec<WeightedTarget> = Vec::new();
        for split in &splitter.splits {
            let to = if split.service.is_empty() {
                service
            } else {
                split.service.as_str()
            };
            let weight = split.scaled_weight();
            let nested = if to != service && split.service_subset.is_empty() {
                self.flatten_splitter(to, visiting)?
            } else {
                None
            };
            match nested {
                Some(inner) => {
                    let shares = apportion(weight, &inner);
                    for (w, share) in inner.into_iter().zip(shares) {
                        out.push(WeightedTarget {
                            target: w.target,
                            weight: share,
                            request_headers: merge(&split.request_headers, w.request_headers),
                            response_headers: merge(&split.response_headers, w.response_headers),
                        });
                    }
                }
                None => out.push(WeightedTarget {
                    target: self.resolve(Target::new(to, &split.service_subset))?,
                    weight,
                    request_headers: split.request_headers.clone(),
                    response_headers: split.response_headers.clone(),
                }),
            }
        }
        visiting.pop();
        let out = merge_duplicates(out);
        if out.iter().all(|w| w.weight == 0) {
            return Err(ChainError::NoWeight(service.to_string()));
        }
        Ok(Some(out))
    }

    /// Follows redirects and the default subset to the target that is finally used, and
    /// records it with its failover targets.
    fn resolve(&mut self, target: Target) -> Result<Target, ChainError> {
        let (target, mut resolved) = self.resolve_target(target)?;
        if !self.targets.contains_key(&target) {
            resolved.failover = self.failover(&target)?;
            self.targets.insert(target.clone(), resolved);
        }
        Ok(target)
    }

    /// The target `target` finally resolves to (redirects, then the default subset), and what
    /// its resolver says about it (without failover).
    fn resolve_target(&self, mut target: Target) -> Result<(Target, Resolved), ChainError> {
        let mut seen: Vec<Target> = Vec::new();
        loop {
            if seen.contains(&target) {
                seen.push(target);
                let names = seen.iter().map(Target::cluster_name).collect();
                return Err(ChainError::RedirectLoop(names));
            }
            seen.push(target.clone());
            let resolver = resolver(self.view, &target.service);
            if let Some(redirect) = resolver.and_then(|r| r.redirect.as_ref()) {
                self.local_datacenter(
                    &target.service,
                    "Redirect.Datacenter",
                    &redirect.datacenter,
                )?;
                let next = rewrite(&target, &redirect.service, &redirect.service_subset);
                if next != target {
                    target = next;
                    continue;
                }
            }
            if target.subset.is_empty()
                && let Some(default) = resolver.map(|r| &r.default_subset)
                && !default.is_empty()
            {
                target.subset = default.clone();
                continue;
            }
            let subset = if target.subset.is_empty() {
                ResolverSubset::default()
            } else {
                resolver
                    .and_then(|r| r.subset(&target.subset))
                    .cloned()
                    .ok_or_else(|| ChainError::UnknownSubset {
                        service: target.service.clone(),
                        subset: target.subset.clone(),
                    })?
            };
            let resolved = Resolved {
                connect_timeout: resolver
                    .and_then(|r| r.connect_timeout)
                    .filter(|t| !t.is_zero())
                    .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
                request_timeout: resolver.and_then(|r| r.request_timeout),
                load_balancer: resolver.and_then(|r| r.load_balancer.clone()),
                subset,
                failover: Vec::new(),
            };
            return Ok((target, resolved));
        }
    }

    /// The failover targets of `target` (already resolved), from its resolver's `Failover`.
    fn failover(&self, target: &Target) -> Result<Vec<FailoverTarget>, ChainError> {
        let Some(resolver) = resolver(self.view, &target.service) else {
            return Ok(Vec::new());
        };
        let (key, failover) = match resolver.failover.get_key_value(&target.subset) {
            Some(entry) => entry,
            None => match resolver.failover.get_key_value("*") {
                Some(entry) => entry,
                None => return Ok(Vec::new()),
            },
        };
        let at = format!("Failover[{key:?}]");
        // (field, service, subset) of each rewrite, after checking its datacenter.
        let mut rewrites: Vec<(String, &str, &str)> = Vec::new();
        if !failover.datacenters.is_empty() {
            for (i, dc) in failover.datacenters.iter().enumerate() {
                let field = format!("{at}.Datacenters[{i}]");
                self.local_datacenter(&target.service, &field, dc)?;
                rewrites.push((field, &failover.service, &failover.service_subset));
            }
        } else if !failover.targets.is_empty() {
            for (i, t) in failover.targets.iter().enumerate() {
                let field = format!("{at}.Targets[{i}]");
                self.local_datacenter(
                    &target.service,
                    &format!("{field}.Datacenter"),
                    &t.datacenter,
                )?;
                rewrites.push((field, &t.service, &t.service_subset));
            }
        } else {
            rewrites.push((at, &failover.service, &failover.service_subset));
        }
        let expected = super::protocol(self.view, &target.service);
        let mut out = Vec::new();
        for (field, service, subset) in rewrites {
            let next = rewrite(target, service, subset);
            if next == *target {
                continue;
            }
            let (next, resolved) = self.resolve_target(next)?;
            let found = super::protocol(self.view, &next.service);
            if found != expected {
                return Err(ChainError::FailoverProtocol(Box::new(FailoverProtocol {
                    resolver: target.service.clone(),
                    field,
                    target: next.cluster_name(),
                    expected,
                    found,
                })));
            }
            out.push(FailoverTarget {
                target: next,
                subset: resolved.subset,
            });
        }
        Ok(out)
    }

    /// Refuses a datacenter other than the sidecar's (empty means the sidecar's).
    fn local_datacenter(
        &self,
        resolver: &str,
        field: &str,
        datacenter: &str,
    ) -> Result<(), ChainError> {
        if datacenter.is_empty() || datacenter == self.datacenter {
            return Ok(());
        }
        Err(ChainError::OtherDatacenter(Box::new(OtherDatacenter {
            resolver: resolver.to_string(),
            field: field.to_string(),
            datacenter: datacenter.to_string(),
            local: self.datacenter.to_string(),
        })))
    }
}

/// `target` with its service and subset replaced as a redirect or failover entry says:
/// another service drops the subset unless one is named.
fn rewrite(target: &Target, service: &str, subset: &str) -> Target {
    let mut next = target.clone();
    if !service.is_empty() && service != next.service {
        next.service = service.to_string();
        next.subset.clear();
    }
    if !subset.is_empty() {
        next.subset = subset.to_string();
    }
    next
}

/// Scales `inner`'s weights (which sum to `TOTAL_SCALED_WEIGHT` (10000)) to sum to exactly `total`,
/// giving the rounding remainder to the largest fractions first.
fn apportion(total: u32, inner: &[WeightedTarget]) -> Vec<u32> {
    let sum: u64 = inner.iter().map(|w| u64::from(w.weight)).sum();
    if sum == 0 {
        return vec![0; inner.len()];
    }
    let exact: Vec<u64> = inner
        .iter()
        .map(|w| u64::from(total) * u64::from(w.weight))
        .collect();
    let mut shares: Vec<u32> = exact
        .iter()
        .map(|e| u32::try_from(e / sum).unwrap_or(u32::MAX))
        .collect();
    let given: u32 = shares.iter().sum();
    let mut by_fraction: Vec<usize> = (0..inner.len()).collect();
    // Stable: ties keep split order, so the result is deterministic.
    by_fraction.sort_by_key(|&i| std::cmp::Reverse(exact[i] % sum));
    for &i in by_fraction
        .iter()
        .take(total.saturating_sub(given) as usize)
    {
        shares[i] += 1;
    }
    shares
}

/// Like Consul's `MergeParent`: the inner split's headers win, the outer split's fill in.
fn merge(
    outer: &Option<HeaderModifiers>,
    inner: Option<HeaderModifiers>,
) -> Option<HeaderModifiers> {
    match (outer, inner) {
        (None, inner) => inner,
        (Some(outer), None) => Some(outer.clone()),
        (Some(outer), Some(mut inner)) => {
            for (k, v) in &outer.add {
                inner.add.entry(k.clone()).or_insert_with(|| v.clone());
            }
            for (k, v) in &outer.set {
                inner.set.entry(k.clone()).or_insert_with(|| v.clone());
            }
            for r in &outer.remove {
                if !inner.remove.contains(r) {
                    inner.remove.push(r.clone());
                }
            }
            Some(inner)
        }
    }
}

/// Flattening can reach one target twice; identical entries become one weighted cluster.
fn merge_duplicates(splits: Vec<WeightedTarget>) -> Vec<WeightedTarget> {
    let mut out: Vec<WeightedTarget> = Vec::with_capacity(splits.len());
    for s in splits {
        match out.iter_mut().find(|o| {
            o.target == s.target
                && o.request_headers == s.request_headers
                && o.response_headers == s.response_headers
        }) {
            Some(o) => o.weight += s.weight,
            None => out.push(s),
        }
    }
    out
}

pub(crate) fn resolver<'v>(view: &'v RegistryView, service: &str) -> Option<&'v ServiceResolver> {
    match view.config_entry(ConfigKind::ServiceResolver, service) {
        Some(ConfigEntry::ServiceResolver(r)) => Some(r),
        _ => None,
    }
}

fn router<'v>(view: &'v RegistryView, service: &str) -> Option<&'v ServiceRouter> {
    match view.config_entry(ConfigKind::ServiceRouter, service) {
        Some(ConfigEntry::ServiceRouter(r)) => Some(r),
        _ => None,
    }
}

fn splitter<'v>(view: &'v RegistryView, service: &str) -> Option<&'v ServiceSplitter> {
    match view.config_entry(ConfigKind::ServiceSplitter, service) {
        Some(ConfigEntry::ServiceSplitter(s)) => Some(s),
        _ => None,
    }
}
