//! Standard Webhooks signing (standardwebhooks.com): the three headers a
//! receiver checks with any Standard Webhooks library.
//!
//! `webhook-signature` is `v1,` followed by the base64 HMAC-SHA256 of
//! `<webhook-id>.<webhook-timestamp>.<body>` under the secret's key; during
//! a rotation it carries one such signature per valid secret, separated by
//! spaces, so a receiver holding either secret verifies the delivery.
//! This module only signs: the tests verify with an independent
//! implementation, never with this code.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore as _;

use crate::{Error, Result};

/// The prefix of a secret as the specification writes it.
const PREFIX: &str = "whsec_";

/// Bytes of key in a fresh secret (the specification asks for 24 to 64).
const KEY_BYTES: usize = 32;

/// An endpoint's signing secret: `whsec_` and the base64 of its key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never printed: a log line must not hand out the key.
        f.write_str("Secret(whsec_…)")
    }
}

impl Secret {
    /// A fresh random secret.
    pub fn generate() -> Self {
        let mut key = vec![0u8; KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        Self { key }
    }

    /// Parses `whsec_<base64>`.
    pub fn parse(s: &str) -> Result<Self> {
        let b64 = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| Error::Invalid("secret: must start with whsec_".into()))?;
        let key = STANDARD
            .decode(b64)
            .map_err(|e| Error::Invalid(format!("secret: not base64 after whsec_: {e}")))?;
        if !(24..=64).contains(&key.len()) {
            return Err(Error::Invalid(format!(
                "secret: {} bytes of key, 24 to 64 expected",
                key.len()
            )));
        }
        Ok(Self { key })
    }

    /// The secret as the partner configures it in its receiver.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.key))
    }

    /// `v1,<base64 HMAC-SHA256 of id.timestamp.body>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.key);
        let mut ctx = ring::hmac::Context::with_key(&key);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }
}

/// The value of `webhook-signature`: one signature per secret, in the
/// order given, separated by single spaces.
pub fn signature_header(secrets: &[Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_round_trips_and_bad_ones_are_named() {
        let s = Secret::generate();
        assert_eq!(Secret::parse(&s.expose()).expect("parse"), s);
        assert!(Secret::parse("abc").is_err());
        assert!(Secret::parse("whsec_!!").is_err());
        assert!(Secret::parse("whsec_AAAA").is_err());
        assert!(!format!("{s:?}").contains(&s.expose()[6..]));
    }

    #[test]
    fn rotation_carries_one_signature_per_secret() {
        let (a, b) = (Secret::generate(), Secret::generate());
        let h = signature_header(&[a.clone(), b.clone()], "msg_1", 1, b"{}");
        let parts: Vec<_> = h.split(' ').collect();
        assert_eq!(
            parts,
            [a.sign("msg_1", 1, b"{}"), b.sign("msg_1", 1, b"{}")]
        );
        assert_ne!(parts[0], parts[1]);
    }
}
