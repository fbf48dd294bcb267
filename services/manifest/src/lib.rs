//! ManifestService: route planners load daily manifests.
//!
//! A load is a stream both ways. The file's bytes arrive in chunks and are
//! parsed row by row ([`threshold_manifest`]); each accepted row becomes a
//! `Manifest` command on its parcel, decided from the parcel's history in
//! the log and appended with the expected version, so a reloaded row is
//! recognised and a concurrent one cannot slip in twice. Refused rows go
//! back to the client as soon as they are decided; a summary ends the
//! stream. Nothing here holds the whole file.
//!
//! # What one load may cost
//!
//! A load comes from outside, so it is bounded ([`LoadLimits`]):
//!
//! - The parser never waits for the client on a thread: the bytes that
//!   arrived are parsed on the blocking pool in batches of at most
//!   [`PARSE_BATCH`] rows, and waiting for the next chunk is async. A client
//!   that stops sending holds no thread that the log or other callers need.
//! - A stalled stream ends: no chunk for [`IDLE_TIMEOUT`] (and a client
//!   that stops reading the replies as long) ends the load with
//!   `DEADLINE_EXCEEDED`, naming the manifest and the rows read. The rows
//!   decided before it stay loaded; loading the file again adds the rest
//!   (reloaded rows are recognised).
//! - At most [`CONCURRENT_LOADS`] loads run at once, and at most
//!   [`LOADS_PER_TENANT`] for one planner tenant (all planners of a depot,
//!   or all carrier-wide planners, count as one), so one tenant cannot take
//!   every load. A load over either answers `RESOURCE_EXHAUSTED` at once:
//!   try again when a load has ended.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use prost::Message as _;
use threshold_api::clock::Clock;
use threshold_api::v1::manifest_service_server::{ManifestService, ManifestServiceServer};
use threshold_api::v1::{
    LoadManifestReply, LoadSummary, ManifestChunk, RowRejected, load_manifest_reply,
};
use threshold_auth::{Principal, Role};
use threshold_domain::parcel::{Command, Parcel};
use threshold_domain::{Aggregate, Country, DomainError, EventId, ParcelId, StreamId, pb};
use threshold_log::{Decision, Error as LogError, EventLog, NewEvent};
use threshold_manifest::{ManifestReader, Next, Pushed, Row, RowError};
use threshold_privacy::Vault;
use threshold_status::{IntoStatus as _, ServiceError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// The largest manifest chunk accepted, in bytes (clients send 64 KiB).
pub const MAX_CHUNK: usize = 1024 * 1024;

/// How long a load waits for the client's next chunk (or for it to take a
/// reply) before it ends with `DEADLINE_EXCEEDED`.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Loads running at once on one server.
pub const CONCURRENT_LOADS: usize = 8;
/// Loads running at once for one planner tenant.
pub const LOADS_PER_TENANT: usize = 2;
/// The most rows parsed on a blocking thread at a time: the thread returns
/// to the pool between batches, and no more rows than this wait for their
/// decisions.
pub const PARSE_BATCH: usize = 256;

/// Chunks read ahead of the parser within one load (each at most
/// [`MAX_CHUNK`]).
const READ_AHEAD: usize = 4;
/// Rows decided at once within one load.
const CONCURRENT_ROWS: usize = 64;
/// Appends retried when another writer changed the parcel in between.
const CONFLICT_RETRIES: usize = 5;

/// Why a load failed as a whole (a single bad row never does).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifest cannot be read at all (its header, most often).
    #[error(transparent)]
    Manifest(#[from] threshold_manifest::Error),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The client's stream failed.
    #[error("the manifest stream broke off: {0}")]
    Stream(String),
    /// The vault sealing addresses failed.
    #[error(transparent)]
    Vault(#[from] threshold_privacy::Error),
    /// The client sent nothing (or took no reply) for the idle timeout.
    #[error(
        "manifest {manifest}: nothing arrived for {}s, so the load stopped after {rows} rows \
         ({accepted} accepted, which stay loaded); load the file again to add the rest",
        idle.as_secs_f64()
    )]
    Stalled {
        /// The manifest's id.
        manifest: String,
        /// The idle timeout.
        idle: Duration,
        /// Rows read and decided before it stopped.
        rows: u64,
        /// Of those, rows newly accepted.
        accepted: u64,
    },
    /// Too many loads run at once, on the server or for the caller's tenant.
    #[error("{0}; try again when a load has ended")]
    Busy(String),
}

