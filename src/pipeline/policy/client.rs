//! The client address policy is applied to: the connection's peer, or, when the peer is
//! one of the listener's `trusted_proxies`, the nearest X-Forwarded-For hop that is not
//! itself trusted (each trusted proxy vouches only for the hop before it).

use std::net::IpAddr;

use crate::config::model::Listener;

use super::super::fields::Fields;

/// The client address of a request from `peer`.
pub fn client_address<F: Fields>(peer: IpAddr, listener: Option<&Listener>, fields: &F) -> IpAddr {
    let peer = peer.to_canonical();
    let Some(listener) = listener.filter(|l| l.is_trusted(peer)) else {
        return peer;
    };
    let mut client = peer;
    // Fields in order, hops right to left from the last field: the nearest hop first.
    let forwarded: Vec<&[u8]> = fields
        .each()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"x-forwarded-for"))
        .map(|(_, v)| v)
        .collect();
    for field in forwarded.iter().rev() {
        for hop in field.rsplit(|&b| b == b',') {
            let parsed = std::str::from_utf8(hop.trim_ascii())
                .ok()
                .and_then(|h| h.parse::<IpAddr>().ok());
            let Some(hop) = parsed else {
                // A hop no proxy could have written: believe nothing beyond it.
                return client;
            };
            client = hop.to_canonical();
            if !listener.is_trusted(client) {
                return client;
            }
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(trusted: &[&str]) -> Listener {
        let mut l = Listener::new("web", "127.0.0.1:0".parse().expect("addr"));
        l.trusted_proxies = trusted.iter().map(|t| t.parse().expect("net")).collect();
        l
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn the_last_untrusted_hop_is_the_client() {
        let l = listener(&["10.0.0.0/8"]);
        let xff = |v: &'static str| {
            let mut map = http::HeaderMap::new();
            map.insert("x-forwarded-for", v.parse().expect("value"));
            map
        };
        let peer = ip("10.0.0.1");
        assert_eq!(
            client_address(peer, Some(&l), &xff("198.51.100.9, 203.0.113.5, 10.1.1.1")),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_address(ip("192.0.2.1"), Some(&l), &xff("203.0.113.5")),
            ip("192.0.2.1"),
            "an untrusted peer's header is not believed"
        );
        assert_eq!(
            client_address(peer, Some(&l), &http::HeaderMap::new()),
            peer
        );
        assert_eq!(
            client_address(peer, Some(&l), &xff("garbage, 10.2.2.2")),
            ip("10.2.2.2")
        );
        assert_eq!(client_address(peer, None, &xff("203.0.113.5")), peer);
    }
}
