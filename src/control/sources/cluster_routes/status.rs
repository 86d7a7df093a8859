//! Status written back to the objects: HTTPRoute, TLSRoute and TCPRoute parents'
//! `Accepted` and `ResolvedRefs`, Gateway `Accepted` and `Programmed`, Ingress
//! `status.loadBalancer`. A patch on the status subresource, so the narrowest RBAC
//! (`get` and `patch` on `httproutes/status`, `tlsroutes/status` and `tcproutes/status`,
//! `patch` on `gateways/status` and `ingresses/status`) suffices. A refused write is
//! logged and changes nothing else: routing never waits for, or depends on, status. A
//! write that fails for a passing reason is retried with backoff by the caller.
//!
//! A route can be shared with other implementations: its `status.parents` holds one
//! entry per (parent, controller), and edgegate writes only its own.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value};

use super::objects::{self, Gateway, HttpRouteStatus, GATEWAY_GROUP};
use super::translate::{ClusterObjects, Condition, Key, RouteStatus, Status};
use crate::config::model::Listener;

/// The `controllerName` a GatewayClass names to be served by edgegate
/// (`packaging/kubernetes/gatewayclass.yaml`).
pub const CONTROLLER_NAME: &str = "edgegate.dev/gateway-controller";

pub struct StatusWriter {
    client: Client,
    /// The addresses Ingresses report (`status.loadBalancer.ingress[].ip`).
    addresses: Vec<IpAddr>,
    /// What was last written (or refused for good) per object, without timestamps: an
    /// unchanged status is not written again, and a refused one is not retried (and
    /// logged) on every change. A write that failed for a passing reason is not here,
    /// so the next pass tries it again. Objects that are gone leave it.
    attempted: BTreeMap<(&'static str, Key), Value>,
    /// The route status each `attempted` HTTPRoute body was made from. Translation
    /// keeps an unchanged route's status as the same allocation, so after an edit the
    /// thousand routes it did not touch are passed over without building their bodies.
    settled: BTreeMap<Key, Arc<RouteStatus>>,
}

/// How one status write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Written,
    /// Refused for a reason that will not pass by itself (RBAC, validation): logged,
    /// not retried until the status changes.
    Refused,
    /// Failed for a passing reason (a 5xx, 429, a conflict, a timeout, no connection):
    /// retried with backoff.
    Retry,
}

/// How many times a route status is re-read and rewritten when another writer got in
/// between (409 Conflict) before the pass leaves it to the next retry.
const CONFLICT_ATTEMPTS: usize = 3;