/// The error contract's codes ([`threshold_status`]): each wrapped error
/// answers with its own; a broken client stream is `CANCELLED`, a stalled
/// one `DEADLINE_EXCEEDED`, a load over the limits `RESOURCE_EXHAUSTED`.
impl ServiceError for Error {
    fn code(&self) -> tonic::Code {
        match self {
            Error::Manifest(e) => e.code(),
            Error::Log(e) => e.code(),
            Error::Stream(_) => tonic::Code::Cancelled,
            Error::Vault(e) => e.code(),
            Error::Stalled { .. } => tonic::Code::DeadlineExceeded,
            Error::Busy(_) => tonic::Code::ResourceExhausted,
        }
    }

    fn reply(&self) -> String {
        match self {
            Error::Manifest(e) => e.reply(),
            Error::Log(e) => e.reply(),
            Error::Stream(_) | Error::Stalled { .. } | Error::Busy(_) => self.to_string(),
            Error::Vault(e) => e.reply(),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        e.into_status()
    }
}

/// What loads may cost; [`LoadLimits::default`] is the documented
/// constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadLimits {
    /// How long a load waits for the client ([`IDLE_TIMEOUT`]).
    pub idle_timeout: Duration,
    /// Loads at once on the server ([`CONCURRENT_LOADS`]).
    pub concurrent_loads: usize,
    /// Loads at once for one planner tenant ([`LOADS_PER_TENANT`]).
    pub loads_per_tenant: usize,
}

impl Default for LoadLimits {
    fn default() -> Self {
        Self {
            idle_timeout: IDLE_TIMEOUT,
            concurrent_loads: CONCURRENT_LOADS,
            loads_per_tenant: LOADS_PER_TENANT,
        }
    }
}

/// The loads `limits` allow at once.
fn quota(limits: &LoadLimits) -> threshold_auth::Quota {
    threshold_auth::Quota::new(limits.concurrent_loads, limits.loads_per_tenant)
}

/// The service, over any event log. Recipients' addresses are sealed in
/// `vault` under their household's key before anything is written: the log
/// never holds one in the clear.
#[derive(Clone)]
pub struct Manifests {
    log: Arc<dyn EventLog>,
    vault: Arc<Vault>,
    limits: LoadLimits,
    /// The loads running, in all and per planner tenant.
    running: threshold_auth::Quota,
    /// Whose time a load's rows are stamped with.
    clock: Clock,
}

impl Manifests {
    /// A service that writes to `log`, sealing addresses in `vault`, within
    /// the default [`LoadLimits`].
    pub fn new(log: Arc<dyn EventLog>, vault: Arc<Vault>) -> Self {
        Self {
            log,
            vault,
            limits: LoadLimits::default(),
            running: quota(&LoadLimits::default()),
            clock: Clock::System,
        }
    }

    /// Stamping a load that carries a simulation's time with it (on
    /// [`Clock::Simulated`]) rather than refusing it.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The same service within `limits`.
    pub fn with_limits(mut self, limits: LoadLimits) -> Self {
        self.running = quota(&limits);
        self.limits = limits;
        self
    }

    /// As a tonic service, ready to add to a server, refusing chunks larger
    /// than [`MAX_CHUNK`].
    pub fn into_server(self) -> ManifestServiceServer<Self> {
        ManifestServiceServer::new(self).max_decoding_message_size(MAX_CHUNK)
    }

    /// A place for one more load of `tenant`, or why there is none.
    fn admit(&self, tenant: &str) -> Result<threshold_auth::Place, Error> {
        self.running.take(tenant).map_err(|full| {
            Error::Busy(match full {
                threshold_auth::Full::Caller(n) => {
                    format!("planner tenant {tenant:?} already runs {n} manifest loads, its limit")
                }
                threshold_auth::Full::Total(n) => {
                    format!("the server already runs {n} manifest loads, its limit")
                }
            })
        })
    }
}

/// What became of one accepted row.
enum Decided {
    Accepted,
    Unchanged,
    Refused(RowError),
    /// Not a row: the client stalled after the rows before it.
    Stalled,
}

