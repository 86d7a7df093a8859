//! The status page's files, compiled into the binary: the page works with no internet
//! access and no build step, and what is served is exactly what was tested.
//!
//! Every answer carries a Content-Security-Policy that allows only this origin, so even
//! a route or object name crafted to look like markup can load nothing and run nothing
//! (the script also writes names as text, never as HTML).

/// One embedded file.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static str,
}

/// Only the admin listener itself; no inline script or style, no frames, no forms.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The page and its assets by request path.
pub fn asset(path: &str) -> Option<Asset> {
    let (content_type, body) = match path {
        "/" => (
            "text/html; charset=utf-8",
            include_str!("assets/status.html"),
        ),
        "/assets/status.css" => ("text/css; charset=utf-8", include_str!("assets/status.css")),
        "/assets/status.js" => (
            "text/javascript; charset=utf-8",
            include_str!("assets/status.js"),
        ),
        "/favicon.svg" => ("image/svg+xml", include_str!("assets/favicon.svg")),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_embedded_assets() {
        let page = asset("/").expect("page").body;
        for reference in ["/assets/status.css", "/assets/status.js", "/favicon.svg"] {
            assert!(page.contains(reference), "{reference}");
            assert!(asset(reference).is_some(), "{reference}");
        }
        for asset_path in ["/", "/assets/status.css", "/assets/status.js"] {
            let body = asset(asset_path).expect("asset").body;
            assert!(
                !body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"),
                "{asset_path} must not name another host"
            );
        }
        assert!(asset("/assets/other.js").is_none());
    }
}
