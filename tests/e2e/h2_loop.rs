//! edgegate's own HTTP/2 loop against the real binary: bodies both ways within flow
//! control, resets from either side, drain, concurrency limits, and the HTTP/2 attacks
//! of recent years. Each attack's bound is asserted on what the test itself counted
//! (requests that reached the upstream, bytes the upstream could write, bytes the
//! gateway accepted), never on wall time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::proxy_config;
use crate::support::raw_upstream::Step;
use crate::support::{h2c_client, Gateway, RawUpstream};

const WAIT: Duration = Duration::from_secs(10);

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

/// The byte at `offset` of every body the big upstream sends.
fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// An HTTP/1.1 upstream that answers every request with `size` bytes of [`pattern`]
/// (closing after `cut_after` bytes, when set), counting the body bytes the gateway
/// let it write and the connections it accepted.
struct BigUpstream {
    addr: SocketAddr,
    written: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl BigUpstream {
    async fn start(size: u64, cut_after: Option<u64>) -> BigUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let written = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (w, c) = (written.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_big(stream, size, cut_after, w.clone()));
            }
        });
        BigUpstream {
            addr,
            written,
            connections,
            task,
        }
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits until the upstream has written nothing more for a while (the gateway
    /// stopped reading) and returns what it wrote.
    async fn written_when_stalled(&self) -> u64 {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut last = self.written();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = self.written();
            if (now == last && now > 0) || tokio::time::Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }
}

impl Drop for BigUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_big(
    mut stream: TcpStream,
    size: u64,
    cut_after: Option<u64>,
    written: Arc<AtomicU64>,
) {
    let mut buf = Vec::new();
    loop {
        // One request head (GET: no body).
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
        buf.drain(..end);
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\ncontent-type: application/octet-stream\r\n\r\n");
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let mut offset = 0u64;
        let limit = cut_after.unwrap_or(size).min(size);
        while offset < limit {
            let n = (64 * 1024).min(limit - offset);
            let piece: Vec<u8> = (offset..offset + n).map(pattern).collect();
            if stream.write_all(&piece).await.is_err() {
                return;
            }
            offset += n;
            written.fetch_add(n, Ordering::SeqCst);
        }
        if cut_after.is_some() {
            return;
        }
    }
}

/// A client speaking HTTP/2 frames by hand, for what well-behaved clients never send.
struct RawH2 {
    stream: TcpStream,
    buf: BytesMut,
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    fn error_code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().expect("code"))
    }
}

