//! What one caller's loads may cost, over gRPC against the production
//! server: a stalled upload times out and keeps what it loaded, stalled
//! uploads hold no thread that others need, and the load limits refuse
//! the excess with RESOURCE_EXHAUSTED at once.

use std::time::{Duration, Instant};

use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::manifest_service_client::ManifestServiceClient;
use threshold_api::v1::{GetRouteRequest, LoadManifestReply, ManifestChunk};
use threshold_auth::{Authed, Role};
use threshold_log::Position;
use threshold_manifest_service::{LoadLimits, client};
use threshold_testkit::Sandbox;
use threshold_testkit::fixtures::manifest;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

/// Stockholm rows of depot STO-1, `from`..`to`.
fn stockholm(from: u32, to: u32) -> String {
    (from..to)
        .map(|n| {
            format!(
                "SE-{n},nordshop,SE,STO-1,2026-11-23,Gatan {n},111 51,Stockholm,59.33,18.06,doorstep,1,,\n"
            )
        })
        .collect()
}

/// Helsinki rows of depot HEL-1.
fn helsinki(rows: u32) -> String {
    (0..rows)
        .map(|n| {
            format!(
                "FI-{n},kotimarket,FI,HEL-1,2026-11-23,Katu {n},00100,Helsinki,60.17,24.94,doorstep,1,,\n"
            )
        })
        .collect()
}

/// A load that sends `data` as its first chunk and then nothing: the
/// returned sender keeps the upload open, stalled.
struct Stalled {
    _sender: mpsc::Sender<ManifestChunk>,
    replies: Streaming<LoadManifestReply>,
}

/// Opens a stalled load of `data` as `planner`, or the status refusing it.
async fn stall(planner: Authed, id: &str, data: String) -> Result<Stalled, Status> {
    let (sender, chunks) = mpsc::channel(1);
    sender
        .send(ManifestChunk {
            manifest_id: id.into(),
            data: data.into_bytes(),
        })
        .await
        .expect("the chunk is queued");
    let replies = ManifestServiceClient::new(planner)
        .load_manifest(ReceiverStream::new(chunks))
        .await?
        .into_inner();
    Ok(Stalled {
        _sender: sender,
        replies,
    })
}

