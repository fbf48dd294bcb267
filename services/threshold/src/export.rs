//! `threshold export attempts|parcels|grants`: flat fact tables for
//! analysts' SQL tools, as Parquet or CSV.
//!
//! It folds the embedded log of `--data` into [`Facts`], read-only and page
//! by page, so a running server is not disturbed, then writes one file per
//! table. The rows are those of parcels (grants) due in `--from`..`--to`,
//! the days `threshold report attempts` filters by. Nothing personal is in
//! them: see [`threshold_projections::Facts`] for what is left out. The
//! schema is documented in the README's "Exports" section; a change to a
//! column there is a change here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, StringBuilder, TimestampMicrosecondBuilder, UInt32Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, NaiveDate, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use threshold_log::Position;
use threshold_projections::{
    AttemptFact, Facts, GrantFact, ParcelFact, fallback_name, method_name, reason_name,
    service_name,
};

use crate::BoxError;
use crate::progress::{Progress, Unit};

/// The tables `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Table {
    /// One row per delivery attempt.
    Attempts,
    /// One row per parcel, as it stands.
    Parcels,
    /// One row per in-home access grant.
    Grants,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Attempts => "attempts",
            Table::Parcels => "parcels",
            Table::Grants => "grants",
        }
    }
}

/// File formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Apache Parquet, Snappy-compressed, typed columns.
    Parquet,
    /// Comma-separated values with a header row; dates ISO 8601, instants
    /// RFC 3339 in UTC.
    Csv,
}

/// Options of `threshold export`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Which table.
    table: Table,
    /// The data directory of the embedded log.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// Only parcels (grants) due from this local day on (YYYY-MM-DD).
    #[arg(long)]
    from: Option<NaiveDate>,
    /// Only parcels (grants) due up to this local day (YYYY-MM-DD).
    #[arg(long)]
    to: Option<NaiveDate>,
    /// parquet or csv.
    #[arg(long, value_enum, default_value = "parquet")]
    format: Format,
    /// The directory to write `<table>.parquet` (or `.csv`) into; made if
    /// missing.
    #[arg(long)]
    out: PathBuf,
}

/// Events read from the log per page.
const PAGE: usize = 20_000;
/// Rows per Parquet row group batch.
const BATCH: usize = 65_536;

pub(crate) fn export(args: Args) -> Result<(), BoxError> {
    if let (Some(from), Some(to)) = (args.from, args.to)
        && from > to
    {
        return Err(format!("--from {from} is after --to {to}").into());
    }
    let facts = fold(&args.data)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("making {}: {e}", args.out.display()))?;
    let ext = match args.format {
        Format::Parquet => "parquet",
        Format::Csv => "csv",
    };
    let path = args.out.join(format!("{}.{ext}", args.table.name()));
    let in_range = |day: Option<NaiveDate>| {
        day.is_some_and(|d| args.from.is_none_or(|f| d >= f) && args.to.is_none_or(|t| d <= t))
    };
    let table = match args.table {
        Table::Attempts => attempts(
            facts
                .attempts()
                .iter()
                .filter(|a| in_range(Some(a.day)))
                .collect(),
        ),
        Table::Parcels => parcels(
            facts
                .parcels()
                .iter()
                .filter(|p| in_range(Some(p.day)))
                .collect(),
        ),
        Table::Grants => grants(facts.grants().iter().filter(|g| in_range(g.day)).collect()),
    };
    // Written beside, then renamed: a reader never sees half a file.
    let partial = path.with_extension(format!("{ext}.partial"));
    let rows = table.rows();
    match args.format {
        Format::Parquet => table.parquet(&partial)?,
        Format::Csv => table.csv(&partial)?,
    }
    std::fs::rename(&partial, &path)
        .map_err(|e| format!("renaming {} to {}: {e}", partial.display(), path.display()))?;
    println!("export: wrote {rows} rows to {}", path.display());
    Ok(())
}

