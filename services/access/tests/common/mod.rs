//! What the access tests share beyond the testkit's fixtures: the
//! production server with an access client for each role a test plays, and
//! the check that a grant's history keeps one order.
#![allow(dead_code)]

use std::sync::Arc;

use chrono::{DateTime, Utc};
use threshold_access_service::device::Signed;
use threshold_access_service::{Access, Clock};
use threshold_api::v1::access_service_client::AccessServiceClient;
use threshold_api::v1::{
    AuthorizeUnlockReply, AuthorizeUnlockRequest, GrantReply, IssueGrantRequest,
    RedeemUnlockRequest, RevokeGrantRequest,
};
use threshold_auth::{Authed, Role};
use threshold_domain::pb;
use threshold_log::EventLog;
use threshold_testkit::{Builder, Sandbox};
use tonic::transport::Channel;

#[allow(unused_imports)]
pub(crate) use threshold_testkit::fixtures::{
    address, address_at, at, claim, device, enrol, facts, grant, grant_history, home_ready, key,
    manifest_at, manifested_at, registration, unlock,
};

/// The server, and a client for each role that calls it, each with the
/// token of a real credential for its tenant in the server's data directory.
pub(crate) struct Running {
    /// As the resident res-1 (issues, revokes, asks for receipts).
    pub(crate) resident: Client,
    /// As the driver drv-1's handheld (asks to unlock).
    pub(crate) handheld: Client,
    /// As the lock vendor acme-locks' cloud (device events, redeeming nonces).
    pub(crate) vendor: Client,
    pub(crate) log: Arc<dyn EventLog>,
    pub(crate) access: Access,
    pub(crate) vault: Arc<threshold_privacy::Vault>,
    pub(crate) channel: Channel,
    pub(crate) sandbox: Sandbox,
}

pub(crate) type Client = AccessServiceClient<Authed>;

impl Running {
    /// A client with a new credential of `role` for `tenant`.
    pub(crate) fn client_as(&self, role: Role, tenant: &str) -> Client {
        AccessServiceClient::new(self.sandbox.client_as(role, tenant))
    }
}

pub(crate) async fn serve() -> Running {
    serve_on(Clock::System).await
}

pub(crate) async fn serve_on(clock: Clock) -> Running {
    serve_with(Sandbox::builder().clock(clock)).await
}

/// A server on the system clock with everything but the grant an entry
/// now needs: see [`door`].
pub(crate) async fn serve_at_the_door() -> Running {
    let mut s = serve().await;
    door(&mut s, Utc::now(), false).await;
    s
}

/// The server `sandbox` starts, with its clients.
pub(crate) async fn serve_with(sandbox: Builder) -> Running {
    let sandbox = sandbox.start().await;
    let client = |role, tenant| AccessServiceClient::new(sandbox.client_as(role, tenant));
    Running {
        resident: client(Role::Resident, "res-1"),
        handheld: client(Role::Handheld, "drv-1"),
        vendor: client(Role::LockVendor, "acme-locks"),
        log: sandbox.log(),
        access: sandbox.access(),
        vault: sandbox.vault(),
        channel: sandbox.channel(),
        sandbox,
    }
}

/// The testkit's [`door`](threshold_testkit::fixtures::door), reported by
/// the vendor of `s`.
pub(crate) async fn door(s: &mut Running, at: DateTime<Utc>, simulated: bool) {
    threshold_testkit::fixtures::door(
        s.log.as_ref(),
        &s.vault,
        &mut s.vendor,
        &mut s.resident,
        at,
        simulated,
    )
    .await;
}

/// Issues `g` as `s`'s resident; the reply.
pub(crate) async fn issue(s: &mut Running, g: IssueGrantRequest) -> GrantReply {
    s.resident
        .issue_grant(g)
        .await
        .expect("issued")
        .into_inner()
}

/// The event types on home-1's stream, in order.
pub(crate) async fn home_types(s: &Running) -> Vec<String> {
    s.log
        .read_stream(&"home/home-1".parse().expect("stream"), 0, 1000)
        .await
        .expect("read")
        .into_iter()
        .map(|r| r.event.event_type)
        .collect()
}

/// The resident's receipt for SE-1 under g-1.
pub(crate) async fn receipt(s: &mut Running) -> threshold_api::v1::Receipt {
    s.resident
        .get_receipt(threshold_api::v1::ReceiptRequest {
            grant_id: "g-1".into(),
            parcel_id: "SE-1".into(),
        })
        .await
        .expect("receipt")
        .into_inner()
}

