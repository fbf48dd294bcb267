//! Splits the input into CSV records before the CSV parser sees them, so
//! that no record is buffered beyond [`MAX_RECORD_BYTES`]: the parser would
//! otherwise hold a whole record, however long, in memory.
//!
//! The record boundaries follow the `csv` crate's defaults: fields split
//! on `,`, a field that starts with `"` is quoted until a `"` not doubled,
//! and a record ends on `\n`, `\r` or `\r\n` outside quotes; empty lines
//! are not records. A leading UTF-8 byte order mark is dropped. One
//! difference: no field of a manifest holds a line break, so a line that
//! ends inside a quote ends its record there ([`Raw::Unclosed`], a closing
//! quote left out), and the next line is read as a record of its own
//! instead of as the rest of that field, which would take the rows below
//! into it.

use std::io::{self, Read};

use crate::MAX_RECORD_BYTES;

/// How much of the input is read at a time.
const CHUNK: usize = 64 * 1024;

/// The UTF-8 byte order mark, dropped where the input starts with it.
const BOM: &[u8] = b"\xef\xbb\xbf";

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
    /// A record whose line ends inside a quoted field. No field of a
    /// manifest holds a line break, so this is a closing quote left out:
    /// the record ends there, and the next line is a record of its own
    /// rather than the rest of this one's field.
    Unclosed {
        /// The line it is on.
        line: u64,
        /// The field the quote opened, counted from 0.
        field: usize,
        /// Its bytes up to the line's end.
        bytes: Vec<u8>,
    },
}

/// Where the splitter is within a record.
#[derive(Debug, Clone, Copy, Default)]
enum State {
    /// At the start of a field.
    #[default]
    FieldStart,
    /// In a field that did not start with a quote.
    Unquoted,
    /// In a quoted field.
    Quoted,
    /// Just after a `"` in a quoted field: its end, or the first of `""`.
    QuoteInQuoted,
}

/// A record being split, kept between calls when the input ran dry in the
/// middle of it (a pushed input answering `WouldBlock`).
#[derive(Debug, Default)]
struct Partial {
    /// Its bytes so far, at most [`MAX_RECORD_BYTES`].
    bytes: Vec<u8>,
    state: State,
    /// The line it starts on; `None` until its first byte.
    line: Option<u64>,
    /// Over the limit: skipping to the next line break.
    cut: bool,
    /// Field separators so far: the field being read, counted from 0.
    field: usize,
    /// The line ended inside a quoted field.
    unclosed: bool,
}

/// Records of an input, one at a time.
#[derive(Debug)]
pub(crate) struct Records<R> {
    input: R,
    buf: Vec<u8>,
    pos: usize,
    /// The line the next byte is on.
    line: u64,
    /// No byte has been handed out yet (for the byte order mark).
    fresh: bool,
    /// The first bytes read while they could still be the start of a mark.
    held: Vec<u8>,
    /// The record the input ran dry in.
    partial: Partial,
}

impl<R: Read> Records<R> {
    pub(crate) fn new(input: R) -> Self {
        Self {
            input,
            buf: Vec::new(),
            pos: 0,
            line: 1,
            fresh: true,
            held: Vec::new(),
            partial: Partial::default(),
        }
    }

    /// The input, to push to.
    pub(crate) fn input_mut(&mut self) -> &mut R {
        &mut self.input
    }

    /// The line the reader is on.
    pub(crate) fn line(&self) -> u64 {
        self.line
    }

    /// The next byte, `None` at the end of the input. An error (such as a
    /// pushed input's `WouldBlock`) consumes nothing.
    fn byte(&mut self) -> io::Result<Option<u8>> {
        while self.pos == self.buf.len() {
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
            if self.fresh {
                // The mark may come cut over reads (a pushed input is cut
                // where the client cut it): a strict prefix of it waits.
                let mut head = std::mem::take(&mut self.held);
                head.extend_from_slice(&self.buf);
                if n > 0 && head.len() < BOM.len() && BOM.starts_with(&head) {
                    self.held = head;
                    self.buf.clear();
                    continue;
                }
                self.fresh = false;
                if head.starts_with(BOM) {
                    self.pos = BOM.len();
                }
                self.buf = head;
            }
            if n == 0 && self.pos == self.buf.len() {
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

    /// The next record, `None` at the end of the input. When the input
    /// fails mid-record (a pushed input with nothing more yet answers
    /// `WouldBlock`), the record so far is kept and the next call goes on
    /// with it.
    pub(crate) fn next_record(&mut self) -> io::Result<Option<Raw>> {
        let mut p = std::mem::take(&mut self.partial);
        loop {
            let before = self.line;
            let b = match self.byte() {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    self.partial = p;
                    return Err(e);
                }
            };
            let terminator = b == b'\n' || b == b'\r';
            if p.line.is_none() {
                // Empty lines before a record are no record.
                if !terminator {
                    p.line = Some(before);
                    p.bytes.push(b);
                    p.state = Self::step(p.state, b).0;
                    if b == b',' {
                        p.field += 1;
                    }
                }
                continue;
            }
            if p.cut {
                // Over the limit: skip to the next line break, quoted or not.
                if terminator {
                    break;
                }
                continue;
            }
            if terminator && matches!(p.state, State::Quoted) {
                p.unclosed = true;
                break;
            }
            let (next, ends) = Self::step(p.state, b);
            if ends {
                break;
            }
            if b == b',' && matches!(next, State::FieldStart) {
                p.field += 1;
            }
            p.state = next;
            if p.bytes.len() >= MAX_RECORD_BYTES {
                p.cut = true;
                continue;
            }
            p.bytes.push(b);
        }
        Ok(p.line.map(|line| {
            if p.cut {
                Raw::TooLong { line }
            } else if p.unclosed || matches!(p.state, State::Quoted) {
                // The input's end inside a quote is the same mistake.
                Raw::Unclosed {
                    line,
                    field: p.field,
                    bytes: p.bytes,
                }
            } else {
                Raw::Record {
                    line,
                    bytes: p.bytes,
                }
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
                Raw::Unclosed { line, field, .. } => (line, format!("<unclosed in field {field}>")),
            });
        }
        out
    }

    #[test]
    fn records_split_where_csv_splits_them() {
        assert_eq!(
            split(b"\xef\xbb\xbfa,b\r\n\n\"x,y\",\"q\"\"\",\"\"\rz\"w\",5\" tv\n"),
            vec![
                (1, "a,b".into()),
                (3, "\"x,y\",\"q\"\"\",\"\"".into()),
                (3, "z\"w\",5\" tv".into()),
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

    #[test]
    fn a_line_ending_inside_a_quote_ends_its_record_and_the_next_line_is_read() {
        assert_eq!(
            split(b"a,\"open, never closed,b\nc,\"d\"\n\"x\r\ne,f\n,\"g\"\"\n\"tail"),
            vec![
                (1, "<unclosed in field 1>".into()),
                (2, "c,\"d\"".into()),
                (3, "<unclosed in field 0>".into()),
                (4, "e,f".into()),
                (5, "<unclosed in field 1>".into()),
                (6, "<unclosed in field 0>".into()),
            ]
        );
    }
}
