//! The bindings part of the adversarial suite: who a home belongs to, tried
//! as an attacker would over gRPC against the shipped server. A resident
//! grants entry only to a home they claimed, for parcels of its household;
//! a lock vendor enrols only the homes it registered first, for the home
//! its request names; a claim code is guessed at most five times and used
//! once. Every refusal leaves the streams it names as they were.

mod common;

use chrono::Utc;
use common::*;
use threshold_api::v1::{ClaimHomeRequest, RevokeGrantRequest};
use threshold_auth::Role;
use threshold_domain::enrolment::MAX_REFUSED_CLAIMS;
use threshold_domain::{DomainEvent, pb};
use tonic::Code;

type H = pb::home_event::Event;

/// The events of `stream`, decoded.
async fn events(s: &Running, stream: &str) -> Vec<DomainEvent> {
    s.log
        .read_stream(&stream.parse().expect("stream"), 0, 1000)
        .await
        .expect("read")
        .into_iter()
        .map(|r| r.decode().expect("decode"))
        .collect()
}

/// The raw payloads of `stream`, as text, to look for what must not be
/// there.
async fn payloads(s: &Running, stream: &str) -> String {
    s.log
        .read_stream(&stream.parse().expect("stream"), 0, 1000)
        .await
        .expect("read")
        .into_iter()
        .map(|r| String::from_utf8_lossy(&r.event.payload).into_owned())
        .collect()
}

/// home-1 ready for res-1 at the door (SE-1), and home-2 on Kungsgatan
/// enrolled and claimed by res-2 with its parcel SE-9, manifested through
/// the ManifestService; res-2's client.
async fn two_households() -> (Running, Client) {
    let mut s = serve_at_the_door().await;
    let mut res2 = s.client_as(Role::Resident, "res-2");
    home_ready(
        &s.sandbox,
        &mut s.vendor,
        &mut res2,
        "home-2",
        "res-2",
        &["SE-9"],
        &address_at("Kungsgatan 2"),
    )
    .await;
    (s, res2)
}

/// A grant of `resident` for `home` and `parcels`, otherwise [`grant`].
fn grant_for(
    id: &str,
    home: &str,
    resident: &str,
    parcels: &[&str],
) -> threshold_api::v1::IssueGrantRequest {
    let mut g = grant(id);
    g.home_id = home.into();
    g.resident_ref = resident.into();
    g.parcel_ids = parcels.iter().map(|p| (*p).to_owned()).collect();
    g
}

/// Nothing of another party in a refusal's message.
fn tells_nothing_of_others(message: &str) {
    for secret in ["res-1", "res-2", "hh-", "Storgatan", "Kungsgatan", "11122"] {
        assert!(!message.contains(secret), "{message} names {secret}");
    }
}

#[tokio::test]
async fn a_resident_cannot_grant_entry_to_a_home_not_theirs() {
    let (mut s, mut res2) = two_households().await;
    let home_before = events(&s, "home/home-1").await;
    // res-2 grants a driver entry to home-1, naming a parcel of their own,
    // or home-1's own parcel; through their own credential or the local
    // resident's, which speaks for every resident.
    let mut everyone =
        threshold_api::v1::access_service_client::AccessServiceClient::new(s.sandbox.resident());
    for parcels in [["SE-9"], ["SE-1"]] {
        for client in [&mut res2, &mut everyone] {
            let err = client
                .issue_grant(grant_for("g-evil", "home-1", "res-2", &parcels))
                .await
                .expect_err("not their home");
            assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
            assert!(err.message().starts_with("home_id"), "{}", err.message());
            tells_nothing_of_others(err.message());
        }
    }
    // No grant exists: the driver gets no unlock, the lock redeems nothing.
    assert!(grant_history(s.log.as_ref(), "g-evil").await.is_empty());
    let err = s
        .handheld
        .authorize_unlock(unlock("g-evil", "drv-1"))
        .await
        .expect_err("no grant");
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    let err = s
        .vendor
        .redeem_unlock(redeem_under("g-evil", "any-nonce"))
        .await
        .expect_err("no grant");
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    assert_eq!(events(&s, "home/home-1").await, home_before);
    // home-1's own resident still grants, and the door opens for them.
    s.resident
        .issue_grant(grant("g-1"))
        .await
        .expect("own home");
    assert!(ask(&mut s, unlock("g-1", "drv-1")).await.authorized);
}

