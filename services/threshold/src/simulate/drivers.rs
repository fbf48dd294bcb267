//! The drivers: each planned route driven by a handheld over
//! HandheldService streams, its parcels scanned into the van at the depot,
//! then one attempt per parcel and day, some handhelds
//! dropping offline and resending; and the tally of how a driver's day went.
//!
//! A driver follows the fates and the plan; it never draws a fate nor
//! plans a route, and its only randomness is the driver's own seed (when
//! the handheld drops).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use threshold_api::v1::access_service_client::AccessServiceClient;
use threshold_api::v1::handheld_event::Report;
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::{
    AttemptAck, AttemptStartedReport, HandheldEvent, LoadedReport, attempt_ack,
};
use threshold_auth::Authed;
use threshold_domain::EventId;
use threshold_domain::country::timestamp;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::BoxError;
use super::conn::{Conn, at};
use super::devices::device_key;
use super::fates::fate;
use super::in_home::enter;
use super::parcels::Parcel;
use super::residents::grant;

/// Sends `events` on a fresh stream and reads `read` acknowledgements (all
/// when `None`); dropping the stream after fewer is a handheld going offline.
/// The stream is sent, on the simulation's clock, when its last event
/// happened: the server bounds the events' times by it.
pub(super) async fn stream(
    conn: &Conn,
    events: &[HandheldEvent],
    read: Option<usize>,
) -> Result<Vec<AttemptAck>, BoxError> {
    let (tx, rx) = mpsc::channel(events.len().max(1));
    for e in events {
        tx.send(e.clone()).await?;
    }
    drop(tx);
    let sent = events
        .iter()
        .filter_map(|e| e.occurred_at.as_ref())
        .filter_map(|t| threshold_domain::country::instant(t).ok())
        .max()
        .unwrap_or_else(Utc::now);
    let mut acks = HandheldServiceClient::new(conn.handheld.clone())
        .stream_attempts(at(ReceiverStream::new(rx), sent)?)
        .await?
        .into_inner();
    let want = read.unwrap_or(events.len());
    let mut got = Vec::with_capacity(want);
    while got.len() < want {
        match acks.message().await? {
            Some(a) => got.push(a),
            None => break,
        }
    }
    Ok(got)
}

/// How one driver's day went.
#[derive(Default)]
pub(super) struct DriverDay {
    pub(super) stored: u64,
    pub(super) duplicates: u64,
    pub(super) rejected: u64,
    pub(super) reconnects: u64,
    pub(super) last_position: u64,
    /// Homes their lock's vendor enrolled (a claim code issued).
    pub(super) enrolled: u64,
    /// Homes their resident claimed with that code.
    pub(super) claimed: u64,
    pub(super) grants: u64,
    pub(super) revoked: u64,
    pub(super) unlocks: u64,
    /// Refused unlocks by reason.
    pub(super) denied: BTreeMap<String, u64>,
    /// Refused unlocks by the fallback they turned into.
    pub(super) fallbacks: BTreeMap<String, u64>,
    /// Entries the lock redeemed.
    pub(super) entries: u64,
    /// Replayed unlock requests the server refused.
    pub(super) replays_refused: u64,
    /// Alerts raised, by kind, as the device reports were answered.
    pub(super) alerts: BTreeMap<String, u64>,
    /// In-home deliveries the server would not close before the relock.
    pub(super) closings_refused: u64,
    /// Receipts whose chain head was handed to the resident.
    pub(super) receipts: u64,
    /// Parcels handed over (at the door, in-home, or the fallback's way).
    pub(super) delivered: u64,
    /// Parcels whose attempt failed: the depot carries them over.
    pub(super) failed: Vec<String>,
}

impl DriverDay {
    /// Counts a handheld stream's acknowledgements; a rejected event is
    /// printed with `driver`'s name.
    fn tally(&mut self, driver: &str, acks: &[AttemptAck]) {
        for a in acks {
            match attempt_ack::Result::try_from(a.result) {
                Ok(attempt_ack::Result::Stored) => self.stored += 1,
                Ok(attempt_ack::Result::Duplicate) => self.duplicates += 1,
                _ => {
                    self.rejected += 1;
                    eprintln!("{driver}: event {} rejected: {}", a.sequence, a.error);
                }
            }
            self.last_position = self.last_position.max(a.position);
        }
    }

    pub(super) fn add(&mut self, d: DriverDay) {
        self.stored += d.stored;
        self.duplicates += d.duplicates;
        self.rejected += d.rejected;
        self.reconnects += d.reconnects;
        self.last_position = self.last_position.max(d.last_position);
        self.enrolled += d.enrolled;
        self.claimed += d.claimed;
        self.grants += d.grants;
        self.revoked += d.revoked;
        self.unlocks += d.unlocks;
        for (reason, n) in d.denied {
            *self.denied.entry(reason).or_default() += n;
        }
        for (f, n) in d.fallbacks {
            *self.fallbacks.entry(f).or_default() += n;
        }
        self.entries += d.entries;
        self.replays_refused += d.replays_refused;
        for (kind, n) in d.alerts {
            *self.alerts.entry(kind).or_default() += n;
        }
        self.closings_refused += d.closings_refused;
        self.receipts += d.receipts;
        self.delivered += d.delivered;
        self.failed.extend(d.failed);
    }
}

