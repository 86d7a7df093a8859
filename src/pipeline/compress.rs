//! Response compression, decided once in the core: which coding a request accepts
//! (`Accept-Encoding` with q-values, ties broken zstd, br, gzip), whether a response is
//! worth encoding (200, compressible type, no coding yet, at least `min_size`, no
//! `Range` asked), and the encoder both renderers push the body through. Each piece of
//! body is flushed through the encoder as it comes, so a streaming answer (SSE) reaches
//! the client as it is produced.

use std::io::Write;

use http::HeaderValue;

use crate::config::model::{Compress, Encoding};

use super::fields::Fields;

/// zstd and br levels chosen for nginx-like CPU per response (gzip at nginx's default 6
/// costs more than these for a similar ratio on JSON and HTML).
const GZIP_LEVEL: u32 = 6;
const BROTLI_QUALITY: u32 = 4;
const ZSTD_LEVEL: i32 = 3;

/// The coding the client prefers among `allowed`: the highest q-value above 0; ties go to
/// the order zstd, br, gzip. `*` stands for every coding not named.
pub fn choose(accept: Option<&[u8]>, allowed: &[Encoding]) -> Option<Encoding> {
    let accept = std::str::from_utf8(accept?).ok()?;
    let mut best: Option<(u16, Encoding)> = None;
    for encoding in [Encoding::Zstd, Encoding::Br, Encoding::Gzip] {
        if !allowed.contains(&encoding) {
            continue;
        }
        let mut named = None;
        let mut star = None;
        for item in accept.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .map_or(1000, parse_q);
            if token.eq_ignore_ascii_case(encoding.token()) {
                named = Some(q);
            } else if token == "*" {
                star = Some(q);
            }
        }
        let q = named.or(star).unwrap_or(0);
        if q > 0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, encoding));
        }
    }
    best.map(|(_, e)| e)
}

/// A q-value in thousandths; anything unreadable is 0 (not acceptable).
fn parse_q(text: &str) -> u16 {
    let text = text.trim();
    let value: f64 = text.parse().unwrap_or(0.0);
    if !(0.0..=1.0).contains(&value) {
        return 0;
    }
    (value * 1000.0).round() as u16
}

/// Types worth compressing: text, JSON, JavaScript, XML, SVG and wasm.
pub fn compressible(content_type: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(content_type) else {
        return false;
    };
    let mime = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime.starts_with("text/")
        || mime.ends_with("/json")
        || mime.ends_with("+json")
        || mime.ends_with("/xml")
        || mime.ends_with("+xml")
        || mime == "application/javascript"
        || mime == "application/wasm"
        || mime == "image/svg+xml"
}

/// How a response is encoded: the coding, and the `ETag` it gets (weakened).
#[derive(Debug, Clone)]
pub struct Plan {
    pub encoding: Encoding,
    pub etag: Option<HeaderValue>,
}

