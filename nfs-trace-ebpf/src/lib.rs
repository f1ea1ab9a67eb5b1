#![no_std]
// Exists so cargo sees a library target (nfs-trace depends on this crate
// only to rebuild when it changes).
