//! What the service adds to a home's enrolment and claim before the home
//! decides: the household living at a registration's address (found in the
//! vault as the manifest service finds a parcel's), the address sealed
//! under its key, a fresh one-time claim code and its digest; and, for a
//! grant, the facts its binding is decided on: the home's enrolment and
//! each parcel's household.
//!
//! It must never decide whether a home is enrolled, claimed or may be
//! granted: [`threshold_domain::home`] and [`threshold_domain::enrolment`]
//! do. It draws the claim code's randomness and talks to the vault, which
//! the domain may not.

use sha2::{Digest, Sha256};
use threshold_domain::enrolment::{
    Bound, CLAIM_CODE_BYTES, format_claim_code, normalise_claim_code,
};
use threshold_domain::home::Home;
use threshold_domain::parcel::Parcel;
use threshold_domain::{Country, DomainError, HomeId, ParcelId, StreamId, pb};
use threshold_status::{field, status};
use tonic::Status;

use crate::Access;

/// A one-time claim code as shown to the household, and the digest the
/// home's stream keeps of it.
pub(crate) struct ClaimCode {
    /// XXXX-XXXX-XXXX-XXXX.
    pub(crate) shown: String,
    /// SHA-256 of its normalised form.
    pub(crate) digest: Vec<u8>,
}

impl ClaimCode {
    /// 80 fresh random bits from the operating system's generator.
    pub(crate) fn fresh() -> Self {
        let shown = format_claim_code(rand::random::<[u8; CLAIM_CODE_BYTES]>());
        let digest = claim_digest(&shown).unwrap_or_default();
        Self { shown, digest }
    }
}

/// The digest of a typed claim code: SHA-256 of its normalised form; an
/// `INVALID_ARGUMENT` on `claim_code` when it is not a claim code.
pub(crate) fn claim_digest(typed: &str) -> Result<Vec<u8>, Status> {
    let normal = normalise_claim_code(typed).map_err(|e| match e {
        DomainError::Invalid {
            field: name,
            reason,
        } => field(name, reason),
        other => status(other),
    })?;
    Ok(Sha256::digest(normal.as_bytes()).to_vec())
}

impl Access {
    /// Moves a registration's address into `sealed_address`, under the key
    /// of the household living there, and names that household; then
    /// gives it a fresh claim code's digest. Returns the code.
    pub(crate) fn enrol(
        &self,
        home_id: &HomeId,
        r: &mut pb::LockRegistered,
    ) -> Result<ClaimCode, Status> {
        if let Some(address) = r.address.take() {
            let vault = self.vault.as_ref().ok_or_else(|| {
                Status::failed_precondition(
                    "this server keeps no vault: a home's address cannot be sealed, so no home \
                     is enrolled",
                )
            })?;
            for (name, part) in [
                ("address.street", &address.street),
                ("address.postal_code", &address.postal_code),
                ("address.city", &address.city),
            ] {
                if part.trim().is_empty() {
                    return Err(field(name, "is empty"));
                }
            }
            // The same parts, in the same order, as the manifest service
            // gives a parcel's address: so a home and the parcels addressed
            // to it are one household.
            let country = Country::from_proto(r.country).map_err(|e| field("country", e))?;
            let household = vault
                .household(&[
                    &address.street,
                    &address.postal_code,
                    &address.city,
                    country.code(),
                ])
                .map_err(status)?;
            let context = StreamId::home(home_id).to_string();
            r.sealed_address = Some(
                vault
                    .seal_message(&household.subject, &context, &address)
                    .map_err(status)?,
            );
            r.household_id = household.subject;
        }
        let code = ClaimCode::fresh();
        r.claim_digest.clone_from(&code.digest);
        Ok(code)
    }

    /// What a grant for `home` and `parcels` is bound by: the home's
    /// enrolment (its household's erasure asked of the vault) and each
    /// parcel's household, from the subject its address is sealed under.
    pub(crate) async fn bound(&self, home: &Home, parcels: &[String]) -> Result<Bound, Status> {
        let mut enrolled = home.enrolled();
        if let (Some(e), Some(vault)) = (&mut enrolled, &self.vault) {
            e.household_forgotten = vault.is_subject_forgotten(&e.household).map_err(status)?;
        }
        let mut parcel_households = Vec::with_capacity(parcels.len());
        for (i, p) in parcels.iter().enumerate() {
            let id = ParcelId::new(p).map_err(|e| field(&format!("parcel_ids[{i}]"), e))?;
            let (parcel, _) = self.load::<Parcel>(&StreamId::parcel(&id)).await?;
            parcel_households.push(
                parcel
                    .manifest
                    .and_then(|m| m.sealed_address)
                    .map(|s| s.subject),
            );
        }
        Ok(Bound {
            home: enrolled,
            parcel_households,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_code_is_shown_once_and_its_digest_matches_it_as_typed() {
        let a = ClaimCode::fresh();
        let b = ClaimCode::fresh();
        assert_ne!(a.shown, b.shown);
        assert_eq!(a.digest.len(), 32);
        assert_eq!(claim_digest(&a.shown.to_lowercase()).unwrap(), a.digest);
        assert_eq!(claim_digest(&a.shown.replace('-', " ")).unwrap(), a.digest);
        assert_ne!(claim_digest(&b.shown).unwrap(), a.digest);
        assert_eq!(
            claim_digest("1234").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