/// Decides one manifest row on its parcel's stream, stamping its event
/// `at` the load's time (a simulation's), or now.
async fn decide(
    log: &dyn EventLog,
    vault: &Vault,
    at: Option<DateTime<Utc>>,
    line: u64,
    mut parcel: pb::ParcelManifested,
    values: Vec<String>,
) -> Result<Decided, Error> {
    let refuse = |field: &str, message: String| {
        Ok(Decided::Refused(RowError {
            line,
            field: field.to_owned(),
            message,
            values: values.clone(),
        }))
    };
    let id = match ParcelId::new(&parcel.parcel_id) {
        Ok(id) => id,
        Err(e) => return refuse("parcel_id", e.to_string()),
    };
    let stream = StreamId::parcel(&id);
    let country = Country::from_proto(parcel.country).ok();
    seal_address(vault, &mut parcel, &stream, country)?;
    let partner = parcel.partner_id.clone();
    let command = Command::Manifest(Box::new(parcel));
    let mut decision = Decision::<Parcel>::new(log, &stream)
        .retries(CONFLICT_RETRIES)
        .recent();
    while let Some(known) = decision.next().await? {
        let events = match known.state.decide(&command) {
            // Refused, or nothing to write, on a state that may lack
            // another process's latest events: decide again on the stream
            // as the log holds it.
            Ok(events) if events.is_empty() && decision.confirm() => continue,
            Err(_) if decision.confirm() => continue,
            Ok(events) => events,
            Err(DomainError::AlreadyExists(what)) => {
                return refuse(
                    "parcel_id",
                    format!("{what} is already manifested with different content"),
                );
            }
            Err(DomainError::Invalid { field, reason }) => return refuse(field, reason),
            Err(e) => return refuse("row", e.to_string()),
        };
        if events.is_empty() {
            return Ok(Decided::Unchanged);
        }
        let new = events
            .into_iter()
            .map(|e| {
                let mut n = NewEvent::new(
                    EventId::new(),
                    &Parcel::into_domain(e.clone()),
                    at.unwrap_or_else(Utc::now),
                )
                .tenant(partner.clone());
                if let Some(c) = country {
                    n = n.country(c);
                }
                (e, n)
            })
            .collect();
        // `None`: someone else manifested it in between; decide again on
        // the new history.
        if decision.append(known, new).await?.is_some() {
            return Ok(Decided::Accepted);
        }
    }
    refuse(
        "parcel_id",
        format!("{id} kept changing while it was being manifested; load it again"),
    )
}

/// Moves a row's address into `sealed_address`, under its household's key,
/// bound to the parcel's stream.
fn seal_address(
    vault: &Vault,
    parcel: &mut pb::ParcelManifested,
    stream: &StreamId,
    country: Option<Country>,
) -> Result<(), Error> {
    let Some(address) = parcel.address.take() else {
        return Ok(());
    };
    let household = vault.household(&[
        &address.street,
        &address.postal_code,
        &address.city,
        country.map_or("", |c| c.code()),
    ])?;
    let context = stream.to_string();
    parcel.address_digest = vault.digest(&household.subject, &address.encode_to_vec())?;
    parcel.sealed_address = Some(vault.seal_message(&household.subject, &context, &address)?);
    Ok(())
}

fn rejected(e: RowError) -> LoadManifestReply {
    LoadManifestReply {
        reply: Some(load_manifest_reply::Reply::Rejected(RowRejected {
            line: e.line,
            field: e.field,
            message: e.message,
            values: e.values,
        })),
    }
}

/// What the parser hands on to the decisions.
enum Input {
    /// A row, accepted or refused by the reader.
    Row(Row),
    /// The manifest cannot be read at all (its header).
    Failed(Error),
    /// The client sent nothing for the idle timeout: no more rows come.
    Stalled,
}

/// Whether a parsed batch wants more input.
enum Wanted {
    /// The batch is full: parse on.
    More,
    /// Everything pushed is read: wait for the client.
    Input,
    /// The rows have ended.
    Nothing,
}

/// Parses at most [`PARSE_BATCH`] rows of what was pushed. Run on the
/// blocking pool: it never waits for input, it only costs CPU.
fn parse_batch(mut reader: ManifestReader<Pushed>) -> (ManifestReader<Pushed>, Vec<Input>, Wanted) {
    let mut batch = Vec::new();
    while batch.len() < PARSE_BATCH {
        match reader.next_row() {
            Ok(Next::Row(row)) => batch.push(Input::Row(row)),
            Ok(Next::NeedInput) => return (reader, batch, Wanted::Input),
            Ok(Next::End) => return (reader, batch, Wanted::Nothing),
            Err(e) => {
                batch.push(Input::Failed(e.into()));
                return (reader, batch, Wanted::Nothing);
            }
        }
    }
    (reader, batch, Wanted::More)
}

