//! Daily manifests: the CSV a route planner loads, one row per parcel.
//!
//! [`ManifestReader`] reads any `io::Read` one row at a time, so a manifest
//! of a million rows never sits in memory. Each row comes out either as a
//! validated [`pb::ParcelManifested`] or as a [`RowError`] naming its line and
//! field; a bad row never stops the rows after it. [`RejectsWriter`] writes
//! the rejected rows back, as they were, with an `error` column: fix them and
//! load the file again (the `error` column is ignored on load).
//!
//! A server reading a manifest off the network must not hold a thread while
//! it waits for the client's next bytes: [`ManifestReader::pushed`] makes a
//! reader that is handed the bytes as they arrive ([`ManifestReader::push`],
//! [`ManifestReader::end`]) and answers [`Next::NeedInput`] when it has read
//! everything it was given, keeping a record cut off between two pushes.
//!
//! # Columns
//!
//! The header names the columns; their order is free. Required:
//!
//! | column | example | meaning |
//! |---|---|---|
//! | `parcel_id` | `SE-00001234` | the carrier's label; A–Z a–z 0–9 - _ . : |
//! | `partner_id` | `nordshop` | the retailer the parcel belongs to |
//! | `country` | `SE` | DK, FI, NO or SE |
//! | `depot_id` | `STO-1` | the depot it leaves from |
//! | `delivery_date` | `2026-11-23` | the depot's local day |
//! | `address` | `Drottninggatan 1` | street address |
//! | `postal_code` | `111 51` | |
//! | `city` | `Stockholm` | |
//! | `latitude` | `59.3326` | WGS84 degrees |
//! | `longitude` | `18.0649` | WGS84 degrees |
//! | `service` | `in_home` | in_home, doorstep, locker or pickup_point |
//! | `weight_kg` | `1.25` | more than 0, at most 1000 |
//! | `window_start` | `09:00` | local time; required for in_home, else empty |
//! | `window_end` | `12:00` | local time, after `window_start` |
//!
//! Windows are on the delivery date in the country's zone; a window across a
//! DST change is resolved as [`threshold_domain::country::local_window`] does.
//!
//! # Limits
//!
//! A manifest comes from outside, so what one row may cost is bounded:
//!
//! | what | limit | when over it |
//! |---|---|---|
//! | a record (one row, one line) | [`MAX_RECORD_BYTES`], 8 KiB | the row is rejected (field `row`), cut off at the limit |
//! | a field | [`MAX_FIELD_BYTES`], 1 KiB | the row is rejected, naming the field |
//! | an id (`parcel_id`, `partner_id`, `depot_id`) | [`MAX_ID_BYTES`], 64 bytes | the row is rejected, naming the field |
//! | fields of a row | the header's | more: the row is rejected (a comma in a field not quoted); fewer: rejected naming the first missing column |
//!
//! A record over the limit is never buffered whole: the reader keeps its
//! first [`MAX_RECORD_BYTES`], then skips to the next line break and reads
//! on from there as usual. A 100 MB line therefore costs one rejected row
//! and no memory beyond the limit; the rows after it are read.
//!
//! No field of a manifest holds a line break, so a row is one line: a line
//! that ends inside a quoted field (a closing quote left out) is rejected,
//! naming the column the quote opened, and the next line is read as a row
//! of its own. Read as CSV allows, the field would run on into the rows
//! below until a quote closed it, and the rest of that line would fill the
//! row's other columns: a row accepted with another's place, and the rows
//! in between lost without a word.
//! A header over the record limit refuses the whole file
//! ([`Error::HeaderTooLong`]). The real rows are far below these limits (a
//! full row of the bundled samples is under 200 bytes).

use std::collections::HashMap;
use std::io;

use chrono::{NaiveDate, NaiveTime};
use threshold_domain::country::{date_to_proto, local_window};
use threshold_domain::parcel::validate_manifested;
use threshold_domain::{Country, DomainError, pb};

/// The columns of a manifest, in the order rejects files write them.
pub const COLUMNS: [&str; 14] = [
    "parcel_id",
    "partner_id",
    "country",
    "depot_id",
    "delivery_date",
    "address",
    "postal_code",
    "city",
    "latitude",
    "longitude",
    "service",
    "weight_kg",
    "window_start",
    "window_end",
];

/// The column a rejects file adds; ignored when a manifest is read.
pub const ERROR_COLUMN: &str = "error";