/// HPACK integer with a 7-bit prefix (string lengths, no Huffman).
fn hpack_len(out: &mut Vec<u8>, len: usize, first: u8) {
    if len < 127 {
        out.push(first | len as u8);
    } else {
        out.push(first | 127);
        let mut rest = len - 127;
        while rest >= 128 {
            out.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        out.push(rest as u8);
    }
}

/// A literal field with a new name; `indexed` adds it to the dynamic table.
fn literal(out: &mut Vec<u8>, name: &str, value: &[u8], indexed: bool) {
    out.push(if indexed { 0x40 } else { 0x00 });
    hpack_len(out, name.len(), 0);
    out.extend_from_slice(name.as_bytes());
    hpack_len(out, value.len(), 0);
    out.extend_from_slice(value);
}

fn request_block(path: &str) -> Vec<u8> {
    let mut block = Vec::new();
    literal(&mut block, ":method", b"GET", false);
    literal(&mut block, ":scheme", b"http", false);
    literal(&mut block, ":path", path.as_bytes(), false);
    literal(&mut block, ":authority", b"app.test", false);
    block
}

fn frame_bytes(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

impl RawH2 {
    async fn connect(addr: SocketAddr, settings: &[(u16, u32)]) -> RawH2 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut payload = Vec::new();
        for (id, value) in settings {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame_bytes(SETTINGS, 0, 0, &payload));
        stream.write_all(&hello).await.expect("preface");
        RawH2 {
            stream,
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next frame, or `None` at EOF, reset or after `WAIT`.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let kind = self.buf[3];
                    let flags = self.buf[4];
                    let stream =
                        u32::from_be_bytes(self.buf[5..9].try_into().expect("id")) & 0x7fff_ffff;
                    let payload = self.buf[9..9 + len].to_vec();
                    self.buf.advance(9 + len);
                    return Some(Frame {
                        kind,
                        flags,
                        stream,
                        payload,
                    });
                }
            }
            let read = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf)).await;
            if !matches!(read, Ok(Ok(n)) if n > 0) {
                return None;
            }
        }
    }

    /// Frames until one satisfies `done` (returned) or the connection ends (`None`).
    async fn until(&mut self, mut done: impl FnMut(&Frame) -> bool) -> Option<Frame> {
        while let Some(frame) = self.next().await {
            if done(&frame) {
                return Some(frame);
            }
        }
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_cross_both_ways_byte_exact() {
    const SIZE: u64 = 8 * 1024 * 1024;
    let big = BigUpstream::start(SIZE, None).await;
    let gw = Gateway::start(&proxy_config(&[big.addr], "", ""));
    let client = h2c_client();
    let body = client
        .get(gw.url("web", "/big"))
        .send()
        .await
        .expect("request")
        .bytes()
        .await
        .expect("whole body");
    assert_eq!(body.len() as u64, SIZE);
    assert!(
        body.iter()
            .enumerate()
            .all(|(i, b)| *b == pattern(i as u64)),
        "the body arrived altered"
    );
    drop(gw);

    // Uploads: with a declared length, and streamed without one (sent on as chunks).
    let upstream = RawUpstream::start_default().await;
    let gw = Gateway::start(&proxy_config(&[upstream.addr], "", ""));
    let upload: Vec<u8> = (0..SIZE).map(pattern).collect();
    let sized = client
        .post(gw.url("web", "/sized"))
        .body(upload.clone())
        .send()
        .await
        .expect("sized upload");
    assert_eq!(sized.status(), 200);
    // A body without a length, sent as DATA frames by the h2 crate's client.
    let tcp = TcpStream::connect(gw.addr("web")).await.expect("connect");
    let (mut sender, connection) = h2::client::handshake(tcp).await.expect("handshake");
    tokio::spawn(connection);
    let request = http::Request::post("http://app.test/streamed")
        .body(())
        .expect("request");
    let (response, mut body) = sender.send_request(request, false).expect("send");
    for piece in upload.chunks(100_000) {
        body.send_data(bytes::Bytes::copy_from_slice(piece), false)
            .expect("data");
    }
    body.send_data(bytes::Bytes::new(), true).expect("end");
    let streamed = response.await.expect("streamed upload");
    assert_eq!(streamed.status(), 200);
    upstream.assert_read_cleanly();
    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    for (_, request) in &requests {
        assert!(request.body == upload, "{} arrived altered", request.target);
    }
    assert!(!requests[0].1.chunked, "a declared length stays a length");
    assert!(
        requests[1].1.chunked,
        "a body without a length goes on chunked"
    );
}

/// A client that never opens its window: the gateway reads no more of the upstream's
/// answer than its buffers hold, instead of queueing the whole body for the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_bounds_what_the_gateway_buffers() {
    const SIZE: u64 = 256 * 1024 * 1024;
    let big = BigUpstream::start(SIZE, None).await;
    let gw = Gateway::start(&proxy_config(&[big.addr], "", ""));
    let mut client = RawH2::connect(gw.addr("web"), &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
    let request = frame_bytes(HEADERS, END_HEADERS | END_STREAM, 1, &request_block("/big"));
    client.send(&request).await.expect("request");
    let head = client.until(|f| f.kind == HEADERS && f.stream == 1).await;
    assert!(head.is_some(), "no response head");
    let written = big.written_when_stalled().await;
    // Socket buffers on both sides plus the gateway's own: megabytes, not the body.
    assert!(
        written < 32 * 1024 * 1024,
        "the gateway took {written} bytes of a body its client never read"
    );
}

/// A client that resets a stream mid-body: the upstream connection, which still has
/// body bytes in flight, is closed rather than handed to the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reset_mid_body_never_reuses_the_upstream_connection() {
    const SIZE: u64 = 8 * 1024 * 1024;
    let big = BigUpstream::start(SIZE, None).await;
    let gw = Gateway::start(&proxy_config(&[big.addr], "", ""));
    let mut client = RawH2::connect(gw.addr("web"), &[]).await;
    let request = frame_bytes(HEADERS, END_HEADERS | END_STREAM, 1, &request_block("/big"));
    client.send(&request).await.expect("request");
    let data = client.until(|f| f.kind == DATA && f.stream == 1).await;
    assert!(data.is_some(), "no body began");
    client
        .send(&frame_bytes(RST_STREAM, 0, 1, &CANCEL.to_be_bytes()))
        .await
        .expect("reset");
    // The next request, on a new client connection, gets a whole, clean body.
    let body = h2c_client()
        .get(gw.url("web", "/again"))
        .send()
        .await
        .expect("request")
        .bytes()
        .await
        .expect("body");
    assert_eq!(body.len() as u64, SIZE);
    assert!(body
        .iter()
        .enumerate()
        .all(|(i, b)| *b == pattern(i as u64)));
    assert_eq!(
        big.connections(),
        2,
        "the reset exchange's connection was reused"
    );
}

