//! Table-style tests of the translation: objects written as the API server returns them
//! (JSON), routes checked through the real router.

use std::sync::Arc;

use http::{HeaderMap, Method};
use serde_json::{json, Value};

use super::*;
use crate::config::model::{AuthKind, HostMatch, KubernetesSettings as Settings, ServicePort};
use crate::snapshot::router::{RequestFacts, Router};

pub(super) fn settings() -> Settings {
    Settings {
        gateway_class: Some("edgegate".into()),
        ingress_class: Some("edgegate".into()),
        namespaces: Vec::new(),
    }
}

pub(super) fn listeners() -> Vec<ListenerFacts> {
    vec![
        ListenerFacts {
            name: "web".into(),
            port: 8080,
            tls: false,
            tcp: false,
        },
        ListenerFacts {
            name: "websecure".into(),
            port: 8443,
            tls: true,
            tcp: false,
        },
        ListenerFacts {
            name: "db".into(),
            port: 5432,
            tls: false,
            tcp: true,
        },
    ]
}

pub(super) fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

pub(super) fn meta(ns: &str, name: &str, created: &str) -> Value {
    json!({"namespace": ns, "name": name, "creationTimestamp": created, "generation": 2})
}

#[derive(Default)]
pub(super) struct World(pub(super) ClusterObjects);

impl World {
    pub(super) fn new() -> Self {
        let mut objects = ClusterObjects::default();
        for (ns, svc) in [("apps", "web"), ("apps", "api"), ("other", "db")] {
            objects.services.insert(
                key(ns, svc),
                Arc::new(ServicePorts(vec![
                    ("http".into(), 80),
                    ("admin".into(), 9000),
                ])),
            );
        }
        World(objects)
    }

    pub(super) fn gateway(mut self, ns: &str, name: &str, class: &str, listeners: Value) -> Self {
        let g = serde_json::from_value(json!({
            "metadata": meta(ns, name, "2026-01-01T00:00:00Z"),
            "spec": {"gatewayClassName": class, "listeners": listeners}
        }))
        .expect("gateway");
        self.0.gateways.insert(key(ns, name), Arc::new(g));
        self
    }

    pub(super) fn route(mut self, ns: &str, name: &str, created: &str, spec: Value) -> Self {
        let r = serde_json::from_value(json!({"metadata": meta(ns, name, created), "spec": spec}))
            .expect("route");
        self.0.routes.insert(key(ns, name), Arc::new(r));
        self
    }

    pub(super) fn ingress(mut self, ns: &str, name: &str, spec: Value) -> Self {
        let i = serde_json::from_value(json!({
            "metadata": meta(ns, name, "2026-01-02T00:00:00Z"), "spec": spec
        }))
        .expect("ingress");
        self.0.ingresses.insert(key(ns, name), Arc::new(i));
        self
    }

    fn annotated_ingress(
        mut self,
        ns: &str,
        name: &str,
        created: &str,
        annotations: Value,
        spec: Value,
    ) -> Self {
        let mut metadata = meta(ns, name, created);
        metadata["annotations"] = annotations;
        let i =
            serde_json::from_value(json!({"metadata": metadata, "spec": spec})).expect("ingress");
        self.0.ingresses.insert(key(ns, name), Arc::new(i));
        self
    }

    pub(super) fn grant(mut self, ns: &str, from_ns: &str) -> Self {
        let g = serde_json::from_value(json!({
            "metadata": meta(ns, "allow", "2026-01-01T00:00:00Z"),
            "spec": {
                "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": from_ns}],
                "to": [{"group": "", "kind": "Service"}]
            }
        }))
        .expect("grant");
        self.0.grants.insert(key(ns, "allow"), Arc::new(g));
        self
    }

    pub(super) fn translate(&self) -> ClusterRoutes {
        translate(&self.0, &settings(), &listeners())
    }
}

pub(super) fn http_gateway() -> World {
    World::new().gateway(
        "apps",
        "edge",
        "edgegate",
        json!([{"name": "http", "port": 8080, "protocol": "HTTP"}]),
    )
}

/// Routes a request through the compiled router the way the proxy does.
pub(super) fn route_for(
    out: &ClusterRoutes,
    listener: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<Arc<Route>> {
    let names: Vec<Name> = vec!["web".into(), "websecure".into()];
    let router = Router::compile(&out.routes, &names);
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.insert(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    let (path, query) = path
        .split_once('?')
        .map_or((path, None), |(p, q)| (p, Some(q)));
    let facts = RequestFacts {
        host,
        path,
        query,
        method: &Method::GET,
        headers: &map,
    };
    router.route(listener, &facts).cloned()
}

fn upstream_of(route: &Route) -> &str {
    match &route.action {
        Action::Upstream(name) => name,
        other => panic!("not an upstream: {other:?}"),
    }
}

#[test]
fn a_route_on_our_gateway_serves_its_hosts_and_prefixes_and_other_classes_are_ignored() {
    let out = http_gateway()
        .gateway(
            "apps",
            "theirs",
            "nginx",
            json!([{"name": "http", "port": 8080, "protocol": "HTTP"}]),
        )
        .route(
            "apps",
            "shop",
            "2026-01-01T00:00:00Z",
            json!({
                "parentRefs": [{"name": "edge"}],
                "hostnames": ["shop.example.com"],
                "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/cart/"}}],
                           "backendRefs": [{"name": "web", "port": 80}]}]
            }),
        )
        .route(
            "apps",
            "foreign",
            "2026-01-01T00:00:00Z",
            json!({
                "parentRefs": [{"name": "theirs"}],
                "rules": [{"backendRefs": [{"name": "api", "port": 80}]}]
            }),
        )
        .translate();
    let r = route_for(&out, "web", "shop.example.com", "/cart/x", &[]).expect("routed");
    assert_eq!(&*r.name, "httproute/apps/shop/0");
    assert_eq!(upstream_of(&r), "service/apps/web/80");
    assert_eq!(r.location.path.display().to_string(), "httproute/apps/shop");
    assert!(route_for(&out, "web", "shop.example.com", "/cartx", &[]).is_none());
    assert!(route_for(&out, "web", "other.example.com", "/cart", &[]).is_none());
    // HTTP gateway listener on 8080: not on the TLS listener.
    assert!(route_for(&out, "websecure", "shop.example.com", "/cart", &[]).is_none());
    // The other class's route is neither served nor reported.
    assert_eq!(out.routes.len(), 1);
    assert!(!out.status.routes.contains_key(&key("apps", "foreign")));
    assert!(!out.status.gateways.contains_key(&key("apps", "theirs")));
    assert_eq!(out.upstreams.len(), 1);
    let status = &out.status.routes[&key("apps", "shop")];
    let kinds: Vec<_> = status.parents[0]
        .1
        .iter()
        .map(|c| (c.kind, c.status, c.observed_generation))
        .collect();
    assert_eq!(
        kinds,
        vec![("Accepted", true, Some(2)), ("ResolvedRefs", true, Some(2))]
    );
}

