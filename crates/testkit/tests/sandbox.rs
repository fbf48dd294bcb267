//! The sandbox itself: the production server behind it takes each role's
//! credential, refuses a call without one, and stops cleanly when told.

use std::time::Duration;

use threshold_api::v1::AttemptsReportRequest;
use threshold_api::v1::analytics_service_client::AnalyticsServiceClient;
use threshold_auth::Role;
use threshold_testkit::{Sandbox, Service};

#[tokio::test]
async fn a_sandbox_serves_with_credentials_and_stops_cleanly() {
    let sandbox = Sandbox::start().await;
    let report = |channel| async move {
        AnalyticsServiceClient::new(channel)
            .attempts_report(AttemptsReportRequest::default())
            .await
    };
    report(sandbox.analyst()).await.expect("the local analyst");
    report(sandbox.client_as(Role::Analyst, "*"))
        .await
        .expect("a new analyst");
    let refused = report(sandbox.unauthenticated())
        .await
        .expect_err("no credential");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    tokio::time::timeout(Duration::from_secs(10), sandbox.shutdown())
        .await
        .expect("stopped in time");
}

#[tokio::test]
async fn a_sandbox_runs_only_the_services_it_is_given() {
    let sandbox = Sandbox::builder()
        .services([Service::Manifest])
        .start()
        .await;
    let missing = AnalyticsServiceClient::new(sandbox.analyst())
        .attempts_report(AttemptsReportRequest::default())
        .await
        .expect_err("not served");
    assert_eq!(missing.code(), tonic::Code::Unimplemented);
}
