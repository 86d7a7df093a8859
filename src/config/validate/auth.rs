//! `[auth.NAME]`: authenticators, and the files they read at load (htpasswd users files,
//! JWKS files). A weak hash in a users file is an error at its line in that file.

use std::collections::BTreeMap;

use super::*;
use crate::config::source::Location;

/// The algorithms a `jwt` authenticator accepts when `algorithms` is not written.
const DEFAULT_ALGORITHMS: &[jsonwebtoken::Algorithm] = &[
    jsonwebtoken::Algorithm::RS256,
    jsonwebtoken::Algorithm::RS384,
    jsonwebtoken::Algorithm::RS512,
    jsonwebtoken::Algorithm::PS256,
    jsonwebtoken::Algorithm::PS384,
    jsonwebtoken::Algorithm::PS512,
    jsonwebtoken::Algorithm::ES256,
    jsonwebtoken::Algorithm::ES384,
    jsonwebtoken::Algorithm::EdDSA,
];

/// Fields the gateway writes itself (or that frame the message): an authenticator
/// filling one would send the upstream two of them.
pub(crate) const GATEWAY_OWNED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "expect",
    "x-request-id",
    "traceparent",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Keys that belong to one kind only, refused on another at their place.
fn misplaced(raw: &raw::Auth, kind: &str) -> Vec<(&'static str, Range<usize>)> {
    let basic = [("users_file", &raw.users_file), ("realm", &raw.realm)];
    let jwt = [
        ("jwks_url", &raw.jwks_url),
        ("jwks_file", &raw.jwks_file),
        ("issuer", &raw.issuer),
        ("clock_skew", &raw.clock_skew),
        ("cookie", &raw.cookie),
    ];
    let forward = [("address", &raw.address), ("timeout", &raw.timeout)];
    let mut out = Vec::new();
    let mut check = |owner: &str, keys: &[(&'static str, &Option<raw::Text>)]| {
        if owner != kind {
            out.extend(
                keys.iter()
                    .filter_map(|(key, value)| Some((*key, value.as_ref()?.span()))),
            );
        }
    };
    check("basic", &basic);
    check("jwt", &jwt);
    check("forward", &forward);
    out
}

/// What an htpasswd line's hash is, by its prefix.
pub(crate) fn hash_scheme(hash: &str) -> Result<(), String> {
    if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
        return bcrypt::HashParts::from_str(hash)
            .map(|_| ())
            .map_err(|e| format!("invalid bcrypt hash: {e}"));
    }
    if hash.starts_with("$argon2") {
        return argon2::PasswordHash::new(hash)
            .map(|_| ())
            .map_err(|e| format!("invalid argon2 hash: {e}"));
    }
    let weak = if hash.starts_with("$apr1$") || hash.starts_with("$1$") {
        "MD5"
    } else if hash.starts_with("{SHA}") {
        "SHA1"
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        "SHA-crypt"
    } else if hash.starts_with('$') {
        "an unknown scheme"
    } else {
        "plain text or crypt(3)"
    };
    Err(format!(
        "the password is stored as {weak}; use bcrypt (htpasswd -B) or argon2"
    ))
}

use std::str::FromStr;

/// Users (name, hash) and the problems found, each at its place in the users file.
pub(crate) type ParsedUsers = (Vec<(String, String)>, Vec<(Location, String)>);

/// Parses htpasswd lines (`user:hash`; blank lines and `#` comments skipped). Each
/// problem is reported at its line and column in the users file.
pub(crate) fn parse_users(file: &Path, text: &str) -> ParsedUsers {
    let mut users = Vec::new();
    let mut problems = Vec::new();
    let at = |line: usize, column: usize| Location {
        path: file.to_path_buf(),
        line,
        column,
    };
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_end_matches('\r');
        if trimmed.trim().is_empty() || trimmed.trim_start().starts_with('#') {
            continue;
        }
        let Some((user, hash)) = trimmed.split_once(':') else {
            problems.push((at(index + 1, 1), "expected USER:HASH".to_string()));
            continue;
        };
        if user.is_empty() {
            problems.push((at(index + 1, 1), "empty user name".to_string()));
            continue;
        }
        match hash_scheme(hash) {
            Ok(()) => users.push((user.to_string(), hash.to_string())),
            Err(problem) => problems.push((
                at(index + 1, user.chars().count() + 2),
                format!("user {user:?}: {problem}"),
            )),
        }
    }
    (users, problems)
}

