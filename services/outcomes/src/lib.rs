//! OutcomeService: a partner follows the delivery outcomes of its parcels.
//!
//! The caller's bearer token names the partner (guarantee 8): no request
//! field can widen what it sees. Outcomes are the parcel events a partner
//! may know — delivered, attempt failed, returned — taken from the log in
//! order and, for a partner, stripped to what concerns the parcel: never a
//! driver, device, grant, home or the driver's note. The carrier's analysts
//! subscribe to every parcel with those kept; the driver's note is stored
//! sealed under the household's key and opened for them with the server's
//! vault (after the household is forgotten it no longer opens, and the
//! outcome carries no note). The cursor is the event's log position.
//!
//! Track and trace (`Track`, `TrackDay`) answers from the track-and-trace
//! read model ([`threshold_projections::track`]), which the process keeps
//! fed from the log: by parcel id for whoever may see the parcel, and a
//! depot's day for its planner or an analyst.
//!
//! A subscription ends as soon as its caller cancels or its connection
//! closes: the task waits on the outgoing channel closing as well as on the
//! log, so a quiet log does not keep a gone partner's task, its buffer and
//! its count in `threshold.outcome.subscribers` alive.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use threshold_api::v1::outcome_service_server::{OutcomeService, OutcomeServiceServer};
use threshold_api::v1::{
    ParcelOutcome, ParcelTrack, SubscribeOutcomesRequest, TrackDayReply, TrackDayRequest,
    TrackRequest, TrackStep, parcel_outcome,
};
use threshold_auth::Role;
use threshold_domain::country::timestamp;
use threshold_domain::{Category, Country, DomainEvent, pb};
use threshold_log::{EventLog, Position, RecordedEvent};
use threshold_projections::track::{Milestone, ParcelSummary, TrackStore};
use threshold_status::IntoStatus as _;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

/// The service, over any event log. Callers are authenticated by the
/// server's [`threshold_auth::AuthLayer`].
#[derive(Clone)]
pub struct Outcomes {
    log: Arc<dyn EventLog>,
    /// Subscriptions whose task is running, as the gauge counts them.
    open: Arc<AtomicUsize>,
    /// Subscriptions open now, per credential.
    held: threshold_auth::Quota,
    /// Opens drivers' sealed notes for the carrier's analysts.
    vault: Option<Arc<threshold_privacy::Vault>>,
    /// The track-and-trace read model.
    track: Option<Arc<dyn TrackStore>>,
}

impl Outcomes {
    /// A service reading `log`.
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self {
            log,
            open: Arc::default(),
            held: threshold_auth::Quota::new(usize::MAX, MAX_SUBSCRIPTIONS_PER_CREDENTIAL),
            vault: None,
            track: None,
        }
    }

    /// Answers track and trace from `store` (without one, `Track` and
    /// `TrackDay` are `UNAVAILABLE`). The caller keeps it fed
    /// ([`threshold_projections::track::follow`]).
    pub fn with_track(mut self, store: Arc<dyn TrackStore>) -> Self {
        self.track = Some(store);
        self
    }

    /// Opens drivers' sealed notes with `vault` for the carrier's analysts
    /// (without one their outcomes carry no note).
    pub fn with_vault(mut self, vault: Arc<threshold_privacy::Vault>) -> Self {
        self.vault = Some(vault);
        self
    }

    /// Subscriptions of this service (and its clones) open now: the same
    /// count `threshold.outcome.subscribers` reports, summed over callers.
    pub fn subscribers(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// As a tonic service, ready to add to a server.
    pub fn into_server(self) -> OutcomeServiceServer<Self> {
        OutcomeServiceServer::new(self).max_decoding_message_size(64 * 1024)
    }
}

