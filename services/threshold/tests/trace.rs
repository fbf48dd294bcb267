//! One trace from a handheld to a partner, in process on 127.0.0.1:0: the
//! handheld's call, the attempt it streams, the projection that counts it and
//! the outcome the partner receives share one trace id, recorded by the
//! OpenTelemetry SDK's in-memory exporter.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use threshold_analytics_service::Analytics;
use threshold_api::v1::analytics_service_client::AnalyticsServiceClient;
use threshold_api::v1::handheld_event::Report;
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::manifest_service_client::ManifestServiceClient;
use threshold_api::v1::outcome_service_client::OutcomeServiceClient;
use threshold_api::v1::{
    AttemptFailedReport, AttemptsReportRequest, HandheldEvent, SubscribeOutcomesRequest,
};
use threshold_domain::country::timestamp;
use threshold_domain::{EventId, pb};
use threshold_handheld_service::Handhelds;
use threshold_log::{EmbeddedLog, EmbeddedOptions, EventLog, Metered};
use threshold_manifest_service::{Manifests, client};
use threshold_outcome_service::Outcomes;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt;

const MANIFEST: &str = "parcel_id,partner_id,country,depot_id,delivery_date,address,postal_code,city,latitude,longitude,service,weight_kg,window_start,window_end
SE-T1,nordshop,SE,STO-1,2026-11-23,Gatan 1,111 51,Stockholm,59.33,18.06,doorstep,1,,
";

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

    let dir = tempfile::tempdir().expect("dir");
    let embedded =
        Arc::new(EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).expect("log"));
    let log: Arc<dyn EventLog> = Arc::new(Metered::new(embedded));
    threshold_auth::LocalTokens::ensure(dir.path()).expect("credentials");
    let tokens = threshold_auth::LocalTokens::load(dir.path()).expect("tokens");
    let token = threshold_auth::Credentials::add(
        dir.path(),
        "nordshop",
        threshold_auth::Role::Partner,
        "nordshop",
    )
    .expect("token");
    let as_role = |channel: &Channel, role| tokens.channel(channel.clone(), role).expect("token");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = Server::builder()
        .trace_fn(threshold_telemetry::server_span)
        .layer(threshold_auth::AuthLayer::new(
            threshold_auth::Authenticator::new(dir.path()),
        ))
        .add_service(
            Manifests::new(
                Arc::clone(&log),
                Arc::new(threshold_privacy::Vault::open(dir.path()).expect("vault")),
            )
            .into_server(),
        )
        .add_service(Handhelds::new(Arc::clone(&log)).into_server())
        .add_service(Analytics::start(Arc::clone(&log)).into_server())
        .add_service(Outcomes::new(Arc::clone(&log)).into_server());
    tokio::spawn(async move {
        router
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .expect("server");
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    client::load(
        &mut ManifestServiceClient::new(as_role(&channel, threshold_auth::Role::Planner)),
        "day.csv",
        std::io::Cursor::new(MANIFEST.as_bytes().to_vec()),
        |r| panic!("unexpected rejection {r:?}"),
    )
    .await
    .expect("load");

    // The partner follows its outcomes.
    let mut subscribe = tonic::Request::new(SubscribeOutcomesRequest { from_cursor: 0 });
    subscribe.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    let mut outcomes =
        OutcomeServiceClient::new(threshold_auth::authed(channel.clone(), None).expect("channel"))
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
        event_id: EventId::new().to_string(),
        device_id: "hh-1".into(),
        sequence: 1,
        parcel_id: "SE-T1".into(),
        driver_id: "drv-1".into(),
        route_id: String::new(),
        occurred_at: Some(timestamp(chrono::Utc::now())),
        report: Some(Report::Failed(AttemptFailedReport {
            reason: pb::FailureReason::NotHome as i32,
            note: String::new(),
        })),
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
    AnalyticsServiceClient::new(as_role(&channel, threshold_auth::Role::Analyst))
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
