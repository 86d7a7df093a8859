//! Route matching cost at 10, 1,000 and 10,000 routes. The bar (issue 2): matching at
//! 10,000 routes within 2x of 10 routes, because the router indexes hosts and path
//! segments instead of scanning routes.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use edgegate::config::{load, SourceFile};
use edgegate::snapshot::pool::MemberStates;
use edgegate::snapshot::router::RequestFacts;
use edgegate::snapshot::{Discovered, Snapshot, SourceInfo};
use std::sync::Arc;

/// The allocator the binary uses, so reload cost is measured as it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A realistic mix: per-tenant hosts, wildcard hosts, API prefixes, exact paths,
/// header-matched canaries and a catch-all.
fn config_with_routes(n: usize) -> String {
    config_with(n, 1)
}

/// `routes` routes spread over `upstreams` upstreams of two endpoints each.
fn config_with(n: usize, upstreams: usize) -> String {
    let mut text = String::from("[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n\n");
    for u in 0..upstreams {
        text.push_str(&format!(
            "[upstreams.u{u}]\nendpoints = [\"127.0.{}.{}:8080\", \"127.0.{}.{}:8081\"]\n\n",
            u / 250,
            u % 250 + 1,
            u / 250,
            u % 250 + 1
        ));
    }
    for i in 0..n {
        let matcher = match i % 5 {
            0 => format!(
                "hosts = [\"tenant{i}.example.com\"]\npath_prefix = \"/api/v{}\"",
                i % 7
            ),
            1 => format!("hosts = [\"*.zone{i}.example.net\"]"),
            2 => format!("path = \"/exact/{i}/resource\""),
            3 => format!("path_prefix = \"/svc{i}/items\"\nmethods = [\"GET\", \"POST\"]"),
            _ => format!("path_prefix = \"/canary{i}\"\nheaders = {{ \"x-canary\" = \"true\" }}"),
        };
        text.push_str(&format!(
            "[[routes]]\nname = \"r{i}\"\n{matcher}\nupstream = \"u{}\"\n\n",
            i % upstreams
        ));
    }
    text.push_str("[[routes]]\nname = \"fallback\"\nupstream = \"u0\"\n");
    text
}

fn snapshot(n: usize) -> Snapshot {
    let text = config_with_routes(n);
    let loaded = load(&SourceFile::new("bench.toml", text.as_str())).expect("valid config");
    Snapshot::compile(
        Arc::new(loaded.config),
        SourceInfo::new("bench.toml", &text),
        1,
        &Discovered::new(),
        None,
        &MemberStates::default(),
        Default::default(),
    )
}

fn bench_router(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    let headers = {
        let mut h = http::HeaderMap::new();
        h.insert("x-canary", http::HeaderValue::from_static("true"));
        h.insert("user-agent", http::HeaderValue::from_static("bench"));
        h
    };
    for n in [10usize, 1_000, 10_000] {
        let snap = snapshot(n);
        // Requests that hit each kind of route, plus one that falls through to the end.
        let requests = [
            ("tenant5.example.com", "/api/v5/users/42"),
            ("a.zone6.example.net", "/anything"),
            ("www.example.org", "/exact/7/resource"),
            ("www.example.org", "/svc3/items/9"),
            ("www.example.org", "/canary4/x"),
            ("unknown.example.org", "/not/routed/anywhere/deep/path"),
        ];
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                for (host, path) in &requests {
                    let facts = RequestFacts {
                        host,
                        path,
                        query: None,
                        method: &http::Method::GET,
                        headers: &headers,
                    };
                    black_box(snap.router.route("web", &facts));
                }
            })
        });
    }
    group.finish();
}

/// The reload path without I/O: parse + validate + compile against the running snapshot
/// (so unchanged pools are reused, as in a real reload) + publish through `ArcSwap`.
/// The bar (issue 4): under 100 ms at 10,000 routes.
fn bench_compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("reload");
    group.sample_size(10);
    for (routes, upstreams) in [
        (10usize, 1usize),
        (1_000, 10),
        (10_000, 100),
        (10_000, 1_000),
    ] {
        let text = config_with(routes, upstreams);
        let states = MemberStates::default();
        let first = load(&SourceFile::new("bench.toml", text.as_str())).expect("valid");
        let running = arc_swap::ArcSwap::from_pointee(Snapshot::compile(
            Arc::new(first.config),
            SourceInfo::new("bench.toml", &text),
            1,
            &Discovered::new(),
            None,
            &states,
            Default::default(),
        ));
        let id = BenchmarkId::new(
            "parse_validate_compile_publish",
            format!("{routes}_routes_{upstreams}_upstreams"),
        );
        group.bench_with_input(id, &text, |b, text| {
            b.iter(|| {
                let loaded = load(&SourceFile::new("bench.toml", text.as_str())).expect("valid");
                let current = running.load_full();
                let next = Snapshot::compile(
                    Arc::new(loaded.config),
                    SourceInfo::new("bench.toml", text),
                    current.generation + 1,
                    &Discovered::new(),
                    Some(&current),
                    &states,
                    Default::default(),
                );
                running.store(Arc::new(next));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_router, bench_compile);
criterion_main!(benches);
