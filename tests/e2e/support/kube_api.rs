//! An in-process double of the Kubernetes API server, for testing discovery against the
//! real client libraries (kube-rs, kubectl) without a cluster.
//!
//! It speaks the real wire protocol rather than a simplified one, because the failure
//! modes worth testing live in the protocol: list responses carry a `resourceVersion`
//! and paginate with opaque `continue` tokens; `watch=true` answers a 200 chunked stream
//! of newline-delimited JSON events; an expired `resourceVersion` is reported *inside*
//! that 200 stream as an `ERROR` event with a 410 `Status` (a client that only looks at
//! HTTP status codes loops forever); bookmarks, `timeoutSeconds`, selectors and
//! `sendInitialEvents` behave as on a real server. It is served over TLS (its own CA)
//! and requires the bearer token from the kubeconfig it writes, so clients exercise
//! the same TLS and auth code paths as against a cluster.
//!
//! State is versioned like etcd: one global, monotonically increasing resourceVersion;
//! every change is kept in a bounded history (with the object's previous state) so
//! watches can resume from any retained version and paginated lists stay consistent
//! snapshots across pages. Versions older than the retained window are "compacted":
//! watches starting there get the in-stream 410, continue tokens get an HTTP 410.
//!
//! Served paths (GET only):
//! - discovery: `/api`, `/apis`, `/api/v1`, `/apis/discovery.k8s.io[/v1]`, `/version`,
//!   `/healthz`, `/livez`, `/readyz`;
//! - `services`, `endpoints` (core/v1) and `endpointslices` (discovery.k8s.io/v1), each
//!   as a namespaced collection (list or watch), a cluster-wide collection, and a
//!   single object (get, or watch of that one object).
//!
//! Query parameters: `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
//! `k notin (a,b)`), `fieldSelector` (`metadata.name`, `metadata.namespace` with `=`,
//! `==`, `!=`), `limit`, `continue`, `resourceVersion`, `resourceVersionMatch`
//! (`NotOlderThan`, `Exact`), `watch`, `allowWatchBookmarks`, `timeoutSeconds`,
//! `sendInitialEvents`. Anything malformed gets a 400 `Status`, as on a real server.
//!
//! Control methods are synchronous (they only touch in-memory state) except `start`,
//! `stop`, `restart` and the `wait_for_*` helpers.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};

#[path = "kube_api/objects.rs"]
mod objects;
use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Map, Value};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// The resourceVersion of an empty store. Non-zero, because "0" means "any version"
/// in the protocol.
const FIRST_RESOURCE_VERSION: u64 = 100;

/// Changes kept for watch resumption unless [`KubeApi::set_history_limit`] says
/// otherwise; large enough that no test falls out of the window by accident.
const DEFAULT_HISTORY_LIMIT: usize = 10_000;

/// How often the `wait_for_*` helpers re-check; they poll because a watch closes
/// asynchronously (when the client or the connection goes away).
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// A Service port's `targetPort`: a number, or the name of a container port (which
/// EndpointSlices then resolve per pod, possibly to different numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetPort<'a> {
    Number(u16),
    Name(&'a str),
}

/// One entry of an EndpointSlice's `endpoints`. `None` conditions are left out of the
/// JSON, as a real controller may do (clients must treat an absent `ready` as ready).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub addresses: Vec<String>,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

impl Endpoint {
    /// A running, ready pod: what the EndpointSlice controller writes for it.
    pub fn ready(address: &str) -> Endpoint {
        Endpoint::with(address, true, true, false)
    }

    /// A pod that is up but failing its readiness probe.
    pub fn not_ready(address: &str) -> Endpoint {
        Endpoint::with(address, false, false, false)
    }

    /// A pod being deleted; `serving` says whether it still passes its readiness probe.
    pub fn terminating(address: &str, serving: bool) -> Endpoint {
        Endpoint::with(address, false, serving, true)
    }

    fn with(address: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint {
            addresses: vec![address.to_owned()],
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }
    }
}

/// One subset of a legacy core/v1 Endpoints object. Ports are `(name, port)`; a `None`
/// name is omitted from the JSON, as for a Service with a single unnamed port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSubset {
    pub addresses: Vec<String>,
    pub not_ready_addresses: Vec<String>,
    pub ports: Vec<(Option<String>, u16)>,
}

/// The API server double. Dropping it shuts the server down.
pub struct KubeApi {
    inner: Arc<Inner>,
    server: tokio::sync::Mutex<Option<Server>>,
    kubeconfig: PathBuf,
    ca_pem: String,
    /// Owns the kubeconfig file.
    _dir: tempfile::TempDir,
}

/// A running accept loop; `shutdown` makes it close the listener and every connection.
struct Server {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

struct Inner {
    addr: SocketAddr,
    token: String,
    tls: TlsAcceptor,
    store: Mutex<Store>,
}

impl KubeApi {
    /// Generates a CA and a server certificate for 127.0.0.1/localhost, listens on an
    /// ephemeral loopback port and writes a kubeconfig pointing at it.
    pub async fn start() -> KubeApi {
        let (ca_pem, tls) = pki();
        let listener =
            listen("127.0.0.1:0".parse().expect("loopback address")).expect("kube double listen");
        let addr = listener.local_addr().expect("kube double local address");
        let token = format!("{:032x}", rand::random::<u128>());
        let dir = tempfile::tempdir().expect("kube double tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(addr, &ca_pem, &token))
            .expect("write kubeconfig");
        let inner = Arc::new(Inner {
            addr,
            token,
            tls,
            store: Mutex::new(Store::new()),
        });
        let server = Server::spawn(listener, inner.clone());
        KubeApi {
            inner,
            server: tokio::sync::Mutex::new(Some(server)),
            kubeconfig,
            ca_pem,
            _dir: dir,
        }
    }

    /// The listening address: 127.0.0.1 and an ephemeral port, kept across restarts.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `https://127.0.0.1:PORT`, the `server` of the kubeconfig.
    pub fn url(&self) -> String {
        format!("https://{}", self.inner.addr)
    }

    /// A kubeconfig (current context `double`, namespace `default`) with the CA inline
    /// and a token user. It lives as long as the double.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The bearer token every request must carry.
    pub fn token(&self) -> &str {
        &self.inner.token
    }

    /// The CA certificate (PEM) that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> String {
        self.inner.store().rv.to_string()
    }