/// Sends one reply unless the client has not taken one for `idle`; `false`
/// when it did not arrive (the client went away or stopped reading).
async fn reply(
    out: &mpsc::Sender<Result<LoadManifestReply, Status>>,
    item: Result<LoadManifestReply, Status>,
    idle: Duration,
) -> bool {
    matches!(tokio::time::timeout(idle, out.send(item)).await, Ok(Ok(())))
}

/// Parses the client's chunks as they arrive and hands the rows to `rows`:
/// the bytes that came in are parsed on the blocking pool, and the wait for
/// the next chunk is async, bounded by `idle`.
async fn parse(
    manifest_id: String,
    first: Vec<u8>,
    ended: bool,
    mut inbound: Streaming<ManifestChunk>,
    rows: mpsc::Sender<Input>,
    out: mpsc::Sender<Result<LoadManifestReply, Status>>,
    idle: Duration,
) {
    let mut reader = ManifestReader::pushed(manifest_id);
    reader.push(&first);
    if ended {
        reader.end();
    }
    // The client's chunks are read ahead of the parser (a few, as the old
    // blocking reader did), so the client is not held to the parser's pace
    // by flow control; the idle timeout is on this read.
    let (chunk_tx, mut chunks) = mpsc::channel::<Fed>(READ_AHEAD);
    let _feeder = AbortOnDrop(tokio::spawn(async move {
        loop {
            let fed = match tokio::time::timeout(idle, inbound.message()).await {
                Err(_) => Fed::Stalled,
                Ok(Ok(Some(chunk))) => Fed::Chunk(chunk.data),
                Ok(Ok(None)) => Fed::End,
                Ok(Err(s)) => {
                    // The parser stops at the broken stream; the client is
                    // told why (an oversized chunk: RESOURCE_EXHAUSTED).
                    let status = threshold_api::status::oversized(s);
                    let message = status.message().to_owned();
                    let _ = reply(&out, Err(status), idle).await;
                    Fed::Failed(io::Error::other(message))
                }
            };
            let last = !matches!(fed, Fed::Chunk(_));
            if chunk_tx.send(fed).await.is_err() || last {
                return;
            }
        }
    }));
    let mut parsing = tokio::task::spawn_blocking(move || parse_batch(reader));
    loop {
        let Ok((mut reader, batch, wanted)) = parsing.await else {
            return; // the parser panicked: the rows end here
        };
        if let Wanted::More = wanted {
            // The next batch is parsed while this one is handed on.
            parsing = tokio::task::spawn_blocking(move || parse_batch(reader));
            if !hand_on(&rows, batch).await {
                return;
            }
            continue;
        }
        if !hand_on(&rows, batch).await {
            return;
        }
        if let Wanted::Nothing = wanted {
            return;
        }
        match chunks.recv().await {
            Some(Fed::Chunk(data)) => reader.push(&data),
            Some(Fed::End) | None => reader.end(),
            Some(Fed::Failed(e)) => reader.fail(e),
            Some(Fed::Stalled) => {
                let _ = rows.send(Input::Stalled).await;
                return;
            }
        }
        parsing = tokio::task::spawn_blocking(move || parse_batch(reader));
    }
}

/// Hands `batch` on to the decisions; `false` once they are gone.
async fn hand_on(rows: &mpsc::Sender<Input>, batch: Vec<Input>) -> bool {
    for input in batch {
        if rows.send(input).await.is_err() {
            return false;
        }
    }
    true
}

/// What the reader of the client's chunks hands the parser.
enum Fed {
    /// The next chunk's bytes.
    Chunk(Vec<u8>),
    /// The client ended its stream.
    End,
    /// The client's stream broke.
    Failed(io::Error),
    /// Nothing came for the idle timeout.
    Stalled,
}

/// The longest manifest id a load may give: it is recorded on each of its
/// parcels. The CLI and the console send the file's name, which a file
/// system keeps to 255 bytes.
pub const MAX_MANIFEST_ID: usize = 255;

