//! The translation cache held to full translation: after every change its result equals
//! translating everything again, and it translated only the objects the change touched.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::tests::{http_gateway, key, listeners, meta, route_for, settings, World};
use super::*;

fn simple(i: usize, prefix: &str, service: &str) -> Value {
    json!({
        "parentRefs": [{"name": "edge"}],
        "hostnames": [format!("r{i}.example.com")],
        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": format!("/{prefix}")}}],
                   "backendRefs": [{"name": service, "port": 80}]}]
    })
}

fn created(i: usize) -> String {
    format!("2026-01-01T00:{:02}:{:02}Z", i / 60, i % 60)
}

/// `n` routes on the `edge` Gateway, the even ones to Service `web`, the odd to `api`.
fn many(n: usize) -> World {
    let mut world = http_gateway();
    for i in 0..n {
        let service = if i % 2 == 0 { "web" } else { "api" };
        world = world.route(
            "apps",
            &format!("r{i}"),
            &created(i),
            simple(i, "p", service),
        );
    }
    world
}

/// Translates with the cache, checks the result against a fresh full translation, and
/// says how many objects the cache translated.
fn step(translator: &mut Translator, world: &World) -> (ClusterRoutes, usize) {
    let kept = translator.translate(&world.0, &settings(), &listeners());
    let full = world.translate();
    assert!(kept == full, "cached {kept:#?}\nfull {full:#?}");
    (kept, translator.translated())
}

fn attached_routes(out: &ClusterRoutes) -> i32 {
    out.status.gateways[&key("apps", "edge")].listeners[0].1
}

#[test]
fn an_edit_translates_only_the_edited_route_and_serves_its_new_rules() {
    let mut translator = Translator::default();
    let mut world = many(20);
    let (before, translated) = step(&mut translator, &world);
    assert_eq!(translated, 20);
    assert_eq!(step(&mut translator, &world).1, 0, "nothing changed");

    world = world.route("apps", "r7", &created(7), simple(7, "edited", "web"));
    let (out, translated) = step(&mut translator, &world);
    assert_eq!(translated, 1);
    let edited = route_for(&out, "web", "r7.example.com", "/edited/x", &[]).expect("served");
    assert_eq!(&*edited.name, "httproute/apps/r7/0");
    assert!(route_for(&out, "web", "r7.example.com", "/p", &[]).is_none());
    // Every other route is the very route served before: nothing else was rebuilt.
    let same = before
        .routes
        .iter()
        .zip(&out.routes)
        .filter(|(a, b)| Arc::ptr_eq(a, b))
        .count();
    assert_eq!(same, 19);
    assert_eq!(attached_routes(&out), 20);
}

#[test]
fn a_new_version_that_reads_the_same_is_not_translated_again() {
    let mut translator = Translator::default();
    let mut world = many(5);
    step(&mut translator, &world);
    // What a status write comes back as: a new object, another resourceVersion.
    let mut again = (**world.0.routes.get(&key("apps", "r2")).expect("r2")).clone();
    again.metadata.resource_version = Some("99".into());
    world.0.routes.insert(key("apps", "r2"), Arc::new(again));
    assert_eq!(step(&mut translator, &world).1, 0);
    // A generation bump alone is read (status conditions carry it).
    let mut bumped = (**world.0.routes.get(&key("apps", "r2")).expect("r2")).clone();
    bumped.metadata.generation = Some(3);
    world.0.routes.insert(key("apps", "r2"), Arc::new(bumped));
    let (out, translated) = step(&mut translator, &world);
    assert_eq!(translated, 1);
    assert_eq!(
        out.status.routes[&key("apps", "r2")].parents[0].1[0].observed_generation,
        Some(3)
    );
}

