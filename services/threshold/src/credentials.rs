//! `threshold credentials`: make, revoke and list the bearer tokens a
//! deployment accepts, in its credentials store: the data directory's file
//! on the embedded log, the deployment's credentials topic on Kafka (every
//! process sees a change within about a second).

use std::path::PathBuf;
use std::sync::Arc;

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
    #[command(flatten)]
    store: StoreArgs,
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
    let (credential, token) = Credential::new(&name, args.role, &args.tenant)?;
    let store = args.store.open().await?;
    store.add(credential).await?;
    println!("{token}");
    eprintln!(
        "token {name:?} ({} for {}) stored (hashed) in {}; hand it over, it is not shown again",
        args.role,
        args.tenant,
        store.describe()
    );
    Ok(())
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
    /// JSON lines: {"name", "role", "tenant"}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// Prints every credential's name, role and tenant (never a token or its
/// hash).
pub(crate) async fn list(args: ListArgs) -> Result<(), BoxError> {
    let store = args.store.open().await?;
    let current = store.current()?;
    for p in current.principals() {
        if args.json {
            println!(
                "{}",
                serde_json::json!({"name": p.name, "role": p.role, "tenant": p.tenant})
            );
        } else {
            println!("{}\t{}\t{}", p.name, p.role, p.tenant);
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
