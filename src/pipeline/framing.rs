//! Strict HTTP/1 request framing, checked on the raw request head before
//! anything is forwarded. pingora 0.9 accepts some ambiguous framings (both
//! Content-Length and Transfer-Encoding, a signed Content-Length); edgegate refuses them,
//! as nginx does, so no upstream can read a request boundary differently than we do.

/// Requests whose head is larger than this get 431, as nginx's large header buffers do.
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

const KNOWN_CODINGS: &[&str] = &[
    "chunked",
    "gzip",
    "x-gzip",
    "deflate",
    "compress",
    "x-compress",
    "identity",
];

pub fn check_request_head(raw: &[u8]) -> Result<(), Refusal> {
    if raw.len() > MAX_REQUEST_HEAD {
        return Err(Refusal {
            status: 431,
            reason: "request header fields too large",
        });
    }
    let mut content_length: Option<&[u8]> = None;
    let mut codings: Vec<String> = Vec::new();
    let mut saw_transfer_encoding = false;
    // Skip the request line; header lines may end in CRLF or a bare LF.
    for line in lines(raw).skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            for part in value.split(|&b| b == b',') {
                let part = trim(part);
                if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                    return Err(Refusal {
                        status: 400,
                        reason: "invalid Content-Length",
                    });
                }
                match content_length {
                    Some(previous) if strip_zeros(previous) != strip_zeros(part) => {
                        return Err(Refusal {
                            status: 400,
                            reason: "differing Content-Length values",
                        })
                    }
                    _ => content_length = Some(part),
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            saw_transfer_encoding = true;
            for coding in value.split(|&b| b == b',') {
                let coding = trim(coding);
                // Parameters (`;q=`) do not change which coding it is.
                let coding = coding
                    .split(|&b| b == b';')
                    .next()
                    .map(trim)
                    .unwrap_or_default();
                if !coding.is_empty() {
                    codings.push(String::from_utf8_lossy(coding).to_ascii_lowercase());
                }
            }
        }
    }
    if saw_transfer_encoding {
        if content_length.is_some() {
            return Err(Refusal {
                status: 400,
                reason: "both Content-Length and Transfer-Encoding",
            });
        }
        if codings.iter().any(|c| !KNOWN_CODINGS.contains(&c.as_str())) {
            return Err(Refusal {
                status: 501,
                reason: "unknown transfer coding",
            });
        }
        if codings != ["chunked"] {
            return Err(Refusal {
                status: 400,
                reason: "transfer coding other than a single final chunked",
            });
        }
    }
    Ok(())
}

/// `raw.split(|&b| b == b'\n')`, with the line ends found by `memchr`: a head is mostly
/// long values (cookies, bearer tokens) this check never looks into, and a byte-at-a-time
/// search for the ends cost as much as the rest of the check.
fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', raw)
        .map(Some)
        .chain(std::iter::once(None))
        .map(move |end| {
            let end = end.unwrap_or(raw.len());
            let line = &raw[start..end];
            start = end + 1;
            line
        })
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

fn strip_zeros(digits: &[u8]) -> &[u8] {
    let start = digits
        .iter()
        .position(|&b| b != b'0')
        .unwrap_or(digits.len().saturating_sub(1));
    &digits[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_what_splitting_at_each_newline_gives() {
        for raw in [
            &b""[..],
            b"\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\nA: b\nC: d",
            b"\n\nx\n",
        ] {
            let expected: Vec<&[u8]> = raw.split(|&b| b == b'\n').collect();
            assert_eq!(lines(raw).collect::<Vec<_>>(), expected, "{raw:?}");
        }
    }

    fn check(head: &str) -> Result<(), u16> {
        check_request_head(head.as_bytes()).map_err(|r| r.status)
    }

    #[test]
    fn clean_framings_pass() {
        assert_eq!(
            check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
            Ok(())
        );
        assert_eq!(
            check("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(())
        );
        assert_eq!(
            check("POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n"),
            Ok(())
        );
    }

    #[test]
    fn ambiguous_framings_are_refused() {
        assert_eq!(
            check("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            check("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            check("POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            check("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            check("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            check("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Err(400)
        );
        assert_eq!(check("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"), Err(400));
        assert_eq!(
            check("POST / HTTP/1.1\r\nTransfer-Encoding: foo\r\n\r\n"),
            Err(501)
        );
    }

    #[test]
    fn oversized_heads_get_431() {
        let head = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000));
        assert_eq!(check(&head), Err(431));
    }
}
