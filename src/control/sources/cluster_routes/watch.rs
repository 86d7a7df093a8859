//! Watches of the kinds cluster routes read, feeding one store; each change translates
//! the store (only what changed: see [`Translator`]) and sends the result to the
//! publisher as one [`Update::ClusterRoutes`].
//!
//! Nothing is sent until every watched kind has listed once, so a start never publishes
//! routes without their Services (which would answer 500 for a moment). A kind the API
//! server does not serve (Gateway API CRDs not installed: 404) or that RBAC does not let
//! edgegate list (403) counts as listed and empty, is logged, and keeps being retried,
//! so Ingresses work in a cluster without the CRDs and one missing permission never
//! holds every other route (or `/readyz`).
//! A broken watch keeps the last known objects while kube-runtime re-lists with backoff.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::core::ApiResource;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use super::objects::{self, Gateway, HttpRoute, ReferenceGrant, TcpRoute, TlsRoute};
use super::status::StatusWriter;
use super::translate::{
    ingress_translates_same, route_translates_same, same_meta, translate, ClusterObjects,
    ClusterRoutes, Key, ListenerFacts, OpaqueSecret, ServicePorts, TlsSecret, Translator,
};
use crate::config::model;
use crate::config::Config;
use crate::control::update::Update;

/// What a translation depends on besides the objects; a change restarts the watches.
#[derive(Debug, Clone, PartialEq)]
struct Inputs {
    settings: model::KubernetesSettings,
    listeners: Vec<ListenerFacts>,
    /// What Ingress `status.loadBalancer` reports: where clients reach the listeners.
    addresses: Vec<std::net::IpAddr>,
}

/// Follows the applied config: starts the watches when `[kubernetes]` appears, restarts
/// them when its settings change (other classes or namespaces mean other watches),
/// hands a running session new listeners (a reload that adds, moves or renames one
/// re-translates what the watches hold, without listing anything again), and withdraws
/// the cluster's routes when `[kubernetes]` goes away.
pub async fn follow(
    updates: mpsc::Sender<Update>,
    mut configs: tokio::sync::watch::Receiver<Arc<Config>>,
) {
    let mut running: Option<Session> = None;
    loop {
        let config = configs.borrow_and_update().clone();
        let inputs = config.kubernetes.clone().map(|settings| Inputs {
            settings,
            listeners: ListenerFacts::of(&config.listeners),
            addresses: super::status::ingress_addresses(
                &config.listeners,
                std::env::var("POD_IP").ok().as_deref(),
            ),
        });
        match (inputs, &running) {
            (Some(inputs), Some(session)) if inputs.settings == session.settings => {
                session.inputs.send_if_modified(|current| {
                    let changed = *current != inputs;
                    *current = inputs;
                    changed
                });
            }
            (Some(inputs), _) => {
                tracing::info!(settings = ?inputs.settings, "watching the cluster for routes");
                running = Some(Session::start(inputs, updates.clone()));
            }
            (None, Some(_)) => {
                running = None;
                let _ = updates
                    .send(Update::ClusterRoutes(Arc::new(ClusterRoutes::default())))
                    .await;
            }
            (None, None) => {}
        }
        if configs.changed().await.is_err() {
            return;
        }
    }
}

