//! Zero-downtime binary upgrades: the running process starts the binary now on disk as
//! its child and hands it every listening socket (SCM_RIGHTS over a Unix socket on the
//! child's stdin); the child serves them and says so; only then does the old process
//! stop accepting, drain and exit.
//!
//! Handing over the sockets themselves, rather than binding again with `SO_REUSEPORT`,
//! is what makes it lossless: a connection waiting in a listening socket's accept queue
//! belongs to that socket, and closing the socket would reset it. Both processes hold
//! the same sockets, so the queue survives the old process exiting.
//!
//! The child is started by the old process (not by the operator's shell) so that under
//! systemd it runs in the unit's cgroup, with the unit's sandbox and environment; it
//! claims the unit with MAINPID= (see [`crate::telemetry::notify::took_over`]).
//!
//! The child accepts nothing until it is ready as `/readyz` defines it (config loaded,
//! discovery and cluster routes synced): both processes share the listen queues, so a
//! child accepting early would answer cluster hosts 404 and discovered upstreams 503
//! while it syncs. Until the parent answers `go`, the parent alone accepts; a child the
//! parent gives up on has accepted nothing, so killing it drops no connection.
//!
//! The wire format, one SOCK_SEQPACKET message each: `KEY\nADDRESS` with that listener's
//! sockets attached, then `end`; the child answers `ready` once it could serve; the
//! parent answers `go` and stops accepting; the child then starts accepting. (A parent
//! that closes the socket after `ready` instead, as versions before `go` do, counts as
//! `go`.)

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

/// Set (to `1`) in the child's environment: its stdin is the hand-over socket.
pub const ENV: &str = "EDGEGATE_UPGRADE";

/// How much lower than the process it replaces the new process runs its start-up work
/// (a nice value, added to its own). See [`start_up`].
const START_UP_NICENESS: i32 = 10;

/// Whether this process was started by [`hand_over`] (its stdin is the hand-over socket).
pub fn is_successor() -> bool {
    std::env::var_os(ENV).is_some_and(|v| v == "1")
}

/// Runs a CPU-heavy step of start-up: in the new process of a binary upgrade, on a
/// thread of its own at a lower CPU priority, so that it takes the CPU the serving
/// process leaves idle rather than the CPU its requests are waiting for; otherwise
/// (a normal start, nothing to compete with) right here.
///
/// The new process starts while the old one serves at full load. Measured on a debug
/// build, most of its start-up CPU is pingora building its upstream TLS connectors,
/// each parsing every system root certificate (from the bundle and again from the
/// directory, once for HTTP/1.1 and once for HTTP/2), then loading the config. On a
/// busy two-core machine that CPU came out of the old process's requests: an upgrade's
/// longest request was several times nginx's, whose new master starts with far less.
/// At a lower priority the hand-over may take longer under saturation, but it never
/// stalls (a nice value, not an idle class) and requests in flight keep their CPU. Only
/// this thread is lowered (Linux priorities are per thread) and it ends with the step:
/// the worker threads and the control plane keep their priority, which an unprivileged
/// process could not raise back.
pub fn start_up<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    if !is_successor() {
        return work();
    }
    lowered(work)
}

/// Runs `work` on a thread of its own with a nice value [`START_UP_NICENESS`] above the
/// caller's, and waits for it.
fn lowered<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let step = scope.spawn(|| {
            // `None`: the calling thread, on Linux.
            if let Err(e) = rustix::process::setpriority_process(None, START_UP_NICENESS) {
                tracing::debug!(error = %e, "binary upgrade: cannot lower the start-up thread's priority");
            }
            work()
        });
        step.join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// More than any listener has (one socket per worker thread); the kernel's own limit on
/// descriptors in one message is 253.
const MAX_FDS_PER_MESSAGE: usize = 253;

/// How long the new process may take to load its config, take the sockets and become
/// ready (Kubernetes discovery synced included) before the old one gives up on it.
const CHILD_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The listening sockets of one listener (or the admin listener).
pub struct Group {
    /// `listener NAME` or `admin`.
    pub key: String,
    /// The address as configured (port 0 included), so the new process matches it against
    /// its own config rather than against what the kernel picked.
    pub address: SocketAddr,
    pub sockets: Vec<OwnedFd>,
}

pub fn listener_key(name: &str) -> String {
    format!("listener {name}")
}

pub const ADMIN_KEY: &str = "admin";

