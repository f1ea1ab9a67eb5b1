//! What the host tells without BPF: mounts (`mountinfo`), per-transport
//! counters (`mountstats`), SunRPC transports in sysfs (`sunrpc_sysfs`), the
//! kernel log (`kmsg`), the socket list (`sock_diag`), and the join of the
//! first three into one view per NFS mount (`nfsmounts`) — per namespace:
//! every process's mount and network namespace (`namespaces`), the sunrpc
//! sysfs of another netns (`netns_sysfs`), which NFS superblocks a netns's
//! clients hold (`nfsfs_volumes`), every mount namespace's mounts
//! placed in their client's netns (`ns_mounts`). And the one thing it does
//! to the network: a canary connect toward a stalled server (`canary`). Parsers are pure
//! functions over text so they are tested on fake trees.
pub mod addr;
pub mod canary;
pub mod kmsg;
pub mod kubelet;
pub mod mountinfo;
pub mod mountstats;
pub mod namespaces;
pub mod netns_sysfs;
pub mod netns_inode;
pub mod nfsfs_volumes;
pub mod nfsmounts;
pub mod proxy;
pub mod ns_mounts;
pub mod sock_diag;
pub mod sunrpc_sysfs;
pub mod test_mounts;
