//! A raw HTTP/1.1 upstream on loopback that records every byte it receives, per
//! connection and in order, and answers with scripted bytes. Where the hyper-based
//! [`super::Upstream`] shows what a tolerant server understood, this one shows exactly
//! what the gateway wrote: a smuggled second request, a request written into a
//! connection that was still carrying an old response, framing a strict reader refuses.
//!
//! Each connection is read by a task of its own, so bytes that arrive while a response
//! is being written are recorded when they arrive. Requests are read with the strict
//! reader of [`super::http1`]; the script is called for each one (or for each head, with
//! [`RawUpstream::start_early`]) and its steps are played in order.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use super::http1::{self, Mode, Parse, Request};

/// One step of a scripted answer.
#[derive(Debug, Clone)]
pub enum Step {
    /// Writes these bytes.
    Send(Vec<u8>),
    /// Waits before the next step.
    Pause(Duration),
    /// Ends the connection as a well-behaved server does: no more bytes written (FIN),
    /// what the peer still sends is read and recorded for up to a second, then closed.
    Close,
}

/// The script: the steps that answer a request. When the upstream answers on heads, the
/// request's body is empty and still to come.
type Script = Arc<dyn Fn(&Request) -> Vec<Step> + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Received(Vec<u8>),
    /// A whole request was read (its index on the connection).
    Request(usize),
    ReplyStart,
    ReplyEnd,
    /// The gateway ended the connection (EOF or reset).
    PeerClosed,
    /// This side sent FIN.
    WriteClosed,
}

/// What one upstream connection saw.
#[derive(Debug, Clone, Default)]
pub struct Conn {
    pub received: Vec<u8>,
    pub events: Vec<Event>,
    /// Whole requests, by the strict reader.
    pub requests: Vec<Request>,
    /// Why the strict reader stopped, when it refused what arrived.
    pub error: Option<String>,
    pub peer_closed: bool,
    pub write_closed: bool,
}

impl Conn {
    /// Bytes that arrived while a response was being written on this connection: the
    /// gateway wrote a request into a connection that was still busy.
    pub fn received_mid_reply(&self) -> usize {
        let mut replying = false;
        let mut total = 0;
        for event in &self.events {
            match event {
                Event::ReplyStart => replying = true,
                Event::ReplyEnd => replying = false,
                Event::Received(bytes) if replying => total += bytes.len(),
                _ => {}
            }
        }
        total
    }

    pub fn text(&self) -> String {
        http1::truncated(&self.received)
    }
}

struct Shared {
    conns: Mutex<Vec<Conn>>,
    /// Every whole request in the order it arrived, with its connection's index: the
    /// gateway's workers may use several connections at once.
    arrivals: Mutex<Vec<(usize, Request)>>,
    changed: watch::Sender<u64>,
}

impl Shared {
    fn update<R>(&self, conn: usize, f: impl FnOnce(&mut Conn) -> R) -> R {
        let out = {
            let mut conns = self.conns.lock().expect("conns");
            f(&mut conns[conn])
        };
        self.changed.send_modify(|v| *v += 1);
        out
    }

    fn snapshot(&self) -> Vec<Conn> {
        self.conns.lock().expect("conns").clone()
    }
}

pub struct RawUpstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl RawUpstream {
    /// Answers each whole request with the steps `script` returns for it.
    pub async fn start(
        script: impl Fn(&Request) -> Vec<Step> + Send + Sync + 'static,
    ) -> RawUpstream {
        Self::serve(Arc::new(script), false).await
    }

    /// Answers as soon as a request head has arrived, then reads the rest of its body
    /// (recording it) before the next request.
    pub async fn start_early(
        script: impl Fn(&Request) -> Vec<Step> + Send + Sync + 'static,
    ) -> RawUpstream {
        Self::serve(Arc::new(script), true).await
    }

    /// Answers every request with 200 and `<METHOD> <target> <body length>` as the body.
    pub async fn start_default() -> RawUpstream {
        Self::start(|r| vec![Step::Send(ok_for(r))]).await
    }

