//! Label and field selectors, parsed and matched as the API server does.

use super::*;

/// What a list or watch asked for: a resource, optionally one namespace, selectors.
pub(super) struct Filter {
    pub(super) kind: Kind,
    pub(super) namespace: Option<String>,
    pub(super) labels: Vec<LabelRequirement>,
    pub(super) fields: Vec<FieldRequirement>,
}

pub(super) enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

pub(super) struct FieldRequirement {
    /// `true` for metadata.name, `false` for metadata.namespace.
    pub(super) name: bool,
    pub(super) value: String,
    pub(super) equal: bool,
    /// The top-level `type` field instead (Secrets only, as on a real server).
    pub(super) top_level_type: bool,
}

impl Filter {
    pub(super) fn parse(
        kind: Kind,
        namespace: Option<String>,
        query: &Query,
    ) -> Result<Filter, String> {
        Ok(Filter {
            kind,
            namespace,
            labels: parse_label_selector(query.get("labelSelector").unwrap_or(""))?,
            fields: parse_field_selector(kind, query.get("fieldSelector").unwrap_or(""))?,
        })
    }

    pub(super) fn selects_all(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub(super) fn covers(&self, key: &Key) -> bool {
        key.kind == self.kind
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == key.namespace)
    }

    pub(super) fn matches(&self, object: &Value) -> bool {
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
    pub(super) fn render(&self, change: &Change) -> Option<Bytes> {
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

pub(super) fn is_label_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
}

pub(super) fn is_label_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Splits a selector at the commas that separate requirements (not those in `in (a,b)`).
pub(super) fn requirements(selector: &str) -> Vec<&str> {
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

pub(super) fn parse_label_selector(selector: &str) -> Result<Vec<LabelRequirement>, String> {
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

pub(super) fn parse_field_selector(
    kind: Kind,
    selector: &str,
) -> Result<Vec<FieldRequirement>, String> {
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
