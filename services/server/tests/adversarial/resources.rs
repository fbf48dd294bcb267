//! One party holding the server's resources does not hold up the other:
//! while A's planner keeps a manifest load open and silent after its first
//! chunk, A's partner keeps a subscription open, and A's driver keeps an
//! attempt stream open, B's whole day goes through in good time.

use std::time::Duration;

use threshold_api::v1::ManifestChunk;
use threshold_api::v1::SubscribeOutcomesRequest;
use threshold_api::v1::manifest_service_client::ManifestServiceClient;
use threshold_api::v1::outcome_service_client::OutcomeServiceClient;
use threshold_testkit::fixtures::{HandheldStream, MANIFEST_HEADER};

use crate::owners::bs_day_goes_on;
use crate::world::World;

/// How long B's day may take while A holds its streams open: far more
/// than it takes alone (about a second in a debug build).
const IN_GOOD_TIME: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_load_and_idle_streams_of_one_party_do_not_hold_up_the_others_day() {
    let w = World::build().await;
    let a = &w.a;

    // A's planner sends a header and goes silent, the stream left open.
    let (chunks, rx) = tokio::sync::mpsc::channel(1);
    chunks
        .send(ManifestChunk {
            manifest_id: "stalled.csv".into(),
            data: format!("{MANIFEST_HEADER}\n").into_bytes(),
        })
        .await
        .expect("the first chunk");
    let stalled = ManifestServiceClient::new(w.planner_of(a))
        .load_manifest(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("the load opens");
    // A's partner subscribes and reads nothing; A's driver opens a stream
    // and sends nothing.
    let idle = OutcomeServiceClient::new(w.partner_of(a))
        .subscribe(SubscribeOutcomesRequest { from_cursor: 0 })
        .await
        .expect("subscribed");
    let open = HandheldStream::open(w.driver_of(a)).await;

    tokio::time::timeout(IN_GOOD_TIME, bs_day_goes_on(&w))
        .await
        .expect("B's day goes through while A holds its streams");
    drop((chunks, stalled, idle, open));
}

/// A planner cannot buy unbounded search, even on its own depot: a plan
/// asking for more search time or more generations than the server allows
/// is refused by field, before it takes the planning turn, and writes
/// nothing; within the bounds the same planner plans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planner_cannot_ask_for_more_search_than_the_server_allows() {
    use threshold_api::v1::PlanDayRequest;
    use threshold_api::v1::planning_service_client::PlanningServiceClient;
    use threshold_domain::country::date_to_proto;

    let w = World::build().await;
    let a = &w.a;
    let head = w.head().await;
    let ask = |seconds_per_depot: f64, generations: u32| PlanDayRequest {
        date: Some(date_to_proto(w.day)),
        depot_ids: vec![a.depot.into()],
        seconds_per_depot,
        generations,
        seed: 1,
        ..Default::default()
    };
    for (request, field) in [
        (ask(601.0, 0), "seconds_per_depot"),
        (ask(f64::INFINITY, 0), "seconds_per_depot"),
        (ask(0.0, 100_001), "generations"),
        (ask(0.0, u32::MAX), "generations"),
    ] {
        let refused = PlanningServiceClient::new(w.planner_of(a))
            .plan_day(request)
            .await
            .expect_err("over the bound");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains(field), "{refused:?}");
    }
    assert_eq!(w.stored_since(head).await, []);
    PlanningServiceClient::new(w.planner_of(a))
        .plan_day(ask(0.0, 50))
        .await
        .expect("within the bounds the planner plans");
}

/// One depot's planners hold one plan at a time: a second asked while the
/// first waits or solves is refused as RESOURCE_EXHAUSTED rather than
/// queued in front of the other depots' plans, B's plan goes through after
/// at most A's one, and A plans again once its first has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_depots_planners_queue_one_plan_at_a_time_in_front_of_the_others() {
    use threshold_api::v1::PlanDayRequest;
    use threshold_api::v1::planning_service_client::PlanningServiceClient;
    use threshold_domain::country::date_to_proto;

    let w = World::build().await;
    let (a, b) = (&w.a, &w.b);
    let ask = |depot: &str, seconds_per_depot: f64| PlanDayRequest {
        date: Some(date_to_proto(w.day)),
        depot_ids: vec![depot.into()],
        seconds_per_depot,
        ..Default::default()
    };
    // Two plans of A at once, both long: one is refused at once.
    let plan = |party, seconds| {
        let mut client = PlanningServiceClient::new(w.planner_of(party));
        let request = ask(party.depot, seconds);
        async move { client.plan_day(request).await }
    };
    let first = tokio::spawn(plan(a, 4.0));
    let second = tokio::spawn(plan(a, 4.0));
    let refused = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            for handle in [&first, &second] {
                if handle.is_finished() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "one of A's two plans is answered at once");
    let (first, second) = (first.await.expect("first"), second.await.expect("second"));
    let (done, refused) = match (first, second) {
        (Ok(done), Err(refused)) | (Err(refused), Ok(done)) => (done, refused),
        other => panic!("one planned, one refused: {other:?}"),
    };
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(refused.message().contains(a.depot), "{refused:?}");
    assert!(!done.into_inner().depots.is_empty());

    // While A's plan solves, B's is taken, after at most A's one.
    let a_again = tokio::spawn(plan(a, 4.0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b_planned = tokio::time::timeout(IN_GOOD_TIME, plan(b, 0.5))
        .await
        .expect("B's plan in good time")
        .expect("B plans");
    assert!(!b_planned.into_inner().depots.is_empty());
    a_again
        .await
        .expect("joined")
        .expect("A plans again once its first has ended");
}

/// One credential holds a bounded number of subscriptions open: the one
/// past the bound is refused as RESOURCE_EXHAUSTED, one closed makes room
/// again, and another partner subscribes meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_holds_a_bounded_number_of_subscriptions() {
    use threshold_outcome_service::MAX_SUBSCRIPTIONS_PER_CREDENTIAL as MAX;
    let w = World::build().await;
    let (a, b) = (&w.a, &w.b);
    let partner = w.partner_of(a);
    let subscribe = |channel| async move {
        OutcomeServiceClient::new(channel)
            .subscribe(SubscribeOutcomesRequest { from_cursor: 0 })
            .await
    };
    let mut open = Vec::new();
    for _ in 0..MAX {
        open.push(subscribe(partner.clone()).await.expect("subscribed"));
    }
    let refused = subscribe(partner.clone()).await.expect_err("one too many");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    // B's partner is not held up by A's.
    let theirs = subscribe(w.partner_of(b)).await.expect("B subscribes");
    // One closed: room for one more, once the server has seen it go.
    drop(open.pop());
    let mut again = None;
    for _ in 0..100 {
        match subscribe(partner.clone()).await {
            Ok(s) => {
                again = Some(s);
                break;
            }
            Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(
        again.is_some(),
        "a closed subscription's room was not given back"
    );
    drop((open, theirs, again));
}
