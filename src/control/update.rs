//! The messages producers (file watcher, SIGHUP, Kubernetes discovery, cluster routes)
//! send to the publisher. Producers only say what changed; the publisher alone decides
//! what it means, so this type lives apart from both and neither side imports the other.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::model::{Endpoint, KubernetesService, Name};
use crate::control::sources::cluster_routes::translate::ClusterRoutes;

#[derive(Debug, Clone)]
pub enum Update {
    /// Re-read the config file; `cause` is logged. Unless `force`d, a reload whose
    /// config text and TLS files are byte for byte what was last seen does nothing.
    Reload { cause: &'static str, force: bool },
    /// New members for a discovered upstream, as seen by the watch of `source`. The
    /// source travels with the members: an upstream re-pointed to another Service must
    /// never be given the old Service's pods by a message that was already queued.
    Endpoints {
        upstream: Name,
        source: KubernetesService,
        endpoints: Vec<Endpoint>,
    },
    /// Everything the cluster's Gateway API and Ingress objects now say: it replaces the
    /// previous cluster routes whole; the file is not re-read.
    ClusterRoutes(Arc<ClusterRoutes>),
}

/// Everything queued when the publisher gets to work, reduced to what must be done:
/// the newest members per upstream, then at most one reload. Reading the queue dry this
/// way merges a burst into one reload without ever dropping a message of another kind.
#[derive(Debug, Default)]
pub struct Batch {
    /// Newest members per upstream, in the order upstreams were first seen.
    pub endpoints: Vec<(Name, KubernetesService, Vec<Endpoint>)>,
    /// `(first cause, any forced)`.
    pub reload: Option<(&'static str, bool)>,
    /// The newest cluster routes; each message is complete, so older ones are moot.
    pub cluster: Option<Arc<ClusterRoutes>>,
    positions: HashMap<Name, usize>,
}

impl Batch {
    pub fn add(&mut self, update: Update) {
        match update {
            Update::Reload { cause, force } => {
                let (_, forced) = self.reload.get_or_insert((cause, false));
                *forced |= force;
            }
            Update::ClusterRoutes(routes) => self.cluster = Some(routes),
            Update::Endpoints {
                upstream,
                source,
                endpoints,
            } => match self.positions.get(&upstream) {
                Some(&i) => self.endpoints[i] = (upstream, source, endpoints),
                None => {
                    self.positions
                        .insert(upstream.clone(), self.endpoints.len());
                    self.endpoints.push((upstream, source, endpoints));
                }
            },
        }
    }

    /// Takes the first update and everything queued behind it.
    pub fn drain(first: Update, queue: &mut tokio::sync::mpsc::Receiver<Update>) -> Self {
        let mut batch = Self::default();
        batch.add(first);
        while let Ok(more) = queue.try_recv() {
            batch.add(more);
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{DiscoveryApi, ServicePort};

    fn service(name: &str) -> KubernetesService {
        KubernetesService {
            namespace: "default".into(),
            service: name.into(),
            port: ServicePort::Number(80),
            api: DiscoveryApi::EndpointSlices,
        }
    }

    fn members(port: u16) -> Vec<Endpoint> {
        vec![Endpoint {
            address: ([127, 0, 0, 1], port).into(),
            weight: 1,
        }]
    }

    #[tokio::test]
    async fn endpoints_queued_behind_a_reload_are_kept_and_reloads_merge() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        for update in [
            Update::Reload {
                cause: "file change",
                force: false,
            },
            Update::Endpoints {
                upstream: "api".into(),
                source: service("api"),
                endpoints: members(1),
            },
            Update::Reload {
                cause: "SIGHUP",
                force: true,
            },
            Update::Endpoints {
                upstream: "web".into(),
                source: service("web"),
                endpoints: members(2),
            },
            Update::Endpoints {
                upstream: "api".into(),
                source: service("api"),
                endpoints: members(3),
            },
        ] {
            tx.send(update).await.expect("queued");
        }
        let first = rx.recv().await.expect("first");
        let batch = Batch::drain(first, &mut rx);
        assert_eq!(batch.reload, Some(("file change", true)));
        let got: Vec<(String, u16)> = batch
            .endpoints
            .iter()
            .map(|(u, _, e)| (u.to_string(), e[0].address.port()))
            .collect();
        assert_eq!(got, vec![("api".into(), 3), ("web".into(), 2)]);
        assert!(rx.try_recv().is_err(), "the queue is read dry");
    }
}
