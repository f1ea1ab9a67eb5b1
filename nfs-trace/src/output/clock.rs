//! Kernel timestamps (CLOCK_MONOTONIC) to wall-clock time for people.

/// Converts monotonic nanoseconds to Unix nanoseconds, using the offset
/// between the two clocks read once at start.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
}

fn now(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl Clock {
    pub fn new() -> Self {
        Clock { offset_ns: now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC) }
    }

    /// A clock with this offset: tests, and `report` replaying a recording
    /// with the offset the recording was made with.
    pub fn fixed(offset_ns: i128) -> Self {
        Clock { offset_ns }
    }

    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, as read at start.
    pub fn offset_ns(&self) -> i128 {
        self.offset_ns
    }

    pub fn mono_now_ns() -> u64 {
        now(libc::CLOCK_MONOTONIC) as u64
    }

    pub fn unix_ns(&self, mono_ns: u64) -> i128 {
        mono_ns as i128 + self.offset_ns
    }

    /// RFC 3339 in UTC with microseconds: 2026-11-23T19:20:01.123456Z.
    pub fn rfc3339(&self, mono_ns: u64) -> String {
        rfc3339(self.unix_ns(mono_ns))
    }

    /// [`Clock::rfc3339`] for writing straight into JSON.
    pub fn stamp(&self, mono_ns: u64) -> Rfc3339 {
        Rfc3339(self.unix_ns(mono_ns))
    }

    /// Local time of day for live lines: 19:20:01.123456 (UTC).
    pub fn time_of_day(&self, mono_ns: u64) -> String {
        let s = rfc3339(self.unix_ns(mono_ns));
        s[11..s.len() - 1].to_string()
    }
}

pub fn rfc3339(unix_ns: i128) -> String {
    Rfc3339(unix_ns).to_string()
}

/// A Unix time in nanoseconds that displays as RFC 3339 (UTC, microseconds)
/// without allocating: JSON records write it straight into their output.
#[derive(Clone, Copy, Debug)]
pub struct Rfc3339(pub i128);

/// The fields of an [`Rfc3339`] time.
pub struct Parts {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
}

impl Rfc3339 {
    /// Seconds since the epoch and the nanoseconds into that second.
    #[inline]
    pub fn split(&self) -> (i64, i64) {
        // i64 arithmetic where the time fits (until 2262): an i128 division
        // is a library call, and every JSON record pays two of them.
        match i64::try_from(self.0) {
            Ok(ns) => (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000)),
            Err(_) => (self.0.div_euclid(1_000_000_000) as i64, self.0.rem_euclid(1_000_000_000) as i64),
        }
    }

    pub fn parts(&self) -> Parts {
        let (secs, nanos) = self.split();
        let sod = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        Parts {
            year,
            month,
            day,
            hour: sod / 3600,
            minute: (sod % 3600) / 60,
            second: sod % 60,
            micros: (nanos / 1000) as u32,
        }
    }
}

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.parts();
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            p.year, p.month, p.day, p.hour, p.minute, p.second, p.micros
        )
    }
}

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01 (the inverse of
/// [`civil_from_days`], same algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An RFC 3339 time (`2026-12-07T03:00:00Z`, fractions and `+01:00` offsets
/// allowed; a space for the `T` too) to Unix nanoseconds.
pub fn parse_rfc3339(s: &str) -> Result<i128, String> {
    let bad = || format!("'{s}' is not an RFC 3339 time such as 2026-12-07T03:00:00Z");
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<u32, String> {
        let t = s.get(r).ok_or_else(bad)?;
        if t.bytes().all(|c| c.is_ascii_digit()) { t.parse().map_err(|_| bad()) } else { Err(bad()) }
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    let mut i = 19;
    let mut nanos: i128 = 0;
    if b[i] == b'.' {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return Err(bad());
        }
        nanos = i128::from(num(i + 1..i + 1 + digits)?) * 10i128.pow(9 - digits as u32);
        i += 1 + digits;
    }
    let offset_s: i128 = match &s[i..] {
        "Z" | "z" => 0,
        o if o.len() == 6 && matches!(o.as_bytes()[0], b'+' | b'-') && o.as_bytes()[3] == b':' => {
            let v = i128::from(num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60);
            if o.starts_with('-') { -v } else { v }
        }
        _ => return Err(bad()),
    };
    let days = i128::from(days_from_civil(i64::from(year), month, day));
    let secs = days * 86_400 + i128::from(hour * 3600 + minute * 60 + second) - offset_s;
    Ok(secs * 1_000_000_000 + nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_formats_and_offsets() {
        for ns in [0i128, 1_795_461_401_500_000_000, 951_782_400_000_000_000, 1_796_612_400_123_456_000] {
            assert_eq!(parse_rfc3339(&rfc3339(ns)), Ok(ns));
        }
        assert_eq!(parse_rfc3339("2026-12-07T04:00:00+01:00"), parse_rfc3339("2026-12-07T03:00:00Z"));
        assert_eq!(parse_rfc3339("1970-01-01 00:00:01.5Z"), Ok(1_500_000_000));
        for bad in ["", "yesterday", "2026-12-07", "2026-13-07T03:00:00Z", "2026-12-07T03:00:00", "2026-12-07T03:00:00.Z", "2026-12-07T03:00:00+0100"] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        // 2026-11-23T19:16:41.5Z
        assert_eq!(rfc3339(1_795_461_401_500_000_000), "2026-11-23T19:16:41.500000Z");
        // Leap day.
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000000Z");
        let c = Clock::fixed(0);
        assert_eq!(c.time_of_day(3_723_000_001_000), "01:02:03.000001");
        // Before 1970, and past i64 nanoseconds (2262): the i128 path.
        assert_eq!(rfc3339(-1_500_000_000), "1969-12-31T23:59:58.500000Z");
        assert_eq!(rfc3339(i64::MAX as i128 + 1_000_000_000), "2262-04-11T23:47:17.854775Z");
    }
}
