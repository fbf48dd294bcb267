//! `threshold credentials`: make, revoke and list the bearer tokens a
//! deployment accepts, in its credentials store: the data directory's file
//! on the embedded log, the deployment's credentials topic on Kafka (every
//! process sees a change within about a second).

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Timelike, Utc};

use threshold_auth::{Credential, CredentialStore, LocalTokens, Role};
use threshold_domain::PartnerId;
use threshold_server::LogSpec;

use crate::BoxError;

/// Where the credentials are.
#[derive(clap::Args)]
pub(crate) struct StoreArgs {
    /// The server's data directory: its credentials on the embedded log.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// The log: `embedded` (credentials in --data), or
    /// `kafka://HOST:PORT[,HOST:PORT…]` (the deployment's credentials topic).
    #[arg(long, default_value = "embedded")]
    log: LogSpec,
    /// On Kafka, what the deployment's topic names start with.
    #[arg(long, default_value = "threshold")]
    topic_prefix: String,
}

impl StoreArgs {
    async fn open(&self) -> Result<Arc<dyn CredentialStore>, BoxError> {
        Ok(threshold_server::credential_store(
            &self.log,
            &self.data,
            &self.topic_prefix,
            "threshold-credentials",
        )
        .await?)
    }
}

/// Options of `threshold credentials add`.
#[derive(clap::Args)]
pub(crate) struct AddArgs {
    /// The role: planner, handheld, resident, lock_vendor, analyst, partner.
    #[arg(long)]
    role: Role,
    /// Who it acts for within the role: a depot (planner), a driver
    /// (handheld), a resident ref, a lock vendor, a partner id (as in
    /// manifests' partner_id column), or `*` for all of them.
    #[arg(long)]
    tenant: String,
    /// The credential's name, unique in the store (default: the role and
    /// tenant).
    #[arg(long)]
    name: Option<String>,
    /// Its token stops opening anything this long from now: a number and
    /// a unit, s, m, h or d (`90d`, `12h`). Default: until revoked.
    #[arg(long, value_parser = parse_lifetime, conflicts_with = "expires_at")]
    expires_in: Option<chrono::Duration>,
    /// Its token stops opening anything at this instant (RFC 3339:
    /// `2027-03-31T23:59:59+02:00`). Default: until revoked.
    #[arg(long, value_parser = parse_instant)]
    expires_at: Option<DateTime<Utc>>,
    #[command(flatten)]
    store: StoreArgs,
}

/// `90d`, `12h`, `30m`, `45s`: a lifetime of at least a second and at
/// most ten years.
fn parse_lifetime(text: &str) -> Result<chrono::Duration, String> {
    let bad = || format!("{text:?} is not a lifetime: a number and s, m, h or d, as 90d or 12h");
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = text.split_at_checked(split).ok_or_else(bad)?;
    let n: i64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3_600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(bad)?;
    if !(1..=10 * 366 * 86_400).contains(&seconds) {
        return Err(format!("{text:?}: a lifetime is from 1s to 3660d"));
    }
    Ok(chrono::Duration::seconds(seconds))
}

fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| {
            format!("{text:?} is not an RFC 3339 instant (2027-03-31T23:59:59+02:00): {e}")
        })
}

/// Makes a token for a role and tenant and prints it: the only time it is
/// shown. A running server accepts it at once.
pub(crate) async fn add(args: AddArgs) -> Result<(), BoxError> {
    if args.role == Role::Partner && args.tenant != threshold_auth::ANY_TENANT {
        PartnerId::new(&args.tenant)?;
    }
    let name = args
        .name
        .unwrap_or_else(|| format!("{}-{}", args.role, args.tenant));
    let (mut credential, token) = Credential::new(&name, args.role, &args.tenant)?;
    let now = Utc::now().with_nanosecond(0).unwrap_or_else(Utc::now);
    let expires_at = args.expires_at.or(args.expires_in.map(|d| now + d));
    if let Some(at) = expires_at {
        if at <= Utc::now() {
            return Err(format!("--expires-at {}: that is past", show(at)).into());
        }
        credential = credential.expiring_at(at);
    }
    let store = args.store.open().await?;
    store.add(credential).await?;
    println!("{token}");
    let until = expires_at.map_or_else(
        || "until revoked".to_owned(),
        |at| format!("until {}", show(at)),
    );
    eprintln!(
        "token {name:?} ({} for {}, {until}) stored (hashed) in {}; hand it over, it is not shown again",
        args.role,
        args.tenant,
        store.describe()
    );
    Ok(())
}

fn show(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Options of `threshold credentials revoke`.
#[derive(clap::Args)]
pub(crate) struct RevokeArgs {
    /// The credential's name.
    name: String,
    #[command(flatten)]
    store: StoreArgs,
}

/// Revokes a credential: its token is refused from then on, by every
/// process reading the store. `Ok(false)` when there was none.
pub(crate) async fn revoke(args: RevokeArgs) -> Result<bool, BoxError> {
    let store = args.store.open().await?;
    if store.revoke(&args.name).await? {
        eprintln!("credential {:?} revoked in {}", args.name, store.describe());
        Ok(true)
    } else {
        eprintln!("no credential {:?} in {}", args.name, store.describe());
        Ok(false)
    }
}

/// Options of `threshold credentials list`.
#[derive(clap::Args)]
pub(crate) struct ListArgs {
    /// JSON lines: {"name", "role", "tenant", "expires_at", "expired"}
    /// (`expires_at` null for a credential that lasts until revoked).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// Prints every credential's name, role, tenant and expiry (never a token
/// or its hash); an expired one says so, until it is revoked.
pub(crate) async fn list(args: ListArgs) -> Result<(), BoxError> {
    let store = args.store.open().await?;
    let current = store.current()?;
    let now = Utc::now();
    for (p, at) in current.listed() {
        let expired = at.is_some_and(|at| at <= now);
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "name": p.name, "role": p.role, "tenant": p.tenant,
                    "expires_at": at.map(show), "expired": expired,
                })
            );
        } else {
            let until = match at {
                None => "-".to_owned(),
                Some(at) if expired => format!("expired {}", show(at)),
                Some(at) => show(at),
            };
            println!("{}\t{}\t{}\t{until}", p.name, p.role, p.tenant);
        }
    }
    Ok(())
}

/// Options of `threshold credentials local-tokens`.
#[derive(clap::Args)]
pub(crate) struct LocalArgs {
    /// What the credentials' names start with: PREFIX-planner, ….
    #[arg(long, default_value = "local")]
    prefix: String,
    #[command(flatten)]
    store: StoreArgs,
}

/// One credential per role for every tenant, their tokens written to
/// --data's local-tokens.json for the CLI and simulations.
pub(crate) async fn local_tokens(args: LocalArgs) -> Result<(), BoxError> {
    let store = args.store.open().await?;
    LocalTokens::make_in(&*store, &args.store.data, &args.prefix).await?;
    eprintln!(
        "local tokens for every role ({}-ROLE in {}) written to {} (owner-only)",
        args.prefix,
        store.describe(),
        args.store
            .data
            .join(threshold_auth::LOCAL_TOKENS_FILE)
            .display()
    );
    Ok(())
}
