//! `basic`: htpasswd users with bcrypt or argon2 hashes.
//!
//! A bcrypt check costs milliseconds by design, so it never runs on a worker's event
//! loop: it runs on tokio's blocking pool, at most [`parallel_checks`] at once (a flood
//! of wrong passwords queues there instead of starving the workers), and a verified
//! credential is remembered for [`CACHE_FOR`], keyed by a salted SHA-256 of the whole
//! `Authorization` value, never the password itself.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::Digest;
use tokio::sync::Semaphore;

use crate::config::model::BasicAuth;

use super::super::answer::LocalAnswer;
use super::super::fields::Fields;
use super::Outcome;

/// How long a verified credential is believed without hashing it again.
pub const CACHE_FOR: Duration = Duration::from_secs(30);
/// Entries at most; a full cache drops its expired entries, then everything.
const CACHE_LIMIT: usize = 10_000;
/// How long a check may wait for a place in the pool before the request gets 503.
const QUEUE_WAIT: Duration = Duration::from_secs(5);

/// Checks at once across the process: half the cores (at least one), so a flood of
/// wrong passwords never takes every core from the workers serving other routes.
fn parallel_checks() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

static CHECKS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(parallel_checks()));

/// Per process: cache keys cannot be computed from a guessed password elsewhere.
static SALT: LazyLock<[u8; 32]> = LazyLock::new(rand::random);

pub struct Basic {
    challenge: String,
    users: HashMap<String, String>,
    cache: Mutex<HashMap<[u8; 32], (Instant, String)>>,
}

impl Basic {
    pub fn new(spec: &BasicAuth) -> Self {
        Self {
            challenge: format!("Basic realm=\"{}\"", spec.realm),
            users: spec.users.iter().cloned().collect(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn refuse(&self) -> Outcome {
        Outcome::Denied(LocalAnswer::unauthorized(self.challenge.clone()))
    }

    pub async fn check<F: Fields>(&self, fields: &F) -> Outcome {
        let Some(value) = fields.first("authorization") else {
            return self.refuse();
        };
        let key = cache_key(value);
        if let Some(user) = self.cached(&key) {
            return allowed(user);
        }
        let Some((user, password)) = credential(value) else {
            return self.refuse();
        };
        // An unknown user is checked against a real user's hash, so the answer takes as
        // long as for a known one with a wrong password.
        let (known, hash) = match self.users.get(&user) {
            Some(hash) => (true, hash.clone()),
            None => match self.users.values().next() {
                Some(hash) => (false, hash.clone()),
                None => return self.refuse(),
            },
        };
        match verify_off_loop(password, hash).await {
            Some(true) if known => {
                self.remember(key, &user);
                allowed(user)
            }
            Some(_) => self.refuse(),
            None => Outcome::Error(LocalAnswer::auth_unavailable(
                b"credential check unavailable\n",
            )),
        }
    }

    fn cached(&self, key: &[u8; 32]) -> Option<String> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|(at, _)| at.elapsed() < CACHE_FOR)
            .map(|(_, user)| user.clone())
    }

    fn remember(&self, key: [u8; 32], user: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), user.to_string()));
    }
}

fn allowed(user: String) -> Outcome {
    Outcome::Allowed {
        user: Some(user),
        upstream: Vec::new(),
        drop_authorization: true,
    }
}

fn cache_key(authorization: &[u8]) -> [u8; 32] {
    let mut hasher = sha2::Sha256::new();
    hasher.update(*SALT);
    hasher.update(authorization);
    hasher.finalize().into()
}

/// `Basic base64(user:password)`.
pub fn credential(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Whether `password` matches `hash`, computed on the blocking pool; `None` when the pool
/// stayed full for [`QUEUE_WAIT`].
async fn verify_off_loop(password: String, hash: String) -> Option<bool> {
    let permit = tokio::time::timeout(QUEUE_WAIT, CHECKS.acquire())
        .await
        .ok()?
        .ok()?;
    let result = tokio::task::spawn_blocking(move || verify(&password, &hash)).await;
    drop(permit);
    result.ok()
}

/// The hash's own scheme decides: bcrypt (`$2a$`, `$2b$`, `$2y$`) or argon2.
pub fn verify(password: &str, hash: &str) -> bool {
    if hash.starts_with("$argon2") {
        use argon2::PasswordVerifier;
        return argon2::Argon2::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok();
    }
    bcrypt::verify(password, hash).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(users: &[(&str, &str)]) -> BasicAuth {
        BasicAuth {
            realm: "staff".into(),
            users_file: None,
            users: users
                .iter()
                .map(|(u, h)| (u.to_string(), h.to_string()))
                .collect::<Vec<_>>()
                .into(),
        }
    }

    fn header(user: &str, password: &str) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        map.insert(
            "authorization",
            http::HeaderValue::from_str(&format!("Basic {encoded}")).expect("value"),
        );
        map
    }

    fn status(outcome: &Outcome) -> u16 {
        match outcome {
            Outcome::Allowed { .. } => 200,
            Outcome::Denied(a) | Outcome::Error(a) => a.status,
        }
    }

    #[tokio::test]
    async fn bcrypt_and_argon2_users_pass_and_every_other_credential_gets_a_challenge() {
        use argon2::PasswordHasher;
        let bcrypt_hash = bcrypt::hash("s3cret", 4).expect("hash");
        let argon_hash = argon2::Argon2::default()
            .hash_password(b"other")
            .expect("hash")
            .to_string();
        let basic = Basic::new(&spec(&[("alice", &bcrypt_hash), ("bob", &argon_hash)]));
        let outcome = basic.check(&header("alice", "s3cret")).await;
        assert!(
            matches!(&outcome, Outcome::Allowed { user: Some(u), drop_authorization: true, .. } if u == "alice")
        );
        // Cached now: the same credential passes without hashing.
        assert!(basic
            .cached(&cache_key(
                header("alice", "s3cret")["authorization"].as_bytes()
            ))
            .is_some());
        assert_eq!(status(&basic.check(&header("bob", "other")).await), 200);
        for refused in [
            header("alice", "wrong"),
            header("nobody", "s3cret"),
            header("bob", "s3cret"),
            http::HeaderMap::new(),
        ] {
            let outcome = basic.check(&refused).await;
            assert_eq!(status(&outcome), 401);
            let Outcome::Denied(answer) = outcome else {
                unreachable!()
            };
            assert_eq!(answer.headers[0].1, "Basic realm=\"staff\"");
        }
    }

    #[test]
    fn credentials_are_read_from_the_basic_scheme_only() {
        assert_eq!(
            credential(b"Basic YWxpY2U6cDp3"),
            Some(("alice".into(), "p:w".into()))
        );
        assert_eq!(credential(b"Bearer YWxpY2U6cDp3"), None);
        assert_eq!(credential(b"Basic !!!"), None);
    }
}
