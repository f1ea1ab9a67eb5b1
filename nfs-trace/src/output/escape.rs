//! Text from outside (process names, mount paths, server names, kernel
//! messages) on its way to a terminal. Any local user can name a process
//! `"\x1b[2J…"` and connect to :2049; written raw, that would clear or
//! rewrite the root user's screen. Human output passes every such field
//! through [`escape`]; JSON needs nothing more (serde escapes control
//! characters exactly), so it keeps the bytes as they were.
use std::{borrow::Cow, fmt::Write as _};

/// `s` with every control character (C0, DEL, C1), every bidirectional
/// override or isolate (which reorder what follows them on screen) and the
/// backslash itself written as an escape (`\x1b`, `\u{202e}`, `\\`), so
/// what is shown is unambiguous and inert. Borrowed when nothing needs it.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x80 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        // Bidi embeddings/overrides (U+202A–202E) and isolates (U+2066–2069).
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_untouched_and_borrowed() {
        for s in ["python3", "/mnt/data", "kworker/u4:0", "nfs: server 10.0.0.1 not responding", "été", ""] {
            assert!(matches!(escape(s), Cow::Borrowed(x) if x == s), "{s}");
        }
    }

    #[test]
    fn terminal_controls_become_inert_text() {
        assert_eq!(escape("\x1b[2J\x1b[31mevil"), "\\x1b[2J\\x1b[31mevil");
        assert_eq!(escape("a\nb\rc\td\x7f"), "a\\x0ab\\x0dc\\x09d\\x7f");
        // C1 CSI (U+009B) starts an escape sequence on some terminals too.
        assert_eq!(escape("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(escape("abc\u{202e}cba"), "abc\\u{202e}cba");
        // The backslash is escaped, so a literal "\x1b" cannot pass for one.
        assert_eq!(escape("\\x1b"), "\\\\x1b");
        for s in ["\x1b]0;title\x07", "\u{85}", "\0"] {
            assert!(!escape(s).chars().any(|c| c.is_control()), "{s:?}");
        }
    }
}
