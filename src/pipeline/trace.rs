//! Request identity and W3C trace context, for the access log and span export.
//!
//! Ids are kept as integers: formatting them happens only where a header, a log line or a
//! span needs them, so a request allocates nothing for its trace context.

use std::fmt;

/// A validated `traceparent`, or a fresh one when the request had none usable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    /// The gateway's own span, sent upstream as the parent.
    pub span_id: u64,
    /// The parent id the client sent; 0 when the gateway started the trace.
    pub parent_id: u64,
    pub flags: u8,
}

/// The `sampled` bit of the trace flags.
const SAMPLED: u8 = 0x01;

impl TraceContext {
    /// Continues the caller's trace when `traceparent` is valid, else starts a new one.
    /// `sample_ratio` is the exporter's share of new traces to record; without an
    /// exporter (`None`) a new trace is marked sampled, leaving the choice to the services
    /// behind the gateway as before export existed.
    pub fn continue_or_start(traceparent: Option<&[u8]>, sample_ratio: Option<f64>) -> Self {
        let span_id = nonzero_u64();
        match traceparent.and_then(parse) {
            Some((trace_id, parent_id, flags)) => Self {
                trace_id,
                span_id,
                parent_id,
                flags,
            },
            None => {
                let trace_id = nonzero_u128();
                let sampled = sample_ratio.is_none_or(|ratio| ratio_says_sample(trace_id, ratio));
                Self {
                    trace_id,
                    span_id,
                    parent_id: 0,
                    flags: if sampled { SAMPLED } else { 0 },
                }
            }
        }
    }

    /// Whether the trace is recorded: the flags the upstream receives say the same.
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The trace id as the access log and headers write it (32 lowercase hex digits).
    #[cfg(test)]
    fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The `traceparent` value, on the stack: every forwarded request writes one.
    pub fn header_value(&self) -> [u8; 55] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; 55];
        out[0] = b'0';
        out[1] = b'0';
        let mut put = |at: usize, digits: usize, value: u128| {
            for i in 0..digits {
                let nibble = (value >> (4 * (digits - 1 - i))) & 0xf;
                out[at + i] = HEX[nibble as usize];
            }
        };
        put(3, 32, self.trace_id);
        put(36, 16, self.span_id as u128);
        put(53, 2, self.flags as u128);
        out
    }
}

/// The `traceparent` value the upstream receives.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

/// OpenTelemetry's `TraceIdRatioBased` decision: the low 63 bits of the (random) trace id
/// against the ratio, so every hop that applies the same ratio agrees, with no extra
/// random draw.
fn ratio_says_sample(trace_id: u128, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    ((trace_id as u64) >> 1) < bound
}

fn nonzero_u64() -> u64 {
    loop {
        let v = rand::random::<u64>();
        if v != 0 {
            return v;
        }
    }
}

fn nonzero_u128() -> u128 {
    loop {
        let v = rand::random::<u128>();
        if v != 0 {
            return v;
        }
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// W3C Trace Context level 1 parsing: returns (trace id, parent id, flags).
fn parse(value: &[u8]) -> Option<(u128, u64, u8)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let mut parts = value.splitn(5, '-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let parent_id = parts.next()?;
    let flags = parts.next()?;
    let rest = parts.next();
    if version.len() != 2 || !is_lower_hex(version) || version == "ff" {
        return None;
    }
    // Version 00 has exactly four fields; later versions may append more.
    if version == "00" && rest.is_some() {
        return None;
    }
    if trace_id.len() != 32 || !is_lower_hex(trace_id) {
        return None;
    }
    if parent_id.len() != 16 || !is_lower_hex(parent_id) {
        return None;
    }
    if flags.len() != 2 || !is_lower_hex(flags) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace_id, 16).ok()?;
    let parent_id = u64::from_str_radix(parent_id, 16).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    // All-zero ids are invalid.
    if trace_id == 0 || parent_id == 0 {
        return None;
    }
    Some((trace_id, parent_id, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_traceparent_keeps_trace_and_flags() {
        let t = TraceContext::continue_or_start(
            Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some(0.0),
        );
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id, 0x00f067aa0ba902b7);
        assert_eq!(t.flags, 1);
        assert!(
            t.sampled(),
            "a sampled parent is followed whatever the ratio"
        );
        assert_ne!(t.span_id, 0x00f067aa0ba902b7);
        let header = t.header_value();
        assert_eq!(
            &header[..],
            t.to_string().as_bytes(),
            "the same text as Display"
        );
        assert!(header.starts_with(b"00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(header.ends_with(b"-01"));
        assert_eq!(header.len(), 55);
    }

    #[test]
    fn unsampled_parent_stays_unsampled() {
        let t = TraceContext::continue_or_start(
            Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
            Some(1.0),
        );
        assert!(!t.sampled());
        assert!(t.header_value().ends_with(b"-00"));
    }

    #[test]
    fn new_traces_follow_the_ratio() {
        let sampled = |ratio| {
            (0..2000)
                .filter(|_| TraceContext::continue_or_start(None, Some(ratio)).sampled())
                .count()
        };
        assert_eq!(sampled(1.0), 2000);
        assert_eq!(sampled(0.0), 0);
        let half = sampled(0.5);
        assert!((800..1200).contains(&half), "{half} of 2000 at 0.5");
        // Without an exporter, new traces stay marked sampled for the services behind.
        assert!(TraceContext::continue_or_start(None, None).sampled());
        assert_eq!(TraceContext::continue_or_start(None, None).parent_id, 0);
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        for bad in [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-+0f067aa0ba902b7-01",
        ] {
            let t = TraceContext::continue_or_start(Some(bad.as_bytes()), None);
            assert_ne!(
                t.trace_id_hex(),
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "{bad}"
            );
            assert_eq!(t.parent_id, 0, "{bad}");
            assert_eq!(t.header_value().len(), 55);
        }
    }
}
