//! The two JSON records a connect storm is made of (`connect`, `close`),
//! written field by field into one buffer. serde's derive with flattened
//! structs escaped every key and copied each piece into the output
//! separately: most of the tracer's CPU under a storm. The bytes are the
//! same as the serde path's (unit tests in report.rs compare both);
//! values that may need escaping (comm) still go through serde_json.
use std::{io::Write as _, net::IpAddr};

use crate::output::clock::Rfc3339;

/// `v` in exactly `width` decimal digits (zero-padded; `v` must fit).
fn digits(buf: &mut Vec<u8>, mut v: u64, width: usize) {
    let start = buf.len();
    buf.resize(start + width, b'0');
    for i in (start..start + width).rev() {
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// The date and time to the second ("2026-12-07T04:05:06") of the last
/// time written: a storm's records share their second, and working out
/// the calendar date for each was ~5 % of the tracer's CPU under one.
#[derive(Default)]
pub struct Seconds {
    secs: Option<i64>,
    text: [u8; 19],
}

/// "YYYY-MM-DDTHH:MM:SS" of `t` (19 bytes while the year has 4 digits).
fn to_second(b: &mut Vec<u8>, t: Rfc3339) {
    let p = t.parts();
    digits(b, p.year as u64, 4);
    b.push(b'-');
    digits(b, u64::from(p.month), 2);
    b.push(b'-');
    digits(b, u64::from(p.day), 2);
    b.push(b'T');
    digits(b, u64::from(p.hour), 2);
    b.push(b':');
    digits(b, u64::from(p.minute), 2);
    b.push(b':');
    digits(b, u64::from(p.second), 2);
}

/// One JSON object being written into `buf`.
pub struct Line<'a> {
    buf: &'a mut Vec<u8>,
    first: bool,
    seconds: Option<&'a mut Seconds>,
}

// The methods are `inline`: the keys are literals at every call site, so
// inlined their copies are a few moves, not a memcpy call each (that call
// and `key` were a tenth of the tracer's CPU under a connect storm).
impl<'a> Line<'a> {
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        buf.push(b'{');
        Line { buf, first: true, seconds: None }
    }

    /// [`Line::new`] that remembers the last second written in `seconds`
    /// (kept by the caller across lines).
    pub fn with_seconds(buf: &'a mut Vec<u8>, seconds: &'a mut Seconds) -> Self {
        buf.push(b'{');
        Line { buf, first: true, seconds: Some(seconds) }
    }

    /// `"key":` — keys are ASCII identifiers of ours, nothing to escape.
    #[inline(always)]
    fn key(&mut self, k: &str) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.push(b'"');
        self.buf.extend_from_slice(k.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    /// Any value serde can write (numbers, options, strings needing escapes).
    #[inline]
    pub fn value<T: serde::Serialize + ?Sized>(&mut self, k: &str, v: &T) -> &mut Self {
        self.key(k);
        // Writing into a Vec cannot fail; serde_json's own number and float
        // formatting keeps the bytes identical to the derive path.
        let _ = serde_json::to_writer(&mut *self.buf, v);
        self
    }

    /// A string from outside (a process name): copied as it is when JSON
    /// needs no escape in it (serde_json escapes only control characters,
    /// `"` and `\\`), else through serde. Its escaping was 5 % of the
    /// tracer's CPU under a connect storm.
    #[inline]
    pub fn string(&mut self, k: &str, v: &str) -> &mut Self {
        if v.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
            return self.value(k, v);
        }
        self.key(k);
        self.buf.push(b'"');
        self.buf.extend_from_slice(v.as_bytes());
        self.buf.push(b'"');
        self
    }

    /// `null`, or the time: what serde writes for an `Option<Rfc3339>`.
    #[inline]
    pub fn opt_time(&mut self, k: &str, t: Option<Rfc3339>) -> &mut Self {
        match t {
            Some(t) => self.time(k, t),
            None => {
                self.key(k);
                self.buf.extend_from_slice(b"null");
                self
            }
        }
    }

    /// A string known to need no escaping (our names, addresses, times).
    #[inline]
    pub fn plain(&mut self, k: &str, v: impl std::fmt::Display) -> &mut Self {
        self.key(k);
        self.buf.push(b'"');
        let _ = write!(self.buf, "{v}");
        self.buf.push(b'"');
        self
    }

    /// RFC 3339 digits pushed one by one: core::fmt's padding machinery was
    /// the largest cost left in the profile.
    #[inline]
    pub fn time(&mut self, k: &str, t: Rfc3339) -> &mut Self {
        self.key(k);
        let (secs, nanos) = t.split();
        self.buf.push(b'"');
        match self.seconds.as_deref_mut() {
            Some(c) if c.secs == Some(secs) => self.buf.extend_from_slice(&c.text),
            Some(c) => {
                let start = self.buf.len();
                to_second(self.buf, t);
                c.text.copy_from_slice(&self.buf[start..]);
                c.secs = Some(secs);
            }
            None => to_second(self.buf, t),
        }
        self.buf.push(b'.');
        digits(self.buf, (nanos / 1000) as u64, 6);
        self.buf.extend_from_slice(b"Z\"");
        self
    }

    #[inline]
    pub fn addr(&mut self, k: &str, a: IpAddr) -> &mut Self {
        match a {
            IpAddr::V4(v4) => {
                self.key(k);
                self.buf.push(b'"');
                for (i, o) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.buf.push(b'.');
                    }
                    let w = if o >= 100 { 3 } else if o >= 10 { 2 } else { 1 };
                    digits(self.buf, u64::from(o), w);
                }
                self.buf.push(b'"');
                self
            }
            IpAddr::V6(_) => self.plain(k, a),
        }
    }

    /// `"0x…"`, lowercase, no padding: what `{:#x}` writes.
    #[inline]
    pub fn hex(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        self.buf.extend_from_slice(b"\"0x");
        let n = (64 - v.leading_zeros()).div_ceil(4).max(1);
        for i in (0..n).rev() {
            self.buf.push(b"0123456789abcdef"[((v >> (i * 4)) & 0xf) as usize]);
        }
        self.buf.push(b'"');
        self
    }

    /// Closes the object and ends the line.
    pub fn end(&mut self) {
        self.buf.extend_from_slice(b"}\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_addresses_read_as_their_display() {
        for ns in [0i128, 1_700_000_000_123_456_789, 951_782_400_000_001_000, 4_102_444_799_999_999_999] {
            let mut b = Vec::new();
            Line::new(&mut b).time("t", Rfc3339(ns)).end();
            assert_eq!(String::from_utf8(b).unwrap(), format!("{{\"t\":\"{}\"}}\n", Rfc3339(ns)));
        }
        for v in [0u64, 1, 0xf, 0x10, 0xffff_8881_0234_5678, u64::MAX] {
            let mut b = Vec::new();
            Line::new(&mut b).hex("x", v).end();
            assert_eq!(String::from_utf8(b).unwrap(), format!("{{\"x\":\"{v:#x}\"}}\n"));
        }
        for a in ["0.0.0.0", "10.99.0.1", "127.0.0.1", "255.255.255.255", "1.20.100.9", "fd00::1"] {
            let ip: IpAddr = a.parse().unwrap();
            let mut b = Vec::new();
            Line::new(&mut b).addr("a", ip).end();
            assert_eq!(String::from_utf8(b).unwrap(), format!("{{\"a\":\"{a}\"}}\n"));
        }
    }
}
