//! `ipv6`: a v3 and a v4.1 mount over IPv6 (ULA addresses on the veth
//! pair), reconnected interleaved: the same truths as over IPv4.
use super::{MountSpec, Place};
use crate::lab::net::{self, CLIENT6, ClientNs, SERVER6};

pub const NAME: &str = "ipv6";

pub fn run(ns: &ClientNs, with_tracer: bool) -> bool {
    if let Err(e) = net::add_ipv6() {
        return super::cannot_run(NAME, &format!("adding the IPv6 addresses: {e:#}"));
    }
    let place = Place::client(ns);
    let mounts = [
        MountSpec::new(&place, "ipv6-v3", "3", SERVER6, CLIENT6, ""),
        MountSpec::new(&place, "ipv6-v4.1", "4.1", SERVER6, CLIENT6, ""),
    ];
    super::run(NAME, &mounts, &[0, 1, 0, 1], with_tracer, &|_| Ok(()))
}
