//! A home's devices: the smart lock, camera and alarm the simulator plays,
//! each with a signing key derived from the day's seed, reporting signed
//! events to AccessService.
//!
//! Only how a device speaks lives here; it never decides when it reports
//! or what goes wrong (the residents, the in-home stop and the fates do).

use std::hash::{Hash, Hasher};

use chrono::{DateTime, Utc};
use threshold_access_service::device::{Signed, SigningKey, key_from_seed};
use threshold_api::v1::access_service_client::AccessServiceClient;
use threshold_api::v1::{DeviceEventReply, DeviceEventRequest};
use threshold_auth::Authed;
use threshold_domain::country::timestamp;
use threshold_domain::{EventId, pb};

use super::BoxError;
use super::conn::{access_error, at};

/// The home's device key, derived from the day's seed and the home.
pub(super) fn device_key(seed: u64, home: &str) -> SigningKey {
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (seed, home, i).hash(&mut h);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    key_from_seed(bytes)
}

/// A home's device reports `event` at `at`, signed with its key; the
/// alerts the server raised on it.
pub(super) async fn report_device(
    access: &mut AccessServiceClient<Authed>,
    key: &SigningKey,
    home: &str,
    event: pb::home_event::Event,
    at_time: DateTime<Utc>,
) -> Result<Vec<i32>, BoxError> {
    Ok(report(access, key, home, event, at_time)
        .await?
        .alerts_raised)
}

/// A home's device reports `event` at `at`, signed with its key; the
/// server's whole reply (for a lock's registration, the home's claim code).
pub(super) async fn report(
    access: &mut AccessServiceClient<Authed>,
    key: &SigningKey,
    home: &str,
    event: pb::home_event::Event,
    at_time: DateTime<Utc>,
) -> Result<DeviceEventReply, BoxError> {
    let mut r = DeviceEventRequest {
        event_id: EventId::new().to_string(),
        home_id: home.to_owned(),
        occurred_at: Some(timestamp(at_time)),
        event: Some(pb::HomeEvent {
            event: Some(event),
            prev_hash: Vec::new(),
        }),
        signature: Vec::new(),
    };
    r.sign(key);
    Ok(access
        .record_device_event(at(r, at_time)?)
        .await
        .map_err(|s| access_error(&format!("device event of {home}"), &s))?
        .into_inner())
}

/// A stand-in for a clip's SHA-256: 64 hex digits from its name.
pub(super) fn clip_hash(name: &str) -> String {
    (0..4u8)
        .map(|i| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (name, i).hash(&mut h);
            format!("{:016x}", h.finish())
        })
        .collect()
}
