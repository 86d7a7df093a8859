//! A strict RFC 9112 section 7.1 chunked decoder.
//!
//! It exists because the readers either side of a proxy must agree on where a body ends:
//! a chunk line that one parser reads leniently (a bare LF, a size with leading spaces, an
//! extension with control bytes, a size that overflows) and another reads strictly is how
//! a second, hidden request gets smuggled to the upstream. Every such input is an error
//! here, and what is forwarded is re-framed from the decoded data (extensions dropped,
//! sizes rewritten), so the upstream can only ever read the body the client sent.

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// A size line that is not 1-16 hex digits, optionally followed by `;` extensions.
    InvalidSize,
    /// More hex digits than fit in a u64.
    SizeOverflow,
    /// A byte outside `tchar`, quoted-string and whitespace in a chunk extension.
    InvalidExtension,
    /// A line end that is not CRLF (a bare LF or CR), or data not followed by CRLF.
    InvalidLineEnd,
    /// A trailer line that is not a field (`name: value`).
    InvalidTrailer,
    /// The trailer section is larger than [`MAX_TRAILERS`].
    TrailersTooLarge,
}

impl ChunkError {
    pub fn reason(self) -> &'static str {
        match self {
            ChunkError::InvalidSize => "invalid chunk size",
            ChunkError::SizeOverflow => "chunk size too large",
            ChunkError::InvalidExtension => "invalid chunk extension",
            ChunkError::InvalidLineEnd => "chunk line not ended by CRLF",
            ChunkError::InvalidTrailer => "invalid trailer field",
            ChunkError::TrailersTooLarge => "trailer section too large",
        }
    }
}

/// Trailer sections larger than this are refused (nginx keeps them within its header
/// buffers too).
pub const MAX_TRAILERS: usize = 16 * 1024;

/// Extension bytes also bounded, so a client cannot make a size line endless.
const MAX_SIZE_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a size line (`digits` so far).
    Size {
        digits: u8,
    },
    /// After the size: extensions until CR, read by their grammar
    /// (`*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`).
    Extension(Ext),
    /// Saw the CR of a size line; LF must follow.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Data ended; CR then LF must follow.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerLineStart,
    /// Inside a trailer line.
    TrailerLine,
    /// Saw the CR ending a trailer line.
    TrailerLf {
        empty: bool,
    },
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    /// Whitespace after the size: only `;` may follow.
    BeforeSemicolon,
    /// After `;`: whitespace, then a name.
    Start,
    Name,
    AfterName,
    ValueStart,
    Token,
    Quoted,
    Escaped,
    AfterValue,
}

/// What one step over the input produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// `len` bytes of body data start at `offset` into the input given.
    Data { offset: usize, len: usize },
    /// One complete trailer line (without its CRLF) starts at `offset`.
    Trailer { offset: usize, len: usize },
    /// The body is complete; `consumed` bytes of the input belonged to it.
    End,
}

