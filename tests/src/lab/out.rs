//! What the guest prints on the serial console. The host reads only lines
//! that start with [`PREFIX`] (each followed by one JSON object) and the one
//! [`MARKER`] line; kernel messages may come in between.
use std::io::Write as _;

use serde_json::{Value, json};

pub const PREFIX: &str = "@@LAB ";
pub const MARKER: &str = "@@LAB-RESULT";

/// Prints one record as a single write, so a kernel message cannot split it.
pub fn emit(v: &Value) {
    let line = format!("{PREFIX}{v}\n");
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(line.as_bytes());
    let _ = o.flush();
}

pub fn log(text: impl AsRef<str>) {
    emit(&json!({"kind": "log", "uptime": crate::lab::sys::uptime(), "text": text.as_ref()}));
}

/// The last line of a run: `OK`, or `FAIL` and why.
pub fn marker(ok: bool, why: &str) {
    let line = if ok { format!("{MARKER} OK\n") } else { format!("{MARKER} FAIL {why}\n") };
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(line.as_bytes());
    let _ = o.flush();
}
