//! Kubernetes discovery: one watch per (namespace, service, api), shared
//! by every upstream that names it, publishing members straight into the pools through
//! [`Update::Endpoints`] (no config reload; members that stay keep their health state).
//!
//! The watcher stream is driven with a capped backoff, so an error (API server gone, a
//! 410 for an expired resourceVersion, a closed stream) never ends it: kube-runtime
//! re-lists and resumes while the last known members stay in use.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event, ExponentialBackoff};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::model::{DiscoveryApi, KubernetesService, Members, Name, ServicePort};
use crate::config::Config;
use crate::control::update::Update;
use crate::telemetry::metrics::Metrics;

use super::endpoint_slices::{from_endpoints, from_slice, members, SliceEndpoints};

/// Retries of a broken watch start at this delay and double up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Spec: reconnect attempts at most 5 seconds apart.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WatchKey {
    namespace: String,
    service: String,
    api: DiscoveryApi,
}

/// What one watch knows, and who listens to it.
#[derive(Default)]
struct WatchState {
    /// Upstreams fed by this watch, each with the Service (and port) it names.
    subscribers: Vec<(Name, KubernetesService)>,
    /// The Service's ports: name -> (port number, target). Needed to map a port given
    /// by number to the name EndpointSlices use.
    service_ports: Vec<(String, u16)>,
    slices: BTreeMap<String, Vec<SliceEndpoints>>,
    synced: bool,
}

struct Watch {
    state: Arc<Mutex<WatchState>>,
    task: JoinHandle<()>,
}

pub struct Discovery {
    updates: mpsc::Sender<Update>,
    metrics: Arc<Metrics>,
    /// Built on first need and kept once it works; a failure is not kept, so credentials
    /// that appear after start (a kubeconfig written later) are picked up.
    client: tokio::sync::Mutex<Option<Client>>,
    watches: Mutex<HashMap<WatchKey, Watch>>,
}

impl Discovery {
    pub fn new(updates: mpsc::Sender<Update>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            updates,
            metrics,
            client: tokio::sync::Mutex::new(None),
            watches: Mutex::new(HashMap::new()),
        })
    }

    /// Credentials from `KUBECONFIG` / `~/.kube/config`, else the in-cluster account.
    async fn client(&self) -> Option<Client> {
        let mut client = self.client.lock().await;
        if client.is_none() {
            *client = connect().await;
        }
        client.clone()
    }

    /// Keeps the watches in line with every config the publisher publishes after the
    /// one [`Self::reconcile`] was last given (`complete`: whether that one got all its
    /// watches). A config whose watches could not all start (no credentials yet) is
    /// retried until they do.
    pub async fn follow(
        self: Arc<Self>,
        mut configs: tokio::sync::watch::Receiver<Arc<Config>>,
        mut complete: bool,
    ) {
        let mut retry = capped_backoff();
        loop {
            tokio::select! {
                changed = configs.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(retry.next().unwrap_or(MAX_BACKOFF)), if !complete => {}
            }
            let config = configs.borrow_and_update().clone();
            complete = self.reconcile(&config).await;
            if complete {
                retry.reset();
            }
        }
    }

    /// Starts watches the config needs, stops those it no longer needs, and points
    /// every watch at its current subscribers. Watches that stay keep running. Returns
    /// whether every watch the config needs is running.
    pub async fn reconcile(self: &Arc<Self>, config: &Config) -> bool {
        let mut wanted: HashMap<WatchKey, Vec<(Name, KubernetesService)>> = HashMap::new();
        for upstream in &config.upstreams {
            if let Members::Kubernetes(k) = &upstream.members {
                wanted
                    .entry(key_of(k))
                    .or_default()
                    .push((upstream.name.clone(), k.clone()));
            }
        }
        let client = if wanted.is_empty() {
            None
        } else {
            self.client().await
        };
        let mut complete = true;
        let mut messages = Vec::new();
        {
            let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
            watches.retain(|key, watch| {
                let keep = wanted.contains_key(key);
                if !keep {
                    tracing::info!(namespace = %key.namespace, service = %key.service, "stopping watch");
                    watch.task.abort();
                }
                keep
            });
            for (key, subscribers) in wanted {
                if let Some(watch) = watches.get(&key) {
                    let mut state = watch.state.lock().unwrap_or_else(|e| e.into_inner());
                    let added: Vec<_> = subscribers
                        .iter()
                        .filter(|s| !state.subscribers.contains(s))
                        .cloned()
                        .collect();
                    state.subscribers = subscribers;
                    if state.synced {
                        for (upstream, source) in added {
                            let endpoints =
                                members(&state.slices, &state.service_ports, &source.port);
                            messages.push(Update::Endpoints {
                                upstream,
                                source,
                                endpoints,
                            });
                        }
                    }
                    continue;
                }
                let Some(client) = client.clone() else {
                    complete = false;
                    continue;
                };
                let state = Arc::new(Mutex::new(WatchState {
                    subscribers,
                    ..WatchState::default()
                }));
                tracing::info!(namespace = %key.namespace, service = %key.service, api = ?key.api, "starting watch");
                let task = tokio::spawn(run_watch(
                    client,
                    key.clone(),
                    state.clone(),
                    self.updates.clone(),
                    self.metrics.clone(),
                ));
                watches.insert(key, Watch { state, task });
            }
        }
        // Waits for room rather than dropping members when the publisher is busy.
        for message in messages {
            let _ = self.updates.send(message).await;
        }
        complete
    }
}