#[tokio::test]
async fn a_resident_cannot_grant_on_another_households_parcel() {
    let (mut s, _) = two_households().await;
    let parcel_before = events(&s, "parcel/SE-9").await;
    for (parcels, field) in [
        (vec!["SE-1", "SE-9"], "parcel_ids[1]"),
        (vec!["SE-9"], "parcel_ids[0]"),
        // A parcel that does not exist is refused the same way: nothing
        // tells the resident which parcels exist.
        (vec!["SE-1", "SE-404"], "parcel_ids[1]"),
    ] {
        let err = s
            .resident
            .issue_grant(grant_for("g-2", "home-1", "res-1", &parcels))
            .await
            .expect_err("not their parcel");
        assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
        assert!(err.message().starts_with(field), "{}", err.message());
        tells_nothing_of_others(err.message());
    }
    assert!(grant_history(s.log.as_ref(), "g-2").await.is_empty());
    assert_eq!(events(&s, "parcel/SE-9").await, parcel_before);
}

#[tokio::test]
async fn a_resident_cannot_revoke_anothers_grant() {
    let (mut s, mut res2) = two_households().await;
    s.resident.issue_grant(grant("g-1")).await.expect("issue");
    let before = grant_history(s.log.as_ref(), "g-1").await;
    let err = res2
        .revoke_grant(RevokeGrantRequest {
            grant_id: "g-1".into(),
            by: "res-2".into(),
            reason: "mischief".into(),
        })
        .await
        .expect_err("not theirs");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    // Not told whose grant it is: a resident ref may be personal data.
    assert!(!err.message().contains("res-1"), "{}", err.message());
    assert_eq!(grant_history(s.log.as_ref(), "g-1").await, before);
    assert!(ask(&mut s, unlock("g-1", "drv-1")).await.authorized);
}

/// A resident revokes as itself: a revoke naming someone else (the
/// carrier) is refused, and one naming no one is recorded as the
/// resident's.
#[tokio::test]
async fn a_resident_revokes_as_itself() {
    let mut s = serve_at_the_door().await;
    s.resident.issue_grant(grant("g-1")).await.expect("issue");
    let revoke = |by: &str| RevokeGrantRequest {
        grant_id: "g-1".into(),
        by: by.into(),
        reason: "plans changed".into(),
    };
    let err = s
        .resident
        .revoke_grant(revoke("carrier"))
        .await
        .expect_err("as the carrier");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().starts_with("by"), "{}", err.message());
    assert!(ask(&mut s, unlock("g-1", "drv-1")).await.authorized);
    s.resident.revoke_grant(revoke("")).await.expect("revoke");
    let by: Vec<String> = grant_history(s.log.as_ref(), "g-1")
        .await
        .into_iter()
        .filter_map(|e| match e {
            pb::grant_event::Event::Revoked(r) => Some(r.revoked_by),
            _ => None,
        })
        .collect();
    assert_eq!(by, ["res-1"]);
}

/// A grant's window is in its home's time: one asked in another
/// country's is refused naming the country, and nothing is issued.
#[tokio::test]
async fn a_grant_in_another_countrys_time_than_its_homes_is_refused() {
    let mut s = serve_at_the_door().await;
    let mut g = grant("g-1");
    g.country = pb::Country::Fi as i32;
    let err = s
        .resident
        .issue_grant(g)
        .await
        .expect_err("in Finnish time");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().starts_with("country"), "{}", err.message());
    assert!(err.message().contains("SE"), "{}", err.message());
    assert_eq!(grant_history(s.log.as_ref(), "g-1").await, []);
}

/// Another driver is told it is not theirs, and nothing of the grant:
/// not that its window is still to come, nor that it was revoked, nor
/// the resident's fallback.
#[tokio::test]
async fn another_driver_learns_nothing_of_a_grants_state() {
    let mut s = serve_at_the_door().await;
    let mut later = grant("g-2");
    later.window_start_local = (Utc::now() + chrono::Duration::hours(3))
        .with_timezone(&threshold_domain::Country::Se.tz())
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    later.window_end_local = (Utc::now() + chrono::Duration::hours(5))
        .with_timezone(&threshold_domain::Country::Se.tz())
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    s.resident.issue_grant(later).await.expect("issue g-2");
    s.resident
        .issue_grant(grant("g-1"))
        .await
        .expect("issue g-1");
    s.resident
        .revoke_grant(RevokeGrantRequest {
            grant_id: "g-1".into(),
            by: String::new(),
            reason: "plans changed".into(),
        })
        .await
        .expect("revoke");
    let mut other = s.client_as(Role::Handheld, "drv-2");
    for id in ["g-1", "g-2"] {
        let reply = other
            .authorize_unlock(unlock(id, "drv-2"))
            .await
            .expect("decided")
            .into_inner();
        assert!(!reply.authorized);
        assert_eq!(
            reply.reason,
            pb::UnlockDenyReason::WrongDriver as i32,
            "{id}: {reply:?}"
        );
        assert_eq!(reply.fallback, pb::Fallback::Unspecified as i32, "{id}");
    }
    // The grant's own driver is told its state.
    let own = ask(&mut s, unlock("g-2", "drv-1")).await;
    assert_eq!(own.reason, pb::UnlockDenyReason::OutsideWindow as i32);
    assert_eq!(own.fallback, pb::Fallback::Locker as i32);
}

