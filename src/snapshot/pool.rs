//! An upstream's members and the choice among them.
//!
//! The member list and the weighted schedule are immutable parts of a snapshot; what
//! must outlive a reload (health, in-flight counts) lives in [`MemberState`], shared with
//! the previous snapshot through the [`MemberStates`] registry.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::model::{Balance, Endpoint, Name, PassiveHealth, Upstream};

/// Per-member state that must survive config reloads and discovery updates.
#[derive(Debug)]
pub struct MemberState {
    healthy: AtomicBool,
    /// Consecutive results of the active check, counted toward its thresholds.
    passes: AtomicU32,
    failures: AtomicU32,
    in_flight: AtomicUsize,
    /// Consecutive failures seen on live traffic (passive health).
    live_failures: AtomicU32,
    /// Milliseconds since [`epoch`] until which the member is ejected; 0 when it is not.
    ejected_until: AtomicU64,
    /// Ejections so far: each one lasts twice the one before.
    ejections: AtomicU32,
}

impl Default for MemberState {
    fn default() -> Self {
        Self {
            healthy: AtomicBool::new(true),
            passes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            in_flight: AtomicUsize::new(0),
            live_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
        }
    }
}

/// A monotonic millisecond clock for ejection deadlines, so they fit in an atomic.
pub fn now_millis() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    // Start at 1 so that 0 can mean "not ejected".
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 1
}

/// Longest ejection however often a member fails: doubling stops here.
const MAX_EJECTION_DOUBLINGS: u32 = 5;

