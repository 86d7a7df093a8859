//! Members that left their upstream with requests still in flight: `draining` on the
//! status page.
//!
//! A reload or a discovery update drops a member from the next snapshot at once, but
//! requests already sent to it carry on (each holds its member's state until it ends).
//! The admin side remembers the members it saw last time and keeps showing those that
//! left while they still have requests in flight, so an operator can watch a removed
//! backend finish its work. Nothing on the request path changes for it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::config::model::Name;
use crate::snapshot::pool::MemberState;
use crate::snapshot::pool::Pool;
use crate::telemetry::metrics::Pools;

/// A member no longer in its upstream, still serving requests sent before it left.
#[derive(Debug, Clone)]
pub struct Draining {
    pub upstream: Name,
    pub address: SocketAddr,
    pub weight: u32,
    pub in_flight: usize,
}

type Key = (Name, SocketAddr);

#[derive(Debug, Default)]
struct Seen {
    members: HashMap<Key, (u32, Arc<MemberState>)>,
    draining: HashMap<Key, (u32, Arc<MemberState>)>,
}

/// What the admin side saw of the pools last time it looked.
#[derive(Debug, Default)]
pub struct Departures {
    seen: Mutex<Seen>,
}

impl Departures {
    /// Compares `pools` with what was seen last time; returns the members draining now,
    /// sorted by upstream and address.
    pub fn observe(&self, pools: &Pools<Pool>) -> Vec<Draining> {
        let current: HashMap<Key, (u32, Arc<MemberState>)> = pools
            .iter()
            .flat_map(|(name, pool)| {
                pool.members.iter().map(move |m| {
                    (
                        (name.clone(), m.endpoint.address),
                        (m.endpoint.weight, m.state.clone()),
                    )
                })
            })
            .collect();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let previous = std::mem::take(&mut seen.members);
        for (key, member) in previous {
            if !current.contains_key(&key) {
                seen.draining.insert(key, member);
            }
        }
        seen.draining
            .retain(|key, (_, state)| !current.contains_key(key) && state.in_flight() > 0);
        seen.members = current;
        let mut out: Vec<Draining> = seen
            .draining
            .iter()
            .map(|((upstream, address), (weight, state))| Draining {
                upstream: upstream.clone(),
                address: *address,
                weight: *weight,
                in_flight: state.in_flight(),
            })
            .collect();
        out.sort_by(|a, b| (&a.upstream, a.address).cmp(&(&b.upstream, b.address)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load, SourceFile};
    use crate::snapshot::pool::{MemberStates, Pool};

    fn pools(states: &MemberStates, endpoints: &[&str]) -> Pools<Pool> {
        let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        let text = format!(
            "[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n[upstreams.u]\nendpoints = [{}]\n",
            list.join(", ")
        );
        let config = load(&SourceFile::new("t.toml", text.as_str()))
            .expect("valid")
            .config;
        let upstream = Arc::new(config.upstreams[0].clone());
        let endpoints = match &upstream.members {
            crate::config::model::Members::Static(e) => e.clone(),
            crate::config::model::Members::Kubernetes(_) => unreachable!("static"),
        };
        [(
            upstream.name.clone(),
            Arc::new(Pool::new(upstream, &endpoints, states)),
        )]
        .into()
    }

    #[test]
    fn a_removed_member_drains_while_requests_are_in_flight() {
        let states = MemberStates::default();
        let departures = Departures::default();
        let before = pools(&states, &["127.0.0.1:1001", "127.0.0.1:1002"]);
        let leaving = before["u"].members[1].state.clone();
        let request = leaving.start_request();
        assert!(departures.observe(&before).is_empty());
        let after = pools(&states, &["127.0.0.1:1001"]);
        let draining = departures.observe(&after);
        assert_eq!(draining.len(), 1);
        assert_eq!(draining[0].address.to_string(), "127.0.0.1:1002");
        assert_eq!(draining[0].in_flight, 1);
        // Still draining on the next look, gone once its request ends.
        assert_eq!(departures.observe(&after).len(), 1);
        drop(request);
        assert!(departures.observe(&after).is_empty());
    }

    #[test]
    fn an_idle_member_that_leaves_is_simply_gone_and_one_that_returns_is_not_draining() {
        let states = MemberStates::default();
        let departures = Departures::default();
        let both = pools(&states, &["127.0.0.1:1001", "127.0.0.1:1002"]);
        let busy = both["u"].members[1].state.clone().start_request();
        departures.observe(&both);
        let one = pools(&states, &["127.0.0.1:1001"]);
        assert_eq!(departures.observe(&one).len(), 1);
        assert!(departures.observe(&both).is_empty(), "back in the pool");
        drop(busy);
        departures.observe(&both);
        assert!(departures.observe(&one).is_empty(), "nothing in flight");
    }
}