/// The most bytes one record (a row: one line) may have.
pub const MAX_RECORD_BYTES: usize = 8 * 1024;
/// The most bytes one field may have, after trimming.
pub const MAX_FIELD_BYTES: usize = 1024;
/// The most bytes an id (`parcel_id`, `partner_id`, `depot_id`) may have.
pub const MAX_ID_BYTES: usize = 64;
/// The columns held to [`MAX_ID_BYTES`].
const ID_COLUMNS: [&str; 3] = ["parcel_id", "partner_id", "depot_id"];

/// A manifest that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The header lacks required columns.
    #[error("line 1: the header lacks column(s) {}; expected {}", missing.join(", "), COLUMNS.join(","))]
    MissingColumns {
        /// The missing column names.
        missing: Vec<String>,
    },
    /// A column appears twice in the header.
    #[error("line 1: column {0} appears twice")]
    DuplicateColumn(String),
    /// The header is longer than a record may be.
    #[error("line {line}: the header is longer than {limit} bytes, the limit of a record")]
    HeaderTooLong {
        /// The line it starts on.
        line: u64,
        /// [`MAX_RECORD_BYTES`].
        limit: usize,
    },
    /// The file could not be read.
    #[error("cannot read the manifest: {0}")]
    Read(#[from] csv::Error),
}

/// One row that was not accepted, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    /// The line the row starts on (the header is line 1).
    pub line: u64,
    /// The column at fault (or `row` when the row as a whole is).
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// The row's values by column, as read, for the rejects file.
    pub values: Vec<String>,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, field {}: {}",
            self.line, self.field, self.message
        )
    }
}

impl std::error::Error for RowError {}

/// One row of a manifest, accepted or not.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    /// A valid parcel.
    Accepted {
        /// The line it came from.
        line: u64,
        /// The parcel, ready to be manifested.
        parcel: Box<pb::ParcelManifested>,
        /// The row's values as read, in [`COLUMNS`] order: what a rejects
        /// file gets if a later check refuses the parcel.
        values: Vec<String>,
    },
    /// A row that was refused.
    Rejected(RowError),
}

/// What a [`ManifestReader`] has next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// A row.
    Row(Row),
    /// Everything pushed so far is read: push more, or end the input.
    NeedInput,
    /// The input has no more rows.
    End,
}

/// A manifest's bytes as they arrive, for [`ManifestReader::pushed`]: reads
/// what was pushed, then answers `WouldBlock` until more is pushed or the
/// input is ended.
#[derive(Debug, Default)]
pub struct Pushed {
    bytes: Vec<u8>,
    pos: usize,
    ended: bool,
    failed: Option<io::Error>,
}

