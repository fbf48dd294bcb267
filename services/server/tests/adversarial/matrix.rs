//! The matrix: every actor of one party (and the analyst, a caller with no
//! token and a token of the wrong role) calls every RPC with the other
//! party's identifiers, A against B and B against A. Each cell says what
//! the server must answer; every cell is called on one world, and for each:
//!
//! - the answer is the cell's (the status code, or a refusal in the answer);
//! - nothing was appended to the log (the head did not move), unless the
//!   cell is allowed by design;
//! - the refusal is recorded: a status by the server's RPC metrics (by
//!   method and code), a refused handheld event by its event metric, a
//!   refused manifest row in the load's summary.
//!
//! Then each party's own day goes on, every RPC of it ([`crate::owners`]).
//! A coverage check fails when the API has an RPC the matrix has no row
//! for, or the matrix a row for an RPC the API does not have.
//!
//! A call here names the other party in every field, its tenant too (a
//! resident ref, a driver id): what the token refuses. An actor naming
//! itself on the other party's objects, where the domain's binding must
//! refuse, is in [`crate::bindings`].

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;
use tonic::Code;

use crate::calls::{Answer, Rpc, call};
use crate::owners::day_goes_on;
use crate::recorded;
use crate::world::{Actor, World};

/// What a cell expects.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expect {
    /// Refused with this status; nothing stored.
    Refused(Code),
    /// Answered with a refusal; nothing stored.
    Denied,
    /// Answered with nothing of the other party's; nothing stored.
    Withheld,
    /// Allowed on purpose, for the reason given.
    Allowed(&'static str),
}

const PD: Expect = Expect::Refused(Code::PermissionDenied);
const UA: Expect = Expect::Refused(Code::Unauthenticated);
const NF: Expect = Expect::Refused(Code::NotFound);
const CLOCK: Expect = Expect::Allowed("every role reads the server's clock; it is no one's data");
const PLANNER_REVOKES: Expect =
    Expect::Allowed("a planner may revoke any grant: the carrier must be able to stop an entry");
const CARRIER_HOOKS: Expect =
    Expect::Allowed("the carrier manages any partner's webhook endpoints, naming the partner");
const ANALYST_READS: Expect =
    Expect::Allowed("the carrier's analyst reads every parcel, whole, by design");

/// The matrix, for an attacker of one party against the other's
/// identifiers. Columns, in [`Actor::ALL`]'s order: the attacker's
/// resident, driver, planner, lock vendor and partner, the analyst, no
/// token, a token of the wrong role naming the other party's tenant.
#[rustfmt::skip]
pub(crate) const MATRIX: [(Rpc, [Expect; 8]); 25] = [
    //                        resident driver          planner          vendor partner         analyst        none wrong role
    (Rpc::IssueGrant,        [PD,      PD,             PD,              PD,    PD,             PD,            UA,  PD]),
    (Rpc::RevokeGrant,       [PD,      PD,             PLANNER_REVOKES, PD,    PD,             PD,            UA,  PD]),
    (Rpc::AuthorizeUnlock,   [PD,      PD,             PD,              PD,    PD,             PD,            UA,  PD]),
    (Rpc::RedeemUnlock,      [PD,      PD,             PD,              PD,    PD,             PD,            UA,  PD]),
    (Rpc::RecordDeviceEvent, [PD,      PD,             PD,              PD,    PD,             PD,            UA,  PD]),
    (Rpc::GetReceipt,        [PD,      PD,             PD,              PD,    PD,             PD,            UA,  PD]),
    (Rpc::ClaimHome,         [PD,      PD,             PD,              PD,    PD,             PD,            UA,  PD]),
    (Rpc::Clock,             [CLOCK,   CLOCK,          CLOCK,           CLOCK, CLOCK,          CLOCK,         UA,  CLOCK]),
    (Rpc::StreamAttempts,    [PD,      Expect::Denied, PD,              PD,    PD,             PD,            UA,  PD]),
    (Rpc::GetRoute,          [PD,      PD,             Expect::Withheld, PD,   PD,             PD,            UA,  PD]),
    (Rpc::LoadManifest,      [PD,      PD,             Expect::Denied,  PD,    PD,             PD,            UA,  PD]),
    (Rpc::PlanDay,           [PD,      PD,             PD,              PD,    PD,             PD,            UA,  PD]),
    (Rpc::Subscribe,         [PD,      PD,             PD,              PD,    Expect::Withheld, ANALYST_READS, UA, PD]),
    // Another's parcel is answered as one that does not exist.
    (Rpc::Track,             [PD,      PD,             NF,              PD,    NF,             ANALYST_READS, UA,  PD]),
    (Rpc::TrackDay,          [PD,      PD,             PD,              PD,    PD,             ANALYST_READS, UA,  PD]),
    (Rpc::AttemptsReport,    [PD,      PD,             PD,              PD,    PD,             ANALYST_READS, UA,  PD]),
    // The endpoint is deleted last: the rows before act on it.
    (Rpc::AddEndpoint,      [PD,      PD,             PD,              PD,    PD,             CARRIER_HOOKS, UA,  PD]),
    (Rpc::ListEndpoints,    [PD,      PD,             PD,              PD,    PD,             CARRIER_HOOKS, UA,  PD]),
    (Rpc::PauseEndpoint,    [PD,      PD,             PD,              PD,    PD,             CARRIER_HOOKS, UA,  PD]),
    (Rpc::ResumeEndpoint,   [PD,      PD,             PD,              PD,    PD,             CARRIER_HOOKS, UA,  PD]),
    (Rpc::RotateSecret,     [PD,      PD,             PD,              PD,    PD,             CARRIER_HOOKS, UA,  PD]),
    (Rpc::Replay,           [PD,      PD,             PD,              PD,    PD,             CARRIER_HOOKS, UA,  PD]),
    (Rpc::ListAttempts,     [PD,      PD,             PD,              PD,    PD,             CARRIER_HOOKS, UA,  PD]),
    (Rpc::ListWebhookAlerts, [PD,     PD,             PD,              PD,    PD,             CARRIER_HOOKS, UA,  PD]),
    (Rpc::DeleteEndpoint,   [PD,      PD,             PD,              PD,    PD,             CARRIER_HOOKS, UA,  PD]),
];