/// The watch tasks of one set of settings; dropping it stops them.
struct Session {
    settings: model::KubernetesSettings,
    /// The listeners (and addresses) translation uses, replaced by later reloads.
    inputs: tokio::sync::watch::Sender<Inputs>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Objects by kind and watch scope (one scope per watched namespace, or one for all).
#[derive(Default)]
struct Store {
    scopes: Vec<ClusterObjects>,
    /// `(kind, scope)` pairs that have listed at least once.
    synced: BTreeSet<(&'static str, usize)>,
}

impl Store {
    fn merged(&self) -> ClusterObjects {
        let mut all = match self.scopes.as_slice() {
            [one] => return one.clone(),
            _ => ClusterObjects::default(),
        };
        for scope in &self.scopes {
            all.gateways.extend(scope.gateways.clone());
            all.routes.extend(scope.routes.clone());
            all.tls_routes.extend(scope.tls_routes.clone());
            all.tcp_routes.extend(scope.tcp_routes.clone());
            all.grants.extend(scope.grants.clone());
            all.ingresses.extend(scope.ingresses.clone());
            all.services.extend(scope.services.clone());
            all.secrets.extend(scope.secrets.clone());
            all.opaque_secrets.extend(scope.opaque_secrets.clone());
        }
        all
    }
}

/// One watched kind: how to reach it and where its objects go in the store.
struct Kind<K: Resource, T> {
    name: &'static str,
    /// The collection in one namespace, or in all of them.
    api: fn(Client, Option<&str>) -> Api<K>,
    fields: Option<&'static str>,
    slot: fn(&mut ClusterObjects) -> &mut BTreeMap<Key, Arc<T>>,
    convert: fn(K) -> Option<T>,
    /// Whether two versions translate the same: a change of what translation does not
    /// read (a status edgegate just wrote, a resourceVersion) does not re-translate.
    same: fn(&T, &T) -> bool,
}

impl Session {
    fn start(inputs: Inputs, updates: mpsc::Sender<Update>) -> Session {
        let settings = inputs.settings.clone();
        let (inputs, inputs_rx) = tokio::sync::watch::channel(inputs);
        let task = tokio::spawn(run(inputs_rx, updates));
        Session {
            settings,
            inputs,
            tasks: vec![task],
        }
    }
}

/// Connects (retrying until credentials work), starts one watch per kind and scope, and
/// translates on every change of the objects or of the listeners until aborted.
async fn run(mut inputs_rx: tokio::sync::watch::Receiver<Inputs>, updates: mpsc::Sender<Update>) {
    let mut inputs = inputs_rx.borrow_and_update().clone();
    let client = loop {
        match crate::control::sources::discovery::connect().await {
            Some(client) => break client,
            None => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    };
    let scopes: Vec<Option<String>> = if inputs.settings.namespaces.is_empty() {
        vec![None]
    } else {
        inputs
            .settings
            .namespaces
            .iter()
            .cloned()
            .map(Some)
            .collect()
    };
    let store = Arc::new(Mutex::new(Store {
        scopes: vec![ClusterObjects::default(); scopes.len()],
        synced: BTreeSet::new(),
    }));
    let changed = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    let mut kinds: Vec<&'static str> = vec!["Service", "Secret"];
    for (scope, namespace) in scopes.iter().enumerate() {
        let ns = namespace.as_deref();
        let ctx = (client.clone(), ns, scope, store.clone(), changed.clone());
        tasks.push(spawn(&ctx, services()));
        tasks.push(spawn(&ctx, secrets()));
        if inputs.settings.gateway_class.is_some() {
            tasks.push(spawn(&ctx, gateways()));
            tasks.push(spawn(&ctx, http_routes()));
            tasks.push(spawn(&ctx, tls_routes()));
            tasks.push(spawn(&ctx, tcp_routes()));
            tasks.push(spawn(&ctx, grants()));
        }
        if inputs.settings.ingress_class.is_some() {
            tasks.push(spawn(&ctx, ingresses()));
            tasks.push(spawn(&ctx, opaque_secrets()));
        }
    }
    if inputs.settings.gateway_class.is_some() {
        kinds.extend([
            "Gateway",
            "HTTPRoute",
            "TLSRoute",
            "TCPRoute",
            "ReferenceGrant",
        ]);
    }
    if inputs.settings.ingress_class.is_some() {
        kinds.extend(["Ingress", OPAQUE_SECRET]);
    }
    // Aborting this task must stop the watches too.
    struct AbortAll(Vec<JoinHandle<()>>);
    impl Drop for AbortAll {
        fn drop(&mut self) {
            for task in &self.0 {
                task.abort();
            }
        }
    }
    let _watches = AbortAll(tasks);
    let wanted = kinds.len() * scopes.len();
    // Status is written by its own task, always the newest: thousands of patches after
    // a start never delay the next translation.
    let (status_tx, status_rx) = tokio::sync::watch::channel(None);
    let _writer = AbortAll(vec![tokio::spawn(write_status(
        StatusWriter::new(client.clone()),
        status_rx,
    ))]);
    let mut last: Option<Arc<ClusterRoutes>> = None;
    let mut translator = Translator::default();
    let mut logged: BTreeSet<String> = BTreeSet::new();
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            moved = inputs_rx.changed() => {
                if moved.is_err() {
                    return;
                }
                inputs = inputs_rx.borrow_and_update().clone();
                status_tx.send_modify(|latest| {
                    if let Some(latest) = latest {
                        latest.2 = inputs.addresses.clone();
                    }
                });
            }
        }
        let objects = {
            let store = store.lock().unwrap_or_else(|e| e.into_inner());
            if store.synced.len() < wanted {
                continue;
            }
            store.merged()
        };
        let started = std::time::Instant::now();
        let routes = translator.translate(&objects, &inputs.settings, &inputs.listeners);
        let current: BTreeSet<String> = routes.problems.iter().cloned().collect();
        for problem in current.difference(&logged) {
            tracing::warn!("cluster routes: {problem}");
        }
        logged = current;
        if last.as_deref() == Some(&routes) {
            continue;
        }
        tracing::debug!(elapsed = ?started.elapsed(), routes = routes.routes.len(), translated = translator.translated(), "cluster objects translated");
        let routes = Arc::new(routes);
        if updates
            .send(Update::ClusterRoutes(routes.clone()))
            .await
            .is_err()
        {
            return;
        }
        status_tx.send_replace(Some((
            Arc::new(objects),
            routes.clone(),
            inputs.addresses.clone(),
        )));
        last = Some(routes);
    }
}

/// The newest objects, their translation, and the addresses Ingresses report, for the
/// status writer.
type Latest = Option<(
    Arc<ClusterObjects>,
    Arc<ClusterRoutes>,
    Vec<std::net::IpAddr>,
)>;

/// Writes the newest status, and writes again after a backoff while some write failed
/// for a passing reason (a 5xx, 429, timeout), until every one went through or was
/// refused for good.
async fn write_status(mut writer: StatusWriter, mut latest: tokio::sync::watch::Receiver<Latest>) {
    use kube::runtime::utils::Backoff;
    let mut backoff = crate::control::sources::discovery::capped_backoff();
    let mut retry_in: Option<Duration> = None;
    loop {
        match retry_in {
            Some(delay) => tokio::select! {
                changed = latest.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(delay) => {}
            },
            None => {
                if latest.changed().await.is_err() {
                    return;
                }
            }
        }
        let current = latest.borrow_and_update().clone();
        let Some((objects, routes, addresses)) = current else {
            continue;
        };
        writer.set_addresses(addresses);
        retry_in = if writer.write(&objects, &routes.status).await {
            Some(backoff.next().unwrap_or(Duration::from_secs(5)))
        } else {
            backoff.reset();
            None
        };
    }
}

type Context<'a> = (
    Client,
    Option<&'a str>,
    usize,
    Arc<Mutex<Store>>,
    Arc<Notify>,
);