    /// Creates or updates a Service (ClusterIP, TCP). `ports` are
    /// `(name, port, targetPort)`. Returns the object's resourceVersion; an update that
    /// changes nothing is a no-op (no new version, no event), as on a real server.
    pub fn apply_service(
        &self,
        namespace: &str,
        name: &str,
        ports: &[(Option<&str>, u16, TargetPort<'_>)],
    ) -> String {
        let ports: Vec<Value> = ports
            .iter()
            .map(|(port_name, port, target)| {
                let mut p = json!({"protocol": "TCP", "port": port});
                if let Some(port_name) = port_name {
                    p["name"] = json!(port_name);
                }
                p["targetPort"] = match target {
                    TargetPort::Number(n) => json!(n),
                    TargetPort::Name(s) => json!(s),
                };
                p
            })
            .collect();
        let mut store = self.inner.store();
        let key = Key::new(Kind::Service, namespace, name);
        // Keep an existing cluster IP: a real server never reallocates it on update.
        let cluster_ip = store
            .objects
            .get(&key)
            .and_then(|s| s["spec"]["clusterIP"].as_str().map(str::to_owned))
            .unwrap_or_else(|| {
                let n = store.next_uid;
                format!("10.96.{}.{}", (n / 250) % 250, n % 250 + 1)
            });
        let mut body = Map::new();
        body.insert(
            "spec".into(),
            json!({
                "ports": ports,
                "selector": {"app": name},
                "clusterIP": cluster_ip,
                "clusterIPs": [cluster_ip],
                "type": "ClusterIP",
                "sessionAffinity": "None",
                "ipFamilies": ["IPv4"],
                "ipFamilyPolicy": "SingleStack",
                "internalTrafficPolicy": "Cluster",
            }),
        );
        body.insert("status".into(), json!({"loadBalancer": {}}));
        store.upsert(key, Map::new(), body)
    }

    /// Deletes a Service; returns whether it existed.
    pub fn delete_service(&self, namespace: &str, name: &str) -> bool {
        self.inner
            .store()
            .delete(Key::new(Kind::Service, namespace, name))
    }

    /// Creates or updates an EndpointSlice of `service_name` (label
    /// `kubernetes.io/service-name`), as the EndpointSlice controller writes it:
    /// `addressType` IPv6 if any address is IPv6, else IPv4; ports are
    /// `(name, port)` with TCP, and an unnamed port gets `"name": ""` exactly like the
    /// controller does for a Service's single unnamed port. Emits ADDED or MODIFIED;
    /// returns the resourceVersion (an unchanged object is a no-op).
    pub fn apply_endpoint_slice(
        &self,
        namespace: &str,
        slice_name: &str,
        service_name: &str,
        ports: &[(Option<&str>, u16)],
        endpoints: &[Endpoint],
    ) -> String {
        let ipv6 = endpoints
            .iter()
            .flat_map(|e| &e.addresses)
            .any(|a| a.parse::<Ipv6Addr>().is_ok());
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|e| {
                let mut conditions = Map::new();
                for (field, value) in [
                    ("ready", e.ready),
                    ("serving", e.serving),
                    ("terminating", e.terminating),
                ] {
                    if let Some(v) = value {
                        conditions.insert(field.into(), json!(v));
                    }
                }
                json!({"addresses": e.addresses, "conditions": conditions})
            })
            .collect();
        let ports: Vec<Value> = ports
            .iter()
            .map(
                |(name, port)| json!({"name": name.unwrap_or(""), "port": port, "protocol": "TCP"}),
            )
            .collect();
        let mut labels = Map::new();
        labels.insert(SERVICE_NAME_LABEL.into(), json!(service_name));
        labels.insert(
            "endpointslice.kubernetes.io/managed-by".into(),
            json!("endpointslice-controller.k8s.io"),
        );
        let mut body = Map::new();
        body.insert(
            "addressType".into(),
            json!(if ipv6 { "IPv6" } else { "IPv4" }),
        );
        body.insert("endpoints".into(), Value::Array(endpoints));
        body.insert("ports".into(), Value::Array(ports));
        self.inner.store().upsert(
            Key::new(Kind::EndpointSlice, namespace, slice_name),
            labels,
            body,
        )
    }

    /// Deletes an EndpointSlice (a DELETED event); returns whether it existed.
    pub fn delete_endpoint_slice(&self, namespace: &str, name: &str) -> bool {
        self.inner
            .store()
            .delete(Key::new(Kind::EndpointSlice, namespace, name))
    }

    /// Creates or updates a legacy core/v1 Endpoints object (named like its Service).
    /// Empty address lists are omitted from the JSON, as the real server does.
    pub fn apply_endpoints(
        &self,
        namespace: &str,
        name: &str,
        subsets: &[EndpointSubset],
    ) -> String {
        let addresses =
            |list: &[String]| -> Vec<Value> { list.iter().map(|ip| json!({"ip": ip})).collect() };
        let subsets: Vec<Value> = subsets
            .iter()
            .map(|s| {
                let mut subset = Map::new();
                if !s.addresses.is_empty() {
                    subset.insert("addresses".into(), json!(addresses(&s.addresses)));
                }
                if !s.not_ready_addresses.is_empty() {
                    subset.insert(
                        "notReadyAddresses".into(),
                        json!(addresses(&s.not_ready_addresses)),
                    );
                }
                let ports: Vec<Value> = s
                    .ports
                    .iter()
                    .map(|(name, port)| {
                        let mut p = json!({"port": port, "protocol": "TCP"});
                        if let Some(name) = name {
                            p["name"] = json!(name);
                        }
                        p
                    })
                    .collect();
                subset.insert("ports".into(), Value::Array(ports));
                Value::Object(subset)
            })
            .collect();
        let mut body = Map::new();
        if !subsets.is_empty() {
            body.insert("subsets".into(), Value::Array(subsets));
        }
        self.inner
            .store()
            .upsert(Key::new(Kind::Endpoints, namespace, name), Map::new(), body)
    }

    /// Deletes a legacy Endpoints object; returns whether it existed.
    pub fn delete_endpoints(&self, namespace: &str, name: &str) -> bool {
        self.inner
            .store()
            .delete(Key::new(Kind::Endpoints, namespace, name))
    }

    /// Keeps at most `changes` changes for watch resumption (the "compaction" window);
    /// older versions then get the 410 described in the module docs.
    pub fn set_history_limit(&self, changes: usize) {
        let mut store = self.inner.store();
        store.history_limit = changes;
        store.trim_history();
    }

    /// Compacts all history: a watch from any version handed out so far gets the
    /// in-stream 410 `Expired` ERROR, open watches receive it and end, and old continue
    /// tokens get an HTTP 410. The global resourceVersion advances by one (on a real
    /// cluster other objects keep writing), so a fresh list returns a version that
    /// *can* be watched from; without that the client would relist into a 410 forever.
    pub fn expire_history(&self) {
        let mut store = self.inner.store();
        store.rv += 1;
        store.floor = store.rv;
        store.history.clear();
        let floor = store.floor;
        for watcher in store.watchers.drain(..) {
            let line = event_line("ERROR", &expired_status(watcher.last_rv, floor));
            let _ = watcher.tx.send(WatchMsg::Last(line));
        }
    }

    /// Ends every open watch stream cleanly (terminating chunk, no error), as the real
    /// server does when `timeoutSeconds` passes. Clients are expected to re-watch from
    /// their last version.
    pub fn close_watches(&self) {
        for watcher in self.inner.store().watchers.drain(..) {
            let _ = watcher.tx.send(WatchMsg::Close);
        }
    }

    /// Sends a BOOKMARK at the current global resourceVersion to every open watch that
    /// asked for bookmarks (`allowWatchBookmarks=true`).
    pub fn send_bookmarks(&self) {
        let mut store = self.inner.store();
        let rv = store.rv;
        for watcher in store.watchers.iter_mut().filter(|w| w.bookmarks) {
            let line = event_line("BOOKMARK", &bookmark(watcher.filter.kind, rv, false));
            if watcher.tx.send(WatchMsg::Event(line)).is_ok() {
                watcher.last_rv = rv;
            }
        }
    }

    /// Watch streams currently open (registered and not yet closed by either side).
    pub fn watchers(&self) -> usize {
        let mut store = self.inner.store();
        store.prune_watchers();
        store.watchers.len()
    }

    /// Waits until at least `n` watch streams are open; panics after `timeout` with the
    /// requests seen, so a test never sleeps blindly for a client to connect.
    pub async fn wait_for_watchers(&self, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let open = self.watchers();
            if open >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{open} watch streams open after {timeout:?}, want {n}; requests: {:#?}",
                self.requests()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until at most `n` watch streams are open (clients went away, or stopped
    /// watching); panics after `timeout`.
    pub async fn wait_for_watchers_at_most(&self, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let open = self.watchers();
            if open <= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{open} watch streams still open after {timeout:?}, want at most {n}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Every request target (path and query string, exactly as sent, so still
    /// percent-encoded), in arrival order, including rejected ones.
    pub fn requests(&self) -> Vec<String> {
        self.inner.store().requests.clone()
    }

    /// The `User-Agent` of every request (empty if none), aligned with
    /// [`Self::requests`].
    pub fn user_agents(&self) -> Vec<String> {
        self.inner.store().user_agents.clone()
    }

    /// Waits for a request, among those after the first `since`, for which `matches`
    /// holds, and returns it; panics after `timeout`. With `since = requests().len()`
    /// taken before an action this asserts what the client did in reaction to it.
    pub async fn wait_for_request(
        &self,
        since: usize,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if let Some(found) = requests.iter().skip(since).find(|r| matches(r)) {
                return found.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no matching request after {timeout:?}; requests since #{since}: {:#?}",
                requests.get(since..).unwrap_or_default()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Takes the server away: the listening socket is closed (connections are refused)
    /// and every open connection, watch streams included, is cut. State is kept.
    /// Does nothing if already stopped.
    pub async fn stop(&self) {
        let Some(server) = self.server.lock().await.take() else {
            return;
        };
        let _ = server.shutdown.send(());
        let _ = server.task.await;
        self.inner.store().watchers.clear();
    }

    /// Listens again on the same port with the same state, certificate and token, like
    /// an API server coming back. Does nothing if running.
    pub async fn restart(&self) {
        let mut server = self.server.lock().await;
        if server.is_some() {
            return;
        }
        // The port is almost always free at once; retry briefly in case the kernel
        // handed it to an outgoing connection meanwhile.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match listen(self.inner.addr) {
                Ok(listener) => break listener,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "kube double cannot listen on {} again: {e}",
                        self.inner.addr
                    );
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
        };
        *server = Some(Server::spawn(listener, self.inner.clone()));
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection.
        if let Some(server) = self.server.get_mut().take() {
            server.task.abort();
        }
    }
}

impl Server {
    fn spawn(listener: TcpListener, inner: Arc<Inner>) -> Server {
        let (shutdown, stop) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, inner, stop));
        Server { shutdown, task }
    }
}

/// Binds with SO_REUSEADDR so [`KubeApi::restart`] gets the same port back even while
/// connections the double cut are in TIME_WAIT.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>, mut stop: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // Also taken when the sender is dropped with the double.
            _ = &mut stop => break,
            accepted = listener.accept() => {
                if let Ok((tcp, _)) = accepted {
                    connections.spawn(serve_connection(tcp, inner.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(tcp: TcpStream, inner: Arc<Inner>) {
    let Ok(tls) = inner.tls.accept(tcp).await else {
        return;
    };
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let inner = inner.clone();
        async move {
            use http_body_util::BodyExt;
            let (parts, body) = req.into_parts();
            // Only status patches have a body; anything unreadable is an empty one.
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, Infallible>(inner.handle(&parts, &body))
        }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

/// The self-signed CA (PEM) and a TLS acceptor with a server certificate it signed,
/// offering HTTP/2 and HTTP/1.1 like a real API server (kubectl uses h2, kube-rs h1).
fn pki() -> (String, TlsAcceptor) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "kube-api double CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");

    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .expect("server certificate");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server TLS config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (ca_cert.pem(), TlsAcceptor::from(Arc::new(config)))
}

fn kubeconfig_yaml(addr: SocketAddr, ca_pem: &str, token: &str) -> String {
    let ca = base64(ca_pem.as_bytes(), STANDARD, true);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: double
  cluster:
    server: https://{addr}
    certificate-authority-data: {ca}
users:
- name: double
  user:
    token: {token}
contexts:
- name: double
  context:
    cluster: double
    user: double
    namespace: default
current-context: double
preferences: {{}}
"
    )
}

// ---------------------------------------------------------------------------------------
// Resources and state

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Service,
    Endpoints,
    EndpointSlice,
    Secret,
    Ingress,
    Gateway,
    HttpRoute,
    ReferenceGrant,
}

impl Kind {
    const ALL: [Kind; 8] = [
        Kind::Service,
        Kind::Endpoints,
        Kind::EndpointSlice,
        Kind::Secret,
        Kind::Ingress,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::ReferenceGrant,
    ];

    /// `(group, version)` pairs served under `/apis`, in discovery order.
    const GROUP_VERSIONS: [(&'static str, &'static str); 4] = [
        ("discovery.k8s.io", "v1"),
        ("networking.k8s.io", "v1"),
        ("gateway.networking.k8s.io", "v1"),
        ("gateway.networking.k8s.io", "v1beta1"),
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
            Kind::Ingress => "Ingress",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
        }
    }

    fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn group(self) -> &'static str {
        match self {
            Kind::Service | Kind::Endpoints | Kind::Secret => "",
            Kind::EndpointSlice => "discovery.k8s.io",
            Kind::Ingress => "networking.k8s.io",
            Kind::Gateway | Kind::HttpRoute | Kind::ReferenceGrant => "gateway.networking.k8s.io",
        }
    }

    fn version(self) -> &'static str {
        match self {
            Kind::ReferenceGrant => "v1beta1",
            _ => "v1",
        }
    }

    fn api_version(self) -> String {
        match self.group() {
            "" => self.version().to_owned(),
            group => format!("{group}/{}", self.version()),
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::Endpoints => "endpoints",
            Kind::EndpointSlice => "endpointslices",
            Kind::Secret => "secrets",
            Kind::Ingress => "ingresses",
            Kind::Gateway => "gateways",
            Kind::HttpRoute => "httproutes",
            Kind::ReferenceGrant => "referencegrants",
        }
    }

    fn singular(self) -> String {
        self.name().to_ascii_lowercase()
    }

    fn short_names(self) -> &'static [&'static str] {
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
    fn has_status(self) -> bool {
        matches!(self, Kind::Ingress | Kind::Gateway | Kind::HttpRoute)
    }

    fn from_path(group: &str, version: &str, plural: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.version() == version && k.plural() == plural)
    }
}

/// Objects sort by kind, namespace, name: list order (and continue tokens) follow it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    kind: Kind,
    namespace: String,
    name: String,
}

impl Key {
    fn new(kind: Kind, namespace: &str, name: &str) -> Key {
        Key {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One write, with the state before it so history can be undone (snapshots for
/// paginated lists) and watches can tell when an object left their selector.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    key: Key,
    change: ChangeType,
    /// The new state; for a deletion the last state, stamped with the deletion's version.
    object: Value,
    prev: Option<Value>,
}

enum WatchMsg {
    Event(Bytes),
    /// The final event of the stream (the 410 ERROR).
    Last(Bytes),
    Close,
}

struct Watcher {
    filter: Filter,
    bookmarks: bool,
    /// The version of the last event this stream was given (for the 410 message).
    last_rv: u64,
    tx: mpsc::UnboundedSender<WatchMsg>,
}

struct Store {
    rv: u64,
    /// History is complete for every version > `floor`; older ones are "compacted".
    floor: u64,
    history_limit: usize,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Change>,
    watchers: Vec<Watcher>,
    requests: Vec<String>,
    user_agents: Vec<String>,
    next_uid: u64,
    uid_prefix: u32,
    /// Status patches answer 403, as without RBAC for the status subresource.
    refuse_status: bool,
    /// Status patches received (refused ones included), as `KIND NS/NAME`.
    status_patches: Vec<String>,
}

impl Inner {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().expect("kube double state")
    }
}

impl Store {
    fn new() -> Store {
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
        }
    }

    /// Creates or replaces an object from its labels and top-level fields (all but
    /// kind/apiVersion/metadata); returns its resourceVersion.
    fn upsert(&mut self, key: Key, labels: Map<String, Value>, body: Map<String, Value>) -> String {
        let old = self.objects.get(&key).cloned();
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

    fn delete(&mut self, key: Key) -> bool {
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
    fn record(&mut self, change: Change) {
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

    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(oldest) = self.history.pop_front() {
                self.floor = oldest.rv;
            }
        }
    }

    fn prune_watchers(&mut self) {
        self.watchers.retain(|w| !w.tx.is_closed());
    }

    /// The objects as they were at `rv` (which must be within the history window),
    /// rebuilt by undoing newer changes.
    fn snapshot(&self, rv: u64) -> Cow<'_, BTreeMap<Key, Value>> {
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

// ---------------------------------------------------------------------------------------
// Selectors

/// What a list or watch asked for: a resource, optionally one namespace, selectors.
struct Filter {
    kind: Kind,
    namespace: Option<String>,
    labels: Vec<LabelRequirement>,
    fields: Vec<FieldRequirement>,
}

enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

struct FieldRequirement {
    /// `true` for metadata.name, `false` for metadata.namespace.
    name: bool,
    value: String,
    equal: bool,
    /// The top-level `type` field instead (Secrets only, as on a real server).
    top_level_type: bool,
}

impl Filter {
    fn parse(kind: Kind, namespace: Option<String>, query: &Query) -> Result<Filter, String> {
        Ok(Filter {
            kind,
            namespace,
            labels: parse_label_selector(query.get("labelSelector").unwrap_or(""))?,
            fields: parse_field_selector(kind, query.get("fieldSelector").unwrap_or(""))?,
        })
    }

    fn selects_all(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    fn covers(&self, key: &Key) -> bool {
        key.kind == self.kind
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == key.namespace)
    }

    fn matches(&self, object: &Value) -> bool {
        let metadata = &object["metadata"];
        let label = |k: &str| metadata["labels"][k].as_str();
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::DoesNotExist(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|f| {
                let actual = if f.top_level_type {
                    object["type"].as_str()
                } else {
                    let field = if f.name { "name" } else { "namespace" };
                    metadata[field].as_str()
                };
                (actual == Some(f.value.as_str())) == f.equal
            })
    }

    /// The event line this watch gets for a change, if any. As on a real server, an
    /// object that starts matching the selector is ADDED and one that stops is DELETED.
    fn render(&self, change: &Change) -> Option<Bytes> {
        if !self.covers(&change.key) {
            return None;
        }
        let before = change.prev.as_ref().is_some_and(|p| self.matches(p));
        let (event, object) = match change.change {
            ChangeType::Deleted => (before.then_some("DELETED"), Cow::Borrowed(&change.object)),
            ChangeType::Added | ChangeType::Modified => {
                match (before, self.matches(&change.object)) {
                    (true, true) => (Some("MODIFIED"), Cow::Borrowed(&change.object)),
                    (false, true) => (Some("ADDED"), Cow::Borrowed(&change.object)),
                    (true, false) => {
                        let mut gone = change.prev.clone().unwrap_or_default();
                        gone["metadata"]["resourceVersion"] = json!(change.rv.to_string());
                        (Some("DELETED"), Cow::Owned(gone))
                    }
                    (false, false) => (None, Cow::Borrowed(&change.object)),
                }
            }
        };
        event.map(|event| event_line(event, &object))
    }
}

fn is_label_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
}

fn is_label_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Splits a selector at the commas that separate requirements (not those in `in (a,b)`).
fn requirements(selector: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&selector[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect()
}

fn parse_label_selector(selector: &str) -> Result<Vec<LabelRequirement>, String> {
    let invalid = |r: &str| format!("unable to parse requirement: {r:?}");
    let mut out = Vec::new();
    for r in requirements(selector) {
        let set = [(" notin ", false), (" in ", true)]
            .into_iter()
            .find_map(|(op, is_in)| r.split_once(op).map(|(k, v)| (k, v, is_in)));
        let parsed = if let Some((key, values, is_in)) = set {
            let values = values
                .trim()
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(|| invalid(r))?;
            let values: Vec<String> = values.split(',').map(|v| v.trim().to_owned()).collect();
            if values.iter().any(|v| !is_label_value(v)) {
                return Err(invalid(r));
            }
            let key = key.trim().to_owned();
            if is_in {
                (key.clone(), LabelRequirement::In(key, values))
            } else {
                (key.clone(), LabelRequirement::NotIn(key, values))
            }
        } else if let Some(key) = r.strip_prefix('!') {
            let key = key.trim().to_owned();
            (key.clone(), LabelRequirement::DoesNotExist(key))
        } else if let Some((k, v)) = r.split_once("!=") {
            let (k, v) = (k.trim().to_owned(), v.trim().to_owned());
            if !is_label_value(&v) {
                return Err(invalid(r));
            }
            (k.clone(), LabelRequirement::NotEquals(k, v))
        } else if let Some((k, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
            let (k, v) = (k.trim().to_owned(), v.trim().to_owned());
            if !is_label_value(&v) {
                return Err(invalid(r));
            }
            (k.clone(), LabelRequirement::Equals(k, v))
        } else {
            (r.to_owned(), LabelRequirement::Exists(r.to_owned()))
        };
        if !is_label_key(&parsed.0) {
            return Err(invalid(r));
        }
        out.push(parsed.1);
    }
    Ok(out)
}

fn parse_field_selector(kind: Kind, selector: &str) -> Result<Vec<FieldRequirement>, String> {
    let mut out = Vec::new();
    for r in requirements(selector) {
        let (field, value, equal) = if let Some((f, v)) = r.split_once("!=") {
            (f, v, false)
        } else if let Some((f, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
            (f, v, true)
        } else {
            return Err(format!("invalid selector: '{r}'; can't understand '{r}'"));
        };
        let (name, top_level_type) = match field.trim() {
            "metadata.name" => (true, false),
            "metadata.namespace" => (false, false),
            "type" if kind == Kind::Secret => (false, true),
            other => return Err(format!("field label not supported: {other}")),
        };
        out.push(FieldRequirement {
            name,
            value: value.trim().to_owned(),
            equal,
            top_level_type,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// HTTP

/// A response body: a whole JSON document, or a watch stream fed by the store through
/// a channel. The watch ends when the channel says so or closes, or at its deadline
/// (`timeoutSeconds`); dropping it (the client went away) closes the channel, which is
/// how the store knows the watch is gone.
enum ApiBody {
    Full(Option<Bytes>),
    Watch {
        rx: mpsc::UnboundedReceiver<WatchMsg>,
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
        done: bool,
    },
}

impl Body for ApiBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ApiBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ApiBody::Watch { rx, deadline, done } => {
                if *done {
                    return Poll::Ready(None);
                }
                let expired = deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                let frame = if expired {
                    None
                } else {
                    match rx.poll_recv(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Some(WatchMsg::Event(line))) => {
                            return Poll::Ready(Some(Ok(Frame::data(line))))
                        }
                        Poll::Ready(Some(WatchMsg::Last(line))) => Some(Ok(Frame::data(line))),
                        Poll::Ready(Some(WatchMsg::Close) | None) => None,
                    }
                };
                *done = true;
                rx.close();
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ApiBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ApiBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ApiBody::Watch { .. } => SizeHint::default(),
        }
    }
}

type ApiResponse = Response<ApiBody>;

/// The query string, percent-decoded. kube-rs sends `?&watch=true…` (a leading empty
/// pair), which must be tolerated.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        Query(
            raw.unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter, parsed like Go's `strconv.ParseBool` (`watch=1` works).
    fn flag(&self, key: &str) -> bool {
        matches!(
            self.get(key),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True")
        )
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

enum Route {
    Document(Value),
    Text(&'static str),
    Collection {
        kind: Kind,
        namespace: Option<String>,
    },
    Object {
        kind: Kind,
        namespace: String,
        name: String,
    },
    /// An object's status subresource: GET, or PATCH with a merge patch.
    Status {
        kind: Kind,
        namespace: String,
        name: String,
    },
    NotFound,
}

impl Inner {
    fn handle(&self, req: &http::request::Parts, body: &[u8]) -> ApiResponse {
        let uri = &req.uri;
        let target = uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
        let user_agent = req
            .headers
            .get(http::header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        {
            let mut store = self.store();
            store.requests.push(target);
            store.user_agents.push(user_agent);
        }

        let bearer = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer != Some(self.token.as_str()) {
            return status(401, "Unauthorized", "Unauthorized", None);
        }
        let route = self.route(uri.path());
        if let Route::Status {
            kind,
            namespace,
            name,
        } = &route
        {
            let key = Key::new(*kind, namespace, name);
            return match req.method {
                http::Method::GET => self.get(&key),
                http::Method::PATCH => self.patch_status(&key, &req.headers, body),
                _ => status(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                    None,
                ),
            };
        }
        if req.method == http::Method::POST {
            if let Route::Collection {
                kind,
                namespace: Some(namespace),
            } = &route
            {
                return self.create(*kind, namespace, body);
            }
        }
        if req.method != http::Method::GET {
            return status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                None,
            );
        }
        let query = Query::parse(uri.query());
        match route {
            Route::Status { .. } => status(500, "InternalError", "status routed above", None),
            Route::Document(doc) => json_response(200, &doc),
            Route::Text(text) => Response::builder()
                .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(ApiBody::Full(Some(Bytes::from_static(text.as_bytes()))))
                .expect("text response"),
            Route::Collection { kind, namespace } => {
                let result = Filter::parse(kind, namespace, &query).and_then(|filter| {
                    if query.flag("watch") {
                        self.watch(filter, &query)
                    } else {
                        self.list(&filter, &query)
                    }
                });
                result.unwrap_or_else(|message| status(400, "BadRequest", &message, None))
            }
            Route::Object {
                kind,
                namespace,
                name,
            } if query.flag("watch") => {
                // The legacy single-object watch: a collection watch on that name.
                let result = Filter::parse(kind, Some(namespace), &query).and_then(|mut filter| {
                    filter.fields.push(FieldRequirement {
                        name: true,
                        value: name,
                        equal: true,
                        top_level_type: false,
                    });
                    self.watch(filter, &query)
                });
                result.unwrap_or_else(|message| status(400, "BadRequest", &message, None))
            }
            Route::Object {
                kind,
                namespace,
                name,
            } => self.get(&Key::new(kind, &namespace, &name)),
            Route::NotFound => status(
                404,
                "NotFound",
                "the server could not find the requested resource",
                None,
            ),
        }
    }

    fn route(&self, path: &str) -> Route {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, rest) = match segments.as_slice() {
            ["version"] => return Route::Document(version()),
            ["healthz" | "livez" | "readyz"] => return Route::Text("ok"),
            ["api"] => return Route::Document(self.api_versions()),
            ["apis"] => {
                let groups: Vec<Value> = groups().into_iter().map(|(_, g)| g).collect();
                return Route::Document(json!({
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": groups,
                }));
            }
            ["apis", name] => {
                return match groups().into_iter().find(|(n, _)| n == name) {
                    Some((_, mut group)) => {
                        group["kind"] = json!("APIGroup");
                        group["apiVersion"] = json!("v1");
                        Route::Document(group)
                    }
                    None => Route::NotFound,
                }
            }
            ["api", "v1"] => return Route::Document(resource_list("", "v1")),
            ["apis", group, version] if Kind::GROUP_VERSIONS.contains(&(group, version)) => {
                return Route::Document(resource_list(group, version))
            }
            ["api", "v1", rest @ ..] => (("", "v1"), rest),
            ["apis", group, version, rest @ ..]
                if Kind::GROUP_VERSIONS.contains(&(group, version)) =>
            {
                ((*group, *version), rest)
            }
            _ => return Route::NotFound,
        };
        let resource = |plural: &str| Kind::from_path(group.0, group.1, plural);
        match rest {
            [plural] => resource(plural).map(|kind| Route::Collection {
                kind,
                namespace: None,
            }),
            ["namespaces", ns, plural] => resource(plural).map(|kind| Route::Collection {
                kind,
                namespace: Some((*ns).to_owned()),
            }),
            ["namespaces", ns, plural, name] => resource(plural).map(|kind| Route::Object {
                kind,
                namespace: (*ns).to_owned(),
                name: (*name).to_owned(),
            }),
            ["namespaces", ns, plural, name, "status"] => resource(plural)
                .filter(|k| k.has_status())
                .map(|kind| Route::Status {
                    kind,
                    namespace: (*ns).to_owned(),
                    name: (*name).to_owned(),
                }),
            _ => None,
        }
        .unwrap_or(Route::NotFound)
    }

    fn api_versions(&self) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": self.addr.to_string()}
            ],
        })
    }

    fn get(&self, key: &Key) -> ApiResponse {
        match self.store().objects.get(key) {
            Some(object) => json_response(200, object),
            None => {
                let mut details = json!({"name": key.name, "kind": key.kind.plural()});
                if !key.kind.group().is_empty() {
                    details["group"] = json!(key.kind.group());
                }
                let message = format!("{} \"{}\" not found", key.kind.plural(), key.name);
                status(404, "NotFound", &message, Some(details))
            }
        }
    }

    fn list(&self, filter: &Filter, query: &Query) -> Result<ApiResponse, String> {
        let limit = match query.get("limit").filter(|l| !l.is_empty()) {
            None => 0,
            Some(l) => l
                .parse::<usize>()
                .map_err(|_| format!("invalid limit: {l:?}"))?,
        };
        let store = self.store();
        let (rv, after) = match query.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => {
                let (rv, after) = decode_continue(token)
                    .ok_or_else(|| format!("continue key is not valid: {token:?}"))?;
                if rv < store.floor {
                    return Ok(status(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent \
                         list result. You can start a new list without the continue parameter.",
                        None,
                    ));
                }
                (rv, Some(after))
            }
            None => {
                let requested = query.get("resourceVersion").unwrap_or("");
                let exact = match query.get("resourceVersionMatch").unwrap_or("") {
                    "" => None,
                    "NotOlderThan" => Some(false),
                    "Exact" => Some(true),
                    other => return Err(format!("unsupported resourceVersionMatch {other:?}")),
                };
                match requested {
                    "" | "0" if exact == Some(true) => {
                        return Err(format!(
                            "resourceVersionMatch \"Exact\" is forbidden for resourceVersion {requested:?}"
                        ))
                    }
                    "" if exact.is_some() => {
                        return Err(
                            "resourceVersionMatch is forbidden unless resourceVersion is provided"
                                .to_owned(),
                        )
                    }
                    "" | "0" => (store.rv, None),
                    n => {
                        let n: u64 = n
                            .parse()
                            .map_err(|_| format!("invalid resourceVersion {n:?}"))?;
                        if n > store.rv {
                            return Ok(too_large(n, store.rv));
                        }
                        // Without resourceVersionMatch a paginated list at a version
                        // means exactly that version (the legacy semantics).
                        if exact.unwrap_or(limit > 0) {
                            if n < store.floor {
                                return Ok(status(
                                    410,
                                    "Expired",
                                    &format!("too old resource version: {n} ({})", store.floor),
                                    None,
                                ));
                            }
                            (n, None)
                        } else {
                            (store.rv, None)
                        }
                    }
                }
            }
        };
        let snapshot = store.snapshot(rv);
        let mut items: Vec<(&Key, &Value)> = snapshot
            .iter()
            .filter(|(key, object)| filter.covers(key) && filter.matches(object))
            .filter(|(key, _)| {
                after
                    .as_ref()
                    .is_none_or(|(ns, name)| (&key.namespace, &key.name) > (ns, name))
            })
            .collect();
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if limit > 0 && items.len() > limit {
            let remaining = items.len() - limit;
            items.truncate(limit);
            if let Some((last, _)) = items.last() {
                metadata["continue"] = json!(encode_continue(rv, &last.namespace, &last.name));
            }
            // The real server only counts remaining items when it can do so cheaply.
            if filter.selects_all() {
                metadata["remainingItemCount"] = json!(remaining);
            }
        }
        // List items carry no kind/apiVersion on the wire; the list's own do.
        let items: Vec<Value> = items
            .into_iter()
            .map(|(_, object)| {
                let mut item = object.clone();
                if let Some(item) = item.as_object_mut() {
                    item.remove("kind");
                    item.remove("apiVersion");
                }
                item
            })
            .collect();
        Ok(json_response(
            200,
            &json!({
                "kind": format!("{}List", filter.kind.name()),
                "apiVersion": filter.kind.api_version(),
                "metadata": metadata,
                "items": items,
            }),
        ))
    }

    fn watch(&self, filter: Filter, query: &Query) -> Result<ApiResponse, String> {
        let bookmarks = query.flag("allowWatchBookmarks");
        let initial_events = query.flag("sendInitialEvents");
        let version_match = query.get("resourceVersionMatch").unwrap_or("");
        if initial_events && !bookmarks {
            return Err("sendInitialEvents requires setting allowWatchBookmarks=true".to_owned());
        }
        if initial_events && version_match != "NotOlderThan" {
            return Err(
                "sendInitialEvents requires setting resourceVersionMatch=NotOlderThan".to_owned(),
            );
        }
        if !initial_events && !version_match.is_empty() {
            return Err(
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
                    .to_owned(),
            );
        }
        let timeout = match query.get("timeoutSeconds").filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => Some(
                t.parse::<u64>()
                    .map_err(|_| format!("invalid timeoutSeconds {t:?}"))?,
            )
            .filter(|&t| t > 0)
            .map(Duration::from_secs),
        };
        let start = match query.get("resourceVersion").unwrap_or("") {
            "" | "0" => None,
            n => Some(
                n.parse::<u64>()
                    .map_err(|_| format!("invalid resourceVersion {n:?}"))?,
            ),
        };

        let (tx, rx) = mpsc::unbounded_channel();
        let mut store = self.store();
        let last_rv = match start {
            Some(n) if !initial_events && n < store.floor => {
                // Like the real server: 200, then the 410 inside the stream.
                let line = event_line("ERROR", &expired_status(n, store.floor));
                let _ = tx.send(WatchMsg::Last(line));
                return Ok(watch_response(rx, None));
            }
            Some(n) if !initial_events => {
                let mut last = n;
                for change in store.history.iter().filter(|c| c.rv > n) {
                    if let Some(line) = filter.render(change) {
                        let _ = tx.send(WatchMsg::Event(line));
                        last = change.rv;
                    }
                }
                last
            }
            _ => {
                // No version (or "0"), or a streaming list: synthetic ADDED events for
                // the current state, then for a streaming list the bookmark marking
                // the end of the initial events.
                for (key, object) in &store.objects {
                    if filter.covers(key) && filter.matches(object) {
                        let _ = tx.send(WatchMsg::Event(event_line("ADDED", object)));
                    }
                }
                if initial_events {
                    let end = bookmark(filter.kind, store.rv, true);
                    let _ = tx.send(WatchMsg::Event(event_line("BOOKMARK", &end)));
                }
                store.rv
            }
        };
        store.watchers.push(Watcher {
            filter,
            bookmarks,
            last_rv,
            tx,
        });
        Ok(watch_response(rx, timeout))
    }
}

fn watch_response(rx: mpsc::UnboundedReceiver<WatchMsg>, timeout: Option<Duration>) -> ApiResponse {
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CACHE_CONTROL, "no-cache, private")
        .body(ApiBody::Watch {
            rx,
            deadline: timeout.map(|t| Box::pin(tokio::time::sleep(t))),
            done: false,
        })
        .expect("watch response")
}

fn json_response(code: u16, body: &Value) -> ApiResponse {
    let body = serde_json::to_vec(body).expect("serialize response");
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CACHE_CONTROL, "no-cache, private")
        .body(ApiBody::Full(Some(Bytes::from(body))))
        .expect("json response")
}

