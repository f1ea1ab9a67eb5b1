//! Everything that touches the kernel: which hooks exist (`hooks`, the one
//! table with kind, kernel range and fallback), what this kernel is (`env`)
//! and says of its layouts (`btf`, `tracefs`, `sunrpc_types`), the programs'
//! config (`config`), loading and attaching them (`attach`, `live_ports`,
//! `bpf_log`), what they could not record (`lost`), and decoding their
//! records into typed events (`decode`). Nothing here interprets events.
pub mod attach;
pub mod bpf_log;
pub mod btf;
pub mod config;
pub mod decode;
pub mod env;
pub mod hooks;
pub mod live_ports;
pub mod lost;
pub mod sunrpc_types;
pub mod tracefs;
