//! The kinds routes come from (spec section 10): Gateway API Gateways, HTTPRoutes and
//! ReferenceGrants, Ingresses and TLS Secrets, with the same list/watch semantics as the
//! discovery kinds, plus merge patches on the status subresource (refusable, as without
//! RBAC for it; failing for a while, as under etcd trouble; conditional on a
//! `metadata.resourceVersion` in the patch, as on a real server).

use serde_json::{json, Map, Value};

use super::{json_response, status, ApiResponse, Inner, Key, Kind, KubeApi};

impl KubeApi {
    /// Creates or replaces an object of `kind` (`"HTTPRoute"`, `"Gateway"`,
    /// `"ReferenceGrant"`, `"Ingress"`, `"Secret"`) from its top-level fields other than
    /// kind/apiVersion/metadata (`spec`, or `type` and `data`). As on a real server, an
    /// update keeps the object's status and bumps `metadata.generation` only when the
    /// spec changed. Returns the resourceVersion.
    pub fn apply_object(&self, kind: &str, namespace: &str, name: &str, body: Value) -> String {
        let kind = Kind::from_name(kind).expect("a kind the double serves");
        let key = Key::new(kind, namespace, name);
        let mut store = self.inner.store();
        let mut body: Map<String, Value> = match body {
            Value::Object(map) => map,
            other => panic!("object body must be a JSON object, not {other}"),
        };
        if let Some(old_status) = store.objects.get(&key).and_then(|o| o.get("status")) {
            body.insert("status".into(), old_status.clone());
        }
        store.upsert(key, Map::new(), body)
    }

    /// A `kubernetes.io/tls` Secret holding a certificate chain and key (PEM).
    pub fn apply_tls_secret(&self, namespace: &str, name: &str, cert_pem: &str, key_pem: &str) {
        let data = json!({
            "tls.crt": super::base64(cert_pem.as_bytes(), super::STANDARD, true),
            "tls.key": super::base64(key_pem.as_bytes(), super::STANDARD, true),
        });
        self.apply_object(
            "Secret",
            namespace,
            name,
            json!({"type": "kubernetes.io/tls", "data": data}),
        );
    }

    /// Deletes an object of `kind`; returns whether it existed.
    pub fn delete_object(&self, kind: &str, namespace: &str, name: &str) -> bool {
        let kind = Kind::from_name(kind).expect("a kind the double serves");
        self.inner.store().delete(Key::new(kind, namespace, name))
    }

    /// The object as stored (status included), if it exists.
    pub fn object(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let kind = Kind::from_name(kind).expect("a kind the double serves");
        self.inner
            .store()
            .objects
            .get(&Key::new(kind, namespace, name))
            .cloned()
    }

    /// Every stored object of `kind` in `namespace`, in name order.
    pub fn objects_of(&self, kind: &str, namespace: &str) -> Vec<Value> {
        let kind = Kind::from_name(kind).expect("a kind the double serves");
        self.inner
            .store()
            .objects
            .iter()
            .filter(|(key, _)| key.kind == kind && key.namespace == namespace)
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// From now on status patches are refused with 403 (or accepted again).
    pub fn refuse_status_writes(&self, refuse: bool) {
        self.inner.store().refuse_status = refuse;
    }

    /// From now on listing or watching `kind` answers 403, as when RBAC does not let the
    /// client read it (or reading it is allowed again).
    pub fn forbid_kind(&self, kind: &str, forbid: bool) {
        let kind = Kind::from_name(kind).expect("a kind the double serves");
        let mut store = self.inner.store();
        if forbid {
            store.forbidden.insert(kind);
        } else {
            store.forbidden.remove(&kind);
        }
    }

    /// The next `count` status patches fail with a 500, as when etcd times out.
    pub fn fail_status_writes(&self, count: usize) {
        self.inner.store().failing_status = count;
    }

    /// Sets an object's status as another controller would (a MODIFIED event, the
    /// generation unchanged).
    pub fn set_status(&self, kind: &str, namespace: &str, name: &str, status: Value) {
        let kind = Kind::from_name(kind).expect("a kind the double serves");
        let key = Key::new(kind, namespace, name);
        let mut store = self.inner.store();
        let current = store.objects.get(&key).cloned().expect("the object exists");
        let mut fields: Map<String, Value> = current
            .as_object()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "kind" | "apiVersion" | "metadata"))
            .collect();
        fields.insert("status".into(), status);
        let labels = current["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        store.upsert(key, labels, fields);
    }

