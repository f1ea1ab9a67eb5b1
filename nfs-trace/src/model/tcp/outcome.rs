//! How a connect attempt ended, and how an established connection ended,
//! from the state and `sk_err` the kernel reported.
use nfs_trace_common::tcp_state;

use crate::kernel::decode::Event;

/// How a connect attempt ended (left SYN_SENT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Established,
    /// The peer answered RST (ECONNREFUSED).
    Refused,
    /// SYN retries ran out (ETIMEDOUT).
    TimedOut,
    /// Reset while connecting (ECONNRESET; also a local disconnect).
    Reset,
    /// Killed locally, e.g. `ss -K` (ECONNABORTED).
    Aborted,
    /// Its owner closed it before any answer.
    Closed,
    /// Another error (ICMP unreachable...).
    Error(i32),
}

impl Outcome {
    pub fn of(ev: &Event) -> Self {
        if ev.newstate == tcp_state::ESTABLISHED {
            return Outcome::Established;
        }
        match ev.err {
            0 => Outcome::Closed,
            libc::ECONNREFUSED => Outcome::Refused,
            libc::ETIMEDOUT => Outcome::TimedOut,
            libc::ECONNRESET => Outcome::Reset,
            libc::ECONNABORTED => Outcome::Aborted,
            e => Outcome::Error(e),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Established => "established",
            Outcome::Refused => "refused",
            Outcome::TimedOut => "timed_out",
            Outcome::Reset => "reset",
            Outcome::Aborted => "aborted",
            Outcome::Closed => "closed",
            Outcome::Error(_) => "error",
        }
    }

    pub fn failed(&self) -> bool {
        *self != Outcome::Established
    }
}

/// How an established connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseHow {
    /// We sent FIN first.
    LocalClose,
    /// We dropped it without a FIN (RST via SO_LINGER 0, or a disconnect).
    LocalAbort,
    /// The peer sent FIN first.
    RemoteClose,
    /// RST from the peer (ECONNRESET).
    Reset,
    /// Killed locally, e.g. `ss -K` (ECONNABORTED).
    Aborted,
    /// Retransmissions ran out (ETIMEDOUT).
    TimedOut,
    Error(i32),
}

impl CloseHow {
    pub fn of(ev: &Event) -> Self {
        match ev.first_exit {
            tcp_state::FIN_WAIT1 => CloseHow::LocalClose,
            tcp_state::CLOSE_WAIT => CloseHow::RemoteClose,
            _ => match ev.err {
                // Straight to CLOSE with no error: our own abortive close
                // (SO_LINGER 0 / tcp_disconnect set sk_err only after).
                0 => CloseHow::LocalAbort,
                libc::ECONNRESET => CloseHow::Reset,
                libc::ECONNABORTED => CloseHow::Aborted,
                libc::ETIMEDOUT => CloseHow::TimedOut,
                e => CloseHow::Error(e),
            },
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            CloseHow::LocalClose => "local_close",
            CloseHow::LocalAbort => "local_abort",
            CloseHow::RemoteClose => "remote_close",
            CloseHow::Reset => "reset",
            CloseHow::Aborted => "aborted",
            CloseHow::TimedOut => "timed_out",
            CloseHow::Error(_) => "error",
        }
    }
}
