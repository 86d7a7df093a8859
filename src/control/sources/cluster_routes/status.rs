//! Status written back to the objects: HTTPRoute parents' `Accepted`
//! and `ResolvedRefs`, Gateway `Accepted` and `Programmed`, Ingress
//! `status.loadBalancer`. A patch on the status subresource, so the narrowest RBAC
//! (`patch` on `httproutes/status`, `gateways/status`, `ingresses/status`) suffices. A refused write is logged and changes nothing else:
//! routing never waits for, or depends on, status.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::Ingress;

use kube::api::{Patch, PatchParams};
use kube::core::ApiResource;
use kube::{Api, Client};
use serde_json::{json, Value};

use super::objects::{self, Gateway, HttpRoute, GATEWAY_GROUP};
use super::translate::{ClusterObjects, Condition, Key, Status};
use crate::config::model::Listener;

/// The `controllerName` a GatewayClass names to be served by edgegate
/// (`packaging/kubernetes/gatewayclass.yaml`).
pub const CONTROLLER_NAME: &str = "edgegate.dev/gateway-controller";

pub struct StatusWriter {
    client: Client,
    /// The addresses Ingresses report (`status.loadBalancer.ingress[].ip`).
    addresses: Vec<IpAddr>,
    /// What was last attempted per object, without timestamps: an unchanged status is
    /// not written again, and a refused one is not retried (and logged) on every change.
    attempted: BTreeMap<(&'static str, Key), Value>,
}

impl StatusWriter {
    pub fn new(client: Client, addresses: Vec<IpAddr>) -> Self {
        Self {
            client,
            addresses,
            attempted: BTreeMap::new(),
        }
    }