/// One driver's planned route.
pub(super) struct Drive {
    pub(super) driver: String,
    pub(super) route_id: String,
    /// The parcels in planned order, with their planned arrival.
    pub(super) stops: Vec<(Parcel, DateTime<Utc>)>,
}

/// One driver's handheld: its stream's sequence, and the access client it
/// asks for unlocks with (the home's devices share it in the simulation).
pub(super) struct Handheld<'a> {
    pub(super) conn: &'a Conn,
    /// As the handheld.
    pub(super) access: AccessServiceClient<Authed>,
    /// As the home's lock and camera.
    pub(super) lock: AccessServiceClient<Authed>,
    /// As the resident.
    pub(super) resident: AccessServiceClient<Authed>,
    pub(super) driver: String,
    pub(super) route_id: String,
    pub(super) sequence: u64,
    pub(super) seed: u64,
}

impl Handheld<'_> {
    /// The next handheld event, about `parcel`, at `when`.
    pub(super) fn event(
        &mut self,
        parcel: &Parcel,
        when: DateTime<Utc>,
        report: Report,
    ) -> HandheldEvent {
        self.sequence += 1;
        HandheldEvent {
            event_id: EventId::new().to_string(),
            device_id: format!("hh-{}", self.driver),
            sequence: self.sequence,
            parcel_id: parcel.id.clone(),
            driver_id: self.driver.clone(),
            route_id: self.route_id.clone(),
            occurred_at: Some(timestamp(when)),
            report: Some(report),
        }
    }
}

/// Drives a planned route: the seed decides each parcel's fate, the
/// driver's seed when the handheld drops offline. Returns the driver's
/// tally and the parcels driven.
pub(super) async fn drive(
    conn: Conn,
    route: Drive,
    day_seed: u64,
    driver_seed: u64,
) -> Result<(DriverDay, Vec<Parcel>), BoxError> {
    let Drive {
        driver,
        route_id,
        stops,
    } = route;
    let mut rng = SmallRng::seed_from_u64(driver_seed);
    let mut day = DriverDay::default();
    let mut plans = Vec::with_capacity(stops.len());
    for (p, planned) in stops {
        let f = fate(day_seed, &p);
        if p.window.is_some() {
            let key = device_key(day_seed, &p.home_id());
            let home = grant(&conn, &p, &driver, &route_id, &f, &key).await?;
            day.enrolled += u64::from(home.enrolled);
            day.claimed += u64::from(home.claimed);
            day.grants += 1;
            day.revoked += u64::from(f.revoked);
        }
        plans.push((p, f, planned));
    }
    let mut handheld = Handheld {
        conn: &conn,
        access: AccessServiceClient::new(conn.unlock.clone()),
        lock: AccessServiceClient::new(conn.vendor.clone()),
        resident: AccessServiceClient::new(conn.resident.clone()),
        driver: driver.clone(),
        route_id: route_id.clone(),
        sequence: 0,
        seed: day_seed,
    };
    // At the depot, half an hour before the first stop, every parcel of
    // the route is scanned into the van: out for delivery.
    if let Some(first) = plans.iter().map(|(_, _, planned)| *planned).min() {
        let departure = first - chrono::Duration::minutes(30);
        let loaded: Vec<HandheldEvent> = plans
            .iter()
            .map(|(parcel, _, _)| {
                handheld.event(parcel, departure, Report::Loaded(LoadedReport {}))
            })
            .collect();
        let acks = stream(&conn, &loaded, None).await?;
        day.tally(&driver, &acks);
    }
    // One attempt per parcel and day, at its planned arrival: in-home
    // parcels at the grant, every other at the door with the attempt its
    // fate holds next (a parcel carried over from an earlier day is on its
    // second or third). A failed one waits for the next day's plan.
    let mut events = Vec::new();
    for (parcel, f, planned) in &plans {
        let report = if parcel.window.is_some() {
            // In-home: planned inside the window. The scan went out
            // already; the outcome joins the round's events.
            let (report, when) = enter(&mut handheld, parcel, f, *planned, &mut day).await?;
            events.push(handheld.event(parcel, when, report.clone()));
            report
        } else {
            let Some(report) = f.door.get(parcel.attempts as usize) else {
                continue;
            };
            for r in [Report::Started(AttemptStartedReport {}), report.clone()] {
                events.push(handheld.event(parcel, *planned, r));
            }
            report.clone()
        };
        match report {
            Report::Delivered(_) => day.delivered += 1,
            _ => day.failed.push(parcel.id.clone()),
        }
    }
    if !events.is_empty() {
        // One handheld in five loses its connection part-way through the day
        // and, back online, resends everything from a little before the last
        // acknowledgement it saw.
        let mut acks = Vec::new();
        if rng.random_bool(0.2) && events.len() > 4 {
            let cut = rng.random_range(1..events.len() - 1);
            acks.extend(stream(&conn, &events, Some(cut)).await?);
            day.reconnects += 1;
            let from = cut.saturating_sub(2);
            let resent = stream(&conn, &events[from..], None).await?;
            acks.truncate(from);
            acks.extend(resent);
        } else {
            acks = stream(&conn, &events, None).await?;
        }
        day.tally(&driver, &acks);
    }
    Ok((day, plans.into_iter().map(|(p, _, _)| p).collect()))
}
