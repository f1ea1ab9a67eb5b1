//! Test support for nfs-trace: driving the real binary on the host kernel
//! (`host`), and the VM lab's guest program (`src/bin`).
pub mod host;
