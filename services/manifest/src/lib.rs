//! ManifestService: route planners load daily manifests.
//!
//! A load is a stream both ways. The file's bytes arrive in chunks and are
//! parsed row by row on a blocking thread ([`threshold_manifest`]); each
//! accepted row becomes a `Manifest` command on its parcel, decided from the
//! parcel's history in the log and appended with the expected version, so a
//! reloaded row is recognised and a concurrent one cannot slip in twice.
//! Refused rows go back to the client as soon as they are decided; a
//! summary ends the stream. Nothing here holds the whole file.

use std::io;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use prost::Message as _;
use threshold_api::v1::manifest_service_server::{ManifestService, ManifestServiceServer};
use threshold_api::v1::{
    LoadManifestReply, LoadSummary, ManifestChunk, RowRejected, load_manifest_reply,
};
use threshold_auth::{Principal, Role};
use threshold_domain::parcel::{Command, Parcel};
use threshold_domain::{Aggregate, Country, DomainError, EventId, ParcelId, StreamId, pb};
use threshold_log::{Decision, Error as LogError, EventLog, NewEvent};
use threshold_manifest::{ManifestReader, Row, RowError};
use threshold_privacy::Vault;
use threshold_status::{IntoStatus as _, ServiceError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// The largest manifest chunk accepted, in bytes (clients send 64 KiB).
pub const MAX_CHUNK: usize = 1024 * 1024;

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
}

/// The error contract's codes ([`threshold_status`]): each wrapped error
/// answers with its own; a broken client stream is `CANCELLED`.
impl ServiceError for Error {
    fn code(&self) -> tonic::Code {
        match self {
            Error::Manifest(e) => e.code(),
            Error::Log(e) => e.code(),
            Error::Stream(_) => tonic::Code::Cancelled,
            Error::Vault(e) => e.code(),
        }
    }

    fn reply(&self) -> String {
        match self {
            Error::Manifest(e) => e.reply(),
            Error::Log(e) => e.reply(),
            Error::Stream(_) => self.to_string(),
            Error::Vault(e) => e.reply(),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        e.into_status()
    }
}

/// The service, over any event log. Recipients' addresses are sealed in
/// `vault` under their household's key before anything is written: the log
/// never holds one in the clear.
#[derive(Clone)]
pub struct Manifests {
    log: Arc<dyn EventLog>,
    vault: Arc<Vault>,
}

impl Manifests {
    /// A service that writes to `log`, sealing addresses in `vault`.
    pub fn new(log: Arc<dyn EventLog>, vault: Arc<Vault>) -> Self {
        Self { log, vault }
    }