#[test]
fn a_deleted_route_is_no_longer_served_counted_or_reported() {
    let mut translator = Translator::default();
    let mut world = many(10);
    let (before, _) = step(&mut translator, &world);
    assert!(route_for(&before, "web", "r4.example.com", "/p", &[]).is_some());
    assert_eq!(attached_routes(&before), 10);

    world.0.routes.remove(&key("apps", "r4"));
    let (out, translated) = step(&mut translator, &world);
    assert_eq!(translated, 0, "a deletion translates nothing");
    assert!(route_for(&out, "web", "r4.example.com", "/p", &[]).is_none());
    assert!(!out.status.routes.contains_key(&key("apps", "r4")));
    assert_eq!(attached_routes(&out), 9);
    assert_eq!(out.routes.len(), 9);
    // The routes after it move up one order number; they still route.
    assert!(route_for(&out, "web", "r9.example.com", "/p", &[]).is_some());
}

#[test]
fn a_service_change_translates_exactly_the_routes_that_name_it() {
    let mut translator = Translator::default();
    let mut world = many(10);
    step(&mut translator, &world);
    // `api` loses port 80: its five routes answer 500 and say why.
    world.0.services.insert(
        key("apps", "api"),
        Arc::new(ServicePorts(vec![("http".into(), 8080)])),
    );
    let (out, translated) = step(&mut translator, &world);
    assert_eq!(translated, 5);
    let broken = route_for(&out, "web", "r3.example.com", "/p", &[]).expect("routed");
    assert!(matches!(broken.action, Action::Respond(_)), "{broken:?}");
    let resolved = &out.status.routes[&key("apps", "r3")].parents[0].1[1];
    assert_eq!((resolved.kind, resolved.status), ("ResolvedRefs", false));
    assert!(!out
        .upstreams
        .iter()
        .any(|u| &*u.name == "service/apps/api/80"));
    assert!(out
        .upstreams
        .iter()
        .any(|u| &*u.name == "service/apps/web/80"));

    // And back: served again. A Service nobody names changes nothing.
    world.0.services.insert(
        key("apps", "api"),
        Arc::new(ServicePorts(vec![("http".into(), 80)])),
    );
    world
        .0
        .services
        .insert(key("apps", "unused"), Arc::new(ServicePorts(vec![])));
    let (out, translated) = step(&mut translator, &world);
    assert_eq!(translated, 5);
    let fixed = route_for(&out, "web", "r3.example.com", "/p", &[]).expect("routed");
    assert!(matches!(&fixed.action, Action::Upstream(u) if &**u == "service/apps/api/80"));
    // A Service deleted.
    world.0.services.remove(&key("apps", "web"));
    assert_eq!(step(&mut translator, &world).1, 5);
}

