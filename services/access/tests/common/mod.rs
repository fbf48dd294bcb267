//! What the access tests share: a server on 127.0.0.1:0 over the embedded
//! log, a grant, an unlock request, the home's signed devices, and the facts
//! other services would have recorded.
#![allow(dead_code)]

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::SigningKey;
use threshold_access_service::device::{Signed, key_from_seed, public_key};
use threshold_access_service::{Access, Clock};
use threshold_api::v1::access_service_client::AccessServiceClient;
use threshold_api::v1::{AuthorizeUnlockRequest, DeviceEventRequest, IssueGrantRequest};
use threshold_auth::{AuthLayer, Authed, Authenticator, Credentials, Role, authed};
use threshold_domain::country::timestamp;
use threshold_domain::{Country, DomainEvent, EventId, StreamId, pb};
use threshold_log::{EmbeddedLog, EmbeddedOptions, EventLog, ExpectedVersion, NewEvent};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};

/// A server, and a client for each role that calls it, each with the
/// token of a real credential in the server's data directory.
pub(crate) struct Running {
    /// As the resident (issues, revokes, asks for receipts).
    pub(crate) resident: Client,
    /// As the driver's handheld (asks to unlock).
    pub(crate) handheld: Client,
    /// As the lock vendor's cloud (device events, redeeming nonces).
    pub(crate) vendor: Client,
    pub(crate) log: Arc<dyn EventLog>,
    pub(crate) access: Access,
    pub(crate) vault: Arc<threshold_privacy::Vault>,
    pub(crate) channel: Channel,
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) type Client = AccessServiceClient<Authed>;

impl Running {
    /// A client with a new credential of `role` for `tenant`.
    pub(crate) fn client_as(&self, role: Role, tenant: &str) -> Client {
        let name = format!("{role}-{tenant}-{}", EventId::new());
        let token = Credentials::add(self.dir.path(), &name, role, tenant).expect("credential");
        AccessServiceClient::new(authed(self.channel.clone(), Some(&token)).expect("token"))
    }
}

pub(crate) async fn serve() -> Running {
    serve_on(Clock::System).await
}

pub(crate) async fn serve_on(clock: Clock) -> Running {
    let dir = tempfile::tempdir().expect("dir");
    let log = Arc::new(EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).expect("log"));
    let vault = Arc::new(threshold_privacy::Vault::open(dir.path()).expect("vault"));
    serve_over(log, vault, dir, clock).await
}