/// The whole log of `data`, folded.
fn fold(data: &Path) -> Result<Facts, BoxError> {
    let head = threshold_log::embedded::stats(data)?.head;
    let progress = Progress::new("export", Unit::Items("events"), head.0);
    let mut facts = Facts::default();
    let mut after = Position::ORIGIN;
    loop {
        let page = threshold_log::embedded::read_only(data, after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for e in &page {
            facts.apply(e);
        }
        progress.set(after.0);
    }
    progress.finish(&format!("{} events read", after.0));
    Ok(facts)
}

/// A table's columns, typed.
enum Column {
    Text(&'static str, StringBuilder, bool),
    Date(&'static str, Date32Builder, bool),
    Instant(&'static str, TimestampMicrosecondBuilder, bool),
    Count(&'static str, UInt32Builder, bool),
    Flag(&'static str, BooleanBuilder),
}

fn epoch_days(d: NaiveDate) -> i32 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch is a date");
    i32::try_from((d - epoch).num_days()).unwrap_or(i32::MAX)
}

/// Rows as typed columns, and how to write them.
struct TableData {
    columns: Vec<Column>,
    rows: usize,
}

impl TableData {
    fn rows(&self) -> usize {
        self.rows
    }

    fn schema(&self) -> Arc<Schema> {
        let utc = Some(Arc::<str>::from("UTC"));
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| match c {
                    Column::Text(n, _, null) => Field::new(*n, DataType::Utf8, *null),
                    Column::Date(n, _, null) => Field::new(*n, DataType::Date32, *null),
                    Column::Instant(n, _, null) => Field::new(
                        *n,
                        DataType::Timestamp(TimeUnit::Microsecond, utc.clone()),
                        *null,
                    ),
                    Column::Count(n, _, null) => Field::new(*n, DataType::UInt32, *null),
                    Column::Flag(n, _) => Field::new(*n, DataType::Boolean, false),
                })
                .collect::<Vec<_>>(),
        ))
    }

    /// The columns as Arrow arrays, in schema order.
    fn finish(&mut self) -> Vec<ArrayRef> {
        self.columns
            .iter_mut()
            .map(|c| -> ArrayRef {
                match c {
                    Column::Text(_, b, _) => Arc::new(b.finish()),
                    Column::Date(_, b, _) => Arc::new(b.finish()),
                    Column::Instant(_, b, _) => Arc::new(b.finish().with_timezone("UTC")),
                    Column::Count(_, b, _) => Arc::new(b.finish()),
                    Column::Flag(_, b) => Arc::new(b.finish()),
                }
            })
            .collect()
    }

    fn parquet(mut self, path: &Path) -> Result<(), BoxError> {
        let schema = self.schema();
        let file =
            std::fs::File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(BATCH))
            .build();
        let mut writer = ArrowWriter::try_new(file, Arc::clone(&schema), Some(props))?;
        let batch = RecordBatch::try_new(schema, self.finish())?;
        let mut start = 0;
        while start < batch.num_rows() {
            let len = BATCH.min(batch.num_rows() - start);
            writer.write(&batch.slice(start, len))?;
            start += len;
        }
        writer.close()?;
        Ok(())
    }

    fn csv(mut self, path: &Path) -> Result<(), BoxError> {
        let schema = self.schema();
        let mut w = csv::Writer::from_path(path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        w.write_record(schema.fields().iter().map(|f| f.name().as_str()))?;
        let arrays = self.finish();
        for row in 0..self.rows {
            let cells = arrays.iter().map(|a| cell(a, row));
            w.write_record(cells)?;
        }
        w.flush()
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(())
    }
}

/// One CSV cell: empty for null.
fn cell(a: &ArrayRef, row: usize) -> String {
    use arrow_array::cast::AsArray as _;
    use arrow_array::types::{Date32Type, TimestampMicrosecondType, UInt32Type};
    if a.is_null(row) {
        return String::new();
    }
    match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().value(row).to_owned(),
        DataType::Date32 => {
            let days = a.as_primitive::<Date32Type>().value(row);
            NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|e| e.checked_add_signed(chrono::Duration::days(days.into())))
                .map_or_else(String::new, |d| d.to_string())
        }
        DataType::Timestamp(..) => {
            let us = a.as_primitive::<TimestampMicrosecondType>().value(row);
            DateTime::<Utc>::from_timestamp_micros(us).map_or_else(String::new, |t| {
                t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            })
        }
        DataType::UInt32 => a.as_primitive::<UInt32Type>().value(row).to_string(),
        DataType::Boolean => a.as_boolean().value(row).to_string(),
        _ => String::new(),
    }
}

fn text(name: &'static str, nullable: bool) -> Column {
    Column::Text(name, StringBuilder::new(), nullable)
}
fn date(name: &'static str, nullable: bool) -> Column {
    Column::Date(name, Date32Builder::new(), nullable)
}
fn instant(name: &'static str, nullable: bool) -> Column {
    Column::Instant(name, TimestampMicrosecondBuilder::new(), nullable)
}
fn count(name: &'static str, nullable: bool) -> Column {
    Column::Count(name, UInt32Builder::new(), nullable)
}