impl Checker<'_> {
    /// A header an authenticator fills for the upstream: a valid name the gateway does
    /// not write itself.
    fn filled_header(&mut self, text: &raw::Text) -> Option<HeaderName> {
        let name = self.header_name(text)?;
        if GATEWAY_OWNED.contains(&name.as_str()) {
            self.error(
                &text.span(),
                format!("{name} is written by the gateway itself; an authenticator cannot fill it"),
            );
            return None;
        }
        Some(name)
    }

    /// A name in `auth = "NAME"`: it must be one of the `[auth.NAME]` tables.
    pub(super) fn auth_ref(
        &mut self,
        name: &raw::Text,
        known: &HashSet<&str>,
        owner: &str,
    ) -> Option<Name> {
        if known.contains(name.get_ref().as_str()) {
            return Some(Name::from(name.get_ref().as_str()));
        }
        self.error(
            &name.span(),
            format!(
                "{owner} names unknown authenticator {:?} (define it as [auth.{}])",
                name.get_ref(),
                name.get_ref()
            ),
        );
        None
    }

    pub(super) fn authenticators(
        &mut self,
        raw: BTreeMap<String, Spanned<raw::Auth>>,
    ) -> Vec<Arc<Authenticator>> {
        raw.into_iter()
            .filter_map(|(name, table)| {
                let span = table.span();
                let location = self.source.location(&span);
                let kind = self.auth_kind(&name, &span, table.into_inner())?;
                Some(Arc::new(Authenticator {
                    name: Name::from(name),
                    kind,
                    location,
                }))
            })
            .collect()
    }

    fn auth_kind(&mut self, name: &str, span: &Range<usize>, raw: raw::Auth) -> Option<AuthKind> {
        let kind = raw.kind.get_ref().as_str();
        if !matches!(kind, "basic" | "jwt" | "forward") {
            self.error(
                &raw.kind.span(),
                format!("unknown auth type {kind:?}: expected \"basic\", \"jwt\" or \"forward\""),
            );
            return None;
        }
        for (key, key_span) in misplaced(&raw, kind) {
            self.error(
                &key_span,
                format!("{key} does not apply to a {kind:?} authenticator"),
            );
        }
        if kind != "jwt" {
            if let Some(first) = raw.audiences.iter().chain(&raw.algorithms).flatten().next() {
                self.error(
                    &first.span(),
                    format!("does not apply to a {kind:?} authenticator"),
                );
            }
            if let Some(first) = raw.claims_to_headers.iter().flat_map(|m| m.values()).next() {
                self.error(
                    &first.span(),
                    format!("claims_to_headers does not apply to a {kind:?} authenticator"),
                );
            }
        }
        if kind != "forward" {
            if let Some(first) = raw
                .request_headers
                .iter()
                .chain(&raw.response_headers)
                .flatten()
                .next()
            {
                self.error(
                    &first.span(),
                    "request_headers and response_headers apply to a \"forward\" authenticator only",
                );
            }
        }
        match kind {
            "basic" => self.basic_auth(name, span, raw).map(AuthKind::Basic),
            "jwt" => self.jwt_auth(name, span, raw).map(AuthKind::Jwt),
            _ => self.forward_auth(name, span, raw).map(AuthKind::Forward),
        }
    }

    fn basic_auth(&mut self, name: &str, span: &Range<usize>, raw: raw::Auth) -> Option<BasicAuth> {
        let Some(path) = raw.users_file else {
            self.error(
                span,
                format!("[auth.{name}] of type \"basic\" needs users_file"),
            );
            return None;
        };
        let before = self.diagnostics.len();
        let file = self.tls_file(&path, "users_file");
        if self.diagnostics.len() != before {
            return None;
        }
        let Ok(text) = std::str::from_utf8(&file.pem) else {
            self.error(
                &path.span(),
                format!("users_file {} is not UTF-8", file.display()),
            );
            return None;
        };
        let (users, problems) = parse_users(&file.path, text);
        let failed = !problems.is_empty();
        for (location, message) in problems {
            self.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                location,
                message,
            });
        }
        if failed {
            self.error(
                &path.span(),
                format!(
                    "users_file {} has unusable lines (listed with their place)",
                    file.display()
                ),
            );
            return None;
        }
        let realm = raw
            .realm
            .map_or_else(|| name.to_string(), Spanned::into_inner);
        if realm.contains('"') || realm.chars().any(char::is_control) {
            self.error(span, "realm cannot contain '\"' or control characters");
            return None;
        }
        Some(BasicAuth {
            realm,
            users_file: Some(file),
            users: users.into(),
        })
    }

    fn jwt_auth(&mut self, name: &str, span: &Range<usize>, raw: raw::Auth) -> Option<JwtAuth> {
        let jwks = match (raw.jwks_url, raw.jwks_file) {
            (Some(url), None) => {
                let uri = url.get_ref().parse::<http::Uri>().ok().filter(|u| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
                });
                match uri {
                    Some(uri) => JwksSource::Url(uri),
                    None => {
                        self.error(&url.span(), "jwks_url must be an http:// or https:// URL");
                        return None;
                    }
                }
            }
            (None, Some(path)) => {
                let before = self.diagnostics.len();
                let file = self.tls_file(&path, "jwks_file");
                if self.diagnostics.len() != before {
                    return None;
                }
                if let Err(e) = serde_json::from_slice::<jsonwebtoken::jwk::JwkSet>(&file.pem) {
                    self.error(
                        &path.span(),
                        format!(
                            "jwks_file {} is not a JSON Web Key Set: {e}",
                            file.display()
                        ),
                    );
                    return None;
                }
                JwksSource::File(file)
            }
            (Some(_), Some(file)) => {
                self.error(
                    &file.span(),
                    "write one of jwks_url and jwks_file, not both",
                );
                return None;
            }
            (None, None) => {
                self.error(
                    span,
                    format!("[auth.{name}] of type \"jwt\" needs jwks_url or jwks_file"),
                );
                return None;
            }
        };
        let algorithms = match raw.algorithms {
            None => DEFAULT_ALGORITHMS.to_vec(),
            Some(list) => {
                let mut out = Vec::new();
                for text in &list {
                    let word = text.get_ref().as_str();
                    if word.eq_ignore_ascii_case("none")
                        || word.to_ascii_uppercase().starts_with("HS")
                    {
                        self.error(
                            &text.span(),
                            format!("algorithm {word:?} is refused: a token signed with a shared secret (or not at all) cannot be checked against public keys"),
                        );
                        continue;
                    }
                    match jsonwebtoken::Algorithm::from_str(word) {
                        Ok(algorithm) => out.push(algorithm),
                        Err(_) => self.error(
                            &text.span(),
                            format!("unknown algorithm {word:?}: expected RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"),
                        ),
                    }
                }
                if list.is_empty() {
                    self.error(span, "algorithms cannot be empty");
                }
                out
            }
        };
        let clock_skew = self.duration(raw.clock_skew.as_ref(), Duration::from_secs(30));
        let claims_to_headers = raw
            .claims_to_headers
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(claim, header)| Some((claim, self.filled_header(&header)?)))
            .collect();
        let cookie = match raw.cookie {
            Some(c) if !is_token(c.get_ref()) => {
                self.error(&c.span(), format!("invalid cookie name {:?}", c.get_ref()));
                None
            }
            c => c.map(Spanned::into_inner),
        };
        Some(JwtAuth {
            jwks,
            issuer: raw.issuer.map(Spanned::into_inner),
            audiences: raw
                .audiences
                .unwrap_or_default()
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            algorithms,
            clock_skew,
            claims_to_headers,
            cookie,
        })
    }

    fn forward_auth(
        &mut self,
        name: &str,
        span: &Range<usize>,
        raw: raw::Auth,
    ) -> Option<ForwardAuth> {
        let Some(address) = raw.address else {
            self.error(
                span,
                format!("[auth.{name}] of type \"forward\" needs address"),
            );
            return None;
        };
        let uri = address
            .get_ref()
            .parse::<http::Uri>()
            .ok()
            .filter(|u| u.scheme_str() == Some("http") && u.host().is_some());
        let Some(uri) = uri else {
            self.error(
                &address.span(),
                "address must be an http:// URL, e.g. \"http://127.0.0.1:9000/verify\"",
            );
            return None;
        };
        let names = |checker: &mut Self, list: Option<Vec<raw::Text>>| -> Vec<HeaderName> {
            list.unwrap_or_default()
                .iter()
                .filter_map(|h| checker.header_name(h))
                .collect()
        };
        let request_headers = names(self, raw.request_headers);
        let response_headers = raw
            .response_headers
            .unwrap_or_default()
            .iter()
            .filter_map(|h| self.filled_header(h))
            .collect();
        let timeout =
            self.positive_duration(raw.timeout.as_ref(), Duration::from_secs(2), "timeout");
        Some(ForwardAuth {
            address: uri,
            request_headers,
            response_headers,
            timeout,
            signin: None,
        })
    }
}
