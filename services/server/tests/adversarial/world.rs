//! The world every adversarial test starts from, and the one place that
//! knows how it is built: two parties, A (Stockholm) and B (Oslo), each
//! with a depot and its planner, a manifest loaded through the
//! ManifestService, a day planned through the PlanningService (one van,
//! so one route and one driver per depot), a home enrolled by its lock
//! vendor at its address and claimed by its household with the code the
//! server gave the vendor, a resident's grant on a parcel of that day and a partner
//! following its parcels.
//!
//! Enrolling a home, issuing a grant and planning the day are behind
//! [`World::enrol_home`], [`World::issue_grant`] and [`World::plan`]:
//! when the ways to do them change (a home claimed by its household, a
//! grant bound to the household a parcel is addressed to), they change
//! here and the suite follows.
//!
//! Nothing here asserts what an attacker gets: it only builds and reads.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use threshold_access_service::device::{Signed, SigningKey, key_from_seed, public_key};
use threshold_api::v1::AddEndpointRequest;
use threshold_api::v1::access_service_client::AccessServiceClient;
use threshold_api::v1::handheld_event::Report;
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::planning_service_client::PlanningServiceClient;
use threshold_api::v1::webhook_service_client::WebhookServiceClient;
use threshold_api::v1::{
    AttemptAck, ClaimHomeRequest, DeviceEventReply, DeviceEventRequest, GetRouteRequest,
    HandheldEvent, IssueGrantRequest, PlanDayRequest, attempt_ack,
};
use threshold_auth::{Authed, Role};
use threshold_domain::country::{date_to_proto, timestamp};
use threshold_domain::{Country, EventId, pb};
use threshold_log::{Position, RecordedEvent};
use threshold_routing::depot::{Fleet, Fleets};
use threshold_testkit::Sandbox;
use threshold_testkit::fixtures::{HandheldStream, load_manifest, manifest, not_home};

/// One side of the world: every identifier a party owns.
#[derive(Debug, Clone)]
pub(crate) struct Party {
    /// "A" or "B", for messages.
    pub(crate) name: &'static str,
    /// The resident ref of the household's resident.
    pub(crate) resident: &'static str,
    /// The depot, and its planner's tenant.
    pub(crate) depot: &'static str,
    /// The driver of the depot's only van.
    pub(crate) driver: String,
    /// The driver's route of the day, as planned.
    pub(crate) route: String,
    /// The vendor whose lock the home has.
    pub(crate) vendor: &'static str,
    /// The partner retailer the parcels are from.
    pub(crate) partner: &'static str,
    /// The home, its lock and its camera.
    pub(crate) home: &'static str,
    pub(crate) lock: &'static str,
    pub(crate) camera: &'static str,
    /// The parcel the grant names, and one that only gets a failed attempt.
    pub(crate) parcel: &'static str,
    pub(crate) other_parcel: &'static str,
    /// What every parcel id of the party starts with.
    pub(crate) prefix: &'static str,
    /// The resident's grant on `parcel`, and a second one for revoking.
    pub(crate) grant: &'static str,
    pub(crate) spare_grant: &'static str,
    pub(crate) country: Country,
    /// The home's position.
    pub(crate) at: (f64, f64),
    key_seed: u8,
}

impl Party {
    /// The device key registered for the home.
    pub(crate) fn key(&self) -> SigningKey {
        key_from_seed([self.key_seed; 32])
    }

    /// Whether `parcel` is the party's.
    pub(crate) fn owns(&self, parcel: &str) -> bool {
        parcel.starts_with(self.prefix)
    }

    /// A position 11 m from the home's door.
    pub(crate) fn beside_the_door(&self) -> pb::GeoPoint {
        threshold_domain::geo::point(self.at.0 + 0.0001, self.at.1)
    }
}

