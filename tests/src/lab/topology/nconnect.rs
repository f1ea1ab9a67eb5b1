//! `nconnect`: a v3 and a v4.1 mount of one server with `nconnect=4` each;
//! every one of the 8 transports is reconnected once, one at a time.
use super::{MountSpec, Place};
use crate::lab::net::{CLIENT, ClientNs, SERVER};

pub const NAME: &str = "nconnect";

pub fn run(ns: &ClientNs, with_tracer: bool) -> bool {
    let place = Place::client(ns);
    let mounts = [
        MountSpec::new(&place, "nconnect-v3", "3", SERVER, CLIENT, "nconnect=4"),
        MountSpec::new(&place, "nconnect-v4.1", "4.1", SERVER, CLIENT, "nconnect=4"),
    ];
    // Round robin over each mount's transports: each of the four once.
    super::run(NAME, &mounts, &[0, 0, 0, 0, 1, 1, 1, 1], with_tracer, &|_| Ok(()))
}
