//! The residents of in-home parcels: each home enrolled by its lock's
//! vendor at the address its parcel is manifested to and claimed by its
//! resident with the code the lock shows, the alarm disarmed (or
//! forgotten), and the resident's grant for the planned driver, issued in
//! the morning and sometimes revoked.
//!
//! Only what happens before the driver comes lives here; it never drives
//! nor opens a door.

use chrono::Duration;
use threshold_access_service::device::{SigningKey, public_key};
use threshold_api::v1::access_service_client::AccessServiceClient;
use threshold_api::v1::{ClaimHomeRequest, IssueGrantRequest, RevokeGrantRequest};
use threshold_domain::pb;

use super::BoxError;
use super::conn::{Conn, access_error, at};
use super::devices::{report, report_device};
use super::fates::{Fate, Trouble};
use super::parcels::Parcel;

/// How a parcel's home came to be ready for its grant.
pub(super) struct HomeReady {
    /// Its lock's vendor enrolled it: the server gave a claim code.
    pub(super) enrolled: bool,
    /// Its resident claimed it with that code.
    pub(super) claimed: bool,
}

/// The parcel's home enrolled and claimed, then the resident's grant for
/// an in-home parcel, scoped to the planned driver: issued in the morning, and revoked an hour before the window when the
/// fate says so (after the routes were planned: the driver finds out at the
/// door).
pub(super) async fn grant(
    conn: &Conn,
    parcel: &Parcel,
    driver: &str,
    route_id: &str,
    fate: &Fate,
    key: &SigningKey,
) -> Result<HomeReady, BoxError> {
    let mut ready = HomeReady {
        enrolled: false,
        claimed: false,
    };
    let (Some(window), Some((start, _))) = (&parcel.window, parcel.window()) else {
        return Ok(ready);
    };
    let access = &mut AccessServiceClient::new(conn.vendor.clone());
    // The home's lock was installed and registered by its vendor at the
    // address the parcel is manifested to: the home is enrolled for that
    // household, and the lock shows a claim code.
    let home = parcel.home_id();
    let morning = start - Duration::hours(4);
    let registered = report(
        access,
        key,
        &home,
        pb::home_event::Event::LockRegistered(pb::LockRegistered {
            home_id: home.clone(),
            lock_id: parcel.lock_id(),
            vendor: "nordlock".into(),
            public_key: public_key(key),
            country: parcel.country.to_proto() as i32,
            address: parcel.address.clone().map(|a| pb::Address {
                position: None,
                ..a
            }),
            ..Default::default()
        }),
        morning,
    )
    .await?;
    let resident_ref = format!("resident-{}", parcel.id);
    ready.enrolled = !registered.claim_code.is_empty();
    if ready.enrolled {
        // The resident reads the code off the lock and claims the home.
        let claim = ClaimHomeRequest {
            home_id: home.clone(),
            resident_ref: resident_ref.clone(),
            claim_code: registered.claim_code,
        };
        AccessServiceClient::new(conn.resident.clone())
            .claim_home(at(claim, morning + Duration::minutes(5))?)
            .await
            .map_err(|s| access_error(&format!("claiming {home}"), &s))?;
        ready.claimed = true;
    }
    if fate.home.trouble == Some(Trouble::CameraOffline) {
        let _ = report_device(
            access,
            key,
            &home,
            pb::home_event::Event::CameraOffline(pb::CameraOffline {
                camera_id: format!("cam-{}", parcel.id),
                reason: "no heartbeat since the morning".into(),
            }),
            // After the claim: a home's history reads in order.
            morning + Duration::minutes(10),
        )
        .await?;
    }
    if fate.home.alarm {
        // The resident disarms the alarm before the window, unless forgotten.
        let _ = report_device(
            access,
            key,
            &home,
            pb::home_event::Event::Alarm(pb::AlarmState {
                device_id: format!("alarm-{}", parcel.id),
                armed: fate.home.trouble == Some(Trouble::AlarmLeftArmed),
            }),
            start - Duration::minutes(30),
        )
        .await?;
    }
    let revoked = fate.revoked;
    let issue = IssueGrantRequest {
        grant_id: parcel.grant_id(),
        home_id: home,
        parcel_ids: vec![parcel.id.clone()],
        resident_ref,
        country: parcel.country.to_proto() as i32,
        window_start_local: window.start_local.clone(),
        window_end_local: window.end_local.clone(),
        scope: Some(threshold_domain::grant::courier_scope(driver, route_id)),
        geofence: parcel
            .position
            .map(|center| threshold_domain::grant::geofence(center, 50)),
        conditions: Some(pb::HouseholdConditions {
            pet_present: fate.home.pet,
            alarm_to_disarm: fate.home.alarm,
        }),
        fallback: fate.home.fallback as i32,
    };
    let access = &mut AccessServiceClient::new(conn.resident.clone());
    access
        .issue_grant(at(issue, start - Duration::hours(3))?)
        .await
        .map_err(|s| access_error(&format!("grant for {}", parcel.id), &s))?;
    if revoked {
        let revoke = RevokeGrantRequest {
            grant_id: parcel.grant_id(),
            by: "resident".into(),
            reason: "plans changed".into(),
        };
        access
            .revoke_grant(at(revoke, start - Duration::hours(1))?)
            .await
            .map_err(|s| access_error(&format!("revoking {}", parcel.grant_id()), &s))?;
    }
    Ok(ready)
}