/// Runs one load: parses `inbound`, decides its rows (stamped `at`, or as
/// they are decided), answers on `out`.
async fn load(
    log: Arc<dyn EventLog>,
    vault: Arc<Vault>,
    at: Option<DateTime<Utc>>,
    planner: Principal,
    idle: Duration,
    mut inbound: Streaming<ManifestChunk>,
    out: mpsc::Sender<Result<LoadManifestReply, Status>>,
) -> Result<(), Error> {
    let first = match tokio::time::timeout(idle, inbound.message()).await {
        Err(_) => {
            return Err(Error::Stalled {
                manifest: "unnamed".into(),
                idle,
                rows: 0,
                accepted: 0,
            });
        }
        Ok(Ok(first)) => first,
        Ok(Err(status)) => {
            let _ = reply(&out, Err(threshold_api::status::oversized(status)), idle).await;
            return Ok(());
        }
    };
    // A stream that ended before its first chunk is an empty manifest.
    let ended = first.is_none();
    let first = first.unwrap_or_default();
    // Recorded on every parcel of the load: bounded like an id.
    if first.manifest_id.len() > MAX_MANIFEST_ID {
        let why = threshold_status::field(
            "manifest_id",
            format!(
                "at most {MAX_MANIFEST_ID} bytes, not {}",
                first.manifest_id.len()
            ),
        );
        let _ = reply(&out, Err(why), idle).await;
        return Ok(());
    }
    let manifest_id = if first.manifest_id.is_empty() {
        "unnamed".to_owned()
    } else {
        first.manifest_id.clone()
    };

    // Rows flow from the parser to the decisions, a batch or so at a time.
    let (row_tx, row_rx) = mpsc::channel::<Input>(PARSE_BATCH);
    let parser = tokio::spawn(parse(
        manifest_id.clone(),
        first.data,
        ended,
        inbound,
        row_tx,
        out.clone(),
        idle,
    ));
    // Stops the parser however this load ends.
    let _parser = AbortOnDrop(parser);

    let mut summary = LoadSummary {
        manifest_id,
        ..LoadSummary::default()
    };
    let mut decisions = ReceiverStream::new(row_rx)
        .map(|input| {
            let log = Arc::clone(&log);
            let planner = &planner;
            let vault = &*vault;
            async move {
                match input {
                    Input::Failed(e) => Err(e),
                    Input::Stalled => Ok(Decided::Stalled),
                    Input::Row(Row::Rejected(e)) => Ok(Decided::Refused(e)),
                    // A planner loads the rows of the depots it plans.
                    Input::Row(Row::Accepted {
                        line,
                        parcel,
                        values,
                    }) if !planner.covers(&parcel.depot_id) => Ok(Decided::Refused(RowError {
                        line,
                        field: "depot".into(),
                        message: format!(
                            "planner {:?} plans {}, not {}",
                            planner.name, planner.tenant, parcel.depot_id
                        ),
                        values,
                    })),
                    Input::Row(Row::Accepted {
                        line,
                        parcel,
                        values,
                    }) => decide(&*log, vault, at, line, *parcel, values).await,
                }
            }
        })
        .buffer_unordered(CONCURRENT_ROWS);
    // The rows read before a stall are still decided (the parser sends
    // nothing after it), then the load ends with the stall.
    let mut stalled = false;
    while let Some(decided) = decisions.next().await {
        match decided? {
            Decided::Stalled => {
                stalled = true;
                continue;
            }
            Decided::Accepted => summary.accepted += 1,
            Decided::Unchanged => summary.unchanged += 1,
            Decided::Refused(e) => {
                summary.rejected += 1;
                if !reply(&out, Ok(rejected(e)), idle).await {
                    return Err(Error::Stalled {
                        manifest: summary.manifest_id,
                        idle,
                        rows: summary.rows + 1,
                        accepted: summary.accepted,
                    });
                }
            }
        }
        summary.rows += 1;
    }
    if stalled {
        return Err(Error::Stalled {
            manifest: summary.manifest_id,
            idle,
            rows: summary.rows,
            accepted: summary.accepted,
        });
    }
    let _ = reply(
        &out,
        Ok(LoadManifestReply {
            reply: Some(load_manifest_reply::Reply::Summary(summary)),
        }),
        idle,
    )
    .await;
    Ok(())
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<LoadManifestReply, Status>> + Send>>;

#[tonic::async_trait]
impl ManifestService for Manifests {
    type LoadManifestStream = ReplyStream;

    async fn load_manifest(
        &self,
        request: Request<Streaming<ManifestChunk>>,
    ) -> Result<Response<Self::LoadManifestStream>, Status> {
        let planner = threshold_auth::require(&request, &[Role::Planner])?.clone();
        let at = self.clock.stamp(&request)?;
        // Over the limits, refused before anything is read.
        let permit = self.admit(&planner.tenant)?;
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(256);
        let log = Arc::clone(&self.log);
        let vault = Arc::clone(&self.vault);
        let idle = self.limits.idle_timeout;
        tokio::spawn(async move {
            // The load's place is freed when it ends, however it ends.
            let _permit = permit;
            let errors = tx.clone();
            if let Err(e) = load(log, vault, at, planner, idle, inbound, tx).await {
                let _ = reply(&errors, Err(e.into()), idle).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The client side of a load, for the CLI and tests.
pub mod client {
    use threshold_api::v1::manifest_service_client::ManifestServiceClient;
    use threshold_api::v1::{LoadSummary, ManifestChunk, RowRejected, load_manifest_reply};
    use tokio::io::{AsyncRead, AsyncReadExt};
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::Status;
    use tonic::codegen::{Body, Bytes, StdError};
    use tonic::metadata::MetadataMap;

    /// Bytes per chunk sent.
    pub const CHUNK: usize = 64 * 1024;

    /// Streams `input` as manifest `manifest_id`, hands every rejected row to
    /// `on_rejected` as it arrives, and returns the summary.
    pub async fn load<T, R>(
        client: &mut ManifestServiceClient<T>,
        manifest_id: &str,
        input: R,
        on_rejected: impl FnMut(RowRejected),
    ) -> Result<LoadSummary, Status>
    where
        T: tonic::client::GrpcService<tonic::body::Body>,
        T::Error: Into<StdError>,
        T::ResponseBody: Body<Data = Bytes> + Send + 'static,
        <T::ResponseBody as Body>::Error: Into<StdError> + Send,
        R: AsyncRead + Unpin + Send + 'static,
    {
        load_with(client, manifest_id, input, MetadataMap::new(), on_rejected).await
    }

    /// [`load`], the request carrying `metadata` too (a simulation's time).
    pub async fn load_with<T, R>(
        client: &mut ManifestServiceClient<T>,
        manifest_id: &str,
        mut input: R,
        metadata: MetadataMap,
        mut on_rejected: impl FnMut(RowRejected),
    ) -> Result<LoadSummary, Status>
    where
        T: tonic::client::GrpcService<tonic::body::Body>,
        T::Error: Into<StdError>,
        T::ResponseBody: Body<Data = Bytes> + Send + 'static,
        <T::ResponseBody as Body>::Error: Into<StdError> + Send,
        R: AsyncRead + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(4);
        let id = manifest_id.to_owned();
        let reader = tokio::spawn(async move {
            let mut first = true;
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = input.read(&mut buf).await?;
                if n == 0 && !first {
                    return Ok::<_, std::io::Error>(());
                }
                buf.truncate(n);
                let chunk = ManifestChunk {
                    manifest_id: if first { id.clone() } else { String::new() },
                    data: buf,
                };
                first = false;
                if tx.send(chunk).await.is_err() || n == 0 {
                    return Ok(());
                }
            }
        });
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        *request.metadata_mut() = metadata;
        let mut replies = client.load_manifest(request).await?.into_inner();
        let mut summary = None;
        while let Some(reply) = replies.message().await? {
            match reply.reply {
                Some(load_manifest_reply::Reply::Rejected(r)) => on_rejected(r),
                Some(load_manifest_reply::Reply::Summary(s)) => summary = Some(s),
                None => {}
            }
        }
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Status::aborted(format!("reading the manifest: {e}"))),
            Err(e) => return Err(Status::internal(e.to_string())),
        }
        summary.ok_or_else(|| Status::internal("the server ended the load without a summary"))
    }
}

#[cfg(test)]
mod tests {
    use threshold_status::IntoStatus as _;
    use tonic::Code;

    use super::*;

    #[test]
    fn a_failed_load_answers_the_code_of_what_failed() {
        for (e, code) in [
            (
                Error::Manifest(threshold_manifest::Error::DuplicateColumn(
                    "parcel_id".into(),
                )),
                Code::InvalidArgument,
            ),
            (Error::Log(LogError::Closed), Code::Unavailable),
            (
                Error::Log(LogError::DiskFull {
                    path: "log.db".into(),
                }),
                Code::ResourceExhausted,
            ),
            (Error::Stream("reset".into()), Code::Cancelled),
            (
                Error::Stalled {
                    manifest: "day.csv".into(),
                    idle: IDLE_TIMEOUT,
                    rows: 3,
                    accepted: 2,
                },
                Code::DeadlineExceeded,
            ),
            (Error::Busy("full".into()), Code::ResourceExhausted),
            (
                Error::Vault(threshold_privacy::Error::Tampered {
                    subject: "household:1".into(),
                }),
                Code::DataLoss,
            ),
        ] {
            assert_eq!(e.into_status().code(), code);
        }
    }
}