/// Asks `s`'s handheld to unlock; the decision, either way.
pub(crate) async fn ask(
    s: &mut Running,
    r: impl tonic::IntoRequest<AuthorizeUnlockRequest>,
) -> AuthorizeUnlockReply {
    s.handheld
        .authorize_unlock(r)
        .await
        .expect("decided")
        .into_inner()
}

/// A signed request of lock-1 at home-1 to redeem `nonce` under `grant`.
pub(crate) fn redeem_under(grant: &str, nonce: &str) -> RedeemUnlockRequest {
    let mut r = RedeemUnlockRequest {
        home_id: "home-1".into(),
        lock_id: "lock-1".into(),
        grant_id: grant.into(),
        nonce: nonce.into(),
        signature: vec![],
    };
    r.sign(&key());
    r
}

/// One request of a race on `grant`: res-1 revokes it (when `revoke`), or
/// drv-1 asks `handheld` to unlock and a nonce authorized is redeemed at
/// `vendor`. Returns (1 if the revoke changed the grant, 1 if the lock opened).
/// A revoke that comes after the parcel was delivered under the grant is
/// refused (there is nothing left to revoke): that is one of the race's
/// orders, and counts as neither.
pub(crate) async fn race_step(
    grant: String,
    revoke: bool,
    mut resident: Client,
    mut handheld: Client,
    mut vendor: Client,
) -> (u32, u32) {
    if revoke {
        let r = resident
            .revoke_grant(RevokeGrantRequest {
                grant_id: grant,
                by: "res-1".into(),
                reason: "race".into(),
            })
            .await;
        return match r {
            Ok(r) => (u32::from(!r.into_inner().unchanged), 0),
            Err(s)
                if s.code() == tonic::Code::FailedPrecondition
                    && s.message().ends_with("every parcel was delivered under it") =>
            {
                (0, 0)
            }
            Err(s) => panic!("revoke: {s:?}"),
        };
    }
    let yes = handheld
        .authorize_unlock(unlock(&grant, "drv-1"))
        .await
        .expect("decided")
        .into_inner();
    if yes.authorized {
        let opened = vendor
            .redeem_unlock(redeem_under(&grant, &yes.nonce))
            .await
            .expect("redeem")
            .into_inner();
        return (0, u32::from(opened.open));
    }
    (0, 0)
}

/// One order per grant, as its history shows it: at most one entry, each of
/// `asked` unlock requests decided and recorded once (a refusal up to the
/// grant's bound per reason), and either one revoke
/// with nothing authorized or redeemed after it, or no revoke because the
/// entry came first (the revokes were refused). Returns whether the grant
/// was revoked.
pub(crate) fn assert_one_order(
    grant: &str,
    events: &[pb::grant_event::Event],
    asked: usize,
) -> bool {
    use pb::grant_event::Event as E;
    let used = events.iter().filter(|e| matches!(e, E::Used(_))).count();
    assert!(used <= 1, "{grant}: {used} entries");
    let revoked = events.iter().position(|e| matches!(e, E::Revoked(_)));
    match revoked {
        Some(at) => {
            for e in &events[at..] {
                assert!(
                    !matches!(e, E::UnlockAuthorized(_) | E::Used(_)),
                    "{grant}: {e:?} after the revoke"
                );
            }
        }
        None => assert_eq!(used, 1, "{grant}: neither revoked nor entered"),
    }
    // Every authorization is recorded; a refusal up to the grant's bound
    // per reason (the same driver asks each time).
    let authorized = events
        .iter()
        .filter(|e| matches!(e, E::UnlockAuthorized(_)))
        .count();
    let mut denied = std::collections::BTreeMap::<i32, usize>::new();
    for e in events {
        if let E::UnlockDenied(d) = e
            && d.nonce.is_empty()
        {
            *denied.entry(d.reason).or_default() += 1;
        }
    }
    let most = threshold_domain::grant::MAX_RECORDED_PER_REASON as usize;
    assert!(denied.values().all(|n| *n <= most), "{grant}: {denied:?}");
    let recorded = authorized + denied.values().sum::<usize>();
    if recorded < asked {
        assert!(
            denied.values().any(|n| *n == most),
            "{grant}: {asked} asked, {recorded} recorded, no reason at its bound: {denied:?}"
        );
    } else {
        assert_eq!(recorded, asked, "{grant}");
    }
    let revokes = events.iter().filter(|e| matches!(e, E::Revoked(_))).count();
    assert_eq!(revokes, usize::from(revoked.is_some()), "{grant}");
    revoked.is_some()
}
