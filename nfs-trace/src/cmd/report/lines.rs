//! A recording, line by line, in bounded memory: one line is held at a time
//! and a line longer than [`MAX_LINE`] is skipped, not collected (a file of
//! 1 GB with no newline must not take 1 GB).
use std::io::{self, BufRead};

/// Longer than any record watch writes by far (a summary of hundreds of
/// mounts is well under a megabyte).
pub const MAX_LINE: usize = 16 << 20;

pub enum Line<'a> {
    /// A whole line (its newline removed).
    Whole(&'a [u8]),
    /// The file ends in the middle of this line: cut off.
    Cut(&'a [u8]),
    /// Longer than [`MAX_LINE`]: skipped.
    TooLong,
}

pub struct Lines<R> {
    r: R,
    buf: Vec<u8>,
    /// Lines read so far.
    pub number: u64,
}

impl<R: BufRead> Lines<R> {
    pub fn new(r: R) -> Self {
        Lines { r, buf: Vec::with_capacity(4096), number: 0 }
    }

    /// The next line and its number (from 1).
    pub fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        self.buf.clear();
        let mut too_long = false;
        loop {
            let avail = self.r.fill_buf()?;
            if avail.is_empty() {
                if self.buf.is_empty() && !too_long {
                    return Ok(None);
                }
                self.number += 1;
                return Ok(Some((self.number, if too_long { Line::TooLong } else { Line::Cut(&self.buf) })));
            }
            let (part, used, ends) = match memchr::memchr(b'\n', avail) {
                Some(i) => (&avail[..i], i + 1, true),
                None => (avail, avail.len(), false),
            };
            if !too_long {
                if self.buf.len() + part.len() > MAX_LINE {
                    too_long = true;
                    self.buf = Vec::with_capacity(4096);
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            self.r.consume(used);
            if ends {
                self.number += 1;
                return Ok(Some((self.number, if too_long { Line::TooLong } else { Line::Whole(&self.buf) })));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> Vec<String> {
        let mut l = Lines::new(io::BufReader::with_capacity(7, bytes));
        let mut out = Vec::new();
        while let Some((_, line)) = l.next_line().unwrap() {
            out.push(match line {
                Line::Whole(b) => format!("whole:{}", String::from_utf8_lossy(b)),
                Line::Cut(b) => format!("cut:{}", String::from_utf8_lossy(b)),
                Line::TooLong => "too long".to_string(),
            });
        }
        out
    }

    #[test]
    fn lines_across_buffer_refills_and_a_cut_last_line() {
        assert_eq!(all(b"{\"a\":1}\n\n{\"bb\":22222}\n{\"c\""), ["whole:{\"a\":1}", "whole:", "whole:{\"bb\":22222}", "cut:{\"c\""]);
        assert!(all(b"").is_empty());
        assert_eq!(all(b"x\n"), ["whole:x"]);
    }

    #[test]
    fn a_line_past_the_limit_is_skipped_and_the_next_one_read() {
        let mut big = vec![b'x'; MAX_LINE + 10];
        big.extend_from_slice(b"\nok\n");
        assert_eq!(all(&big), ["too long", "whole:ok"]);
    }
}
