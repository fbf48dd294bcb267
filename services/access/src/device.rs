//! Signatures of a home's devices.
//!
//! A lock, camera or alarm panel signs what it sends with the ed25519 key
//! registered for its home (`LockRegistered.public_key`). What is signed is
//! the request itself, protobuf-encoded with its `signature` field empty,
//! behind a label naming the request type, so a signature over one kind of
//! request can never pass for another. Every proto3 encoder writes the same
//! bytes for the same message with no unknown fields, so a vendor's device
//! needs no Threshold code to sign.

pub use ed25519_dalek::SigningKey;
use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};
use prost::Message;
use threshold_api::v1::{DeviceEventRequest, RedeemUnlockRequest};

const EVENT_LABEL: &[u8] = b"threshold.v1.DeviceEventRequest\0";
const REDEEM_LABEL: &[u8] = b"threshold.v1.RedeemUnlockRequest\0";

/// Something a device signs.
pub trait Signed: Message + Clone {
    /// The label in front of the signed bytes.
    const LABEL: &'static [u8];
    /// The signature field.
    fn signature_mut(&mut self) -> &mut Vec<u8>;
    /// The signature carried.
    fn signature(&self) -> &[u8];

    /// The bytes the signature covers.
    fn signed_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.signature_mut().clear();
        let mut bytes = Self::LABEL.to_vec();
        unsigned.encode(&mut bytes).expect("a Vec grows as needed");
        bytes
    }

    /// Signs it with `key`, replacing any signature it carried.
    fn sign(&mut self, key: &SigningKey) {
        let signature = key.sign(&self.signed_bytes());
        *self.signature_mut() = signature.to_bytes().to_vec();
    }

    /// Checks its signature against `public_key`: `Err` says what is wrong.
    fn verify(&self, public_key: &[u8]) -> Result<(), String> {
        let key: [u8; 32] = public_key
            .try_into()
            .map_err(|_| format!("the registered key is {} bytes, not 32", public_key.len()))?;
        let key = VerifyingKey::from_bytes(&key)
            .map_err(|e| format!("the registered key is not an ed25519 key: {e}"))?;
        if self.signature().is_empty() {
            return Err("is missing".into());
        }
        let signature = Signature::from_slice(self.signature()).map_err(|_| {
            format!(
                "is {} bytes, not an ed25519 signature",
                self.signature().len()
            )
        })?;
        key.verify(&self.signed_bytes(), &signature)
            .map_err(|_| "does not verify under the home's registered key".into())
    }
}

impl Signed for DeviceEventRequest {
    const LABEL: &'static [u8] = EVENT_LABEL;
    fn signature_mut(&mut self) -> &mut Vec<u8> {
        &mut self.signature
    }
    fn signature(&self) -> &[u8] {
        &self.signature
    }
}

impl Signed for RedeemUnlockRequest {
    const LABEL: &'static [u8] = REDEEM_LABEL;
    fn signature_mut(&mut self) -> &mut Vec<u8> {
        &mut self.signature
    }
    fn signature(&self) -> &[u8] {
        &self.signature
    }
}

/// A device key from 32 secret bytes (a simulator derives them from its
/// seed; a real device keeps its own).
pub fn key_from_seed(seed: [u8; 32]) -> SigningKey {
    SigningKey::from_bytes(&seed)
}

/// The public half of `key`, as `LockRegistered.public_key` holds it.
pub fn public_key(key: &SigningKey) -> Vec<u8> {
    key.verifying_key().to_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RedeemUnlockRequest {
        RedeemUnlockRequest {
            home_id: "h-1".into(),
            lock_id: "lock-1".into(),
            grant_id: "g-1".into(),
            nonce: "n-1".into(),
            signature: vec![],
        }
    }

    #[test]
    fn a_signature_holds_for_its_request_and_key_only() {
        let key = key_from_seed([1; 32]);
        let mut r = request();
        assert_eq!(r.verify(&public_key(&key)).unwrap_err(), "is missing");
        r.sign(&key);
        assert_eq!(r.verify(&public_key(&key)), Ok(()));
        // Another key.
        let other = key_from_seed([2; 32]);
        assert!(r.verify(&public_key(&other)).is_err());
        // The same signature on a changed request.
        let mut changed = r.clone();
        changed.nonce = "n-2".into();
        assert!(changed.verify(&public_key(&key)).is_err());
        // A truncated signature.
        let mut short = r.clone();
        short.signature.truncate(10);
        assert!(
            short
                .verify(&public_key(&key))
                .unwrap_err()
                .contains("10 bytes")
        );
    }
}
