//! Deliveries to real receivers on 127.0.0.1, verified with the
//! `standardwebhooks` crate, through faults, restarts, replays and
//! rotations; and what a partner may do to another partner's endpoints.

mod receiver;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone as _, Utc};
use receiver::{Fault, Faults, Receiver};
use threshold_domain::{Country, DomainEvent, EventId, ParcelId, StreamId, pb};
use threshold_log::{EmbeddedLog, EmbeddedOptions, EventLog, ExpectedVersion, NewEvent};
use threshold_webhook_service::{
    Error, Options, Policy, Schedule, Start, State, Verdict, Webhooks,
};

use pb::parcel_event::Event as E;

/// A request is given up on after this long (long enough that a loaded
/// machine does not time out an answer that was not meant to); a timeout
/// fault holds longer.
const TIMEOUT: Duration = Duration::from_secs(1);

fn options() -> Options {
    Options {
        policy: Policy {
            allow_private: true,
        },
        timeout: TIMEOUT,
        // The standard schedule, 10 000 times faster: 5 s is 0.5 ms, 5 min 30 ms.
        schedule: Schedule::accelerated(10_000),
    }
}

struct Day {
    _dir: tempfile::TempDir,
    log: Arc<dyn EventLog>,
    store: std::path::PathBuf,
}

fn day() -> Day {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(dir.path().join("log"), EmbeddedOptions::default()).expect("log");
    let store = dir.path().join("webhooks.sqlite");
    Day {
        _dir: dir,
        log: Arc::new(log),
        store,
    }
}

/// Appends `event` to `parcel`'s stream for `tenant`; its id.
async fn append(log: &dyn EventLog, tenant: &str, parcel: &str, event: E, minute: u32) -> String {
    let id = EventId::new();
    let at = Utc
        .with_ymd_and_hms(2026, 11, 23, 8, 0, 0)
        .single()
        .expect("time")
        + chrono::Duration::minutes(i64::from(minute));
    let e = NewEvent::new(id, &DomainEvent::Parcel(event), at)
        .country(Country::Se)
        .tenant(tenant);
    let stream = StreamId::parcel(&ParcelId::new(parcel).expect("parcel"));
    log.append(&stream, ExpectedVersion::Any, vec![e])
        .await
        .expect("append");
    id.to_string()
}

fn out() -> E {
    E::OutForDelivery(pb::ParcelOutForDelivery {
        route_id: "r-secret".into(),
        driver_id: "driver-secret".into(),
    })
}

fn failed(attempt: u32) -> E {
    E::AttemptFailed(pb::AttemptFailed {
        attempt,
        reason: pb::FailureReason::NotHome as i32,
        driver_id: "driver-secret".into(),
        device_id: "device-secret".into(),
        note: "note-secret".into(),
        sealed_note: None,
    })
}

fn delivered(attempt: u32, method: pb::DeliveryMethod) -> E {
    E::Delivered(pb::ParcelDelivered {
        attempt,
        method: method as i32,
        driver_id: "driver-secret".into(),
        device_id: "device-secret".into(),
        grant_id: "grant-secret".into(),
        position: None,
        sealed_position: None,
    })
}

fn returned() -> E {
    E::Returned(pb::ParcelReturned {
        reason: "not collected".into(),
        attempts: 2,
    })
}

/// A parcel's day: its events, by the parcel's number.
fn story(i: usize) -> Vec<E> {
    match i % 3 {
        0 => vec![
            out(),
            failed(1),
            out(),
            delivered(2, pb::DeliveryMethod::Doorstep),
        ],
        1 => vec![out(), delivered(1, pb::DeliveryMethod::InHome)],
        _ => vec![out(), failed(1), failed(2), returned()],
    }
}

/// Appends parcels `range` of each tenant's day, interleaved across
/// tenants and parcels as a day's handhelds would; returns each tenant's
/// outcome ids in log order with their parcel.
async fn append_day(
    log: &dyn EventLog,
    tenants: &[&str],
    range: std::ops::Range<usize>,
) -> HashMap<String, Vec<(String, String)>> {
    let mut expected: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let stories: Vec<(String, String, Vec<E>)> = tenants
        .iter()
        .flat_map(|t| {
            range.clone().map(move |i| {
                (
                    (*t).to_owned(),
                    format!("SE-{}-{i:04}", &t[..3].to_uppercase()),
                    story(i),
                )
            })
        })
        .collect();
    let longest = stories.iter().map(|s| s.2.len()).max().unwrap_or(0);
    for step in 0..longest {
        for (tenant, parcel, events) in &stories {
            if let Some(e) = events.get(step) {
                let id = append(
                    log,
                    tenant,
                    parcel,
                    e.clone(),
                    u32::try_from(step).expect("step") * 30,
                )
                .await;
                expected
                    .entry(tenant.clone())
                    .or_default()
                    .push((id, parcel.clone()));
            }
        }
    }
    expected
}

async fn until(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hash(id: &str) -> u64 {
    id.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(1099511628211)
    })
}

