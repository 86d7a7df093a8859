//! The reference documentation cannot drift from the code: every config key the serde
//! types accept has a row in `docs/configuration.md` and every row names a key they
//! accept; every registered metric (with its labels) has a row in `docs/metrics.md` and
//! every row names a registered metric.
//!
//! The config keys come from the types themselves, not from a list kept by hand: a probe
//! key in each table makes `deny_unknown_fields` answer "unknown field, expected one of
//! ..." with that table's complete field list, and each field is probed in turn to find
//! the tables below it (a table, an array of tables, or a map of named tables).

use std::collections::BTreeSet;

use crate::config::raw;

const CONFIG_DOC: &str = include_str!("../docs/configuration.md");
const METRICS_DOC: &str = include_str!("../docs/metrics.md");
const PROBE: &str = "edgegate_docs_probe";

/// How a table is written in the file, and how its path reads in the docs' headings.
#[derive(Clone)]
struct Table {
    /// `listeners.tls`, `upstreams.NAME.health_check`; empty for the top level.
    path: String,
    /// TOML that opens this table, ready for a key line.
    header: String,
}

/// The fields of the table `header` opens, or `None` if it is not a table of fields.
fn fields_of(header: &str) -> Option<Vec<String>> {
    let text = format!("{header}{PROBE} = 1\n");
    let error = toml::from_str::<raw::Config>(&text).err()?.to_string();
    let needle = format!("unknown field `{PROBE}`");
    let (_, rest) = error.split_once(&needle)?;
    // "expected one of `a`, `b`" / "expected `a`" / "there are no fields".
    let rest = rest.lines().next().unwrap_or_default();
    Some(
        rest.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// Every (table path, key) the config types accept.
fn config_keys() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut queue = vec![Table {
        path: String::new(),
        header: String::new(),
    }];
    while let Some(table) = queue.pop() {
        let fields = fields_of(&table.header)
            .unwrap_or_else(|| panic!("cannot list the fields of [{}]", table.path));
        for key in fields {
            out.insert((table.path.clone(), key.clone()));
            let path = if table.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", table.path)
            };
            // The header line for a sub-table of `table`, written with the full path.
            let dotted = |suffix: &str| {
                let full = format!("{path}{suffix}");
                let mut header = table.header.clone();
                header.push_str(&format!("[{full}]\n"));
                header
            };
            let array = {
                let mut header = table.header.clone();
                header.push_str(&format!("[[{path}]]\n"));
                header
            };
            let candidates = [
                (path.clone(), dotted("")),
                (path.clone(), array),
                (format!("{path}.NAME"), dotted(".NAME")),
            ];
            if let Some((path, header)) = candidates
                .into_iter()
                .find(|(_, header)| fields_of(header).is_some())
            {
                // Array-of-tables parents are written with their path, so a
                // sub-table of `[[listeners]]` opens as `[listeners.tls]`.
                queue.push(Table { path, header });
            }
        }
    }
    out
}

/// `(table path, key)` for every row of a reference table in `docs/configuration.md`:
/// headings `` ### `[path]` `` (or `[[path]]`, or "### Top level") and rows `` | `key` | ``.
fn documented_keys() -> (BTreeSet<(String, String)>, Vec<String>) {
    let mut out = BTreeSet::new();
    let mut incomplete = Vec::new();
    let mut table: Option<String> = None;
    for line in CONFIG_DOC.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            table = if heading.trim() == "Top level" {
                Some(String::new())
            } else {
                heading
                    .trim()
                    .strip_prefix("`[")
                    .and_then(|h| h.strip_suffix("]`"))
                    .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
            };
            continue;
        }
        if line.starts_with("## ") {
            table = None;
        }
        let (Some(table), Some(row)) = (&table, line.strip_prefix("| `")) else {
            continue;
        };
        let Some((key, _)) = row.split_once('`') else {
            continue;
        };
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        // key | type | default | range | reload | meaning
        if cells.len() < 6 || cells.iter().any(|c| c.is_empty()) {
            incomplete.push(format!("[{table}] {key}"));
        }
        out.insert((table.clone(), key.to_string()));
    }
    (out, incomplete)
}

fn show(keys: &BTreeSet<&(String, String)>) -> String {
    keys.iter()
        .map(|(table, key)| format!("  [{table}] {key}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_config_key_is_documented_and_every_documented_key_exists() {
    let known = config_keys();
    // The walk itself works: keys at three depths, through an array and a map.
    for probe in [
        ("gateway", "grace_period"),
        ("listeners.tls", "certificates"),
        ("upstreams.NAME.health_check", "interval"),
    ] {
        assert!(
            known.contains(&(probe.0.to_string(), probe.1.to_string())),
            "the schema walk missed [{}] {}: {known:?}",
            probe.0,
            probe.1
        );
    }
    let (documented, incomplete) = documented_keys();
    let missing: BTreeSet<_> = known.difference(&documented).collect();
    let unknown: BTreeSet<_> = documented.difference(&known).collect();
    assert!(
        missing.is_empty() && unknown.is_empty() && incomplete.is_empty(),
        "docs/configuration.md and src/config/raw.rs disagree.\n\
         Config keys with no row in docs/configuration.md (add one under the heading \
         ### `[TABLE]`, with type, default, range, reload and meaning):\n{}\n\
         Rows for keys the config does not accept:\n{}\n\
         Rows with an empty cell:\n{}",
        show(&missing),
        show(&unknown),
        incomplete.join("\n")
    );
}

/// `(name, labels)` for every row `` | `edgegate_...` | type | `label`, ... | `` of
/// `docs/metrics.md`.
fn documented_metrics() -> BTreeSet<(String, Vec<String>)> {
    METRICS_DOC
        .lines()
        .filter_map(|line| {
            let row = line.strip_prefix("| `edgegate_")?;
            let (name, _) = row.split_once('`')?;
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let labels = cells
                .get(2)?
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect();
            Some((format!("edgegate_{name}"), labels))
        })
        .collect()
}

#[test]
fn every_metric_is_documented_with_its_labels_and_every_documented_metric_exists() {
    let registered: BTreeSet<(String, Vec<String>)> = crate::telemetry::metrics::Metrics::new()
        .describe()
        .into_iter()
        .map(|m| (m.name, m.labels))
        .collect();
    assert!(registered
        .iter()
        .any(|(n, l)| n == "edgegate_requests_total"
            && l == &["listener", "route", "upstream", "code"]));
    let documented = documented_metrics();
    let missing: Vec<_> = registered.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&registered).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/metrics.md and src/telemetry/metrics.rs disagree.\n\
         Registered but not documented (name, labels), add a row to docs/metrics.md:\n{missing:#?}\n\
         Documented but not registered (or with other labels):\n{unknown:#?}"
    );
}