    async fn serve(script: Script, early: bool) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw upstream");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            arrivals: Mutex::new(Vec::new()),
            conns: Mutex::new(Vec::new()),
            changed: watch::channel(0).0,
        });
        let accept_shared = shared.clone();
        let task = tokio::spawn(async move {
            let mut handlers = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let index = {
                    let mut conns = accept_shared.conns.lock().expect("conns");
                    conns.push(Conn::default());
                    conns.len() - 1
                };
                accept_shared.changed.send_modify(|v| *v += 1);
                handlers.spawn(connection(
                    accept_shared.clone(),
                    script.clone(),
                    early,
                    index,
                    stream,
                ));
            }
        });
        RawUpstream { addr, shared, task }
    }

    /// What every connection saw so far, in accept order.
    pub fn conns(&self) -> Vec<Conn> {
        self.shared.snapshot()
    }

    /// Every whole request as `(connection, request)`, connection by connection.
    /// Fails the test when the strict reader refused anything the gateway sent.
    pub fn assert_read_cleanly(&self) {
        let conns = self.conns();
        assert!(
            conns.iter().all(|c| c.error.is_none()),
            "the upstream could not read what the gateway sent: {}",
            describe(&conns)
        );
    }

    /// Whole requests in the order they arrived, each with its connection's index.
    pub fn requests(&self) -> Vec<(usize, Request)> {
        self.shared.arrivals.lock().expect("arrivals").clone()
    }

    /// Waits until `ready` holds for the connections; panics naming `what` and showing
    /// what arrived if it does not within `wait`.
    pub async fn wait_until(
        &self,
        what: &str,
        wait: Duration,
        ready: impl Fn(&[Conn]) -> bool,
    ) -> Vec<Conn> {
        match self.try_wait_until(wait, ready).await {
            Ok(conns) => conns,
            Err(conns) => panic!(
                "upstream: {what} did not happen within {wait:?}; connections: {}",
                describe(&conns)
            ),
        }
    }

    /// Like [`Self::wait_until`], returning the connections either way.
    pub async fn try_wait_until(
        &self,
        wait: Duration,
        ready: impl Fn(&[Conn]) -> bool,
    ) -> Result<Vec<Conn>, Vec<Conn>> {
        let deadline = Instant::now() + wait;
        let mut changes = self.shared.changed.subscribe();
        loop {
            let conns = self.conns();
            if ready(&conns) {
                return Ok(conns);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    let conns = self.conns();
                    return if ready(&conns) { Ok(conns) } else { Err(conns) };
                }
            }
        }
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every connection's bytes and state, for assertion messages.
pub fn describe(conns: &[Conn]) -> String {
    let mut out = String::new();
    for (i, c) in conns.iter().enumerate() {
        out.push_str(&format!(
            "\n  #{i}: {} requests, error {:?}, peer closed {}, bytes {:?}",
            c.requests.len(),
            c.error,
            c.peer_closed,
            c.text()
        ));
    }
    if conns.is_empty() {
        out.push_str("none");
    }
    out
}

/// 200 with `<METHOD> <target> <body length>` as the body (for HEAD, its length only).
pub fn ok_for(request: &Request) -> Vec<u8> {
    let body = format!(
        "{} {} {}",
        request.method,
        request.target,
        request.body.len()
    );
    if request.method == "HEAD" {
        let length = body.len().to_string();
        return http1::response(200, &[("Content-Length", length.as_str())], b"");
    }
    http1::response(200, &[("Content-Type", "text/plain")], body.as_bytes())
}