impl StatusWriter {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            addresses: Vec::new(),
            attempted: BTreeMap::new(),
            settled: BTreeMap::new(),
        }
    }

    /// Where Ingresses are reached now (the listeners can move with a reload).
    pub fn set_addresses(&mut self, addresses: Vec<IpAddr>) {
        self.addresses = addresses;
    }

    /// Writes every status that changed since it was last written. Returns whether some
    /// write failed for a passing reason (the caller calls again after a backoff).
    pub async fn write(&mut self, objects: &ClusterObjects, status: &Status) -> bool {
        let mut retry = false;
        let empty = RouteStatus::default();
        for (key, route) in &objects.routes {
            let translated = status.routes.get(key);
            if let (Some(now), Some(then)) = (translated, self.settled.get(key)) {
                if Arc::ptr_eq(now, then) {
                    continue; // the very status last written (or refused for good)
                }
            }
            let ours = translated.map_or(&empty, |s| &**s);
            let has_ours = route.status.as_ref().is_some_and(|s| {
                s.parents
                    .iter()
                    .any(|p| p["controllerName"] == CONTROLLER_NAME)
            });
            let id = ("HTTPRoute", key.clone());
            if ours.parents.is_empty() && !has_ours && !self.attempted.contains_key(&id) {
                continue; // never ours
            }
            let body = parents_json(ours);
            if self.attempted.get(&id) == Some(&body) {
                if let Some(now) = translated {
                    self.settled.insert(key.clone(), now.clone());
                }
                continue;
            }
            let cached = cached_parents(&route.metadata, route.status.as_ref());
            let resource = objects::http_route_resource();
            let outcome = self
                .write_route_parents(&resource, "HTTPRoute", key, cached, &body)
                .await;
            match (outcome, translated) {
                (Outcome::Written | Outcome::Refused, Some(now)) => {
                    self.settled.insert(key.clone(), now.clone());
                }
                _ => {
                    self.settled.remove(key);
                }
            }
            retry |= self.settle(id, body, outcome);
        }
        for (kind, routes, resource) in [
            (
                "TLSRoute",
                &objects.tls_routes,
                objects::tls_route_resource(),
            ),
            (
                "TCPRoute",
                &objects.tcp_routes,
                objects::tcp_route_resource(),
            ),
        ] {
            for (key, route) in routes {
                let ours = status.l4_routes.get(&(kind, key.clone())).unwrap_or(&empty);
                let has_ours = route.status.as_ref().is_some_and(|s| {
                    s.parents
                        .iter()
                        .any(|p| p["controllerName"] == CONTROLLER_NAME)
                });
                let id = (kind, key.clone());
                if ours.parents.is_empty() && !has_ours && !self.attempted.contains_key(&id) {
                    continue; // never ours
                }
                let body = parents_json(ours);
                if self.attempted.get(&id) == Some(&body) {
                    continue;
                }
                let cached = cached_parents(&route.metadata, route.status.as_ref());
                let outcome = self
                    .write_route_parents(&resource, kind, key, cached, &body)
                    .await;
                retry |= self.settle(id, body, outcome);
            }
        }
        for (key, gateway) in &status.gateways {
            let listeners: Vec<Value> = gateway
                .listeners
                .iter()
                .map(|(name, attached, conditions)| {
                    json!({
                        "name": name,
                        "attachedRoutes": attached,
                        "supportedKinds": [{
                            "group": GATEWAY_GROUP,
                            "kind": gateway.route_kinds.get(name).copied().unwrap_or("HTTPRoute"),
                        }],
                        "conditions": conditions.iter().map(condition_json).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let body = json!({
                "conditions": gateway.conditions.iter().map(condition_json).collect::<Vec<_>>(),
                "listeners": listeners,
            });
            let id = ("Gateway", key.clone());
            if self.attempted.get(&id) == Some(&body) {
                continue;
            }
            // A Gateway belongs to the one controller of its class: its status is ours.
            let mut stamped = body.clone();
            stamp(&mut stamped);
            let api: Api<Gateway> =
                Api::namespaced_with(self.client.clone(), &key.0, &objects::gateway_resource());
            let patch = Patch::Merge(json!({ "status": stamped }));
            let result = api
                .patch_status(&key.1, &PatchParams::default(), &patch)
                .await;
            let outcome = log_outcome("Gateway", key, result.map(|_| ()));
            retry |= self.settle(id, body, outcome);
        }
        if !self.addresses.is_empty() {
            // Else nothing true to say: listeners on every address and no POD_IP.
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
                let outcome = log_outcome("Ingress", key, result.map(|_| ()));
                retry |= self.settle(id, body, outcome);
            }
        }
        for (key, warnings) in &status.ingress_warnings {
            retry |= self.warn_ingress(objects, key, warnings).await;
        }
        // Objects that are gone are forgotten: one created again under the same name
        // gets its status written afresh.
        self.attempted.retain(|(kind, key), _| match *kind {
            "HTTPRoute" => objects.routes.contains_key(key),
            "TLSRoute" => objects.tls_routes.contains_key(key),
            "TCPRoute" => objects.tcp_routes.contains_key(key),
            "Gateway" => objects.gateways.contains_key(key),
            "Event" => {
                objects.ingresses.contains_key(key) && status.ingress_warnings.contains_key(key)
            }
            _ => objects.ingresses.contains_key(key),
        });
        self.settled
            .retain(|key, _| objects.routes.contains_key(key));
        retry
    }

    /// One Warning event on the Ingress per problem with its annotations (Ingress status
    /// has no conditions to carry them; `kubectl describe ingress` shows events). Each is
    /// named after its Ingress and message, so the same problem is written once however
    /// often it is found again, by this process or the next. Returns whether a write must
    /// be retried.
    async fn warn_ingress(
        &mut self,
        objects: &ClusterObjects,
        key: &Key,
        warnings: &[String],
    ) -> bool {
        let id = ("Event", key.clone());
        let body = json!(warnings);
        if self.attempted.get(&id) == Some(&body) {
            return false;
        }
        let uid = objects
            .ingresses
            .get(key)
            .and_then(|i| i.metadata.uid.clone());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &key.0);
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let mut outcome = Outcome::Written;
        for message in warnings {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(format!("{}/{}: {message}", key.0, key.1));
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            let event = Event {
                metadata: ObjectMeta {
                    name: Some(format!("{}.edgegate.{hex}", key.1)),
                    namespace: Some(key.0.clone()),
                    ..Default::default()
                },
                involved_object: ObjectReference {
                    api_version: Some("networking.k8s.io/v1".to_string()),
                    kind: Some("Ingress".to_string()),
                    name: Some(key.1.clone()),
                    namespace: Some(key.0.clone()),
                    uid: uid.clone(),
                    ..Default::default()
                },
                type_: Some("Warning".to_string()),
                reason: Some("AnnotationNotServed".to_string()),
                message: Some(message.clone()),
                source: Some(EventSource {
                    component: Some("edgegate".to_string()),
                    host: None,
                }),
                reporting_component: Some(CONTROLLER_NAME.to_string()),
                first_timestamp: Some(now.clone()),
                last_timestamp: Some(now.clone()),
                count: Some(1),
                ..Default::default()
            };
            let result = match api.create(&PostParams::default(), &event).await {
                // Written before (by this process, or the one before it).
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
                other => other.map(|_| ()),
            };
            match log_outcome("Event", key, result) {
                Outcome::Written => {}
                Outcome::Refused => outcome = Outcome::Refused,
                Outcome::Retry => return self.settle(id, body, Outcome::Retry),
            }
        }
        self.settle(id, body, outcome)
    }

    /// Records a finished write; returns whether it must be retried.
    fn settle(&mut self, id: (&'static str, Key), body: Value, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Written | Outcome::Refused => {
                self.attempted.insert(id, body);
                false
            }
            Outcome::Retry => {
                self.attempted.remove(&id);
                true
            }
        }
    }

    /// Replaces edgegate's own entries of a route's `status.parents` with `ours`, keeping
    /// every other controller's entry as it is. A merge patch replaces an array whole, so
    /// the others' entries are written back with ours, conditional on the version they
    /// were read at: first the watch's copy of the route, then (409: someone wrote in
    /// between) a fresh read. A concurrent writer means a retry, never a lost entry.
    async fn write_route_parents(
        &self,
        resource: &kube::core::ApiResource,
        kind: &'static str,
        key: &Key,
        cached: Option<(String, Vec<Value>)>,
        ours: &Value,
    ) -> Outcome {
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &key.0, resource);
        let mut read = cached;
        let mut result = Ok(());
        for _ in 0..CONFLICT_ATTEMPTS {
            let (version, parents) = match read.take() {
                Some(read) => read,
                None => match api.get_status(&key.1).await {
                    Ok(current) => (
                        current.metadata.resource_version.unwrap_or_default(),
                        current.data["status"]["parents"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default(),
                    ),
                    Err(e) => return log_outcome(kind, key, Err(e)),
                },
            };
            let mut stamped = ours.clone();
            stamp(&mut stamped);
            let parents: Vec<Value> = parents
                .into_iter()
                .filter(|p| p["controllerName"] != CONTROLLER_NAME)
                .chain(stamped.as_array().into_iter().flatten().cloned())
                .collect();
            let patch = Patch::Merge(json!({
                "metadata": {"resourceVersion": version},
                "status": {"parents": parents},
            }));
            result = api
                .patch_status(&key.1, &PatchParams::default(), &patch)
                .await
                .map(|_| ());
            match &result {
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                _ => break,
            }
        }
        log_outcome(kind, key, result)
    }
}