/// An upstream that dies mid-body: the client's stream is reset, never ended cleanly as
/// if the body were whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_dying_mid_body_resets_the_stream() {
    let big = BigUpstream::start(8 * 1024 * 1024, Some(1024 * 1024)).await;
    let gw = Gateway::start(&proxy_config(&[big.addr], "", ""));
    let response = h2c_client()
        .get(gw.url("web", "/cut"))
        .send()
        .await
        .expect("response head");
    assert_eq!(response.status(), 200);
    let body = response.bytes().await;
    assert!(
        body.is_err(),
        "a cut body ended cleanly: {:?}",
        body.map(|b| b.len())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams_on_one_connection_are_all_answered() {
    let upstream = RawUpstream::start_default().await;
    let gw = Gateway::start(&proxy_config(&[upstream.addr], "", ""));
    let client = h2c_client();
    let requests = (0..100).map(|i| {
        let client = client.clone();
        let url = gw.url("web", &format!("/s/{i}"));
        async move {
            let response = client.get(url).send().await.expect("request");
            (response.status(), response.text().await.expect("body"))
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    for (i, (status, text)) in answers.iter().enumerate() {
        assert_eq!(*status, 200);
        assert_eq!(text, &format!("GET /s/{i} 0"));
    }
}

/// Streams past SETTINGS_MAX_CONCURRENT_STREAMS are refused (RST_STREAM
/// REFUSED_STREAM), and never reach the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_concurrency_limit_are_refused() {
    let upstream = RawUpstream::start(|r| {
        vec![
            Step::Pause(Duration::from_secs(2)),
            Step::Send(crate::support::raw_upstream::ok_for(r)),
        ]
    })
    .await;
    let gw = Gateway::start(&proxy_config(&[upstream.addr], "", ""));
    let mut client = RawH2::connect(gw.addr("web"), &[]).await;
    // Wait for the gateway's SETTINGS (its limit) before opening streams.
    client
        .until(|f| f.kind == SETTINGS && f.flags == 0)
        .await
        .expect("settings");
    client
        .send(&frame_bytes(SETTINGS, 1, 0, &[]))
        .await
        .expect("ack");
    let mut burst = Vec::new();
    for i in 0..200u32 {
        burst.extend(frame_bytes(
            HEADERS,
            END_HEADERS | END_STREAM,
            2 * i + 1,
            &request_block("/slow"),
        ));
    }
    client.send(&burst).await.expect("burst");
    let mut refused = 0;
    let mut answered = 0;
    while refused + answered < 200 {
        let Some(frame) = client.next().await else {
            break;
        };
        match frame.kind {
            RST_STREAM if frame.error_code() == REFUSED_STREAM => refused += 1,
            HEADERS => answered += 1,
            _ => {}
        }
    }
    assert!(answered <= 128, "{answered} streams served at once");
    assert_eq!(
        refused + answered,
        200,
        "refused {refused}, answered {answered}"
    );
    assert!(refused >= 72, "only {refused} streams refused");
    assert!(upstream.requests().len() <= 128);
}

/// Rapid reset (CVE-2023-44487): streams opened and reset at once, thousands of them.
/// The gateway stops the connection with ENHANCE_YOUR_CALM long before the upstream has
/// seen a request per stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_ends_the_connection_before_the_upstream_pays_for_it() {
    const STREAMS: u32 = 5000;
    let upstream = RawUpstream::start(|r| {
        vec![
            Step::Pause(Duration::from_millis(200)),
            Step::Send(crate::support::raw_upstream::ok_for(r)),
        ]
    })
    .await;
    let gw = Gateway::start(&proxy_config(&[upstream.addr], "", ""));
    let mut client = RawH2::connect(gw.addr("web"), &[]).await;
    let block = request_block("/reset");
    let mut sent = 0u32;
    'send: for batch in 0..(STREAMS / 100) {
        let mut bytes = Vec::new();
        for i in 0..100 {
            let id = 2 * (batch * 100 + i) + 1;
            bytes.extend(frame_bytes(HEADERS, END_HEADERS | END_STREAM, id, &block));
            bytes.extend(frame_bytes(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
        }
        if client.send(&bytes).await.is_err() {
            break 'send;
        }
        sent += 100;
    }
    let goaway = client.until(|f| f.kind == GOAWAY).await;
    let goaway = goaway.expect("the connection ended without GOAWAY");
    assert_eq!(goaway.error_code(), ENHANCE_YOUR_CALM);
    let reached = upstream.requests().len();
    assert!(
        reached < 1000,
        "{reached} of {sent} reset streams reached the upstream"
    );
    // The gateway serves other clients as before.
    let ok = h2c_client()
        .get(gw.url("web", "/after"))
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), 200);
}

/// CONTINUATION flood (CVE-2024-27316 class): a header block that never ends. The
/// gateway stops reading it at its header size limit and ends the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off() {
    const FLOOD: usize = 64 * 1024 * 1024;
    let upstream = RawUpstream::start_default().await;
    let gw = Gateway::start(&proxy_config(&[upstream.addr], "", ""));
    let client = RawH2::connect(gw.addr("web"), &[]).await;
    let RawH2 { stream, .. } = client;
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut accepted = 0usize;
        let opening = frame_bytes(HEADERS, 0, 1, &request_block("/flood"));
        if write.write_all(&opening).await.is_err() {
            return accepted;
        }
        let mut fragment = Vec::new();
        let mut n = 0;
        while fragment.len() < 16 * 1024 - 64 {
            literal(&mut fragment, &format!("x-fill-{n}"), &[b'a'; 100], false);
            n += 1;
        }
        let continuation = frame_bytes(CONTINUATION, 0, 1, &fragment);
        while accepted < FLOOD {
            if write.write_all(&continuation).await.is_err() {
                break;
            }
            accepted += continuation.len();
        }
        accepted
    });
    // The gateway ends the connection (GOAWAY, then close) while the flood is still
    // being written.
    let mut sink = vec![0u8; 65536];
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match read.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection stayed open under the flood");
    let accepted = writer.await.expect("writer");
    assert!(
        accepted < FLOOD / 2,
        "the gateway took {accepted} bytes of an endless header block"
    );
    assert!(upstream.requests().is_empty());
}