#[tokio::test]
async fn another_vendor_cannot_register_a_home_already_enrolled() {
    let s = serve_at_the_door().await;
    let before = events(&s, "home/home-1").await;
    let other_key = threshold_access_service::device::key_from_seed([9; 32]);
    let takeover = |vendor: &str, signed_by: &threshold_access_service::device::SigningKey| {
        let mut r = device(
            registration("home-1", Some(address())),
            Utc::now(),
            signed_by,
        );
        if let Some(pb::HomeEvent {
            event: Some(H::LockRegistered(x)),
            ..
        }) = &mut r.event
        {
            x.vendor = vendor.into();
            x.public_key = threshold_access_service::device::public_key(&other_key);
        }
        threshold_access_service::device::Signed::sign(&mut r, signed_by);
        r
    };
    // Another vendor, with its own key or with the home's.
    let mut other = s.client_as(Role::LockVendor, "other-locks");
    for signed_by in [&other_key, &key()] {
        let err = other
            .record_device_event(takeover("other-locks", signed_by))
            .await
            .expect_err("another vendor");
        assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    }
    // A credential for every vendor naming another vendor in the payload,
    // signed by the home's key: the home keeps its vendor.
    let err =
        threshold_api::v1::access_service_client::AccessServiceClient::new(s.sandbox.lock_vendor())
            .record_device_event(takeover("other-locks", &key()))
            .await
            .expect_err("another vendor");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().starts_with("vendor"), "{}", err.message());
    assert_eq!(events(&s, "home/home-1").await, before);
}

#[tokio::test]
async fn a_registration_naming_another_home_is_refused() {
    let mut s = serve_at_the_door().await;
    let before = events(&s, "home/home-1").await;
    // Sent for home-2 (never registered) and for home-1 (registered), the
    // payload naming the other.
    for (sent_for, named) in [("home-2", "home-1"), ("home-1", "home-3")] {
        let mut r = device(registration(named, Some(address())), Utc::now(), &key());
        r.home_id = sent_for.into();
        threshold_access_service::device::Signed::sign(&mut r, &key());
        let err = s
            .vendor
            .record_device_event(r)
            .await
            .expect_err("another home");
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(
            err.message().contains(sent_for) && err.message().contains(named),
            "{}",
            err.message()
        );
    }
    assert_eq!(events(&s, "home/home-1").await, before);
    assert!(events(&s, "home/home-2").await.is_empty());
    assert!(events(&s, "home/home-3").await.is_empty());
    // Once enrolled, a registration may leave the address out; a first
    // registration without the home's address enrols nothing.
    s.vendor
        .record_device_event(device(registration("home-1", None), Utc::now(), &key()))
        .await
        .expect("a registration of an enrolled home");
    let mut bare = device(registration("home-4", None), Utc::now(), &key());
    bare.home_id = "home-4".into();
    threshold_access_service::device::Signed::sign(&mut bare, &key());
    let err = s
        .vendor
        .record_device_event(bare)
        .await
        .expect_err("no address");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("address"), "{}", err.message());
    assert!(events(&s, "home/home-4").await.is_empty());
}

