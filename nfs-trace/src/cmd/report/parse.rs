//! One line of a recording: an input to feed, an output watch wrote (a
//! replay makes those again), or damage to say and skip.
use serde::Deserialize;

use crate::{model::feed::Input, output::render::SCHEMA_VERSION};

/// Record types `watch` writes that a replay does not read (it makes them
/// again): known, so not "unknown".
const OUTPUT_TYPES: &[&str] = &[
    "attached", "attributed", "canary", "close", "connect", "data_retransmit", "episode", "hooks", "kernel", "lost", "ports",
    "reuse", "rpc_timeout", "stall", "stall_end", "summary", "syn_retransmit", "xprt_connect", "xprt_drop", "xprt_reconnect",
];

pub const CUT: &str = "line cut off (the file ends mid-line)";

#[derive(Debug)]
pub enum Parsed {
    Input(Box<Input>),
    /// `attached`: the kernel the recording was made on.
    Attached(Option<String>),
    /// Another record watch writes.
    Output,
    /// Empty or blank.
    Blank,
    /// Damage: `why` groups the count, `detail` is said with the first few.
    Skip { why: String, detail: Option<String> },
}

/// An `input` line whose fields are not in watch's order (passed through
/// a tool that sorts keys): the input is the one key besides `v`, `type`.
#[derive(Deserialize)]
struct Reordered {
    #[serde(flatten)]
    input: Input,
}

#[derive(Deserialize)]
struct Envelope {
    v: Option<u64>,
    #[serde(rename = "type")]
    kind: Option<String>,
    kernel: Option<String>,
}

pub struct Parser {
    /// `{"v":2,"type":"input",` then the input's one key: serde_json writes
    /// the fields in this order, so such a line is read in one pass.
    prefix: Vec<u8>,
    body: Vec<u8>,
}

impl Default for Parser {
    fn default() -> Self {
        Parser { prefix: format!("{{\"v\":{SCHEMA_VERSION},\"type\":\"input\",").into_bytes(), body: Vec::with_capacity(4096) }
    }
}

fn skip(why: impl Into<String>, detail: Option<String>) -> Parsed {
    Parsed::Skip { why: why.into(), detail }
}

impl Parser {
    /// `cut`: the file ends in this line (without its newline): it may
    /// still be whole, and is called cut off only if it does not parse.
    pub fn parse(&mut self, b: &[u8], cut: bool) -> Parsed {
        if b.iter().all(u8::is_ascii_whitespace) {
            return Parsed::Blank;
        }
        if let Some(rest) = b.strip_prefix(self.prefix.as_slice()) {
            self.body.clear();
            self.body.push(b'{');
            self.body.extend_from_slice(rest);
            return match serde_json::from_slice::<Input>(&self.body) {
                Ok(i) => Parsed::Input(Box::new(i)),
                Err(_) if cut => skip(CUT, None),
                Err(e) => skip("input record(s) not understood", Some(e.to_string())),
            };
        }
        match serde_json::from_slice::<Envelope>(b) {
            Ok(Envelope { v: Some(v), .. }) if v != u64::from(SCHEMA_VERSION) => {
                skip(format!("record(s) of schema version {v} (this nfs-trace reads {SCHEMA_VERSION})"), None)
            }
            Ok(Envelope { kind: Some(k), .. }) if k == "input" => match serde_json::from_slice::<Reordered>(b) {
                Ok(r) => Parsed::Input(Box::new(r.input)),
                Err(e) => skip("input record(s) not understood", Some(e.to_string())),
            },
            Ok(Envelope { kind: Some(k), kernel, .. }) if k == "attached" => Parsed::Attached(kernel),
            Ok(Envelope { kind: Some(k), .. }) if OUTPUT_TYPES.contains(&k.as_str()) => Parsed::Output,
            Ok(Envelope { kind: Some(k), .. }) => skip(format!("record(s) of unknown type '{k}'"), None),
            Ok(_) => skip("JSON without \"v\" and \"type\"", None),
            Err(_) if cut => skip(CUT, None),
            Err(_) => skip("line(s) not JSON", None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(p: Parsed) -> String {
        match p {
            Parsed::Skip { why, .. } => why,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_kind_of_line() {
        let mut p = Parser::default();
        assert!(matches!(p.parse(br#"{"v":2,"type":"input","tick":{"mono_ns":5}}"#, false), Parsed::Input(i) if matches!(*i, Input::Tick { mono_ns: 5 })));
        // Keys sorted by a tool: the slow path reads the same input.
        assert!(matches!(p.parse(br#"{"tick":{"mono_ns":5},"type":"input","v":2}"#, false), Parsed::Input(i) if matches!(*i, Input::Tick { mono_ns: 5 })));
        assert!(matches!(p.parse(br#"{"v":2,"type":"attached","kernel":"6.12"}"#, false), Parsed::Attached(Some(k)) if k == "6.12"));
        assert!(matches!(p.parse(br#"{"v":2,"type":"connect","sport":1}"#, false), Parsed::Output));
        assert!(matches!(p.parse(b"  ", false), Parsed::Blank));
        assert_eq!(why(p.parse(br#"{"v":1,"type":"connect"}"#, false)), "record(s) of schema version 1 (this nfs-trace reads 2)");
        assert_eq!(why(p.parse(br#"{"v":2,"type":"bogus"}"#, false)), "record(s) of unknown type 'bogus'");
        assert_eq!(why(p.parse(br#"{"v":2,"type":"input","tick":{"mono"#, true)), CUT);
        assert_eq!(why(p.parse(br#"{"v":2,"type":"input","tick":{"mono_ns":"x"}}"#, false)), "input record(s) not understood");
        assert_eq!(why(p.parse(br#"{"v":2,"type":"con"#, true)), CUT);
        assert_eq!(why(p.parse(b"\xff\xfe garbage", false)), "line(s) not JSON");
        assert_eq!(why(p.parse(br#"{"a":1}"#, false)), "JSON without \"v\" and \"type\"");
    }
}
