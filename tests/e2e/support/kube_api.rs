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
//! Layout: this file is the control surface tests use (start, stop, apply objects, wait);
//! `store.rs` the versioned state, `selectors.rs` label and field selectors,
//! `protocol.rs` routing and list/watch responses, `objects.rs` the route kinds.
//!
//! Control methods are synchronous (they only touch in-memory state) except `start`,
//! `stop`, `restart` and the `wait_for_*` helpers.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};

#[path = "kube_api/objects.rs"]
mod objects;
#[path = "kube_api/protocol.rs"]
mod protocol;
#[path = "kube_api/selectors.rs"]
mod selectors;
#[path = "kube_api/store.rs"]
mod store;
use protocol::*;
use selectors::*;
use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use store::*;

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
    /// kubectl against the double, with its discovery cache in `cache` (private, so
    /// tests never share or pollute `~/.kube/cache`).
    pub fn kubectl(&self, cache: &tempfile::TempDir, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(kubectl_path());
        command
            .arg("--kubeconfig")
            .arg(self.kubeconfig_path())
            .arg("--cache-dir")
            .arg(cache.path())
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs kubectl with a fresh cache; asserts it succeeds and returns its stdout.
    pub async fn kubectl_stdout(&self, args: &[&str]) -> Vec<u8> {
        let cache = tempfile::tempdir().expect("cache dir");
        let out =
            tokio::time::timeout(Duration::from_secs(30), self.kubectl(&cache, args).output())
                .await
                .expect("kubectl finishes")
                .expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\nrequests: {:#?}",
            String::from_utf8_lossy(&out.stderr),
            self.requests()
        );
        out.stdout
    }

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

    /// From now on every request is answered `delay` late, like an API server under
    /// load (a list, a watch's first byte, a status patch alike).
    pub fn set_delay(&self, delay: Duration) {
        self.inner.store().delay = delay;
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
    // As on a real API server (Go sets TCP_NODELAY on every connection): with Nagle, a
    // watch event written while the previous one is unacknowledged waits for the
    // client's delayed ACK, about 40 ms (benches/README.md, cluster_routes.rs).
    let _ = tcp.set_nodelay(true);
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
            let delay = inner.store().delay;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
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

fn kubectl_path() -> PathBuf {
    ["/usr/local/bin/kubectl", "/usr/bin/kubectl"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            let out = std::process::Command::new("which")
                .arg("kubectl")
                .output()
                .ok()?;
            let path = String::from_utf8(out.stdout).ok()?;
            Some(PathBuf::from(path.trim())).filter(|p| p.exists())
        })
        .expect("kubectl is installed (setup installs it)")
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
