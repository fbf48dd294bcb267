//! A sandbox served over TLS, as `threshold serve --tls-cert --tls-key`
//! serves: a client that trusts the server's certificate is served; a
//! plaintext client, or one that trusts another certificate, gets nothing.
//! The certificates are made here, at test time: nothing secret is kept.

use std::time::Duration;

use threshold_api::v1::AttemptsReportRequest;
use threshold_api::v1::analytics_service_client::AnalyticsServiceClient;
use threshold_auth::Role;
use threshold_testkit::{Sandbox, connect};

/// A self-signed certificate for 127.0.0.1 and its key, PEM.
fn self_signed() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("a self-signed certificate");
    (made.cert.pem(), made.signing_key.serialize_pem())
}

async fn tls_sandbox() -> (Sandbox, String) {
    let (cert, key) = self_signed();
    let sandbox = Sandbox::builder().tls(cert.clone(), key).start().await;
    (sandbox, cert)
}

/// An analyst's report over `channel`, carrying the sandbox's analyst token.
async fn report(
    sandbox: &Sandbox,
    channel: tonic::transport::Channel,
) -> Result<(), tonic::Status> {
    let authed = sandbox
        .tokens()
        .channel(channel, Role::Analyst)
        .expect("a token");
    AnalyticsServiceClient::new(authed)
        .attempts_report(AttemptsReportRequest::default())
        .await
        .map(drop)
}

#[tokio::test]
async fn a_client_trusting_the_certificate_is_served_over_tls() {
    let (sandbox, cert) = tls_sandbox().await;
    assert!(
        sandbox.url().starts_with("https://127.0.0.1:"),
        "{}",
        sandbox.url()
    );
    // The sandbox's own clients, and a new connection trusting the cert.
    AnalyticsServiceClient::new(sandbox.analyst())
        .attempts_report(AttemptsReportRequest::default())
        .await
        .expect("the sandbox's analyst over TLS");
    let channel = connect(sandbox.url(), Some(cert.as_bytes()))
        .await
        .expect("a TLS connection trusting the server's certificate");
    report(&sandbox, channel).await.expect("served over TLS");
}

#[tokio::test]
async fn a_plaintext_client_gets_nothing_from_a_tls_port() {
    let (sandbox, _) = tls_sandbox().await;
    let plain = sandbox.url().replacen("https://", "http://", 1);
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        match connect(&plain, None).await {
            // Refused at the handshake, or at the first call.
            Err(e) => Err(e.to_string()),
            Ok(channel) => report(&sandbox, channel).await.map_err(|s| s.to_string()),
        }
    })
    .await
    .expect("answered in time");
    assert!(
        outcome.is_err(),
        "a plaintext client was served by a TLS port"
    );
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_gets_nothing() {
    let (sandbox, _) = tls_sandbox().await;
    let (other, _) = self_signed();
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        match connect(sandbox.url(), Some(other.as_bytes())).await {
            Err(e) => Err(format!("{e:?}")),
            Ok(channel) => report(&sandbox, channel)
                .await
                .map_err(|s| format!("{s:?}")),
        }
    })
    .await
    .expect("answered in time");
    let why = outcome.expect_err("a client trusting another certificate was served");
    // Refused by the TLS handshake, not by anything after it.
    assert!(
        why.to_lowercase().contains("certificate") || why.contains("Tls") || why.contains("tls"),
        "refused, but not for the certificate: {why}"
    );
}
