//! Serving connections: the accept loops ([`listeners`]) and the two renderers of the
//! request core, edgegate's own HTTP/1.1 loop ([`h1`]) and the pingora adapter for HTTP/2
//! and what the loop hands over ([`proxy`]); the admin listener and its status page ([`admin`]); and the hand-over of listening sockets to a new binary ([`upgrade`]).

pub mod admin;
pub mod buffered_io;
pub mod h1;
pub mod h2;
pub mod listeners;
pub mod proxy;
pub mod upgrade;
