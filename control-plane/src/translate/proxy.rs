//! One proxy's translation: its public listener and local app, then each upstream's chain,
//! collected by name and checked before they become a snapshot.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use mesh_proto::consul::{ServiceEntry, Upstream};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::chain::{self, DEFAULT_CONNECT_TIMEOUT, Destination, Resolved, Target};
use super::endpoints::{self, Sidecars};
use super::filter::{Filter, FilterError};
use super::listeners::{self, Handler};
use super::{
    LOCAL_APP_CLUSTER, PUBLIC_LISTENER, TranslateError, check_resources, clusters, ip, local_ip,
    protocol, routes, service_defaults, upstream_listener_name,
};
use crate::model::RegistryView;
use crate::snapshot::Snapshot;

pub(super) struct Translator<'v> {
    view: &'v RegistryView,
    sidecars: Sidecars<'v>,
    /// Endpoints depend only on the view and the target, so proxies sharing an upstream share
    /// the work (and a bad subset filter is parsed once).
    assignments: RefCell<HashMap<Target, Result<ClusterLoadAssignment, FilterError>>>,
}

impl<'v> Translator<'v> {
    pub(super) fn new(view: &'v RegistryView) -> Translator<'v> {
        Translator {
            view,
            sidecars: Sidecars::index(view),
            assignments: RefCell::default(),
        }
    }

    /// The snapshot of `proxy` (a connect-proxy health entry).
    pub(super) fn snapshot(&self, entry: &ServiceEntry) -> Result<Snapshot, TranslateError> {
        let id = entry.service.id.as_str();
        let missing = |field: &str| TranslateError::MissingField {
            proxy: id.to_string(),
            field: field.to_string(),
        };
        let proxy = entry
            .service
            .proxy
            .as_ref()
            .ok_or_else(|| missing("Proxy"))?;
        let local_service = proxy.destination_service_name.as_str();
        if local_service.is_empty() {
            return Err(missing("Proxy.DestinationServiceName"));
        }
        if entry.service.port == 0 {
            return Err(missing("Port"));
        }
        let mut out = Resources::new(id, &entry.node.datacenter);

        let public_address = if entry.service.address.is_empty() {
            "0.0.0.0".to_string()
        } else {
            ip(id, "Address", &entry.service.address)?
        };
        let local_address = local_ip(
            id,
            "Proxy.LocalServiceAddress",
            &proxy.local_service_address,
        )?;
        let local_port = match proxy.local_service_port {
            0 => self
                .local_instance_port(entry)
                .ok_or_else(|| missing("Proxy.LocalServicePort"))?,
            port => port,
        };
        let local_protocol = protocol(self.view, local_service);
        let defaults = service_defaults(self.view, local_service);
        let ms = |v: u32| (v > 0).then(|| Duration::from_millis(u64::from(v)));
        let connect_timeout = defaults
            .and_then(|d| ms(d.local_connect_timeout_ms))
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        out.cluster(clusters::local_app(
            &local_address,
            local_port,
            connect_timeout,
            local_protocol,
        ))?;
        let handler = if local_protocol.is_l7() {
            let timeout = defaults.and_then(|d| ms(d.local_request_timeout_ms));
            Handler::HttpInline(Box::new(routes::local_app_config(
                PUBLIC_LISTENER,
                LOCAL_APP_CLUSTER,
                timeout,
            )))
        } else {
            Handler::Tcp(LOCAL_APP_CLUSTER.to_string())
        };
        out.listener(listeners::listener(
            PUBLIC_LISTENER,
            &public_address,
            entry.service.port,
            TrafficDirection::Inbound,
            PUBLIC_LISTENER,
            handler,
        ))?;

        for (i, upstream) in proxy.upstreams.iter().enumerate() {
            self.upstream(&mut out, i, upstream)?;
        }
        out.finish()
    }

    /// Consul fills `LocalServicePort` from the service the sidecar fronts; do the same for
    /// registrations that left it out.
    fn local_instance_port(&self, proxy: &ServiceEntry) -> Option<u16> {
        let p = proxy.service.proxy.as_ref()?;
        self.view
            .instances(&p.destination_service_name)
            .iter()
            .filter(|e| e.node.node == proxy.node.node && e.service.kind.is_empty())
            .find(|e| {
                p.destination_service_id.is_empty() || e.service.id == p.destination_service_id
            })
            .map(|e| e.service.port)
            .filter(|port| *port != 0)
    }

    fn upstream(
        &self,
        out: &mut Resources<'_>,
        index: usize,
        upstream: &Upstream,
    ) -> Result<(), TranslateError> {
        let proxy = out.proxy;
        let name = upstream.destination_name.as_str();
        if !upstream.destination_type.is_empty() && upstream.destination_type != "service" {
            tracing::warn!(%proxy, upstream = %name, kind = %upstream.destination_type, "skipping an upstream of an unsupported destination type");
            return Ok(());
        }
        let field = |f: &str| format!("Proxy.Upstreams[{index}].{f}");
        if !upstream.datacenter.is_empty() && upstream.datacenter != out.datacenter {
            return Err(TranslateError::OtherDatacenter {
                proxy: proxy.to_string(),
                field: field("Datacenter"),
                datacenter: upstream.datacenter.clone(),
                local: out.datacenter.to_string(),
            });
        }
        if name.is_empty() {
            return Err(TranslateError::MissingField {
                proxy: proxy.to_string(),
                field: field("DestinationName"),
            });
        }
        if upstream.local_bind_port == 0 {
            return Err(TranslateError::MissingField {
                proxy: proxy.to_string(),
                field: field("LocalBindPort"),
            });
        }
        let bind = local_ip(
            proxy,
            &field("LocalBindAddress"),
            &upstream.local_bind_address,
        )?;
        let upstream_protocol = protocol(self.view, name);
        let chain = chain::compile(self.view, name, upstream_protocol, out.datacenter).map_err(
            |source| TranslateError::Chain {
                proxy: proxy.to_string(),
                upstream: name.to_string(),
                source,
            },
        )?;
        for (target, resolved) in &chain.targets {
            let target_protocol = protocol(self.view, &target.service);
            let name = target.cluster_name();
            if resolved.failover.is_empty() {
                out.cluster(clusters::target_cluster(&name, resolved, target_protocol))?;
                out.endpoints(self.assignment(proxy, target, resolved)?)?;
                continue;
            }
            // Like Consul: an aggregate cluster under the target's name over one EDS cluster
            // per target in failover order (the target first), each with the connect timeout
            // and load balancer of the target's resolver and its own endpoints.
            let mut children = Vec::with_capacity(resolved.failover.len() + 1);
            let failover = resolved.failover.iter().map(|f| {
                let backup = Resolved {
                    subset: f.subset.clone(),
                    ..resolved.clone()
                };
                (&f.target, backup)
            });
            for (i, (child_target, child)) in std::iter::once((target, resolved.clone()))
                .chain(failover)
                .enumerate()
            {
                let child_name = clusters::failover_cluster_name(i, &name);
                out.cluster(clusters::target_cluster(
                    &child_name,
                    &child,
                    target_protocol,
                ))?;
                let mut endpoints = self.assignment(proxy, child_target, &child)?;
                endpoints.cluster_name.clone_from(&child_name);
                out.endpoints(endpoints)?;
                children.push(child_name);
            }
            out.cluster(clusters::aggregate_cluster(
                &name,
                resolved.connect_timeout,
                children,
            ))?;
        }
        let handler = if upstream_protocol.is_l7() {
            out.route(routes::route_config(name, &chain))?;
            Handler::HttpRds(name.to_string())
        } else {
            let cluster = match &chain.default.destination {
                Destination::Target(t) => t.cluster_name(),
                // tcp chains have no splitters (they are L7 only); stay total anyway.
                Destination::Split(splits) => splits
                    .iter()
                    .max_by_key(|s| s.weight)
                    .map(|s| s.target.cluster_name())
                    .unwrap_or_default(),
            };
            Handler::Tcp(cluster)
        };
        out.listener(listeners::listener(
            &upstream_listener_name(name, &bind, upstream.local_bind_port),
            &bind,
            upstream.local_bind_port,
            TrafficDirection::Outbound,
            &format!("upstream.{name}"),
            handler,
        ))
    }

    fn assignment(
        &self,
        proxy: &str,
        target: &Target,
        resolved: &Resolved,
    ) -> Result<ClusterLoadAssignment, TranslateError> {
        let mut cache = self.assignments.borrow_mut();
        let cached = cache.entry(target.clone()).or_insert_with(|| {
            Filter::parse(&resolved.subset.filter).map(|filter| {
                endpoints::load_assignment(self.view, &self.sidecars, target, resolved, &filter)
            })
        });
        cached.clone().map_err(|e| TranslateError::SubsetFilter {
            proxy: proxy.to_string(),
            service: target.service.clone(),
            subset: target.subset.clone(),
            filter: resolved.subset.filter.clone(),
            reason: e.to_string(),
        })
    }
}

/// One proxy's resources by name. Two upstreams reaching the same target produce identical
/// resources, which are kept once; two different ones under one name are an error.
struct Resources<'p> {
    proxy: &'p str,
    /// The sidecar's datacenter, the only one the mesh spans.
    datacenter: &'p str,
    clusters: BTreeMap<String, Cluster>,
    endpoints: BTreeMap<String, ClusterLoadAssignment>,
    listeners: BTreeMap<String, Listener>,
    routes: BTreeMap<String, RouteConfiguration>,
}

