//! What the kernel programs could not record, as their per-CPU counters say.
use serde::{Deserialize, Serialize};

/// Lost-record counters read from the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    pub events: u64,
    pub sockets: u64,
    /// Of `events`, connect attempts (so connects made = seen + this).
    pub connects: u64,
    /// Runs of our programs the kernel skipped because a BPF program was
    /// already running on that CPU (a softirq's state change landing
    /// while a hook ran: `recursion_misses`, 5.12+). The program never ran,
    /// so it could count nothing: each may be a connect, a close or a state
    /// change not seen (connects made <= seen + `connects` + this).
    pub missed_runs: u64,
}

/// `recursion_misses` of the BPF program behind `fd`, from its fdinfo (0
/// where the kernel does not report it).
pub fn recursion_misses(fd: std::os::fd::RawFd) -> u64 {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).map(|t| misses_in(&t)).unwrap_or(0)
}

fn misses_in(fdinfo: &str) -> u64 {
    fdinfo.lines().find_map(|l| l.strip_prefix("recursion_misses:")?.trim().parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn recursion_misses_are_read_from_a_programs_fdinfo() {
        let info = "pos:\t0\nflags:\t02000002\nprog_type:\t5\nprog_id:\t574\nrun_time_ns:\t0\nrun_cnt:\t0\nrecursion_misses:\t7\nverified_insns:\t312\n";
        assert_eq!(super::misses_in(info), 7);
        // Before 5.12 the line is absent: nothing is known to be missed.
        assert_eq!(super::misses_in("prog_type:\t5\nprog_id:\t3\n"), 0);
    }
}