    pub async fn write(&mut self, objects: &ClusterObjects, status: &Status) {
        for (key, route) in &status.routes {
            if !objects.routes.contains_key(key) {
                continue;
            }
            let parents: Vec<Value> = route
                .parents
                .iter()
                .map(|(parent, conditions)| {
                    json!({
                        "parentRef": {
                            "group": parent.group.clone().unwrap_or_else(|| GATEWAY_GROUP.to_string()),
                            "kind": parent.kind.clone().unwrap_or_else(|| "Gateway".to_string()),
                            "namespace": parent.namespace,
                            "name": parent.name,
                            "sectionName": parent.section_name,
                            "port": parent.port,
                        },
                        "controllerName": CONTROLLER_NAME,
                        "conditions": conditions.iter().map(condition_json).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let body = json!({"parents": parents});
            self.patch::<HttpRoute>("HTTPRoute", objects::http_route_resource(), key, body)
                .await;
        }
        for (key, gateway) in &status.gateways {
            let listeners: Vec<Value> = gateway
                .listeners
                .iter()
                .map(|(name, attached, conditions)| {
                    json!({
                        "name": name,
                        "attachedRoutes": attached,
                        "supportedKinds": [{"group": GATEWAY_GROUP, "kind": "HTTPRoute"}],
                        "conditions": conditions.iter().map(condition_json).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let body = json!({
                "conditions": gateway.conditions.iter().map(condition_json).collect::<Vec<_>>(),
                "listeners": listeners,
            });
            self.patch::<Gateway>("Gateway", objects::gateway_resource(), key, body)
                .await;
        }
        if self.addresses.is_empty() {
            return; // nothing true to say: listeners on every address and no POD_IP
        }
        let ips: Vec<Value> = self
            .addresses
            .iter()
            .map(|ip| json!({"ip": ip.to_string()}))
            .collect();
        for key in &status.ingresses {
            let body = json!({"loadBalancer": {"ingress": ips}});
            let id = ("Ingress", key.clone());
            if self.attempted.get(&id) == Some(&body) {
                continue;
            }
            let api: Api<Ingress> = Api::namespaced(self.client.clone(), &key.0);
            let patch = Patch::Merge(json!({ "status": body }));
            let result = api
                .patch_status(&key.1, &PatchParams::default(), &patch)
                .await;
            log_outcome("Ingress", key, result.map(|_| ()));
            self.attempted.insert(id, body);
        }
    }

    async fn patch<K>(&mut self, kind: &'static str, resource: ApiResource, key: &Key, body: Value)
    where
        K: kube::Resource<DynamicType = ApiResource, Scope = kube::core::DynamicResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let id = (kind, key.clone());
        if self.attempted.get(&id) == Some(&body) {
            return;
        }
        let mut stamped = body.clone();
        stamp(&mut stamped);
        let api: Api<K> = Api::namespaced_with(self.client.clone(), &key.0, &resource);
        let patch = Patch::Merge(json!({ "status": stamped }));
        let result = api
            .patch_status(&key.1, &PatchParams::default(), &patch)
            .await;
        log_outcome(kind, key, result.map(|_| ()));
        self.attempted.insert(id, body);
    }
}

fn condition_json(c: &Condition) -> Value {
    json!({
        "type": c.kind,
        "status": if c.status { "True" } else { "False" },
        "reason": c.reason,
        "message": c.message,
        "observedGeneration": c.observed_generation,
    })
}

/// Conditions need a `lastTransitionTime`; it is added only when writing, so that the
/// comparison with what was last written ignores it.
fn stamp(value: &mut Value) {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    fn visit(value: &mut Value, now: &str) {
        match value {
            Value::Object(map) => {
                if map.contains_key("type") && map.contains_key("reason") {
                    map.insert("lastTransitionTime".into(), Value::String(now.to_string()));
                }
                for v in map.values_mut() {
                    visit(v, now);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| visit(v, now)),
            _ => {}
        }
    }
    visit(value, &now);
}

fn log_outcome(kind: &str, key: &Key, result: Result<(), kube::Error>) {
    match result {
        Ok(()) => tracing::debug!(kind, namespace = %key.0, name = %key.1, "status written"),
        Err(e) => tracing::warn!(
            kind,
            namespace = %key.0,
            name = %key.1,
            error = %e,
            "cannot write status (RBAC needs patch on the status subresource); routing is unaffected"
        ),
    }
}

/// The addresses an Ingress reports: the listeners' own when they name one, else the
/// pod's (`POD_IP`, from the downward API), else none. Loopback is reported only when
/// every named address is loopback (a test, or a sidecar).
pub fn ingress_addresses(listeners: &[Listener], pod_ip: Option<&str>) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = listeners
        .iter()
        .map(|l| l.address.ip())
        .filter(|ip| !ip.is_unspecified())
        .collect();
    ips.sort();
    ips.dedup();
    if ips.iter().any(|ip| !ip.is_loopback()) {
        ips.retain(|ip| !ip.is_loopback());
    }
    if ips.is_empty() || listeners.iter().any(|l| l.address.ip().is_unspecified()) {
        if let Some(pod) = pod_ip.and_then(|p| p.parse().ok()) {
            ips = vec![pod];
        }
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(address: &str) -> Listener {
        Listener::new("l", address.parse().expect("address"))
    }

    #[test]
    fn ingress_addresses_prefer_named_listener_addresses_then_the_pod() {
        let named = [listener("10.0.0.5:80"), listener("127.0.0.1:81")];
        assert_eq!(
            ingress_addresses(&named, None),
            vec![IpAddr::from([10, 0, 0, 5])]
        );
        let any = [listener("0.0.0.0:80")];
        assert_eq!(ingress_addresses(&any, None), Vec::<IpAddr>::new());
        assert_eq!(
            ingress_addresses(&any, Some("10.1.2.3")),
            vec![IpAddr::from([10, 1, 2, 3])]
        );
        let local = [listener("127.0.0.1:80")];
        assert_eq!(
            ingress_addresses(&local, None),
            vec![IpAddr::from([127, 0, 0, 1])]
        );
    }
}
