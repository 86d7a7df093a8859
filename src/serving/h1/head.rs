//! Request and response heads, parsed in place: fields are ranges into the connection's
//! read buffer, so a head costs no allocation beyond a reused `Vec` of ranges.

use std::ops::Range;

use http::Method;

use crate::pipeline::Fields;

/// Fields beyond this count get 431, like a head over the size limit.
pub const MAX_FIELDS: usize = 128;

#[derive(Debug, Clone)]
pub struct Field {
    pub name: Range<usize>,
    pub value: Range<usize>,
}

/// Fields of a parsed head, as ranges into `bytes`.
pub struct FieldsView<'a> {
    pub bytes: &'a [u8],
    pub fields: &'a [Field],
}

impl<'a> FieldsView<'a> {
    /// Names and values as bytes: httparse admits only token bytes (ASCII) in names.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + '_ {
        let bytes = self.bytes;
        self.fields
            .iter()
            .map(move |f| (&bytes[f.name.clone()], &bytes[f.value.clone()]))
    }

    /// Every value of `name` (case-insensitive).
    pub fn values<'n>(&'n self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + 'n {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    pub fn first(&self, name: &str) -> Option<&'a [u8]> {
        self.values(name).next()
    }

    /// Whether a comma-separated field (`Connection`) lists `token`.
    pub fn has_token(&self, name: &str, token: &[u8]) -> bool {
        self.values(name).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
        })
    }
}

impl Fields for FieldsView<'_> {
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.iter()
    }
}

/// A parsed request head; its fields are in the `Vec<Field>` given to the parser.
pub struct RequestHead {
    pub method: Method,
    pub target: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Bytes of the head, final empty line included.
    pub len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    Malformed,
    TooManyFields,
}

fn offset_in(base: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    start..start + part.len()
}

fn collect_fields(base: &[u8], headers: &[httparse::Header<'_>], into: &mut Vec<Field>) {
    into.clear();
    into.extend(headers.iter().map(|h| Field {
        name: offset_in(base, h.name.as_bytes()),
        value: offset_in(base, h.value),
    }));
}

/// Parses a request head at the start of `buf` (`None`: incomplete); its fields go to
/// `fields`, which is reused across requests.
pub fn parse_request(
    buf: &[u8],
    fields: &mut Vec<Field>,
) -> Result<Option<RequestHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let (Some(method), Some(target), Some(minor)) =
                (request.method, request.path, request.version)
            else {
                return Err(HeadError::Malformed);
            };
            let method = Method::from_bytes(method.as_bytes()).map_err(|_| HeadError::Malformed)?;
            let target = offset_in(buf, target.as_bytes());
            collect_fields(buf, request.headers, fields);
            Ok(Some(RequestHead {
                method,
                target,
                minor,
                len,
            }))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyFields),
        Err(_) => Err(HeadError::Malformed),
    }
}

/// A parsed response head; its fields are in the `Vec<Field>` given to the parser.
pub struct ResponseHead {
    pub status: u16,
    pub reason: Range<usize>,
    pub minor: u8,
    pub len: usize,
}

pub fn parse_response(
    buf: &[u8],
    fields: &mut Vec<Field>,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let (Some(status), Some(minor)) = (response.code, response.version) else {
                return Err(HeadError::Malformed);
            };
            let reason = match response.reason {
                Some(reason) if !reason.is_empty() => offset_in(buf, reason.as_bytes()),
                _ => 0..0,
            };
            collect_fields(buf, response.headers, fields);
            Ok(Some(ResponseHead {
                status,
                reason,
                minor,
                len,
            }))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyFields),
        Err(_) => Err(HeadError::Malformed),
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Response only: the body ends when the upstream closes.
    UntilClose,
}

/// A Content-Length that is not one decimal number (or a list of equal ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidLength;

/// Content-Length as one decimal number; a list of equal values counts as one.
pub fn content_length(view: &FieldsView<'_>) -> Result<Option<u64>, InvalidLength> {
    let mut found: Option<u64> = None;
    for value in view.values("content-length") {
        for part in value.split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(InvalidLength);
            }
            let n: u64 = std::str::from_utf8(part)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(InvalidLength)?;
            match found {
                Some(previous) if previous != n => return Err(InvalidLength),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// Whether the last transfer coding is `chunked`.
pub fn ends_chunked(view: &FieldsView<'_>) -> Option<bool> {
    let mut last: Option<&[u8]> = None;
    for value in view.values("transfer-encoding") {
        for coding in value.split(|&b| b == b',') {
            let coding = coding.trim_ascii();
            if !coding.is_empty() {
                last = Some(coding);
            }
        }
    }
    last.map(|c| c.eq_ignore_ascii_case(b"chunked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_fields_point_into_the_buffer() {
        let buf = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Two: 2\r\n\r\nrest";
        let mut fields = Vec::new();
        let Ok(Some(head)) = parse_request(buf, &mut fields) else {
            panic!("complete head expected");
        };
        assert_eq!(&buf[head.target.clone()], b"/a?b=1");
        assert_eq!(head.len, buf.len() - 4);
        let view = FieldsView {
            bytes: buf,
            fields: &fields,
        };
        assert_eq!(view.first("x-two"), Some(&b"2"[..]));
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nHo", &mut fields),
            Ok(None)
        ));
    }

    #[test]
    fn content_length_is_strict() {
        let check = |head: &[u8]| {
            let mut fields = Vec::new();
            let Ok(Some(_)) = parse_response(head, &mut fields) else {
                panic!("head");
            };
            content_length(&FieldsView {
                bytes: head,
                fields: &fields,
            })
        };
        assert_eq!(
            check(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            Ok(Some(5))
        );
        assert_eq!(
            check(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"),
            Ok(Some(5))
        );
        assert_eq!(
            check(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            Err(InvalidLength)
        );
        assert_eq!(
            check(b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"),
            Err(InvalidLength)
        );
        assert_eq!(
            check(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            Err(InvalidLength)
        );
    }
}