/// Party A: Stockholm.
fn party_a() -> Party {
    Party {
        name: "A",
        resident: "res-a",
        depot: "STO-1",
        driver: "STO-1-drv-00".into(),
        route: String::new(),
        vendor: "acme-locks",
        partner: "nordshop",
        home: "home-a",
        lock: "lock-a",
        camera: "cam-a",
        parcel: "SE-A1",
        other_parcel: "SE-A2",
        prefix: "SE-A",
        grant: "g-a",
        spare_grant: "g-a-spare",
        country: Country::Se,
        at: (59.33, 18.06),
        key_seed: 7,
    }
}

/// Party B: Oslo.
fn party_b() -> Party {
    Party {
        name: "B",
        resident: "res-b",
        depot: "OSL-1",
        driver: "OSL-1-drv-00".into(),
        route: String::new(),
        vendor: "bolt-locks",
        partner: "fjallgear",
        home: "home-b",
        lock: "lock-b",
        camera: "cam-b",
        parcel: "NO-B1",
        other_parcel: "NO-B2",
        prefix: "NO-B",
        grant: "g-b",
        spare_grant: "g-b-spare",
        country: Country::No,
        at: (59.91, 10.75),
        key_seed: 9,
    }
}

/// Who calls: a role and a tenant of one party, or no one in particular.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Actor {
    /// The party's resident.
    Resident,
    /// The party's driver's handheld.
    Driver,
    /// The party's depot's planner.
    Planner,
    /// The party's lock vendor.
    Vendor,
    /// The party's partner retailer.
    Partner,
    /// The carrier's analyst (every tenant).
    Analyst,
    /// A caller with no token.
    Unauthenticated,
    /// A real token whose role the RPC does not take, for the tenant the
    /// other party's identifiers in the RPC would need.
    WrongRole,
}

impl Actor {
    /// Every actor, in the matrix's column order.
    pub(crate) const ALL: [Actor; 8] = [
        Actor::Resident,
        Actor::Driver,
        Actor::Planner,
        Actor::Vendor,
        Actor::Partner,
        Actor::Analyst,
        Actor::Unauthenticated,
        Actor::WrongRole,
    ];
}

/// The running server, both parties, and a client for each of their
/// roles, each with a credential of its own tenant.
pub(crate) struct World {
    pub(crate) sandbox: Sandbox,
    pub(crate) a: Party,
    pub(crate) b: Party,
    /// The day planned, in Stockholm and Oslo (one time zone).
    pub(crate) day: NaiveDate,
    /// Each party's clients, by its resident ref and role.
    clients: BTreeMap<(&'static str, Role), Authed>,
    /// The grants issued while building, as they were asked for: what a
    /// replay sends again.
    pub(crate) grants: BTreeMap<String, IssueGrantRequest>,
    /// The claim code each party's household claimed its home with, by
    /// resident ref.
    pub(crate) claim_codes: BTreeMap<&'static str, String>,
    /// Each party's partner's webhook endpoint, by partner.
    pub(crate) endpoints: BTreeMap<&'static str, String>,
}

/// One van per depot: one route, driven by `DEPOT-drv-00`.
fn fleets() -> Fleets {
    Fleets {
        default: Fleet {
            vans: 1,
            in_home_cleared: 1,
            capacity_kg: 300.0,
            ..Fleet::default()
        },
        depots: BTreeMap::new(),
    }
}

impl World {
    /// Builds the world: both manifests loaded, the day planned, both
    /// homes enrolled, the grants issued and a failed attempt on each
    /// party's other parcel, so each partner has an outcome to see.
    pub(crate) async fn build() -> World {
        let sandbox = Sandbox::builder().fleets(fleets()).start().await;
        let (a, b) = (party_a(), party_b());
        let day = Utc::now().with_timezone(&Country::Se.tz()).date_naive();
        let mut clients = BTreeMap::new();
        for party in [&a, &b] {
            for (role, tenant) in [
                (Role::Resident, party.resident),
                (Role::Handheld, party.driver.as_str()),
                (Role::Planner, party.depot),
                (Role::LockVendor, party.vendor),
                (Role::Partner, party.partner),
            ] {
                clients.insert((party.resident, role), sandbox.client_as(role, tenant));
            }
        }
        let mut world = World {
            sandbox,
            a,
            b,
            day,
            clients,
            grants: BTreeMap::new(),
            claim_codes: BTreeMap::new(),
            endpoints: BTreeMap::new(),
        };
        world.plan().await;
        for party in [world.a.clone(), world.b.clone()] {
            let code = world.enrol_home(&party).await;
            world.claim_codes.insert(party.resident, code);
            for id in [party.grant, party.spare_grant] {
                let issued = world.issue_grant(&party, id).await;
                world.grants.insert(id.into(), issued);
            }
            let mut hh = HandheldStream::open(world.driver_of(&party)).await;
            let ack = hh
                .send(&world.handheld(&party, party.other_parcel, not_home()))
                .await;
            assert_stored(&ack);
            let added = WebhookServiceClient::new(world.partner_of(&party))
                .add_endpoint(AddEndpointRequest {
                    partner: String::new(),
                    url: format!("https://hooks.{}.example/threshold", party.partner),
                    kinds: vec![],
                    from_start: false,
                })
                .await
                .expect("the partner's endpoint")
                .into_inner();
            let id = added.endpoint.expect("an endpoint").id;
            world.endpoints.insert(party.partner, id);
        }
        world
    }

