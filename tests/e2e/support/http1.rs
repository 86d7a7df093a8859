//! A small HTTP/1.1 codec for raw-socket tests, strict by RFC 9112 unless told otherwise,
//! and a raw client that writes exact bytes and reads framed responses.
//!
//! The reader is the reference the gateway is judged against: a request or response is
//! read the way a strict RFC 9112 recipient reads it. [`Mode::Normalising`] also accepts
//! the inputs spec section 4 says have one safe reading (a bare LF ending a line, an
//! obs-fold in a field), read that one way.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How strictly line ends and fields are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// RFC 9112 grammar only: CRLF line ends, no obs-fold.
    Strict,
    /// Also a bare LF as a line end and an obs-fold (replaced by a space).
    Normalising,
}

/// The outcome of reading a message from the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse<T> {
    /// A whole message, and how many bytes it took.
    Complete(T, usize),
    /// Valid so far; more bytes are needed.
    Partial,
    /// Not valid HTTP/1.1, with the reason.
    Invalid(String),
}

pub type Fields = Vec<(String, Vec<u8>)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The request line or status line, without its line end.
    pub start: String,
    pub fields: Fields,
}

impl Head {
    /// Every value of a field, comma-separated list elements split and trimmed.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Whether a list field (`Connection`, `Transfer-Encoding`) has `token`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.list(name)
            .iter()
            .any(|t| t.eq_ignore_ascii_case(token))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub head: Head,
    pub chunked: bool,
    pub body: Vec<u8>,
    pub trailers: Fields,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub head: Head,
    pub chunked: bool,
    /// The body ran to the end of the connection (no length, not chunked).
    pub close_delimited: bool,
    pub body: Vec<u8>,
    pub trailers: Fields,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A response head and body with a Content-Length (no length for 1xx, 204 and 304).
pub fn response(status: u16, fields: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status)).into_bytes();
    for (name, value) in fields {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    let has_framing = fields.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    });
    if !has_framing && !matches!(status, 100..=199 | 204 | 304) {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// A chunked response with the given chunks and trailer fields.
pub fn chunked_response(
    status: u16,
    fields: &[(&str, &str)],
    chunks: &[&[u8]],
    trailers: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nTransfer-Encoding: chunked\r\n",
        reason(status)
    )
    .into_bytes();
    for (name, value) in fields {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&chunked_body(chunks, trailers));
    out
}

/// A chunked body: each chunk with its size line, the last chunk and the trailers.
pub fn chunked_body(chunks: &[&[u8]], trailers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in chunks.iter().filter(|c| !c.is_empty()) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        413 => "Content Too Large",
        _ => "Whatever",
    }
}

/// `len` bytes of a pattern that repeats rarely (251 is prime), so a lost, doubled or
/// shifted block shows.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i % 251) as u8).wrapping_add(seed))
        .collect()
}

