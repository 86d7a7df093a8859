//! Service-manager notifications (`sd_notify`): systemd's `Type=notify` learns when the
//! gateway really serves, when a reload starts and ends, and when it stops, instead of
//! guessing from the process having started. Without `NOTIFY_SOCKET` (not under systemd,
//! or in a container) every call is a no-op.

use std::sync::atomic::{AtomicBool, Ordering};

use sd_notify::NotifyState;

/// A RELOADING=1 waits for its READY=1: set by the SIGHUP handler, cleared by the first
/// reload that finishes after it, so systemd never sees READY without a reload behind it.
static RELOAD_PENDING: AtomicBool = AtomicBool::new(false);

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        // systemd times the start out (or keeps "reloading") by itself; the log says why.
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// Listeners accept connections: systemd may now order dependent units after us.
pub fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// A SIGHUP arrived: `systemctl reload` blocks until [`reload_finished`]. systemd 253 and
/// later require the monotonic timestamp with RELOADING=1; older ones ignore it.
pub fn reloading() {
    RELOAD_PENDING.store(true, Ordering::Release);
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// A reload was applied or refused. The running config serves either way, so systemd
/// hears READY=1 in both cases; the log and `edgegate_config_reloads_total` tell which.
pub fn reload_finished() {
    if RELOAD_PENDING.swap(false, Ordering::AcqRel) {
        send(&[NotifyState::Ready, NotifyState::Status("serving")]);
    }
}

/// SIGTERM or SIGINT: the drain has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// This process took over the listening sockets of the previous one (a binary upgrade):
/// it becomes the unit's main process. systemd accepts MAINPID= from a process other than
/// the main one only with `NotifyAccess=all`, which the shipped unit sets.
pub fn took_over() {
    send(&[
        NotifyState::MainPid(std::process::id()),
        NotifyState::Ready,
        NotifyState::Status("serving (upgraded)"),
    ]);
}