/// A failed attempt's note as `view` may read it: opened from its seal
/// with `vault` for the carrier, empty for a partner, when it no longer
/// opens (the household was forgotten) or without a vault.
fn note(
    f: &pb::AttemptFailed,
    event: &RecordedEvent,
    view: View,
    vault: Option<&threshold_privacy::Vault>,
) -> String {
    if view != View::Carrier {
        return String::new();
    }
    let (Some(vault), Some(sealed)) = (vault, &f.sealed_note) else {
        // Stored before notes were sealed.
        return f.note.clone();
    };
    let context = threshold_domain::parcel::note_context(event.stream.id(), f.attempt);
    match vault.unseal(sealed, &context) {
        Ok(Some(bytes)) => String::from_utf8(bytes).unwrap_or_default(),
        Ok(None) => String::new(),
        Err(e) => {
            tracing::warn!(parcel_id = event.stream.id(), error = %e, "a driver's sealed note does not open");
            String::new()
        }
    }
}

/// Who a subscription is for, and so what it may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// A partner retailer: the parcel's fate, nothing about drivers,
    /// devices, homes, access or residents.
    Partner,
    /// The carrier's own analysts: the partner's view and who delivered,
    /// under which grant, with the driver's note.
    Carrier,
}

/// The event types that are outcomes: [`outcome`] is `None` for every
/// other, so a reader may pass over the rest without decoding them.
pub const OUTCOME_TYPES: &[&str] = &[
    "parcel.delivered",
    "parcel.attempt_failed",
    "parcel.returned",
];

/// The outcome `view` sees for one event, if the event is one; a sealed
/// note stays closed (see [`outcome_opened`]).
pub fn outcome(event: &RecordedEvent, view: View) -> Option<ParcelOutcome> {
    outcome_opened(event, view, None)
}

/// The outcome `view` sees for one event, if the event is one, with the
/// driver's sealed note opened with `vault` for the carrier's view.
pub fn outcome_opened(
    event: &RecordedEvent,
    view: View,
    vault: Option<&threshold_privacy::Vault>,
) -> Option<ParcelOutcome> {
    if !OUTCOME_TYPES.contains(&event.event.event_type.as_str()) {
        return None;
    }
    decoded_outcome(event, view, vault)
}

/// [`outcome_opened`] without its look at the type: every event decoded.
fn decoded_outcome(
    event: &RecordedEvent,
    view: View,
    vault: Option<&threshold_privacy::Vault>,
) -> Option<ParcelOutcome> {
    use pb::parcel_event::Event as E;
    if event.stream.category() != Category::Parcel {
        return None;
    }
    let DomainEvent::Parcel(e) = event.decode().ok()? else {
        return None;
    };
    let (kind, attempt, method, reason, carrier) = match e {
        E::Delivered(d) => (
            parcel_outcome::Kind::Delivered,
            d.attempt,
            d.method,
            0,
            (d.driver_id, d.grant_id, String::new()),
        ),
        E::AttemptFailed(f) => (
            parcel_outcome::Kind::AttemptFailed,
            f.attempt,
            0,
            f.reason,
            {
                let note = note(&f, event, view, vault);
                (f.driver_id, String::new(), note)
            },
        ),
        E::Returned(r) => (
            parcel_outcome::Kind::Returned,
            r.attempts,
            0,
            0,
            Default::default(),
        ),
        _ => return None,
    };
    // Redacted here, once, for every partner.
    let (driver_id, grant_id, note) = match view {
        View::Carrier => carrier,
        View::Partner => Default::default(),
    };
    let at = event.event.occurred_at;
    let local_time = event
        .event
        .country
        .map(|c| {
            at.with_timezone(&c.tz())
                .format("%Y-%m-%dT%H:%M")
                .to_string()
        })
        .unwrap_or_default();
    Some(ParcelOutcome {
        cursor: event.position.0,
        parcel_id: event.stream.id().to_owned(),
        kind: kind as i32,
        attempt,
        method,
        reason,
        occurred_at: Some(timestamp(at)),
        local_time,
        country: event
            .event
            .country
            .map_or(0, |c: Country| c.to_proto() as i32),
        traceparent: event.event.traceparent.clone().unwrap_or_default(),
        driver_id,
        grant_id,
        note,
    })
}

/// The most parcels one `TrackDay` page holds.
pub const MAX_TRACK_PAGE: u32 = 1_000;

/// A parcel id as a request may carry one: what the log's stream ids take.
const MAX_PARCEL_ID: usize = 128;

