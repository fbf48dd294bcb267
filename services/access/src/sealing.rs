//! A grant's geofence center sealed under the resident's key in the vault,
//! and opened again for an unlock decision: the log never holds a home's
//! position in the clear when the service has a vault.
//!
//! It must never write to the log or decide anything: it only seals and
//! opens.

use prost::Message as _;
use threshold_domain::pb;
use threshold_status::{IntoStatus as _, field, status};
use tonic::Status;

use crate::Access;

/// The vault subject a resident's data is sealed under.
pub fn resident_subject(resident_ref: &str) -> String {
    format!("resident:{resident_ref}")
}

impl Access {
    /// Moves a grant's geofence center into its seal, under the resident's
    /// key, bound to the grant.
    pub(crate) fn seal_center(&self, issued: &mut pb::GrantIssued) -> Result<(), Status> {
        let Some(vault) = &self.vault else {
            return Ok(());
        };
        let Some(fence) = issued.geofence.as_mut() else {
            return Ok(());
        };
        let Some(center) = fence.center.take() else {
            return Ok(());
        };
        if !(-90.0..=90.0).contains(&center.latitude)
            || !(-180.0..=180.0).contains(&center.longitude)
        {
            return Err(field(
                "geofence.center",
                format!(
                    "{}, {} is not a WGS84 position",
                    center.latitude, center.longitude
                ),
            ));
        }
        if issued.resident_ref.trim().is_empty() {
            return Err(field("resident_ref", "is missing"));
        }
        let subject = resident_subject(&issued.resident_ref);
        let context = format!("grant/{}", issued.grant_id);
        fence.center_digest = vault
            .digest(&subject, &center.encode_to_vec())
            .map_err(status)?;
        fence.sealed_center = Some(
            vault
                .seal_message(&subject, &context, &center)
                .map_err(status)?,
        );
        Ok(())
    }

    /// A grant's geofence center: clear, or opened from its seal (`None`
    /// once the resident was forgotten).
    pub(crate) fn center_of(
        &self,
        issued: &pb::GrantIssued,
    ) -> Result<Option<pb::GeoPoint>, Status> {
        let Some(fence) = &issued.geofence else {
            return Ok(None);
        };
        if let Some(c) = fence.center {
            return Ok(Some(c));
        }
        let (Some(sealed), Some(vault)) = (&fence.sealed_center, &self.vault) else {
            return Ok(None);
        };
        vault
            .unseal_message::<pb::GeoPoint>(sealed, &format!("grant/{}", issued.grant_id))
            .map_err(|e| {
                // The vault's reply, which names none of its files.
                let status = e.into_status();
                Status::new(
                    status.code(),
                    format!("grant/{}: {}", issued.grant_id, status.message()),
                )
            })
    }
}