    /// `party`'s partner's webhook endpoint.
    pub(crate) fn endpoint_of(&self, party: &Party) -> String {
        self.endpoints
            .get(party.partner)
            .cloned()
            .expect("each partner's endpoint")
    }

    /// Loads each depot's manifest as its own planner and plans the day
    /// for each depot as its planner; each party's route is read back as
    /// its driver reads it.
    pub(crate) async fn plan(&mut self) {
        for party in [self.a.clone(), self.b.clone()] {
            let planner = self.planner_of(&party);
            load_manifest(
                planner.clone(),
                &format!("{}.csv", party.depot),
                &self.manifest_of(&party),
            )
            .await;
            PlanningServiceClient::new(planner)
                .plan_day(PlanDayRequest {
                    date: Some(date_to_proto(self.day)),
                    depot_ids: vec![],
                    seconds_per_depot: 0.2,
                    objective: String::new(),
                    ..Default::default()
                })
                .await
                .expect("the day is planned");
        }
        let mut routes = Vec::new();
        for party in [&self.a, &self.b] {
            let planned = HandheldServiceClient::new(self.driver_of(party))
                .get_route(GetRouteRequest {
                    driver_id: party.driver.clone(),
                    date: Some(date_to_proto(self.day)),
                })
                .await
                .expect("the driver's route")
                .into_inner()
                .routes;
            let [route] = planned.as_slice() else {
                panic!("{} has {} routes", party.driver, planned.len())
            };
            let carried: Vec<&str> = route
                .stops
                .iter()
                .flat_map(|s| s.parcel_ids.iter().map(String::as_str))
                .collect();
            assert!(carried.contains(&party.parcel), "{carried:?}");
            routes.push(route.route_id.clone());
        }
        let [a, b] = <[String; 2]>::try_from(routes).expect("two routes");
        (self.a.route, self.b.route) = (a, b);
    }

    /// The party's manifest: its two parcels, for its depot, today.
    pub(crate) fn manifest_of(&self, party: &Party) -> String {
        manifest(&format!(
            "{}\n{}\n",
            self.manifest_row(party, party.parcel, "1"),
            self.manifest_row(party, party.other_parcel, "2"),
        ))
    }

    /// A manifest row of `party`'s depot for `parcel` at street number `n`.
    pub(crate) fn manifest_row(&self, party: &Party, parcel: &str, n: &str) -> String {
        let (country, street, postal, city) = match party.country {
            Country::Se => ("SE", "Gatan", "111 51", "Stockholm"),
            _ => ("NO", "Gate", "0150", "Oslo"),
        };
        format!(
            "{parcel},{},{country},{},{},{street} {n},{postal},{city},{},{},doorstep,1,,",
            party.partner, party.depot, self.day, party.at.0, party.at.1
        )
    }