/// An HPACK bomb: one large field in the dynamic table, then a header block that refers
/// to it thousands of times (a few bytes that decode to megabytes). The request never
/// reaches the upstream, and the gateway keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpack_bomb_is_refused() {
    let upstream = RawUpstream::start_default().await;
    let gw = Gateway::start(&proxy_config(&[upstream.addr], "", ""));
    let mut client = RawH2::connect(gw.addr("web"), &[]).await;
    let mut first = request_block("/seed");
    literal(&mut first, "x-bomb", &[b'b'; 4000], true);
    client
        .send(&frame_bytes(HEADERS, END_HEADERS | END_STREAM, 1, &first))
        .await
        .expect("seed");
    let seeded = client.until(|f| f.kind == HEADERS && f.stream == 1).await;
    assert!(seeded.is_some(), "the seeding request was not answered");
    let mut bomb = request_block("/bomb");
    // Index 62: the newest dynamic table entry, 4 KB each time it is named.
    bomb.extend(std::iter::repeat_n(0xbe, 16_000));
    let _ = client
        .send(&frame_bytes(HEADERS, END_HEADERS | END_STREAM, 3, &bomb))
        .await;
    let answer = client.until(|f| f.stream == 3 || f.kind == GOAWAY).await;
    if let Some(frame) = &answer {
        if frame.kind == HEADERS {
            // An answer of the gateway's own (431), never the upstream's.
            assert_eq!(frame.flags & END_HEADERS, END_HEADERS);
        }
    }
    let targets: Vec<String> = upstream
        .requests()
        .into_iter()
        .map(|(_, r)| r.target)
        .collect();
    assert_eq!(
        targets,
        vec!["/seed".to_string()],
        "the bomb reached the upstream"
    );
    let ok = h2c_client()
        .get(gw.url("web", "/after"))
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), 200);
}