/// A store failure as the caller is told it: the detail (hosts, paths)
/// goes to the log only.
fn track_store(e: threshold_projections::track::StoreError) -> Status {
    use threshold_projections::track::StoreError;
    tracing::warn!(error = %e, "track and trace could not be read");
    match e {
        StoreError::Backend(_) => {
            Status::unavailable("the track-and-trace store could not be read; retry")
        }
        StoreError::Corrupt { .. } => {
            Status::internal("the track-and-trace store holds a row this server cannot read")
        }
    }
}

/// `summary` as a reply, with `steps`.
fn track_reply(s: ParcelSummary, steps: Vec<TrackStep>) -> ParcelTrack {
    ParcelTrack {
        parcel_id: s.parcel_id,
        partner_id: s.partner,
        country: s.country.to_proto() as i32,
        depot_id: s.depot,
        delivery_date: Some(threshold_domain::country::date_to_proto(s.day)),
        status: s.status.as_str().to_owned(),
        attempts: s.attempts,
        updated_at: Some(timestamp(s.updated_at)),
        steps,
    }
}

/// Whether `caller` may see the parcel `s` is of.
fn may_see(caller: &threshold_auth::Principal, s: &ParcelSummary) -> bool {
    caller.may_follow_parcel(&s.partner, &s.depot, s.country.code())
}

/// Counts a subscription out when its task ends, however it ends.
struct Gone(
    opentelemetry::metrics::UpDownCounter<i64>,
    [opentelemetry::KeyValue; 1],
    Arc<AtomicUsize>,
);