    /// The address of the party's home: where its granted parcel is
    /// addressed (street number 1 of [`World::manifest_row`]).
    pub(crate) fn home_address(&self, party: &Party) -> pb::Address {
        let (street, postal, city) = match party.country {
            Country::Se => ("Gatan 1", "111 51", "Stockholm"),
            _ => ("Gate 1", "0150", "Oslo"),
        };
        pb::Address {
            street: street.into(),
            postal_code: postal.into(),
            city: city.into(),
            position: Some(threshold_domain::geo::point(party.at.0, party.at.1)),
        }
    }

    /// Enrols the home: its vendor registers the lock at the home's
    /// address, signed by the key it registers, the camera reports in, and
    /// the party's resident claims the home with the code the server gave
    /// the vendor. Returns the claim code.
    pub(crate) async fn enrol_home(&self, party: &Party) -> String {
        let mut vendor = AccessServiceClient::new(self.vendor_of(party));
        let register = pb::home_event::Event::LockRegistered(pb::LockRegistered {
            home_id: party.home.into(),
            lock_id: party.lock.into(),
            vendor: party.vendor.into(),
            public_key: public_key(&party.key()),
            country: party.country.to_proto() as i32,
            address: Some(self.home_address(party)),
            ..Default::default()
        });
        let code = vendor
            .record_device_event(device(party.home, register, Utc::now(), &party.key()))
            .await
            .expect("the home is enrolled")
            .into_inner()
            .claim_code;
        assert!(!code.is_empty(), "an enrolment answers a claim code");
        vendor
            .record_device_event(device(
                party.home,
                heartbeat(party),
                Utc::now(),
                &party.key(),
            ))
            .await
            .expect("the camera reports in");
        AccessServiceClient::new(self.resident_of(party))
            .claim_home(ClaimHomeRequest {
                home_id: party.home.into(),
                resident_ref: party.resident.into(),
                claim_code: code.clone(),
            })
            .await
            .expect("the household claims its home");
        code
    }

    /// The camera reports in again, as it does every few seconds.
    pub(crate) async fn heartbeat(&self, party: &Party) -> DeviceEventReply {
        AccessServiceClient::new(self.vendor_of(party))
            .record_device_event(device(
                party.home,
                heartbeat(party),
                Utc::now(),
                &party.key(),
            ))
            .await
            .expect("heartbeat")
            .into_inner()
    }

    /// Issues grant `id` as the party's resident; the request.
    pub(crate) async fn issue_grant(&self, party: &Party, id: &str) -> IssueGrantRequest {
        let request = grant_request(party, id);
        AccessServiceClient::new(self.resident_of(party))
            .issue_grant(request.clone())
            .await
            .expect("the grant is issued");
        request
    }

    /// A client of `party` as `actor`: its own credential for the actor's
    /// role and tenant; the carrier's analyst; no token. Not
    /// [`Actor::WrongRole`], whose token depends on the RPC.
    pub(crate) fn actor(&self, party: &Party, actor: Actor) -> Authed {
        match actor {
            Actor::Resident => self.resident_of(party),
            Actor::Driver => self.driver_of(party),
            Actor::Planner => self.planner_of(party),
            Actor::Vendor => self.vendor_of(party),
            Actor::Partner => self.partner_of(party),
            Actor::Analyst => self.sandbox.analyst(),
            Actor::Unauthenticated => self.sandbox.unauthenticated(),
            Actor::WrongRole => panic!("a wrong role's token depends on the RPC"),
        }
    }

    /// A client with a new credential of `role` for `tenant`.
    pub(crate) fn client_as(&self, role: Role, tenant: &str) -> Authed {
        self.sandbox.client_as(role, tenant)
    }

    /// `party`'s resident.
    pub(crate) fn resident_of(&self, party: &Party) -> Authed {
        self.of(party, Role::Resident)
    }

    /// `party`'s driver's handheld.
    pub(crate) fn driver_of(&self, party: &Party) -> Authed {
        self.of(party, Role::Handheld)
    }