async fn connection(
    shared: Arc<Shared>,
    script: Script,
    early: bool,
    conn: usize,
    stream: tokio::net::TcpStream,
) {
    let (mut read, mut write) = stream.into_split();
    let reader_shared = shared.clone();
    let mut reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    reader_shared.update(conn, |c| {
                        c.peer_closed = true;
                        c.events.push(Event::PeerClosed);
                    });
                    return;
                }
                Ok(n) => reader_shared.update(conn, |c| {
                    c.received.extend_from_slice(&buf[..n]);
                    c.events.push(Event::Received(buf[..n].to_vec()));
                }),
            }
        }
    });
    let mut changes = shared.changed.subscribe();
    let mut consumed = 0;
    let mut answered_head = false;
    loop {
        let (parsed, head, peer_closed) = {
            let conns = shared.conns.lock().expect("conns");
            let c = &conns[conn];
            let rest = &c.received[consumed..];
            let head = (early && !answered_head)
                .then(|| request_head(rest))
                .flatten();
            (
                http1::parse_request(rest, Mode::Strict),
                head,
                c.peer_closed,
            )
        };
        let index = shared.conns.lock().expect("conns")[conn].requests.len();
        if let Some(request) = head {
            answered_head = true;
            let steps = script(&request);
            if !play(&shared, conn, &mut write, &mut reader, steps).await {
                return;
            }
            continue;
        }
        match parsed {
            Parse::Complete(request, used) => {
                consumed += used;
                shared
                    .arrivals
                    .lock()
                    .expect("arrivals")
                    .push((conn, request.clone()));
                shared.update(conn, |c| {
                    c.requests.push(request.clone());
                    c.events.push(Event::Request(index));
                });
                if early {
                    answered_head = false;
                    continue;
                }
                let steps = script(&request);
                if !play(&shared, conn, &mut write, &mut reader, steps).await {
                    return;
                }
            }
            Parse::Invalid(e) => {
                shared.update(conn, |c| c.error = Some(e));
                let refusal = http1::response(400, &[("Connection", "close")], b"");
                play(
                    &shared,
                    conn,
                    &mut write,
                    &mut reader,
                    vec![Step::Send(refusal), Step::Close],
                )
                .await;
                return;
            }
            Parse::Partial if peer_closed => {
                reader.abort();
                return;
            }
            Parse::Partial => {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A request's head alone, once it is complete (the body may still be arriving).
fn request_head(buf: &[u8]) -> Option<Request> {
    let Parse::Complete(head, _) = http1::parse_head(buf, Mode::Strict) else {
        return None;
    };
    let mut parts = head.start.split(' ');
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    Some(Request {
        method,
        target,
        head,
        chunked: false,
        body: Vec::new(),
        trailers: Vec::new(),
    })
}

/// Plays the steps; false when the connection is over.
async fn play(
    shared: &Shared,
    conn: usize,
    write: &mut OwnedWriteHalf,
    reader: &mut tokio::task::JoinHandle<()>,
    steps: Vec<Step>,
) -> bool {
    shared.update(conn, |c| c.events.push(Event::ReplyStart));
    let last = steps.len().saturating_sub(1);
    let mut ended = false;
    for (i, step) in steps.into_iter().enumerate() {
        match step {
            Step::Send(bytes) => {
                // The reply's last byte is written after `ReplyEnd` is recorded: the
                // gateway cannot have the whole reply before then, so whatever it sends
                // earlier really was written into a reply still arriving.
                let split = if i == last {
                    bytes.len().saturating_sub(1)
                } else {
                    bytes.len()
                };
                let mut sent = write.write_all(&bytes[..split]).await;
                if i == last && sent.is_ok() {
                    shared.update(conn, |c| c.events.push(Event::ReplyEnd));
                    ended = true;
                    sent = write.write_all(&bytes[split..]).await;
                }
                if sent.is_err() {
                    if !ended {
                        shared.update(conn, |c| c.events.push(Event::ReplyEnd));
                    }
                    reader.abort();
                    return false;
                }
            }
            Step::Pause(d) => tokio::time::sleep(d).await,
            Step::Close => {
                shared.update(conn, |c| c.events.push(Event::ReplyEnd));
                let _ = write.shutdown().await;
                shared.update(conn, |c| {
                    c.write_closed = true;
                    c.events.push(Event::WriteClosed);
                });
                // Lingering close: what the peer still sends is read, then the socket goes.
                let _ = tokio::time::timeout(Duration::from_secs(1), &mut *reader).await;
                reader.abort();
                return false;
            }
        }
    }
    if !ended {
        shared.update(conn, |c| c.events.push(Event::ReplyEnd));
    }
    true
}
