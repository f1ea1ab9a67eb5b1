//! A fast hasher for the trackers' maps (FxHash, as rustc uses). The
//! default SipHash guards against keys chosen by an attacker; ours are the
//! kernel's socket and transport addresses and the host's own connects'
//! endpoints, hashed once or twice per event, where SipHash showed up in
//! the tracer's profile under a connect storm.
use std::hash::{BuildHasherDefault, Hasher};

pub type FastMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<Fx>>;
pub type FastSet<K> = std::collections::HashSet<K, BuildHasherDefault<Fx>>;

#[derive(Default, Clone, Copy)]
pub struct Fx(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Fx {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(SEED);
    }
}

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(b));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_work_and_spread_small_keys() {
        let mut s: FastSet<u16> = FastSet::default();
        for p in 0..1000u16 {
            assert!(s.insert(p));
        }
        assert!(!s.insert(7));
        assert_eq!(s.len(), 1000);
        // Distinct small keys land on distinct hashes (no trivial collapse).
        let h = |k: u16| {
            let mut x = Fx::default();
            x.write_u16(k);
            x.finish()
        };
        let hashes: std::collections::HashSet<u64> = (0..1000u16).map(h).collect();
        assert_eq!(hashes.len(), 1000);
    }
}
