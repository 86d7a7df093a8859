//! Authentication at the edge, built once for both renderers and the admin listener:
//! `basic` (htpasswd users, hashes checked off the event loop), `jwt` (signatures checked
//! against a JWKS) and `forward` (a subrequest to an auth service).
//!
//! Each authenticator's state (the parsed users and their credential cache, the key set,
//! the pooled client) lives in the snapshot, compiled from `[auth.NAME]` and carried over
//! a reload that does not change it, so a reload keeps warm caches and fetched keys.

pub mod basic;
pub mod client;
pub mod forward;
pub mod jwt;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use crate::config::model::{AuthKind, Authenticator, Config, Name};

use super::answer::LocalAnswer;
use super::context::RequestContext;
use super::fields::Fields;
use super::Incoming;

/// What the access log and `edgegate_auth_total` say of a request's authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthNote {
    pub result: AuthResult,
    /// The user name or token subject, where one is known.
    pub user: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    Allowed,
    Denied,
    /// The authenticator could not decide (auth service down, no keys): 503.
    Error,
}

impl AuthResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Allowed => "allowed",
            AuthResult::Denied => "denied",
            AuthResult::Error => "error",
        }
    }
}

/// An authenticator's verdict.
pub enum Outcome {
    Allowed {
        user: Option<String>,
        /// Fields for the upstream request (claims, the auth service's headers).
        upstream: Vec<(HeaderName, HeaderValue)>,
        /// The credential was a password: `Authorization` is not forwarded.
        drop_authorization: bool,
    },
    Denied(LocalAnswer),
    Error(LocalAnswer),
}

/// What an authenticator may look at: the request as the client sent it.
pub struct Probe<'a, F> {
    pub method: &'a http::Method,
    /// The normalised path and query, as routing and the upstream see them.
    pub uri: &'a str,
    pub host: &'a str,
    pub peer: IpAddr,
    pub tls: bool,
    pub fields: &'a F,
}

/// One compiled `[auth.NAME]` with its live state.
pub struct Compiled {
    pub spec: Arc<Authenticator>,
    runtime: Runtime,
}

enum Runtime {
    Basic(basic::Basic),
    Jwt(jwt::Jwt),
    Forward(Box<forward::Forward>),
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "auth {}", self.spec.name)
    }
}

impl Compiled {
    pub fn kind(&self) -> &'static str {
        match self.runtime {
            Runtime::Basic(_) => "basic",
            Runtime::Jwt(_) => "jwt",
            Runtime::Forward(_) => "forward",
        }
    }

    pub async fn check<F: Fields + Sync>(&self, probe: &Probe<'_, F>) -> Outcome {
        match &self.runtime {
            Runtime::Basic(basic) => basic.check(probe.fields).await,
            Runtime::Jwt(jwt) => jwt.check(probe.fields).await,
            Runtime::Forward(forward) => forward.check(probe).await,
        }
    }
}

/// Every authenticator of a snapshot, by name.
#[derive(Debug, Default)]
pub struct Authenticators {
    by_name: HashMap<Name, Arc<Compiled>>,
}