impl MemberState {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records one active check result; returns `Some(new)` when health flipped.
    pub fn record_check(
        &self,
        passed: bool,
        healthy_after: u32,
        unhealthy_after: u32,
    ) -> Option<bool> {
        if passed {
            self.failures.store(0, Ordering::Relaxed);
            let passes = self.passes.fetch_add(1, Ordering::Relaxed) + 1;
            if !self.is_healthy() && passes >= healthy_after {
                self.healthy.store(true, Ordering::Relaxed);
                return Some(true);
            }
        } else {
            self.passes.store(0, Ordering::Relaxed);
            let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            if self.is_healthy() && failures >= unhealthy_after {
                self.healthy.store(false, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// Counts a live-traffic failure; `true` when it reaches the policy's threshold (the
    /// caller decides whether the pool can afford an ejection).
    fn count_failure(&self, threshold: u32) -> bool {
        self.live_failures.fetch_add(1, Ordering::Relaxed) + 1 >= threshold
    }

    fn eject(&self, policy: &PassiveHealth, now: u64) -> std::time::Duration {
        self.live_failures.store(0, Ordering::Relaxed);
        let previous = self.ejections.fetch_add(1, Ordering::Relaxed);
        let duration = policy.ejection_time * (1u32 << previous.min(MAX_EJECTION_DOUBLINGS));
        self.ejected_until
            .store(now + duration.as_millis() as u64, Ordering::Relaxed);
        duration
    }

    /// Counts a request toward least-requests balancing until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

#[derive(Debug)]
pub struct InFlight(Arc<MemberState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Registry of member states by (upstream, address), outside any snapshot.
#[derive(Debug, Default)]
pub struct MemberStates {
    states: Mutex<HashMap<(Name, SocketAddr), Arc<MemberState>>>,
}

impl MemberStates {
    pub fn get(&self, upstream: &Name, address: SocketAddr) -> Arc<MemberState> {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states
            .entry((upstream.clone(), address))
            .or_default()
            .clone()
    }

    /// Forgets members no snapshot uses any more, so churn does not grow the registry.
    pub fn retain(&self, keep: impl Fn(&Name, &SocketAddr) -> bool) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states.retain(|(u, a), _| keep(u, a));
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub endpoint: Endpoint,
    pub state: Arc<MemberState>,
    /// The address as the `endpoint` metric label writes it, formatted once per pool
    /// rather than on every request.
    pub label: Name,
    /// Serialises HTTP/2 connection checkout to this member (see
    /// `RequestContext::h2_checkout`). Per member, not per upstream: an endpoint that
    /// blackholes connects holds up only the requests that picked it.
    pub h2_checkout: Arc<tokio::sync::Mutex<()>>,
    /// The opaque value of this member's affinity cookie: a digest of the upstream's
    /// name and the address, so the cookie names no address and is the same in every
    /// gateway process.
    pub affinity_key: Name,
}

/// The affinity cookie value of `address` in upstream `upstream`.
pub fn affinity_key(upstream: &str, address: SocketAddr) -> Name {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{upstream}/{address}").as_bytes());
    digest[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into()
}

/// One compiled upstream.
#[derive(Debug)]
pub struct Pool {
    pub upstream: Arc<Upstream>,
    /// The `tls.ca` certificates, loaded once per pool rather than per connection.
    pub tls_ca: Option<Arc<pingora::protocols::tls::CaType>>,
    /// Isolates this upstream's pooled connections from other upstreams'.
    pub group_key: u64,
    pub members: Vec<Member>,
    /// Smooth weighted round-robin order of member indices (nginx's algorithm), so weights
    /// interleave instead of arriving in bursts.
    schedule: Vec<u32>,
    cursor: AtomicUsize,
    pub ejection: Option<PassiveHealth>,
    /// Retries may be at most this share of the requests in flight (with a floor).
    retry_budget: f64,
    requests_in_flight: Arc<AtomicUsize>,
    retries_in_flight: Arc<AtomicUsize>,
}

/// Retries always allowed in flight, however few requests are: a quiet upstream can still
/// retry (Envoy's `min_retry_concurrency`).
const RETRY_FLOOR: usize = 3;

/// Marks a request (or a retry) in flight for the retry budget until dropped.
#[derive(Debug)]
pub struct BudgetGuard(Arc<AtomicUsize>);

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    pub fn new(upstream: Arc<Upstream>, endpoints: &[Endpoint], states: &MemberStates) -> Self {
        let members: Vec<Member> = endpoints
            .iter()
            .map(|e| Member {
                endpoint: *e,
                state: states.get(&upstream.name, e.address),
                label: Name::from(e.address.to_string()),
                h2_checkout: Arc::default(),
                affinity_key: affinity_key(&upstream.name, e.address),
            })
            .collect();
        let schedule = smooth_weighted_schedule(endpoints);
        let tls_ca = upstream
            .tls
            .as_ref()
            .and_then(|t| t.ca.as_ref())
            .and_then(|file| match upstream_ca(file) {
                Ok(ca) => Some(ca),
                Err(e) => {
                    tracing::error!(upstream = %upstream.name, error = %e, "cannot load upstream CA; connections will fail verification");
                    None
                }
            });
        let group_key = {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            upstream.name.hash(&mut hasher);
            format!("{:?}", upstream.tls).hash(&mut hasher);
            hasher.finish()
        };
        let (ejection, retry_budget) = (upstream.passive_health.clone(), upstream.retry_budget);
        Self {
            tls_ca,
            group_key,
            upstream,
            members,
            schedule,
            cursor: AtomicUsize::new(0),
            ejection,
            retry_budget,
            requests_in_flight: Arc::default(),
            retries_in_flight: Arc::default(),
        }
    }

    /// Counts a request toward the retry budget's base while it is in flight.
    pub fn start_request(&self) -> BudgetGuard {
        self.requests_in_flight.fetch_add(1, Ordering::Relaxed);
        BudgetGuard(self.requests_in_flight.clone())
    }

    /// A retry, if the budget allows one now: retries in flight stay below
    /// `retry_budget` of the requests in flight (at least `RETRY_FLOOR`).
    pub fn try_retry(&self) -> Option<BudgetGuard> {
        let requests = self.requests_in_flight.load(Ordering::Relaxed);
        let allowed = ((requests as f64 * self.retry_budget) as usize).max(RETRY_FLOOR);
        let retries = self.retries_in_flight.fetch_add(1, Ordering::Relaxed);
        if retries >= allowed {
            self.retries_in_flight.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(BudgetGuard(self.retries_in_flight.clone()))
    }

    /// Records how an exchange with `address` went, for passive health. A failure that
    /// reaches the threshold ejects the member unless that would take the pool past
    /// `max_ejected`. Returns the ejection's length when one happened.
    pub fn record_outcome(&self, address: SocketAddr, ok: bool) -> Option<std::time::Duration> {
        let policy = self.ejection.as_ref()?;
        let member = self
            .members
            .iter()
            .find(|m| m.endpoint.address == address)?;
        if ok {
            member.state.live_failures.store(0, Ordering::Relaxed);
            return None;
        }
        if !member.state.count_failure(policy.consecutive_failures) {
            return None;
        }
        let now = now_millis();
        if member.state.is_ejected(now) {
            return None;
        }
        let ejected = self
            .members
            .iter()
            .filter(|m| m.state.is_ejected(now))
            .count();
        let cap = (self.members.len() as f64 * policy.max_ejected).floor() as usize;
        if ejected + 1 > cap {
            return None;
        }
        Some(member.state.eject(policy, now))
    }

    /// Members ejected right now.
    pub fn ejected_count(&self) -> usize {
        if self.ejection.is_none() {
            return 0;
        }
        let now = now_millis();
        self.members
            .iter()
            .filter(|m| m.state.is_ejected(now))
            .count()
    }

    pub fn name(&self) -> &Name {
        &self.upstream.name
    }

    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.members.iter().map(|m| &m.endpoint)
    }

    pub fn healthy_count(&self) -> usize {
        self.members.iter().filter(|m| m.state.is_healthy()).count()
    }

    /// Members a request may go to: healthy and not ejected.
    pub fn available_count(&self) -> usize {
        let now = self.ejection.as_ref().map(|_| now_millis());
        self.members
            .iter()
            .filter(|m| m.state.is_healthy() && !now.is_some_and(|n| m.state.is_ejected(n)))
            .count()
    }

    /// Chooses a healthy member not in `tried`; when every healthy member was tried
    /// already, a tried one is reused rather than failing the retry. `None` only when the
    /// pool has no healthy member at all.
    pub fn select(&self, tried: &[SocketAddr], hash_key: u64) -> Option<&Member> {
        self.select_excluding(tried, hash_key)
            .or_else(|| self.select_excluding(&[], hash_key))
    }

    /// [`Pool::select`], but the member whose affinity key is `prefer` first, while it is
    /// in rotation and not yet tried.
    pub fn select_preferring(
        &self,
        tried: &[SocketAddr],
        hash_key: u64,
        prefer: Option<&str>,
    ) -> Option<&Member> {
        if let Some(prefer) = prefer {
            let now = self.ejection.as_ref().map(|_| now_millis());
            if let Some(member) = self.members.iter().find(|m| {
                &*m.affinity_key == prefer
                    && m.state.is_healthy()
                    && !tried.contains(&m.endpoint.address)
                    && !now.is_some_and(|n| m.state.is_ejected(n))
            }) {
                return Some(member);
            }
        }
        self.select(tried, hash_key)
    }

    /// The affinity cookie a response from `address` sets: `None` when the upstream
    /// has no affinity or the request already carried that member's key.
    pub fn affinity_cookie(&self, address: SocketAddr, carried: Option<&str>) -> Option<String> {
        let affinity = self.upstream.affinity.as_ref()?;
        let member = self
            .members
            .iter()
            .find(|m| m.endpoint.address == address)?;
        if carried == Some(&*member.affinity_key) {
            return None;
        }
        Some(format!(
            "{}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
            affinity.cookie,
            member.affinity_key,
            affinity.max_age.as_secs()
        ))
    }

    fn select_excluding(&self, tried: &[SocketAddr], hash_key: u64) -> Option<&Member> {
        let now = self.ejection.as_ref().map(|_| now_millis());
        let eligible = |m: &&Member| {
            m.state.is_healthy()
                && !tried.contains(&m.endpoint.address)
                && !now.is_some_and(|n| m.state.is_ejected(n))
        };
        if self.members.is_empty() {
            return None;
        }
        match self.upstream.balance {
            Balance::RoundRobin => {
                let len = self.schedule.len();
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                (0..len)
                    .map(|i| &self.members[self.schedule[(start + i) % len] as usize])
                    .find(eligible)
            }
            Balance::LeastRequests => {
                // Rotate the starting point so ties spread instead of piling on member 0.
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                let len = self.members.len();
                (0..len)
                    .map(|i| &self.members[(start + i) % len])
                    .filter(eligible)
                    .min_by(|a, b| {
                        let load = |m: &Member| {
                            (m.state.in_flight() as u64 + 1) * 1000 / m.endpoint.weight as u64
                        };
                        load(a).cmp(&load(b))
                    })
            }
            Balance::Hash => self
                .members
                .iter()
                .filter(eligible)
                .max_by_key(|m| rendezvous_score(hash_key, m)),
        }
    }
}

/// CA certificates for verifying an upstream, in the form pingora's connector takes,
/// from the bytes the config loaded (validated there: never empty).
pub fn upstream_ca(
    file: &crate::config::model::TlsFile,
) -> Result<Arc<pingora::protocols::tls::CaType>, String> {
    use pingora::utils::tls::{parse_x509, WrappedX509};
    let certs: Vec<WrappedX509> = crate::config::tls_files::certificates(file)?
        .into_iter()
        .map(|der| WrappedX509::new(der.to_vec(), parse_x509))
        .collect();
    Ok(Arc::from(certs))
}

/// Rendezvous (highest random weight) hashing: when a member leaves, only the keys that
/// chose it move.
fn rendezvous_score(key: u64, member: &Member) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    member.endpoint.address.hash(&mut hasher);
    let h = hasher.finish();
    // Weighted: take the max of `weight` draws, approximated by scaling.
    let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
    let score = -(member.endpoint.weight as f64) / unit.max(f64::MIN_POSITIVE).ln();
    score.to_bits()
}

fn smooth_weighted_schedule(endpoints: &[Endpoint]) -> Vec<u32> {
    if endpoints.is_empty() {
        return Vec::new();
    }
    let gcd = endpoints
        .iter()
        .map(|e| e.weight as u64)
        .fold(0, gcd)
        .max(1);
    let weights: Vec<i64> = endpoints
        .iter()
        .map(|e| (e.weight as u64 / gcd) as i64)
        .collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..weights.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        schedule.push(best as u32);
    }
    schedule
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl crate::telemetry::metrics::PoolGauges for Pool {
    fn healthy_count(&self) -> usize {
        Pool::healthy_count(self)
    }
    fn member_count(&self) -> usize {
        self.members.len()
    }
    fn ejected_count(&self) -> usize {
        Pool::ejected_count(self)
    }
    fn has_member(&self, label: &str) -> bool {
        self.members.iter().any(|member| &*member.label == label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(port: u16, weight: u32) -> Endpoint {
        Endpoint {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            weight,
        }
    }

    #[test]
    fn smooth_schedule_interleaves_weights() {
        let s = smooth_weighted_schedule(&[endpoint(1, 1), endpoint(2, 3)]);
        assert_eq!(s.len(), 4);
        assert_eq!(s.iter().filter(|&&i| i == 1).count(), 3);
        // The light one lands between heavy picks, not at the end of a burst.
        assert_eq!(s, vec![1, 0, 1, 1]);
        let s = smooth_weighted_schedule(&[endpoint(1, 5), endpoint(2, 1), endpoint(3, 1)]);
        assert_eq!(s, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    fn static_pool(
        endpoints: &[Endpoint],
        states: &MemberStates,
        passive_health: Option<PassiveHealth>,
    ) -> Pool {
        pool_of(endpoints, states, Balance::RoundRobin, passive_health)
    }

    fn pool_of(
        endpoints: &[Endpoint],
        states: &MemberStates,
        balance: Balance,
        passive_health: Option<PassiveHealth>,
    ) -> Pool {
        let upstream = Arc::new(Upstream {
            name: "u".into(),
            members: crate::config::model::Members::Static(endpoints.to_vec()),
            balance,
            connect_timeout: Default::default(),
            read_timeout: Default::default(),
            write_timeout: Default::default(),
            idle_timeout: Default::default(),
            retries: 0,
            http2: false,
            tls: None,
            health_check: None,
            passive_health,
            retry_budget: Upstream::DEFAULT_RETRY_BUDGET,
            hash_on: Default::default(),
            affinity: None,
            send_proxy_protocol: None,
        });
        Pool::new(upstream, endpoints, states)
    }

    #[test]
    fn consecutive_failures_eject_within_the_cap_and_double() {
        let states = MemberStates::default();
        let all = [
            endpoint(1, 1),
            endpoint(2, 1),
            endpoint(3, 1),
            endpoint(4, 1),
        ];
        let policy = PassiveHealth {
            consecutive_failures: 2,
            ejection_time: std::time::Duration::from_secs(30),
            max_ejected: 0.5,
        };
        let pool = static_pool(&all, &states, Some(policy));
        let a = all[0].address;
        assert_eq!(pool.record_outcome(a, false), None);
        assert_eq!(
            pool.record_outcome(a, true),
            None,
            "a success resets the count"
        );
        assert_eq!(pool.record_outcome(a, false), None);
        assert_eq!(
            pool.record_outcome(a, false),
            Some(std::time::Duration::from_secs(30))
        );
        assert_eq!(pool.ejected_count(), 1);
        assert_eq!(pool.available_count(), 3);
        for _ in 0..20 {
            let chosen = pool.select(&[], 0).expect("a member").endpoint.address;
            assert_ne!(chosen, a, "an ejected member gets no traffic");
        }
        let b = all[1].address;
        pool.record_outcome(b, false);
        assert!(pool.record_outcome(b, false).is_some());
        // Half the pool is out: a third member is not ejected however it fails.
        let c = all[2].address;
        for _ in 0..10 {
            assert_eq!(pool.record_outcome(c, false), None);
        }
        assert_eq!(pool.available_count(), 2);
        // A repeat ejection lasts twice as long.
        let member = &pool.members[0];
        member.state.ejected_until.store(0, Ordering::Relaxed);
        pool.record_outcome(a, false);
        assert_eq!(
            pool.record_outcome(a, false),
            Some(std::time::Duration::from_secs(60))
        );
    }

    #[test]
    fn retry_budget_allows_a_share_of_requests_with_a_floor() {
        let states = MemberStates::default();
        let pool = static_pool(&[endpoint(1, 1)], &states, None);
        let requests: Vec<_> = (0..50).map(|_| pool.start_request()).collect();
        let retries: Vec<_> = (0..20).filter_map(|_| pool.try_retry()).collect();
        assert_eq!(retries.len(), 10, "20% of 50 requests in flight");
        drop(retries);
        drop(requests);
        let retries: Vec<_> = (0..20).filter_map(|_| pool.try_retry()).collect();
        assert_eq!(
            retries.len(),
            RETRY_FLOOR,
            "the floor when nothing is in flight"
        );
    }

    #[test]
    fn rendezvous_is_stable_when_another_member_leaves() {
        let states = MemberStates::default();
        let all = vec![endpoint(1, 1), endpoint(2, 1), endpoint(3, 1)];
        let pool = pool_of(&all, &states, Balance::Hash, None);
        let fewer = vec![endpoint(1, 1), endpoint(2, 1)];
        let smaller = pool_of(&fewer, &states, Balance::Hash, None);
        let mut moved = 0;
        for key in 0..300u64 {
            let before = pool.select(&[], key).map(|m| m.endpoint.address);
            let after = smaller.select(&[], key).map(|m| m.endpoint.address);
            if before != after {
                assert_eq!(before, Some(endpoint(3, 1).address));
                moved += 1;
            }
        }
        assert!(moved > 50 && moved < 150, "moved {moved}");
    }
}