fn spawn<K, T>(ctx: &Context<'_>, kind: Kind<K, T>) -> JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    T: Send + Sync + 'static,
{
    let (client, namespace, scope, store, changed) = ctx;
    let api = (kind.api)(client.clone(), *namespace);
    tokio::spawn(watch_kind(
        api,
        kind,
        *scope,
        store.clone(),
        changed.clone(),
    ))
}

async fn watch_kind<K, T>(
    api: Api<K>,
    kind: Kind<K, T>,
    scope: usize,
    store: Arc<Mutex<Store>>,
    changed: Arc<Notify>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    T: Send + Sync + 'static,
{
    let mut config = watcher::Config::default();
    if let Some(fields) = kind.fields {
        config = config.fields(fields);
    }
    let mut events = kube::runtime::watcher(api, config)
        .backoff(crate::control::sources::discovery::capped_backoff())
        .boxed();
    let mut pending: BTreeMap<Key, Arc<T>> = BTreeMap::new();
    let mut missing_logged = false;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                if let Some(code) = unreadable(&e) {
                    // Not installed (404), or not ours to read (403): nothing of it
                    // exists for us until that changes, and the other kinds (and
                    // `/readyz`) never wait for it.
                    if !missing_logged {
                        match code {
                            403 => tracing::warn!(kind = kind.name, error = %e, "not allowed to list this kind (RBAC); treating it as empty and retrying"),
                            _ => tracing::warn!(kind = kind.name, "the API server does not serve this kind (CRDs not installed?); treating it as empty and retrying"),
                        }
                        missing_logged = true;
                    }
                    let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
                    let first = s.synced.insert((kind.name, scope));
                    drop(s);
                    if first {
                        changed.notify_one();
                    }
                } else {
                    tracing::warn!(kind = kind.name, error = %e, "watch failed; keeping the last known objects and retrying");
                }
                continue;
            }
        };
        let notify = {
            let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
            let Some(objects) = s.scopes.get_mut(scope) else {
                return;
            };
            let slot = (kind.slot)(objects);
            match event {
                Event::Init => {
                    pending.clear();
                    false
                }
                Event::InitApply(object) => {
                    let key = key_of(&object);
                    if let Some(t) = (kind.convert)(object) {
                        pending.insert(key, Arc::new(t));
                    }
                    false
                }
                Event::InitDone => {
                    *slot = std::mem::take(&mut pending);
                    s.synced.insert((kind.name, scope));
                    true
                }
                Event::Apply(object) => {
                    let key = key_of(&object);
                    match (kind.convert)(object) {
                        Some(t) => {
                            let unchanged = slot.get(&key).is_some_and(|old| (kind.same)(old, &t));
                            slot.insert(key, Arc::new(t));
                            !unchanged
                        }
                        None => slot.remove(&key).is_some(),
                    }
                }
                Event::Delete(object) => {
                    slot.remove(&key_of(&object));
                    true
                }
            }
        };
        if notify {
            changed.notify_one();
        }
    }
}