    /// `party`'s depot's planner.
    pub(crate) fn planner_of(&self, party: &Party) -> Authed {
        self.of(party, Role::Planner)
    }

    /// `party`'s lock vendor.
    pub(crate) fn vendor_of(&self, party: &Party) -> Authed {
        self.of(party, Role::LockVendor)
    }

    /// `party`'s partner.
    pub(crate) fn partner_of(&self, party: &Party) -> Authed {
        self.of(party, Role::Partner)
    }

    fn of(&self, party: &Party, role: Role) -> Authed {
        self.clients
            .get(&(party.resident, role))
            .cloned()
            .expect("a client of each party's roles")
    }

    /// A handheld event of `party`'s driver about `parcel`, now, on the
    /// party's route.
    pub(crate) fn handheld(&self, party: &Party, parcel: &str, report: Report) -> HandheldEvent {
        HandheldEvent {
            event_id: EventId::new().to_string(),
            device_id: format!("hh-{}", party.driver),
            sequence: 1,
            parcel_id: parcel.into(),
            driver_id: party.driver.clone(),
            route_id: party.route.clone(),
            occurred_at: Some(timestamp(Utc::now())),
            report: Some(report),
        }
    }

    /// The log's head now.
    pub(crate) async fn head(&self) -> Position {
        self.sandbox.log().head().await.expect("the log's head")
    }

    /// Every event appended after `after`.
    pub(crate) async fn since(&self, after: Position) -> Vec<RecordedEvent> {
        self.sandbox
            .log()
            .read_all(after, 1000)
            .await
            .expect("read the log")
    }

    /// The streams and types of the events appended after `after`.
    pub(crate) async fn stored_since(&self, after: Position) -> Vec<(String, String)> {
        self.since(after)
            .await
            .into_iter()
            .map(|e| (e.stream.to_string(), e.event.event_type))
            .collect()
    }
}

/// `party`'s grant `id` on its parcel, to its driver on its route, for
/// its home, whose window is open now.
pub(crate) fn grant_request(party: &Party, id: &str) -> IssueGrantRequest {
    let local = |d: chrono::Duration| {
        (Utc::now() + d)
            .with_timezone(&party.country.tz())
            .format("%Y-%m-%dT%H:%M")
            .to_string()
    };
    IssueGrantRequest {
        grant_id: id.into(),
        home_id: party.home.into(),
        parcel_ids: vec![party.parcel.into()],
        resident_ref: party.resident.into(),
        country: party.country.to_proto() as i32,
        window_start_local: local(chrono::Duration::hours(-1)),
        window_end_local: local(chrono::Duration::hours(1)),
        scope: Some(threshold_domain::grant::courier_scope(
            &party.driver,
            &party.route,
        )),
        geofence: Some(threshold_domain::grant::geofence(
            threshold_domain::geo::point(party.at.0, party.at.1),
            50,
        )),
        conditions: Some(pb::HouseholdConditions::default()),
        fallback: pb::Fallback::Locker as i32,
    }
}

/// The party's camera reporting in.
pub(crate) fn heartbeat(party: &Party) -> pb::home_event::Event {
    pb::home_event::Event::CameraOnline(pb::CameraOnline {
        camera_id: party.camera.into(),
        recording: true,
    })
}

/// A device report of `event` for `home` at `at`, signed with `key`.
pub(crate) fn device(
    home: &str,
    event: pb::home_event::Event,
    at: DateTime<Utc>,
    key: &SigningKey,
) -> DeviceEventRequest {
    let mut r = DeviceEventRequest {
        event_id: EventId::new().to_string(),
        home_id: home.into(),
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

/// Asserts `ack` says stored.
pub(crate) fn assert_stored(ack: &AttemptAck) {
    assert_eq!(
        attempt_ack::Result::try_from(ack.result),
        Ok(attempt_ack::Result::Stored),
        "{ack:?}"
    );
}

/// How long a subscription is read for outcomes before it counts as quiet.
pub(crate) const QUIET: Duration = Duration::from_millis(400);