#[tokio::test]
async fn a_wrong_claim_code_is_refused_and_recorded_and_five_void_it() {
    let mut s = serve_at_the_door().await;
    let mut res2 = s.client_as(Role::Resident, "res-2");
    let home2 = address_at("Kungsgatan 2");
    manifest_at(s.sandbox.planner(), &["SE-9"], &home2).await;
    let code = enrol(&mut s.vendor, "home-2", &home2, Utc::now(), false).await;
    // A guess one symbol off, each time another.
    let guesses: Vec<String> = (0..MAX_REFUSED_CLAIMS)
        .map(|i| {
            let mut g: Vec<char> = code.chars().collect();
            g[0] = if g[0] == 'A' { 'B' } else { 'A' };
            g[1] = char::from(b'0' + u8::try_from(i).expect("small"));
            g.into_iter().collect()
        })
        .filter(|g| *g != code)
        .collect();
    assert_eq!(guesses.len(), MAX_REFUSED_CLAIMS as usize);
    for (i, guess) in guesses.iter().enumerate() {
        let err = claim(&mut res2, "home-2", "res-2", guess, Utc::now(), false)
            .await
            .expect_err("wrong code");
        assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
        assert!(
            err.message().starts_with("claim_code: does not match"),
            "{}",
            err.message()
        );
        assert_eq!(
            err.message().contains("void"),
            i + 1 == MAX_REFUSED_CLAIMS as usize,
            "{}",
            err.message()
        );
    }
    // Each refusal is on the home's stream, never the code tried.
    let refused = events(&s, "home/home-2")
        .await
        .into_iter()
        .filter(|e| matches!(e, DomainEvent::Home(H::ClaimRefused(_))))
        .count();
    assert_eq!(refused, MAX_REFUSED_CLAIMS as usize);
    let stored = payloads(&s, "home/home-2").await;
    for tried in guesses.iter().chain([&code]) {
        assert!(!stored.contains(&tried.replace('-', "")), "{tried} stored");
        assert!(!stored.contains(tried.as_str()), "{tried} stored");
    }
    // Void: the right code no longer claims it, and nothing is recorded.
    let before = events(&s, "home/home-2").await;
    let err = claim(&mut res2, "home-2", "res-2", &code, Utc::now(), false)
        .await
        .expect_err("void");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("lock vendor"), "{}", err.message());
    assert_eq!(events(&s, "home/home-2").await, before);
    // Unclaimed, the home takes no grant.
    let err = res2
        .issue_grant(grant_for("g-2", "home-2", "res-2", &["SE-9"]))
        .await
        .expect_err("unclaimed");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    // The vendor registers the lock again: a fresh code, the old one void.
    let fresh = enrol(&mut s.vendor, "home-2", &home2, Utc::now(), false).await;
    assert_ne!(fresh, code);
    let err = claim(&mut res2, "home-2", "res-2", &code, Utc::now(), false)
        .await
        .expect_err("the old code");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    claim(
        &mut res2,
        "home-2",
        "res-2",
        &fresh.to_lowercase(),
        Utc::now(),
        false,
    )
    .await
    .expect("claimed with the fresh code");
    res2.issue_grant(grant_for("g-2", "home-2", "res-2", &["SE-9"]))
        .await
        .expect("a grant for the home claimed");
}

/// Another resident's wrong codes void the code for that resident only:
/// no caller can keep a household from claiming its home.
#[tokio::test]
async fn anothers_wrong_codes_do_not_keep_a_household_from_its_home() {
    let mut s = serve_at_the_door().await;
    let mut res2 = s.client_as(Role::Resident, "res-2");
    let mut evil = s.client_as(Role::Resident, "res-evil");
    let home2 = address_at("Kungsgatan 2");
    manifest_at(s.sandbox.planner(), &["SE-9"], &home2).await;
    let code = enrol(&mut s.vendor, "home-2", &home2, Utc::now(), false).await;
    let wrong = if code.starts_with('A') { "B" } else { "A" };
    let guess = format!("{wrong}{}", &code[1..]);
    for _ in 0..MAX_REFUSED_CLAIMS {
        let err = claim(&mut evil, "home-2", "res-evil", &guess, Utc::now(), false)
            .await
            .expect_err("wrong code");
        assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    }
    // Void for the one who guessed, even with the right code...
    let err = claim(&mut evil, "home-2", "res-evil", &code, Utc::now(), false)
        .await
        .expect_err("void for it");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    // ...and live for the household.
    claim(&mut res2, "home-2", "res-2", &code, Utc::now(), false)
        .await
        .expect("the household claims its home");
    res2.issue_grant(grant_for("g-2", "home-2", "res-2", &["SE-9"]))
        .await
        .expect("a grant for the home claimed");
}

