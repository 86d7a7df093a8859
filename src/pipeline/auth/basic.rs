//! `basic`: htpasswd users with bcrypt or argon2 hashes.
//!
//! A bcrypt check costs milliseconds by design, so it never runs on a worker's event
//! loop: it runs on threads of its own at the lowest CPU priority, at most
//! [`parallel_checks`] at once (a flood of wrong passwords queues there instead of
//! starving the workers, and never takes a CPU a worker wants), and a verified
//! credential is remembered for [`CACHE_FOR`], keyed by a salted SHA-256 of the whole
//! `Authorization` value, never the password itself. Requests that carry the same
//! unverified credential at once wait for one check, so the expiry of a busy client's
//! entry costs one bcrypt, not one per connection.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::Digest;
use tokio::sync::{OnceCell, Semaphore};

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

/// The checks' threads, started on first use.
static CHECKERS: LazyLock<Checkers> = LazyLock::new(Checkers::start);

/// The password checks' niceness: the lowest priority, so that a worker thread sharing a
/// CPU with a check (in a flood, every CPU has one) runs as soon as it has work and the
/// checks take only what the workers leave. Under a saturated CPU a check still gets its
/// small share (a nice value, not the idle class), so it never waits forever.
const CHECK_NICENESS: i32 = 19;

struct Check {
    password: String,
    hash: String,
    verdict: tokio::sync::oneshot::Sender<bool>,
}

/// [`parallel_checks`] threads of their own rather than tokio's blocking pool, because
/// their priority is lowered for good (an unprivileged process cannot raise it back), and
/// the blocking pool also runs file and DNS work that must not wait behind a flood.
struct Checkers {
    queue: std::sync::mpsc::Sender<Check>,
}

impl Checkers {
    fn start() -> Self {
        let (queue, checks) = std::sync::mpsc::channel::<Check>();
        let checks = Arc::new(Mutex::new(checks));
        for n in 0..parallel_checks() {
            let checks = checks.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("edgegate-password-{n}"))
                .spawn(move || {
                    // `None`: this thread (Linux priorities are per thread).
                    if let Err(e) = rustix::process::setpriority_process(None, CHECK_NICENESS) {
                        tracing::debug!(error = %e, "cannot lower the password checks' priority");
                    }
                    loop {
                        let next = checks.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(check) = next else { return };
                        // A request that gave up waiting (its client went away) is
                        // not worth a bcrypt.
                        if check.verdict.is_closed() {
                            continue;
                        }
                        let matched = verify(&check.password, &check.hash);
                        // The request may have gone; its answer is then nobody's.
                        let _ = check.verdict.send(matched);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password-check thread");
            }
        }
        Self { queue }
    }
}

/// Per process: cache keys cannot be computed from a guessed password elsewhere.
static SALT: LazyLock<[u8; 32]> = LazyLock::new(rand::random);

/// One check's answer, shared by the requests waiting for it: `None` when the check
/// threads stayed busy.
type Verdict = OnceCell<Option<bool>>;

pub struct Basic {
    challenge: String,
    users: HashMap<String, String>,
    cache: Mutex<HashMap<[u8; 32], (Instant, String)>>,
    /// The checks running now, by credential, for requests that carry one at once.
    checking: Mutex<HashMap<[u8; 32], Arc<Verdict>>>,
    /// Hashes verified since this authenticator was compiled.
    checks_started: std::sync::atomic::AtomicU64,
}

impl Basic {
    pub fn new(spec: &BasicAuth) -> Self {
        Self {
            challenge: format!("Basic realm=\"{}\"", spec.realm),
            users: spec.users.iter().cloned().collect(),
            cache: Mutex::new(HashMap::new()),
            checking: Mutex::new(HashMap::new()),
            checks_started: Default::default(),
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
        let check = self
            .checking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone();
        // When the request that started the check goes away, a waiting one takes it over.
        let verdict = *check
            .get_or_init(|| {
                self.checks_started
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                verify_off_loop(password, hash)
            })
            .await;
        if verdict == Some(true) && known {
            self.remember(key, &user);
        }
        // After `remember`: a request arriving now finds the cached entry, not a new check.
        {
            let mut checking = self.checking.lock().unwrap_or_else(|e| e.into_inner());
            if checking.get(&key).is_some_and(|c| Arc::ptr_eq(c, &check)) {
                checking.remove(&key);
            }
        }
        match verdict {
            Some(true) if known => allowed(user),
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

/// Whether `password` matches `hash`, computed on the check threads; `None` when they
/// stayed busy for [`QUEUE_WAIT`] (or none could be started).
async fn verify_off_loop(password: String, hash: String) -> Option<bool> {
    let permit = tokio::time::timeout(QUEUE_WAIT, CHECKS.acquire())
        .await
        .ok()?
        .ok()?;
    let (verdict, answer) = tokio::sync::oneshot::channel();
    CHECKERS
        .queue
        .send(Check {
            password,
            hash,
            verdict,
        })
        .ok()?;
    let result = answer.await;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_with_one_new_credential_at_once_wait_for_one_check() {
        let hash = bcrypt::hash("s3cret", 8).expect("hash");
        let basic = Arc::new(Basic::new(&spec(&[("alice", &hash)])));
        let requests: Vec<_> = (0..16)
            .map(|_| {
                let basic = basic.clone();
                tokio::spawn(async move { status(&basic.check(&header("alice", "s3cret")).await) })
            })
            .collect();
        for request in requests {
            assert_eq!(request.await.expect("request"), 200);
        }
        assert_eq!(
            basic
                .checks_started
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // A wrong password is never remembered: each new request checks it again.
        for expected in [2, 3] {
            assert_eq!(status(&basic.check(&header("alice", "wrong")).await), 401);
            assert_eq!(
                basic
                    .checks_started
                    .load(std::sync::atomic::Ordering::Relaxed),
                expected
            );
        }
    }

    #[tokio::test]
    async fn passwords_are_checked_on_threads_at_the_lowest_priority() {
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        let basic = Basic::new(&spec(&[("alice", &hash)]));
        assert_eq!(status(&basic.check(&header("alice", "s3cret")).await), 200);
        let mut checkers = 0;
        for task in std::fs::read_dir("/proc/self/task").expect("tasks") {
            let task = task.expect("task").path();
            let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if !name.starts_with("edgegate-passwo") {
                continue;
            }
            // Field 19 of `stat` is the nice value; the name (field 2) has no spaces here.
            let stat = std::fs::read_to_string(task.join("stat")).expect("stat");
            let nice: i32 = stat
                .split(' ')
                .nth(18)
                .expect("nice")
                .parse()
                .expect("number");
            assert_eq!(nice, CHECK_NICENESS, "{}", name.trim());
            checkers += 1;
        }
        assert_eq!(checkers, parallel_checks());
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
