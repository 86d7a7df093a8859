//! What the gateway tells its operators: metrics, the access log, span export, the one
//! record of a finished request they share (with its trace context), and systemd
//! readiness. It sits below the snapshot, which holds the sinks a request writes to.

pub mod access_log;
pub mod metrics;
pub mod notify;
pub mod request_record;
pub mod trace;
pub mod trace_export;