#[test]
fn a_gateway_change_translates_its_routes_and_only_its_routes() {
    let mut translator = Translator::default();
    let mut world = many(6).gateway(
        "apps",
        "side",
        "edgegate",
        json!([{"name": "http", "port": 8080, "protocol": "HTTP"}]),
    );
    world = world.route(
        "apps",
        "on-side",
        &created(50),
        json!({"parentRefs": [{"name": "side"}], "hostnames": ["side.example.com"],
               "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}),
    );
    step(&mut translator, &world);
    // The edge Gateway's listener narrows to one host: only r3 still attaches.
    world = world.gateway(
        "apps",
        "edge",
        "edgegate",
        json!([{"name": "http", "port": 8080, "protocol": "HTTP", "hostname": "r3.example.com"}]),
    );
    let (out, translated) = step(&mut translator, &world);
    assert_eq!(translated, 6, "edge's six routes, not the route on side");
    assert!(route_for(&out, "web", "r3.example.com", "/p", &[]).is_some());
    assert!(route_for(&out, "web", "r2.example.com", "/p", &[]).is_none());
    let accepted = &out.status.routes[&key("apps", "r2")].parents[0].1[0];
    assert_eq!(
        (accepted.kind, accepted.status, accepted.reason),
        ("Accepted", false, "NoMatchingListenerHostname")
    );
    assert_eq!(attached_routes(&out), 1);
    assert!(route_for(&out, "web", "side.example.com", "/", &[]).is_some());

    // The Gateway goes: its routes are no longer ours; then it comes back.
    world.0.gateways.remove(&key("apps", "edge"));
    let (out, translated) = step(&mut translator, &world);
    assert_eq!(translated, 6);
    assert!(route_for(&out, "web", "r3.example.com", "/p", &[]).is_none());
    assert!(!out.status.routes.contains_key(&key("apps", "r3")));
    world = world.gateway(
        "apps",
        "edge",
        "edgegate",
        json!([{"name": "http", "port": 8080, "protocol": "HTTP"}]),
    );
    let (out, translated) = step(&mut translator, &world);
    assert_eq!(translated, 6);
    assert!(route_for(&out, "web", "r5.example.com", "/p", &[]).is_some());
}

#[test]
fn a_reference_grant_change_translates_the_routes_that_consulted_it() {
    let mut translator = Translator::default();
    let mut world = many(4).route(
        "apps",
        "cross",
        &created(30),
        json!({"parentRefs": [{"name": "edge"}], "hostnames": ["cross.example.com"],
               "rules": [{"backendRefs": [{"name": "db", "namespace": "other", "port": 80}]}]}),
    );
    let (out, _) = step(&mut translator, &world);
    let refused = &out.status.routes[&key("apps", "cross")].parents[0].1[1];
    assert_eq!(refused.reason, "RefNotPermitted");
    // A grant elsewhere changes nothing; the grant in `other` re-translates `cross` alone.
    world = world.grant("third", "apps");
    assert_eq!(step(&mut translator, &world).1, 0);
    world = world.grant("other", "apps");
    let (out, translated) = step(&mut translator, &world);
    assert_eq!(translated, 1);
    let resolved = &out.status.routes[&key("apps", "cross")].parents[0].1[1];
    assert_eq!((resolved.reason, resolved.status), ("ResolvedRefs", true));
    assert!(route_for(&out, "web", "cross.example.com", "/", &[]).is_some());
    world.0.grants.remove(&key("other", "allow"));
    let (out, translated) = step(&mut translator, &world);
    assert_eq!(translated, 1);
    assert!(route_for(&out, "web", "cross.example.com", "/", &[])
        .is_some_and(|r| matches!(r.action, Action::Respond(_))));
}

#[test]
fn an_ingress_follows_its_secret_and_its_annotations() {
    let mut translator = Translator::default();
    let spec = json!({
        "ingressClassName": "edgegate",
        "tls": [{"hosts": ["shop.example.com"], "secretName": "site"}],
        "rules": [{"host": "shop.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]
    });
    let mut world = many(3).ingress("apps", "shop", spec);
    let (out, _) = step(&mut translator, &world);
    assert!(out.certificates.is_empty());
    assert!(out
        .problems
        .iter()
        .any(|p| p.contains("secret apps/site not found")));

    let secret = |cert: &'static [u8]| {
        Arc::new(TlsSecret {
            cert: Bytes::from_static(cert),
            key: Bytes::from_static(b"KEY"),
        })
    };
    world.0.secrets.insert(key("apps", "site"), secret(b"ONE"));
    let (out, translated) = step(&mut translator, &world);
    assert_eq!(translated, 1);
    assert_eq!(out.certificates.len(), 1);
    world.0.secrets.insert(key("apps", "site"), secret(b"TWO"));
    let (out, translated) = step(&mut translator, &world);
    assert_eq!(translated, 1);
    assert_eq!(&out.certificates[0].cert[..], b"TWO");

    // An annotation edit does not bump an Ingress's generation; it is still read.
    let mut annotated = (**world.0.ingresses.get(&key("apps", "shop")).expect("shop")).clone();
    annotated.metadata.annotations = Some(
        [(
            "nginx.ingress.kubernetes.io/proxy-body-size".to_string(),
            "1k".to_string(),
        )]
        .into(),
    );
    world
        .0
        .ingresses
        .insert(key("apps", "shop"), Arc::new(annotated));
    let (out, translated) = step(&mut translator, &world);
    assert_eq!(translated, 1);
    let route = route_for(&out, "web", "shop.example.com", "/", &[]).expect("routed");
    assert_eq!(route.max_body_size, Some(1024));
}

#[test]
fn routes_that_arrive_before_their_gateway_are_served_when_it_comes() {
    let mut translator = Translator::default();
    let mut world = World::new();
    for i in 0..3 {
        world = world.route("apps", &format!("r{i}"), &created(i), simple(i, "p", "web"));
    }
    let (out, _) = step(&mut translator, &world);
    assert!(out.routes.is_empty());
    world = world.gateway(
        "apps",
        "edge",
        "edgegate",
        json!([{"name": "http", "port": 8080, "protocol": "HTTP"}]),
    );
    let (out, translated) = step(&mut translator, &world);
    assert_eq!(translated, 3);
    assert!(route_for(&out, "web", "r1.example.com", "/p", &[]).is_some());
}

#[test]
fn a_route_that_grows_renumbers_the_routes_after_it() {
    let mut translator = Translator::default();
    let mut world = many(5);
    step(&mut translator, &world);
    let mut spec = simple(0, "p", "web");
    spec["rules"] = json!([
        {"matches": [{"path": {"value": "/a"}}], "backendRefs": [{"name": "web", "port": 80}]},
        {"matches": [{"path": {"value": "/b"}}], "backendRefs": [{"name": "web", "port": 80}]},
        {"matches": [{"path": {"value": "/c"}}], "backendRefs": [{"name": "web", "port": 80}]},
    ]);
    world = world.route("apps", "r0", &created(0), spec);
    // `step` compares every route's order with a full translation's.
    let (out, translated) = step(&mut translator, &world);
    assert_eq!(translated, 1);
    let orders: Vec<usize> = out.routes.iter().map(|r| r.order).collect();
    let first = CLUSTER_ORDER_BASE + 1;
    assert_eq!(orders, (first..first + 7).collect::<Vec<_>>());
}

// Random edit sequences over a small world of every kind, each step checked against
// a full translation.

#[derive(Debug, Clone)]
enum Op {
    /// Route slot; `None` deletes it, else (hosts, parent, backend, rules and creation).
    Route(usize, Option<(u8, u8, u8, u8)>),
    /// The same route again as a new object (what a status write looks like).
    Touch(usize),
    Service(usize, Option<u8>),
    Gateway(Option<u8>),
    Grant(bool),
    /// Ingress slot; `None` deletes it, else (host, backend, annotations: none, a body
    /// size, a canary by header and weight, basic auth from the `users` Secret).
    Ingress(usize, Option<(u8, u8, u8)>),
    Secret(Option<u8>),
    /// The `Opaque` Secret `apps/users` basic auth reads.
    Users(Option<u8>),
    /// A reload that moves the TLS listener.
    Listeners(bool),
}

fn op() -> impl Strategy<Value = Op> {
    let variant = (0u8..4, 0u8..4, 0u8..5, 0u8..6);
    prop_oneof![
        4 => (0usize..6, proptest::option::weighted(0.85, variant)).prop_map(|(s, v)| Op::Route(s, v)),
        1 => (0usize..6).prop_map(Op::Touch),
        2 => (0usize..3, proptest::option::of(0u8..3)).prop_map(|(s, v)| Op::Service(s, v)),
        1 => proptest::option::weighted(0.85, 0u8..5).prop_map(Op::Gateway),
        1 => any::<bool>().prop_map(Op::Grant),
        3 => (0usize..4, proptest::option::of((0u8..3, 0u8..3, 0u8..4))).prop_map(|(s, v)| Op::Ingress(s, v)),
        1 => proptest::option::of(0u8..2).prop_map(Op::Secret),
        1 => proptest::option::of(0u8..2).prop_map(Op::Users),
        1 => any::<bool>().prop_map(Op::Listeners),
    ]
}

const SERVICES: [(&str, &str); 3] = [("apps", "web"), ("apps", "api"), ("other", "db")];

fn route_spec(slot: usize, (hosts, parent, backend, shape): (u8, u8, u8, u8)) -> Value {
    let hostnames = match hosts {
        0 => json!([]),
        1 => json!(["a.example.com"]),
        2 => json!(["*.example.com"]),
        _ => json!(["b.other.org"]),
    };
    let parent = match parent {
        0 => json!({"name": "edge"}),
        1 => json!({"name": "edge", "sectionName": "https"}),
        2 => json!({"name": "missing"}),
        _ => json!({"name": "edge", "namespace": "apps"}),
    };
    let backend = match backend {
        0 => json!({"name": "web", "port": 80}),
        1 => json!({"name": "api", "port": 80}),
        2 => json!({"name": "db", "namespace": "other", "port": 80}),
        3 => json!({"name": "web", "port": 9000}),
        _ => json!({"name": "gone", "port": 80}),
    };
    let rules: Vec<Value> = (0..=(shape % 3))
        .map(|j| json!({"matches": [{"path": {"value": format!("/r{slot}/{j}")}}], "backendRefs": [backend]}))
        .collect();
    json!({"parentRefs": [parent], "hostnames": hostnames, "rules": rules})
}

fn gateway_listeners(variant: u8) -> (&'static str, Value) {
    let http = json!({"name": "http", "port": 8080, "protocol": "HTTP",
                      "allowedRoutes": {"namespaces": {"from": "All"}}});
    match variant {
        0 => ("edgegate", json!([http])),
        1 => (
            "edgegate",
            json!([{"name": "http", "port": 8080, "protocol": "HTTP", "hostname": "*.example.com"}]),
        ),
        2 => (
            "edgegate",
            json!([http, {"name": "https", "port": 8443, "protocol": "HTTPS",
                          "allowedRoutes": {"namespaces": {"from": "All"}},
                          "tls": {"certificateRefs": [{"name": "site"}]}}]),
        ),
        3 => (
            "edgegate",
            json!([{"name": "http", "port": 9999, "protocol": "HTTP"}]),
        ),
        _ => ("nginx", json!([http])),
    }
}

fn apply(world: &mut World, op: &Op, tls_port: &mut u16) {
    let objects = &mut world.0;
    match op {
        Op::Route(slot, variant) => {
            let ns = if slot % 2 == 0 { "apps" } else { "other" };
            let name = format!("r{slot}");
            match variant {
                None => {
                    objects.routes.remove(&key(ns, &name));
                }
                Some(v) => {
                    let created = format!("2026-01-01T00:00:0{}Z", v.3 % 3);
                    let route = serde_json::from_value(
                        json!({"metadata": meta(ns, &name, &created), "spec": route_spec(*slot, *v)}),
                    )
                    .expect("route");
                    objects.routes.insert(key(ns, &name), Arc::new(route));
                }
            }
        }
        Op::Touch(slot) => {
            let ns = if slot % 2 == 0 { "apps" } else { "other" };
            let id = key(ns, &format!("r{slot}"));
            if let Some(route) = objects.routes.get(&id) {
                let copy = Arc::new((**route).clone());
                objects.routes.insert(id, copy);
            }
        }
        Op::Service(slot, variant) => {
            let (ns, name) = SERVICES[*slot];
            match variant {
                None => {
                    objects.services.remove(&key(ns, name));
                }
                Some(v) => {
                    let ports = match v {
                        0 => vec![("http".to_string(), 80)],
                        1 => vec![("http".to_string(), 80), ("admin".to_string(), 9000)],
                        _ => vec![("http".to_string(), 8080)],
                    };
                    objects
                        .services
                        .insert(key(ns, name), Arc::new(ServicePorts(ports)));
                }
            }
        }
        Op::Gateway(variant) => match variant {
            None => {
                objects.gateways.remove(&key("apps", "edge"));
            }
            Some(v) => {
                let (class, listeners) = gateway_listeners(*v);
                let gateway = serde_json::from_value(json!({
                    "metadata": meta("apps", "edge", "2026-01-01T00:00:00Z"),
                    "spec": {"gatewayClassName": class, "listeners": listeners}
                }))
                .expect("gateway");
                objects
                    .gateways
                    .insert(key("apps", "edge"), Arc::new(gateway));
            }
        },
        Op::Grant(on) => {
            if *on {
                let taken = std::mem::take(world);
                *world = taken.grant("other", "apps");
            } else {
                objects.grants.remove(&key("other", "allow"));
            }
        }
        Op::Ingress(slot, variant) => {
            let name = format!("i{slot}");
            match variant {
                None => {
                    objects.ingresses.remove(&key("apps", &name));
                }
                Some((host, backend, annotated)) => {
                    let service = ["web", "api", "gone"][*backend as usize];
                    // One path for all: a canary joins the first main of its host.
                    let mut spec = json!({
                        "ingressClassName": "edgegate",
                        "rules": [{"host": format!("i{host}.example.com"), "http": {"paths": [
                            {"path": "/shared", "pathType": "Prefix",
                             "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]
                    });
                    if *host == 2 {
                        spec["tls"] = json!([{"secretName": "site"}]);
                    }
                    let mut metadata = meta("apps", &name, &format!("2026-01-01T00:00:0{slot}Z"));
                    metadata["annotations"] = match annotated {
                        0 => json!({}),
                        1 => json!({"nginx.ingress.kubernetes.io/proxy-body-size": "2k"}),
                        2 => json!({"nginx.ingress.kubernetes.io/canary": "true",
                                    "nginx.ingress.kubernetes.io/canary-by-header": "x-canary",
                                    "nginx.ingress.kubernetes.io/canary-weight": "20"}),
                        _ => json!({"nginx.ingress.kubernetes.io/auth-type": "basic",
                                    "nginx.ingress.kubernetes.io/auth-secret": "users"}),
                    };
                    let ingress =
                        serde_json::from_value(json!({"metadata": metadata, "spec": spec}))
                            .expect("ingress");
                    objects
                        .ingresses
                        .insert(key("apps", &name), Arc::new(ingress));
                }
            }
        }
        Op::Secret(variant) => match variant {
            None => {
                objects.secrets.remove(&key("apps", "site"));
            }
            Some(v) => {
                let cert = if *v == 0 { &b"ONE"[..] } else { &b"TWO"[..] };
                objects.secrets.insert(
                    key("apps", "site"),
                    Arc::new(TlsSecret {
                        cert: Bytes::copy_from_slice(cert),
                        key: Bytes::from_static(b"KEY"),
                    }),
                );
            }
        },
        Op::Users(variant) => match variant {
            None => {
                objects.opaque_secrets.remove(&key("apps", "users"));
            }
            Some(v) => {
                // A bcrypt hash (cost 4) of "pw"; the second is not one (refused).
                let line = if *v == 0 {
                    "alice:$2y$04$Q3ZQx0eyiBo2lrNbO/AtY.0Pj2TzVOKb3Sq4bOqHEkc/YX1yGn1jC\n"
                } else {
                    "alice:plain\n"
                };
                let data = [("auth".to_string(), Bytes::from(line))].into();
                objects
                    .opaque_secrets
                    .insert(key("apps", "users"), Arc::new(OpaqueSecret(data)));
            }
        },
        Op::Listeners(moved) => *tls_port = if *moved { 9443 } else { 8443 },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_cache_always_gives_what_full_translation_gives(
        ops in proptest::collection::vec(op(), 1..30)
    ) {
        let mut world = World::new();
        apply(&mut world, &Op::Gateway(Some(0)), &mut 8443);
        let mut tls_port = 8443;
        let mut translator = Translator::default();
        for op in &ops {
            apply(&mut world, op, &mut tls_port);
            let mut facts = listeners();
            facts[1].port = tls_port;
            let kept = translator.translate(&world.0, &settings(), &facts);
            let full = translate(&world.0, &settings(), &facts);
            prop_assert!(kept == full, "after {:?}\ncached {:#?}\nfull {:#?}", op, kept, full);
        }
    }
}