#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    remaining: u64,
    line_len: usize,
    trailer_bytes: usize,
    /// `trailer_bytes` at the end of the last complete trailer line: a partial line is
    /// counted again from its start when it is offered again.
    committed_trailer_bytes: usize,
    /// Start of the trailer line being read, relative to the current input.
    line_start: usize,
    saw_colon: bool,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self {
            state: State::Size { digits: 0 },
            size: 0,
            remaining: 0,
            line_len: 0,
            trailer_bytes: 0,
            committed_trailer_bytes: 0,
            line_start: 0,
            saw_colon: false,
        }
    }

    /// Whether a trailer line is partly read: the caller must keep the unconsumed input
    /// from its start, since [`Event::Trailer`] points into the input.
    fn in_trailer_line(&self) -> bool {
        matches!(
            self.state,
            State::TrailerLine | State::TrailerLf { empty: false }
        )
    }

    /// Advances over `input` until an event or the end of the input. Returns the event
    /// (if any) and how many bytes of `input` were consumed. Data events are returned as
    /// soon as any data byte is available, so bodies stream without buffering. A partly
    /// read trailer line is not consumed (returned bytes stop at its start), so the caller
    /// keeps it and offers it again with more input.
    pub fn step(&mut self, input: &[u8]) -> Result<(Option<Event>, usize), ChunkError> {
        let mut i = 0;
        if self.in_trailer_line() {
            // Resume the trailer line from its start (the caller kept it).
            self.state = State::TrailerLineStart;
        }
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size { digits } => {
                    if let Some(v) = hex_value(b) {
                        if digits >= 16 || (digits > 0 && self.size >> 60 != 0) {
                            return Err(ChunkError::SizeOverflow);
                        }
                        self.size = (self.size << 4) | v as u64;
                        self.state = State::Size { digits: digits + 1 };
                        self.line_len += 1;
                    } else if digits == 0 {
                        return Err(ChunkError::InvalidSize);
                    } else if b == b';' {
                        self.state = State::Extension(Ext::Start);
                        self.line_len += 1;
                    } else if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b' ' || b == b'\t' {
                        self.state = State::Extension(Ext::BeforeSemicolon);
                        self.line_len += 1;
                    } else {
                        return Err(if b == b'\n' {
                            ChunkError::InvalidLineEnd
                        } else {
                            ChunkError::InvalidSize
                        });
                    }
                }
                State::Extension(ext) => {
                    self.line_len += 1;
                    if self.line_len > MAX_SIZE_LINE {
                        return Err(ChunkError::InvalidExtension);
                    }
                    if b == b'\n' || (b == b'\r' && matches!(ext, Ext::Quoted | Ext::Escaped)) {
                        return Err(ChunkError::InvalidLineEnd);
                    }
                    let whitespace = b == b' ' || b == b'\t';
                    let next = match ext {
                        Ext::BeforeSemicolon if whitespace => ext,
                        Ext::BeforeSemicolon if b == b';' => Ext::Start,
                        Ext::Start if whitespace => ext,
                        Ext::Start if is_tchar(b) => Ext::Name,
                        Ext::Name if is_tchar(b) => ext,
                        Ext::Name | Ext::AfterName if whitespace => Ext::AfterName,
                        Ext::Name | Ext::AfterName if b == b'=' => Ext::ValueStart,
                        Ext::Name | Ext::AfterName | Ext::Token | Ext::AfterValue if b == b';' => {
                            Ext::Start
                        }
                        Ext::ValueStart if whitespace => ext,
                        Ext::ValueStart if b == b'"' => Ext::Quoted,
                        Ext::ValueStart if is_tchar(b) => Ext::Token,
                        Ext::Token if is_tchar(b) => ext,
                        Ext::Token | Ext::AfterValue if whitespace => Ext::AfterValue,
                        Ext::Quoted if b == b'"' => Ext::AfterValue,
                        Ext::Quoted if b == b'\\' => Ext::Escaped,
                        Ext::Quoted | Ext::Escaped if is_qdtext_or_escapable(b) => Ext::Quoted,
                        Ext::Name | Ext::Token | Ext::AfterValue if b == b'\r' => {
                            self.state = State::SizeLf;
                            i += 1;
                            continue;
                        }
                        _ => return Err(ChunkError::InvalidExtension),
                    };
                    self.state = State::Extension(next);
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::InvalidLineEnd);
                    }
                    i += 1;
                    self.line_len = 0;
                    if self.size == 0 {
                        self.state = State::TrailerLineStart;
                    } else {
                        self.remaining = self.size;
                        self.size = 0;
                        self.state = State::Data;
                    }
                    continue;
                }
                State::Data => {
                    let available = (input.len() - i) as u64;
                    let take = available.min(self.remaining) as usize;
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok((
                        Some(Event::Data {
                            offset: i,
                            len: take,
                        }),
                        i + take,
                    ));
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::InvalidLineEnd);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::InvalidLineEnd);
                    }
                    self.state = State::Size { digits: 0 };
                }
                State::TrailerLineStart => {
                    if b == b'\r' {
                        self.state = State::TrailerLf { empty: true };
                    } else if b == b'\n' {
                        return Err(ChunkError::InvalidLineEnd);
                    } else {
                        if b == b' ' || b == b'\t' || b == b':' || !is_tchar(b) {
                            // obs-fold or a nameless field.
                            return Err(ChunkError::InvalidTrailer);
                        }
                        self.line_start = i;
                        self.saw_colon = false;
                        self.state = State::TrailerLine;
                    }
                }
                State::TrailerLine => {
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > MAX_TRAILERS {
                        return Err(ChunkError::TrailersTooLarge);
                    }
                    if b == b'\r' {
                        if !self.saw_colon {
                            return Err(ChunkError::InvalidTrailer);
                        }
                        self.state = State::TrailerLf { empty: false };
                    } else if b == b'\n' {
                        return Err(ChunkError::InvalidLineEnd);
                    } else if !self.saw_colon {
                        if b == b':' {
                            self.saw_colon = true;
                        } else if !is_tchar(b) {
                            return Err(ChunkError::InvalidTrailer);
                        }
                    } else if (b < 0x20 && b != b'\t') || b == 0x7f {
                        return Err(ChunkError::InvalidTrailer);
                    }
                }
                State::TrailerLf { empty } => {
                    if b != b'\n' {
                        return Err(ChunkError::InvalidLineEnd);
                    }
                    i += 1;
                    if empty {
                        self.state = State::Done;
                        return Ok((Some(Event::End), i));
                    }
                    self.state = State::TrailerLineStart;
                    self.committed_trailer_bytes = self.trailer_bytes;
                    let start = self.line_start;
                    // The line without its CRLF.
                    return Ok((
                        Some(Event::Trailer {
                            offset: start,
                            len: i - 2 - start,
                        }),
                        i,
                    ));
                }
                State::Done => return Ok((Some(Event::End), i)),
            }
            i += 1;
        }
        if self.in_trailer_line() {
            // Keep the partial line: consumed stops at its start.
            self.trailer_bytes = self.committed_trailer_bytes;
            return Ok((None, self.line_start));
        }
        Ok((None, i))
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 9110 `tchar`.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// `qdtext` or a byte a quoted-pair may escape: HTAB, SP, visible ASCII, obs-text.
fn is_qdtext_or_escapable(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a whole body fed in pieces of `piece` bytes: (data, trailers, bytes left
    /// after the body). Input that ends early is reported as `InvalidSize`.
    fn decode(input: &[u8], piece: usize) -> Result<(Vec<u8>, Vec<String>, usize), ChunkError> {
        let mut decoder = ChunkedDecoder::new();
        let (mut data, mut trailers, mut pending, mut fed) =
            (Vec::new(), Vec::new(), Vec::new(), 0);
        loop {
            let (event, consumed) = decoder.step(&pending)?;
            match event {
                Some(Event::Data { offset, len }) => {
                    data.extend_from_slice(&pending[offset..offset + len])
                }
                Some(Event::Trailer { offset, len }) => trailers
                    .push(String::from_utf8_lossy(&pending[offset..offset + len]).into_owned()),
                Some(Event::End) => {
                    return Ok((data, trailers, pending.len() - consumed + input.len() - fed))
                }
                None => {
                    if fed == input.len() {
                        return Err(ChunkError::InvalidSize);
                    }
                    pending.drain(..consumed);
                    let end = (fed + piece).min(input.len());
                    pending.extend_from_slice(&input[fed..end]);
                    fed = end;
                    continue;
                }
            }
            pending.drain(..consumed);
        }
    }

    #[test]
    fn decodes_in_any_split() {
        let body =
            b"5\r\nhello\r\n6;name=\"v a\\\"l\"\r\n world\r\n0\r\nx-sum: 1\r\nx-b: two\r\n\r\nGET";
        for piece in [1, 2, 3, 7, 100] {
            let (data, trailers, left) = decode(body, piece).expect("valid");
            assert_eq!(data, b"hello world", "piece {piece}");
            assert_eq!(trailers, vec!["x-sum: 1", "x-b: two"], "piece {piece}");
            assert_eq!(left, 3, "the next request stays unread (piece {piece})");
        }
    }

    #[test]
    fn refuses_every_lenient_reading() {
        let cases: &[(&[u8], ChunkError)] = &[
            (b"5;a\nhello\r\n0\r\n\r\n", ChunkError::InvalidLineEnd),
            (b"5\nhello\r\n0\r\n\r\n", ChunkError::InvalidLineEnd),
            (b"5\r\nhello\n0\r\n\r\n", ChunkError::InvalidLineEnd),
            (b"5\r\nhelloXX0\r\n\r\n", ChunkError::InvalidLineEnd),
            (b"0\r\nx: y\n\r\n", ChunkError::InvalidLineEnd),
            (b"0\r\n\n", ChunkError::InvalidLineEnd),
            (b"ffffffffffffffffff1\r\n", ChunkError::SizeOverflow),
            (b"10000000000000000\r\n", ChunkError::SizeOverflow),
            (b" 5\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (b"+5\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (b"0x5\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize),
            (
                b"5;a=\x01\r\nhello\r\n0\r\n\r\n",
                ChunkError::InvalidExtension,
            ),
            (
                b"5;a=\"\x00\"\r\nhello\r\n0\r\n\r\n",
                ChunkError::InvalidExtension,
            ),
            (b"0\r\n folded\r\n\r\n", ChunkError::InvalidTrailer),
            (b"0\r\nno-colon\r\n\r\n", ChunkError::InvalidTrailer),
            (b"5\rhello\r\n0\r\n\r\n", ChunkError::InvalidLineEnd),
        ];
        for (input, expected) in cases {
            for piece in [1, 64] {
                assert_eq!(
                    decode(input, piece).map(|(d, _, _)| d),
                    Err(*expected),
                    "{:?} in pieces of {piece}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn largest_size_that_fits_is_accepted_as_a_size() {
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(
            decoder.step(b"fffffffffffffff\r\n").map(|(e, _)| e),
            Ok(None)
        );
    }
}
