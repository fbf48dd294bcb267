//! Key-encryption keys. Where the vault's state is kept in a store shared
//! over the network, its secret and its subjects' keys are stored wrapped
//! (XChaCha20-Poly1305) under a key the operator supplies, never in the
//! clear: whoever reads the store without the key-encryption key learns
//! which slots exist, not a key.
//!
//! A wrapped value is `W1`, the id of the key that wrapped it (8 bytes of
//! a hash of the key), a 24-byte nonce and the ciphertext, with the slot it
//! is stored under as associated data, so it cannot be moved to another
//! slot. [`Keks`] wraps with its first key and unwraps with any of its
//! keys: a rotation gives every process the new key first and the old one
//! after it, rewraps every value (`threshold privacy rewrap`), then drops
//! the old key.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use super::random;

const MAGIC: &[u8; 2] = b"W1";
const HEADER: usize = 2 + 8 + 24;

/// `bytes` as lowercase hexadecimal: how key ids are named.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// One key-encryption key.
#[derive(Clone)]
pub struct Kek {
    pub(crate) id: [u8; 8],
    key: [u8; 32],
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kek({})", self.id_hex())
    }
}

impl Kek {
    /// A key from 64 hexadecimal digits (surrounding white space ignored);
    /// `what` names where it came from in the error.
    pub fn from_hex(text: &str, what: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{what}: a key-encryption key is 64 hexadecimal digits (32 bytes), e.g. from \
                 `threshold privacy new-kek`; found {} characters",
                text.len()
            ));
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(Self::from_bytes(key))
    }

    /// The key in the file `path` (64 hexadecimal digits).
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "{}: cannot read the key-encryption key: {e}",
                path.display()
            )
        })?;
        Self::from_hex(&text, &path.display().to_string())
    }

    /// A new random key, as 64 hexadecimal digits.
    pub fn generate_hex() -> String {
        random::<32>().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn from_bytes(key: [u8; 32]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"threshold key-encryption key id\0")
            .chain_update(key)
            .finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        Self { id, key }
    }

    /// Its id, as hexadecimal: names it without revealing it.
    pub fn id_hex(&self) -> String {
        hex(&self.id)
    }
}

/// The key-encryption keys a process holds: the first wraps, every one
/// unwraps.
#[derive(Clone, Debug)]
pub struct Keks(Vec<Kek>);

impl Keks {
    /// `current` wraps; `current` and `previous` unwrap.
    pub fn new(current: Kek, previous: impl IntoIterator<Item = Kek>) -> Self {
        Self(std::iter::once(current).chain(previous).collect())
    }

    /// The key that wraps.
    pub fn current(&self) -> &Kek {
        &self.0[0]
    }

    /// `plaintext` wrapped under the current key for `slot`.
    pub fn wrap(&self, slot: &str, plaintext: &[u8]) -> Vec<u8> {
        let kek = self.current();
        let nonce = random::<24>();
        let ciphertext = XChaCha20Poly1305::new(Key::from_slice(&kek.key))
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: slot.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any length this vault wraps");
        let mut out = Vec::with_capacity(HEADER + ciphertext.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&kek.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// The id of the key `wrapped` was wrapped under, if it is a wrapped
    /// value at all.
    pub fn wrapped_by(wrapped: &[u8]) -> Option<[u8; 8]> {
        (wrapped.len() > HEADER && wrapped.starts_with(MAGIC))
            .then(|| wrapped[2..10].try_into().ok())
            .flatten()
    }

    /// Whether `wrapped` is wrapped under the current key.
    pub fn is_current(&self, wrapped: &[u8]) -> bool {
        Self::wrapped_by(wrapped) == Some(self.current().id)
    }

    /// What `wrapped` holds, stored under `slot`; why not, when it cannot
    /// be opened.
    pub fn unwrap(&self, slot: &str, wrapped: &[u8]) -> Result<Vec<u8>, String> {
        let id = Self::wrapped_by(wrapped)
            .ok_or_else(|| format!("{slot}: not a wrapped value this build writes"))?;
        let kek = self.0.iter().find(|k| k.id == id).ok_or_else(|| {
            format!(
                "{slot}: wrapped under the key-encryption key {}, which this process was not \
                 given (it holds {})",
                hex(&id),
                self.0
                    .iter()
                    .map(Kek::id_hex)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        XChaCha20Poly1305::new(Key::from_slice(&kek.key))
            .decrypt(
                XNonce::from_slice(&wrapped[10..HEADER]),
                Payload {
                    msg: &wrapped[HEADER..],
                    aad: slot.as_bytes(),
                },
            )
            .map_err(|_| format!("{slot}: does not authenticate under its key-encryption key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_value_opens_under_its_key_in_its_slot_only() {
        let (a, b) = (
            Kek::from_hex(&Kek::generate_hex(), "a").unwrap(),
            Kek::from_hex(&Kek::generate_hex(), "b").unwrap(),
        );
        let old = Keks::new(a.clone(), []);
        let wrapped = old.wrap("key/x", b"secret");
        assert!(!String::from_utf8_lossy(&wrapped).contains("secret"));
        assert_eq!(old.unwrap("key/x", &wrapped).unwrap(), b"secret");
        assert!(
            old.unwrap("key/y", &wrapped)
                .unwrap_err()
                .contains("does not authenticate")
        );
        let mut damaged = wrapped.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(old.unwrap("key/x", &damaged).is_err());

        // Rotation: the new key wraps, the old one still unwraps.
        let both = Keks::new(b.clone(), [a.clone()]);
        assert!(!both.is_current(&wrapped));
        assert_eq!(both.unwrap("key/x", &wrapped).unwrap(), b"secret");
        let rewrapped = both.wrap("key/x", b"secret");
        assert!(both.is_current(&rewrapped));
        let new_only = Keks::new(b, []);
        assert_eq!(new_only.unwrap("key/x", &rewrapped).unwrap(), b"secret");
        let err = new_only.unwrap("key/x", &wrapped).unwrap_err();
        assert!(
            err.contains(&a.id_hex()) && err.contains("not given"),
            "{err}"
        );
    }

    #[test]
    fn a_key_encryption_key_must_be_64_hex_digits() {
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(63)] {
            let err = Kek::from_hex(bad, "THRESHOLD_VAULT_KEK").unwrap_err();
            assert!(err.starts_with("THRESHOLD_VAULT_KEK: "), "{err}");
        }
        assert!(Kek::from_hex(&format!(" {}\n", "0f".repeat(32)), "x").is_ok());
    }
}