#[tokio::test]
async fn a_claim_code_used_by_one_resident_is_refused_to_another() {
    let mut s = serve_at_the_door().await;
    let home2 = address_at("Kungsgatan 2");
    let code = enrol(&mut s.vendor, "home-2", &home2, Utc::now(), false).await;
    let mut res2 = s.client_as(Role::Resident, "res-2");
    let first = claim(&mut res2, "home-2", "res-2", &code, Utc::now(), false)
        .await
        .expect("claimed");
    assert!(!first.unchanged);
    let again = claim(&mut res2, "home-2", "res-2", &code, Utc::now(), false)
        .await
        .expect("again");
    assert!(again.unchanged);
    assert_eq!(again.version, first.version);
    let before = events(&s, "home/home-2").await;
    let mut res3 = s.client_as(Role::Resident, "res-3");
    let err = claim(&mut res3, "home-2", "res-3", &code, Utc::now(), false)
        .await
        .expect_err("used");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert_eq!(err.message(), "claim_code: does not match");
    assert_eq!(events(&s, "home/home-2").await, before);
    // A claim for another resident's ref is refused by the credential.
    let err = res3
        .claim_home(ClaimHomeRequest {
            home_id: "home-2".into(),
            resident_ref: "res-2".into(),
            claim_code: code.clone(),
        })
        .await
        .expect_err("not their ref");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    // A registration of the claimed home (a new key) keeps the claim and
    // gives no code.
    let mut rotate = device(registration("home-2", None), Utc::now(), &key());
    rotate.home_id = "home-2".into();
    threshold_access_service::device::Signed::sign(&mut rotate, &key());
    let reply = s
        .vendor
        .record_device_event(rotate)
        .await
        .expect("same registration")
        .into_inner();
    assert!(reply.claim_code.is_empty(), "{reply:?}");
    let claimed: Vec<String> = events(&s, "home/home-2")
        .await
        .into_iter()
        .filter_map(|e| match e {
            DomainEvent::Home(H::Claimed(c)) => Some(c.resident_ref),
            _ => None,
        })
        .collect();
    assert_eq!(claimed, ["res-2"]);
    // res-3 cannot grant for it.
    let err = res3
        .issue_grant(grant_for("g-3", "home-2", "res-3", &["SE-1"]))
        .await
        .expect_err("not theirs");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
}

#[tokio::test]
async fn a_grant_on_a_home_not_enrolled_or_not_claimed_is_refused() {
    let mut s = serve_at_the_door().await;
    let home2 = address_at("Kungsgatan 2");
    let mut res2 = s.client_as(Role::Resident, "res-2");
    manifest_at(s.sandbox.planner(), &["SE-9"], &home2).await;
    // Never enrolled: nothing to grant, nothing to claim.
    let err = res2
        .issue_grant(grant_for("g-2", "home-2", "res-2", &["SE-9"]))
        .await
        .expect_err("not enrolled");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().starts_with("home_id"), "{}", err.message());
    let err = claim(
        &mut res2,
        "home-2",
        "res-2",
        "0000-0000-0000-0000",
        Utc::now(),
        false,
    )
    .await
    .expect_err("not enrolled");
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    // Enrolled, not claimed.
    enrol(&mut s.vendor, "home-2", &home2, Utc::now(), false).await;
    let err = res2
        .issue_grant(grant_for("g-2", "home-2", "res-2", &["SE-9"]))
        .await
        .expect_err("not claimed");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("not claimed"), "{}", err.message());
    assert!(grant_history(s.log.as_ref(), "g-2").await.is_empty());
    // A malformed code is the caller's error, and not counted.
    let err = claim(&mut res2, "home-2", "res-2", "1234", Utc::now(), false)
        .await
        .expect_err("malformed");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        !events(&s, "home/home-2")
            .await
            .iter()
            .any(|e| matches!(e, DomainEvent::Home(H::ClaimRefused(_))))
    );
}

#[tokio::test]
async fn a_forgotten_households_home_takes_no_grant_and_nothing_panics() {
    let (mut s, mut res2) = two_households().await;
    let household = events(&s, "home/home-2")
        .await
        .into_iter()
        .find_map(|e| match e {
            DomainEvent::Home(H::LockRegistered(r)) => Some(r.household_id),
            _ => None,
        })
        .expect("enrolled");
    res2.issue_grant(grant_for("g-2", "home-2", "res-2", &["SE-9"]))
        .await
        .expect("before");
    assert!(s.vault.forget(&household).expect("forget") > 0);
    let err = res2
        .issue_grant(grant_for("g-3", "home-2", "res-2", &["SE-9"]))
        .await
        .expect_err("forgotten");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().starts_with("home_id"), "{}", err.message());
    tells_nothing_of_others(err.message());
    // Its parcel named in another home's grant is refused as before.
    let err = s
        .resident
        .issue_grant(grant_for("g-4", "home-1", "res-1", &["SE-1", "SE-9"]))
        .await
        .expect_err("another household");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    // Enrolling a home at the forgotten address again makes a new
    // household, which the forgotten parcel is not part of.
    let code = enrol(
        &mut s.vendor,
        "home-5",
        &address_at("Kungsgatan 2"),
        Utc::now(),
        false,
    )
    .await;
    claim(&mut res2, "home-5", "res-2", &code, Utc::now(), false)
        .await
        .expect("claimed");
    let err = res2
        .issue_grant(grant_for("g-5", "home-5", "res-2", &["SE-9"]))
        .await
        .expect_err("the forgotten household's parcel");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
}