/// Where two byte strings first differ, for assertion messages on large bodies.
pub fn first_difference(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!(
            "first difference at byte {i} (lengths {} and {})",
            a.len(),
            b.len()
        ),
        None if a.len() == b.len() => "equal".to_string(),
        None => format!(
            "one is a prefix of the other (lengths {} and {})",
            a.len(),
            b.len()
        ),
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A field value byte: VCHAR, obs-text, SP or HTAB.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// Finds the next line end at or after `from`: the index where the line's content ends
/// and the index after the terminator. `Ok(None)` when more bytes are needed.
fn line_end(buf: &[u8], from: usize, mode: Mode) -> Result<Option<(usize, usize)>, String> {
    let Some(lf) = buf[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| from + i)
    else {
        // A bare CR is never a line end, in either mode.
        if let Some(cr) = buf[from..].iter().position(|&b| b == b'\r') {
            if from + cr + 1 < buf.len() {
                return Err("bare CR".to_string());
            }
        }
        return Ok(None);
    };
    if lf > from && buf[lf - 1] == b'\r' {
        if buf[from..lf - 1].contains(&b'\r') {
            return Err("bare CR".to_string());
        }
        return Ok(Some((lf - 1, lf + 1)));
    }
    if buf[from..lf].contains(&b'\r') {
        return Err("bare CR".to_string());
    }
    match mode {
        Mode::Normalising => Ok(Some((lf, lf + 1))),
        Mode::Strict => Err(format!("bare LF at byte {lf}")),
    }
}

/// Reads field lines up to and including the empty line that ends them.
fn parse_fields(buf: &[u8], mut at: usize, mode: Mode) -> Parse<Fields> {
    let mut fields: Fields = Vec::new();
    loop {
        let (end, next) = match line_end(buf, at, mode) {
            Ok(Some(found)) => found,
            Ok(None) => return Parse::Partial,
            Err(e) => return Parse::Invalid(e),
        };
        let line = &buf[at..end];
        if line.is_empty() {
            return Parse::Complete(fields, next);
        }
        if is_ows(line[0]) {
            match (mode, fields.last_mut()) {
                (Mode::Normalising, Some((_, value))) => {
                    let folded = trim_ows(line);
                    if !folded.iter().all(|&b| is_field_byte(b)) {
                        return Parse::Invalid("invalid byte in folded line".to_string());
                    }
                    value.push(b' ');
                    value.extend_from_slice(folded);
                    at = next;
                    continue;
                }
                _ => return Parse::Invalid("obs-fold or leading whitespace".to_string()),
            }
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Parse::Invalid(format!(
                "field line without a colon: {:?}",
                String::from_utf8_lossy(line)
            ));
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Parse::Invalid(format!(
                "invalid field name {:?}",
                String::from_utf8_lossy(name)
            ));
        }
        let value = trim_ows(&line[colon + 1..]);
        if !value.iter().all(|&b| is_field_byte(b)) {
            return Parse::Invalid(format!(
                "invalid byte in the value of {}",
                String::from_utf8_lossy(name)
            ));
        }
        fields.push((String::from_utf8_lossy(name).into_owned(), value.to_vec()));
        at = next;
    }
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| !is_ows(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Reads a start line and the field lines after it.
pub fn parse_head(buf: &[u8], mode: Mode) -> Parse<Head> {
    // Like RFC 9112 section 2.2, empty lines before a request line are skipped.
    let mut at = 0;
    while buf[at..].starts_with(b"\r\n") {
        at += 2;
    }
    let (end, next) = match line_end(buf, at, mode) {
        Ok(Some(found)) => found,
        Ok(None) => return Parse::Partial,
        Err(e) => return Parse::Invalid(e),
    };
    let start = String::from_utf8_lossy(&buf[at..end]).into_owned();
    match parse_fields(buf, next, mode) {
        Parse::Complete(fields, used) => Parse::Complete(Head { start, fields }, used),
        Parse::Partial => Parse::Partial,
        Parse::Invalid(e) => Parse::Invalid(e),
    }
}

enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

/// Request framing by RFC 9112 section 6, refusing every ambiguous case (spec 4).
fn request_framing(head: &Head) -> Result<Framing, String> {
    let codings = head.list("transfer-encoding");
    let has_te = head
        .fields
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
    let lengths: Vec<&Vec<u8>> = head
        .fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v)
        .collect();
    if has_te && !lengths.is_empty() {
        return Err("both Content-Length and Transfer-Encoding".to_string());
    }
    if has_te {
        if codings.len() == 1 && codings[0].eq_ignore_ascii_case("chunked") {
            return Ok(Framing::Chunked);
        }
        return Err(format!(
            "transfer codings {codings:?} are not exactly chunked"
        ));
    }
    content_length(&lengths).map(|n| n.map_or(Framing::None, Framing::Length))
}

fn content_length(values: &[&Vec<u8>]) -> Result<Option<usize>, String> {
    let mut length: Option<usize> = None;
    for value in values {
        for part in value.split(|&b| b == b',') {
            let part = trim_ows(part);
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) || part.len() > 15 {
                return Err(format!(
                    "invalid Content-Length {:?}",
                    String::from_utf8_lossy(value)
                ));
            }
            let n: usize = String::from_utf8_lossy(part)
                .parse()
                .map_err(|e| format!("Content-Length: {e}"))?;
            if length.is_some_and(|l| l != n) {
                return Err("differing Content-Length values".to_string());
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// Reads one request from the start of `buf`.
pub fn parse_request(buf: &[u8], mode: Mode) -> Parse<Request> {
    let (head, head_len) = match parse_head(buf, mode) {
        Parse::Complete(h, n) => (h, n),
        Parse::Partial => return Parse::Partial,
        Parse::Invalid(e) => return Parse::Invalid(e),
    };
    let parts: Vec<&str> = head.start.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Parse::Invalid(format!("request line {:?}", head.start));
    };
    if method.is_empty()
        || !method.bytes().all(is_tchar)
        || target.is_empty()
        || !target.bytes().all(|b| (0x21..=0x7e).contains(&b))
        || !matches!(version, "HTTP/1.1" | "HTTP/1.0")
    {
        return Parse::Invalid(format!("request line {:?}", head.start));
    }
    let framing = match request_framing(&head) {
        Ok(f) => f,
        Err(e) => return Parse::Invalid(e),
    };
    let mut request = Request {
        method: method.to_string(),
        target: target.to_string(),
        head,
        chunked: false,
        body: Vec::new(),
        trailers: Vec::new(),
    };
    let rest = &buf[head_len..];
    match framing {
        Framing::None | Framing::UntilClose => Parse::Complete(request, head_len),
        Framing::Length(n) if rest.len() >= n => {
            request.body = rest[..n].to_vec();
            Parse::Complete(request, head_len + n)
        }
        Framing::Length(_) => Parse::Partial,
        Framing::Chunked => match decode_chunked(rest, mode) {
            Parse::Complete((body, trailers), used) => {
                request.chunked = true;
                request.body = body;
                request.trailers = trailers;
                Parse::Complete(request, head_len + used)
            }
            Parse::Partial => Parse::Partial,
            Parse::Invalid(e) => Parse::Invalid(e),
        },
    }
}

/// Reads every request in `buf` in turn: the requests, how many bytes they took, and
/// what stopped the reading (`None` when the buffer ended exactly after a request).
pub fn parse_requests(buf: &[u8], mode: Mode) -> (Vec<Request>, usize, Option<Parse<()>>) {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        match parse_request(&buf[at..], mode) {
            Parse::Complete(r, used) => {
                out.push(r);
                at += used;
            }
            Parse::Partial => return (out, at, Some(Parse::Partial)),
            Parse::Invalid(e) => return (out, at, Some(Parse::Invalid(e))),
        }
    }
    (out, at, None)
}

/// Reads a chunked body: chunk lines by RFC 9112 section 7.1 (extensions of tokens and
/// quoted-strings), data followed by a line end, trailer fields, the final empty line.
pub fn decode_chunked(buf: &[u8], mode: Mode) -> Parse<(Vec<u8>, Fields)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let (end, next) = match line_end(buf, at, mode) {
            Ok(Some(found)) => found,
            Ok(None) if buf.len() - at > 4096 => {
                return Parse::Invalid("chunk line longer than 4 KiB".to_string())
            }
            Ok(None) => return Parse::Partial,
            Err(e) => return Parse::Invalid(format!("chunk line: {e}")),
        };
        let size = match chunk_line(&buf[at..end]) {
            Ok(size) => size,
            Err(e) => return Parse::Invalid(e),
        };
        at = next;
        if size == 0 {
            return match parse_fields(buf, at, mode) {
                Parse::Complete(trailers, used) => Parse::Complete((body, trailers), used),
                Parse::Partial => Parse::Partial,
                Parse::Invalid(e) => Parse::Invalid(format!("trailer section: {e}")),
            };
        }
        if buf.len() - at < size {
            return Parse::Partial;
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size;
        match line_end(buf, at, mode) {
            Ok(Some((end, next))) if end == at => at = next,
            Ok(Some(_)) => return Parse::Invalid("chunk data not followed by a line end".into()),
            Ok(None) if buf.len() - at >= 2 || buf[at..].iter().any(|&b| b != b'\r') => {
                return Parse::Invalid("chunk data not followed by a line end".into())
            }
            Ok(None) => return Parse::Partial,
            Err(e) => return Parse::Invalid(format!("after chunk data: {e}")),
        }
    }
}

/// `chunk-size [ chunk-ext ]`, the line's content without its end.
fn chunk_line(line: &[u8]) -> Result<usize, String> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(format!(
            "chunk size missing in {:?}",
            String::from_utf8_lossy(line)
        ));
    }
    let significant = line[..digits]
        .iter()
        .skip_while(|&&b| b == b'0')
        .copied()
        .collect::<Vec<u8>>();
    if significant.len() > 15 {
        return Err("chunk size overflows".to_string());
    }
    let size = match std::str::from_utf8(&significant) {
        Ok("") => 0,
        Ok(hex) => usize::from_str_radix(hex, 16).map_err(|e| format!("chunk size: {e}"))?,
        Err(e) => return Err(format!("chunk size: {e}")),
    };
    chunk_extensions(&line[digits..])?;
    Ok(size)
}

