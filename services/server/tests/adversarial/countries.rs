//! An analyst of one country (a credential for tenant `SE`, party A's)
//! reads that country's reports and outcomes and no other's, and is not
//! taken for the partner whose id matches its tenant: the role's scope is
//! the country, on every RPC that takes the role, as it is on the
//! console's pages and on `Track`.

use threshold_api::v1::analytics_service_client::AnalyticsServiceClient;
use threshold_api::v1::webhook_service_client::WebhookServiceClient;
use threshold_api::v1::{AttemptsReportRequest, ListEndpointsRequest, ListWebhookAlertsRequest};
use threshold_auth::Role;
use tonic::Code;

use crate::calls::outcomes;
use crate::owners::day_goes_on;
use crate::world::World;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_of_one_country_reads_that_country_and_no_other() {
    let w = World::build().await;
    let (a, b) = (&w.a, &w.b);
    assert_ne!(a.country, b.country);
    // Both parties' days, so each country has attempts and outcomes.
    day_goes_on(&w, a).await;
    day_goes_on(&w, b).await;
    let own = a.country.code();
    let analyst = || w.client_as(Role::Analyst, own);

    // B's country, asked for by name: refused, before any report is read.
    let refused = AnalyticsServiceClient::new(analyst())
        .attempts_report(AttemptsReportRequest {
            by: "depot".into(),
            country: b.country.to_proto() as i32,
            ..Default::default()
        })
        .await
        .expect_err("another country's report");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(!refused.message().contains(b.depot), "{refused:?}");

    // No country named: its own, by country and by depot.
    for (by, only) in [("country", own), ("depot", a.depot)] {
        let report = AnalyticsServiceClient::new(analyst())
            .attempts_report(AttemptsReportRequest {
                by: by.into(),
                up_to_head: true,
                ..Default::default()
            })
            .await
            .expect("its own country's report")
            .into_inner();
        let groups: Vec<&str> = report.rows.iter().map(|r| r.group.as_str()).collect();
        assert_eq!(groups, [only], "by {by}");
        assert!(report.total.is_some_and(|t| t.parcels >= 2), "by {by}");
    }
    // The carrier's analyst sees both: the report is not empty for B.
    let every = AnalyticsServiceClient::new(w.client_as(Role::Analyst, "*"))
        .attempts_report(AttemptsReportRequest {
            by: "country".into(),
            up_to_head: true,
            ..Default::default()
        })
        .await
        .expect("every country's report")
        .into_inner();
    assert_eq!(every.rows.len(), 2, "{every:?}");

    // Outcomes: its own country's parcels, every one of them, and none of B's.
    let seen = outcomes(analyst()).await.expect("subscribed");
    let parcels: std::collections::BTreeSet<&str> =
        seen.iter().map(|o| o.parcel_id.as_str()).collect();
    assert!(
        parcels.contains(a.parcel) && parcels.contains(a.other_parcel),
        "{parcels:?}"
    );
    assert!(
        seen.iter()
            .all(|o| o.country == a.country.to_proto() as i32 && !b.owns(&o.parcel_id)),
        "{seen:?}"
    );
    let all = outcomes(w.client_as(Role::Analyst, "*"))
        .await
        .expect("subscribed");
    assert!(all.iter().any(|o| b.owns(&o.parcel_id)), "{all:?}");

    // Not the partner named like its country, nor any partner it names.
    let mut hooks = WebhookServiceClient::new(analyst());
    for partner in ["", own, a.partner, b.partner] {
        let listed = hooks
            .list_endpoints(ListEndpointsRequest {
                partner: partner.into(),
            })
            .await
            .expect_err("a country's analyst lists no partner's endpoints");
        assert_eq!(
            listed.code(),
            Code::PermissionDenied,
            "partner {partner:?}: {listed:?}"
        );
        let alerts = hooks
            .list_webhook_alerts(ListWebhookAlertsRequest {
                partner: partner.into(),
                ..Default::default()
            })
            .await
            .expect_err("a country's analyst reads no partner's alerts");
        assert_eq!(
            alerts.code(),
            Code::PermissionDenied,
            "partner {partner:?}: {alerts:?}"
        );
    }
    // A tenant that is no country is refused as such.
    let odd = AnalyticsServiceClient::new(w.client_as(Role::Analyst, "nordshop"))
        .attempts_report(AttemptsReportRequest::default())
        .await
        .expect_err("an analyst of no country");
    assert_eq!(odd.code(), Code::PermissionDenied, "{odd:?}");
}
