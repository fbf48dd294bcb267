//! The JSON a partner's endpoint receives for one outcome, in the tracking
//! vocabulary retailers already map: a plain status, an EPCIS 2.0 / CBV
//! `bizStep` and `disposition`, the attempt, the failure reason, and the
//! local time with its zone offset.
//!
//! What a partner may see is decided by the OutcomeService's redaction
//! ([`threshold_outcome_service::outcome`] with the partner's view): this
//! module only renames what that leaves. The two events it adds, a parcel
//! going out for delivery and a parcel rescheduled, carry nothing but the
//! parcel, its country, the time and the next planned day. The schema is `docs/webhooks/outcome.schema.json`; the
//! mapping to other carriers' vocabularies is `docs/webhooks.md`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use threshold_api::v1::parcel_outcome::Kind;
use threshold_domain::{Category, Country, DomainEvent, pb};
use threshold_log::RecordedEvent;
use threshold_outcome_service::View;

/// The largest body an endpoint is sent; a payload over it is not sent
/// (and said so in the attempts), so no event can make a request unbounded.
pub const MAX_BODY: usize = 64 * 1024;

/// The event kinds an endpoint subscribes to, as `type` names them.
pub const KINDS: [&str; 5] = [
    "parcel.out_for_delivery",
    "parcel.delivery_attempted",
    "parcel.rescheduled",
    "parcel.delivered",
    "parcel.returned",
];

/// One delivery's body: the Standard Webhooks recommended envelope.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Payload {
    /// One of [`KINDS`].
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the event happened, UTC, RFC 3339.
    pub timestamp: String,
    /// The outcome.
    pub data: Outcome,
}

/// The outcome itself.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Outcome {
    /// The log event's id: the same as `webhook-id`.
    pub event_id: String,
    /// The log position: what a replay starts after.
    pub cursor: u64,
    /// The parcel.
    pub parcel_id: String,
    /// ISO 3166 alpha-2 code of the country it happened in, if known.
    pub country: Option<&'static str>,
    /// The canonical plain status (see `docs/webhooks.md`).
    pub status: &'static str,
    /// EPCIS 2.0 / CBV business step.
    #[serde(rename = "bizStep")]
    pub biz_step: &'static str,
    /// EPCIS 2.0 / CBV disposition.
    pub disposition: &'static str,
    /// The attempt (from 1) this outcome ends; for a return, the attempts made.
    pub attempt: Option<u32>,
    /// How the parcel was handed over, when delivered.
    pub method: Option<&'static str>,
    /// Why the attempt failed, when it failed.
    pub failure_reason: Option<&'static str>,
    /// The next planned attempt's local date, where known at the time.
    pub next_attempt_date: Option<String>,
    /// When it happened, UTC.
    pub occurred_at: String,
    /// When it happened in the country's zone, with the offset.
    pub local_time: Option<String>,
    /// For in-home deliveries: what the retailer shows as proof.
    pub proof_of_delivery: Option<Proof>,
}

/// Proof of an in-home delivery: the resident's receipt's chain head (see
/// [`crate::proof`]), which `threshold audit verify --head HASH@VERSION`
/// checks against the stored chain.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Proof {
    /// The hash at the head of the home's audit chain when the delivery
    /// was recorded, lower-case hex; `null` when the log holds no receipt
    /// for this delivery (no unlock redeemed for the parcel, or no relock).
    pub receipt_chain_head: Option<String>,
    /// The version of the home's event that hash is of; `null` with it.
    pub receipt_chain_version: Option<u64>,
}

/// A webhook's event: its id, position, parcel (for ordering), kind and body.
#[derive(Debug, Clone)]
pub struct WebhookEvent {
    /// `webhook-id`: the log event id, stable across retries and replays.
    pub id: String,
    /// Log position.
    pub position: u64,
    /// The parcel, for per-parcel order.
    pub parcel_id: String,
    /// Tenant (partner) the parcel belongs to.
    pub tenant: String,
    /// One of [`KINDS`].
    pub kind: &'static str,
    /// The body.
    pub payload: Payload,
}

impl WebhookEvent {
    /// The body's bytes.
    pub fn body(&self) -> Vec<u8> {
        // A struct of strings and numbers always serialises.
        serde_json::to_vec(&self.payload).unwrap_or_default()
    }
}

/// The canonical status row for an outcome: plain status, CBV `bizStep`,
/// CBV `disposition`.
fn status_of(kind: Kind, method: pb::DeliveryMethod) -> (&'static str, &'static str, &'static str) {
    use pb::DeliveryMethod as M;
    match kind {
        Kind::Delivered => match method {
            M::InHome => ("delivered_in_home", "receiving", "available"),
            M::Neighbour => ("delivered_to_neighbour", "receiving", "available"),
            M::Locker => ("delivered_to_parcel_locker", "storing", "available"),
            M::PickupPoint => ("delivered_to_pickup_point", "storing", "available"),
            _ => ("delivered", "receiving", "available"),
        },
        Kind::AttemptFailed => ("delivery_attempted", "arriving", "in_transit"),
        Kind::Returned => ("returned_to_sender", "shipping", "returned"),
        Kind::Unspecified => ("unknown", "other", "unknown"),
    }
}

