//! Splits the input into CSV records before the CSV parser sees them, so
//! that no record is buffered beyond [`MAX_RECORD_BYTES`]: the parser would
//! otherwise hold a whole record, however long, in memory.
//!
//! The record boundaries follow the `csv` crate's defaults exactly: fields
//! split on `,`, a field that starts with `"` is quoted until a `"` not
//! doubled, and a record ends on `\n`, `\r` or `\r\n` outside quotes; empty
//! lines are not records. A leading UTF-8 byte order mark is dropped.

use std::io::{self, Read};

use crate::MAX_RECORD_BYTES;

/// How much of the input is read at a time.
const CHUNK: usize = 64 * 1024;

/// One record as split from the input.
#[derive(Debug)]
pub(crate) enum Raw {
    /// A record within the limit: its bytes, without its terminator.
    Record {
        /// The line it starts on.
        line: u64,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// A record over [`MAX_RECORD_BYTES`]: cut off at the limit and skipped
    /// to the next line break.
    TooLong {
        /// The line it starts on.
        line: u64,
    },
}

/// Where the splitter is within a record.
#[derive(Debug, Clone, Copy)]
enum State {
    /// At the start of a field.
    FieldStart,
    /// In a field that did not start with a quote.
    Unquoted,
    /// In a quoted field.
    Quoted,
    /// Just after a `"` in a quoted field: its end, or the first of `""`.
    QuoteInQuoted,
}

/// Records of an input, one at a time.
#[derive(Debug)]
pub(crate) struct Records<R> {
    input: R,
    buf: Vec<u8>,
    pos: usize,
    /// The line the next byte is on.
    line: u64,
    /// The input has not been read from yet (for the byte order mark).
    fresh: bool,
}

impl<R: Read> Records<R> {
    pub(crate) fn new(input: R) -> Self {
        Self {
            input,
            buf: Vec::new(),
            pos: 0,
            line: 1,
            fresh: true,
        }
    }

    /// The line the reader is on.
    pub(crate) fn line(&self) -> u64 {
        self.line
    }

    fn byte(&mut self) -> io::Result<Option<u8>> {
        if self.pos == self.buf.len() {
            self.buf.resize(CHUNK, 0);
            let n = loop {
                match self.input.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.buf.clear();
                        self.pos = 0;
                        return Err(e);
                    }
                }
            };
            self.buf.truncate(n);
            self.pos = 0;
            if std::mem::take(&mut self.fresh) && self.buf.starts_with(b"\xef\xbb\xbf") {
                self.pos = 3;
            }
            if self.pos == self.buf.len() {
                return Ok(None);
            }
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        if b == b'\n' {
            self.line += 1;
        }
        Ok(Some(b))
    }

    /// The next record, `None` at the end of the input.
    pub(crate) fn next_record(&mut self) -> io::Result<Option<Raw>> {
        let mut bytes = Vec::new();
        let mut state = State::FieldStart;
        let mut line = None;
        let mut cut = false;
        loop {
            let before = self.line;
            let Some(b) = self.byte()? else {
                break;
            };
            let terminator = b == b'\n' || b == b'\r';
            if line.is_none() {
                // Empty lines before a record are no record.
                if !terminator {
                    line = Some(before);
                    bytes.push(b);
                    state = Self::step(state, b).0;
                }
                continue;
            }
            if cut {
                // Over the limit: skip to the next line break, quoted or not.
                if terminator {
                    break;
                }
                continue;
            }
            let (next, ends) = Self::step(state, b);
            if ends {
                break;
            }
            state = next;
            if bytes.len() >= MAX_RECORD_BYTES {
                cut = true;
                continue;
            }
            bytes.push(b);
        }
        Ok(line.map(|line| {
            if cut {
                Raw::TooLong { line }
            } else {
                Raw::Record { line, bytes }
            }
        }))
    }

    /// The state after `b`, and whether `b` ends the record.
    fn step(state: State, b: u8) -> (State, bool) {
        let terminator = b == b'\n' || b == b'\r';
        match (state, b) {
            (State::Quoted, b'"') => (State::QuoteInQuoted, false),
            (State::Quoted, _) => (State::Quoted, false),
            (_, b',') => (State::FieldStart, false),
            (_, _) if terminator => (State::FieldStart, true),
            (State::FieldStart, b'"') | (State::QuoteInQuoted, b'"') => (State::Quoted, false),
            _ => (State::Unquoted, false),
        }
    }
}

/// The CSV parser's input: one record at a time, handed over whole with a
/// terminator, so the parser never reads past it nor meets an end of input
/// between records.
#[derive(Debug, Default)]
pub(crate) struct Feed {
    bytes: Vec<u8>,
    pos: usize,
}

impl Feed {
    /// Hands over `record` (without terminator) as the next thing to read.
    pub(crate) fn set(&mut self, mut record: Vec<u8>) {
        record.push(b'\n');
        self.bytes = record;
        self.pos = 0;
    }
}

impl Read for Feed {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = out.len().min(self.bytes.len() - self.pos);
        out[..n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &[u8]) -> Vec<(u64, String)> {
        let mut r = Records::new(input);
        let mut out = Vec::new();
        while let Some(raw) = r.next_record().unwrap() {
            out.push(match raw {
                Raw::Record { line, bytes } => (line, String::from_utf8(bytes).unwrap()),
                Raw::TooLong { line } => (line, "<too long>".into()),
            });
        }
        out
    }

    #[test]
    fn records_split_where_csv_splits_them() {
        assert_eq!(
            split(b"\xef\xbb\xbfa,b\r\n\n\"x\ny\",\"q\"\"\n\"\rz\"w\",5\" tv\n"),
            vec![
                (1, "a,b".into()),
                (3, "\"x\ny\",\"q\"\"\n\"".into()),
                (5, "z\"w\",5\" tv".into()),
            ]
        );
        assert_eq!(
            split(b"last,no newline"),
            vec![(1, "last,no newline".into())]
        );
        assert!(split(b"\n\r\n").is_empty());
    }

    #[test]
    fn a_record_over_the_limit_is_cut_and_reading_goes_on_at_the_next_line() {
        let mut input = b"a\n\"open quote ".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES));
        input.extend_from_slice(b" more\nb,c\n");
        assert_eq!(
            split(&input),
            vec![(1, "a".into()), (2, "<too long>".into()), (3, "b,c".into())]
        );
    }
}
