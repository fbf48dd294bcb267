//! Where a deployment keeps its credentials: [`CredentialStore`]. On one
//! machine, [`FileCredentials`] (`DIR/credentials.json`, re-read when it
//! changes); where processes span machines, a store they all reach over the
//! network (`threshold_server::KafkaCredentials`, a compacted topic).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use super::{CREDENTIALS_FILE, Credential, Credentials, Error, Result, read, write};

/// A boxed future, as [`CredentialStore`]'s writes return.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where credentials are kept. Reads are every call's, so cheap; writes are
/// an operator's.
pub trait CredentialStore: Send + Sync + 'static {
    /// The credentials as they stand.
    fn current(&self) -> Result<Arc<Credentials>>;

    /// Stores `credential`; a name in use is refused.
    fn add(&self, credential: Credential) -> StoreFuture<'_, Result<()>>;

    /// Removes the credential named `name`, whose token is refused from
    /// then on; `false` when there was none.
    fn revoke<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Result<bool>>;

    /// Where the store is, for messages.
    fn describe(&self) -> String;
}

/// The credentials of a data directory: `DIR/credentials.json`, owner-only,
/// read again whenever its modification time changes.
pub struct FileCredentials {
    path: PathBuf,
    /// The file's modification time and length when last read, and what
    /// it held.
    cache: RwLock<(Option<Stamp>, Arc<Credentials>)>,
}

/// A file's modification time and length.
type Stamp = (SystemTime, u64);

impl FileCredentials {
    /// The credentials of the data directory `dir`.
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self {
            path: dir.as_ref().join(CREDENTIALS_FILE),
            cache: RwLock::new((None, Arc::default())),
        }
    }

    /// Adds `credential` to the file; a name in use is refused.
    pub fn insert(&self, credential: Credential) -> Result<()> {
        let mut file = read(&self.path)?.unwrap_or_default();
        if file.credentials.iter().any(|e| e.name == credential.name) {
            return Err(Error::Invalid(format!(
                "{}: a credential named {:?} exists already",
                self.path.display(),
                credential.name
            )));
        }
        file.credentials.push(credential);
        self.save(&file)
    }

    /// Removes the credential named `name`; `false` when there was none.
    pub fn remove(&self, name: &str) -> Result<bool> {
        let Some(mut file) = read(&self.path)? else {
            return Ok(false);
        };
        let before = file.credentials.len();
        file.credentials.retain(|e| e.name != name);
        if file.credentials.len() == before {
            return Ok(false);
        }
        self.save(&file)?;
        Ok(true)
    }

    fn save(&self, file: &super::File) -> Result<()> {
        let text = serde_json::to_vec_pretty(file).map_err(|e| Error::Malformed {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        write(&self.path, &text)
    }
}

impl CredentialStore for FileCredentials {
    fn current(&self) -> Result<Arc<Credentials>> {
        // The length too: two writes within the file system's timestamp
        // granularity may leave the same modification time.
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| Ok((m.modified()?, m.len())))
            .ok();
        {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            if cache.0 == modified && modified.is_some() {
                return Ok(Arc::clone(&cache.1));
            }
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let fresh = Arc::new(Credentials::load(dir)?);
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        *cache = (modified, Arc::clone(&fresh));
        Ok(fresh)
    }

    fn add(&self, credential: Credential) -> StoreFuture<'_, Result<()>> {
        Box::pin(async move { self.insert(credential) })
    }

    fn revoke<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Result<bool>> {
        Box::pin(async move { self.remove(name) })
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}
