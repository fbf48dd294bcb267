//! Credentials. A caller presents a bearer token; the token names who it is.
//! Only SHA-256 hashes of tokens are stored, in `DIR/partners.json`, so a
//! copy of the data directory does not hand out working tokens.
//!
//! Today this holds partners' tokens (a partner sees its own parcels only);
//! the roles of planners, handhelds, residents, lock vendors and analysts
//! join here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use threshold_domain::PartnerId;

/// The file partners' token hashes live in, inside the data directory.
pub const PARTNERS_FILE: &str = "partners.json";

/// Why credentials could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not what this build writes.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    partners: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    partner_id: String,
    token_sha256: String,
}

/// Partners' tokens, by hash.
#[derive(Debug, Default)]
pub struct PartnerTokens {
    by_hash: HashMap<String, PartnerId>,
}

fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read(path: &Path) -> Result<File> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Malformed {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

impl PartnerTokens {
    /// The tokens configured in `dir` (none if the file does not exist).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join(PARTNERS_FILE);
        let file = read(&path)?;
        let mut by_hash = HashMap::new();
        for e in file.partners {
            let partner = PartnerId::new(&e.partner_id).map_err(|err| Error::Malformed {
                path: path.clone(),
                reason: err.to_string(),
            })?;
            by_hash.insert(e.token_sha256, partner);
        }
        Ok(Self { by_hash })
    }

    /// Makes a new token for `partner`, stores its hash in `dir`, and returns
    /// the token: the only time it is seen.
    pub fn add(dir: impl AsRef<Path>, partner: &PartnerId) -> Result<String> {
        let dir = dir.as_ref();
        let path = dir.join(PARTNERS_FILE);
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut file = read(&path)?;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        file.partners.push(Entry {
            partner_id: partner.to_string(),
            token_sha256: hash(&token),
        });
        // Write whole or not at all.
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&file).map_err(|e| Error::Malformed {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        Ok(token)
    }

    /// The partner a token belongs to.
    pub fn partner(&self, token: &str) -> Option<&PartnerId> {
        self.by_hash.get(&hash(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_partner_and_only_hashes_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let a = PartnerId::new("nordshop").unwrap();
        let b = PartnerId::new("fjallgear").unwrap();
        let ta = PartnerTokens::add(dir.path(), &a).unwrap();
        let tb = PartnerTokens::add(dir.path(), &b).unwrap();
        assert_ne!(ta, tb);
        let tokens = PartnerTokens::load(dir.path()).unwrap();
        assert_eq!(tokens.partner(&ta), Some(&a));
        assert_eq!(tokens.partner(&tb), Some(&b));
        assert_eq!(tokens.partner("guess"), None);
        let stored = std::fs::read_to_string(dir.path().join(PARTNERS_FILE)).unwrap();
        assert!(!stored.contains(&ta), "the token itself is not stored");
        assert!(stored.contains(&hash(&ta)));
    }

    #[test]
    fn a_missing_file_means_no_partners_and_a_broken_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            PartnerTokens::load(dir.path())
                .unwrap()
                .partner("x")
                .is_none()
        );
        std::fs::write(dir.path().join(PARTNERS_FILE), "{not json").unwrap();
        let err = PartnerTokens::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("partners.json"), "{err}");
    }
}