impl io::Read for Pushed {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.bytes.len() {
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            if self.ended {
                return Ok(0);
            }
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = out.len().min(self.bytes.len() - self.pos);
        out[..n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads a manifest one row at a time.
#[derive(Debug)]
pub struct ManifestReader<R> {
    records: split::Records<R>,
    /// Parses one record at a time, fed by `records`.
    csv: csv::Reader<split::Feed>,
    /// Column name → index in the file; empty until the header is read.
    columns: HashMap<&'static str, usize>,
    /// The fields of the header, known columns or not.
    header_len: usize,
    /// The header was read and checked.
    started: bool,
    manifest_id: String,
    record: csv::StringRecord,
    /// The input failed: nothing more is read.
    done: bool,
}

/// What became of one record handed to the CSV parser.
enum Parsed {
    /// The input has no more records.
    End,
    /// The record was parsed into `self.record`; it starts on this line.
    Record(u64),
    /// The record starting on this line was over [`MAX_RECORD_BYTES`].
    TooLong(u64),
    /// The record could not be parsed: a rejected row.
    Rejected(RowError),
}

impl ManifestReader<Pushed> {
    /// A reader of bytes pushed to it as they arrive, checking the header
    /// once it has come in. `manifest_id` is recorded on every parcel. Read
    /// it with [`ManifestReader::next_row`], never as an iterator.
    pub fn pushed(manifest_id: impl Into<String>) -> Self {
        Self::unstarted(Pushed::default(), manifest_id)
    }

    /// Hands over the next bytes of the input.
    pub fn push(&mut self, bytes: &[u8]) {
        let input = self.records.input_mut();
        input.bytes.drain(..input.pos);
        input.pos = 0;
        input.bytes.extend_from_slice(bytes);
    }

    /// Ends the input: once what was pushed is read, the rows end.
    pub fn end(&mut self) {
        self.records.input_mut().ended = true;
    }

    /// Fails the input: once what was pushed is read, a last rejected row
    /// says `error` and the rows end.
    pub fn fail(&mut self, error: io::Error) {
        self.records.input_mut().failed = Some(error);
    }
}

impl<R: io::Read> ManifestReader<R> {
    /// Starts reading `input`, checking its header. `manifest_id` is recorded
    /// on every parcel so it can be traced back to this file.
    pub fn new(input: R, manifest_id: impl Into<String>) -> Result<Self, Error> {
        let mut reader = Self::unstarted(input, manifest_id);
        if reader.read_header()? {
            Ok(reader)
        } else {
            Err(Error::Read(csv::Error::from(io::Error::from(
                io::ErrorKind::WouldBlock,
            ))))
        }
    }

    fn unstarted(input: R, manifest_id: impl Into<String>) -> Self {
        let csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(split::Feed::default());
        Self {
            records: split::Records::new(input),
            csv,
            columns: HashMap::new(),
            header_len: 0,
            started: false,
            manifest_id: manifest_id.into(),
            record: csv::StringRecord::new(),
            done: false,
        }
    }

    /// Reads and checks the header; `false` when the input would block
    /// before its end.
    fn read_header(&mut self) -> Result<bool, Error> {
        let header = match self.parse() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(csv::Error::from(e).into()),
            Ok(Parsed::End) => csv::StringRecord::new(),
            Ok(Parsed::Record(_)) => self.record.clone(),
            Ok(Parsed::TooLong(line)) => {
                return Err(Error::HeaderTooLong {
                    line,
                    limit: MAX_RECORD_BYTES,
                });
            }
            Ok(Parsed::Rejected(e)) => {
                return Err(Error::Read(csv::Error::from(io::Error::new(
                    io::ErrorKind::InvalidData,
                    e.to_string(),
                ))));
            }
        };
        let mut columns = HashMap::new();
        for (i, name) in header.iter().enumerate() {
            let name = name.trim().to_ascii_lowercase();
            if let Some(known) = COLUMNS.iter().find(|c| **c == name)
                && columns.insert(*known, i).is_some()
            {
                return Err(Error::DuplicateColumn(name));
            }
        }
        let missing: Vec<String> = COLUMNS
            .iter()
            .filter(|c| !columns.contains_key(*c))
            .map(|c| (*c).to_owned())
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingColumns { missing });
        }
        self.columns = columns;
        self.header_len = header.len();
        self.started = true;
        Ok(true)
    }

    /// The next row, or what the reader waits for. The header is read
    /// first: a header that cannot be read is the error, once. An input
    /// that answers `WouldBlock` (a [`Pushed`] one with nothing left) gives
    /// [`Next::NeedInput`]; any other failure of the input is one last
    /// rejected row, then [`Next::End`].
    pub fn next_row(&mut self) -> Result<Next, Error> {
        if !self.started {
            if self.done {
                return Ok(Next::End);
            }
            match self.read_header() {
                Ok(true) => {}
                Ok(false) => return Ok(Next::NeedInput),
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            }
        }
        loop {
            if self.done {
                return Ok(Next::End);
            }
            let line = match self.parse() {
                Ok(Parsed::End) => return Ok(Next::End),
                Ok(Parsed::Record(line)) => line,
                // A row the CSV layer cannot read (bad UTF-8, over the
                // record limit): report it and carry on with the next.
                Ok(Parsed::Rejected(e)) => return Ok(Next::Row(Row::Rejected(e))),
                Ok(Parsed::TooLong(line)) => {
                    return Ok(Next::Row(Row::Rejected(RowError {
                        line,
                        field: "row".into(),
                        message: format!(
                            "the record is longer than {MAX_RECORD_BYTES} bytes, the limit: \
                             it was cut off there and not read; reading goes on at the next line"
                        ),
                        values: Vec::new(),
                    })));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Next::NeedInput),
                Err(e) => {
                    // The input itself failed: say so once, and stop.
                    self.done = true;
                    return Ok(Next::Row(Row::Rejected(RowError {
                        line: self.records.line(),
                        field: "row".into(),
                        message: format!("cannot read the manifest: {e}"),
                        values: Vec::new(),
                    })));
                }
            };
            // Blank lines between rows are not rows.
            if self.record.iter().all(str::is_empty) {
                continue;
            }
            return Ok(Next::Row(match self.row(line) {
                Ok(parcel) => Row::Accepted {
                    line,
                    parcel: Box::new(parcel),
                    values: self.values(),
                },
                Err((field, message)) => Row::Rejected(RowError {
                    line,
                    field,
                    message,
                    values: self.values(),
                }),
            }));
        }
    }

