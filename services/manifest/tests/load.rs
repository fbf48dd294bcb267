//! ManifestService end to end: a real server on 127.0.0.1:0 over the
//! embedded log, a real gRPC client.

use threshold_api::v1::manifest_service_client::ManifestServiceClient;
use threshold_api::v1::{LoadSummary, RowRejected};
use threshold_auth::{Authed, Credentials, Role};
use threshold_domain::{DomainEvent, pb};
use threshold_log::Position;
use threshold_manifest::{COLUMNS, ERROR_COLUMN};
use threshold_manifest_service::client;
use threshold_testkit::Sandbox;
use threshold_testkit::fixtures::MANIFEST_HEADER as HEADER;

async fn serve() -> Sandbox {
    Sandbox::start().await
}

/// A client as the local planner (every depot), on a connection of its own.
async fn connect(server: &Sandbox) -> ManifestServiceClient<Authed> {
    connect_with(server, server.tokens().token(Role::Planner)).await
}

async fn connect_with(server: &Sandbox, token: Option<&str>) -> ManifestServiceClient<Authed> {
    ManifestServiceClient::new(
        threshold_auth::authed(server.connect().await, token).expect("token"),
    )
}

async fn load(server: &Sandbox, id: &str, csv: String) -> (LoadSummary, Vec<RowRejected>) {
    let mut client = connect(server).await;
    let mut rejected = Vec::new();
    let summary = client::load(
        &mut client,
        id,
        std::io::Cursor::new(csv.into_bytes()),
        |r| rejected.push(r),
    )
    .await
    .expect("load");
    rejected.sort_by_key(|r| r.line);
    (summary, rejected)
}

fn manifest() -> String {
    format!(
        "{HEADER}\n\
         SE-1,nordshop,SE,STO-1,2026-11-23,Drottninggatan 1,111 51,Stockholm,59.33,18.06,doorstep,1.2,,\n\
         SE-2,nordshop,SE,STO-1,2026-11-23,Drottninggatan 2,111 51,Stockholm,59.33,18.06,in_home,0.8,09:00,12:00\n\
         SE-3,nordshop,SE,STO-1,2026-11-23,Drottninggatan 3,111 51,Stockholm,91.00,18.06,doorstep,1.0,,\n\
         FI-1,kotimarket,FI,HEL-1,2026-11-23,Mannerheimintie 1,00100,Helsinki,60.17,24.94,locker,2.0,,\n\
         FI-2,kotimarket,FI,HEL-1,2026-11-23,Mannerheimintie 2,00100,Helsinki,60.17,24.94,in_home,2.0,,\n"
    )
}

