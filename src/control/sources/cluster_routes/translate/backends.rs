//! Service backends -> upstreams: one upstream per (Service, port), however many routes
//! name it, so discovery keeps one EndpointSlice watch per Service.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ClusterObjects;
use crate::config::model::{
    Balance, DiscoveryApi, HashOn, KubernetesService, Members, Name, ServicePort, Upstream,
};

/// Why a backend did not resolve, with the Gateway API reason and a message a person can
/// act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub reason: &'static str,
    pub message: String,
}

pub struct Backends<'a> {
    objects: &'a ClusterObjects,
    upstreams: BTreeMap<Name, Upstream>,
    /// Services looked up and namespaces whose ReferenceGrants were consulted, found or
    /// not: a change to any of them changes what this translation gives.
    services_read: Vec<super::Key>,
    grants_read: Vec<String>,
}

impl<'a> Backends<'a> {
    pub fn new(objects: &'a ClusterObjects) -> Self {
        Self {
            objects,
            upstreams: BTreeMap::new(),
            services_read: Vec::new(),
            grants_read: Vec::new(),
        }
    }

    /// The upstream for a Service port, created on first use. The Service must exist and
    /// have the port: a typo answers 500 and says so in status, rather than 503 forever.
    pub fn service(
        &mut self,
        namespace: &str,
        service: &str,
        port: ServicePort,
    ) -> Result<Name, Unresolved> {
        let key = (namespace.to_string(), service.to_string());
        let found = self.objects.services.get(&key);
        self.services_read.push(key);
        let Some(ports) = found else {
            return Err(Unresolved {
                reason: "BackendNotFound",
                message: format!("service {namespace}/{service} not found"),
            });
        };
        let found = ports.0.iter().any(|(name, number)| match &port {
            ServicePort::Number(n) => i32::from(*n) == *number,
            ServicePort::Name(wanted) => name == wanted,
        });
        let port_text = match &port {
            ServicePort::Number(n) => n.to_string(),
            ServicePort::Name(name) => name.clone(),
        };
        if !found {
            return Err(Unresolved {
                reason: "BackendNotFound",
                message: format!("service {namespace}/{service} has no port {port_text}"),
            });
        }
        let name: Name = format!("service/{namespace}/{service}/{port_text}").into();
        self.upstreams
            .entry(name.clone())
            .or_insert_with(|| Upstream {
                name: name.clone(),
                members: Members::Kubernetes(KubernetesService {
                    namespace: namespace.to_string(),
                    service: service.to_string(),
                    port,
                    api: DiscoveryApi::EndpointSlices,
                }),
                // The file's defaults for an upstream written with only its members.
                balance: Balance::RoundRobin,
                connect_timeout: Duration::from_secs(5),
                read_timeout: Duration::from_secs(60),
                write_timeout: Duration::from_secs(60),
                idle_timeout: Duration::from_secs(60),
                retries: 0,
                http2: false,
                tls: None,
                health_check: None,
                passive_health: None,
                retry_budget: Upstream::DEFAULT_RETRY_BUDGET,
                hash_on: HashOn::ClientAddress,
                affinity: None,
                send_proxy_protocol: None,
            });
        Ok(name)
    }

    /// A copy of the upstream `base` (from [`Backends::service`]) with settings of its own,
    /// named `BASE@owner`: one object's annotations never reach another's routes. It
    /// shares the base's discovery watch.
    pub fn tuned(&mut self, base: &Name, owner: &str, tune: impl FnOnce(&mut Upstream)) -> Name {
        let name: Name = format!("{base}@{owner}").into();
        if let Some(base) = self.upstreams.get(base) {
            let mut upstream = base.clone();
            upstream.name = name.clone();
            tune(&mut upstream);
            self.upstreams.insert(name.clone(), upstream);
        }
        name
    }

    /// Whether a ReferenceGrant in `to_namespace` lets `from_kind` objects (of the
    /// Gateway API group) in `from_namespace` refer to the core `to_kind` named `to_name`.
    pub fn granted(
        &mut self,
        from_kind: &str,
        from_namespace: &str,
        to_namespace: &str,
        to_kind: &str,
        to_name: &str,
    ) -> bool {
        if !self.grants_read.iter().any(|n| n == to_namespace) {
            self.grants_read.push(to_namespace.to_string());
        }
        self.objects
            .grants
            .iter()
            .filter(|((namespace, _), _)| namespace == to_namespace)
            .any(|(_, grant)| {
                grant.spec.from.iter().any(|f| {
                    f.group == super::super::objects::GATEWAY_GROUP
                        && f.kind == from_kind
                        && f.namespace == from_namespace
                }) && grant.spec.to.iter().any(|t| {
                    t.group.is_empty()
                        && t.kind == to_kind
                        && t.name.as_deref().is_none_or(|n| n == to_name)
                })
            })
    }

    /// The upstreams created, in name order, and what was read: Services, and the
    /// namespaces whose ReferenceGrants were consulted.
    pub fn into_parts(self) -> (Vec<Upstream>, Vec<super::Key>, Vec<String>) {
        (
            self.upstreams.into_values().collect(),
            self.services_read,
            self.grants_read,
        )
    }
}