/// `*( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )`.
fn chunk_extensions(mut rest: &[u8]) -> Result<(), String> {
    let bad = |rest: &[u8]| format!("chunk extension {:?}", String::from_utf8_lossy(rest));
    let skip_ws = |r: &mut &[u8]| {
        while r.first().is_some_and(|&b| is_ows(b)) {
            *r = &r[1..];
        }
    };
    let token = |r: &mut &[u8]| {
        let n = r.iter().take_while(|&&b| is_tchar(b)).count();
        *r = &r[n..];
        n
    };
    loop {
        skip_ws(&mut rest);
        if rest.is_empty() {
            return Ok(());
        }
        if rest[0] != b';' {
            return Err(bad(rest));
        }
        rest = &rest[1..];
        skip_ws(&mut rest);
        if token(&mut rest) == 0 {
            return Err(bad(rest));
        }
        let mut after = rest;
        skip_ws(&mut after);
        if after.first() != Some(&b'=') {
            continue;
        }
        rest = &after[1..];
        skip_ws(&mut rest);
        if rest.first() == Some(&b'"') {
            rest = &rest[1..];
            loop {
                match rest.first() {
                    Some(b'"') => {
                        rest = &rest[1..];
                        break;
                    }
                    Some(b'\\') if rest.get(1).is_some_and(|&b| is_field_byte(b)) => {
                        rest = &rest[2..]
                    }
                    Some(&b) if b != b'\\' && is_field_byte(b) => rest = &rest[1..],
                    _ => return Err(bad(rest)),
                }
            }
        } else if token(&mut rest) == 0 {
            return Err(bad(rest));
        }
    }
}

