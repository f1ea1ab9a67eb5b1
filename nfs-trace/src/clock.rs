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

    /// A clock whose wall time equals monotonic time (tests).
    #[cfg(test)]
    pub fn fixed(offset_ns: i128) -> Self {
        Clock { offset_ns }
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

    /// Local time of day for live lines: 19:20:01.123456 (UTC).
    pub fn time_of_day(&self, mono_ns: u64) -> String {
        let s = rfc3339(self.unix_ns(mono_ns));
        s[11..s.len() - 1].to_string()
    }
}

pub fn rfc3339(unix_ns: i128) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000) as i64;
    let micros = (unix_ns.rem_euclid(1_000_000_000) / 1000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        // 2026-11-23T19:16:41.5Z
        assert_eq!(rfc3339(1_795_461_401_500_000_000), "2026-11-23T19:16:41.500000Z");
        // Leap day.
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000000Z");
        let c = Clock::fixed(0);
        assert_eq!(c.time_of_day(3_723_000_001_000), "01:02:03.000001");
    }
}