fn method_name(m: pb::DeliveryMethod) -> Option<&'static str> {
    use pb::DeliveryMethod as M;
    Some(match m {
        M::InHome => "in_home",
        M::Doorstep => "doorstep",
        M::Neighbour => "neighbour",
        M::Locker => "parcel_locker",
        M::PickupPoint => "pickup_point",
        M::Recipient => "recipient",
        M::Unspecified => return None,
    })
}

fn reason_name(r: pb::FailureReason) -> Option<&'static str> {
    use pb::FailureReason as R;
    Some(match r {
        R::NotHome => "not_home",
        R::NoAccess => "no_access",
        R::AccessDenied => "access_denied",
        R::PetOrAlarm => "pet_or_alarm",
        R::AddressNotFound => "address_not_found",
        R::Refused => "refused",
        R::Damaged => "damaged",
        R::OutOfTime => "out_of_time",
        R::VehicleBreakdown => "vehicle_breakdown",
        R::Other => "other",
        R::Unspecified => return None,
    })
}

fn utc(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn local(at: DateTime<Utc>, country: Option<Country>) -> Option<String> {
    country.map(|c| {
        at.with_timezone(&c.tz())
            .to_rfc3339_opts(SecondsFormat::Secs, false)
    })
}

/// The webhook for `event`, if it is an outcome a partner may receive and
/// belongs to a partner.
pub fn webhook_event(event: &RecordedEvent) -> Option<WebhookEvent> {
    let tenant = event.event.tenant.clone()?;
    let at = event.event.occurred_at;
    let country = event.event.country;
    let (kind, data) = if let Some(o) = threshold_outcome_service::outcome(event, View::Partner) {
        let k = Kind::try_from(o.kind).unwrap_or(Kind::Unspecified);
        let method = pb::DeliveryMethod::try_from(o.method).unwrap_or_default();
        let (status, biz_step, disposition) = status_of(k, method);
        let kind = match k {
            Kind::Delivered => "parcel.delivered",
            Kind::AttemptFailed => "parcel.delivery_attempted",
            Kind::Returned => "parcel.returned",
            Kind::Unspecified => return None,
        };
        let data = Outcome {
            event_id: event.event.event_id.to_string(),
            cursor: o.cursor,
            parcel_id: o.parcel_id,
            country: country.map(Country::code),
            status,
            biz_step,
            disposition,
            attempt: (o.attempt > 0).then_some(o.attempt),
            method: (k == Kind::Delivered)
                .then(|| method_name(method))
                .flatten(),
            failure_reason: (k == Kind::AttemptFailed)
                .then(|| reason_name(pb::FailureReason::try_from(o.reason).unwrap_or_default()))
                .flatten(),
            next_attempt_date: None,
            occurred_at: utc(at),
            local_time: local(at, country),
            // Filled in from the log by the delivery (see `crate::proof`):
            // building a payload reads nothing but its event.
            proof_of_delivery: (status == "delivered_in_home").then_some(Proof {
                receipt_chain_head: None,
                receipt_chain_version: None,
            }),
        };
        (kind, data)
    } else {
        // Out for delivery and rescheduled: the events added here, and
        // nothing of them but the parcel, the time and the next day (never
        // the route, the driver or a reschedule's free-text reason).
        if event.stream.category() != Category::Parcel {
            return None;
        }
        let (kind, status, biz_step, next) = match event.decode() {
            Ok(DomainEvent::Parcel(pb::parcel_event::Event::OutForDelivery(_))) => (
                "parcel.out_for_delivery",
                "out_for_delivery",
                "departing",
                None,
            ),
            Ok(DomainEvent::Parcel(pb::parcel_event::Event::Rescheduled(r))) => (
                "parcel.rescheduled",
                "delivery_rescheduled",
                "holding",
                r.delivery_date
                    .as_ref()
                    .and_then(|d| threshold_domain::country::date_from_proto(d).ok())
                    .map(|d| d.format("%Y-%m-%d").to_string()),
            ),
            _ => return None,
        };
        let data = Outcome {
            event_id: event.event.event_id.to_string(),
            cursor: event.position.0,
            parcel_id: event.stream.id().to_owned(),
            country: country.map(Country::code),
            status,
            biz_step,
            disposition: "in_transit",
            attempt: None,
            method: None,
            failure_reason: None,
            next_attempt_date: next,
            occurred_at: utc(at),
            local_time: local(at, country),
            proof_of_delivery: None,
        };
        (kind, data)
    };
    Some(WebhookEvent {
        id: event.event.event_id.to_string(),
        position: event.position.0,
        parcel_id: data.parcel_id.clone(),
        tenant,
        kind,
        payload: Payload {
            kind,
            timestamp: utc(at),
            data,
        },
    })
}
