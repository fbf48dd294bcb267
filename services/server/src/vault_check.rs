//! The check that the vault a server opens can be the one the log's
//! personal data was sealed under.
//!
//! Sealed values in the log open only with the keys of the vault that
//! sealed them. A server started on a vault that was lost, or with
//! `--vault` pointing at another directory, would get a new, empty vault:
//! every address in the log would stop opening (routes without positions,
//! receipts without addresses), and new parcels to the same households
//! would be sealed under new keys that the old ones' deletion requests
//! never cover. So a server refuses to open when its vault was never used
//! ([`Vault::is_unused`]) while the log already holds a sealed value.
//!
//! The check is cheap in the normal case: a used vault is not checked
//! further, and an unused one over an empty log neither. Only an unused
//! vault over a non-empty log reads the log from its start, until the
//! first sealed value. A vault that holds keys but not the right ones (a
//! copy of another deployment's) is not told apart here: its seals fail to
//! authenticate when used (`DATA_LOSS`).

use std::path::Path;

use threshold_domain::DomainEvent;
use threshold_domain::pb::{
    grant_event::Event as G, parcel_event::Event as P, route_event::Event as R,
};
use threshold_log::{EventLog, Position, RecordedEvent};
use threshold_privacy::Vault;

/// Events read from the log at a time while looking for a sealed value.
const BATCH: usize = 1024;

/// A sealed value found in the log while the vault is unused.
#[derive(Debug, thiserror::Error)]
#[error(
    "the vault {vault} holds no keys, but the log already holds data sealed under another vault \
     ({what}, at log position {position}): the vault file was lost or moved, --vault points at \
     another directory, or (on Kafka) another vault topic. Put the vault that sealed it back at \
     {vault} (or point --vault at the directory that holds it) and start again; to start over \
     without that data, move the data directory aside"
)]
pub struct SealedUnderAnotherVault {
    /// The vault that was opened (its file, or its shared store).
    pub vault: String,
    /// What the first sealed value belongs to.
    pub what: &'static str,
    /// Where it is in the log.
    pub position: u64,
}

/// What the sealed value in `event` belongs to, if it carries one.
fn sealed_value(event: &RecordedEvent) -> Option<&'static str> {
    // An event this build cannot decode is not a sealed value it knows.
    match event.decode().ok()? {
        DomainEvent::Parcel(P::Manifested(m)) if m.sealed_address.is_some() => {
            Some("a parcel's address")
        }
        DomainEvent::Parcel(P::Delivered(d)) if d.sealed_position.is_some() => {
            Some("a delivery's position")
        }
        DomainEvent::Route(R::Planned(r))
            if r.stops.iter().any(|s| s.sealed_position.is_some()) =>
        {
            Some("a route stop's position")
        }
        DomainEvent::Route(R::Replanned(r))
            if r.stops.iter().any(|s| s.sealed_position.is_some()) =>
        {
            Some("a route stop's position")
        }
        DomainEvent::Grant(G::Issued(g))
            if g.geofence
                .as_ref()
                .is_some_and(|f| f.sealed_center.is_some()) =>
        {
            Some("a grant's geofence centre")
        }
        _ => None,
    }
}

/// Opens the vault in `dir` (its values wrapped under `keks`, if given),
/// refusing it when it is unused while `log` holds a sealed value. A vault
/// file this call made is removed again when it refuses, so that nothing
/// stands in the way of putting the right one back.
pub(crate) async fn open(
    dir: &Path,
    keks: Option<threshold_privacy::Keks>,
    log: &dyn EventLog,
) -> crate::Result<Vault> {
    let file = dir.join(threshold_privacy::VAULT_FILE);
    let existed = file.exists();
    let vault = Vault::open_with(dir, keks)?;
    match check(&vault, log).await {
        Ok(()) => Ok(vault),
        Err(e) => {
            // Closing the last connection checkpoints and removes SQLite's
            // -wal and -shm files; whatever is left of a vault made here is
            // removed too.
            drop(vault);
            if !existed {
                for suffix in ["", "-wal", "-shm"] {
                    let mut name = file.clone().into_os_string();
                    name.push(suffix);
                    let _ = std::fs::remove_file(name);
                }
            }
            Err(e)
        }
    }
}

/// Refuses an unused `vault` over a `log` that holds a sealed value.
pub(crate) async fn check(vault: &Vault, log: &dyn EventLog) -> crate::Result<()> {
    if !vault.is_unused()? || log.head().await? == Position::ORIGIN {
        return Ok(());
    }
    let mut after = Position::ORIGIN;
    loop {
        let batch = log.read_all(after, BATCH).await?;
        let Some(last) = batch.last() else {
            return Ok(());
        };
        after = last.position;
        if let Some((what, position)) = batch
            .iter()
            .find_map(|e| sealed_value(e).map(|what| (what, e.position.0)))
        {
            return Err(SealedUnderAnotherVault {
                vault: vault.describe(),
                what,
                position,
            }
            .into());
        }
    }
}