fn dynamic<K>(client: Client, namespace: Option<&str>, resource: &ApiResource) -> Api<K>
where
    K: Resource<DynamicType = ApiResource, Scope = kube::core::DynamicResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced_with(client, ns, resource),
        None => Api::all_with(client, resource),
    }
}

fn services() -> Kind<Service, ServicePorts> {
    Kind {
        name: "Service",
        api: |c, ns| ns.map_or_else(|| Api::all(c.clone()), |ns| Api::namespaced(c.clone(), ns)),
        fields: None,
        slot: |o| &mut o.services,
        convert: service_ports,
        same: |a, b| a == b,
    }
}

fn secrets() -> Kind<Secret, TlsSecret> {
    Kind {
        name: "Secret",
        api: |c, ns| ns.map_or_else(|| Api::all(c.clone()), |ns| Api::namespaced(c.clone(), ns)),
        fields: Some("type=kubernetes.io/tls"),
        slot: |o| &mut o.secrets,
        convert: tls_secret,
        same: |a, b| a == b,
    }
}

/// The name the second Secret watch goes by in the store and the log.
const OPAQUE_SECRET: &str = "Secret (Opaque)";

/// `Opaque` Secrets, for the users of Ingresses with `auth-type: basic`. A watch of its
/// own (the TLS one selects `kubernetes.io/tls`), so a Secret's edit re-translates the
/// Ingresses naming it and who is let in changes without a reload.
fn opaque_secrets() -> Kind<Secret, OpaqueSecret> {
    Kind {
        name: OPAQUE_SECRET,
        api: |c, ns| ns.map_or_else(|| Api::all(c.clone()), |ns| Api::namespaced(c.clone(), ns)),
        fields: Some("type=Opaque"),
        slot: |o| &mut o.opaque_secrets,
        convert: opaque_secret,
        same: |a, b| a == b,
    }
}

fn gateways() -> Kind<Gateway, Gateway> {
    Kind {
        name: "Gateway",
        api: |c, ns| dynamic(c, ns, &objects::gateway_resource()),
        fields: None,
        slot: |o| &mut o.gateways,
        convert: Some,
        same: |a, b| a.spec == b.spec && same_meta(&a.metadata, &b.metadata),
    }
}

