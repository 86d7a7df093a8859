//! The API double's state: kinds, objects and their versioned history, watchers.

use super::*;

pub(super) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Kind {
    Service,
    Endpoints,
    EndpointSlice,
    Secret,
    Ingress,
    Gateway,
    HttpRoute,
    TlsRoute,
    TcpRoute,
    ReferenceGrant,
    Event,
}

impl Kind {
    pub(super) const ALL: [Kind; 11] = [
        Kind::Service,
        Kind::Endpoints,
        Kind::EndpointSlice,
        Kind::Secret,
        Kind::Ingress,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::TlsRoute,
        Kind::TcpRoute,
        Kind::ReferenceGrant,
        Kind::Event,
    ];

    /// `(group, version)` pairs served under `/apis`, in discovery order.
    pub(super) const GROUP_VERSIONS: [(&'static str, &'static str); 5] = [
        ("discovery.k8s.io", "v1"),
        ("networking.k8s.io", "v1"),
        ("gateway.networking.k8s.io", "v1"),
        ("gateway.networking.k8s.io", "v1beta1"),
        ("gateway.networking.k8s.io", "v1alpha2"),
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
            Kind::Ingress => "Ingress",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::TlsRoute => "TLSRoute",
            Kind::TcpRoute => "TCPRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Event => "Event",
        }
    }

    pub(super) fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub(super) fn group(self) -> &'static str {
        match self {
            Kind::Service | Kind::Endpoints | Kind::Secret | Kind::Event => "",
            Kind::EndpointSlice => "discovery.k8s.io",
            Kind::Ingress => "networking.k8s.io",
            Kind::Gateway
            | Kind::HttpRoute
            | Kind::TlsRoute
            | Kind::TcpRoute
            | Kind::ReferenceGrant => "gateway.networking.k8s.io",
        }
    }

    pub(super) fn version(self) -> &'static str {
        match self {
            Kind::ReferenceGrant => "v1beta1",
            Kind::TlsRoute | Kind::TcpRoute => "v1alpha2",
            _ => "v1",
        }
    }

    pub(super) fn api_version(self) -> String {
        match self.group() {
            "" => self.version().to_owned(),
            group => format!("{group}/{}", self.version()),
        }
    }

    pub(super) fn plural(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::Endpoints => "endpoints",
            Kind::EndpointSlice => "endpointslices",
            Kind::Secret => "secrets",
            Kind::Ingress => "ingresses",
            Kind::Gateway => "gateways",
            Kind::HttpRoute => "httproutes",
            Kind::TlsRoute => "tlsroutes",
            Kind::TcpRoute => "tcproutes",
            Kind::ReferenceGrant => "referencegrants",
            Kind::Event => "events",
        }
    }

    pub(super) fn singular(self) -> String {
        self.name().to_ascii_lowercase()
    }

    pub(super) fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Service => &["svc"],
            Kind::Endpoints => &["ep"],
            Kind::Ingress => &["ing"],
            Kind::Gateway => &["gtw"],
            Kind::ReferenceGrant => &["refgrant"],
            _ => &[],
        }
    }

    /// Whether the kind has a `status` subresource the double accepts patches on.
    pub(super) fn has_status(self) -> bool {
        matches!(self, Kind::Ingress | Kind::Gateway | Kind::HttpRoute)
    }

    pub(super) fn from_path(group: &str, version: &str, plural: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.version() == version && k.plural() == plural)
    }
}

/// Objects sort by kind, namespace, name: list order (and continue tokens) follow it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    pub(super) kind: Kind,
    pub(super) namespace: String,
    pub(super) name: String,
}