/// Loads `csv` whole as `planner`, within `within`.
async fn load_within(
    planner: Authed,
    id: &str,
    csv: String,
    within: Duration,
) -> Result<u64, Status> {
    tokio::time::timeout(
        within,
        client::load(
            &mut ManifestServiceClient::new(planner),
            id,
            std::io::Cursor::new(csv.into_bytes()),
            |r| panic!("unexpected rejection {r:?}"),
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("loading {id} took over {within:?}"))
    .map(|summary| summary.accepted)
}

fn limits(idle: Duration, concurrent: usize, per_tenant: usize) -> LoadLimits {
    LoadLimits {
        idle_timeout: idle,
        concurrent_loads: concurrent,
        loads_per_tenant: per_tenant,
    }
}

#[tokio::test]
async fn a_stalled_upload_ends_after_the_idle_timeout_and_its_accepted_rows_stay() {
    let idle = Duration::from_millis(500);
    let server = Sandbox::builder()
        .manifest_limits(limits(idle, 8, 1))
        .start()
        .await;
    let planner = server.client_as(Role::Planner, "STO-1");
    // Three whole rows, then half of a fourth, then silence.
    let data = format!("{}SE-3,nordshop,SE", manifest(&stockholm(0, 3)));
    let started = Instant::now();
    let mut load = stall(planner.clone(), "stalled.csv", data)
        .await
        .expect("admitted");
    let err = match tokio::time::timeout(Duration::from_secs(30), load.replies.message())
        .await
        .expect("the load ends by itself")
    {
        Err(e) => e,
        Ok(Some(reply)) => panic!("no reply before the end: {reply:?}"),
        Ok(None) => panic!("the stream ended without saying why"),
    };
    assert!(
        started.elapsed() >= idle,
        "ended after {:?}",
        started.elapsed()
    );
    assert_eq!(err.code(), Code::DeadlineExceeded, "{}", err.message());
    for said in ["stalled.csv", "after 3 rows", "3 accepted"] {
        assert!(err.message().contains(said), "{said:?}: {}", err.message());
    }
    // What was accepted stays; the cut row was never loaded.
    assert_eq!(server.log().head().await.expect("head"), Position(3));
    // The load's place was freed: the tenant (limited to one load) loads
    // the rest, and the rows already loaded are recognised.
    let accepted = load_within(
        planner,
        "rest.csv",
        manifest(&stockholm(0, 5)),
        Duration::from_secs(30),
    )
    .await
    .expect("the tenant loads again");
    assert_eq!(accepted, 2);
    assert_eq!(server.log().head().await.expect("head"), Position(5));
}

/// Stalled uploads wait for their client without a thread: on a runtime
/// of two blocking threads (the pool the log's reads share), four stalled
/// uploads of one tenant leave another tenant's load and a route read
/// prompt, and the tenant's next load is refused.
#[test]
fn stalled_uploads_of_one_tenant_hold_no_thread_and_others_load_promptly() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let server = Sandbox::builder()
            .manifest_limits(limits(Duration::from_secs(600), 8, 4))
            .start()
            .await;
        let a = server.client_as(Role::Planner, "STO-1");
        let mut stalled = Vec::new();
        for n in 0..4 {
            // A header and half a row: the parser has read all it was sent.
            let data = format!("{}SE-{n},nordshop", manifest(""));
            stalled.push(
                stall(a.clone(), &format!("a-{n}.csv"), data)
                    .await
                    .expect("within the tenant's limit"),
            );
        }
        // Let the stalled loads reach their wait.
        tokio::time::sleep(Duration::from_millis(300)).await;

        let b = server.client_as(Role::Planner, "HEL-1");
        let accepted = load_within(
            b,
            "b.csv",
            manifest(&helsinki(300)),
            Duration::from_secs(60),
        )
        .await
        .expect("the other tenant loads");
        assert_eq!(accepted, 300);
        let started = Instant::now();
        let route = tokio::time::timeout(
            Duration::from_secs(10),
            HandheldServiceClient::new(server.handheld()).get_route(GetRouteRequest {
                driver_id: "drv-1".into(),
                date: None,
            }),
        )
        .await
        .expect("a read answers promptly");
        assert!(
            !matches!(
                route.as_ref().map_err(Status::code),
                Err(Code::Unavailable | Code::DeadlineExceeded | Code::Internal)
            ),
            "{route:?} after {:?}",
            started.elapsed()
        );

        // The tenant's fifth load is over its limit: refused at once.
        let started = Instant::now();
        let err = match stall(a.clone(), "a-5.csv", manifest(&stockholm(0, 1))).await {
            Err(e) => e,
            Ok(_) => panic!("a fifth load of one tenant was admitted"),
        };
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
        assert!(err.message().contains("\"STO-1\""), "{}", err.message());
        assert_eq!(
            server.log().head().await.expect("head"),
            Position(300),
            "nothing of the stalled or refused loads was written"
        );
        drop(stalled);
    });
}

#[tokio::test]
async fn the_server_wide_limit_refuses_the_load_over_it_until_one_ends() {
    let server = Sandbox::builder()
        .manifest_limits(limits(Duration::from_secs(600), 3, 2))
        .start()
        .await;
    let (a, b, c) = (
        server.client_as(Role::Planner, "STO-1"),
        server.client_as(Role::Planner, "HEL-1"),
        server.client_as(Role::Planner, "OSL-1"),
    );
    let first = stall(a.clone(), "a-1.csv", manifest(""))
        .await
        .expect("a 1");
    let _second = stall(a.clone(), "a-2.csv", manifest(""))
        .await
        .expect("a 2");
    let _third = stall(b, "b-1.csv", manifest("")).await.expect("b 1");
    let err = match stall(c.clone(), "c-1.csv", manifest("")).await {
        Err(e) => e,
        Ok(_) => panic!("a fourth load was admitted over the server's limit of 3"),
    };
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(
        err.message().contains("3 manifest loads"),
        "{}",
        err.message()
    );

    // A client that goes away frees its load's place.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    let _c = loop {
        match stall(c.clone(), "c-1.csv", manifest("")).await {
            Ok(load) => break load,
            Err(e) if e.code() == Code::ResourceExhausted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the place was not freed: {e:?}"),
        }
    };
}

/// A stream that ends before its first chunk is an empty manifest, refused
/// at once for its missing header; not a stalled one.
#[tokio::test]
async fn an_upload_that_ends_before_its_first_chunk_is_refused_at_once() {
    let server = Sandbox::start().await;
    let started = Instant::now();
    let mut replies = ManifestServiceClient::new(server.planner())
        .load_manifest(tokio_stream::iter(Vec::<ManifestChunk>::new()))
        .await
        .expect("admitted")
        .into_inner();
    let err = match tokio::time::timeout(Duration::from_secs(10), replies.message())
        .await
        .expect("answered at once")
    {
        Err(e) => e,
        Ok(reply) => panic!("an empty upload was answered {reply:?}"),
    };
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(started.elapsed() < Duration::from_secs(10));
}