fn http_routes() -> Kind<HttpRoute, HttpRoute> {
    Kind {
        name: "HTTPRoute",
        api: |c, ns| dynamic(c, ns, &objects::http_route_resource()),
        fields: None,
        slot: |o| &mut o.routes,
        convert: Some,
        same: route_translates_same,
    }
}

fn tls_routes() -> Kind<TlsRoute, TlsRoute> {
    Kind {
        name: "TLSRoute",
        api: |c, ns| dynamic(c, ns, &objects::tls_route_resource()),
        fields: None,
        slot: |o| &mut o.tls_routes,
        convert: Some,
        same: |a, b| a.spec == b.spec && same_meta(&a.metadata, &b.metadata),
    }
}

fn tcp_routes() -> Kind<TcpRoute, TcpRoute> {
    Kind {
        name: "TCPRoute",
        api: |c, ns| dynamic(c, ns, &objects::tcp_route_resource()),
        fields: None,
        slot: |o| &mut o.tcp_routes,
        convert: Some,
        same: |a, b| a.spec == b.spec && same_meta(&a.metadata, &b.metadata),
    }
}

fn grants() -> Kind<ReferenceGrant, ReferenceGrant> {
    Kind {
        name: "ReferenceGrant",
        api: |c, ns| dynamic(c, ns, &objects::reference_grant_resource()),
        fields: None,
        slot: |o| &mut o.grants,
        convert: Some,
        same: |a, b| a.spec == b.spec && same_meta(&a.metadata, &b.metadata),
    }
}

fn ingresses() -> Kind<Ingress, Ingress> {
    Kind {
        name: "Ingress",
        api: |c, ns| ns.map_or_else(|| Api::all(c.clone()), |ns| Api::namespaced(c.clone(), ns)),
        fields: None,
        slot: |o| &mut o.ingresses,
        convert: Some,
        same: ingress_translates_same,
    }
}

/// Lists every kind once and translates, for `edgegate route` (no watch, no status).
/// A kind the API server does not serve is empty, as for the watches.
pub async fn list_once(
    settings: &model::KubernetesSettings,
    listeners: &[ListenerFacts],
) -> Result<ClusterRoutes, String> {
    let client = crate::control::sources::discovery::connect()
        .await
        .ok_or("no Kubernetes credentials (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    let scopes: Vec<Option<&str>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings
            .namespaces
            .iter()
            .map(|n| Some(n.as_str()))
            .collect()
    };
    let mut objects = ClusterObjects::default();
    for ns in scopes {
        list_into(&client, ns, services(), &mut objects).await?;
        list_into(&client, ns, secrets(), &mut objects).await?;
        if settings.gateway_class.is_some() {
            list_into(&client, ns, gateways(), &mut objects).await?;
            list_into(&client, ns, http_routes(), &mut objects).await?;
            list_into(&client, ns, tls_routes(), &mut objects).await?;
            list_into(&client, ns, tcp_routes(), &mut objects).await?;
            list_into(&client, ns, grants(), &mut objects).await?;
        }
        if settings.ingress_class.is_some() {
            list_into(&client, ns, ingresses(), &mut objects).await?;
            list_into(&client, ns, opaque_secrets(), &mut objects).await?;
        }
    }
    Ok(translate(&objects, settings, listeners))
}

async fn list_into<K, T>(
    client: &Client,
    namespace: Option<&str>,
    kind: Kind<K, T>,
    objects: &mut ClusterObjects,
) -> Result<(), String>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let api = (kind.api)(client.clone(), namespace);
    let mut params = kube::api::ListParams::default();
    if let Some(fields) = kind.fields {
        params = params.fields(fields);
    }
    match api.list(&params).await {
        Ok(list) => {
            let slot = (kind.slot)(objects);
            for object in list.items {
                let key = key_of(&object);
                if let Some(t) = (kind.convert)(object) {
                    slot.insert(key, Arc::new(t));
                }
            }
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            tracing::warn!(kind = kind.name, error = %status, "not allowed to list this kind (RBAC); treating it as empty");
            Ok(())
        }
        Err(e) => Err(format!("cannot list {}: {e}", kind.name)),
    }
}