    /// As a tonic service, ready to add to a server, refusing chunks larger
    /// than [`MAX_CHUNK`].
    pub fn into_server(self) -> ManifestServiceServer<Self> {
        ManifestServiceServer::new(self).max_decoding_message_size(MAX_CHUNK)
    }
}

/// What became of one accepted row.
enum Decided {
    Accepted,
    Unchanged,
    Refused(RowError),
}

/// Reads the chunks a blocking parser asks for.
struct Chunks {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl io::Read for Chunks {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Decides one manifest row on its parcel's stream.
async fn decide(
    log: &dyn EventLog,
    vault: &Vault,
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
    let mut decision = Decision::<Parcel>::new(log, &stream).retries(CONFLICT_RETRIES);
    while let Some(known) = decision.next().await? {
        let events = match known.state.decide(&command) {
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
                    chrono::Utc::now(),
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

/// Runs one load: parses `inbound`, decides its rows, answers on `out`.
async fn load(
    log: Arc<dyn EventLog>,
    vault: Arc<Vault>,
    planner: Principal,
    mut inbound: Streaming<ManifestChunk>,
    out: mpsc::Sender<Result<LoadManifestReply, Status>>,
) -> Result<(), Error> {
    let first = match inbound.message().await {
        Ok(first) => first.unwrap_or_default(),
        Err(status) => {
            let _ = out
                .send(Err(threshold_api::status::oversized(status)))
                .await;
            return Ok(());
        }
    };
    let manifest_id = if first.manifest_id.is_empty() {
        "unnamed".to_owned()
    } else {
        first.manifest_id.clone()
    };

    // Chunks flow to the parser on a blocking thread; rows flow back.
    let (chunk_tx, chunk_rx) = mpsc::channel::<io::Result<Bytes>>(8);
    let (row_tx, row_rx) = mpsc::channel::<Result<Row, Error>>(1024);
    let errors = out.clone();
    let feeder = tokio::spawn(async move {
        if chunk_tx.send(Ok(Bytes::from(first.data))).await.is_err() {
            return;
        }
        loop {
            match inbound.message().await {
                Ok(Some(chunk)) => {
                    if chunk_tx.send(Ok(Bytes::from(chunk.data))).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(s) => {
                    // The parser stops at the broken stream; the client is
                    // told why (an oversized chunk: RESOURCE_EXHAUSTED).
                    let status = threshold_api::status::oversized(s);
                    let _ = chunk_tx
                        .send(Err(io::Error::other(status.message().to_owned())))
                        .await;
                    let _ = errors.send(Err(status)).await;
                    return;
                }
            }
        }
    });
    let id = manifest_id.clone();
    let parser = tokio::task::spawn_blocking(move || {
        let reader = match ManifestReader::new(
            Chunks {
                rx: chunk_rx,
                current: Bytes::new(),
            },
            id,
        ) {
            Ok(r) => r,
            Err(e) => {
                let _ = row_tx.blocking_send(Err(e.into()));
                return;
            }
        };
        for row in reader {
            if row_tx.blocking_send(Ok(row)).is_err() {
                return;
            }
        }
    });

    let mut summary = LoadSummary {
        manifest_id,
        ..LoadSummary::default()
    };
    let mut decisions = ReceiverStream::new(row_rx)
        .map(|row| {
            let log = Arc::clone(&log);
            let planner = &planner;
            let vault = &*vault;
            async move {
                match row? {
                    Row::Rejected(e) => Ok(Decided::Refused(e)),
                    // A planner loads the rows of the depots it plans.
                    Row::Accepted {
                        line,
                        parcel,
                        values,
                    } if !planner.covers(&parcel.depot_id) => Ok(Decided::Refused(RowError {
                        line,
                        field: "depot".into(),
                        message: format!(
                            "planner {:?} plans {}, not {}",
                            planner.name, planner.tenant, parcel.depot_id
                        ),
                        values,
                    })),
                    Row::Accepted {
                        line,
                        parcel,
                        values,
                    } => decide(&*log, vault, line, *parcel, values).await,
                }
            }
        })
        .buffer_unordered(CONCURRENT_ROWS);
    while let Some(decided) = decisions.next().await {
        summary.rows += 1;
        match decided? {
            Decided::Accepted => summary.accepted += 1,
            Decided::Unchanged => summary.unchanged += 1,
            Decided::Refused(e) => {
                summary.rejected += 1;
                if out.send(Ok(rejected(e))).await.is_err() {
                    break; // the client went away
                }
            }
        }
    }
    feeder.abort();
    let _ = parser.await;
    let _ = out
        .send(Ok(LoadManifestReply {
            reply: Some(load_manifest_reply::Reply::Summary(summary)),
        }))
        .await;
    Ok(())
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
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(256);
        let log = Arc::clone(&self.log);
        let vault = Arc::clone(&self.vault);
        tokio::spawn(async move {
            let errors = tx.clone();
            if let Err(e) = load(log, vault, planner, inbound, tx).await {
                let _ = errors.send(Err(e.into())).await;
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

    /// Bytes per chunk sent.
    pub const CHUNK: usize = 64 * 1024;

    /// Streams `input` as manifest `manifest_id`, hands every rejected row to
    /// `on_rejected` as it arrives, and returns the summary.
    pub async fn load<T, R>(
        client: &mut ManifestServiceClient<T>,
        manifest_id: &str,
        mut input: R,
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
        let mut replies = client
            .load_manifest(ReceiverStream::new(rx))
            .await?
            .into_inner();
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
