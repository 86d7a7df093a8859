//! Validation of `[kubernetes]` (cluster routes), on its own so that it depends on no
//! other section: it only reports through the callback it is given.

use std::ops::Range;

use toml::Spanned;

use crate::config::model::KubernetesSettings;
use crate::config::raw;
use crate::config::source::Severity;

/// Checks `[kubernetes]`. Class names and namespaces are Kubernetes names: a wrong one
/// would silently match nothing, so it is an error here rather than an empty cluster.
pub fn validate(
    raw: Spanned<raw::KubernetesSettings>,
    report: &mut dyn FnMut(Severity, Range<usize>, String),
) -> KubernetesSettings {
    let span = raw.span();
    let raw = raw.into_inner();
    let names_a_class = raw.gateway_class.is_some() || raw.ingress_class.is_some();
    let mut class = |text: Option<raw::Text>, key: &str| {
        let text = text?;
        let value = text.get_ref().trim();
        if !is_dns_subdomain(value) {
            report(
                Severity::Error,
                text.span(),
                format!("invalid {key} {value:?}: expected a Kubernetes object name (lowercase letters, digits, '-' and '.')"),
            );
            return None;
        }
        Some(value.to_string())
    };
    let gateway_class = class(raw.gateway_class, "gateway_class");
    let ingress_class = class(raw.ingress_class, "ingress_class");
    let mut namespaces: Vec<String> = Vec::new();
    for text in raw.namespaces.unwrap_or_default() {
        let value = text.get_ref().trim();
        if !is_dns_label(value) {
            report(
                Severity::Error,
                text.span(),
                format!("invalid namespace {value:?}: expected a DNS label (lowercase letters, digits and '-', at most 63)"),
            );
        } else if namespaces.iter().any(|n| n == value) {
            report(
                Severity::Warning,
                text.span(),
                format!("namespace {value:?} is listed twice"),
            );
        } else {
            namespaces.push(value.to_string());
        }
    }
    if !names_a_class {
        report(
            Severity::Warning,
            span,
            "[kubernetes] names neither gateway_class nor ingress_class: no route comes from the cluster".to_string(),
        );
    }
    KubernetesSettings {
        gateway_class,
        ingress_class,
        namespaces,
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use crate::config::{load, SourceFile};

    const BASE: &str = "[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n";

    fn check(extra: &str) -> Result<crate::config::Loaded, Vec<String>> {
        load(&SourceFile::new("t.toml", format!("{BASE}{extra}")))
            .map_err(|d| d.0.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn absent_means_no_cluster_routes() {
        let loaded = check("").expect("valid");
        assert_eq!(loaded.config.kubernetes, None);
    }

    #[test]
    fn classes_and_namespaces_are_read() {
        let loaded = check(
            "[kubernetes]\ngateway_class = \"edgegate\"\ningress_class = \"edge.example\"\nnamespaces = [\"apps\", \"web\"]\n",
        )
        .expect("valid");
        let k = loaded.config.kubernetes.expect("kubernetes");
        assert_eq!(k.gateway_class.as_deref(), Some("edgegate"));
        assert_eq!(k.ingress_class.as_deref(), Some("edge.example"));
        assert_eq!(k.namespaces, vec!["apps", "web"]);
    }

    #[test]
    fn bad_names_are_errors_at_their_values() {
        let errors =
            check("[kubernetes]\ngateway_class = \"Edge Gate\"\nnamespaces = [\"ok\", \"-bad\"]\n")
                .expect_err("invalid");
        assert!(errors
            .iter()
            .any(|e| e.starts_with("error: t.toml:5:17: invalid gateway_class")));
        assert!(errors
            .iter()
            .any(|e| e.starts_with("error: t.toml:6:21: invalid namespace \"-bad\"")));
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn unknown_keys_are_refused_and_no_class_warns() {
        let errors = check("[kubernetes]\ngateway = \"x\"\n").expect_err("unknown key");
        assert!(errors.iter().any(|e| e.contains("unknown field `gateway`")));
        let loaded = check("[kubernetes]\n").expect("valid");
        assert!(loaded.warnings.iter().any(|w| w
            .to_string()
            .contains("names neither gateway_class nor ingress_class")));
    }
}
