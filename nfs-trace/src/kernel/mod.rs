//! Everything that touches the kernel: which hooks exist and how they are
//! attached (`hooks`, the one table), the kernel's own descriptions of its
//! layouts (`btf`, `tracefs`), what this kernel is (`env`), the loaded
//! programs' records and the decoding of its
//! records into typed events (`decode`). Nothing here interprets events.
pub mod bpf_log;
pub mod btf;
pub mod decode;
pub mod env;
pub mod hooks;
pub mod live_ports;
pub mod lost;
pub mod tracefs;