/// Whether an upstream response is encoded, given the coding the request chose.
pub fn plan<F: Fields>(
    chosen: Option<Encoding>,
    settings: &Compress,
    status: u16,
    fields: &F,
) -> Option<Plan> {
    let encoding = chosen?;
    if status != 200 || fields.first("content-encoding").is_some() {
        return None;
    }
    if !fields.first("content-type").is_some_and(compressible) {
        return None;
    }
    let length = fields
        .first("content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
    if length.is_some_and(|n| n < settings.min_size) {
        return None;
    }
    let etag = fields.first("etag").and_then(|tag| {
        let weak = if tag.starts_with(b"W/") {
            tag.to_vec()
        } else {
            [b"W/".as_slice(), tag].concat()
        };
        HeaderValue::from_bytes(&weak).ok()
    });
    Some(Plan { encoding, etag })
}

/// An encoder over one response body.
pub enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    pub fn new(encoding: Encoding) -> std::io::Result<Self> {
        Ok(match encoding {
            Encoding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(GZIP_LEVEL),
            )),
            Encoding::Br => Encoder::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                BROTLI_QUALITY,
                22,
            ))),
            Encoding::Zstd => {
                Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?)
            }
        })
    }

    /// Encodes `data` and flushes, returning every encoded byte ready so far.
    pub fn push(&mut self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let out = match self {
            Encoder::Gzip(e) => {
                e.write_all(data)?;
                e.flush()?;
                e.get_mut()
            }
            Encoder::Br(e) => {
                e.write_all(data)?;
                e.flush()?;
                e.get_mut()
            }
            Encoder::Zstd(e) => {
                e.write_all(data)?;
                e.flush()?;
                e.get_mut()
            }
        };
        Ok(std::mem::take(out))
    }

    /// Ends the stream, returning its last bytes.
    pub fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Br(e) => Ok(e.into_inner()),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    const ALL: [Encoding; 3] = [Encoding::Zstd, Encoding::Br, Encoding::Gzip];

    #[test]
    fn the_client_preference_wins_and_ties_go_to_zstd_then_br() {
        let pick = |a: &'static str| choose(Some(a.as_bytes()), &ALL);
        assert_eq!(pick("gzip, br, zstd"), Some(Encoding::Zstd));
        assert_eq!(pick("gzip, br"), Some(Encoding::Br));
        assert_eq!(pick("gzip;q=1, br;q=0.5"), Some(Encoding::Gzip));
        assert_eq!(pick("br;q=0, gzip;q=0.1"), Some(Encoding::Gzip));
        assert_eq!(pick("identity"), None);
        assert_eq!(pick("*;q=0.5, zstd;q=0"), Some(Encoding::Br));
        assert_eq!(pick(""), None);
        assert_eq!(choose(Some(b"br, zstd"), &[Encoding::Gzip]), None);
        assert_eq!(choose(None, &ALL), None);
    }

    #[test]
    fn every_codec_round_trips_byte_exact_in_pieces() {
        let body: Vec<u8> = (0..50_000u32)
            .flat_map(|i| format!("{{\"n\":{i}}},").into_bytes())
            .collect();
        for encoding in ALL {
            let mut encoder = Encoder::new(encoding).expect("encoder");
            let mut encoded = Vec::new();
            for piece in body.chunks(7_000) {
                encoded.extend(encoder.push(piece).expect("push"));
            }
            encoded.extend(encoder.finish().expect("finish"));
            assert!(encoded.len() < body.len() / 4, "{encoding:?}");
            let mut decoded = Vec::new();
            match encoding {
                Encoding::Gzip => {
                    flate2::read::GzDecoder::new(&encoded[..]).read_to_end(&mut decoded)
                }
                Encoding::Br => {
                    brotli::Decompressor::new(&encoded[..], 4096).read_to_end(&mut decoded)
                }
                Encoding::Zstd => zstd::stream::read::Decoder::new(&encoded[..])
                    .expect("decoder")
                    .read_to_end(&mut decoded),
            }
            .expect("decode");
            assert!(decoded == body, "{encoding:?} round trip");
        }
    }

    #[test]
    fn only_worthwhile_responses_are_planned() {
        let settings = Compress {
            algorithms: ALL.to_vec(),
            min_size: 1024,
        };
        let fields = |pairs: &[(&'static str, &'static str)]| {
            let mut map = http::HeaderMap::new();
            for (k, v) in pairs {
                map.append(*k, v.parse().expect("value"));
            }
            map
        };
        let json = fields(&[("content-type", "application/json"), ("etag", "\"abc\"")]);
        let planned = plan(Some(Encoding::Gzip), &settings, 200, &json).expect("plan");
        assert_eq!(planned.etag.expect("etag"), "W/\"abc\"");
        assert!(plan(Some(Encoding::Gzip), &settings, 206, &json).is_none());
        assert!(plan(None, &settings, 200, &json).is_none());
        let small = fields(&[("content-type", "text/html"), ("content-length", "10")]);
        assert!(plan(Some(Encoding::Br), &settings, 200, &small).is_none());
        let image = fields(&[("content-type", "image/png")]);
        assert!(plan(Some(Encoding::Br), &settings, 200, &image).is_none());
        let encoded = fields(&[("content-type", "text/html"), ("content-encoding", "gzip")]);
        assert!(plan(Some(Encoding::Br), &settings, 200, &encoded).is_none());
    }
}