impl Authenticators {
    /// Compiles `[auth.NAME]`; an authenticator whose settings did not change keeps its
    /// state from `previous` (credential cache, keys, connections).
    pub fn compile(config: &Config, previous: Option<&Authenticators>) -> Self {
        let by_name = config
            .auth
            .iter()
            .map(|spec| {
                let kept = previous
                    .and_then(|p| p.by_name.get(&spec.name))
                    .filter(|c| c.spec.kind == spec.kind)
                    .cloned();
                let compiled = kept.unwrap_or_else(|| {
                    let runtime = match &spec.kind {
                        AuthKind::Basic(b) => Runtime::Basic(basic::Basic::new(b)),
                        AuthKind::Jwt(j) => Runtime::Jwt(jwt::Jwt::new(j)),
                        AuthKind::Forward(f) => {
                            Runtime::Forward(Box::new(forward::Forward::new(f)))
                        }
                    };
                    Arc::new(Compiled {
                        spec: spec.clone(),
                        runtime,
                    })
                });
                (spec.name.clone(), compiled)
            })
            .collect();
        Self { by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Compiled>> {
        self.by_name.get(name)
    }

    /// The header names any authenticator fills: no client may send them, on any route.
    pub fn filled_headers(config: &Config) -> impl Iterator<Item = HeaderName> + '_ {
        config.auth.iter().flat_map(|a| match &a.kind {
            AuthKind::Jwt(jwt) => jwt
                .claims_to_headers
                .iter()
                .map(|(_, h)| h.clone())
                .collect::<Vec<_>>(),
            AuthKind::Forward(forward) => forward.response_headers.clone(),
            AuthKind::Basic(_) => Vec::new(),
        })
    }
}

/// The route's authenticator, as a gate: lets the request on (with what it adds to the
/// upstream request) or answers for it.
pub async fn gate<F: Fields + Sync>(
    request: &Incoming<'_, F>,
    ctx: &mut RequestContext,
) -> Option<LocalAnswer> {
    let name = ctx.route.as_ref()?.auth.clone()?;
    let Some(compiled) = ctx.snapshot.auth.get(&name).cloned() else {
        // Validation resolves every name; a missing one must never let a request in.
        return Some(LocalAnswer::plain(500, b"authenticator missing\n"));
    };
    // Only a forward authenticator tells its service about the request.
    let (uri, host) = if compiled.kind() == "forward" {
        forwarded_request(request, ctx)
    } else {
        (String::new(), String::new())
    };
    let probe = Probe {
        method: request.method,
        uri: &uri,
        host: &host,
        peer: request.peer,
        tls: ctx.downstream_tls,
        fields: request.fields,
    };
    let (note, answer) = match compiled.check(&probe).await {
        Outcome::Allowed {
            user,
            upstream,
            drop_authorization,
        } => {
            ctx.upstream_additions.extend(upstream);
            ctx.drop_authorization |= drop_authorization;
            (
                AuthNote {
                    result: AuthResult::Allowed,
                    user,
                },
                None,
            )
        }
        Outcome::Denied(answer) => (
            AuthNote {
                result: AuthResult::Denied,
                user: None,
            },
            Some(answer),
        ),
        Outcome::Error(answer) => (
            AuthNote {
                result: AuthResult::Error,
                user: None,
            },
            Some(answer),
        ),
    };
    tracing::debug!(route = %ctx.route_name(), auth = %name, result = note.result.as_str(), request_id = %ctx.request_id, "authentication");
    ctx.auth = Some(note);
    answer.map(|mut a| {
        a.route_edits = true;
        a
    })
}

/// The normalised path and query (as routing and the upstream see them, so an auth
/// service never judges `/public/../admin` as public) and the Host, for a subrequest.
fn forwarded_request<F: Fields>(
    request: &Incoming<'_, F>,
    ctx: &RequestContext,
) -> (String, String) {
    let uri = match super::hygiene::split_target(request.target) {
        Ok(target) => match target.query {
            Some(query) => format!("{}?{query}", target.path),
            None => target.path.into_owned(),
        },
        Err(_) => request.target.to_string(),
    };
    let host = request
        .authority
        .map(str::to_string)
        .or_else(|| {
            request
                .fields
                .first("host")
                .and_then(|h| std::str::from_utf8(h).ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| ctx.host.clone());
    (uri, host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceFile;

    fn config(dir: &std::path::Path, users: &str) -> Config {
        std::fs::write(dir.join("users"), users).expect("users");
        let text = "[auth.staff]\ntype = \"basic\"\nusers_file = \"users\"\n\n\
                    [auth.api]\ntype = \"jwt\"\njwks_url = \"http://127.0.0.1:9/keys\"\n\
                    claims_to_headers = { sub = \"x-user\" }\n\n\
                    [auth.sso]\ntype = \"forward\"\naddress = \"http://127.0.0.1:9/\"\n\
                    response_headers = [\"x-groups\"]\n";
        crate::config::load(&SourceFile::new(dir.join("edgegate.toml"), text))
            .expect("valid")
            .config
    }

    #[test]
    fn a_reload_keeps_the_state_of_unchanged_authenticators_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hash = bcrypt::hash("pw", 4).expect("bcrypt");
        let first = config(dir.path(), &format!("alice:{hash}\n"));
        let compiled = Authenticators::compile(&first, None);
        let again = Authenticators::compile(
            &config(dir.path(), &format!("alice:{hash}\n")),
            Some(&compiled),
        );
        for name in ["staff", "api", "sso"] {
            let (a, b) = (
                compiled.get(name).expect(name),
                again.get(name).expect(name),
            );
            assert!(Arc::ptr_eq(a, b), "{name} was rebuilt");
        }
        let edited =
            Authenticators::compile(&config(dir.path(), &format!("bob:{hash}\n")), Some(&again));
        assert!(!Arc::ptr_eq(
            again.get("staff").expect("staff"),
            edited.get("staff").expect("staff")
        ));
        assert!(Arc::ptr_eq(
            again.get("api").expect("api"),
            edited.get("api").expect("api")
        ));
        let filled: Vec<_> = Authenticators::filled_headers(&first).collect();
        assert_eq!(filled, ["x-user", "x-groups"]);
    }
}