    /// Splits off the next record and parses it. An error of the input
    /// itself is returned; what is wrong with one record is a rejection.
    fn parse(&mut self) -> Result<Parsed, io::Error> {
        let raw = match self.records.next_record()? {
            None => return Ok(Parsed::End),
            Some(split::Raw::TooLong { line }) => return Ok(Parsed::TooLong(line)),
            Some(split::Raw::Unclosed {
                line,
                field,
                mut bytes,
            }) => {
                // Its values as far as the line goes, the quote closed
                // there, for the rejects file.
                bytes.push(b'"');
                self.csv.get_mut().set(bytes);
                let values = match self.csv.read_record(&mut self.record) {
                    Ok(_) if self.started => self.values(),
                    _ => Vec::new(),
                };
                let column = self
                    .columns
                    .iter()
                    .find(|(_, i)| **i == field)
                    .map_or_else(|| format!("column {}", field + 1), |(c, _)| (*c).to_owned());
                return Ok(Parsed::Rejected(RowError {
                    line,
                    field: if self.started { column } else { "row".into() },
                    message: "a quote opened here is not closed on this line: a field may \
                              not hold a line break (a closing quote left out?); the row was \
                              not read, and reading goes on at the next line"
                        .into(),
                    values,
                }));
            }
            Some(split::Raw::Record { line, bytes }) => (line, bytes),
        };
        let (line, bytes) = raw;
        self.csv.get_mut().set(bytes);
        match self.csv.read_record(&mut self.record) {
            Ok(_) => Ok(Parsed::Record(line)),
            Err(e) => {
                // csv counts lines of what it was fed, one record at a
                // time: say what is wrong without its position.
                let message = match e.kind() {
                    csv::ErrorKind::Utf8 { err, .. } => {
                        format!("field {} is not valid UTF-8", err.field() + 1)
                    }
                    _ => e.to_string(),
                };
                Ok(Parsed::Rejected(RowError {
                    line,
                    field: "row".into(),
                    message,
                    values: Vec::new(),
                }))
            }
        }
    }

    fn values(&self) -> Vec<String> {
        COLUMNS
            .iter()
            .map(|c| {
                self.record
                    .get(self.columns[c])
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    fn row(&self, line: u64) -> Result<pb::ParcelManifested, (String, String)> {
        let get = |c: &'static str| self.record.get(self.columns[c]).unwrap_or_default();
        let fail = |field: &str, message: String| (field.to_owned(), message);
        let required = |c: &'static str| {
            let v = get(c);
            if v.is_empty() {
                Err(fail(c, "is empty".into()))
            } else {
                Ok(v)
            }
        };
        // More fields than the header: a comma in a field that is not
        // quoted, and no telling which value belongs to which column (with
        // the last columns empty, the row's end looks like a spare comma).
        if self.record.len() > self.header_len {
            return Err(fail(
                "row",
                format!(
                    "the row has {} fields, the header {} (a comma in a field that is not \
                     quoted?)",
                    self.record.len(),
                    self.header_len,
                ),
            ));
        }
        if let Some(missing) = COLUMNS
            .iter()
            .find(|c| self.columns[*c] >= self.record.len())
        {
            return Err(fail(
                missing,
                format!(
                    "the row has {} fields, the header {}",
                    self.record.len(),
                    self.columns.len()
                ),
            ));
        }
        for c in COLUMNS {
            let (limit, what) = if ID_COLUMNS.contains(&c) {
                (MAX_ID_BYTES, "an id")
            } else {
                (MAX_FIELD_BYTES, "a field")
            };
            let len = get(c).len();
            if len > limit {
                return Err(fail(
                    c,
                    format!("is {len} bytes, over the limit of {limit} bytes for {what}"),
                ));
            }
        }
        let country: Country = required("country")?
            .parse()
            .map_err(|e: DomainError| fail("country", detail(e)))?;
        let date_text = required("delivery_date")?;
        let date = NaiveDate::parse_from_str(date_text, "%Y-%m-%d").map_err(|_| {
            fail(
                "delivery_date",
                format!("{date_text:?} is not a date YYYY-MM-DD"),
            )
        })?;
        let number = |c: &'static str| {
            let v = required(c)?;
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| fail(c, format!("{v:?} is not a number")))
        };
        let latitude = number("latitude")?;
        let longitude = number("longitude")?;
        let service = match required("service")?.to_ascii_lowercase().as_str() {
            "in_home" => pb::Service::InHome,
            "doorstep" => pb::Service::Doorstep,
            "locker" => pb::Service::Locker,
            "pickup_point" => pb::Service::PickupPoint,
            other => {
                return Err(fail(
                    "service",
                    format!("{other:?} is not one of in_home, doorstep, locker, pickup_point"),
                ));
            }
        };
        let weight = number("weight_kg")?;
        if !(weight > 0.0 && weight <= 1000.0) {
            return Err(fail("weight_kg", format!("{weight} is not in (0, 1000]")));
        }
        let time = |c: &'static str| -> Result<Option<NaiveTime>, (String, String)> {
            let v = get(c);
            if v.is_empty() {
                return Ok(None);
            }
            NaiveTime::parse_from_str(v, "%H:%M")
                .map(Some)
                .map_err(|_| fail(c, format!("{v:?} is not a local time HH:MM")))
        };
        let window = match (time("window_start")?, time("window_end")?) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(fail(
                    "window_end",
                    "is empty while window_start is set".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(fail(
                    "window_start",
                    "is empty while window_end is set".into(),
                ));
            }
            (Some(s), Some(e)) => {
                if e <= s {
                    return Err(fail(
                        "window_end",
                        format!("{e} is not after window_start {s}"),
                    ));
                }
                Some(
                    local_window(country, date.and_time(s), date.and_time(e))
                        .map_err(|e| fail("window_start", detail(e)))?,
                )
            }
        };
        let parcel = pb::ParcelManifested {
            parcel_id: required("parcel_id")?.to_owned(),
            partner_id: required("partner_id")?.to_owned(),
            country: country.to_proto() as i32,
            depot_id: required("depot_id")?.to_owned(),
            delivery_date: Some(date_to_proto(date)),
            address: Some(pb::Address {
                street: required("address")?.to_owned(),
                postal_code: required("postal_code")?.to_owned(),
                city: required("city")?.to_owned(),
                position: Some(pb::GeoPoint {
                    latitude,
                    longitude,
                }),
            }),
            service: service as i32,
            weight_grams: (weight * 1000.0).round() as u32,
            in_home_window: window,
            manifest_id: self.manifest_id.clone(),
            manifest_line: line,
            // Sealed by the manifest service before anything is stored.
            sealed_address: None,
            address_digest: Vec::new(),
        };
        // The domain's own rules, with its field names mapped to columns.
        validate_manifested(&parcel).map_err(|e| match &e {
            DomainError::Invalid { field, .. } => (column_of(field).to_owned(), detail(e)),
            _ => ("row".to_owned(), e.to_string()),
        })?;
        Ok(parcel)
    }
}