/// A server over `log`, sealing with `vault`, its credentials in `dir`.
pub(crate) async fn serve_over(
    log: Arc<dyn EventLog>,
    vault: Arc<threshold_privacy::Vault>,
    dir: tempfile::TempDir,
    clock: Clock,
) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let access = Access::new(Arc::clone(&log))
        .with_clock(clock)
        .with_vault(Arc::clone(&vault));
    let service = access.clone().into_server();
    let auth = AuthLayer::new(Authenticator::new(dir.path()));
    tokio::spawn(async move {
        Server::builder()
            .layer(auth)
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .expect("server");
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut running = Running {
        resident: AccessServiceClient::new(authed(channel.clone(), None).expect("channel")),
        handheld: AccessServiceClient::new(authed(channel.clone(), None).expect("channel")),
        vendor: AccessServiceClient::new(authed(channel.clone(), None).expect("channel")),
        log,
        access,
        vault,
        channel,
        dir,
    };
    running.resident = running.client_as(Role::Resident, "res-1");
    running.handheld = running.client_as(Role::Handheld, "drv-1");
    running.vendor = running.client_as(Role::LockVendor, "acme-locks");
    running
}

/// A grant whose window (Stockholm local time) is open now.
pub(crate) fn grant(id: &str) -> IssueGrantRequest {
    let local = |d: Duration| {
        (Utc::now() + d)
            .with_timezone(&Country::Se.tz())
            .format("%Y-%m-%dT%H:%M")
            .to_string()
    };
    IssueGrantRequest {
        grant_id: id.into(),
        home_id: "home-1".into(),
        parcel_ids: vec!["SE-1".into()],
        resident_ref: "res-1".into(),
        country: pb::Country::Se as i32,
        window_start_local: local(Duration::hours(-1)),
        window_end_local: local(Duration::hours(1)),
        scope: Some(pb::CourierScope {
            driver_id: "drv-1".into(),
            route_id: "r-1".into(),
        }),
        geofence: Some(pb::Geofence {
            center: Some(pb::GeoPoint {
                latitude: 59.33,
                longitude: 18.06,
            }),
            radius_m: 50,
            ..Default::default()
        }),
        conditions: Some(pb::HouseholdConditions::default()),
        fallback: pb::Fallback::Locker as i32,
    }
}

pub(crate) fn unlock(grant: &str, driver: &str) -> AuthorizeUnlockRequest {
    AuthorizeUnlockRequest {
        grant_id: grant.into(),
        parcel_id: "SE-1".into(),
        driver_id: driver.into(),
        route_id: "r-1".into(),
        // 11 m from the door.
        position: Some(pb::GeoPoint {
            latitude: 59.3301,
            longitude: 18.06,
        }),
        pet_acknowledged: false,
    }
}

/// The home's device key.
pub(crate) fn key() -> SigningKey {
    key_from_seed([7; 32])
}

/// A device event for home-1 at `at`, signed with `key`.
pub(crate) fn device(
    event: pb::home_event::Event,
    at: DateTime<Utc>,
    key: &SigningKey,
) -> DeviceEventRequest {
    let mut r = DeviceEventRequest {
        event_id: EventId::new().to_string(),
        home_id: "home-1".into(),
        occurred_at: Some(timestamp(at)),
        event: Some(pb::HomeEvent {
            event: Some(event),
            prev_hash: vec![],
        }),
        signature: vec![],
    };
    r.sign(key);
    r
}

/// Facts appended as they are, for what other services would have recorded.
pub(crate) async fn facts(
    log: &dyn EventLog,
    stream: &str,
    events: Vec<DomainEvent>,
    at: DateTime<Utc>,
) {
    let stream: StreamId = stream.parse().expect("stream");
    let new = events
        .iter()
        .map(|e| NewEvent::new(EventId::new(), e, at))
        .collect();
    log.append(&stream, ExpectedVersion::Any, new)
        .await
        .expect("append");
}

/// Everything but the grant an entry at `at` needs: route r-1 of drv-1
/// carrying SE-1, drv-1's scan of SE-1, home-1's lock registered with
/// [`key`] and its camera beating at `at`. `at` carries the simulated time
/// to a simulation's server.
pub(crate) async fn door(s: &mut Running, at: DateTime<Utc>, simulated: bool) {
    facts(
        s.log.as_ref(),
        "route/r-1",
        vec![DomainEvent::Route(pb::route_event::Event::Planned(
            pb::RoutePlanned {
                route_id: "r-1".into(),
                driver_id: "drv-1".into(),
                plan_version: 1,
                stops: vec![pb::PlannedStop {
                    index: 0,
                    parcel_ids: vec!["SE-1".into()],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ))],
        at,
    )
    .await;
    facts(
        s.log.as_ref(),
        "parcel/SE-1",
        vec![DomainEvent::Parcel(
            pb::parcel_event::Event::AttemptStarted(pb::AttemptStarted {
                attempt: 1,
                route_id: "r-1".into(),
                driver_id: "drv-1".into(),
                device_id: "hh-1".into(),
            }),
        )],
        at,
    )
    .await;
    let register = pb::home_event::Event::LockRegistered(pb::LockRegistered {
        home_id: "home-1".into(),
        lock_id: "lock-1".into(),
        vendor: "acme-locks".into(),
        public_key: public_key(&key()),
        country: pb::Country::Se as i32,
    });
    let beat = pb::home_event::Event::CameraOnline(pb::CameraOnline {
        camera_id: "cam-1".into(),
        recording: true,
    });
    for e in [register, beat] {
        let r = device(e, at, &key());
        let r = if simulated {
            self::at(r, at)
        } else {
            tonic::Request::new(r)
        };
        s.vendor.record_device_event(r).await.expect("device event");
    }
}

/// `request` carrying the simulated time `at`.
pub(crate) fn at<T>(request: T, at: DateTime<Utc>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(request);
    r.metadata_mut().insert(
        threshold_api::SIMULATED_TIME_HEADER,
        at.to_rfc3339().parse().expect("ascii"),
    );
    r
}

/// The grant's events in `log`, in order.
pub(crate) async fn grant_history(log: &dyn EventLog, grant: &str) -> Vec<pb::grant_event::Event> {
    log.read_stream(&format!("grant/{grant}").parse().expect("stream"), 0, 1000)
        .await
        .expect("read")
        .into_iter()
        .filter_map(|r| match r.decode().expect("decode") {
            DomainEvent::Grant(e) => Some(e),
            _ => None,
        })
        .collect()
}

/// One order per grant, as its history shows it: nothing authorized or
/// redeemed after the revoke, at most one entry, each of `asked` unlock
/// requests decided and recorded once, one revoke.
pub(crate) fn assert_one_order(grant: &str, events: &[pb::grant_event::Event], asked: usize) {
    use pb::grant_event::Event as E;
    let revoked = events
        .iter()
        .position(|e| matches!(e, E::Revoked(_)))
        .expect("revoked");
    for e in &events[revoked..] {
        assert!(
            !matches!(e, E::UnlockAuthorized(_) | E::Used(_)),
            "{grant}: {e:?} after the revoke"
        );
    }
    let used = events.iter().filter(|e| matches!(e, E::Used(_))).count();
    assert!(used <= 1, "{grant}: {used} entries");
    let decided = events
        .iter()
        .filter(|e| match e {
            E::UnlockAuthorized(_) => true,
            E::UnlockDenied(d) => d.nonce.is_empty(),
            _ => false,
        })
        .count();
    assert_eq!(decided, asked, "{grant}");
    let revokes = events.iter().filter(|e| matches!(e, E::Revoked(_))).count();
    assert_eq!(revokes, 1, "{grant}");
}