/// How to start the new binary: the path and arguments this process was started with,
/// captured at start. After a package upgrade `/proc/self/exe` names the deleted old file;
/// the path names the new one.
#[derive(Clone)]
pub struct Launch {
    exe: PathBuf,
    args: Vec<OsString>,
}

impl Launch {
    pub fn capture() -> std::io::Result<Launch> {
        let mut args = std::env::args_os();
        let argv0 = args.next().map(PathBuf::from);
        let exe = match argv0 {
            // A bare name was found on $PATH; current_exe resolves it (at start, while
            // the file is still the one running).
            Some(p) if p.components().count() > 1 => std::path::absolute(p)?,
            _ => std::env::current_exe()?,
        };
        Ok(Launch {
            exe,
            args: args.collect(),
        })
    }
}

/// Starts the new process, hands it `groups`, and waits until it serves. Blocking: run it
/// off the serving runtime. On success the caller stops accepting and drains; on failure
/// nothing has changed for clients (the child, if any, is killed).
pub fn hand_over(launch: &Launch, groups: &[Group]) -> Result<u32, String> {
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| format!("cannot create the hand-over socket: {e}"))?;
    let mut child = Command::new(&launch.exe)
        .args(&launch.args)
        .env(ENV, "1")
        .stdin(Stdio::from(theirs))
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", launch.exe.display()))?;
    let pid = child.id();
    let result = send_groups(&ours, groups)
        .and_then(|()| wait_ready(&ours))
        .and_then(|()| {
            rustix::net::send(&ours, b"go", SendFlags::NOSIGNAL)
                .map(|_| ())
                .map_err(|e| format!("cannot tell it to serve: {e}"))
        });
    match result {
        Ok(()) => Ok(pid),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("new process {pid}: {e}"))
        }
    }
}

fn send_groups(socket: &OwnedFd, groups: &[Group]) -> Result<(), String> {
    for group in groups {
        if group.sockets.len() > MAX_FDS_PER_MESSAGE {
            return Err(format!(
                "{}: {} sockets is more than one message carries",
                group.key,
                group.sockets.len()
            ));
        }
        let payload = format!("{}\n{}", group.key, group.address);
        let fds: Vec<BorrowedFd<'_>> = group.sockets.iter().map(|s| s.as_fd()).collect();
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err("ancillary buffer too small".into());
        }
        rustix::net::sendmsg(
            socket,
            &[IoSlice::new(payload.as_bytes())],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .map_err(|e| format!("cannot send the sockets of {}: {e}", group.key))?;
    }
    rustix::net::send(socket, b"end", SendFlags::NOSIGNAL)
        .map_err(|e| format!("cannot finish the hand-over: {e}"))?;
    Ok(())
}

fn wait_ready(socket: &OwnedFd) -> Result<(), String> {
    rustix::net::sockopt::set_socket_timeout(
        socket,
        rustix::net::sockopt::Timeout::Recv,
        Some(CHILD_READY_TIMEOUT),
    )
    .map_err(|e| format!("cannot set a timeout: {e}"))?;
    let mut buf = [0u8; 16];
    match rustix::net::recv(socket, &mut buf, RecvFlags::empty()) {
        Ok((n, _)) if &buf[..n] == b"ready" => Ok(()),
        Ok((0, _)) => Err("exited before it was ready (its log says why)".into()),
        Ok(_) => Err("answered something other than `ready`".into()),
        Err(rustix::io::Errno::AGAIN) => Err(format!(
            "not ready within {}s",
            CHILD_READY_TIMEOUT.as_secs()
        )),
        Err(e) => Err(format!("hand-over socket: {e}")),
    }
}

/// What this process inherited, when it was started by [`hand_over`].
struct Inheritance {
    channel: OwnedFd,
    groups: HashMap<(String, SocketAddr), Vec<TcpListener>>,
}

static INHERITED: Mutex<Option<Inheritance>> = Mutex::new(None);