fn status_body(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(details) = details {
        status["details"] = details;
    }
    status
}

fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> ApiResponse {
    json_response(code, &status_body(code, reason, message, details))
}

fn too_large(requested: u64, current: u64) -> ApiResponse {
    status(
        504,
        "Timeout",
        &format!("Too large resource version: {requested}, current: {current}"),
        Some(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        })),
    )
}

/// The Status a real server puts in the ERROR event when a watch starts below the
/// compacted version.
fn expired_status(requested: u64, floor: u64) -> Value {
    status_body(
        410,
        "Expired",
        &format!("too old resource version: {requested} ({floor})"),
        None,
    )
}

/// A BOOKMARK object: only kind, apiVersion and the version (plus, for the end of a
/// streaming list's initial events, the `k8s.io/initial-events-end` annotation).
fn bookmark(kind: Kind, rv: u64, initial_events_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": kind.name(), "apiVersion": kind.api_version(), "metadata": metadata})
}

fn event_line(event: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": event, "object": object})).expect("serialize event");
    line.push(b'\n');
    Bytes::from(line)
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// Every API group under `/apis`, by name, with its versions (the first preferred).
fn groups() -> Vec<(&'static str, Value)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for (group, version) in Kind::GROUP_VERSIONS {
        match out.iter_mut().find(|(g, _)| *g == group) {
            Some((_, versions)) => versions.push(version),
            None => out.push((group, vec![version])),
        }
    }
    out.into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
                .collect();
            let preferred = versions[0].clone();
            (
                group,
                json!({"name": group, "versions": versions, "preferredVersion": preferred}),
            )
        })
        .collect()
}