    /// Status patches received so far, refused ones included, as `KIND NS/NAME`.
    pub fn status_patches(&self) -> Vec<String> {
        self.inner.store().status_patches.clone()
    }
}

impl Inner {
    /// `POST` to a namespaced collection (what `kubectl create -f` sends): the object's
    /// spec and other top-level fields are stored, metadata is the server's own.
    pub(super) fn create(&self, kind: Kind, namespace: &str, body: &[u8]) -> ApiResponse {
        let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
            return status(400, "BadRequest", "the body is not a JSON object", None);
        };
        let Some(name) = object
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return status(422, "Invalid", "metadata.name: Required value", None);
        };
        let key = Key::new(kind, namespace, &name);
        let mut store = self.store();
        if store.objects.contains_key(&key) {
            let message = format!("{} \"{name}\" already exists", kind.plural());
            return status(409, "AlreadyExists", &message, None);
        }
        let labels = object
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let fields: Map<String, Value> = object
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "kind" | "apiVersion" | "metadata" | "status"))
            .collect();
        store.upsert(key.clone(), labels, fields);
        let created = store.objects.get(&key).cloned().unwrap_or_default();
        json_response(201, &created)
    }

    /// A JSON merge patch (RFC 7386) of `{"status": ...}` on the status subresource:
    /// only the status changes, the generation stays, watches see MODIFIED.
    pub(super) fn patch_status(
        &self,
        key: &Key,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> ApiResponse {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let mut store = self.store();
        store.status_patches.push(format!(
            "{} {}/{}",
            key.kind.name(),
            key.namespace,
            key.name
        ));
        if store.refuse_status {
            let message = format!(
                "{}.{} \"{}\" is forbidden: User cannot patch resource \"{}/status\" in API group \"{}\" in the namespace \"{}\"",
                key.kind.plural(), key.kind.group(), key.name, key.kind.plural(), key.kind.group(), key.namespace
            );
            return status(403, "Forbidden", &message, None);
        }
        if !content_type.starts_with("application/merge-patch+json") {
            return status(
                415,
                "UnsupportedMediaType",
                &format!("the double takes merge patches on status, not {content_type:?}"),
                None,
            );
        }
        let Ok(patch) = serde_json::from_slice::<Value>(body) else {
            return status(400, "BadRequest", "the patch is not JSON", None);
        };
        if store.failing_status > 0 {
            store.failing_status -= 1;
            return status(
                500,
                "InternalError",
                "Internal error occurred: etcdserver: request timed out",
                None,
            );
        }
        let Some(current) = store.objects.get(key).cloned() else {
            let message = format!("{} \"{}\" not found", key.kind.plural(), key.name);
            return status(404, "NotFound", &message, None);
        };
        // A resourceVersion in the patch is a precondition, as on a real server.
        if let Some(wanted) = patch["metadata"]["resourceVersion"].as_str() {
            if current["metadata"]["resourceVersion"].as_str() != Some(wanted) {
                let message = format!(
                    "Operation cannot be fulfilled on {}.{} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                    key.kind.plural(),
                    key.kind.group(),
                    key.name
                );
                return status(409, "Conflict", &message, None);
            }
        }
        let mut fields: Map<String, Value> = current
            .as_object()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "kind" | "apiVersion" | "metadata"))
            .collect();
        let mut new_status = fields.remove("status").unwrap_or(json!({}));
        merge(&mut new_status, patch.get("status").unwrap_or(&Value::Null));
        fields.insert("status".into(), new_status);
        let labels = current["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        store.upsert(key.clone(), labels, fields);
        let object = store.objects.get(key).cloned().unwrap_or_default();
        json_response(200, &object)
    }
}

/// RFC 7386: objects merge key by key, `null` deletes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(map) = target {
        for (k, v) in patch {
            if v.is_null() {
                map.remove(k);
            } else {
                merge(map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}