/// The day's faults: about half the events fail once or twice, in every
/// way the issue names.
fn faulty() -> Faults {
    Arc::new(|id: &str, n: u32| match (hash(id) % 10, n) {
        (0, 1) => Fault::Status(500),
        (1, 1) => Fault::Timeout,
        (2, 1) => Fault::Reset,
        (3, 1) => Fault::Status(503),
        (3, 2) => Fault::Status(500),
        (4, 1) => Fault::Status(429),
        (5, 1 | 2) => Fault::Reset,
        _ => Fault::None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_day_reaches_each_partner_once_per_event_in_order_and_matches_the_attempts() {
    let d = day();
    let tenants = ["nordshop", "fjallbutik", "kajakhus"];
    // Half the day before the endpoints exist (caught up from the start),
    // half after (delivered live).
    let mut expected = append_day(d.log.as_ref(), &tenants, 0..8).await;
    let hooks = Webhooks::open(Arc::clone(&d.log), &d.store, options()).expect("open");
    hooks.start().await.expect("start");
    let mut receivers = HashMap::new();
    for t in tenants {
        let r = Receiver::start(faulty(), TIMEOUT * 2, None).await;
        let (ep, secret) = hooks
            .add(t, &r.url(), &[], Start::After(0))
            .await
            .expect("add");
        r.secrets.lock().expect("secrets").push(secret.expose());
        receivers.insert(t, (r, ep));
    }
    for (t, ids) in append_day(d.log.as_ref(), &tenants, 8..16).await {
        expected.entry(t).or_default().extend(ids);
    }
    for t in tenants {
        let (_, ep) = &receivers[t];
        let want = expected[t].len();
        // Done when the attempts report has every event delivered: a
        // receiver may accept an event whose answer the sender never saw.
        until(
            &format!("{t}'s deliveries"),
            Duration::from_secs(60),
            || delivered_count(&hooks, t, &ep.id) >= want,
        )
        .await;
    }
    let mut tried: HashMap<String, usize> = HashMap::new();
    for t in tenants {
        let (r, ep) = &receivers[t];
        let want: Vec<String> = expected[t].iter().map(|(id, _)| id.clone()).collect();
        // Each event once, in log order (so in order per parcel).
        assert_eq!(r.accepted_ids(), want, "{t}: accepted deliveries");
        let attempts: Vec<_> = hooks
            .attempts(t, &ep.id, 0, 1000)
            .expect("attempts")
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        let seen = r.seen();
        assert_eq!(seen.unverified, 0, "{t}: every signature verifies");
        for (k, v) in &seen.answered {
            *tried.entry(k.clone()).or_default() += v;
        }
        // The attempts report counts what the receiver saw.
        assert_eq!(
            attempts.len(),
            seen.requests.len(),
            "{t}: one attempt per request"
        );
        let delivered: Vec<&str> = attempts
            .iter()
            .filter(|a| a.verdict == Verdict::Delivered)
            .map(|a| a.event_id.as_str())
            .collect();
        assert_eq!(
            delivered,
            want.iter().map(String::as_str).collect::<Vec<_>>(),
            "{t}: delivered attempts"
        );
        let by_status = |code: u16| attempts.iter().filter(|a| a.status == Some(code)).count();
        // A fault the ids' hashes never picked was answered no times.
        let answered = |kind: &str| seen.answered.get(kind).copied().unwrap_or(0);
        assert_eq!(by_status(200), answered("200"), "{t}: 200s");
        assert_eq!(by_status(500), answered("500"), "{t}: 500s");
        assert_eq!(by_status(503), answered("503"), "{t}: 503s");
        assert_eq!(by_status(429), answered("429"), "{t}: 429s");
        let timeouts = attempts
            .iter()
            .filter(|a| a.status.is_none() && a.error.starts_with("timeout"))
            .count();
        assert_eq!(timeouts, answered("timeout"), "{t}: timeouts");
        let resets = attempts
            .iter()
            .filter(|a| a.status.is_none() && !a.error.starts_with("timeout"))
            .count();
        assert_eq!(resets, answered("reset"), "{t}: resets");
        let mut per_id: HashMap<&str, usize> = HashMap::new();
        for id in &seen.requests {
            *per_id.entry(id.as_str()).or_default() += 1;
        }
        for a in &attempts {
            assert!(
                a.attempt as usize <= per_id[a.event_id.as_str()],
                "{t}: attempt numbers count requests"
            );
        }
        assert!(
            attempts
                .iter()
                .all(|a| a.status != Some(200) || a.excerpt == "answered 200")
        );
        // Nothing of another partner's, nothing of drivers, devices, grants, notes, routes.
        for a in &seen.accepted {
            let text = a.body.to_string();
            assert!(!text.contains("secret"), "{t}: redacted: {text}");
            assert!(
                a.body["data"]["parcel_id"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(&format!("SE-{}", &t[..3].to_uppercase())))
            );
        }
    }
    // Over the day, every kind of fault happened.
    for fault in ["200", "500", "503", "429", "timeout", "reset"] {
        assert!(
            tried.get(fault).copied().unwrap_or(0) > 0,
            "no {fault} was tried: {tried:?}"
        );
    }
    hooks.stop().await;
}

fn delivered_count(hooks: &Webhooks, tenant: &str, id: &str) -> usize {
    hooks
        .attempts(tenant, id, 0, 1000)
        .expect("attempts")
        .iter()
        .filter(|(_, a)| a.verdict == Verdict::Delivered)
        .count()
}

async fn wait_attempts(
    hooks: &Webhooks,
    tenant: &str,
    id: &str,
    want: usize,
) -> Vec<threshold_webhook_service::Attempt> {
    let mut got = Vec::new();
    until("the attempts report", Duration::from_secs(10), || {
        got = hooks
            .attempts(tenant, id, 0, 1000)
            .expect("attempts")
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        got.len() >= want
    })
    .await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_speak_tracking_statuses_and_match_the_schema() {
    let d = day();
    let hooks = Webhooks::open(Arc::clone(&d.log), &d.store, options()).expect("open");
    let r = Receiver::start(Arc::new(|_: &str, _| Fault::None), TIMEOUT, None).await;
    let (_, secret) = hooks
        .add("nordshop", &r.url(), &[], Start::Now)
        .await
        .expect("add");
    r.secrets.lock().expect("secrets").push(secret.expose());
    let expected = append_day(d.log.as_ref(), &["nordshop"], 0..3).await;
    let rescheduled = E::Rescheduled(pb::ParcelRescheduled {
        delivery_date: Some(pb::LocalDate {
            year: 2026,
            month: 11,
            day: 24,
        }),
        reason: "reason-secret".into(),
    });
    append(d.log.as_ref(), "nordshop", "SE-NOR-0009", rescheduled, 600).await;
    let want = expected["nordshop"].len() + 1;
    until("deliveries", Duration::from_secs(20), || {
        r.seen().accepted.len() >= want
    })
    .await;
    let bodies: Vec<serde_json::Value> = r.seen().accepted.iter().map(|a| a.body.clone()).collect();
    let statuses: Vec<&str> = bodies
        .iter()
        .map(|b| b["data"]["status"].as_str().expect("status"))
        .collect();
    assert_eq!(
        statuses,
        [
            // Interleaved by step across the three parcels.
            "out_for_delivery",
            "out_for_delivery",
            "out_for_delivery",
            "delivery_attempted",
            "delivered_in_home",
            "delivery_attempted",
            "out_for_delivery",
            "delivery_attempted",
            "delivered",
            "returned_to_sender",
            "delivery_rescheduled",
        ]
    );
    let later = &bodies[10]["data"];
    assert_eq!(bodies[10]["type"], "parcel.rescheduled");
    assert_eq!(later["next_attempt_date"], "2026-11-24");
    assert_eq!(later["bizStep"], "holding");
    let in_home = &bodies[4]["data"];
    assert_eq!(in_home["method"], "in_home");
    assert_eq!(in_home["bizStep"], "receiving");
    assert_eq!(in_home["attempt"], 1);
    // The grant the handheld named was never issued, let alone redeemed
    // for this parcel: there is no receipt, and the proof says so.
    assert!(in_home["proof_of_delivery"].is_object());
    assert!(in_home["proof_of_delivery"]["receipt_chain_head"].is_null());
    assert!(in_home["proof_of_delivery"]["receipt_chain_version"].is_null());
    assert!(bodies[8]["data"]["proof_of_delivery"].is_null(), "doorstep");
    // 08:30 UTC on 23 November is 09:30 in Stockholm (CET).
    assert_eq!(in_home["local_time"], "2026-11-23T09:30:00+01:00");
    assert_eq!(in_home["occurred_at"], "2026-11-23T08:30:00Z");
    let failed = &bodies[3]["data"];
    assert_eq!(failed["failure_reason"], "not_home");
    assert_eq!(failed["disposition"], "in_transit");
    assert_eq!(bodies[9]["type"], "parcel.returned");
    assert_eq!(bodies[9]["data"]["disposition"], "returned");
    assert!(
        bodies.iter().all(|b| !b.to_string().contains("secret")),
        "no route, driver, device, grant, note or reschedule reason"
    );
    for (b, (id, _)) in bodies.iter().zip(&expected["nordshop"]) {
        assert_eq!(
            b["data"]["event_id"],
            id.as_str(),
            "the body names its webhook-id"
        );
    }
    // Every body carries the schema's required fields and no field the
    // schema does not describe.
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/webhooks/outcome.schema.json"
        ))
        .expect("schema file"),
    )
    .expect("schema json");
    let data_schema = &schema["properties"]["data"];
    for b in &bodies {
        check_object(b, &schema);
        check_object(&b["data"], data_schema);
        let status = b["data"]["status"].as_str().expect("status");
        assert!(
            data_schema["properties"]["status"]["enum"]
                .as_array()
                .expect("status enum")
                .iter()
                .any(|s| s == status),
            "{status} in the schema"
        );
    }
}

fn check_object(value: &serde_json::Value, schema: &serde_json::Value) {
    let obj = value.as_object().expect("object");
    let props = schema["properties"].as_object().expect("properties");
    for k in obj.keys() {
        assert!(props.contains_key(k), "{k} is not in the schema");
    }
    for k in schema["required"].as_array().expect("required") {
        assert!(
            obj.contains_key(k.as_str().expect("name")),
            "{k} is required"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_process_resumes_from_the_durable_position_and_loses_nothing() {
    let d = day();
    let expected = append_day(d.log.as_ref(), &["nordshop"], 0..30).await;
    let want: Vec<String> = expected["nordshop"]
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    // Slow answers so the first process is stopped part way.
    let r = Receiver::start(Arc::new(|_: &str, _| Fault::None), TIMEOUT, None).await;
    let ep_id;
    {
        let hooks = Webhooks::open(Arc::clone(&d.log), &d.store, options()).expect("open");
        let (ep, secret) = hooks
            .add("nordshop", &r.url(), &[], Start::After(0))
            .await
            .expect("add");
        r.secrets.lock().expect("secrets").push(secret.expose());
        ep_id = ep.id;
        until("some deliveries", Duration::from_secs(20), || {
            r.seen().accepted.len() >= 10
        })
        .await;
        hooks.stop().await;
    }
    let before = r.seen().accepted.len();
    assert!(
        before < want.len(),
        "stopped part way ({before} of {})",
        want.len()
    );
    let hooks = Webhooks::open(Arc::clone(&d.log), &d.store, options()).expect("reopen");
    assert!(
        hooks.get("nordshop", &ep_id).expect("endpoint").cursor > 0,
        "the position is durable"
    );
    hooks.start().await.expect("start");
    until("the rest", Duration::from_secs(20), || {
        r.seen().accepted.len() >= want.len()
    })
    .await;
    assert_eq!(r.accepted_ids(), want);
    // At most the event in flight at the stop was sent twice.
    let requests = r.seen().requests.len();
    assert!(
        requests <= want.len() + 1,
        "{requests} requests for {} events",
        want.len()
    );
    hooks.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_endpoint_with_an_alert_and_others_carry_on() {
    let d = day();
    let hooks = Webhooks::open(Arc::clone(&d.log), &d.store, options()).expect("open");
    let gone = Receiver::start(Arc::new(|_: &str, _| Fault::Status(410)), TIMEOUT, None).await;
    let fine = Receiver::start(Arc::new(|_: &str, _| Fault::None), TIMEOUT, None).await;
    let (g, gs) = hooks
        .add("nordshop", &gone.url(), &[], Start::Now)
        .await
        .expect("add");
    let (_, fs) = hooks
        .add("fjallbutik", &fine.url(), &[], Start::Now)
        .await
        .expect("add");
    gone.secrets.lock().expect("s").push(gs.expose());
    fine.secrets.lock().expect("s").push(fs.expose());
    let expected = append_day(d.log.as_ref(), &["nordshop", "fjallbutik"], 0..3).await;
    until(
        "the other partner's deliveries",
        Duration::from_secs(20),
        || fine.seen().accepted.len() >= expected["fjallbutik"].len(),
    )
    .await;
    until("the endpoint disabled", Duration::from_secs(20), || {
        hooks.get("nordshop", &g.id).expect("ep").state == State::Disabled
    })
    .await;
    assert_eq!(gone.seen().requests.len(), 1, "no retry after 410");
    let attempts = hooks.attempts("nordshop", &g.id, 0, 10).expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].1.verdict, Verdict::Gone);
    let alerts = hooks.alerts(Some("nordshop"), 0, 10).expect("alerts");
    assert_eq!(alerts.len(), 1);
    assert!(
        alerts[0].1.message.contains("410"),
        "{}",
        alerts[0].1.message
    );
    assert!(
        hooks
            .alerts(Some("nordshop"), alerts[0].0, 10)
            .expect("alerts after the last")
            .is_empty()
    );
    assert!(
        hooks
            .alerts(Some("fjallbutik"), 0, 10)
            .expect("alerts")
            .is_empty()
    );
    assert_eq!(
        hooks.alerts(None, 0, 10).expect("carrier's alerts").len(),
        1
    );
    hooks.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_past_the_schedule_disables_then_resume_delivers_what_waited() {
    let d = day();
    let mut opts = options();
    opts.schedule = Schedule {
        delays: vec![Duration::from_millis(1); 3],
        jitter: 0.0,
        divisor: 1,
    };
    let hooks = Webhooks::open(Arc::clone(&d.log), &d.store, opts).expect("open");
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h2 = Arc::clone(&healthy);
    let r = Receiver::start(
        Arc::new(move |_: &str, _| {
            if h2.load(std::sync::atomic::Ordering::SeqCst) {
                Fault::None
            } else {
                Fault::Status(500)
            }
        }),
        TIMEOUT,
        None,
    )
    .await;
    let (ep, s) = hooks
        .add("nordshop", &r.url(), &[], Start::Now)
        .await
        .expect("add");
    r.secrets.lock().expect("s").push(s.expose());
    let expected = append_day(d.log.as_ref(), &["nordshop"], 0..2).await;
    until("disabled", Duration::from_secs(20), || {
        hooks.get("nordshop", &ep.id).expect("ep").state == State::Disabled
    })
    .await;
    let attempts = hooks
        .attempts("nordshop", &ep.id, 0, 100)
        .expect("attempts");
    assert_eq!(attempts.len(), 4, "the first try and three retries");
    assert_eq!(attempts[3].1.verdict, Verdict::Exhausted);
    assert!(
        hooks.alerts(Some("nordshop"), 0, 10).expect("alerts")[0]
            .1
            .message
            .contains("HTTP 500")
    );
    // Fixed: the partner resumes and everything that waited arrives.
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    hooks.resume("nordshop", &ep.id).await.expect("resume");
    let want: Vec<String> = expected["nordshop"]
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    until("the rest", Duration::from_secs(20), || {
        r.seen().accepted.len() >= want.len()
    })
    .await;
    assert_eq!(r.accepted_ids(), want);
    hooks.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_redelivers_one_partners_range_only() {
    let d = day();
    let hooks = Webhooks::open(Arc::clone(&d.log), &d.store, options()).expect("open");
    let a = Receiver::start(Arc::new(|_: &str, _| Fault::None), TIMEOUT, None).await;
    let b = Receiver::start(Arc::new(|_: &str, _| Fault::None), TIMEOUT, None).await;
    let (ea, sa) = hooks
        .add("nordshop", &a.url(), &[], Start::Now)
        .await
        .expect("add");
    let (_, sb) = hooks
        .add("fjallbutik", &b.url(), &[], Start::Now)
        .await
        .expect("add");
    a.secrets.lock().expect("s").push(sa.expose());
    b.secrets.lock().expect("s").push(sb.expose());
    let since = Utc::now();
    let expected = append_day(d.log.as_ref(), &["nordshop", "fjallbutik"], 0..3).await;
    let (na, nb) = (expected["nordshop"].len(), expected["fjallbutik"].len());
    until("deliveries", Duration::from_secs(20), || {
        a.seen().requests.len() >= na && b.seen().requests.len() >= nb
    })
    .await;
    // Another partner cannot replay it.
    assert!(matches!(
        hooks.replay_from("fjallbutik", &ea.id, 0).await,
        Err(Error::NotFound(_))
    ));
    hooks
        .replay_since("nordshop", &ea.id, since)
        .await
        .expect("replay");
    until("redeliveries", Duration::from_secs(20), || {
        a.seen().requests.len() >= 2 * na
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    {
        let seen = a.seen();
        assert_eq!(seen.requests.len(), 2 * na, "each event once more");
        assert_eq!(
            seen.requests[..na],
            seen.requests[na..],
            "the same webhook-ids, in the same order"
        );
        assert_eq!(seen.accepted.len(), na, "deduplicated by webhook-id");
    }
    assert_eq!(
        b.seen().requests.len(),
        nb,
        "the other partner is not replayed to"
    );
    // A replay from a cursor: only the events after it.
    let third = expected["nordshop"][2].0.clone();
    let before_third = hooks
        .attempts("nordshop", &ea.id, 0, 1000)
        .expect("attempts")
        .iter()
        .find(|(_, x)| x.event_id == third)
        .map(|(_, x)| x.position - 1)
        .expect("third");
    assert_eq!(
        hooks
            .replay_from("nordshop", &ea.id, before_third)
            .await
            .expect("replay"),
        before_third
    );
    until("redeliveries", Duration::from_secs(20), || {
        a.seen().requests.len() >= 3 * na - 2
    })
    .await;
    assert_eq!(a.seen().requests[2 * na], third);
    hooks.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_rotation_old_and_new_secrets_both_verify() {
    let d = day();
    let hooks = Webhooks::open(Arc::clone(&d.log), &d.store, options()).expect("open");
    let r = Receiver::start(Arc::new(|_: &str, _| Fault::None), TIMEOUT, None).await;
    let (ep, old) = hooks
        .add("nordshop", &r.url(), &[], Start::Now)
        .await
        .expect("add");
    let new = hooks
        .rotate("nordshop", &ep.id, Duration::from_secs(3600))
        .expect("rotate");
    assert_ne!(new, old);
    assert!(matches!(
        hooks.rotate("fjallbutik", &ep.id, Duration::from_secs(1)),
        Err(Error::NotFound(_))
    ));
    r.secrets.lock().expect("s").push(new.expose());
    // Every delivery of the first story in before the next rotation, so
    // none signed before it is taken for one signed after.
    let first = append_day(d.log.as_ref(), &["nordshop"], 0..1).await["nordshop"].len();
    until(
        "the first story's deliveries",
        Duration::from_secs(20),
        || r.seen().accepted.len() >= first,
    )
    .await;
    let verifies = |secret: &threshold_webhook_service::Secret| {
        let seen = r.seen();
        let (headers, body) = seen.last.clone().expect("a request");
        standardwebhooks::Webhook::new(&secret.expose())
            .and_then(|w| w.verify(&body, &headers))
            .is_ok()
    };
    assert!(verifies(&old), "the old secret verifies during the overlap");
    assert!(verifies(&new), "the new secret verifies");
    assert_eq!(r.seen().signatures[0].split(' ').count(), 2);
    // Rotated again with no overlap: only the newest signs.
    let newest = hooks
        .rotate("nordshop", &ep.id, Duration::ZERO)
        .expect("rotate");
    r.secrets.lock().expect("s").push(newest.expose());
    let before = r.seen().accepted.len();
    let second = append_day(d.log.as_ref(), &["nordshop"], 1..2).await["nordshop"].len();
    until(
        "the second story's deliveries",
        Duration::from_secs(20),
        || r.seen().accepted.len() >= before + second,
    )
    .await;
    assert!(verifies(&newest));
    assert!(!verifies(&new), "expired with no overlap");
    assert!(!verifies(&old));
    assert_eq!(r.seen().unverified, 0);
    hooks.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_cannot_touch_another_partners_endpoints() {
    let d = day();
    let hooks = Webhooks::open(Arc::clone(&d.log), &d.store, options()).expect("open");
    let (ep, _) = hooks
        .add("nordshop", "https://shop.example/hooks", &[], Start::Now)
        .await
        .expect("add");
    let other = "fjallbutik";
    assert!(matches!(hooks.get(other, &ep.id), Err(Error::NotFound(_))));
    assert!(matches!(
        hooks.pause(other, &ep.id).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        hooks.resume(other, &ep.id).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        hooks.delete(other, &ep.id).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        hooks.attempts(other, &ep.id, 0, 10),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        hooks.replay_since(other, &ep.id, Utc::now()).await,
        Err(Error::NotFound(_))
    ));
    assert!(hooks.list(other).expect("list").is_empty());
    assert_eq!(
        hooks.get("nordshop", &ep.id).expect("own").state,
        State::Active
    );
    assert!(matches!(
        hooks.add("*", "https://a.example/", &[], Start::Now).await,
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        hooks
            .add(
                "nordshop",
                "https://a.example/",
                &["parcel.everything".into()],
                Start::Now
            )
            .await,
        Err(Error::Invalid(_))
    ));
    for _ in 1..threshold_webhook_service::store::MAX_ENDPOINTS_PER_TENANT {
        hooks
            .add("nordshop", "https://a.example/", &[], Start::Now)
            .await
            .expect("within the bound");
    }
    assert!(matches!(
        hooks
            .add("nordshop", "https://a.example/", &[], Start::Now)
            .await,
        Err(Error::Exhausted(_))
    ));
    hooks.pause("nordshop", &ep.id).await.expect("pause");
    assert_eq!(
        hooks.get("nordshop", &ep.id).expect("own").state,
        State::Paused
    );
    hooks.delete("nordshop", &ep.id).await.expect("delete");
    assert!(matches!(
        hooks.get("nordshop", &ep.id),
        Err(Error::NotFound(_))
    ));
    hooks.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_cannot_reach_private_addresses_or_follow_redirects() {
    let d = day();
    // The carrier's default: no private, loopback or link-local address.
    let strict = Webhooks::open(
        Arc::clone(&d.log),
        d.store.with_extension("strict"),
        Options::default(),
    )
    .expect("open");
    for url in [
        "http://127.0.0.1:9/hooks",
        "https://127.0.0.1:9/hooks",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.8/",
        "https://[::1]/",
        "https://[::ffff:192.168.0.1]/",
        "http://shop.example/",
    ] {
        assert!(
            matches!(
                strict.add("nordshop", url, &[], Start::Now).await,
                Err(Error::Refused(_) | Error::Invalid(_))
            ),
            "{url}"
        );
    }
    // A name is checked where it resolves, at every connection: `localhost`
    // passes the URL check and is refused when it resolves to loopback.
    let r = Receiver::start(Arc::new(|_: &str, _| Fault::None), TIMEOUT, None).await;
    let named = format!("http://localhost:{}/hooks", r.addr.port());
    let (ep, _) = strict
        .add("nordshop", &named, &[], Start::Now)
        .await
        .expect("a public-looking name");
    append_day(d.log.as_ref(), &["nordshop"], 0..1).await;
    let attempts = wait_attempts(&strict, "nordshop", &ep.id, 1).await;
    assert!(
        attempts[0]
            .error
            .contains("localhost has no address endpoints may reach"),
        "{:?}",
        attempts[0]
    );
    // The partner is not told where the name resolved.
    for address in ["127.0.0.1", "::1"] {
        assert!(!attempts[0].error.contains(address), "{:?}", attempts[0]);
    }
    assert!(
        r.seen().requests.is_empty(),
        "nothing reached the loopback receiver"
    );
    strict.stop().await;

    // A redirect is not followed, even to an allowed address.
    let hooks = Webhooks::open(Arc::clone(&d.log), &d.store, options()).expect("open");
    let target = Receiver::start(Arc::new(|_: &str, _| Fault::None), TIMEOUT, None).await;
    let redirecting = Receiver::start(
        Arc::new(|_: &str, n| if n <= 2 { Fault::Redirect } else { Fault::None }),
        TIMEOUT,
        Some(target.url()),
    )
    .await;
    let (ep, s) = hooks
        .add("nordshop", &redirecting.url(), &[], Start::After(0))
        .await
        .expect("add");
    redirecting.secrets.lock().expect("s").push(s.expose());
    target.secrets.lock().expect("s").push(s.expose());
    until("delivery after redirects", Duration::from_secs(20), || {
        !redirecting.seen().accepted.is_empty()
    })
    .await;
    assert!(
        target.seen().requests.is_empty(),
        "the redirect was not followed"
    );
    let attempts = hooks.attempts("nordshop", &ep.id, 0, 10).expect("attempts");
    assert_eq!(attempts[0].1.status, Some(302));
    assert_eq!(attempts[0].1.verdict, Verdict::Retry);
    hooks.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_since_a_time_redelivers_what_was_recorded_from_then_on() {
    let d = day();
    let before = append_day(d.log.as_ref(), &["nordshop"], 0..5).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let since = Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = append_day(d.log.as_ref(), &["nordshop"], 5..9).await;
    let hooks = Webhooks::open(Arc::clone(&d.log), &d.store, options()).expect("open");
    hooks.start().await.expect("start");
    let r = Receiver::start(Arc::new(|_: &str, _| Fault::None), TIMEOUT, None).await;
    let (ep, secret) = hooks
        .add("nordshop", &r.url(), &[], Start::After(0))
        .await
        .expect("add");
    r.secrets.lock().expect("s").push(secret.expose());
    let (n, m) = (before["nordshop"].len(), after["nordshop"].len());
    assert!(n > 0 && m > 0);
    until("the day", Duration::from_secs(20), || {
        r.seen().requests.len() >= n + m
    })
    .await;
    hooks
        .replay_since("nordshop", &ep.id, since)
        .await
        .expect("replay");
    until("the replay", Duration::from_secs(20), || {
        r.seen().requests.len() >= n + 2 * m
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let want: Vec<String> = after["nordshop"].iter().map(|(id, _)| id.clone()).collect();
    {
        let seen = r.seen();
        assert_eq!(
            seen.requests[n + m..],
            want[..],
            "only what was recorded from `since` on, once more"
        );
    }
    hooks.stop().await;
}

/// Every byte of the registry's SQLite files (the database and its WAL).
fn registry_bytes(store: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let mut path = store.as_os_str().to_owned();
        path.push(suffix);
        if let Ok(bytes) = std::fs::read(&path) {
            all.extend(bytes);
        }
    }
    all
}

/// Whether `haystack` holds `secret` as configured (`whsec_…`), its base64
/// or its raw key bytes.
fn holds(haystack: &[u8], secret: &str) -> bool {
    use base64::Engine as _;
    let b64 = secret.strip_prefix("whsec_").expect("whsec_");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    [secret.as_bytes(), b64.as_bytes(), raw.as_slice()]
        .iter()
        .any(|needle| haystack.windows(needle.len()).any(|w| w == *needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_secrets_are_sealed_at_rest_with_the_vault_and_still_sign() {
    let d = day();
    let vault_dir = tempfile::tempdir().expect("vault dir");
    let vault = Arc::new(threshold_privacy::Vault::open(vault_dir.path()).expect("vault"));
    let r = Receiver::start(Arc::new(|_: &str, _| Fault::None), TIMEOUT, None).await;

    // Registered while the registry had no vault: stored as it is.
    let plain = Webhooks::open(Arc::clone(&d.log), &d.store, options()).expect("open");
    let (old, old_secret) = plain
        .add("nordshop", &r.url(), &[], Start::Now)
        .await
        .expect("add");
    plain.stop().await;
    drop(plain);
    assert!(
        holds(&registry_bytes(&d.store), &old_secret.expose()),
        "without a vault the secret is stored as it is"
    );

    // Opened with the vault: the old secret is sealed, new ones are too.
    let hooks = Webhooks::open_sealed(
        Arc::clone(&d.log),
        &d.store,
        options(),
        Some(Arc::clone(&vault)),
    )
    .expect("open sealed");
    hooks.start().await.expect("start");
    let (new, new_secret) = hooks
        .add("fjallbutik", &r.url(), &[], Start::Now)
        .await
        .expect("add");
    let rotated = hooks
        .rotate("fjallbutik", &new.id, Duration::from_secs(3600))
        .expect("rotate");
    let secrets = [old_secret.expose(), new_secret.expose(), rotated.expose()];
    // The receiver verifies each partner's deliveries with any of them.
    r.secrets
        .lock()
        .expect("secrets")
        .extend(secrets.iter().cloned());
    let expected = append_day(d.log.as_ref(), &["nordshop", "fjallbutik"], 0..2).await;
    let want = expected["nordshop"].len() + expected["fjallbutik"].len();
    until(
        "deliveries signed with sealed secrets",
        Duration::from_secs(20),
        || r.seen().accepted.len() >= want,
    )
    .await;
    assert_eq!(r.seen().unverified, 0);
    hooks.stop().await;
    drop(hooks);

    let bytes = registry_bytes(&d.store);
    for s in &secrets {
        assert!(
            !holds(&bytes, s),
            "a signing secret is in the registry's files"
        );
    }
    // Without the vault the registry cannot sign: what it holds is sealed.
    let store = threshold_webhook_service::store::Store::open(&d.store).expect("store");
    for id in [&old.id, &new.id] {
        let err = store
            .secrets(id, Utc::now())
            .expect_err("sealed without a vault");
        assert!(err.to_string().contains("vault"), "{err}");
    }
}

/// A delete racing a resume or a replay of the same endpoint leaves no
/// delivery running for an endpoint that is gone: however they interleave,
/// the endpoints delivered to are the active ones the registry holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_racing_a_resume_or_a_replay_leaves_no_delivery_behind() {
    let d = day();
    let hooks = Arc::new(Webhooks::open(Arc::clone(&d.log), &d.store, options()).expect("open"));
    let r = Receiver::start(Arc::new(|_: &str, _| Fault::None), TIMEOUT, None).await;
    for round in 0..60 {
        let (ep, _) = hooks
            .add("nordshop", &r.url(), &[], Start::Now)
            .await
            .expect("add");
        let (h1, h2) = (Arc::clone(&hooks), Arc::clone(&hooks));
        let id = ep.id.clone();
        let other = tokio::spawn(async move {
            if round % 2 == 0 {
                h2.resume("nordshop", &id).await.map(drop)
            } else {
                h2.replay_from("nordshop", &id, 0).await.map(drop)
            }
        });
        h1.delete("nordshop", &ep.id).await.expect("deleted");
        // Before or after the delete: done, or told the endpoint is gone.
        match other.await.expect("joined") {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(e) => panic!("round {round}: {e}"),
        }
        assert_eq!(hooks.list("nordshop").expect("list"), []);
        assert_eq!(hooks.delivering().await, 0, "round {round}");
    }
    hooks.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_whose_credentials_are_revoked_receives_nothing_more_until_one_is_added() {
    use threshold_auth::{Credential, CredentialStore as _, FileCredentials, Role};
    let d = day();
    let dir = tempfile::tempdir().expect("tempdir");
    let credentials = Arc::new(FileCredentials::new(dir.path()));
    let add = |name: &str, tenant: &str| {
        let (c, _) = Credential::new(name, Role::Partner, tenant).expect("credential");
        credentials.insert(c).expect("insert");
    };
    add("nordshop-api", "nordshop");
    add("fjallbutik-api", "fjallbutik");
    // The carrier's own credential of every partner keeps no partner's
    // endpoints delivering.
    add("local-partner", "*");
    let hooks = Webhooks::open(Arc::clone(&d.log), &d.store, options())
        .expect("open")
        .with_credentials(Arc::clone(&credentials) as _);
    let gone = Receiver::start(Arc::new(|_: &str, _| Fault::None), TIMEOUT, None).await;
    let other = Receiver::start(Arc::new(|_: &str, _| Fault::None), TIMEOUT, None).await;
    let (ep, s) = hooks
        .add("nordshop", &gone.url(), &[], Start::Now)
        .await
        .expect("add");
    gone.secrets.lock().expect("s").push(s.expose());
    let (_, s) = hooks
        .add("fjallbutik", &other.url(), &[], Start::Now)
        .await
        .expect("add");
    other.secrets.lock().expect("s").push(s.expose());
    let ids = |e: &HashMap<String, Vec<(String, String)>>, t: &str| -> Vec<String> {
        e[t].iter().map(|(id, _)| id.clone()).collect()
    };

    let before = append_day(d.log.as_ref(), &["nordshop", "fjallbutik"], 0..1).await;
    until("the first outcomes", Duration::from_secs(20), || {
        gone.seen().accepted.len() >= before["nordshop"].len()
    })
    .await;
    assert!(credentials.revoke("nordshop-api").await.expect("revoke"));
    let after = append_day(d.log.as_ref(), &["nordshop", "fjallbutik"], 1..2).await;
    let want_other = [ids(&before, "fjallbutik"), ids(&after, "fjallbutik")].concat();
    until(
        "the other partner's outcomes",
        Duration::from_secs(20),
        || other.seen().accepted.len() >= want_other.len(),
    )
    .await;
    until("the held alert", Duration::from_secs(20), || {
        hooks
            .alerts(Some("nordshop"), 0, 10)
            .expect("alerts")
            .iter()
            .any(|(_, a)| a.message.contains("holds no partner credential"))
    })
    .await;
    // Two more looks at the credentials: still nothing sent.
    tokio::time::sleep(3 * threshold_auth::STANDING_EVERY).await;
    assert_eq!(
        gone.accepted_ids(),
        ids(&before, "nordshop"),
        "nothing reaches a partner after its last credential is revoked"
    );
    assert_eq!(
        gone.seen().requests.len(),
        before["nordshop"].len(),
        "not even an attempt"
    );
    assert_eq!(
        other.accepted_ids(),
        want_other,
        "another partner is not held"
    );
    assert_eq!(
        hooks.alerts(Some("nordshop"), 0, 10).expect("alerts").len(),
        1,
        "one alert for the wait, not one per look"
    );
    assert_eq!(
        hooks.get("nordshop", &ep.id).expect("ep").state,
        State::Active
    );

    // A new credential: what waited goes out, in order, nothing lost.
    add("nordshop-api-2", "nordshop");
    let want = [ids(&before, "nordshop"), ids(&after, "nordshop")].concat();
    until("the outcomes that waited", Duration::from_secs(20), || {
        gone.seen().accepted.len() >= want.len()
    })
    .await;
    assert_eq!(gone.accepted_ids(), want);
    hooks.stop().await;
}
