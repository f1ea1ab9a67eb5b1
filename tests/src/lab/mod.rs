//! The guest half of the VM lab (issue 3): the init program that runs inside
//! QEMU, brings up a real nfsd and NFS client, forces reconnects, records
//! what `ss` sees (the ground truth) and what `nfs-trace watch --json`
//! printed, and reports both on the serial console for the host to judge.
//!
//! Only the bin `lab_guest` uses it (included by path, so the test crate's
//! library stays as it is).
pub mod cmd;
pub mod experiment;
pub mod late;
pub mod middlebox;
pub mod net;
pub mod nfs_io;
pub mod nfsd;
pub mod nft_counts;
pub mod out;
pub mod proxy;
pub mod scenario;
pub mod silent;
pub mod stall;
pub mod sunrpc_btf;
pub mod sys;
pub mod tools;
pub mod topology;
pub mod tracer;