/// Receives the sockets of the previous process if it started this one. Call once, before
/// binding anything. `Ok(false)`: a normal start.
pub fn receive() -> Result<bool, String> {
    if !is_successor() {
        return Ok(false);
    }
    let channel = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("hand-over socket: {e}"))?;
    let mut groups = HashMap::new();
    loop {
        let mut payload = [0u8; 512];
        let mut space =
            vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = rustix::net::recvmsg(
            &channel,
            &mut [IoSliceMut::new(&mut payload)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(|e| format!("hand-over socket: {e}"))?;
        let mut sockets: Vec<TcpListener> = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                sockets.extend(fds.map(TcpListener::from));
            }
        }
        let text = std::str::from_utf8(&payload[..received.bytes])
            .map_err(|_| "hand-over: a message that is not text".to_string())?;
        if received.bytes == 0 {
            return Err("the previous process closed the hand-over socket early".into());
        }
        if text == "end" {
            break;
        }
        let (key, address) = text
            .split_once('\n')
            .and_then(|(k, a)| Some((k.to_string(), a.parse::<SocketAddr>().ok()?)))
            .ok_or_else(|| format!("hand-over: unreadable message {text:?}"))?;
        if sockets.is_empty() {
            return Err(format!("hand-over: {key} came without sockets"));
        }
        groups.insert((key, address), sockets);
    }
    tracing::info!(
        pid = std::process::id(),
        listeners = groups.len(),
        "binary upgrade: inherited the listening sockets of the previous process"
    );
    *INHERITED.lock().unwrap_or_else(|e| e.into_inner()) = Some(Inheritance { channel, groups });
    Ok(true)
}

/// The inherited sockets for `key` at `address`, used instead of binding (and without the
/// probe bind, which would find the port in use by exactly these sockets).
pub fn take(key: &str, address: SocketAddr) -> Option<Vec<TcpListener>> {
    let mut inherited = INHERITED.lock().unwrap_or_else(|e| e.into_inner());
    inherited
        .as_mut()?
        .groups
        .remove(&(key.to_string(), address))
}

/// Tells the previous process that this one is ready, and waits until it lets go (it
/// answers `go`, or closes the hand-over socket). Blocking. Sockets the config no longer
/// names are closed here. The caller starts accepting when this returns, then calls
/// [`serving`].
pub fn announce_ready() {
    let Some(inheritance) = INHERITED.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    for (key, address) in inheritance.groups.keys() {
        tracing::warn!(%key, %address, "binary upgrade: an inherited listener is not in the config; closing it");
    }
    if let Err(e) = rustix::net::send(&inheritance.channel, b"ready", SendFlags::NOSIGNAL) {
        tracing::warn!(error = %e, "binary upgrade: cannot tell the previous process");
        return;
    }
    // `go`, or the previous process closed the socket (or is gone): either way it no
    // longer waits for this one.
    let mut buf = [0u8; 16];
    while let Err(rustix::io::Errno::INTR) =
        rustix::net::recv(&inheritance.channel, &mut buf, RecvFlags::empty())
    {}
}

/// Tells systemd that this process serves now (it accepts on the inherited sockets).
pub fn serving() {
    crate::telemetry::notify::took_over();
    tracing::info!(
        pid = std::process::id(),
        "binary upgrade: serving; the previous process drains"
    );
}

/// `edgegate upgrade --pid PID`: asks the process to upgrade (SIGUSR2) and waits until it
/// has exited, which it does only after its successor serves and its own connections
/// have drained.
pub fn request(pid: i32, timeout: Duration) -> Result<(), String> {
    let target = rustix::process::Pid::from_raw(pid).ok_or_else(|| format!("invalid pid {pid}"))?;
    rustix::process::kill_process(target, rustix::process::Signal::USR2)
        .map_err(|e| format!("cannot signal {pid}: {e}"))?;
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if gone(target) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "process {pid} is still running after {}s: the new process failed to start, or \
         connections are still draining (see the log)",
        timeout.as_secs()
    ))
}

/// Exited: no such process, or a zombie its parent has not reaped yet.
fn gone(pid: rustix::process::Pid) -> bool {
    if rustix::process::test_kill_process(pid).is_err() {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero()))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|s| s == "Z"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_up_work_runs_lowered_and_the_caller_keeps_its_priority() {
        let own = rustix::process::getpriority_process(None).expect("priority");
        let seen = lowered(|| rustix::process::getpriority_process(None).expect("priority"));
        assert_eq!(seen, (own + START_UP_NICENESS).min(19));
        assert_eq!(
            rustix::process::getpriority_process(None).expect("priority"),
            own,
            "only the start-up thread is lowered"
        );
        // Not a successor (no hand-over socket): right here, as it was.
        assert!(!is_successor());
        assert_eq!(
            start_up(|| rustix::process::getpriority_process(None).expect("priority")),
            own
        );
    }
}