#[test]
fn weighted_backends_across_services_share_by_weight_and_one_service_is_one_upstream() {
    let out = http_gateway()
        .route(
            "apps",
            "split",
            "2026-01-01T00:00:00Z",
            json!({
                "parentRefs": [{"name": "edge"}],
                "rules": [
                    {"matches": [{"path": {"value": "/a"}}],
                     "backendRefs": [{"name": "web", "port": 80, "weight": 1},
                                     {"name": "api", "port": 80, "weight": 3}]},
                    {"matches": [{"path": {"value": "/b"}}],
                     "backendRefs": [{"name": "web", "port": 80}]}
                ]
            }),
        )
        .translate();
    let r = route_for(&out, "web", "x", "/a", &[]).expect("routed");
    let Action::Weighted(backends) = &r.action else {
        panic!("not weighted: {:?}", r.action)
    };
    let mut counts = [0u32; 2];
    for draw in 0..4000u64 {
        match model::pick_weighted(backends, draw).map(|n| &**n) {
            Some("service/apps/web/80") => counts[0] += 1,
            Some("service/apps/api/80") => counts[1] += 1,
            other => panic!("unexpected pick {other:?}"),
        }
    }
    assert_eq!(counts, [1000, 3000]);
    // `web` named by two rules is still one upstream (one discovery watch).
    let names: Vec<_> = out.upstreams.iter().map(|u| u.name.to_string()).collect();
    assert_eq!(names, vec!["service/apps/api/80", "service/apps/web/80"]);
    assert!(matches!(
        &out.upstreams[1].members,
        model::Members::Kubernetes(k) if k.service == "web" && k.port == ServicePort::Number(80)
    ));
}

#[test]
fn header_match_with_header_modifier_and_prefix_rewrite() {
    let out = http_gateway()
        .route(
            "apps",
            "canary",
            "2026-01-01T00:00:00Z",
            json!({
                "parentRefs": [{"name": "edge"}],
                "rules": [{
                    "matches": [{"path": {"type": "PathPrefix", "value": "/api"},
                                 "headers": [{"name": "X-Canary", "value": "yes"}],
                                 "queryParams": [{"name": "v", "value": "2"}],
                                 "method": "GET"}],
                    "filters": [
                        {"type": "RequestHeaderModifier",
                         "requestHeaderModifier": {"set": [{"name": "x-env", "value": "canary"}],
                                                   "remove": ["x-debug"]}},
                        {"type": "ResponseHeaderModifier",
                         "responseHeaderModifier": {"add": [{"name": "x-served-by", "value": "edgegate"}]}},
                        {"type": "URLRewrite",
                         "urlRewrite": {"hostname": "internal.svc",
                                        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}}}
                    ],
                    "backendRefs": [{"name": "api", "port": 80}]
                }]
            }),
        )
        .translate();
    assert!(route_for(&out, "web", "x", "/api/users?v=2", &[]).is_none());
    let r = route_for(&out, "web", "x", "/api/users?v=2", &[("x-canary", "yes")]).expect("routed");
    assert_eq!(r.methods, Some(vec![Method::GET]));
    assert_eq!(
        crate::snapshot::router::rewritten_path(&r, "/api/users", Some("v=2")).as_deref(),
        Some("/v2/users?v=2")
    );
    let set: Vec<_> = r
        .request_headers
        .set
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().expect("ascii")))
        .collect();
    assert_eq!(set, vec![("x-env", "canary"), ("host", "internal.svc")]);
    assert_eq!(r.request_headers.remove[0].as_str(), "x-debug");
    assert_eq!(r.response_headers.add[0].0.as_str(), "x-served-by");
}