/// Reads one response from the start of `buf`. `head_request`: the request was HEAD;
/// `eof`: the connection has ended, so a close-delimited body is complete.
pub fn parse_response(buf: &[u8], head_request: bool, eof: bool) -> Parse<Response> {
    let (head, head_len) = match parse_head(buf, Mode::Strict) {
        Parse::Complete(h, n) => (h, n),
        Parse::Partial => return Parse::Partial,
        Parse::Invalid(e) => return Parse::Invalid(e),
    };
    let status = head
        .start
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| head.start.strip_prefix("HTTP/1.0 "))
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse::<u16>().ok());
    let Some(status) = status else {
        return Parse::Invalid(format!("status line {:?}", head.start));
    };
    let mut response = Response {
        status,
        head,
        chunked: false,
        close_delimited: false,
        body: Vec::new(),
        trailers: Vec::new(),
    };
    let rest = &buf[head_len..];
    let framing = if head_request || matches!(status, 100..=199 | 204 | 304) {
        Framing::None
    } else if response
        .head
        .fields
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
    {
        match response.head.list("transfer-encoding").last() {
            Some(last) if last.eq_ignore_ascii_case("chunked") => Framing::Chunked,
            _ => Framing::UntilClose,
        }
    } else {
        let lengths: Vec<&Vec<u8>> = response
            .head
            .fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v)
            .collect();
        match content_length(&lengths) {
            Ok(Some(n)) => Framing::Length(n),
            Ok(None) => Framing::UntilClose,
            Err(e) => return Parse::Invalid(e),
        }
    };
    match framing {
        Framing::None => Parse::Complete(response, head_len),
        Framing::Length(n) if rest.len() >= n => {
            response.body = rest[..n].to_vec();
            Parse::Complete(response, head_len + n)
        }
        Framing::Length(_) => Parse::Partial,
        Framing::Chunked => match decode_chunked(rest, Mode::Strict) {
            Parse::Complete((body, trailers), used) => {
                response.chunked = true;
                response.body = body;
                response.trailers = trailers;
                Parse::Complete(response, head_len + used)
            }
            Parse::Partial => Parse::Partial,
            Parse::Invalid(e) => Parse::Invalid(e),
        },
        Framing::UntilClose if eof => {
            response.close_delimited = true;
            response.body = rest.to_vec();
            Parse::Complete(response, buf.len())
        }
        Framing::UntilClose => Parse::Partial,
    }
}