#[tokio::test]
async fn a_manifest_with_bad_rows_loads_the_good_ones_and_names_the_bad() {
    let server = serve().await;
    let (summary, rejected) = load(&server, "stockholm-helsinki.csv", manifest()).await;
    assert_eq!(
        (
            summary.rows,
            summary.accepted,
            summary.unchanged,
            summary.rejected
        ),
        (5, 3, 0, 2)
    );
    assert_eq!(summary.manifest_id, "stockholm-helsinki.csv");
    let bad: Vec<(u64, &str)> = rejected
        .iter()
        .map(|r| (r.line, r.field.as_str()))
        .collect();
    assert_eq!(bad, vec![(4, "latitude"), (6, "window_start")]);
    assert_eq!(rejected[0].values.len(), COLUMNS.len());
    assert_eq!(rejected[0].values[0], "SE-3");

    // The log holds exactly the three parcels, with country and partner.
    let events = server
        .log()
        .read_all(Position::ORIGIN, 100)
        .await
        .expect("read");
    let mut ids: Vec<String> = events
        .iter()
        .map(|e| match e.decode().expect("decode") {
            DomainEvent::Parcel(pb::parcel_event::Event::Manifested(m)) => m.parcel_id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["FI-1", "SE-1", "SE-2"]);
    let fi = events
        .iter()
        .find(|e| e.stream.id() == "FI-1")
        .expect("FI-1");
    assert_eq!(fi.event.tenant.as_deref(), Some("kotimarket"));
    assert_eq!(fi.event.country, Some(threshold_domain::Country::Fi));
}

#[tokio::test]
async fn reloading_creates_no_duplicate_and_fixed_rejects_load() {
    let server = serve().await;
    load(&server, "day.csv", manifest()).await;
    let (again, rejected) = load(&server, "day.csv", manifest()).await;
    assert_eq!((again.accepted, again.unchanged, again.rejected), (0, 3, 2));
    assert_eq!(server.log().head().await.expect("head"), Position(3));

    // The planner fixes the rejects file and loads it.
    let mut fixed = format!("{HEADER},{ERROR_COLUMN}\n");
    for r in &rejected {
        let mut values = r.values.clone();
        match values[0].as_str() {
            "SE-3" => values[8] = "59.33".into(),
            "FI-2" => {
                values[12] = "10:00".into();
                values[13] = "14:00".into();
            }
            other => panic!("unexpected reject {other}"),
        }
        fixed.push_str(&values.join(","));
        fixed.push_str(",old error text\n");
    }
    let (summary, still) = load(&server, "day.rejects.csv", fixed).await;
    assert!(still.is_empty(), "{still:?}");
    assert_eq!(summary.accepted, 2);
    assert_eq!(server.log().head().await.expect("head"), Position(5));

    // The same parcel id with other content is refused, not overwritten.
    let changed = format!(
        "{HEADER}\nSE-1,nordshop,SE,STO-1,2026-11-23,Another Street 9,111 51,Stockholm,59.33,18.06,doorstep,1.2,,\n"
    );
    let (summary, refused) = load(&server, "changed.csv", changed).await;
    assert_eq!(summary.rejected, 1);
    assert_eq!(refused[0].field, "parcel_id");
    assert!(
        refused[0].message.contains("different content"),
        "{}",
        refused[0].message
    );
}

#[tokio::test]
async fn a_manifest_without_its_columns_is_refused_with_invalid_argument() {
    let server = serve().await;
    let mut client = connect(&server).await;
    let err = client::load(
        &mut client,
        "broken.csv",
        std::io::Cursor::new(b"parcel_id,country\nSE-1,SE\n".to_vec()),
        |_| {},
    )
    .await
    .expect_err("no columns");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("lacks column(s) partner_id"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn a_large_manifest_streams_through_in_chunks() {
    let server = serve().await;
    let rows = 5_000;
    let mut csv = format!("{HEADER}\n");
    for n in 0..rows {
        csv.push_str(&format!(
            "NO-{n:06},fjallgear,NO,OSL-1,2026-11-23,Gate {n},0150,Oslo,59.91,10.75,doorstep,1.0,,\n"
        ));
    }
    assert!(csv.len() > 4 * client::CHUNK, "spans several chunks");
    let (summary, rejected) = load(&server, "big.csv", csv).await;
    assert!(rejected.is_empty());
    assert_eq!(summary.accepted, rows);
    assert_eq!(server.log().head().await.expect("head"), Position(rows));
}

#[tokio::test]
async fn an_oversized_chunk_gets_resource_exhausted() {
    let server = serve().await;
    let mut client = connect(&server).await;
    let chunk = threshold_api::v1::ManifestChunk {
        manifest_id: "huge.csv".into(),
        data: vec![b'x'; threshold_manifest_service::MAX_CHUNK + 1],
    };
    let result = client.load_manifest(tokio_stream::iter(vec![chunk])).await;
    let err = match result {
        Err(e) => e,
        Ok(response) => {
            let mut replies = response.into_inner();
            loop {
                match replies.message().await {
                    Err(e) => break e,
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("an oversized chunk was accepted"),
                }
            }
        }
    };
    assert_eq!(
        err.code(),
        tonic::Code::ResourceExhausted,
        "{}",
        err.message()
    );
    assert_eq!(server.log().head().await.expect("head"), Position(0));
}

#[tokio::test]
async fn a_depots_planner_loads_its_own_depots_rows_and_others_are_refused() {
    let server = serve().await;
    let token =
        Credentials::add(server.data(), "sto-planner", Role::Planner, "STO-1").expect("credential");
    let mut client = connect_with(&server, Some(&token)).await;
    let mut refused = Vec::new();
    let summary = client::load(
        &mut client,
        "mixed.csv",
        std::io::Cursor::new(manifest().into_bytes()),
        |r| refused.push(r),
    )
    .await
    .expect("load");
    // SE-1 and SE-2 are STO-1's; SE-3 is malformed whoever loads it.
    assert_eq!(summary.accepted, 2, "{summary:?} {refused:?}");
    let other_depot: Vec<&RowRejected> = refused.iter().filter(|r| r.field == "depot").collect();
    assert_eq!(
        other_depot.len(),
        1,
        "FI-1, the valid HEL-1 row: {refused:?}"
    );
    assert_eq!(other_depot[0].values[0], "FI-1");
    assert!(other_depot[0].message.contains("STO-1"), "{refused:?}");
    assert_eq!(summary.accepted + summary.rejected, summary.rows);
    // Not a planner, or no credentials: nothing is loaded.
    for token in [
        Some(Credentials::add(server.data(), "a", Role::Analyst, "*").expect("credential")),
        None,
    ] {
        let mut client = connect_with(&server, token.as_deref()).await;
        let err = client::load(
            &mut client,
            "day.csv",
            std::io::Cursor::new(manifest().into_bytes()),
            |_| {},
        )
        .await
        .expect_err("refused");
        assert!(
            matches!(
                err.code(),
                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
            ),
            "{err:?}"
        );
    }
}

/// One planner cannot make the server hold an arbitrary row: an id, a field
/// or a whole record over its limit is refused with its line (the id's
/// field named), and the rows around it load.
#[tokio::test]
async fn oversized_ids_fields_and_records_are_refused_and_the_rows_around_them_load() {
    let server = serve().await;
    let row = |id: &str, address: &str| {
        format!(
            "{id},nordshop,SE,STO-1,2026-11-23,{address},111 51,Stockholm,59.33,18.06,doorstep,1,,\n"
        )
    };
    let csv = format!(
        "{HEADER}\n{}{}{}{}{}",
        row("SE-1", "Gatan 1"),
        row(&"X".repeat(threshold_manifest::MAX_ID_BYTES + 1), "Gatan 2"),
        row("SE-3", &"a".repeat(threshold_manifest::MAX_FIELD_BYTES + 1)),
        row("SE-4", &"b,".repeat(threshold_manifest::MAX_RECORD_BYTES)),
        row("SE-5", "Gatan 5"),
    );
    let (summary, rejected) = load(&server, "oversized.csv", csv).await;
    assert_eq!((summary.accepted, summary.rejected), (2, 3), "{rejected:?}");
    let lines: Vec<u64> = rejected.iter().map(|r| r.line).collect();
    assert_eq!(lines, vec![3, 4, 5]);
    assert_eq!(rejected[0].field, "parcel_id", "{:?}", rejected[0]);
    assert_eq!(rejected[1].field, "address", "{:?}", rejected[1]);
    for r in &rejected {
        assert!(
            r.message.contains("limit") || r.message.contains("bytes"),
            "{r:?}"
        );
    }
}

/// On a simulation server a load carrying the simulation's time is stamped
/// with it, one without (a planner's by hand) with the server's, and one
/// whose time does not parse is refused before a row is read.
#[tokio::test]
async fn a_simulations_load_is_stamped_with_the_time_it_carries() {
    let server = Sandbox::builder().simulated().start().await;
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-22T20:00:00Z")
        .expect("time")
        .to_utc();
    let dated = |at: &str| {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert(
            threshold_api::SIMULATED_TIME_HEADER,
            at.parse().expect("ascii"),
        );
        m
    };
    let row = |id: &str| {
        format!(
            "{HEADER}\n{id},nordshop,SE,STO-1,2026-11-23,Gatan 1,111 51,Stockholm,59.33,18.06,doorstep,1,,\n"
        )
    };
    let send = |csv: String, metadata| {
        let server = &server;
        async move {
            client::load_with(
                &mut connect(server).await,
                "simulated.csv",
                std::io::Cursor::new(csv.into_bytes()),
                metadata,
                |r| panic!("a row was refused: {r:?}"),
            )
            .await
        }
    };
    let refused = send(row("SE-0"), dated("the evening before"))
        .await
        .expect_err("not a time");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused
            .message()
            .contains(threshold_api::SIMULATED_TIME_HEADER),
        "{refused:?}"
    );
    let loaded = send(row("SE-1"), dated(&at.to_rfc3339()))
        .await
        .expect("dated");
    assert_eq!(loaded.accepted, 1);
    let before = chrono::Utc::now();
    let loaded = send(row("SE-2"), Default::default())
        .await
        .expect("by hand");
    assert_eq!(loaded.accepted, 1);

    let events = server
        .log()
        .read_all(Position::ORIGIN, 10)
        .await
        .expect("read");
    let stamps: Vec<_> = events
        .iter()
        .map(|e| (e.stream.to_string(), e.event.occurred_at))
        .collect();
    assert_eq!(stamps.len(), 2, "{stamps:?}");
    assert_eq!(stamps[0], ("parcel/SE-1".to_owned(), at));
    assert_eq!(stamps[1].0, "parcel/SE-2");
    assert!(
        stamps[1].1 >= before - chrono::Duration::seconds(1),
        "{stamps:?}"
    );
}