impl Key {
    pub(super) fn new(kind: Kind, namespace: &str, name: &str) -> Key {
        Key {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One write, with the state before it so history can be undone (snapshots for
/// paginated lists) and watches can tell when an object left their selector.
#[derive(Debug, Clone)]
pub(super) struct Change {
    pub(super) rv: u64,
    pub(super) key: Key,
    pub(super) change: ChangeType,
    /// The new state; for a deletion the last state, stamped with the deletion's version.
    pub(super) object: Value,
    pub(super) prev: Option<Value>,
}

pub(super) enum WatchMsg {
    Event(Bytes),
    /// The final event of the stream (the 410 ERROR).
    Last(Bytes),
    Close,
}

pub(super) struct Watcher {
    pub(super) filter: Filter,
    pub(super) bookmarks: bool,
    /// The version of the last event this stream was given (for the 410 message).
    pub(super) last_rv: u64,
    pub(super) tx: mpsc::UnboundedSender<WatchMsg>,
}

pub(super) struct Store {
    pub(super) rv: u64,
    /// History is complete for every version > `floor`; older ones are "compacted".
    pub(super) floor: u64,
    pub(super) history_limit: usize,
    pub(super) objects: BTreeMap<Key, Value>,
    pub(super) history: VecDeque<Change>,
    pub(super) watchers: Vec<Watcher>,
    pub(super) requests: Vec<String>,
    pub(super) user_agents: Vec<String>,
    pub(super) next_uid: u64,
    pub(super) uid_prefix: u32,
    /// Status patches answer 403, as without RBAC for the status subresource.
    pub(super) refuse_status: bool,
    /// Status patches received (refused ones included), as `KIND NS/NAME`.
    pub(super) status_patches: Vec<String>,
    /// Kinds whose list and watch answer 403 (`KubeApi::forbid_kind`).
    pub(super) forbidden: std::collections::BTreeSet<Kind>,
    /// Status patches still to fail with a 500 (`KubeApi::fail_status_writes`).
    pub(super) failing_status: usize,
    /// How late every request is answered (`KubeApi::set_delay`).
    pub(super) delay: std::time::Duration,
}

impl Inner {
    pub(super) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().expect("kube double state")
    }
}

impl Store {
    pub(super) fn new() -> Store {
        Store {
            rv: FIRST_RESOURCE_VERSION,
            floor: FIRST_RESOURCE_VERSION,
            history_limit: DEFAULT_HISTORY_LIMIT,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            watchers: Vec::new(),
            requests: Vec::new(),
            user_agents: Vec::new(),
            next_uid: 1,
            uid_prefix: rand::random(),
            refuse_status: false,
            status_patches: Vec::new(),
            delay: std::time::Duration::ZERO,
            failing_status: 0,
            forbidden: std::collections::BTreeSet::new(),
        }
    }

    /// Creates or replaces an object from its labels and top-level fields (all but
    /// kind/apiVersion; a `metadata` given, such as annotations, is merged into the
    /// server's own); returns its resourceVersion.
    pub(super) fn upsert(
        &mut self,
        key: Key,
        labels: Map<String, Value>,
        mut body: Map<String, Value>,
    ) -> String {
        let old = self.objects.get(&key).cloned();
        // Metadata the caller gives (annotations) joins the server's own.
        let given_metadata = body.remove("metadata");
        let mut metadata = match &old {
            Some(old) => old["metadata"].clone(),
            None => {
                let uid = format!(
                    "{:08x}-0000-4000-8000-{:012x}",
                    self.uid_prefix, self.next_uid
                );
                self.next_uid += 1;
                json!({
                    "name": key.name,
                    "namespace": key.namespace,
                    "uid": uid,
                    "resourceVersion": "",
                    "creationTimestamp": now_rfc3339(),
                })
            }
        };
        if key.kind.has_status() {
            // Like a real server: the generation counts changes of the spec only.
            let generation = match &old {
                None => 1,
                Some(old) => {
                    let before = old["metadata"]["generation"].as_u64().unwrap_or(1);
                    before + u64::from(old.get("spec") != body.get("spec"))
                }
            };
            metadata["generation"] = json!(generation);
        }
        if labels.is_empty() {
            if let Some(m) = metadata.as_object_mut() {
                m.remove("labels");
            }
        } else {
            metadata["labels"] = Value::Object(labels);
        }
        if let Some(Value::Object(given)) = given_metadata {
            for (k, v) in given {
                metadata[k] = v;
            }
        }
        let mut object = Map::new();
        object.insert("kind".into(), json!(key.kind.name()));
        object.insert("apiVersion".into(), json!(key.kind.api_version()));
        object.insert("metadata".into(), metadata);
        object.extend(body);
        let mut object = Value::Object(object);
        if old.as_ref() == Some(&object) {
            return object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
        self.rv += 1;
        let rv = self.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.objects.insert(key.clone(), object.clone());
        let change = if old.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        self.record(Change {
            rv,
            key,
            change,
            object,
            prev: old,
        });
        rv.to_string()
    }

    pub(super) fn delete(&mut self, key: Key) -> bool {
        let Some(old) = self.objects.remove(&key) else {
            return false;
        };
        self.rv += 1;
        let mut object = old.clone();
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(Change {
            rv: self.rv,
            key,
            change: ChangeType::Deleted,
            object,
            prev: Some(old),
        });
        true
    }

    /// Appends a change to the history and hands it to every watch it concerns.
    pub(super) fn record(&mut self, change: Change) {
        for watcher in &mut self.watchers {
            if let Some(line) = watcher.filter.render(&change) {
                if watcher.tx.send(WatchMsg::Event(line)).is_ok() {
                    watcher.last_rv = change.rv;
                }
            }
        }
        self.prune_watchers();
        self.history.push_back(change);
        self.trim_history();
    }

    pub(super) fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(oldest) = self.history.pop_front() {
                self.floor = oldest.rv;
            }
        }
    }

    pub(super) fn prune_watchers(&mut self) {
        self.watchers.retain(|w| !w.tx.is_closed());
    }

    /// The objects as they were at `rv` (which must be within the history window),
    /// rebuilt by undoing newer changes.
    pub(super) fn snapshot(&self, rv: u64) -> Cow<'_, BTreeMap<Key, Value>> {
        if rv >= self.rv {
            return Cow::Borrowed(&self.objects);
        }
        let mut objects = self.objects.clone();
        for change in self.history.iter().rev().take_while(|c| c.rv > rv) {
            match &change.prev {
                Some(prev) => objects.insert(change.key.clone(), prev.clone()),
                None => objects.remove(&change.key),
            };
        }
        Cow::Owned(objects)
    }
}