/// The status code when a kind cannot be listed at all: 404, the API server does not
/// serve it (CRDs not installed); 403, RBAC does not let edgegate read it.
fn unreadable(error: &watcher::Error) -> Option<u16> {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
            if status.code == 404 || status.code == 403 =>
        {
            Some(status.code)
        }
        _ => None,
    }
}

fn key_of<K: Resource>(object: &K) -> Key {
    let meta = object.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn service_ports(service: Service) -> Option<ServicePorts> {
    let ports = service
        .spec?
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.name.unwrap_or_default(), p.port))
        .collect();
    Some(ServicePorts(ports))
}

/// Only `kubernetes.io/tls` Secrets with both halves; nothing else of a Secret is kept.
fn tls_secret(secret: Secret) -> Option<TlsSecret> {
    if secret.type_.as_deref() != Some("kubernetes.io/tls") {
        return None;
    }
    let mut data = secret.data?;
    let cert = data.remove("tls.crt")?.0;
    let key = data.remove("tls.key")?.0;
    Some(TlsSecret {
        cert: cert.into(),
        key: key.into(),
    })
}

/// An `Opaque` Secret's data (a Secret without a type is `Opaque`, as the API server
/// defaults it); nothing else of it is kept.
fn opaque_secret(secret: Secret) -> Option<OpaqueSecret> {
    if secret.type_.as_deref().unwrap_or("Opaque") != "Opaque" {
        return None;
    }
    let data = secret.data.unwrap_or_default();
    Some(OpaqueSecret(
        data.into_iter().map(|(k, v)| (k, v.0.into())).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(kind: &str, keys: &[&str]) -> Secret {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s", "namespace": "n"},
            "type": kind,
            "data": keys.iter().map(|k| (k.to_string(), serde_json::json!("UEVN"))).collect::<serde_json::Map<_, _>>(),
        }))
        .expect("secret")
    }

    #[test]
    fn only_complete_tls_secrets_are_kept() {
        let kept = tls_secret(secret(
            "kubernetes.io/tls",
            &["tls.crt", "tls.key", "ca.crt"],
        ));
        assert_eq!(
            kept.map(|s| s.cert),
            Some(bytes::Bytes::from_static(b"PEM"))
        );
        assert!(tls_secret(secret("Opaque", &["tls.crt", "tls.key"])).is_none());
        assert!(tls_secret(secret("kubernetes.io/tls", &["tls.crt"])).is_none());
    }

    #[test]
    fn opaque_secrets_keep_their_data_and_never_show_it() {
        let kept = opaque_secret(secret("Opaque", &["auth"])).expect("opaque");
        assert_eq!(kept.0["auth"], bytes::Bytes::from_static(b"PEM"));
        assert_eq!(format!("{kept:?}"), "{\"auth\"}");
        assert!(opaque_secret(secret("kubernetes.io/tls", &["auth"])).is_none());
    }

    #[test]
    fn service_ports_keep_names_and_numbers() {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "n"},
            "spec": {"ports": [{"name": "http", "port": 80}, {"port": 9000}]}
        }))
        .expect("service");
        assert_eq!(
            service_ports(service),
            Some(ServicePorts(vec![
                ("http".into(), 80),
                (String::new(), 9000)
            ]))
        );
    }

    #[test]
    fn a_status_only_change_translates_the_same() {
        let route = |generation: i64, status: serde_json::Value| -> HttpRoute {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "r", "namespace": "n", "generation": generation,
                             "resourceVersion": status.to_string()},
                "spec": {"parentRefs": [{"name": "edge"}]},
                "status": status,
            }))
            .expect("route")
        };
        let same = (http_routes().same)(
            &route(1, serde_json::json!({"parents": []})),
            &route(1, serde_json::json!({"parents": [{"controllerName": "x"}]})),
        );
        assert!(same);
        let bumped = (http_routes().same)(
            &route(1, serde_json::json!({})),
            &route(2, serde_json::json!({})),
        );
        assert!(!bumped);
    }
}
