//! The pools as the metrics render them: tested here, where the pools are, so the
//! metrics module needs nothing of the snapshot.

use crate::config::{load, SourceFile};
use crate::snapshot::pool::MemberStates;
use crate::snapshot::{Discovered, Snapshot, SourceInfo};
use crate::telemetry::metrics::Metrics;
use std::sync::Arc;

fn snapshot(upstreams: &[&str]) -> Snapshot {
    let mut text = String::from("[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n");
    for (i, name) in upstreams.iter().enumerate() {
        text.push_str(&format!(
            "[[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\nupstream = \"{name}\"\n[upstreams.{name}]\nendpoints = [\"127.0.0.1:{}\"]\n",
            1000 + i
        ));
    }
    let loaded = load(&SourceFile::new("t.toml", text.as_str())).expect("valid");
    Snapshot::compile(
        Arc::new(loaded.config),
        SourceInfo::new("t.toml", &text),
        1,
        &Discovered::new(),
        None,
        &MemberStates::default(),
        Default::default(),
    )
}

/// Issue 10, fault 9: rendering reset the gauge vector, so a scrape running beside
/// another could gather it empty.
#[test]
fn concurrent_scrapes_see_every_series_and_removed_upstreams_leave() {
    let metrics = Arc::new(Metrics::new());
    let names = ["a", "b", "c", "d"];
    let current = Arc::new(snapshot(&names));
    let scrapes: Vec<_> = (0..2)
        .map(|_| {
            let (metrics, current) = (metrics.clone(), current.clone());
            std::thread::spawn(move || {
                for _ in 0..300 {
                    let text = metrics.render(current.generation, &current.pools);
                    for name in names {
                        let series = format!(
                            "edgegate_upstream_endpoints{{state=\"healthy\",upstream=\"{name}\"}} 1"
                        );
                        assert!(text.contains(&series), "missing {series}");
                    }
                }
            })
        })
        .collect();
    for scrape in scrapes {
        scrape.join().expect("scrape");
    }
    let last = snapshot(&["a"]);
    let text = metrics.render(last.generation, &last.pools);
    assert!(text.contains("upstream=\"a\""));
    assert!(!text.contains("upstream=\"b\""), "{text}");
}
