//! The proof of an in-home delivery a partner's payload carries: the head
//! of the home's audit chain as it stood when the delivery was recorded,
//! the same hash and version the resident's receipt
//! (`AccessService.GetReceipt`) shows for that entry.
//!
//! It is read from the log alone — the grant the handheld named and the
//! home it opens, each up to the delivery's position — so a redelivery,
//! a replay or a restarted process computes the same head. Nothing of the
//! grant or the home (ids, resident, clips) leaves this module: only the
//! hash and its version, which identify no one.

use threshold_domain::grant::Grant;
use threshold_domain::home::Home;
use threshold_domain::{Aggregate, DomainEvent, GrantId, HomeId, StreamId, pb};
use threshold_log::{EventLog, Position, RecordedEvent, audit};

/// A receipt's chain head: the hash (lower-case hex) and stream version
/// of the home's last event before the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// SHA-256 of the home's event at `version`, hex.
    pub hash: String,
    /// That event's version in the home's stream.
    pub version: u64,
}

/// A stream is read in pages of this many events, so a long-lived home
/// is never held in one read.
const PAGE: usize = 1000;

/// `stream`'s events recorded before `position`, in version order.
async fn before(
    log: &dyn EventLog,
    stream: &StreamId,
    position: Position,
) -> threshold_log::Result<Vec<RecordedEvent>> {
    let mut out: Vec<RecordedEvent> = Vec::new();
    loop {
        let after = out.last().map_or(0, |e| e.stream_version);
        let page = log.read_stream(stream, after, PAGE).await?;
        let full = page.len() == PAGE;
        for e in page {
            if e.position >= position {
                return Ok(out);
            }
            out.push(e);
        }
        if !full {
            return Ok(out);
        }
    }
}

/// The chain head proving `delivered`, an in-home delivery: `None` when it
/// is not one, or when the log holds no receipt for it (no grant redeemed
/// for this parcel, no entry relocked, or a chain that does not hold). An
/// error only when the log cannot be read: the caller tries again.
pub async fn receipt_head(
    log: &dyn EventLog,
    delivered: &RecordedEvent,
) -> threshold_log::Result<Option<ChainHead>> {
    let Ok(DomainEvent::Parcel(pb::parcel_event::Event::Delivered(d))) = delivered.decode() else {
        return Ok(None);
    };
    if d.method != pb::DeliveryMethod::InHome as i32 {
        return Ok(None);
    }
    let Ok(grant_id) = GrantId::new(&d.grant_id) else {
        return Ok(None);
    };
    let parcel_id = delivered.stream.id();
    let grant_events = before(log, &StreamId::grant(&grant_id), delivered.position).await?;
    let mut grant = Grant::default();
    for r in &grant_events {
        if let Some(e) = r.decode().ok().and_then(Grant::from_domain) {
            grant.evolve_recorded(&e, r.event.occurred_at);
        }
    }
    // A grant that was not redeemed for this very parcel proves nothing
    // about it, whatever the handheld named.
    let Some(nonce) = grant.redeemed(parcel_id) else {
        return Ok(None);
    };
    let Some(home_id) = grant.home_id().and_then(|h| HomeId::new(h).ok()) else {
        return Ok(None);
    };
    let home = before(log, &StreamId::home(&home_id), delivered.position).await?;
    let entry = threshold_domain::home::entry(threshold_log::recorded::<Home>(&home), nonce);
    if entry.and_then(|e| e.relocked_at).is_none() {
        return Ok(None);
    }
    match audit::verify(&home) {
        Ok(head) => Ok(home.last().map(|e| ChainHead {
            hash: audit::hex(&head),
            version: e.stream_version,
        })),
        Err(broken) => {
            tracing::warn!(parcel = parcel_id, %broken, "no proof of delivery: the home's chain does not hold");
            Ok(None)
        }
    }
}
