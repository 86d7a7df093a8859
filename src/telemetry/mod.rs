//! What the gateway tells its operators: metrics, the access log, span export, the one
//! record of a finished request they share, and the admin listener that serves them.

pub mod access_log;
pub mod admin;
pub mod metrics;
pub mod request_record;
pub mod trace_export;
