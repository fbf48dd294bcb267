//! One in-home stop: the scan at the door, the unlock asked from where the
//! handheld is, the lock redeeming the nonce, the entry, the clip and the
//! relock reported by the home's devices, and the resident's receipt; a
//! refusal turns into the grant's fallback.
//!
//! It plays one stop as its fate says and counts it in the driver's day;
//! it never decides a fate nor sends the attempt's outcome (the driver's
//! round does).

use chrono::{DateTime, Duration, Utc};
use threshold_access_service::device::Signed;
use threshold_api::v1::handheld_event::Report;
use threshold_api::v1::{
    AttemptFailedReport, AttemptStartedReport, AuthorizeUnlockRequest, DeliveredReport,
    ReceiptRequest, RedeemUnlockRequest, attempt_ack,
};
use threshold_domain::country::timestamp;
use threshold_domain::pb;

use super::BoxError;
use super::conn::{access_error, at};
use super::devices::{clip_hash, device_key, report_device};
use super::drivers::{DriverDay, Handheld, stream};
use super::fates::{Fate, Trouble};
use super::parcels::Parcel;

/// One in-home stop at `t`: the driver scans the parcel and asks to unlock
/// from the handheld's position; the lock redeems the nonce, reports the
/// entry and, once the courier is out, the relock; the resident's receipt
/// is fetched. Returns the attempt's outcome and when it is reported:
/// delivered in-home, or the grant's fallback when the unlock is refused.
pub(super) async fn enter(
    h: &mut Handheld<'_>,
    parcel: &Parcel,
    fate: &Fate,
    t: DateTime<Utc>,
    day: &mut DriverDay,
) -> Result<(Report, DateTime<Utc>), BoxError> {
    let trouble = fate.home.trouble;
    let home = parcel.home_id();
    let key = device_key(h.seed, &home);
    let camera = format!("cam-{}", parcel.id);
    // The scan at the door, acknowledged before the unlock is asked.
    let scan = h.event(parcel, t, Report::Started(AttemptStartedReport {}));
    for a in stream(h.conn, &[scan], None).await? {
        if attempt_ack::Result::try_from(a.result) != Ok(attempt_ack::Result::Stored) {
            return Err(format!(
                "{}: the scan of {} was not stored: {}",
                h.driver, parcel.id, a.error
            )
            .into());
        }
        day.stored += 1;
        day.last_position = day.last_position.max(a.position);
    }
    if trouble != Some(Trouble::CameraOffline) {
        let beat = pb::home_event::Event::CameraOnline(pb::CameraOnline {
            camera_id: camera.clone(),
            recording: true,
        });
        report_device(&mut h.lock, &key, &home, beat, t - Duration::seconds(10)).await?;
    }
    let mut position = parcel.position;
    if trouble == Some(Trouble::OutsideGeofence)
        && let Some(p) = &mut position
    {
        // About 550 m north of the door.
        p.latitude += 0.005;
    }
    let ask = AuthorizeUnlockRequest {
        grant_id: parcel.grant_id(),
        parcel_id: parcel.id.clone(),
        driver_id: h.driver.clone(),
        route_id: h.route_id.clone(),
        position,
        pet_acknowledged: fate.home.pet,
    };
    let reply = h
        .access
        .authorize_unlock(at(ask, t)?)
        .await
        .map_err(|s| access_error(&format!("unlock for {}", parcel.id), &s))?
        .into_inner();
    // A refusal, by the server or at the lock, becomes the grant's fallback.
    let fallback = |day: &mut DriverDay, reason: i32, detail: String| {
        *day.denied
            .entry(threshold_access_service::reason_name(reason))
            .or_default() += 1;
        let fallback = pb::Fallback::try_from(reply.fallback).unwrap_or(pb::Fallback::Doorstep);
        *day.fallbacks
            .entry(
                fallback
                    .as_str_name()
                    .trim_start_matches("FALLBACK_")
                    .to_lowercase(),
            )
            .or_default() += 1;
        let delivered = |method: pb::DeliveryMethod| {
            Report::Delivered(DeliveredReport {
                method: method as i32,
                grant_id: String::new(),
                position: parcel.position,
            })
        };
        let outcome = match fallback {
            pb::Fallback::Return => Report::Failed(AttemptFailedReport {
                reason: pb::FailureReason::AccessDenied as i32,
                note: detail,
            }),
            pb::Fallback::Locker => delivered(pb::DeliveryMethod::Locker),
            pb::Fallback::Neighbour => delivered(pb::DeliveryMethod::Neighbour),
            _ => delivered(pb::DeliveryMethod::Doorstep),
        };
        (outcome, t + Duration::minutes(1))
    };
    if !reply.authorized {
        return Ok(fallback(day, reply.reason, reply.detail.clone()));
    }
    day.unlocks += 1;
    // The lock presents the nonce before it opens.
    let mut redeem = RedeemUnlockRequest {
        home_id: home.clone(),
        lock_id: parcel.lock_id(),
        grant_id: parcel.grant_id(),
        nonce: reply.nonce.clone(),
        signature: Vec::new(),
    };
    redeem.sign(&key);
    let opened = h
        .lock
        .redeem_unlock(at(redeem.clone(), t)?)
        .await
        .map_err(|s| access_error(&format!("redeeming for {}", parcel.id), &s))?
        .into_inner();
    if !opened.open {
        // Refused at the lock (an authorization that ran out, say): the
        // door stays shut.
        return Ok(fallback(day, opened.reason, opened.detail));
    }
    day.entries += 1;
    let mut alerts = Vec::new();
    let lock = |e| (e, parcel.lock_id());
    let (unlocked, lock_id) = lock(pb::home_event::Event::Unlocked(pb::LockUnlocked {
        lock_id: parcel.lock_id(),
        grant_id: parcel.grant_id(),
        nonce: reply.nonce.clone(),
    }));
    alerts.extend(
        report_device(
            &mut h.lock,
            &key,
            &home,
            unlocked,
            t + Duration::seconds(30),
        )
        .await?,
    );
    if trouble == Some(Trouble::Replayed) {
        let again = h
            .lock
            .redeem_unlock(at(redeem, t + Duration::seconds(45))?)
            .await
            .map_err(|s| access_error(&format!("replaying for {}", parcel.id), &s))?
            .into_inner();
        if again.open {
            return Err(format!("a replayed unlock request opened {home}").into());
        }
        day.replays_refused += 1;
    }
    if trouble == Some(Trouble::CameraDrops) {
        let down = pb::home_event::Event::CameraOffline(pb::CameraOffline {
            camera_id: camera.clone(),
            reason: "wifi deauthentication".into(),
        });
        alerts.extend(
            report_device(&mut h.lock, &key, &home, down, t + Duration::seconds(60)).await?,
        );
    } else {
        let clip = pb::home_event::Event::ClipRecorded(pb::ClipRecorded {
            camera_id: camera.clone(),
            uri: format!("clips://{home}/{}", reply.nonce),
            sha256: clip_hash(&reply.nonce),
            started_at: Some(timestamp(t + Duration::seconds(30))),
            ended_at: Some(timestamp(t + Duration::seconds(110))),
        });
        alerts.extend(
            report_device(&mut h.lock, &key, &home, clip, t + Duration::seconds(110)).await?,
        );
    }
    let relocked_at = if trouble == Some(Trouble::DoorLeftOpen) {
        // The courier walks off without relocking; the handheld tries to
        // close the attempt, and the server says no.
        let early = h.event(
            parcel,
            t + Duration::minutes(2),
            Report::Delivered(DeliveredReport {
                method: pb::DeliveryMethod::InHome as i32,
                grant_id: parcel.grant_id(),
                position: parcel.position,
            }),
        );
        let acks = stream(h.conn, &[early], None).await?;
        if acks
            .iter()
            .any(|a| attempt_ack::Result::try_from(a.result) == Ok(attempt_ack::Result::Stored))
        {
            return Err(format!(
                "{} was closed as delivered before its door was relocked",
                parcel.id
            )
            .into());
        }
        day.closings_refused += 1;
        let left = pb::home_event::Event::DoorLeftOpen(pb::DoorLeftOpen {
            lock_id: lock_id.clone(),
            open_seconds: 240,
        });
        alerts.extend(
            report_device(&mut h.lock, &key, &home, left, t + Duration::seconds(270)).await?,
        );
        t + Duration::minutes(6)
    } else {
        t + Duration::minutes(2)
    };
    let relocked = pb::home_event::Event::Relocked(pb::LockRelocked {
        lock_id: lock_id.clone(),
    });
    alerts.extend(report_device(&mut h.lock, &key, &home, relocked, relocked_at).await?);
    let handle = pb::home_event::Event::HandleChecked(pb::HandleChecked {
        lock_id,
        locked: true,
    });
    alerts.extend(
        report_device(
            &mut h.lock,
            &key,
            &home,
            handle,
            relocked_at + Duration::seconds(5),
        )
        .await?,
    );
    for kind in alerts {
        let kind = pb::AlertKind::try_from(kind).map_or("unknown", |k| k.as_str_name());
        *day.alerts
            .entry(kind.trim_start_matches("ALERT_KIND_").to_lowercase())
            .or_default() += 1;
    }
    // The resident's receipt holds the home's chain head after the relock.
    let receipt = h
        .resident
        .get_receipt(at(
            ReceiptRequest {
                grant_id: parcel.grant_id(),
                parcel_id: parcel.id.clone(),
            },
            relocked_at,
        )?)
        .await
        .map_err(|s| access_error(&format!("receipt for {}", parcel.id), &s))?
        .into_inner();
    if receipt.chain_head.len() == 64 {
        day.receipts += 1;
    }
    Ok((
        Report::Delivered(DeliveredReport {
            method: pb::DeliveryMethod::InHome as i32,
            grant_id: parcel.grant_id(),
            position: parcel.position,
        }),
        relocked_at + Duration::seconds(30),
    ))
}
