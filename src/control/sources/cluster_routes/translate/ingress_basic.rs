//! `auth-type: basic` on an Ingress, as ingress-nginx reads it: the users are in the
//! `Opaque` Secret named by `auth-secret` (`NAME` in the Ingress's namespace, or
//! `NAMESPACE/NAME`), either as htpasswd lines under its `auth` key (`auth-secret-type:
//! auth-file`, the default) or one key per user holding that user's hash (`auth-map`).
//!
//! The hashes are held to the file config's rule: bcrypt or argon2 only. A Secret that
//! is missing, has no users, or has one weak or unreadable line gives an error, never a
//! smaller set of users, so the Ingress's routes answer 500 until it is fixed; the watch
//! on Secrets re-translates as soon as it is.

use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;

use super::ingress::annotation;
use super::ClusterObjects;
use crate::config::model::{AuthKind, Authenticator, BasicAuth, Name};
use crate::config::validate::auth::{hash_scheme, parse_users};
use crate::config::Location;

/// The Ingress's basic authenticator, named `source` (`ingress/NS/NAME`), or the problem
/// that keeps its routes closed.
pub(super) fn authenticator(
    objects: &ClusterObjects,
    namespace: &str,
    ingress: &Ingress,
    source: &str,
) -> Result<Arc<Authenticator>, String> {
    let closed = "its routes answer 500";
    match annotation(ingress, "auth-type") {
        Some("basic") => {}
        Some(other) => {
            return Err(format!(
                "annotation auth-type {other:?} is not served (only \"basic\"); {closed}"
            ))
        }
        None => return Err(format!("annotation auth-type is missing; {closed}")),
    }
    if annotation(ingress, "auth-url").is_some() {
        return Err(format!(
            "annotations auth-type and auth-url together: a route has one authenticator; {closed}"
        ));
    }
    let Some(named) = annotation(ingress, "auth-secret").filter(|s| !s.is_empty()) else {
        return Err(format!(
            "annotation auth-type \"basic\" needs auth-secret (the Secret holding the users); {closed}"
        ));
    };
    let (secret_namespace, secret_name) = match named.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => (ns, name),
        None => (namespace, named),
        Some(_) => {
            return Err(format!(
                "annotation auth-secret {named:?} is not NAME or NAMESPACE/NAME; {closed}"
            ))
        }
    };
    let secret_ref = format!("secret {secret_namespace}/{secret_name}");
    let Some(secret) = objects
        .opaque_secrets
        .get(&(secret_namespace.to_string(), secret_name.to_string()))
    else {
        return Err(format!(
            "{secret_ref} not found (or not of type Opaque); {closed}"
        ));
    };
    let (users, problems) = match annotation(ingress, "auth-secret-type").unwrap_or("auth-file") {
        "auth-file" => {
            let Some(text) = secret.0.get("auth") else {
                return Err(format!(
                    "{secret_ref} has no \"auth\" key (htpasswd lines; or set auth-secret-type: auth-map); {closed}"
                ));
            };
            let Ok(text) = std::str::from_utf8(text) else {
                return Err(format!("{secret_ref}: \"auth\" is not UTF-8; {closed}"));
            };
            let place = format!("secret/{secret_namespace}/{secret_name}");
            let (users, problems) = parse_users(Path::new(&place), text);
            let problems = problems
                .into_iter()
                .map(|(at, message)| format!("line {}: {message}", at.line))
                .collect::<Vec<_>>();
            (users, problems)
        }
        "auth-map" => {
            let mut users = Vec::new();
            let mut problems = Vec::new();
            for (user, hash) in &secret.0 {
                let hash = std::str::from_utf8(hash).map(str::trim);
                match hash.map_err(|_| "not UTF-8".to_string()).and_then(|h| {
                    hash_scheme(h)?;
                    Ok(h)
                }) {
                    Ok(hash) => users.push((user.clone(), hash.to_string())),
                    Err(problem) => problems.push(format!("key {user:?}: {problem}")),
                }
            }
            (users, problems)
        }
        other => {
            return Err(format!(
                "annotation auth-secret-type {other:?}: expected \"auth-file\" or \"auth-map\"; {closed}"
            ))
        }
    };
    if !problems.is_empty() {
        return Err(format!(
            "{secret_ref} has unusable users ({}); {closed}",
            problems.join("; ")
        ));
    }
    if users.is_empty() {
        return Err(format!("{secret_ref} holds no users; {closed}"));
    }
    // ingress-nginx sends the realm as written, empty when none is.
    let realm = annotation(ingress, "auth-realm").unwrap_or_default();
    if realm.contains('"') || realm.chars().any(char::is_control) {
        return Err(format!(
            "annotation auth-realm {realm:?} cannot contain '\"' or control characters; {closed}"
        ));
    }
    Ok(Arc::new(Authenticator {
        name: Name::from(source),
        kind: AuthKind::Basic(BasicAuth {
            realm: realm.to_string(),
            users_file: None,
            users: users.into(),
        }),
        location: Location {
            path: source.into(),
            line: 0,
            column: 0,
        },
    }))
}
