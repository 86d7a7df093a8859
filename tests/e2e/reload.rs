//! Hot reload, spec section 5: every trigger, refusal, atomicity, and no failed request.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{client, Gateway, Upstream};
use crate::{config, named};

async fn generation(gw: &Gateway) -> u64 {
    gw.config_json().await["generation"]
        .as_u64()
        .expect("generation")
}

/// Waits until the running config reaches `want`; returns how long it took.
async fn wait_generation(gw: &Gateway, want: u64) -> Duration {
    let started = Instant::now();
    loop {
        let now = generation(gw).await;
        if now >= want {
            assert_eq!(now, want, "more reloads than changes");
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still generation {now}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn body(gw: &Gateway, path: &str) -> (u16, String) {
    let resp = client()
        .get(gw.url("web", path))
        .send()
        .await
        .expect("request");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

fn version(n: u32) -> String {
    config(&["web"], &named(&format!("v{n}"), "path_prefix = \"/\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_edit_is_applied_within_two_seconds() {
    let gw = Gateway::start(&version(1));
    assert_eq!(body(&gw, "/").await.1, "v1");
    let v1_requests =
        "edgegate_requests_total{code=\"200\",listener=\"web\",route=\"v1\",upstream=\"\"}";
    let deadline = Instant::now() + Duration::from_secs(2);
    while gw.metric(v1_requests).await.is_none() {
        assert!(Instant::now() < deadline, "v1 request never counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.write_config(&version(2));
    let took = wait_generation(&gw, 2).await;
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(body(&gw, "/").await.1, "v2");
    assert_eq!(
        gw.metric(v1_requests).await,
        None,
        "series of a removed route stay"
    );
    assert_eq!(
        gw.metric("edgegate_config_reloads_total{result=\"success\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(gw.metric("edgegate_config_generation").await, Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_by_rename_is_applied() {
    let gw = Gateway::start(&version(1));
    let tmp = gw.dir.path().join(".edgegate.toml.swp");
    std::fs::write(&tmp, version(2)).expect("write");
    std::fs::rename(&tmp, &gw.config_path).expect("rename");
    wait_generation(&gw, 2).await;
    assert_eq!(body(&gw, "/").await.1, "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_recreate_is_applied_once() {
    let gw = Gateway::start(&version(1));
    std::fs::remove_file(&gw.config_path).expect("remove");
    std::fs::write(&gw.config_path, version(2)).expect("write");
    wait_generation(&gw, 2).await;
    assert_eq!(body(&gw, "/").await.1, "v2");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(generation(&gw).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_symlink_swap_is_applied() {
    // The layout kubelet gives a ConfigMap volume: the file is a symlink through `..data`,
    // itself a symlink to a timestamped directory that is swapped atomically on update.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir(root.join("..2026_11_26_1")).expect("mkdir");
    std::fs::write(root.join("..2026_11_26_1/edgegate.toml"), version(1)).expect("write");
    std::os::unix::fs::symlink("..2026_11_26_1", root.join("..data")).expect("symlink");
    std::os::unix::fs::symlink("..data/edgegate.toml", root.join("edgegate.toml"))
        .expect("symlink");
    let config_path = root.join("edgegate.toml");
    let gw = Gateway::spawn(dir, config_path, &[]);
    assert_eq!(body(&gw, "/").await.1, "v1");

    let root = gw.dir.path();
    std::fs::create_dir(root.join("..2026_11_26_2")).expect("mkdir");
    std::fs::write(root.join("..2026_11_26_2/edgegate.toml"), version(2)).expect("write");
    std::os::unix::fs::symlink("..2026_11_26_2", root.join("..data_tmp")).expect("symlink");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
    std::fs::remove_dir_all(root.join("..2026_11_26_1")).expect("cleanup");
    wait_generation(&gw, 2).await;
    assert_eq!(body(&gw, "/").await.1, "v2");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(generation(&gw).await, 2, "one swap, one reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_even_without_a_file_event() {
    let gw = Gateway::start(&version(1));
    gw.signal("HUP");
    wait_generation(&gw, 2).await;
    assert_eq!(body(&gw, "/").await.1, "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_writes_is_one_reload() {
    let gw = Gateway::start(&version(1));
    let text = version(2);
    let (head, tail) = text.split_at(text.len() / 2);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&gw.config_path).expect("create");
        f.write_all(head.as_bytes()).expect("write");
        f.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(20));
        f.write_all(tail.as_bytes()).expect("write");
    }
    wait_generation(&gw, 2).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(generation(&gw).await, 2);
    assert_eq!(
        gw.metric("edgegate_config_reloads_total{result=\"failure\"}")
            .await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_is_refused_and_the_old_config_stays() {
    let gw = Gateway::start(&version(1));
    let skip = gw.log_len();
    gw.write_config(&format!(
        "{}\n[[routes]]\nname = \"bad\"\nupstream = \"missing\"\n",
        version(2)
    ));
    let line = gw.wait_for_log_after("config reload refused", skip, Duration::from_secs(3));
    assert!(
        line.contains("edgegate.toml:") && line.contains("unknown upstream"),
        "{line}"
    );
    assert_eq!(
        gw.metric("edgegate_config_reloads_total{result=\"failure\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(generation(&gw).await, 1);
    assert_eq!(body(&gw, "/").await.1, "v1");
    // The next valid edit is applied as usual.
    gw.write_config(&version(3));
    wait_generation(&gw, 2).await;
    assert_eq!(body(&gw, "/").await.1, "v3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_across_a_reload_that_removes_its_route() {
    let a = Upstream::start("a").await;
    let with_route = config(
        &["web"],
        &format!(
            "[[routes]]\nname = \"slow\"\npath_prefix = \"/slow\"\nupstream = \"pool\"\n\n[upstreams.pool]\nendpoints = [\"{}\"]\n",
            a.addr
        ),
    );
    let gw = Gateway::start(&with_route);
    let url = gw.url("web", "/slow/1500");
    let in_flight =
        tokio::spawn(async move { client().get(url).send().await.map(|r| r.status().as_u16()) });
    while a.hits() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.write_config(&version(2));
    wait_generation(&gw, 2).await;
    assert_eq!(
        body(&gw, "/slow/1").await.1,
        "v2",
        "new requests see the new config"
    );
    assert_eq!(in_flight.await.expect("join").expect("request"), 200);
    assert_eq!(a.last().method, "GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_added_and_removed_by_reload() {
    let two = config(
        &["web", "old"],
        &[
            named("w", "listeners = [\"web\"]"),
            named("o", "listeners = [\"old\"]"),
        ]
        .concat(),
    );
    let mut gw = Gateway::start(&two);
    let old = gw.addr("old");
    // A keepalive connection on the listener that stays.
    let kept = client();
    assert_eq!(
        kept.get(gw.url("web", "/"))
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("b"),
        "w"
    );

    let swapped = config(
        &["web", "new"],
        &[
            named("w", "listeners = [\"web\"]"),
            named("n", "listeners = [\"new\"]"),
        ]
        .concat(),
    );
    gw.write_config(&swapped);
    wait_generation(&gw, 2).await;
    let summary = gw.wait_for_log("config reloaded", Duration::from_secs(2));
    assert!(
        summary.contains("listeners added: new")
            && summary.contains("listeners removed: old")
            && summary.contains("routes added: n")
            && summary.contains("routes removed: o"),
        "{summary}"
    );
    gw.refresh_addresses();
    let resp = client()
        .get(gw.url("new", "/"))
        .send()
        .await
        .expect("new listener");
    assert_eq!(resp.text().await.expect("body"), "n");
    assert!(
        tokio::net::TcpStream::connect(old).await.is_err(),
        "the removed listener still accepts"
    );
    assert_eq!(
        kept.get(gw.url("web", "/"))
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("b"),
        "w"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_pools_keep_their_round_robin_position() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let make = |extra: &str| {
        config(
            &["web"],
            &format!(
                "[[routes]]\nname = \"main\"\nupstream = \"pool\"\n\n{extra}[upstreams.pool]\nendpoints = [\"{}\", \"{}\"]\n",
                a.addr, b.addr
            ),
        )
    };
    let gw = Gateway::start(&make(""));
    let c = client();
    let mut seen = Vec::new();
    for round in 0..6 {
        let resp = c.get(gw.url("web", "/")).send().await.expect("get");
        seen.push(
            resp.headers()["x-upstream"]
                .to_str()
                .expect("h")
                .to_string(),
        );
        if round == 2 {
            gw.write_config(&make(&named("extra", "path = \"/extra\"")));
            wait_generation(&gw, 2).await;
        }
    }
    for pair in seen.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "alternation broke across the reload: {seen:?}"
        );
    }
}

/// Several clients for about eight seconds, on fresh and on keepalive connections, while
/// the config is rewritten twenty times: not one request may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_while_the_config_is_rewritten_under_load() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let make = |n: usize| {
        config(
            &["web"],
            &format!(
                "[[routes]]\nname = \"main-{n}\"\nupstream = \"pool\"\nresponse_headers = {{ set = {{ \"x-generation\" = \"{n}\" }} }}\n\n[upstreams.pool]\nendpoints = [\"{}\", \"{}\"]\n",
                a.addr, b.addr
            ),
        )
    };
    let gw = Gateway::start(&make(0));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..6 {
        let keepalive = worker % 2 == 0;
        let url = gw.url("web", "/load");
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let shared = client();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let c = if keepalive {
                    shared.clone()
                } else {
                    reqwest::Client::builder()
                        .no_proxy()
                        .pool_max_idle_per_host(0)
                        .build()
                        .expect("client")
                };
                match c.get(&url).send().await {
                    Ok(r) => {
                        let status = r.status();
                        let complete = r.bytes().await.is_ok();
                        if status == 200 && complete {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            eprintln!("status {status}, body complete: {complete}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        eprintln!("error {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for n in 1..=20 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        gw.write_config(&make(n));
    }
    wait_generation(&gw, 21).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("reload under load: {ok} ok, {failed} failed");
    assert_eq!(failed, 0);
    assert!(ok > 500, "only {ok} requests");
}

/// A setting the running process cannot apply is named in a warning, not ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_count_change_is_named_as_needing_a_restart() {
    let gw = Gateway::start(&version(1));
    gw.wait_ready().await;
    gw.write_config(&format!("[gateway]\nthreads = 3\n\n{}", version(2)));
    wait_generation(&gw, 2).await;
    let line = gw.wait_for_log("threads changed", Duration::from_secs(3));
    assert!(line.contains("restart"), "{line}");
}

/// Waits until the file at `path` exists and contains `needle`; its text.
async fn wait_file_containing(path: &std::path::Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never contained {needle:?}; it holds {text:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// logrotate moves the access log away and sends SIGHUP; the gateway reopens the log by
/// its path, with the config unchanged, and writes the next lines to the new file (issue
/// 18, fault 6: it wrote into the rotated file forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_the_access_log_that_logrotate_moved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let text = format!(
        "[gateway]\naccess_log = \"{}\"\n\n{}",
        log.display(),
        config(&["web"], &named("hello", "path_prefix = \"/\""))
    );
    let path = dir.path().join("edgegate.toml");
    std::fs::write(&path, text).expect("write config");
    let gw = Gateway::spawn(dir, path, &[]);
    assert_eq!(body(&gw, "/before-rotate").await.0, 200);
    wait_file_containing(&log, "/before-rotate").await;

    std::fs::rename(&log, &rotated).expect("rotate");
    let before = gw.log_len();
    gw.signal("HUP");
    gw.wait_for_log_after("SIGHUP", before, Duration::from_secs(5));
    // The new file appears on the reopen, before any new line.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log.exists() {
        assert!(
            Instant::now() < deadline,
            "no new access log after SIGHUP: lines still go to the rotated file"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(body(&gw, "/after-rotate").await.0, 200);
    let new = wait_file_containing(&log, "/after-rotate").await;
    assert!(!new.contains("/before-rotate"), "{new}");
    let old = std::fs::read_to_string(&rotated).expect("rotated file");
    assert!(
        old.contains("/before-rotate") && !old.contains("/after-rotate"),
        "{old}"
    );
}
