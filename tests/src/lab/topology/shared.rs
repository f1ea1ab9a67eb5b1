//! `shared-server`: a v3 mount of one export and a v4.1 mount of another,
//! of one server, reconnected interleaved (v3, v4.1, v3, v4.1): the v3
//! flow comes back from its port while the v4.1 one connects in between.
use super::{MountSpec, Place};
use crate::lab::{
    net::{CLIENT, ClientNs, SERVER},
    nfsd::SECOND_EXPORT,
};

pub const NAME: &str = "shared-server";

pub fn run(ns: &ClientNs, with_tracer: bool) -> bool {
    let place = Place::client(ns);
    // v4 names the second export relative to the pseudo-root (/export).
    let sub = SECOND_EXPORT.trim_start_matches("/export/");
    let mounts = [
        MountSpec::new(&place, "shared-v3", "3", SERVER, CLIENT, ""),
        MountSpec::new(&place, "shared-v4.1", "4.1", SERVER, CLIENT, "").of_export(sub),
    ];
    super::run(NAME, &mounts, &[0, 1, 0, 1], with_tracer, &|_| Ok(()))
}
