//! Pure state: decoded events in, observations out. No I/O and no clock but
//! the events' own timestamps, so every rule is tested with synthetic
//! sequences. `tcp` follows connects per destination, `xprt` SunRPC
//! transports across reconnects, `verdict` turns both into what to do.
pub mod attribution;
pub mod canary;
pub mod episode;
pub mod feed;
pub mod tcp;
pub mod verdict;
pub mod xprt;