#[test]
fn redirect_and_full_path_rewrite() {
    let out = http_gateway()
        .route(
            "apps",
            "moves",
            "2026-01-01T00:00:00Z",
            json!({
                "parentRefs": [{"name": "edge"}],
                "rules": [
                    {"matches": [{"path": {"type": "Exact", "value": "/old"}}],
                     "filters": [{"type": "RequestRedirect",
                                  "requestRedirect": {"scheme": "https", "hostname": "new.example.com",
                                                      "statusCode": 301,
                                                      "path": {"type": "ReplaceFullPath", "replaceFullPath": "/new"}}}]},
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/legacy"}}],
                     "filters": [{"type": "URLRewrite",
                                  "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/index"}}}],
                     "backendRefs": [{"name": "web", "port": 80}]}
                ]
            }),
        )
        .translate();
    let r = route_for(&out, "web", "x", "/old", &[]).expect("routed");
    let Action::Redirect(redirect) = &r.action else {
        panic!("not a redirect")
    };
    assert_eq!(redirect.status.as_u16(), 301);
    assert_eq!(redirect.scheme.as_deref(), Some("https"));
    assert_eq!(redirect.host.as_deref(), Some("new.example.com"));
    assert_eq!(redirect.path.as_deref(), Some("/new"));
    let r = route_for(&out, "web", "x", "/legacy/a/b", &[]).expect("routed");
    assert_eq!(
        crate::snapshot::router::rewritten_path(&r, "/legacy/a/b", None).as_deref(),
        Some("/index")
    );
}

#[test]
fn exact_beats_prefix_across_routes_and_older_objects_come_first_among_equals() {
    let out = http_gateway()
        .route(
            "apps",
            "b-prefix",
            "2026-01-01T00:00:00Z",
            json!({"parentRefs": [{"name": "edge"}],
                   "rules": [{"matches": [{"path": {"value": "/login"}}],
                              "backendRefs": [{"name": "web", "port": 80}]}]}),
        )
        .route(
            "apps",
            "a-exact",
            "2026-01-03T00:00:00Z",
            json!({"parentRefs": [{"name": "edge"}],
                   "rules": [{"matches": [{"path": {"type": "Exact", "value": "/login"}}],
                              "backendRefs": [{"name": "api", "port": 80}]}]}),
        )
        .route(
            "apps",
            "c-newer-same",
            "2026-01-02T00:00:00Z",
            json!({"parentRefs": [{"name": "edge"}],
                   "rules": [{"matches": [{"path": {"value": "/login"}}],
                              "backendRefs": [{"name": "api", "port": 80}]}]}),
        )
        .translate();
    let exact = route_for(&out, "web", "x", "/login", &[]).expect("routed");
    assert_eq!(&*exact.name, "httproute/apps/a-exact/0");
    let prefix = route_for(&out, "web", "x", "/login/x", &[]).expect("routed");
    // Equal precedence: the older object wins, whatever its name.
    assert_eq!(&*prefix.name, "httproute/apps/b-prefix/0");
    assert!(out.routes.iter().all(|r| r.order > CLUSTER_ORDER_BASE));
}

#[test]
fn cross_namespace_backend_needs_a_reference_grant() {
    let spec = json!({
        "parentRefs": [{"name": "edge"}],
        "rules": [{"backendRefs": [{"name": "db", "namespace": "other", "port": 80}]}]
    });
    let refused = http_gateway()
        .route("apps", "r", "2026-01-01T00:00:00Z", spec.clone())
        .translate();
    let r = route_for(&refused, "web", "x", "/", &[]).expect("routed");
    assert!(matches!(&r.action, Action::Respond(resp) if resp.status.as_u16() == 500));
    let resolved = &refused.status.routes[&key("apps", "r")].parents[0].1[1];
    assert_eq!(
        (resolved.kind, resolved.status, resolved.reason),
        ("ResolvedRefs", false, "RefNotPermitted")
    );
    assert!(resolved.message.contains("ReferenceGrant in other"));
    // A grant in another namespace than the target's does not count.
    let wrong_place = http_gateway()
        .grant("apps", "apps")
        .route("apps", "r", "2026-01-01T00:00:00Z", spec.clone())
        .translate();
    assert!(wrong_place.upstreams.is_empty());
    let granted = http_gateway()
        .grant("other", "apps")
        .route("apps", "r", "2026-01-01T00:00:00Z", spec)
        .translate();
    let r = route_for(&granted, "web", "x", "/", &[]).expect("routed");
    assert_eq!(upstream_of(&r), "service/other/db/80");
}

#[test]
fn unresolved_backends_answer_500_and_say_why() {
    let out = http_gateway()
        .route(
            "apps",
            "typos",
            "2026-01-01T00:00:00Z",
            json!({"parentRefs": [{"name": "edge"}],
            "rules": [
                {"matches": [{"path": {"value": "/a"}}],
                 "backendRefs": [{"name": "nope", "port": 80}]},
                {"matches": [{"path": {"value": "/b"}}],
                 "backendRefs": [{"name": "web", "port": 81}, {"name": "api", "port": 80}]}
            ]}),
        )
        .translate();
    let a = route_for(&out, "web", "x", "/a", &[]).expect("routed");
    assert!(matches!(&a.action, Action::Respond(r) if r.status.as_u16() == 500));
    // Half resolved: the unresolved backend keeps its share, as 500.
    let b = route_for(&out, "web", "x", "/b", &[]).expect("routed");
    let Action::Weighted(backends) = &b.action else {
        panic!("not weighted")
    };
    assert_eq!(backends[0].upstream, None);
    let resolved = &out.status.routes[&key("apps", "typos")].parents[0].1[1];
    assert_eq!(resolved.reason, "BackendNotFound");
    assert_eq!(
        resolved.message,
        "service apps/nope not found; service apps/web has no port 81"
    );
    assert!(out
        .problems
        .iter()
        .any(|p| p.contains("service apps/web has no port 81")));
}

