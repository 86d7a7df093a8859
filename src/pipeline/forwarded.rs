//! `X-Forwarded-*` and the `hash` balancing key: what a request says about its client,
//! believed only as far as the listener's `trusted_proxies` allow.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use crate::config::model::HashOn;

/// The `X-Forwarded-For` the upstream gets: from a trusted proxy, its list with the
/// proxy's address appended; from anyone else, the client's address alone (a client can
/// write anything into the header, so its copy is never passed on).
pub fn forwarded_for(prior: Option<&[u8]>, client: IpAddr, trusted: bool) -> Vec<u8> {
    let client = client.to_canonical().to_string();
    match prior.filter(|p| trusted && !p.is_empty()) {
        Some(prior) => {
            let mut out = Vec::with_capacity(prior.len() + 2 + client.len());
            out.extend_from_slice(prior);
            out.extend_from_slice(b", ");
            out.extend_from_slice(client.as_bytes());
            out
        }
        None => client.into_bytes(),
    }
}

/// The `hash` balancing key of a request: its client address, a header's value or a
/// cookie's, falling back to the client address when the request lacks the one named.
pub fn hash_key<'a>(
    on: &HashOn,
    client: IpAddr,
    mut header: impl FnMut(&str) -> Option<&'a [u8]>,
) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let value = match on {
        HashOn::ClientAddress => None,
        HashOn::Header(name) => header(name.as_str()),
        HashOn::Cookie(name) => header("cookie").and_then(|cookies| cookie(cookies, name)),
    };
    match value {
        Some(value) => value.hash(&mut hasher),
        None => client.to_canonical().hash(&mut hasher),
    }
    hasher.finish()
}

/// One cookie's value from a `Cookie` field (`a=1; b=2`).
pub fn cookie<'a>(field: &'a [u8], name: &str) -> Option<&'a [u8]> {
    field.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (pair[..eq] == *name.as_bytes()).then(|| &pair[eq + 1..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_clients_cannot_forge_the_chain() {
        let client: IpAddr = "192.0.2.7".parse().expect("ip");
        assert_eq!(
            forwarded_for(Some(b"10.0.0.1"), client, false),
            b"192.0.2.7"
        );
        assert_eq!(
            forwarded_for(Some(b"10.0.0.1"), client, true),
            b"10.0.0.1, 192.0.2.7"
        );
        assert_eq!(forwarded_for(None, client, true), b"192.0.2.7");
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        assert_eq!(forwarded_for(None, mapped, false), b"127.0.0.1");
    }

    #[test]
    fn hash_keys_follow_the_named_value() {
        let a: IpAddr = "127.0.0.1".parse().expect("ip");
        let b: IpAddr = "127.0.0.2".parse().expect("ip");
        let header = HashOn::Header(http::HeaderName::from_static("x-user"));
        let same = |ip| hash_key(&header, ip, |n| (n == "x-user").then_some(&b"alice"[..]));
        assert_eq!(same(a), same(b), "the header decides, not the address");
        assert_ne!(
            hash_key(&header, a, |_| None),
            hash_key(&header, b, |_| None),
            "no header: the address decides"
        );
        let by_cookie = HashOn::Cookie("session".into());
        let key = |cookies: &'static [u8]| hash_key(&by_cookie, a, move |_| Some(cookies));
        assert_eq!(key(b"x=1; session=abc"), key(b"session=abc"));
        assert_ne!(key(b"session=abc"), key(b"session=abd"));
    }
}