impl Drop for Gone {
    fn drop(&mut self) {
        self.0.add(-1, &self.1);
        self.2.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Subscriptions one credential may hold open at once: each reads the
/// log from where it asks, so one caller holding hundreds would take the
/// server's reads from everyone else.
pub const MAX_SUBSCRIPTIONS_PER_CREDENTIAL: usize = 16;

type OutcomeStream = Pin<Box<dyn Stream<Item = Result<ParcelOutcome, Status>> + Send>>;

#[tonic::async_trait]
impl OutcomeService for Outcomes {
    type SubscribeStream = OutcomeStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeOutcomesRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = threshold_auth::require(&request, &[Role::Partner, Role::Analyst])?.clone();
        let view = match caller.role {
            Role::Analyst => View::Carrier,
            _ => View::Partner,
        };
        // A country's analyst follows that country's parcels only.
        let country_only =
            threshold_status::analysts_country(&caller)?.map(|c| c.to_proto() as i32);
        let held = self.held.take(&caller.name).map_err(|_| {
            Status::resource_exhausted(format!(
                "credential {:?} holds {MAX_SUBSCRIPTIONS_PER_CREDENTIAL} subscriptions open, \
                 the most one may; close one first",
                caller.name
            ))
        })?;
        let standing = threshold_auth::Standing::of(&request);
        let from = Position(request.into_inner().from_cursor);
        let mut events = self.log.subscribe(from);
        let (tx, rx) = mpsc::channel(256);
        let subscribers = opentelemetry::global::meter("threshold.outcomes")
            .i64_up_down_counter("threshold.outcome.subscribers")
            .with_description("Partner subscriptions open now")
            .build();
        let lag = opentelemetry::global::meter("threshold.outcomes")
            .u64_gauge("threshold.outcome.subscriber.lag")
            .with_description("Log positions between the head of what this process holds of the log and what a subscription has read")
            .build();
        let log = Arc::clone(&self.log);
        let open = Arc::clone(&self.open);
        let vault = self.vault.clone();
        // Counted before the stream is handed out, so a caller that sees
        // its subscription also sees it counted.
        let attrs = [opentelemetry::KeyValue::new(
            "subscriber",
            caller.tenant.clone(),
        )];
        subscribers.add(1, &attrs);
        open.fetch_add(1, Ordering::SeqCst);
        let gone = Gone(subscribers, attrs.clone(), open);
        tokio::spawn(async move {
            let _gone = gone;
            let _held = held;
            let mut lag_at: Option<std::time::Instant> = None;
            let mut check = tokio::time::interval(threshold_auth::STANDING_EVERY);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // The caller cancelled or its connection closed: tonic drops
                // the receiving half, and the task ends now rather than at
                // the next outcome it would fail to send. A credential
                // revoked while the subscription is open ends it.
                let next = tokio::select! {
                    () = tx.closed() => return,
                    _ = check.tick() => {
                        if let Some(lapse) = standing.as_ref().and_then(|s| s.lapse()) {
                            let _ = tx
                                .send(Err(Status::unauthenticated(format!(
                                    "the credential this subscription was opened with {lapse}"
                                ))))
                                .await;
                            return;
                        }
                        continue;
                    }
                    next = events.next() => next,
                };
                let Some(next) = next else { return };
                let event = match next {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = tx.send(Err(e.into_status())).await;
                        return;
                    }
                };
                // How far behind the head this subscription reads, at most
                // once a second: not a head lookup per event.
                if lag_at.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1)) {
                    lag_at = Some(std::time::Instant::now());
                    if let Ok(head) = log.head_recent().await {
                        lag.record(head.0.saturating_sub(event.position.0), &attrs);
                    }
                }
                // A partner's own parcels only: the tenant recorded with
                // the event when the parcel was manifested.
                if view == View::Partner
                    && !event
                        .event
                        .tenant
                        .as_deref()
                        .is_some_and(|t| caller.covers(t))
                {
                    continue;
                }
                if let Some(o) = outcome_opened(&event, view, vault.as_deref())
                    .filter(|o| country_only.is_none_or(|c| o.country == c))
                {
                    // Delivered inside the trace of the attempt it reports.
                    let span = threshold_telemetry::in_recorded_trace(
                        event.event.traceparent.as_deref(),
                        || tracing::info_span!("outcome.deliver", cursor = o.cursor, parcel_id = %o.parcel_id),
                    );
                    if tx.send(Ok(o)).instrument(span).await.is_err() {
                        return; // the partner went away
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn track(&self, request: Request<TrackRequest>) -> Result<Response<ParcelTrack>, Status> {
        let caller =
            threshold_auth::require(&request, &[Role::Partner, Role::Planner, Role::Analyst])?
                .clone();
        let id = request.into_inner().parcel_id;
        if id.is_empty() || id.len() > MAX_PARCEL_ID {
            return Err(threshold_status::field(
                "parcel_id",
                format!("1–{MAX_PARCEL_ID} bytes, not {}", id.len()),
            ));
        }
        let store = self
            .track
            .as_ref()
            .ok_or_else(|| Status::unavailable("this process keeps no track-and-trace model"))?;
        let not_found = || Status::not_found(format!("no parcel {id:?} to track"));
        // Someone else's parcel is answered as one that does not exist,
        // after the same one lookup: a partner cannot learn which ids are
        // real, not even from how long the answer took.
        let summary = match store.summary(&id).await.map_err(track_store)? {
            Some(s) if may_see(&caller, &s) => s,
            _ => return Err(not_found()),
        };
        let track = threshold_projections::ParcelTrack {
            events: store.steps(&id).await.map_err(track_store)?,
            summary,
        };
        let carrier = caller.role != Role::Partner;
        let tz = track.summary.country.tz();
        let steps = track
            .events
            .into_iter()
            .map(|e| TrackStep {
                milestone: e.milestone.as_str().to_owned(),
                occurred_at: Some(timestamp(e.occurred_at)),
                local_time: e
                    .occurred_at
                    .with_timezone(&tz)
                    .format("%Y-%m-%dT%H:%M")
                    .to_string(),
                attempt: e.attempt,
                // The planner's reason is the carrier's own business.
                detail: if e.milestone == Milestone::LeftOut && !carrier {
                    String::new()
                } else {
                    e.detail
                },
            })
            .collect();
        Ok(Response::new(track_reply(track.summary, steps)))
    }

    async fn track_day(
        &self,
        request: Request<TrackDayRequest>,
    ) -> Result<Response<TrackDayReply>, Status> {
        let caller = threshold_auth::require(&request, &[Role::Planner, Role::Analyst])?.clone();
        let r = request.into_inner();
        let country =
            Country::from_proto(r.country).map_err(|e| threshold_status::field("country", e))?;
        if r.depot_id.is_empty() || r.depot_id.len() > MAX_PARCEL_ID {
            return Err(threshold_status::field(
                "depot_id",
                format!("1–{MAX_PARCEL_ID} bytes, not {}", r.depot_id.len()),
            ));
        }
        match caller.role {
            Role::Planner => caller.check_tenant("depot", &r.depot_id)?,
            _ => caller.check_tenant("country", country.code())?,
        }
        let day = r
            .delivery_date
            .as_ref()
            .ok_or_else(|| threshold_status::field("delivery_date", "missing"))
            .and_then(|d| {
                threshold_domain::country::date_from_proto(d)
                    .map_err(|e| threshold_status::field("delivery_date", e))
            })?;
        let size = match r.page_size {
            0 => 100,
            n if n <= MAX_TRACK_PAGE => n,
            n => {
                return Err(threshold_status::field(
                    "page_size",
                    format!("at most {MAX_TRACK_PAGE}, not {n}"),
                ));
            }
        };
        if r.page_after.len() > MAX_PARCEL_ID {
            return Err(threshold_status::field(
                "page_after",
                format!("at most {MAX_PARCEL_ID} bytes, not {}", r.page_after.len()),
            ));
        }
        let store = self
            .track
            .as_ref()
            .ok_or_else(|| Status::unavailable("this process keeps no track-and-trace model"))?;
        let after = (!r.page_after.is_empty()).then_some(r.page_after.as_str());
        let page = store
            .day(country, &r.depot_id, day, after, size as usize)
            .await
            .map_err(track_store)?;
        let next_page_after = if page.len() == size as usize {
            page.last().map(|s| s.parcel_id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(TrackDayReply {
            parcels: page
                .into_iter()
                .map(|s| track_reply(s, Vec::new()))
                .collect(),
            next_page_after,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use pb::parcel_event::Event as E;
    use threshold_domain::{EventId, StreamId};
    use threshold_log::NewEvent;

    fn recorded(event: DomainEvent) -> RecordedEvent {
        RecordedEvent {
            position: Position(1),
            stream: StreamId::new(Category::Parcel, "SE-1").unwrap(),
            stream_version: 1,
            recorded_at: Utc::now(),
            event: NewEvent::new(EventId::new(), &event, Utc::now()),
        }
    }

    /// `OUTCOME_TYPES` is exactly the parcel events that are outcomes,
    /// decoded without looking at the list: a publisher passing over every
    /// other type loses none.
    #[test]
    fn the_outcome_types_are_the_events_that_make_an_outcome() {
        // A parcel event added to the domain fails to compile here until it
        // is added to `every` below.
        let _every_variant = |e: &E| match e {
            E::Manifested(_)
            | E::AssignedToRoute(_)
            | E::OutForDelivery(_)
            | E::AttemptStarted(_)
            | E::Delivered(_)
            | E::AttemptFailed(_)
            | E::Rescheduled(_)
            | E::Returned(_)
            | E::LeftOut(_) => {}
        };
        let every = [
            E::Manifested(Default::default()),
            E::AssignedToRoute(Default::default()),
            E::OutForDelivery(Default::default()),
            E::AttemptStarted(Default::default()),
            E::Delivered(Default::default()),
            E::AttemptFailed(Default::default()),
            E::Rescheduled(Default::default()),
            E::Returned(Default::default()),
            E::LeftOut(Default::default()),
        ];
        let (mut types, mut kinds) = (Vec::new(), Vec::new());
        for e in every {
            let event = DomainEvent::Parcel(e);
            for view in [View::Partner, View::Carrier] {
                let event = recorded(event.clone());
                let decoded = decoded_outcome(&event, view, None);
                // The list only spares the decoding; it changes nothing.
                assert_eq!(outcome(&event, view), decoded);
                if let Some(o) = decoded {
                    types.push(event.event.event_type.clone());
                    kinds.push(o.kind());
                }
            }
        }
        types.dedup();
        kinds.dedup();
        assert_eq!(types, OUTCOME_TYPES);
        // And every kind of outcome a partner can be sent comes of one.
        let every_kind: Vec<parcel_outcome::Kind> = (1..)
            .map_while(|k| parcel_outcome::Kind::try_from(k).ok())
            .collect();
        assert_eq!(kinds, every_kind);
    }
}