pub(crate) async fn connect() -> Option<Client> {
    let mut config = match kube::Config::infer().await {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "no Kubernetes credentials (KUBECONFIG, ~/.kube/config or in-cluster); retrying");
            return None;
        }
    };
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("edgegate/", env!("CARGO_PKG_VERSION"))),
    ));
    match Client::try_from(config) {
        Ok(client) => Some(client),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the Kubernetes client; retrying");
            None
        }
    }
}

fn key_of(k: &KubernetesService) -> WatchKey {
    WatchKey {
        namespace: k.namespace.clone(),
        service: k.service.clone(),
        api: k.api,
    }
}

/// kube-runtime's exponential backoff from [`MIN_BACKOFF`] doubling to [`MAX_BACKOFF`],
/// reset by every successful event.
pub(crate) fn capped_backoff() -> ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(MIN_BACKOFF)
        .with_max_delay(MAX_BACKOFF)
        .with_factor(2.0)
        .without_max_times()
        .into()
}

/// Watch events reduced to (object name, its endpoints), whichever API they came from.
type SliceEvents = futures_util::stream::BoxStream<
    'static,
    Result<Event<(String, Vec<SliceEndpoints>)>, watcher::Error>,
>;

async fn run_watch(
    client: Client,
    key: WatchKey,
    state: Arc<Mutex<WatchState>>,
    updates: mpsc::Sender<Update>,
    metrics: Arc<Metrics>,
) {
    let services: Api<Service> = Api::namespaced(client.clone(), &key.namespace);
    let labels = format!("kubernetes.io/service-name={}", key.service);
    let fields = format!("metadata.name={}", key.service);
    let mut events: SliceEvents = match key.api {
        DiscoveryApi::EndpointSlices => {
            let api: Api<EndpointSlice> = Api::namespaced(client, &key.namespace);
            watcher(api, watcher::Config::default().labels(&labels))
                .backoff(capped_backoff())
                .map(|e| {
                    e.map(|e| map_event(e, |s| (slice_name(&s.metadata), vec![from_slice(&s)])))
                })
                .boxed()
        }
        DiscoveryApi::Endpoints => {
            let api: Api<Endpoints> = Api::namespaced(client, &key.namespace);
            watcher(api, watcher::Config::default().fields(&fields))
                .backoff(capped_backoff())
                .map(|e| {
                    e.map(|e| map_event(e, |ep| (slice_name(&ep.metadata), from_endpoints(&ep))))
                })
                .boxed()
        }
    };
    let upstream_label = format!("{}/{}", key.namespace, key.service);
    let mut pending: BTreeMap<String, Vec<SliceEndpoints>> = BTreeMap::new();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                metrics
                    .discovery_errors
                    .with_label_values(&[&upstream_label])
                    .inc();
                tracing::warn!(namespace = %key.namespace, service = %key.service, error = %e, "watch failed; keeping the last known members and retrying");
                continue;
            }
        };
        metrics
            .discovery_events
            .with_label_values(&[&upstream_label])
            .inc();
        let publish = {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            match event {
                Event::Init => {
                    pending.clear();
                    false
                }
                Event::InitApply((name, slices)) => {
                    pending.insert(name, slices);
                    false
                }
                Event::InitDone => {
                    s.slices = std::mem::take(&mut pending);
                    true
                }
                Event::Apply((name, slices)) => {
                    s.slices.insert(name, slices);
                    true
                }
                Event::Delete((name, _)) => {
                    s.slices.remove(&name);
                    true
                }
            }
        };
        if !publish {
            continue;
        }
        let needs_service = {
            let s = state.lock().unwrap_or_else(|e| e.into_inner());
            s.subscribers
                .iter()
                .any(|(_, k)| matches!(k.port, ServicePort::Number(_)))
        };
        if needs_service {
            match services.get_opt(&key.service).await {
                Ok(Some(service)) => {
                    let ports = service
                        .spec
                        .and_then(|s| s.ports)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|p| (p.name.unwrap_or_default(), p.port as u16))
                        .collect();
                    state
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .service_ports = ports;
                }
                Ok(None) => {
                    tracing::warn!(namespace = %key.namespace, service = %key.service, "service not found")
                }
                Err(e) => {
                    tracing::warn!(namespace = %key.namespace, service = %key.service, error = %e, "cannot read service; keeping its last known ports")
                }
            }
        }
        let messages: Vec<Update> = {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            s.synced = true;
            s.subscribers
                .iter()
                .map(|(upstream, source)| Update::Endpoints {
                    upstream: upstream.clone(),
                    source: source.clone(),
                    endpoints: members(&s.slices, &s.service_ports, &source.port),
                })
                .collect()
        };
        metrics
            .discovery_last_sync
            .with_label_values(&[&upstream_label])
            .set(unix_now());
        for message in messages {
            if updates.send(message).await.is_err() {
                return;
            }
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl futures_util::Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    kube::runtime::watcher(api, config)
}

fn map_event<K, T>(event: Event<K>, f: impl Fn(K) -> T) -> Event<T> {
    match event {
        Event::Apply(k) => Event::Apply(f(k)),
        Event::Delete(k) => Event::Delete(f(k)),
        Event::Init => Event::Init,
        Event::InitApply(k) => Event::InitApply(f(k)),
        Event::InitDone => Event::InitDone,
    }
}

fn slice_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}