/// Appends one row's values to the columns, in order.
enum Value {
    Text(Option<String>),
    Date(Option<NaiveDate>),
    Instant(Option<DateTime<Utc>>),
    Count(Option<u32>),
    Flag(bool),
}

fn push(columns: &mut [Column], values: Vec<Value>) {
    for (c, v) in columns.iter_mut().zip(values) {
        match (c, v) {
            (Column::Text(_, b, _), Value::Text(v)) => b.append_option(v),
            (Column::Date(_, b, _), Value::Date(v)) => b.append_option(v.map(epoch_days)),
            (Column::Instant(_, b, _), Value::Instant(v)) => {
                b.append_option(v.map(|t| t.timestamp_micros()));
            }
            (Column::Count(_, b, _), Value::Count(v)) => b.append_option(v),
            (Column::Flag(_, b), Value::Flag(v)) => b.append_value(v),
            _ => unreachable!("a value of the column's own type"),
        }
    }
}

fn attempts(rows: Vec<&AttemptFact>) -> TableData {
    let mut columns = vec![
        text("parcel_id", false),
        text("partner", false),
        text("country", false),
        text("depot", false),
        date("day", false),
        text("service", false),
        count("attempt", false),
        instant("started_at", false),
        date("started_on", false),
        count("local_hour", false),
        text("outcome", false),
        text("method", true),
        text("reason", true),
    ];
    for a in &rows {
        push(
            &mut columns,
            vec![
                Value::Text(Some(a.parcel_id.clone())),
                Value::Text(Some(a.partner.clone())),
                Value::Text(Some(a.country.code().to_owned())),
                Value::Text(Some(a.depot.clone())),
                Value::Date(Some(a.day)),
                Value::Text(Some(service_name(a.service))),
                Value::Count(Some(a.attempt)),
                Value::Instant(Some(a.started_at)),
                Value::Date(Some(a.started_on)),
                Value::Count(Some(a.local_hour)),
                Value::Text(Some(a.outcome.as_str().to_owned())),
                Value::Text(a.method.map(method_name)),
                Value::Text(a.reason.map(reason_name)),
            ],
        );
    }
    TableData {
        columns,
        rows: rows.len(),
    }
}

fn parcels(rows: Vec<&ParcelFact>) -> TableData {
    let mut columns = vec![
        text("parcel_id", false),
        text("partner", false),
        text("country", false),
        text("depot", false),
        date("day", false),
        text("service", false),
        count("attempts", false),
        text("method", true),
        count("delivered_on_attempt", true),
        Column::Flag("returned", BooleanBuilder::new()),
    ];
    for p in &rows {
        push(
            &mut columns,
            vec![
                Value::Text(Some(p.parcel_id.clone())),
                Value::Text(Some(p.partner.clone())),
                Value::Text(Some(p.country.code().to_owned())),
                Value::Text(Some(p.depot.clone())),
                Value::Date(Some(p.day)),
                Value::Text(Some(service_name(p.service))),
                Value::Count(Some(p.attempts)),
                Value::Text(p.method.map(method_name)),
                Value::Count(p.delivered_on_attempt),
                Value::Flag(p.returned),
            ],
        );
    }
    TableData {
        columns,
        rows: rows.len(),
    }
}

fn grants(rows: Vec<&GrantFact>) -> TableData {
    let mut columns = vec![
        text("grant_id", false),
        text("country", true),
        date("day", true),
        instant("window_start", true),
        instant("window_end", true),
        count("parcels", false),
        text("fallback", false),
        instant("issued_at", false),
        count("unlocks_authorized", false),
        count("unlocks_denied", false),
        text("status", false),
    ];
    for g in &rows {
        push(
            &mut columns,
            vec![
                Value::Text(Some(g.grant_id.clone())),
                Value::Text(g.country.map(|c| c.code().to_owned())),
                Value::Date(g.day),
                Value::Instant(g.window_start),
                Value::Instant(g.window_end),
                Value::Count(Some(g.parcels)),
                Value::Text(Some(fallback_name(g.fallback))),
                Value::Instant(Some(g.issued_at)),
                Value::Count(Some(g.unlocks_authorized)),
                Value::Count(Some(g.unlocks_denied)),
                Value::Text(Some(g.status.as_str().to_owned())),
            ],
        );
    }
    TableData {
        columns,
        rows: rows.len(),
    }
}
