//! From EndpointSlices (or legacy Endpoints) to an upstream's members: pure, so every
//! rule (ready, serving while terminating, named and numbered ports, merging across
//! slices) is tested without an API server. The watches that feed it live in
//! [`super::discovery`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::config::model::{Endpoint, ServicePort};

/// One slice's (or Endpoints subset's) endpoints, reduced to what selection needs.
#[derive(Debug, Clone, Default)]
pub struct SliceEndpoints {
    /// Port name (as in the Service) -> port number for these endpoints.
    pub ports: Vec<(String, u16)>,
    pub endpoints: Vec<DiscoveredEndpoint>,
}

#[derive(Debug, Clone)]
pub struct DiscoveredEndpoint {
    pub address: IpAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

pub fn from_slice(slice: &EndpointSlice) -> SliceEndpoints {
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p.name.clone().unwrap_or_default(),
                u16::try_from(p.port?).ok()?,
            ))
        })
        .collect();
    let endpoints = slice
        .endpoints
        .iter()
        .flat_map(|e| {
            let conditions = e.conditions.clone().unwrap_or_default();
            // Absent `ready` counts as ready; absent `serving` follows `ready`.
            let ready = conditions.ready.unwrap_or(true);
            let serving = conditions.serving.unwrap_or(ready);
            let terminating = conditions.terminating.unwrap_or(false);
            e.addresses.iter().filter_map(move |a| {
                Some(DiscoveredEndpoint {
                    address: a.parse().ok()?,
                    ready,
                    serving,
                    terminating,
                })
            })
        })
        .collect();
    SliceEndpoints { ports, endpoints }
}

/// Legacy Endpoints know only ready or not: no serving/terminating conditions.
fn listed(
    addresses: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>,
    ready: bool,
) -> impl Iterator<Item = DiscoveredEndpoint> + '_ {
    addresses.iter().flatten().filter_map(move |a| {
        Some(DiscoveredEndpoint {
            address: a.ip.parse().ok()?,
            ready,
            serving: ready,
            terminating: false,
        })
    })
}

pub fn from_endpoints(endpoints: &Endpoints) -> Vec<SliceEndpoints> {
    endpoints
        .subsets
        .iter()
        .flatten()
        .map(|subset| {
            let ports = subset
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some((
                        p.name.clone().unwrap_or_default(),
                        u16::try_from(p.port).ok()?,
                    ))
                })
                .collect();
            let ready = listed(&subset.addresses, true);
            let not_ready = listed(&subset.not_ready_addresses, false);
            SliceEndpoints {
                ports,
                endpoints: ready.chain(not_ready).collect(),
            }
        })
        .collect()
}

