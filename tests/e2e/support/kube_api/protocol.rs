//! The wire protocol: routing requests, list and watch responses, status errors.

use super::*;

/// A response body: a whole JSON document, or a watch stream fed by the store through
/// a channel. The watch ends when the channel says so or closes, or at its deadline
/// (`timeoutSeconds`); dropping it (the client went away) closes the channel, which is
/// how the store knows the watch is gone.
pub(super) enum ApiBody {
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

pub(super) type ApiResponse = Response<ApiBody>;

/// The query string, percent-decoded. kube-rs sends `?&watch=true…` (a leading empty
/// pair), which must be tolerated.
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn parse(raw: Option<&str>) -> Query {
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

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter, parsed like Go's `strconv.ParseBool` (`watch=1` works).
    pub(super) fn flag(&self, key: &str) -> bool {
        matches!(
            self.get(key),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True")
        )
    }
}

pub(super) fn percent_decode(s: &str) -> String {
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

pub(super) enum Route {
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
    pub(super) fn handle(&self, req: &http::request::Parts, body: &[u8]) -> ApiResponse {
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
            Route::Collection { kind, namespace } if self.store().forbidden.contains(&kind) => {
                let scope = match &namespace {
                    Some(ns) => format!("in the namespace \"{ns}\""),
                    None => "at the cluster scope".to_string(),
                };
                let message = format!(
                    "{}.{} is forbidden: User \"system:serviceaccount:edgegate:edgegate\" cannot list resource \"{}\" in API group \"{}\" {scope}",
                    kind.plural(),
                    kind.group(),
                    kind.plural(),
                    kind.group()
                );
                status(403, "Forbidden", &message, None)
            }
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

    pub(super) fn route(&self, path: &str) -> Route {
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

    pub(super) fn api_versions(&self) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": self.addr.to_string()}
            ],
        })
    }

    pub(super) fn get(&self, key: &Key) -> ApiResponse {
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

    pub(super) fn list(&self, filter: &Filter, query: &Query) -> Result<ApiResponse, String> {
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

    pub(super) fn watch(&self, filter: Filter, query: &Query) -> Result<ApiResponse, String> {
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

pub(super) fn watch_response(
    rx: mpsc::UnboundedReceiver<WatchMsg>,
    timeout: Option<Duration>,
) -> ApiResponse {
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

pub(super) fn json_response(code: u16, body: &Value) -> ApiResponse {
    let body = serde_json::to_vec(body).expect("serialize response");
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CACHE_CONTROL, "no-cache, private")
        .body(ApiBody::Full(Some(Bytes::from(body))))
        .expect("json response")
}

pub(super) fn status_body(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
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

pub(super) fn status(
    code: u16,
    reason: &str,
    message: &str,
    details: Option<Value>,
) -> ApiResponse {
    json_response(code, &status_body(code, reason, message, details))
}

pub(super) fn too_large(requested: u64, current: u64) -> ApiResponse {
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
pub(super) fn expired_status(requested: u64, floor: u64) -> Value {
    status_body(
        410,
        "Expired",
        &format!("too old resource version: {requested} ({floor})"),
        None,
    )
}

/// A BOOKMARK object: only kind, apiVersion and the version (plus, for the end of a
/// streaming list's initial events, the `k8s.io/initial-events-end` annotation).
pub(super) fn bookmark(kind: Kind, rv: u64, initial_events_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": kind.name(), "apiVersion": kind.api_version(), "metadata": metadata})
}

pub(super) fn event_line(event: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": event, "object": object})).expect("serialize event");
    line.push(b'\n');
    Bytes::from(line)
}

pub(super) fn version() -> Value {
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
pub(super) fn groups() -> Vec<(&'static str, Value)> {
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
pub(super) fn resource_list(group: &str, version: &str) -> Value {
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
pub(super) fn encode_continue(rv: u64, namespace: &str, name: &str) -> String {
    let token =
        json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{namespace}/{name}\u{0}")});
    base64(token.to_string().as_bytes(), URL_SAFE, false)
}

pub(super) fn decode_continue(token: &str) -> Option<(u64, (String, String))> {
    let token: Value = serde_json::from_slice(&base64_decode(token, URL_SAFE)?).ok()?;
    let rv = token["rv"].as_u64()?;
    let start = token["start"].as_str()?.trim_end_matches('\u{0}');
    let (namespace, name) = start.split_once('/')?;
    Some((rv, (namespace.to_owned(), name.to_owned())))
}

pub(super) const STANDARD: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
pub(super) const URL_SAFE: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub(super) fn base64(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
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

pub(super) fn base64_decode(text: &str, alphabet: &[u8; 64]) -> Option<Vec<u8>> {
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
pub(super) fn now_rfc3339() -> String {
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
