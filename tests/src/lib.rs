//! Test support for nfs-trace: driving the real binary on the host kernel
//! (`host`), headless Chromium for the report page (`chromium`), and the VM
//! lab's guest program (`src/bin`).
pub mod chromium;
pub mod host;
