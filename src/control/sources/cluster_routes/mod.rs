//! Routes from the cluster: Gateway API Gateways and HTTPRoutes, and
//! Ingresses, translated into the model's routes and upstreams and sent to the publisher
//! as one message, like an endpoint change.

pub mod objects;
pub mod status;
pub mod translate;
pub mod watch;