#[test]
fn parent_refs_select_listeners_by_section_name_and_port_and_hostnames_narrow() {
    let out = World::new()
        .gateway(
            "apps",
            "edge",
            "edgegate",
            json!([
                {"name": "http", "port": 8080, "protocol": "HTTP", "hostname": "*.example.com"},
                {"name": "https", "port": 8443, "protocol": "HTTPS", "hostname": "secure.example.com",
                 "allowedRoutes": {"namespaces": {"from": "All"}}},
                {"name": "nowhere", "port": 9999, "protocol": "HTTP"}
            ]),
        )
        .route(
            "apps",
            "by-section",
            "2026-01-01T00:00:00Z",
            json!({"parentRefs": [{"name": "edge", "sectionName": "https"}],
                   "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}),
        )
        .route(
            "apps",
            "by-port",
            "2026-01-01T00:00:00Z",
            json!({"parentRefs": [{"name": "edge", "port": 8080}],
                   "hostnames": ["a.example.com", "b.elsewhere.org"],
                   "rules": [{"backendRefs": [{"name": "api", "port": 80}]}]}),
        )
        .route(
            "other",
            "foreign-ns",
            "2026-01-01T00:00:00Z",
            json!({"parentRefs": [{"name": "edge", "namespace": "apps", "sectionName": "http"}],
                   "rules": [{"backendRefs": [{"name": "db", "port": 80}]}]}),
        )
        .translate();
    let secure = route_for(&out, "websecure", "secure.example.com", "/", &[]).expect("routed");
    assert_eq!(&*secure.name, "httproute/apps/by-section/0");
    assert_eq!(
        secure.hosts,
        vec![HostMatch::Exact("secure.example.com".into())]
    );
    assert!(route_for(&out, "web", "secure.example.com", "/", &[]).is_none());
    let a = route_for(&out, "web", "a.example.com", "/", &[]).expect("routed");
    assert_eq!(&*a.name, "httproute/apps/by-port/0");
    assert!(route_for(&out, "web", "b.elsewhere.org", "/", &[]).is_none());
    // From another namespace onto a listener that allows only its own: not accepted.
    let foreign = &out.status.routes[&key("other", "foreign-ns")].parents[0].1[0];
    assert_eq!(
        (foreign.status, foreign.reason),
        (false, "NotAllowedByListeners")
    );
    // The listener on a port edgegate does not listen on is reported.
    let gateway = &out.status.gateways[&key("apps", "edge")];
    let programmed = &gateway.conditions[1];
    assert!(!programmed.status && programmed.message.contains("port 9999"));
    let http = gateway
        .listeners
        .iter()
        .find(|l| l.0 == "http")
        .expect("http");
    assert_eq!(http.1, 1, "one route attached to the http listener");
}

#[test]
fn regex_paths_match_the_whole_path_and_unsupported_rules_are_reported() {
    let out = http_gateway()
        .route(
            "apps",
            "mixed",
            "2026-01-01T00:00:00Z",
            json!({"parentRefs": [{"name": "edge"}],
            "rules": [
                {"matches": [{"path": {"type": "RegularExpression", "value": "/v[0-9]+"}}],
                 "backendRefs": [{"name": "web", "port": 80}]},
                {"filters": [{"type": "RequestMirror", "requestMirror": {}}],
                 "backendRefs": [{"name": "web", "port": 80}]}
            ]}),
        )
        .translate();
    assert!(route_for(&out, "web", "x", "/v2", &[]).is_some());
    assert!(route_for(&out, "web", "x", "/v2/x", &[]).is_none());
    let conditions = &out.status.routes[&key("apps", "mixed")].parents[0].1;
    let partial = conditions
        .iter()
        .find(|c| c.kind == "PartiallyInvalid")
        .expect("partially invalid");
    assert!(partial
        .message
        .contains("rule 1: RequestMirror without a backendRef"));
}

#[test]
fn ingresses_of_our_class_serve_rules_default_backend_and_tls() {
    let mut world = World::new()
        .ingress(
            "apps",
            "shop",
            json!({
                "ingressClassName": "edgegate",
                "rules": [{"host": "shop.example.com", "http": {"paths": [
                    {"path": "/exact", "pathType": "Exact",
                     "backend": {"service": {"name": "api", "port": {"number": 80}}}},
                    {"path": "/", "pathType": "ImplementationSpecific",
                     "backend": {"service": {"name": "web", "port": {"name": "http"}}}}
                ]}}],
                "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}},
                "tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}]
            }),
        )
        .ingress(
            "apps",
            "theirs",
            json!({
                "ingressClassName": "nginx",
                "rules": [{"host": "theirs.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix",
                     "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]
            }),
        );
    world.0.secrets.insert(
        key("apps", "shop-tls"),
        Arc::new(TlsSecret {
            cert: Bytes::from_static(b"CERT"),
            key: Bytes::from_static(b"KEY"),
        }),
    );
    let out = world.translate();
    let exact = route_for(&out, "web", "shop.example.com", "/exact", &[]).expect("routed");
    assert_eq!(&*exact.name, "ingress/apps/shop/0");
    assert_eq!(upstream_of(&exact), "service/apps/api/80");
    let rest = route_for(&out, "websecure", "shop.example.com", "/x", &[]).expect("routed");
    assert_eq!(upstream_of(&rest), "service/apps/web/http");
    let fallback = route_for(&out, "web", "theirs.example.com", "/", &[]).expect("routed");
    assert_eq!(&*fallback.name, "ingress/apps/shop/default");
    assert_eq!(out.routes.len(), 3, "the other class's ingress is ignored");
    assert_eq!(out.certificates.len(), 1);
    assert_eq!(out.certificates[0].listeners, vec![Name::from("websecure")]);
    assert_eq!(out.certificates[0].source, "secret/apps/shop-tls");
    assert!(out.status.ingresses.contains(&key("apps", "shop")));
    assert!(!out.status.ingresses.contains(&key("apps", "theirs")));
}

#[test]
fn https_gateway_listeners_take_certificates_from_secrets() {
    let mut world = World::new().gateway(
        "apps",
        "edge",
        "edgegate",
        json!([{"name": "https", "port": 8443, "protocol": "HTTPS",
                "tls": {"certificateRefs": [{"name": "site"}, {"name": "missing"}]}}]),
    );
    world.0.secrets.insert(
        key("apps", "site"),
        Arc::new(TlsSecret {
            cert: Bytes::from_static(b"C"),
            key: Bytes::from_static(b"K"),
        }),
    );
    let out = world.translate();
    assert_eq!(out.certificates.len(), 1);
    assert_eq!(out.certificates[0].listeners, vec![Name::from("websecure")]);
    let listener = &out.status.gateways[&key("apps", "edge")].listeners[0];
    let resolved = listener
        .2
        .iter()
        .find(|c| c.kind == "ResolvedRefs")
        .expect("resolved");
    assert_eq!(resolved.reason, "InvalidCertificateRef");
    assert!(resolved.message.contains("secret apps/missing not found"));
}

#[test]
fn without_classes_nothing_is_served() {
    let world = http_gateway().route(
        "apps",
        "r",
        "2026-01-01T00:00:00Z",
        json!({"parentRefs": [{"name": "edge"}],
               "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}),
    );
    let none = Settings {
        gateway_class: None,
        ingress_class: None,
        namespaces: Vec::new(),
    };
    let out = translate(&world.0, &none, &listeners());
    assert!(out.routes.is_empty() && out.upstreams.is_empty());
}

#[test]
fn ingress_auth_annotations_become_a_forward_authenticator_or_fail_closed() {
    let backend = json!({"service": {"name": "web", "port": {"number": 80}}});
    let spec = json!({
        "ingressClassName": "edgegate",
        "rules": [{"host": "app.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": backend}]}}]
    });
    let mut world = World::new().ingress("apps", "sso", spec.clone());
    let annotate = |world: &mut World, name: &str, annotations: Value| {
        let ingress = world
            .0
            .ingresses
            .get_mut(&key("apps", name))
            .map(Arc::make_mut)
            .expect("ingress");
        ingress.metadata.annotations = serde_json::from_value(annotations).expect("annotations");
    };
    annotate(
        &mut world,
        "sso",
        json!({
            "nginx.ingress.kubernetes.io/auth-url": "http://auth.apps.svc/verify",
            "nginx.ingress.kubernetes.io/auth-response-headers": "X-User, X-Groups",
            "nginx.ingress.kubernetes.io/auth-signin": "https://login.example.com/start",
        }),
    );
    world = world.ingress("apps", "basic", spec.clone());
    annotate(
        &mut world,
        "basic",
        json!({"nginx.ingress.kubernetes.io/auth-type": "basic"}),
    );
    world = world.ingress("apps", "bad", spec);
    annotate(
        &mut world,
        "bad",
        json!({"edgegate.dev/auth-url": "ftp://nope"}),
    );
    let out = world.translate();
    assert_eq!(out.auth.len(), 1);
    assert_eq!(&*out.auth[0].name, "ingress/apps/sso");
    let AuthKind::Forward(forward) = &out.auth[0].kind else {
        panic!("not forward")
    };
    assert_eq!(forward.address, "http://auth.apps.svc/verify");
    assert_eq!(forward.response_headers, ["x-user", "x-groups"]);
    assert_eq!(
        forward.signin.as_deref(),
        Some("https://login.example.com/start")
    );
    let by_name = |prefix: &str| {
        out.routes
            .iter()
            .find(|r| r.name.starts_with(prefix))
            .expect("route")
            .clone()
    };
    assert_eq!(
        by_name("ingress/apps/sso/").auth.as_deref(),
        Some("ingress/apps/sso")
    );
    for refused in ["ingress/apps/basic/", "ingress/apps/bad/"] {
        let route = by_name(refused);
        assert!(
            matches!(&route.action, Action::Respond(r) if r.status == 500),
            "{refused}: {:?}",
            route.action
        );
    }
    assert_eq!(out.problems.len(), 2, "{:?}", out.problems);
}

#[test]
fn ingress_basic_auth_reads_its_users_from_a_secret_or_fails_closed() {
    let spec = json!({
        "ingressClassName": "edgegate",
        "rules": [{"host": "app.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]
    });
    let hash = bcrypt::hash("pw", 4).expect("bcrypt");
    let secret = |pairs: &[(&str, &str)]| {
        OpaqueSecret(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Bytes::from(v.to_string())))
                .collect(),
        )
    };
    let mut world = World::new();
    let cases: [(&str, Value); 8] = [
        (
            "file",
            json!({"auth-type": "basic", "auth-secret": "users", "auth-realm": "Staff only"}),
        ),
        (
            "map",
            json!({"auth-type": "basic", "auth-secret": "other/team",
                   "auth-secret-type": "auth-map"}),
        ),
        ("weak", json!({"auth-type": "basic", "auth-secret": "weak"})),
        (
            "missing",
            json!({"auth-type": "basic", "auth-secret": "nope"}),
        ),
        (
            "digest",
            json!({"auth-type": "digest", "auth-secret": "users"}),
        ),
        (
            "both",
            json!({"auth-type": "basic", "auth-secret": "users",
                   "auth-url": "http://auth.apps.svc/"}),
        ),
        (
            "badref",
            json!({"auth-type": "basic", "auth-secret": "a/b/c"}),
        ),
        (
            "quote",
            json!({"auth-type": "basic", "auth-secret": "users", "auth-realm": "say \"hi\""}),
        ),
    ];
    for (name, annotations) in cases {
        world = world.ingress("apps", name, spec.clone());
        let Value::Object(map) = annotations else {
            unreachable!()
        };
        let prefixed: BTreeMap<String, String> = map
            .into_iter()
            .map(|(k, v)| {
                (
                    format!("nginx.ingress.kubernetes.io/{k}"),
                    v.as_str().expect("text").to_string(),
                )
            })
            .collect();
        world
            .0
            .ingresses
            .get_mut(&key("apps", name))
            .map(Arc::make_mut)
            .expect("ingress")
            .metadata
            .annotations = Some(prefixed);
    }
    let users = format!("# staff\nalice:{hash}\n");
    world
        .0
        .opaque_secrets
        .insert(key("apps", "users"), Arc::new(secret(&[("auth", &users)])));
    world
        .0
        .opaque_secrets
        .insert(key("other", "team"), Arc::new(secret(&[("bob", &hash)])));
    let weak = format!("alice:{hash}\ncarol:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n");
    world
        .0
        .opaque_secrets
        .insert(key("apps", "weak"), Arc::new(secret(&[("auth", &weak)])));
    let out = world.translate();
    let basic = |name: &str| {
        let auth = out
            .auth
            .iter()
            .find(|a| &*a.name == name)
            .unwrap_or_else(|| panic!("{name}: {:?}", out.problems));
        let AuthKind::Basic(basic) = &auth.kind else {
            panic!("{name} is not basic")
        };
        basic.clone()
    };
    let file = basic("ingress/apps/file");
    assert_eq!(file.realm, "Staff only");
    assert_eq!(&*file.users, [("alice".to_string(), hash.clone())]);
    assert!(file.users_file.is_none());
    let map = basic("ingress/apps/map");
    assert_eq!(&*map.users, [("bob".to_string(), hash.clone())]);
    assert_eq!(map.realm, "");
    assert_eq!(out.auth.len(), 2, "{:?}", out.auth);
    let route = |name: &str| {
        out.routes
            .iter()
            .find(|r| r.name.starts_with(&format!("ingress/apps/{name}/")))
            .expect("route")
            .clone()
    };
    assert_eq!(route("file").auth.as_deref(), Some("ingress/apps/file"));
    assert!(matches!(route("file").action, Action::Upstream(_)));
    for closed in ["weak", "missing", "digest", "both", "badref", "quote"] {
        let route = route(closed);
        assert!(
            matches!(&route.action, Action::Respond(r) if r.status == 500),
            "{closed}: {:?}",
            route.action
        );
        assert!(route.auth.is_none());
    }
    let problem = |needle: &str| {
        assert!(
            out.problems.iter().any(|p| p.contains(needle)),
            "no problem with {needle:?}: {:#?}",
            out.problems
        )
    };
    problem("ingress apps/weak: secret apps/weak has unusable users (line 2: user \"carol\": the password is stored as SHA1");
    problem("ingress apps/missing: secret apps/nope not found");
    problem("annotation auth-type \"digest\" is not served");
    problem("auth-type and auth-url together");
    problem("annotation auth-secret \"a/b/c\" is not NAME or NAMESPACE/NAME");
    problem("annotation auth-realm \"say \\\"hi\\\"\" cannot contain");
    assert_eq!(out.problems.len(), 6, "{:#?}", out.problems);
    // Merged onto the file's config, a Secret's users are no file: a reload's fingerprint
    // and the file watcher read none for them (or every reload would see a change).
    let file = crate::config::load(&crate::config::SourceFile::new(
        std::path::PathBuf::from("edgegate.toml"),
        crate::config::DEFAULT_CONFIG,
    ))
    .expect("the shipped default")
    .config;
    let merged = out.merged_onto(&file);
    assert!(merged.authenticator("ingress/apps/file").is_some());
    assert_eq!(merged.auth_files().count(), file.auth_files().count());
}

#[test]
fn an_ssl_passthrough_ingress_relays_its_hosts_on_tls_listeners() {
    let mut world = World::new().ingress(
        "apps",
        "secure",
        json!({
            "ingressClassName": "edgegate",
            "rules": [{"host": "secure.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "api", "port": {"number": 80}}}}]}}]
        }),
    );
    let annotations = &mut world
        .0
        .ingresses
        .get_mut(&key("apps", "secure"))
        .map(Arc::make_mut)
        .expect("ingress")
        .metadata
        .annotations;
    annotations.get_or_insert_with(Default::default).insert(
        "nginx.ingress.kubernetes.io/ssl-passthrough".into(),
        "true".into(),
    );
    let out = world.translate();
    assert!(
        out.routes.is_empty(),
        "no HTTP route for a passthrough host"
    );
    assert_eq!(out.tcp_routes.len(), 1);
    let route = &out.tcp_routes[0];
    assert_eq!(&*route.name, "ingress/apps/secure/0");
    assert_eq!(route.listeners, Some(vec![Name::from("websecure")]));
    assert_eq!(
        route.sni,
        vec![crate::config::model::HostMatch::Exact(
            "secure.example.com".into()
        )]
    );
    assert_eq!(&*route.upstream, "service/apps/api/80");
    assert_eq!(out.upstreams.len(), 1, "the backend's members are watched");
}

#[test]
fn tls_routes_and_tcp_routes_attach_to_passthrough_and_tcp_listeners() {
    let mut world = World::new().gateway(
        "apps",
        "edge",
        "edgegate",
        json!([
            {"name": "passthrough", "port": 8443, "protocol": "TLS", "tls": {"mode": "Passthrough"},
             "hostname": "*.mtls.example.com"},
            {"name": "terminate", "port": 8443, "protocol": "TLS", "tls": {"mode": "Terminate"}},
            {"name": "db", "port": 5432, "protocol": "TCP"},
            {"name": "web", "port": 8080, "protocol": "HTTP"}
        ]),
    );
    let tls: crate::control::sources::cluster_routes::objects::TlsRoute =
        serde_json::from_value(json!({
            "metadata": meta("apps", "secure", "2026-01-03T00:00:00Z"),
            "spec": {
                "parentRefs": [{"name": "edge", "sectionName": "passthrough"}],
                "hostnames": ["a.mtls.example.com", "elsewhere.example.org"],
                "rules": [{"backendRefs": [{"name": "api", "port": 80}]}]
            }
        }))
        .expect("tlsroute");
    world
        .0
        .tls_routes
        .insert(key("apps", "secure"), Arc::new(tls));
    let tcp: crate::control::sources::cluster_routes::objects::TcpRoute =
        serde_json::from_value(json!({
            "metadata": meta("apps", "pg", "2026-01-03T00:00:00Z"),
            "spec": {
                "parentRefs": [{"name": "edge"}],
                "rules": [{"backendRefs": [{"name": "web", "port": 9000}]}]
            }
        }))
        .expect("tcproute");
    world.0.tcp_routes.insert(key("apps", "pg"), Arc::new(tcp));
    // Attached to an HTTP listener, which admits no TCPRoute; and a backend not a Service.
    let misfit: crate::control::sources::cluster_routes::objects::TcpRoute =
        serde_json::from_value(json!({
            "metadata": meta("apps", "misfit", "2026-01-03T00:00:00Z"),
            "spec": {
                "parentRefs": [{"name": "edge", "sectionName": "web"}],
                "rules": [{"backendRefs": [{"name": "web", "port": 9000}]}]
            }
        }))
        .expect("tcproute");
    world
        .0
        .tcp_routes
        .insert(key("apps", "misfit"), Arc::new(misfit));
    let odd: crate::control::sources::cluster_routes::objects::TcpRoute =
        serde_json::from_value(json!({
            "metadata": meta("apps", "odd", "2026-01-03T00:00:00Z"),
            "spec": {
                "parentRefs": [{"name": "edge", "sectionName": "db"}],
                "rules": [{"backendRefs": [{"kind": "Bucket", "name": "b", "port": 1}]}]
            }
        }))
        .expect("tcproute");
    world.0.tcp_routes.insert(key("apps", "odd"), Arc::new(odd));
    let out = world.translate();
    assert!(out.routes.is_empty(), "no HTTP route: {:?}", out.routes);
    let conditions = |kind: &'static str, name: &str| -> Vec<(&'static str, bool, &'static str)> {
        let status = &out.status.l4_routes[&(kind, key("apps", name))];
        assert_eq!(status.parents.len(), 1, "{status:?}");
        assert_eq!(status.parents[0].0.namespace.as_deref(), Some("apps"));
        status.parents[0]
            .1
            .iter()
            .map(|c| (c.kind, c.status, c.reason))
            .collect()
    };
    let served = vec![
        ("Accepted", true, "Accepted"),
        ("ResolvedRefs", true, "ResolvedRefs"),
    ];
    assert_eq!(conditions("TLSRoute", "secure"), served);
    assert_eq!(conditions("TCPRoute", "pg"), served);
    assert_eq!(
        conditions("TCPRoute", "misfit"),
        vec![("Accepted", false, "NotAllowedByListeners")]
    );
    assert_eq!(
        conditions("TCPRoute", "odd"),
        vec![
            ("Accepted", true, "Accepted"),
            ("ResolvedRefs", false, "InvalidKind")
        ]
    );
    let by_name = |n: &str| {
        out.tcp_routes
            .iter()
            .find(|r| &*r.name == n)
            .unwrap_or_else(|| panic!("no {n} in {:?}", out.tcp_routes))
    };
    let secure = by_name("tlsroute/apps/secure/0");
    assert_eq!(secure.listeners, Some(vec![Name::from("websecure")]));
    assert_eq!(
        secure.sni,
        vec![crate::config::model::HostMatch::Exact(
            "a.mtls.example.com".into()
        )],
        "narrowed by the listener's hostname"
    );
    assert_eq!(&*secure.upstream, "service/apps/api/80");
    let pg = by_name("tcproute/apps/pg/0");
    assert_eq!(pg.listeners, Some(vec![Name::from("db")]));
    assert!(pg.sni.is_empty());
    assert_eq!(&*pg.upstream, "service/apps/web/9000");
    let status = &out.status.gateways[&key("apps", "edge")];
    for (listener, kind) in [
        ("passthrough", "TLSRoute"),
        ("db", "TCPRoute"),
        ("web", "HTTPRoute"),
    ] {
        assert_eq!(status.route_kinds.get(listener).copied(), Some(kind));
    }
    let attached = |name: &str| {
        status
            .listeners
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, routes, _)| *routes)
    };
    assert_eq!(attached("passthrough"), Some(1));
    assert_eq!(attached("db"), Some(2), "pg and odd; misfit is refused");
    let terminate = status
        .listeners
        .iter()
        .find(|(name, _, _)| name == "terminate")
        .expect("listener status");
    assert!(
        terminate
            .2
            .iter()
            .any(|c| c.reason == "UnsupportedProtocol"),
        "{terminate:?}"
    );
}

#[test]
fn a_tcp_route_crosses_namespaces_only_with_a_grant_to_tcp_routes() {
    let world = |from_kind: &str| {
        let mut world = World::new().gateway(
            "apps",
            "edge",
            "edgegate",
            json!([{"name": "db", "port": 5432, "protocol": "TCP"}]),
        );
        let grant: crate::control::sources::cluster_routes::objects::ReferenceGrant =
            serde_json::from_value(json!({
            "metadata": meta("other", "allow", "2026-01-01T00:00:00Z"),
            "spec": {
                "from": [{"group": "gateway.networking.k8s.io", "kind": from_kind, "namespace": "apps"}],
                "to": [{"group": "", "kind": "Service"}]
            }
        }))
        .expect("grant");
        world
            .0
            .grants
            .insert(key("other", "allow"), Arc::new(grant));
        let tcp: crate::control::sources::cluster_routes::objects::TcpRoute =
            serde_json::from_value(json!({
                "metadata": meta("apps", "pg", "2026-01-03T00:00:00Z"),
                "spec": {
                    "parentRefs": [{"name": "edge"}],
                    "rules": [{"backendRefs": [{"name": "db", "namespace": "other", "port": 80}]}]
                }
            }))
            .expect("tcproute");
        world.0.tcp_routes.insert(key("apps", "pg"), Arc::new(tcp));
        world.translate()
    };
    // A grant to HTTPRoutes does not let a TCPRoute in.
    let refused = world("HTTPRoute");
    assert!(refused.tcp_routes.is_empty(), "{:?}", refused.tcp_routes);
    let resolved = &refused.status.l4_routes[&("TCPRoute", key("apps", "pg"))].parents[0].1[1];
    assert_eq!(
        (resolved.kind, resolved.status, resolved.reason),
        ("ResolvedRefs", false, "RefNotPermitted")
    );
    assert!(
        resolved.message.contains("permit TCPRoutes"),
        "{}",
        resolved.message
    );
    let granted = world("TCPRoute");
    assert_eq!(granted.tcp_routes.len(), 1, "{:?}", granted.problems);
    assert_eq!(&*granted.tcp_routes[0].upstream, "service/other/db/80");
}

#[test]
fn ingress_canaries_join_their_main_in_any_order_and_a_broken_one_serves_nothing() {
    let spec = |service: &str, host: &str| {
        json!({"ingressClassName": "edgegate", "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]})
    };
    let nginx = |k: &str| format!("nginx.ingress.kubernetes.io/{k}");
    let out = World::new()
        // The canary is older than its main Ingress.
        .annotated_ingress(
            "apps",
            "a-canary",
            "2026-01-01T00:00:00Z",
            json!({nginx("canary"): "true", nginx("canary-by-header"): "x-canary",
                   nginx("canary-weight"): "10", nginx("backend-protocol"): "GRPC"}),
            spec("api", "shop.example.com"),
        )
        .annotated_ingress(
            "apps",
            "b-main",
            "2026-01-02T00:00:00Z",
            json!({nginx("force-ssl-redirect"): "true"}),
            spec("web", "shop.example.com"),
        )
        // Broken and older than the Ingress it would join: it must not shadow it.
        .annotated_ingress(
            "apps",
            "c-broken",
            "2026-01-01T00:00:00Z",
            json!({nginx("canary"): "true", nginx("canary-weight"): "500"}),
            spec("api", "other.example.com"),
        )
        .annotated_ingress(
            "apps",
            "d-other",
            "2026-01-03T00:00:00Z",
            json!({}),
            spec("web", "other.example.com"),
        )
        .translate();
    let plain = route_for(&out, "web", "shop.example.com", "/x?y=1", &[]).expect("routed");
    assert!(
        matches!(&plain.action, Action::Redirect(r)
            if r.status == http::StatusCode::PERMANENT_REDIRECT && r.scheme.as_deref() == Some("https")),
        "{:?}",
        plain.action
    );
    let canary_upstream = "service/apps/api/80@ingress/apps/a-canary";
    let main = route_for(&out, "websecure", "shop.example.com", "/x", &[]).expect("routed");
    match &main.action {
        Action::Weighted(split) => {
            let shares: Vec<(Option<&str>, u32)> = split
                .iter()
                .map(|b| (b.upstream.as_deref(), b.weight))
                .collect();
            assert_eq!(
                shares,
                [
                    (Some("service/apps/web/80"), 90),
                    (Some(canary_upstream), 10)
                ]
            );
        }
        other => panic!("not a split: {other:?}"),
    }
    let chosen = route_for(
        &out,
        "websecure",
        "shop.example.com",
        "/x",
        &[("x-canary", "always")],
    )
    .expect("routed");
    assert_eq!(upstream_of(&chosen), canary_upstream);
    let never = route_for(
        &out,
        "websecure",
        "shop.example.com",
        "/x",
        &[("x-canary", "never")],
    )
    .expect("routed");
    assert_eq!(upstream_of(&never), "service/apps/web/80");
    let tuned = out
        .upstreams
        .iter()
        .find(|u| &*u.name == canary_upstream)
        .expect("the canary's own upstream");
    assert!(tuned.http2);
    assert!(out
        .upstreams
        .iter()
        .filter(|u| !u.name.contains('@'))
        .all(|u| !u.http2));
    let other = route_for(&out, "web", "other.example.com", "/", &[]).expect("routed");
    assert_eq!(upstream_of(&other), "service/apps/web/80");
    assert!(out.status.ingress_warnings[&key("apps", "c-broken")]
        .iter()
        .any(|w| w.contains("canary-weight")));
    assert!(!out
        .status
        .ingress_warnings
        .contains_key(&key("apps", "b-main")));
}