/// A client on one TCP connection that writes exact bytes and reads responses one at a
/// time, each by its framing, so what follows a response stays in the buffer.
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the gateway");
        stream.set_nodelay(true).expect("nodelay");
        RawClient {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("write to the gateway");
    }

    /// Writes, and reports a failure (the gateway closed or reset) instead of panicking.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Bytes received but not yet taken by a response.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// The next response, waiting at most `wait`: a 1xx comes back as a response of its
    /// own. Panics with what arrived if no valid response does.
    pub async fn response(&mut self, head_request: bool, wait: Duration) -> Response {
        match self.try_response(head_request, wait).await {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    pub async fn try_response(
        &mut self,
        head_request: bool,
        wait: Duration,
    ) -> Result<Response, String> {
        let deadline = Instant::now() + wait;
        loop {
            match parse_response(&self.buf, head_request, self.eof) {
                Parse::Complete(r, used) => {
                    self.buf.drain(..used);
                    return Ok(r);
                }
                Parse::Invalid(e) => {
                    return Err(format!(
                        "invalid response from the gateway ({e}): {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ))
                }
                Parse::Partial if self.eof => {
                    return Err(format!(
                        "the gateway closed the connection before a whole response; got {:?}",
                        truncated(&self.buf)
                    ))
                }
                Parse::Partial => {}
            }
            if !self.read_some(deadline).await {
                return Err(format!(
                    "no whole response within {wait:?}; got {:?}",
                    truncated(&self.buf)
                ));
            }
        }
    }

    /// Reads once, until `deadline`: false on timeout. EOF and a reset set `eof`.
    async fn read_some(&mut self, deadline: Instant) -> bool {
        let mut chunk = vec![0u8; 256 * 1024];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Err(_) => false,
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.eof = true;
                true
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Reads up to `n` more bytes into the buffer (for a test that stops mid-response).
    pub async fn read_at_least(&mut self, n: usize, wait: Duration) -> usize {
        let deadline = Instant::now() + wait;
        while self.buf.len() < n && !self.eof {
            if !self.read_some(deadline).await {
                break;
            }
        }
        self.buf.len()
    }

    /// Waits until the gateway ends the connection: `Ok` with the bytes that came before
    /// the end, `Err` with them if it is still open after `wait`.
    pub async fn closed_within(&mut self, wait: Duration) -> Result<Vec<u8>, Vec<u8>> {
        let deadline = Instant::now() + wait;
        while !self.eof {
            if !self.read_some(deadline).await {
                return Err(std::mem::take(&mut self.buf));
            }
        }
        Ok(std::mem::take(&mut self.buf))
    }

    /// Whatever arrives within `wait` (the connection may stay open).
    pub async fn drain_for(&mut self, wait: Duration) -> Vec<u8> {
        let deadline = Instant::now() + wait;
        while !self.eof && self.read_some(deadline).await {}
        std::mem::take(&mut self.buf)
    }
}

/// At most the first 2 KiB, for messages.
pub fn truncated(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(2048)]).into_owned();
    if bytes.len() > 2048 {
        format!("{text}… ({} bytes)", bytes.len())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(raw: &str, mode: Mode) -> Result<Vec<u8>, String> {
        match decode_chunked(raw.as_bytes(), mode) {
            Parse::Complete((b, _), used) if used == raw.len() => Ok(b),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn chunked_grammar() {
        assert_eq!(
            body("5\r\nhello\r\n0\r\n\r\n", Mode::Strict),
            Ok(b"hello".to_vec())
        );
        assert_eq!(
            body(
                "5;a=b;c=\"d\\\"e\" ; f\r\nhello\r\n0\r\nX: y\r\n\r\n",
                Mode::Strict
            ),
            Ok(b"hello".to_vec())
        );
        assert_eq!(
            body("0000000000000000005\r\nhello\r\n0\r\n\r\n", Mode::Strict),
            Ok(b"hello".to_vec())
        );
        for bad in [
            "5\nhello\r\n0\r\n\r\n",
            "5;a\nhello\r\n0\r\n\r\n",
            " 5\r\nhello\r\n0\r\n\r\n",
            "+5\r\nhello\r\n0\r\n\r\n",
            "0x5\r\nhello\r\n0\r\n\r\n",
            "5;a=\x01\r\nhello\r\n0\r\n\r\n",
            "3\r\nhello\r\n0\r\n\r\n",
            "ffffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
            "5\r\nhello\r\n0\r\nX: y\n\r\n",
        ] {
            assert!(body(bad, Mode::Strict).is_err(), "{bad:?}");
        }
        assert_eq!(
            body("5\nhello\n0\n\n", Mode::Normalising),
            Ok(b"hello".to_vec())
        );
        assert_eq!(
            body("5;a\nhello\r\n0\r\n\r\n", Mode::Normalising),
            Ok(b"hello".to_vec())
        );
        assert_eq!(
            decode_chunked(b"5\r\nhel", Mode::Strict),
            Parse::Partial,
            "a partial chunk"
        );
    }

    #[test]
    fn request_framing_is_strict() {
        let ok = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
        assert!(
            matches!(parse_request(ok.as_bytes(), Mode::Strict), Parse::Complete(r, n) if r.body == b"hello" && n == ok.len())
        );
        for bad in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
        ] {
            assert!(
                matches!(
                    parse_request(bad.as_bytes(), Mode::Strict),
                    Parse::Invalid(_)
                ),
                "{bad:?}"
            );
        }
    }
}
