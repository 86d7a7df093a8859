//! `[gateway.tracing]` : raw -> model, on its own so the section's rules
//! read in one place. Errors go through `error`, which the checker turns into
//! `file:line:col` diagnostics like every other section's.

use std::ops::Range;

use toml::Spanned;

use crate::config::model::{OtlpEndpoint, Tracing};
use crate::config::raw;

/// The path OTLP/HTTP collectors serve traces on, used when the URL names none.
const DEFAULT_TRACES_PATH: &str = "/v1/traces";

pub(super) fn tracing(
    raw: Spanned<raw::Tracing>,
    error: &mut dyn FnMut(&Range<usize>, String),
) -> Option<Tracing> {
    let raw = raw.into_inner();
    let endpoint = otlp_endpoint(&raw.otlp_endpoint, error);
    let sample_ratio = match raw.sample_ratio {
        None => 1.0,
        Some(ratio) => {
            let value = *ratio.get_ref();
            if !(0.0..=1.0).contains(&value) {
                error(
                    &ratio.span(),
                    format!("sample_ratio {value} is outside 0..=1"),
                );
                return None;
            }
            value
        }
    };
    let service_name = match raw.service_name {
        None => "edgegate".to_string(),
        Some(name) if name.get_ref().trim().is_empty() => {
            error(&name.span(), "service_name must not be empty".to_string());
            return None;
        }
        Some(name) => name.into_inner(),
    };
    Some(Tracing {
        endpoint: endpoint?,
        sample_ratio,
        service_name,
    })
}

fn otlp_endpoint(
    text: &raw::Text,
    error: &mut dyn FnMut(&Range<usize>, String),
) -> Option<OtlpEndpoint> {
    let url = text.get_ref().trim();
    let uri: http::Uri = match url.parse() {
        Ok(uri) => uri,
        Err(e) => {
            error(&text.span(), format!("invalid otlp_endpoint {url:?}: {e}"));
            return None;
        }
    };
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            // The exporter is a small plain-HTTP client; a collector agent on the host or
            // a sidecar is the usual hop, and it forwards over TLS itself.
            error(
                &text.span(),
                format!("otlp_endpoint {url:?}: https is not supported; use an http:// collector (e.g. a local agent)"),
            );
            return None;
        }
        _ => {
            error(
                &text.span(),
                format!("invalid otlp_endpoint {url:?}: expected an http:// URL such as \"http://127.0.0.1:4318/v1/traces\""),
            );
            return None;
        }
    }
    let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
        error(
            &text.span(),
            format!("invalid otlp_endpoint {url:?}: no host"),
        );
        return None;
    };
    let path = match uri.path_and_query().map(|p| p.as_str()) {
        None | Some("") | Some("/") => DEFAULT_TRACES_PATH.to_string(),
        Some(path) => path.to_string(),
    };
    Some(OtlpEndpoint {
        url: url.to_string(),
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: uri.port_u16().unwrap_or(80),
        path,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{load, SourceFile};

    fn load_text(text: &str) -> Result<Option<crate::config::model::Tracing>, Vec<String>> {
        match load(&SourceFile::new("t.toml", text)) {
            Ok(loaded) => Ok(loaded.config.gateway.tracing),
            Err(d) => Err(d.0.iter().map(|d| d.to_string()).collect()),
        }
    }

    #[test]
    fn defaults_and_explicit_values() {
        assert_eq!(load_text(""), Ok(None));
        let t = load_text("[gateway.tracing]\notlp_endpoint = \"http://127.0.0.1:4318\"\n")
            .expect("valid")
            .expect("tracing on");
        assert_eq!(t.sample_ratio, 1.0);
        assert_eq!(t.service_name, "edgegate");
        assert_eq!(
            (
                t.endpoint.host.as_str(),
                t.endpoint.port,
                t.endpoint.path.as_str()
            ),
            ("127.0.0.1", 4318, "/v1/traces")
        );
        let t = load_text(
            "[gateway.tracing]\notlp_endpoint = \"http://collector.local/otlp/traces\"\nsample_ratio = 0\nservice_name = \"edge-eu\"\n",
        )
        .expect("valid")
        .expect("tracing on");
        assert_eq!(t.sample_ratio, 0.0);
        assert_eq!(t.service_name, "edge-eu");
        assert_eq!(t.endpoint.port, 80);
        assert_eq!(t.endpoint.path, "/otlp/traces");
    }

    #[test]
    fn bad_values_point_at_their_line_and_column() {
        let errors =
            load_text("[gateway.tracing]\notlp_endpoint = \"ftp://x/y\"\nsample_ratio = 1.5\n")
                .expect_err("invalid");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("error: t.toml:2:17:"), "{errors:?}");
        assert!(errors[0].contains("ftp://x/y"), "{errors:?}");
        assert!(errors[1].starts_with("error: t.toml:3:16:"), "{errors:?}");
        assert!(errors[1].contains("outside 0..=1"), "{errors:?}");
        let errors =
            load_text("[gateway.tracing]\notlp_endpoint = \"not a url\"\n").expect_err("invalid");
        assert!(
            errors[0].starts_with("error: t.toml:2:17: invalid otlp_endpoint"),
            "{errors:?}"
        );
        let errors = load_text("[gateway.tracing]\nsample_ratio = 0.5\n").expect_err("missing");
        assert!(errors[0].contains("otlp_endpoint"), "{errors:?}");
        let errors = load_text("[gateway.tracing]\notlp_endpoint = \"http://a\"\nratio = 1\n")
            .expect_err("unknown key");
        assert!(errors[0].contains("ratio"), "{errors:?}");
    }
}