/// Whether `answer` is what `expect` asks for.
fn meets(expect: Expect, answer: &Answer) -> bool {
    match (expect, answer) {
        (Expect::Refused(code), Answer::Status(got)) => code == *got,
        (Expect::Denied, Answer::Denied) | (Expect::Withheld, Answer::Withheld) => true,
        // Allowed: answered, whole or (for a subscription that has nothing
        // yet) empty.
        (Expect::Allowed(_), Answer::Answered | Answer::Withheld) => true,
        _ => false,
    }
}

/// Every `service/method` the API's descriptors declare.
fn api_rpcs() -> BTreeSet<String> {
    let set = prost_types::FileDescriptorSet::decode(threshold_api::FILE_DESCRIPTOR_SET)
        .expect("the API's descriptors decode");
    let mut out = BTreeSet::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                out.insert(format!(
                    "{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    out
}

#[test]
fn every_rpc_of_the_api_has_a_row_in_the_matrix() {
    let table: BTreeMap<String, Rpc> = MATRIX
        .iter()
        .map(|(rpc, _)| {
            let (service, method) = rpc.path();
            (format!("{service}/{method}"), *rpc)
        })
        .collect();
    let api = api_rpcs();
    let uncovered: Vec<&String> = api.iter().filter(|p| !table.contains_key(*p)).collect();
    assert!(
        uncovered.is_empty(),
        "RPCs the adversarial matrix does not try: {uncovered:?}; add a row to \
         MATRIX and a call to calls::call"
    );
    let unknown: Vec<&String> = table.keys().filter(|p| !api.contains(*p)).collect();
    assert!(
        unknown.is_empty(),
        "rows for RPCs the API lacks: {unknown:?}"
    );
    assert_eq!(MATRIX.len(), Rpc::ALL.len(), "one row per RPC");
    for (path, rpc) in &table {
        println!("{path:<45} {rpc:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_actor_is_refused_every_rpc_on_the_other_partys_identifiers() {
    recorded::install();
    let w = World::build().await;
    let mut wrong = Vec::new();
    let mut refusals: BTreeMap<(Rpc, i32), f64> = BTreeMap::new();
    for (a, b) in [(&w.a, &w.b), (&w.b, &w.a)] {
        for (rpc, row) in MATRIX {
            for (actor, expect) in Actor::ALL.into_iter().zip(row) {
                let channel = match actor {
                    Actor::WrongRole => w.client_as(rpc.wrong_role(), &rpc.tenant_of(b)),
                    _ => w.actor(a, actor),
                };
                let head = w.head().await;
                let answer = call(&w, channel, rpc, a, b).await;
                let stored = w.since(head).await;
                let cell = format!("{rpc:?} as {}'s {actor:?}", a.name);
                match expect {
                    Expect::Allowed(why) => println!("{cell:<45} {answer:?} (allowed: {why})"),
                    _ => println!("{cell:<45} {answer:?} (expected {expect:?})"),
                }
                if !meets(expect, &answer) {
                    wrong.push(format!("{cell}: expected {expect:?}, got {answer:?}"));
                }
                if !matches!(expect, Expect::Allowed(_)) && !stored.is_empty() {
                    let what: Vec<String> = stored
                        .iter()
                        .map(|e| format!("{} {}", e.stream, e.event.event_type))
                        .collect();
                    wrong.push(format!("{cell}: refused, yet stored {what:?}"));
                }
                if let Expect::Refused(code) = expect {
                    *refusals.entry((rpc, code as i32)).or_default() += 1.0;
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "cells that do not hold:\n{}",
        wrong.join("\n")
    );

    // Every refusal is counted by the server, by method and code.
    for ((rpc, code), n) in &refusals {
        let code = Code::from_i32(*code);
        let counted = recorded::calls(*rpc, code);
        assert!(
            counted >= *n,
            "{rpc:?}: {n} refusals with {code:?}, the server counted {counted}"
        );
    }
    // The refused handheld events are counted as rejected.
    assert!(recorded::value("threshold_handheld_events_total", &[("result", "rejected")]) >= 2.0);

    // Nothing valid lost: each party's day, every RPC of it.
    for party in [&w.b, &w.a] {
        let called: BTreeSet<Rpc> = day_goes_on(&w, party).await.into_iter().collect();
        assert_eq!(called, BTreeSet::from(Rpc::ALL), "a day calls every RPC");
    }
}