/// The message of a domain error without its "invalid <field>:" prefix.
fn detail(e: DomainError) -> String {
    match e {
        DomainError::Invalid { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// The manifest column a domain field comes from.
fn column_of(field: &str) -> &str {
    match field {
        "weight" => "weight_kg",
        "window" | "window.start_utc" => "window_start",
        "window.end_utc" => "window_end",
        "date" => "delivery_date",
        other => other,
    }
}

impl<R: io::Read> Iterator for ManifestReader<R> {
    type Item = Row;

    /// The next row. The iterator is for inputs that block until they have
    /// bytes: one that answers `WouldBlock` instead fails as any input
    /// error does, with one last rejected row.
    fn next(&mut self) -> Option<Row> {
        match self.next_row() {
            Ok(Next::Row(row)) => Some(row),
            Ok(Next::End) | Err(_) => None,
            Ok(Next::NeedInput) => {
                self.done = true;
                Some(Row::Rejected(RowError {
                    line: self.records.line(),
                    field: "row".into(),
                    message: format!(
                        "cannot read the manifest: {}",
                        io::Error::from(io::ErrorKind::WouldBlock)
                    ),
                    values: Vec::new(),
                }))
            }
        }
    }
}

/// Writes rejected rows as a manifest that can be fixed and loaded again.
#[derive(Debug)]
pub struct RejectsWriter<W: io::Write> {
    csv: csv::Writer<W>,
}

impl<W: io::Write> RejectsWriter<W> {
    /// Starts a rejects file on `output`, header first.
    pub fn new(output: W) -> Result<Self, Error> {
        let mut csv = csv::Writer::from_writer(output);
        csv.write_record(COLUMNS.iter().chain(std::iter::once(&ERROR_COLUMN)))?;
        Ok(Self { csv })
    }

    /// Adds one rejected row, as it was read, with its error.
    pub fn write(&mut self, rejected: &RowError) -> Result<(), Error> {
        let mut values = rejected.values.clone();
        values.resize(COLUMNS.len(), String::new());
        values.push(rejected.to_string());
        self.csv.write_record(&values)?;
        Ok(())
    }

    /// Flushes and returns the output.
    pub fn finish(self) -> Result<W, Error> {
        self.csv
            .into_inner()
            .map_err(|e| Error::Read(csv::Error::from(e.into_error())))
    }
}

mod split;

#[cfg(test)]
mod tests;