impl<'p> Resources<'p> {
    fn new(proxy: &'p str, datacenter: &'p str) -> Resources<'p> {
        Resources {
            proxy,
            datacenter,
            clusters: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            listeners: BTreeMap::new(),
            routes: BTreeMap::new(),
        }
    }

    fn put<T: PartialEq>(
        proxy: &str,
        map: &mut BTreeMap<String, T>,
        kind: &'static str,
        name: String,
        value: T,
    ) -> Result<(), TranslateError> {
        match map.get(&name) {
            Some(existing) if *existing != value => Err(TranslateError::NameCollision {
                proxy: proxy.to_string(),
                kind,
                name,
            }),
            Some(_) => Ok(()),
            None => {
                map.insert(name, value);
                Ok(())
            }
        }
    }

    fn cluster(&mut self, c: Cluster) -> Result<(), TranslateError> {
        Self::put(self.proxy, &mut self.clusters, "cluster", c.name.clone(), c)
    }

    fn endpoints(&mut self, e: ClusterLoadAssignment) -> Result<(), TranslateError> {
        let name = e.cluster_name.clone();
        Self::put(
            self.proxy,
            &mut self.endpoints,
            "endpoint assignment",
            name,
            e,
        )
    }

    fn listener(&mut self, l: Listener) -> Result<(), TranslateError> {
        Self::put(
            self.proxy,
            &mut self.listeners,
            "listener",
            l.name.clone(),
            l,
        )
    }

    fn route(&mut self, r: RouteConfiguration) -> Result<(), TranslateError> {
        Self::put(
            self.proxy,
            &mut self.routes,
            "route configuration",
            r.name.clone(),
            r,
        )
    }

    fn finish(self) -> Result<Snapshot, TranslateError> {
        let clusters: Vec<_> = self.clusters.into_values().collect();
        let endpoints: Vec<_> = self.endpoints.into_values().collect();
        let listeners: Vec<_> = self.listeners.into_values().collect();
        let routes: Vec<_> = self.routes.into_values().collect();
        let problems = check_resources(&clusters, &endpoints, &listeners, &routes);
        if !problems.is_empty() {
            return Err(TranslateError::Inconsistent {
                proxy: self.proxy.to_string(),
                problems,
            });
        }
        Ok(Snapshot::new(clusters, endpoints, listeners, routes))
    }
}
