//! One trace from a handheld to a partner, through the production server
//! in process on 127.0.0.1:0: the handheld's call, the attempt it streams,
//! the projection that counts it and the outcome the partner receives share
//! one trace id, recorded by the OpenTelemetry SDK's in-memory exporter.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use threshold_api::v1::analytics_service_client::AnalyticsServiceClient;
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::outcome_service_client::OutcomeServiceClient;
use threshold_api::v1::{AttemptsReportRequest, HandheldEvent, SubscribeOutcomesRequest};
use threshold_testkit::Sandbox;
use threshold_testkit::fixtures::{handheld_event, load_manifest, manifest, not_home, planned};
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "current_thread")]
async fn a_handheld_attempt_its_projection_and_the_partners_outcome_share_one_trace() {
    // Spans of this thread (every task of this runtime) go to memory.
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _installed = tracing::subscriber::set_default(subscriber);

    let server = Sandbox::start().await;
    let token = server.mint("nordshop", threshold_auth::Role::Partner, "nordshop");
    let channel = server.channel();
    let tokens = server.tokens();
    load_manifest(
        server.planner(),
        "day.csv",
        &manifest(
            "SE-T1,nordshop,SE,STO-1,2026-11-23,Gatan 1,111 51,Stockholm,59.33,18.06,doorstep,1,,\n",
        ),
    )
    .await;
    // On the route of the handheld event's driver.
    planned(server.log().as_ref(), "r-1", "drv-1", &["SE-T1"]).await;

    // The partner follows its outcomes.
    let mut subscribe = tonic::Request::new(SubscribeOutcomesRequest { from_cursor: 0 });
    subscribe.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    let mut outcomes = OutcomeServiceClient::new(server.unauthenticated())
        .subscribe(subscribe)
        .await
        .expect("subscribe")
        .into_inner();

    // The handheld's call, in its own span, with trace context on the wire.
    let handheld = tracing::info_span!("handheld.client");
    let trace_id = {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        handheld.context().span().span_context().trace_id()
    };
    let event = HandheldEvent {
        sequence: 1,
        ..handheld_event("SE-T1", not_home())
    };
    let position = async {
        let mut client = HandheldServiceClient::with_interceptor(
            channel.clone(),
            threshold_telemetry::TraceContext,
        );
        let mut request = tonic::Request::new(tokio_stream::iter(vec![event]));
        let bearer = format!(
            "Bearer {}",
            tokens.token(threshold_auth::Role::Handheld).expect("token")
        );
        request
            .metadata_mut()
            .insert("authorization", bearer.parse().expect("ascii"));
        let mut acks = client
            .stream_attempts(request)
            .await
            .expect("stream")
            .into_inner();
        acks.message()
            .await
            .expect("ack")
            .expect("one ack")
            .position
    }
    .instrument(handheld.clone())
    .await;
    assert!(position > 0);

    let outcome = tokio::time::timeout(Duration::from_secs(10), outcomes.message())
        .await
        .expect("an outcome in time")
        .expect("stream")
        .expect("outcome");
    assert_eq!(outcome.parcel_id, "SE-T1");
    assert!(
        outcome.traceparent.contains(&trace_id.to_string()),
        "the partner can continue trace {trace_id}: {}",
        outcome.traceparent
    );
    // The analysts' projection has counted it.
    AnalyticsServiceClient::new(server.analyst())
        .attempts_report(AttemptsReportRequest {
            by: "country".into(),
            at_least_position: position,
            ..AttemptsReportRequest::default()
        })
        .await
        .expect("report");
    drop(handheld);

    provider.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("spans");
    let in_trace = |name: &str| {
        spans
            .iter()
            .filter(|s| s.name == name && s.span_context.trace_id() == trace_id)
            .count()
    };
    assert_eq!(in_trace("handheld.client"), 1);
    // The server's span, named after the RPC, continues the call.
    assert_eq!(in_trace("threshold.v1.HandheldService/StreamAttempts"), 1);
    assert_eq!(in_trace("handheld.attempt"), 1);
    assert!(
        in_trace("projection.apply") >= 1,
        "the projection counts it in the trace"
    );
    assert_eq!(in_trace("outcome.deliver"), 1);
    // And nothing else was put in that trace by mistake: the manifest load
    // had its own.
    assert!(
        spans
            .iter()
            .any(|s| s.name == "threshold.v1.ManifestService/LoadManifest"
                && s.span_context.trace_id() != trace_id)
    );
}
