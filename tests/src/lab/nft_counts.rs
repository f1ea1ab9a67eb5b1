//! Per-source-port SYN counts from an nft dynamic set with a counter per
//! element (`update @set { tcp sport counter }`): how the experiment and
//! proxy scenarios count every SYN a port sent, however short-lived its
//! socket. Read as JSON (`nft -j`), not scraped from the text form.
use std::{process::Command, time::Duration};

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::cmd;

/// (source port, packets) of each element of `inet <table> <set>`, through
/// `nft` (a command already placed in the right network namespace).
pub fn read(mut nft: Command, table: &str, set: &str) -> Result<Vec<(u16, u64)>> {
    let text = cmd::run(nft.args(["-j", "list", "set", "inet", table, set]), Duration::from_secs(20))?;
    parse(&text)
}

fn parse(text: &str) -> Result<Vec<(u16, u64)>> {
    let v: Value = serde_json::from_str(text).context("nft -j output")?;
    let elems = v["nftables"].as_array().into_iter().flatten().find_map(|o| o["set"]["elem"].as_array().cloned()).unwrap_or_default();
    Ok(elems
        .iter()
        .filter_map(|e| Some((u16::try_from(e["elem"]["val"].as_u64()?).ok()?, e["elem"]["counter"]["packets"].as_u64()?)))
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn elements_give_port_and_packets() {
        let t = r#"{"nftables":[{"metainfo":{}},{"set":{"family":"inet","name":"syns","elem":[
            {"elem":{"val":41000,"counter":{"packets":5,"bytes":300}}},{"elem":{"val":41002,"counter":{"packets":1,"bytes":60}}}]}}]}"#;
        assert_eq!(super::parse(t).unwrap(), vec![(41000, 5), (41002, 1)]);
        assert!(super::parse(r#"{"nftables":[{"set":{"name":"syns"}}]}"#).unwrap().is_empty(), "no SYN yet");
    }
}