/// Members for one upstream: ready endpoints of every slice, merged and deduplicated; when
/// none is ready, those serving while terminating (what ingress controllers do so a
/// rollout's last pods still take traffic rather than none).
pub fn members(
    slices: &BTreeMap<String, Vec<SliceEndpoints>>,
    service_ports: &[(String, u16)],
    port: &ServicePort,
) -> Vec<Endpoint> {
    let port_name = match port {
        ServicePort::Name(name) => Some(name.clone()),
        ServicePort::Number(n) => service_ports
            .iter()
            .find(|(_, p)| p == n)
            .map(|(name, _)| name.clone()),
    };
    let candidates = || {
        slices.values().flatten().filter_map(|slice| {
            let number = match &port_name {
                Some(name) => slice.ports.iter().find(|(n, _)| n == name).map(|(_, p)| *p),
                // Without the Service, a lone unnamed port is the only sensible reading.
                None => match (port, slice.ports.as_slice()) {
                    (ServicePort::Number(n), [(_, p)]) if slice.ports.len() == 1 => {
                        Some(*p).filter(|_| *n > 0)
                    }
                    _ => None,
                },
            }?;
            Some((slice, number))
        })
    };
    let pick = |wanted: &dyn Fn(&DiscoveredEndpoint) -> bool| -> BTreeSet<SocketAddr> {
        candidates()
            .flat_map(|(slice, number)| {
                slice
                    .endpoints
                    .iter()
                    .filter(|e| wanted(e))
                    .map(move |e| SocketAddr::new(e.address, number))
            })
            .collect()
    };
    let mut chosen = pick(&|e| e.ready);
    if chosen.is_empty() {
        chosen = pick(&|e| e.serving && e.terminating);
    }
    chosen
        .into_iter()
        .map(|address| Endpoint { address, weight: 1 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(ip: &str, ready: bool, serving: bool, terminating: bool) -> DiscoveredEndpoint {
        DiscoveredEndpoint {
            address: ip.parse().expect("ip"),
            ready,
            serving,
            terminating,
        }
    }

    struct WatchState {
        slices: BTreeMap<String, Vec<SliceEndpoints>>,
        service_ports: Vec<(String, u16)>,
    }

    fn members(state: &WatchState, port: &ServicePort) -> Vec<Endpoint> {
        super::members(&state.slices, &state.service_ports, port)
    }

    fn addresses(state: &WatchState, port: &ServicePort) -> Vec<String> {
        members(state, port)
            .iter()
            .map(|e| e.address.to_string())
            .collect()
    }

    fn state(slices: Vec<SliceEndpoints>) -> WatchState {
        WatchState {
            slices: slices
                .into_iter()
                .enumerate()
                .map(|(i, s)| (format!("s{i}"), vec![s]))
                .collect(),
            service_ports: vec![("http".into(), 80)],
        }
    }

    #[test]
    fn merges_slices_maps_named_ports_and_deduplicates() {
        let s = state(vec![
            SliceEndpoints {
                ports: vec![("http".into(), 8080)],
                endpoints: vec![
                    ep("127.0.10.1", true, true, false),
                    ep("127.0.10.2", false, false, false),
                ],
            },
            SliceEndpoints {
                ports: vec![("http".into(), 9090)],
                endpoints: vec![ep("127.0.10.3", true, true, false)],
            },
            SliceEndpoints {
                ports: vec![("http".into(), 8080)],
                endpoints: vec![ep("127.0.10.1", true, true, false)],
            },
        ]);
        let got = addresses(&s, &ServicePort::Name("http".into()));
        assert_eq!(got, vec!["127.0.10.1:8080", "127.0.10.3:9090"]);
        // By number: the Service says port 80 is named "http".
        assert_eq!(members(&s, &ServicePort::Number(80)).len(), 2);
    }

    #[test]
    fn ipv6_endpoints_become_bracketed_socket_addresses() {
        let s = state(vec![SliceEndpoints {
            ports: vec![("http".into(), 8080)],
            endpoints: vec![ep("fd00::1", true, true, false)],
        }]);
        let got = addresses(&s, &ServicePort::Name("http".into()));
        assert_eq!(got, vec!["[fd00::1]:8080"]);
    }

    #[test]
    fn falls_back_to_serving_terminating_when_none_is_ready() {
        let s = state(vec![SliceEndpoints {
            ports: vec![("http".into(), 8080)],
            endpoints: vec![
                ep("127.0.10.1", false, true, true),
                ep("127.0.10.2", false, false, true),
                ep("127.0.10.3", false, true, false),
            ],
        }]);
        let got = addresses(&s, &ServicePort::Name("http".into()));
        assert_eq!(got, vec!["127.0.10.1:8080"]);
    }

    /// The wire form, as the API server sends it, through the same types kube-rs
    /// decodes into.
    #[test]
    fn endpoint_slice_conditions_and_ports_come_from_the_object() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}],
            "endpoints": [
                {"addresses": ["127.0.10.1"]},
                {"addresses": ["127.0.10.2"], "conditions": {"ready": false}},
                {"addresses": ["127.0.10.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["not-an-ip"]}
            ]
        }))
        .expect("slice");
        let converted = from_slice(&slice);
        assert_eq!(
            converted.ports,
            vec![("http".to_string(), 8080), ("metrics".to_string(), 9090)]
        );
        let conditions: Vec<_> = converted
            .endpoints
            .iter()
            .map(|e| (e.address.to_string(), e.ready, e.serving, e.terminating))
            .collect();
        assert_eq!(
            conditions,
            vec![
                ("127.0.10.1".to_string(), true, true, false),
                ("127.0.10.2".to_string(), false, false, false),
                ("127.0.10.3".to_string(), false, true, true),
            ]
        );
        let slices = BTreeMap::from([("web-abc".to_string(), vec![converted])]);
        let by_name = super::members(&slices, &[], &ServicePort::Name("metrics".into()));
        assert_eq!(by_name.len(), 1);
        assert_eq!(by_name[0].address.to_string(), "127.0.10.1:9090");
    }

    #[test]
    fn legacy_endpoints_know_only_ready_and_not_ready() {
        let endpoints: Endpoints = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "web"},
            "subsets": [{
                "addresses": [{"ip": "127.0.10.1"}],
                "notReadyAddresses": [{"ip": "127.0.10.2"}],
                "ports": [{"name": "http", "port": 8080}]
            }]
        }))
        .expect("endpoints");
        let subsets = from_endpoints(&endpoints);
        let slices = BTreeMap::from([("web".to_string(), subsets)]);
        let got: Vec<String> =
            super::members(&slices, &[("http".into(), 80)], &ServicePort::Number(80))
                .iter()
                .map(|e| e.address.to_string())
                .collect();
        assert_eq!(got, vec!["127.0.10.1:8080"]);
    }
}