/// The APIResourceList of one group version; only the verbs the double serves.
fn resource_list(group: &str, version: &str) -> Value {
    let mut resources: Vec<Value> = Vec::new();
    for k in Kind::ALL
        .into_iter()
        .filter(|k| k.group() == group && k.version() == version)
    {
        resources.push(json!({
            "name": k.plural(),
            "singularName": k.singular(),
            "namespaced": true,
            "kind": k.name(),
            "verbs": ["get", "list", "watch"],
            "shortNames": k.short_names(),
        }));
        if k.has_status() {
            resources.push(json!({
                "name": format!("{}/status", k.plural()),
                "singularName": "",
                "namespaced": true,
                "kind": k.name(),
                "verbs": ["get", "patch"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

/// Continue tokens look like the real server's: base64url of
/// `{"v":"meta.k8s.io/v1","rv":N,"start":"<key>\u0000"}`, listing resumes after `key`.
fn encode_continue(rv: u64, namespace: &str, name: &str) -> String {
    let token =
        json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{namespace}/{name}\u{0}")});
    base64(token.to_string().as_bytes(), URL_SAFE, false)
}

fn decode_continue(token: &str) -> Option<(u64, (String, String))> {
    let token: Value = serde_json::from_slice(&base64_decode(token, URL_SAFE)?).ok()?;
    let rv = token["rv"].as_u64()?;
    let start = token["start"].as_str()?.trim_end_matches('\u{0}');
    let (namespace, name) = start.split_once('/')?;
    Some((rv, (namespace.to_owned(), name.to_owned())))
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(alphabet[(n >> (18 - 6 * i)) as usize & 63]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str, alphabet: &[u8; 64]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut bits, mut count) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let value = alphabet.iter().position(|&a| a == c)?;
        bits = (bits << 6) | value as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

/// Now, in the seconds-precision RFC 3339 form Kubernetes uses for timestamps.
fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}
