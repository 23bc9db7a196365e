//! A proxy's complete xDS configuration at one moment, with the versions the protocol needs.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

/// The four resource types, in the order a server pushes them ("make before break": clusters,
/// then their endpoints, then listeners, then the routes listeners name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Cluster = 0,
    Endpoint = 1,
    Listener = 2,
    Route = 3,
}

impl ResourceType {
    pub const ALL: [ResourceType; 4] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
    ];

    pub fn type_url(self) -> String {
        match self {
            ResourceType::Cluster => Cluster::type_url(),
            ResourceType::Endpoint => ClusterLoadAssignment::type_url(),
            ResourceType::Listener => Listener::type_url(),
            ResourceType::Route => RouteConfiguration::type_url(),
        }
    }

    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Short name for status output: CDS, EDS, LDS, RDS.
    pub fn short(self) -> &'static str {
        match self {
            ResourceType::Cluster => "CDS",
            ResourceType::Endpoint => "EDS",
            ResourceType::Listener => "LDS",
            ResourceType::Route => "RDS",
        }
    }

    /// LDS and CDS are subscribed by wildcard; EDS and RDS by name.
    pub fn is_wildcard_type(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }
}

/// One encoded resource and its version (a hash of its encoding).
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub name: String,
    pub version: String,
    pub body: Any,
}

impl Resource {
    pub fn new<T: Message + Name>(name: String, message: &T) -> Resource {
        let body = Any {
            type_url: T::type_url(),
            value: message.encode_to_vec(),
        };
        let version = hash_hex(&body.value);
        Resource {
            name,
            version,
            body,
        }
    }
}

fn hash_hex(bytes: &[u8]) -> String {
    // SipHash with fixed keys: the same bytes give the same version in every process of the
    // same build, which is all a version needs.
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Every resource one proxy should have, per type, with a version per type.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    resources: [BTreeMap<String, Resource>; 4],
    versions: [String; 4],
    /// EDS clusters: cluster name -> the name of the endpoint resource it takes.
    eds_names: BTreeMap<String, String>,
}

impl Snapshot {
    pub fn new(
        clusters: Vec<Cluster>,
        endpoints: Vec<ClusterLoadAssignment>,
        listeners: Vec<Listener>,
        routes: Vec<RouteConfiguration>,
    ) -> Snapshot {
        let eds_names = clusters
            .iter()
            .filter(|c| {
                c.cluster_discovery_type
                    == Some(cluster::ClusterDiscoveryType::Type(
                        cluster::DiscoveryType::Eds as i32,
                    ))
            })
            .map(|c| {
                let service = c
                    .eds_cluster_config
                    .as_ref()
                    .map(|e| e.service_name.as_str())
                    .filter(|s| !s.is_empty())
                    .unwrap_or(&c.name);
                (c.name.clone(), service.to_string())
            })
            .collect();
        let mut snap = Snapshot {
            eds_names,
            ..Snapshot::default()
        };
        snap.resources[0] = clusters
            .iter()
            .map(|c| (c.name.clone(), Resource::new(c.name.clone(), c)))
            .collect();
        snap.resources[1] = endpoints
            .iter()
            .map(|e| {
                (
                    e.cluster_name.clone(),
                    Resource::new(e.cluster_name.clone(), e),
                )
            })
            .collect();
        snap.resources[2] = listeners
            .iter()
            .map(|l| (l.name.clone(), Resource::new(l.name.clone(), l)))
            .collect();
        snap.resources[3] = routes
            .iter()
            .map(|r| (r.name.clone(), Resource::new(r.name.clone(), r)))
            .collect();
        for t in ResourceType::ALL {
            let mut h = std::hash::DefaultHasher::new();
            for r in snap.resources[t as usize].values() {
                r.name.hash(&mut h);
                r.version.hash(&mut h);
            }
            snap.versions[t as usize] = format!("{:016x}", h.finish());
        }
        snap
    }

    /// The configuration of a proxy the registry does not know (yet): valid and empty.
    pub fn empty() -> Snapshot {
        Snapshot::new(Vec::new(), Vec::new(), Vec::new(), Vec::new())
    }

    pub fn resources(&self, t: ResourceType) -> &BTreeMap<String, Resource> {
        &self.resources[t as usize]
    }

    pub fn version(&self, t: ResourceType) -> &str {
        &self.versions[t as usize]
    }

    /// The endpoint resource EDS cluster `cluster` takes; `None` for other clusters.
    pub fn eds_name(&self, cluster: &str) -> Option<&str> {
        self.eds_names.get(cluster).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_content() {
        let a = Snapshot::new(
            vec![Cluster {
                name: "a".into(),
                ..Default::default()
            }],
            vec![],
            vec![],
            vec![],
        );
        let a2 = Snapshot::new(
            vec![Cluster {
                name: "a".into(),
                ..Default::default()
            }],
            vec![],
            vec![],
            vec![],
        );
        let b = Snapshot::new(
            vec![Cluster {
                name: "b".into(),
                ..Default::default()
            }],
            vec![],
            vec![],
            vec![],
        );
        assert_eq!(
            a.version(ResourceType::Cluster),
            a2.version(ResourceType::Cluster)
        );
        assert_ne!(
            a.version(ResourceType::Cluster),
            b.version(ResourceType::Cluster)
        );
        assert_eq!(
            a.version(ResourceType::Listener),
            b.version(ResourceType::Listener)
        );
        assert_eq!(
            a.resources(ResourceType::Cluster)["a"].body.type_url,
            ResourceType::Cluster.type_url()
        );
    }

    #[test]
    fn type_urls_round_trip() {
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_type_url(&t.type_url()), Some(t));
        }
        assert_eq!(
            ResourceType::Cluster.type_url(),
            "type.googleapis.com/envoy.config.cluster.v3.Cluster"
        );
    }
}