/// A route's `status.parents` entries of ours, without timestamps.
fn parents_json(ours: &RouteStatus) -> Value {
    let entries: Vec<Value> = ours
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
    Value::Array(entries)
}

/// The watch's copy of a route's parents and the version they were read at: the first
/// write needs no read of its own.
fn cached_parents(
    metadata: &kube::api::ObjectMeta,
    status: Option<&HttpRouteStatus>,
) -> Option<(String, Vec<Value>)> {
    metadata.resource_version.clone().map(|version| {
        (
            version,
            status.map(|s| s.parents.clone()).unwrap_or_default(),
        )
    })
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

fn log_outcome(kind: &str, key: &Key, result: Result<(), kube::Error>) -> Outcome {
    let outcome = match &result {
        Ok(()) => Outcome::Written,
        Err(kube::Error::Api(status))
            if status.code == 409 || status.code == 429 || status.code >= 500 =>
        {
            Outcome::Retry
        }
        Err(kube::Error::Api(_)) => Outcome::Refused,
        // No answer at all: a timeout, a refused or broken connection.
        Err(_) => Outcome::Retry,
    };
    match (outcome, result) {
        (Outcome::Written, _) => {
            tracing::debug!(kind, namespace = %key.0, name = %key.1, "status written")
        }
        (Outcome::Retry, Err(e)) => tracing::warn!(
            kind,
            namespace = %key.0,
            name = %key.1,
            error = %e,
            "cannot write status for now; retrying with backoff (routing is unaffected)"
        ),
        (_, Err(e)) if kind == "Event" => tracing::warn!(
            namespace = %key.0,
            name = %key.1,
            error = %e,
            "cannot write a warning event on the Ingress (RBAC needs create on events); routing is unaffected"
        ),
        (_, Err(e)) => tracing::warn!(
            kind,
            namespace = %key.0,
            name = %key.1,
            error = %e,
            "cannot write status (RBAC needs patch on the status subresource); routing is unaffected"
        ),
        (_, Ok(())) => {}
    }
    outcome
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