/// Drain: GOAWAY goes out, and a stream in flight still finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_lets_streams_in_flight_finish() {
    let upstream = RawUpstream::start(|r| {
        vec![
            // Longer than the drain's shutdown_delay, so GOAWAY goes out mid-stream.
            Step::Pause(Duration::from_millis(2500)),
            Step::Send(crate::support::raw_upstream::ok_for(r)),
        ]
    })
    .await;
    let gw = Gateway::start(&proxy_config(&[upstream.addr], "", ""));
    let mut client = RawH2::connect(gw.addr("web"), &[]).await;
    client
        .send(&frame_bytes(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &request_block("/slow"),
        ))
        .await
        .expect("request");
    upstream
        .wait_until("the request", WAIT, |conns| {
            conns.iter().any(|c| !c.requests.is_empty())
        })
        .await;
    gw.signal("TERM");
    let mut goaway = false;
    let mut status = None;
    let mut ended = false;
    while let Some(frame) = client.next().await {
        match frame.kind {
            GOAWAY => goaway = true,
            HEADERS if frame.stream == 1 => status = Some(frame.payload.clone()),
            DATA if frame.stream == 1 && frame.flags & END_STREAM != 0 => {
                ended = true;
                break;
            }
            _ => {}
        }
    }
    assert!(goaway, "no GOAWAY on drain");
    assert!(status.is_some(), "the stream in flight got no response");
    assert!(ended, "the stream in flight did not finish");
}

/// Rapid reset paced past the `h2` crate's own guard: each stream is reset only once
/// the upstream has its request. After a hundred such resets on a
/// connection that lets hardly any stream finish, the connection ends with
/// ENHANCE_YOUR_CALM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reset_once_their_upstream_work_began_end_the_connection() {
    const STREAMS: u32 = 400;
    let upstream = RawUpstream::start(|r| {
        vec![
            Step::Pause(Duration::from_secs(5)),
            Step::Send(crate::support::raw_upstream::ok_for(r)),
        ]
    })
    .await;
    let gw = Gateway::start(&proxy_config(&[upstream.addr], "", ""));
    let mut client = RawH2::connect(gw.addr("web"), &[]).await;
    let block = request_block("/reset");
    let mut reset = 0;
    for i in 0..STREAMS {
        let id = 2 * i + 1;
        let opened = frame_bytes(HEADERS, END_HEADERS | END_STREAM, id, &block);
        if client.send(&opened).await.is_err() {
            break;
        }
        let arrived = upstream
            .try_wait_until(Duration::from_secs(2), |conns| {
                conns.iter().map(|c| c.requests.len()).sum::<usize>() > i as usize
            })
            .await;
        if arrived.is_err() {
            break;
        }
        if client
            .send(&frame_bytes(RST_STREAM, 0, id, &CANCEL.to_be_bytes()))
            .await
            .is_err()
        {
            break;
        }
        reset += 1;
    }
    let goaway = client.until(|f| f.kind == GOAWAY).await;
    let goaway = goaway.expect("the connection ended without GOAWAY");
    assert_eq!(goaway.error_code(), ENHANCE_YOUR_CALM);
    assert!(
        reset < STREAMS,
        "all {reset} resets were taken without the connection ending"
    );
    let reached = upstream.requests().len();
    assert!(
        reached <= 150,
        "{reached} reset streams reached the upstream"
    );
}
