//! Status written back to the objects (spec section 10): HTTPRoute parents' `Accepted`
//! and `ResolvedRefs`, Gateway `Accepted` and `Programmed`. A patch on the status
//! subresource, so the narrowest RBAC (`patch` on `httproutes/status`,
//! `gateways/status`) suffices. A refused write is logged and changes nothing else:
//! routing never waits for, or depends on, status.

use std::collections::BTreeMap;

use kube::api::{Patch, PatchParams};
use kube::core::ApiResource;
use kube::{Api, Client};
use serde_json::{json, Value};

use super::objects::{self, Gateway, HttpRoute, GATEWAY_GROUP};
use super::translate::{ClusterObjects, Condition, Key, Status};

/// The `controllerName` a GatewayClass names to be served by edgegate
/// (`packaging/kubernetes/gatewayclass.yaml`).
pub const CONTROLLER_NAME: &str = "edgegate.dev/gateway-controller";

pub struct StatusWriter {
    client: Client,
    /// What was last attempted per object, without timestamps: an unchanged status is
    /// not written again, and a refused one is not retried (and logged) on every change.
    attempted: BTreeMap<(&'static str, Key), Value>,
}

impl StatusWriter {
    pub fn new(client: Client) -> Self {
        Self {
            client,
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
        match api
            .patch_status(&key.1, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => tracing::debug!(kind, namespace = %key.0, name = %key.1, "status written"),
            Err(e) => tracing::warn!(
                kind,
                namespace = %key.0,
                name = %key.1,
                error = %e,
                "cannot write status (RBAC needs patch on the status subresource); routing is unaffected"
            ),
        }
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
