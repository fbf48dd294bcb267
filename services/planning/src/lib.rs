//! PlanningService: a local day's routes, planned from the log.
//!
//! The parcels of each depot-day come from the [`DepotDays`] projection
//! (in-home windows from the manifest or the resident's grant), the vans from
//! the depots' fleet configuration ([`Fleets`]). Depots are planned in
//! parallel, one per core, each with the genetic search under a time budget
//! (or a seeded generation budget, which repeats); every plan is checked by
//! the independent checker before anything is written.
//! A route per van used is appended to the log (`route/<depot>-<date>-<van>`),
//! a new plan version when the day is planned again, and handhelds read it
//! with `GetRoute`. Replanning moves whole routes between interchangeable
//! vans so that stops stay on the van they had where possible; a van no
//! longer needed gets an empty version.
//!
//! Each parcel a plan places gets that on its own stream too (the parcel's
//! `AssignToRoute`: the route, the plan version and its stop), after its
//! route is written: what track and trace and partners see as `on_route`.
//! A parcel planned again onto the route it is on gets nothing new; one a
//! driver is at, or whose attempt failed, is left as it is.
//!
//! A plan may carry over an earlier day (`carry_over_from`): the parcels
//! still open on it — their attempt failed, or they were never driven —
//! are rescheduled to the day being planned (the parcel's own
//! `Reschedule`, so the same parcel keeps its id and its attempt count),
//! and a parcel whose [`MAX_ATTEMPTS`]th attempt failed is returned to its
//! sender instead. Each is decided on the parcel's stream; a parcel that
//! changed in between (a driver at its door) is left where it is.
//!
//! Every parcel a plan leaves out gets the planner's reason on its own
//! stream (the parcel's `LeaveOut`: once per day and reason, so planning
//! the day again with the same result writes nothing, unless the plan it
//! replaces had placed the parcel), for the console and for analysts; the
//! reply carries the same reasons.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use threshold_api::clock::Clock;
use threshold_api::v1::planning_service_server::{PlanningService, PlanningServiceServer};
use threshold_api::v1::{DepotPlan, PlanDayReply, PlanDayRequest, UnassignedParcel};
use threshold_auth::Role;
use threshold_domain::country::{date_from_proto, date_to_proto};
use threshold_domain::parcel::{
    Command as ParcelCommand, Parcel as ParcelState, Status as ParcelStatus, clip_left_out_reason,
};
use threshold_domain::pb::route_event::Event as RouteEvent;
use threshold_domain::route::{Command as RouteCommand, Route};
use threshold_domain::{DepotId, DriverId, EventId, ParcelId, RouteId, StreamId, VehicleId};
use threshold_log::{DecideError, Decision, EventLog, Position, decide, load};
use threshold_privacy::Vault;
use threshold_projections::{DepotDays, PlannableParcel, Routes, caught_up, follow};
use threshold_routing::depot::{DepotDay, Fleets, Parcel, van_index};
use threshold_routing::matrix::{GreatCircle, Point, TravelMatrix};
use threshold_routing::{Objective, Options, check, in_parallel, solve};
use threshold_status::{behind, field, status};
use tonic::{Request, Response, Status};

/// Search time per depot when a request leaves it to the server.
pub const DEFAULT_SECONDS_PER_DEPOT: f64 = 2.0;
/// Parcels whose assignment to a route is decided at once: on Kafka each
/// decision waits for the broker, so one at a time would make a day's
/// thousands of parcels take minutes.
const ASSIGNING: usize = 32;
/// The most a request may ask for.
const MAX_SECONDS_PER_DEPOT: f64 = 600.0;
/// The most generations a repeatable plan may ask for per depot: bounds
/// what one call can cost, like [`MAX_SECONDS_PER_DEPOT`].
const MAX_GENERATIONS: u32 = 100_000;
/// Plans a depot's planners may have asked for and not seen end, at once:
/// a second is refused (`RESOURCE_EXHAUSTED`) until the first has ended,
/// so another depot's plan waits behind at most one of each other depot's.
pub const PLANS_PER_DEPOT_TENANT: usize = 1;
/// The same for the planners of every depot (`*`: the carrier's tools and
/// console), who may plan a few days or depot groups side by side.
pub const PLANS_OF_EVERY_DEPOT: usize = 4;
/// Failed attempts after which a carried-over parcel goes back to its
/// sender rather than onto another day.
pub const MAX_ATTEMPTS: u32 = 3;
/// How far back a plan may carry parcels over from: bounds what one call
/// reads, and a parcel a fortnight late is a case for the depot, not the plan.
const MAX_CARRY_OVER_DAYS: i64 = 14;

/// The service, over any event log.
#[derive(Clone)]
pub struct Planning {
    log: Arc<dyn EventLog>,
    parcels: Arc<RwLock<DepotDays>>,
    routes: Arc<RwLock<Routes>>,
    fleets: Arc<Fleets>,
    matrix: Arc<dyn TravelMatrix>,
    /// Seals stop positions under their household's key.
    vault: Arc<Vault>,
    /// One planning at a time: a day's plan versions follow each other.
    /// Held by the solve itself, not only by the call: a call cancelled
    /// mid-solve leaves its turn when its solve ends, so cancelled calls
    /// cannot pile solves up on the cores.
    planning: Arc<tokio::sync::Mutex<()>>,
    /// Plans each planner tenant has asked for and not seen end (waiting
    /// for the turn or being solved): one for a depot's planners, a few for
    /// the carrier's own. Without it one depot's planner could queue any
    /// number of long plans in front of every other depot's.
    asked: threshold_auth::Quota,
    /// Solves running now.
    solving: Arc<std::sync::atomic::AtomicUsize>,
    /// Whose time a plan's events are stamped with.
    clock: Clock,
}

impl Planning {
    /// A service planning with `fleets`, following `log` (call within a
    /// tokio runtime).
    pub fn new(log: Arc<dyn EventLog>, fleets: Fleets, vault: Arc<Vault>) -> Self {
        let parcels = Arc::new(RwLock::new(DepotDays::with_vault(Arc::clone(&vault))));
        let routes = Arc::new(RwLock::new(Routes::default()));
        for task in [
            tokio::spawn(follow(
                Arc::clone(&log),
                Arc::clone(&parcels),
                Position::ORIGIN,
            )),
            tokio::spawn(follow(
                Arc::clone(&log),
                Arc::clone(&routes),
                Position::ORIGIN,
            )),
        ] {
            tokio::spawn(async move {
                if let Ok(Some(e)) = task.await {
                    tracing::error!(error = %e, "planning: a projection stopped following the log");
                }
            });
        }
        Self {
            log,
            parcels,
            routes,
            fleets: Arc::new(fleets),
            matrix: Arc::new(GreatCircle::default()),
            vault,
            planning: Arc::default(),
            asked: threshold_auth::Quota::new(usize::MAX, PLANS_PER_DEPOT_TENANT),
            solving: Arc::default(),
            clock: Clock::System,
        }
    }

    /// How many plans are being solved now: at most one, however many
    /// calls were made and called off.
    pub fn solving(&self) -> usize {
        self.solving.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stamping a plan that carries a simulation's time with it (on
    /// [`Clock::Simulated`]) rather than refusing it.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// With another travel matrix (a road network's, say).
    pub fn with_matrix(mut self, matrix: Arc<dyn TravelMatrix>) -> Self {
        self.matrix = matrix;
        self
    }

    /// As a tonic service, ready to add to a server.
    pub fn into_server(self) -> PlanningServiceServer<Self> {
        PlanningServiceServer::new(self)
    }
}

/// Seals each stop's position under the household of its first parcel; a
/// parcel whose address was never sealed keeps its position clear.
fn seal_stops(
    vault: &Vault,
    route_id: &str,
    households: &HashMap<&str, &str>,
    stops: Vec<threshold_domain::pb::PlannedStop>,
) -> Result<Vec<threshold_domain::pb::PlannedStop>, String> {
    stops
        .into_iter()
        .map(|mut stop| {
            let household = stop
                .parcel_ids
                .first()
                .and_then(|p| households.get(p.as_str()));
            if let (Some(household), Some(position)) = (household, stop.position) {
                let context = threshold_domain::route::stop_context(route_id, &stop);
                stop.sealed_position = Some(
                    vault
                        .seal_message(household, &context, &position)
                        // What the caller may be told: the vault's file
                        // goes to the server's log only.
                        .map_err(|e| status(e).message().to_owned())?,
                );
                stop.position = None;
            }
            Ok(stop)
        })
        .collect()
}

/// One depot's outcome, before anything is written.
struct Outcome {
    reply: DepotPlan,
    routes: Vec<RouteCommand>,
    /// Parcels left out that the plan in effect had on a route.
    placed_before: std::collections::HashSet<String>,
}

fn to_parcel(p: &PlannableParcel) -> Option<Parcel> {
    let pos = p.position?;
    Some(Parcel {
        parcel_id: p.parcel_id.clone(),
        position: Point {
            latitude: pos.latitude,
            longitude: pos.longitude,
        },
        weight_g: p.weight_grams,
        volume_cm3: None,
        in_home: p.in_home(),
    })
}

/// A depot-day's plan in effect.
#[derive(Default)]
struct Previous {
    /// Parcel → the index of the van it is on.
    stops: HashMap<String, usize>,
    /// Its routes, with the index of their van.
    routes: Vec<(String, usize)>,
}

/// Plans one depot-day, keeping stops on the vans `previous` has them on
/// where possible.
#[allow(clippy::too_many_arguments)]
fn plan_depot(
    depot: &str,
    date: NaiveDate,
    parcels: &[PlannableParcel],
    previous: &Previous,
    fleets: &Fleets,
    matrix: &dyn TravelMatrix,
    vault: &Vault,
    options: Options,
) -> Result<Outcome, String> {
    let households: HashMap<&str, &str> = parcels
        .iter()
        .filter_map(|p| Some((p.parcel_id.as_str(), p.household.as_deref()?)))
        .collect();
    let started = Instant::now();
    let country = parcels
        .first()
        .map(|p| p.country)
        .ok_or_else(|| format!("{depot} has no parcels on {date}"))?;
    let mut unassigned = Vec::new();
    let mut plannable = Vec::new();
    for p in parcels {
        match to_parcel(p) {
            Some(x) => plannable.push(x),
            None => unassigned.push(UnassignedParcel {
                parcel_id: p.parcel_id.clone(),
                reason: if p.household.is_some() {
                    "no position: its address was erased on request, or has none".into()
                } else {
                    "no position for its address".into()
                },
            }),
        }
    }
    let day = DepotDay {
        depot_id: depot.to_owned(),
        country,
        date,
        parcels: plannable,
    };
    let fleet = fleets.of(depot);
    let planned = day.problem(fleet, matrix).map_err(|e| e.to_string())?;
    let mut plan = solve(&planned.problem, options).map_err(|e| e.to_string())?;
    let (kept, moved) = plan.keep_vans(&planned.problem, &previous.stops);
    let violations = check(&planned.problem, &plan);
    if let Some(v) = violations.first() {
        // Never publish a plan the checker refuses.
        return Err(format!("{depot} {date}: the plan breaks its problem: {v}"));
    }
    for u in &plan.unassigned {
        unassigned.push(UnassignedParcel {
            parcel_id: planned.problem.stops[u.stop].id.clone(),
            reason: u.reason.clone(),
        });
    }
    let routes = planned.routes(&day, &plan);
    let command = |route: &str,
                   vehicle: &str,
                   driver: &str,
                   stops: Vec<threshold_domain::pb::PlannedStop>,
                   reason: &str|
     -> Result<RouteCommand, String> {
        let text = |e: threshold_domain::DomainError| e.to_string();
        let stops = seal_stops(vault, route, &households, stops)?;
        Ok(RouteCommand::Plan {
            route_id: RouteId::new(route).map_err(text)?,
            depot_id: DepotId::new(depot).map_err(text)?,
            local_date: date,
            vehicle_id: VehicleId::new(vehicle).map_err(text)?,
            driver_id: DriverId::new(driver).map_err(text)?,
            stops,
            reason: reason.into(),
        })
    };
    let mut commands = Vec::new();
    for r in &routes {
        commands.push(command(
            &r.route_id,
            &r.vehicle_id,
            &r.driver_id,
            r.stops.clone(),
            "planned again",
        )?);
    }
    // Vans of the previous version with no route now: an empty version.
    for (old, van) in &previous.routes {
        if routes.iter().any(|r| &r.route_id == old) {
            continue;
        }
        if let Some(van) = planned.problem.vans.get(*van) {
            commands.push(command(
                old,
                &van.id,
                &van.driver_id,
                Vec::new(),
                "the van is no longer needed",
            )?);
        }
    }
    let placed_before = unassigned
        .iter()
        .filter(|u| previous.stops.contains_key(&u.parcel_id))
        .map(|u| u.parcel_id.clone())
        .collect();
    Ok(Outcome {
        reply: DepotPlan {
            depot_id: depot.to_owned(),
            date: Some(date_to_proto(date)),
            parcels: parcels.len() as u32,
            vans_used: plan.routes.len() as u32,
            vans_available: fleet.vans,
            distance_m: plan.distance(&planned.problem),
            driving_s: plan.driving(&planned.problem),
            routes_changed: 0,
            unassigned,
            seconds: started.elapsed().as_secs_f64(),
            stops_kept_on_van: kept as u32,
            stops_moved: moved as u32,
            carried_over: 0,
            returned: 0,
        },
        placed_before,
        routes: commands,
    })
}

/// What carrying a parcel over did.
enum Carried {
    /// Moved to the planned day.
    Moved,
    /// Returned to its sender: its last attempt was its last.
    Returned,
    /// Left as it was: delivered, returned, or a driver at its door.
    Stayed,
}

impl Planning {
    /// Moves `parcel`, due on `from`, to `to` if it is still open, or
    /// returns it to its sender after [`MAX_ATTEMPTS`] failed attempts;
    /// either at `at`.
    async fn carry_over(
        &self,
        parcel: &str,
        from: NaiveDate,
        to: NaiveDate,
        at: DateTime<Utc>,
    ) -> Result<Carried, Status> {
        let id = ParcelId::new(parcel).map_err(status)?;
        let stream = StreamId::parcel(&id);
        let (state, _) = load::<ParcelState>(&*self.log, &stream)
            .await
            .map_err(status)?;
        let command = match state.status {
            s if s.is_terminal() || s == ParcelStatus::Attempting || s == ParcelStatus::Unknown => {
                return Ok(Carried::Stayed);
            }
            _ if state.due != Some(from) => return Ok(Carried::Stayed),
            ParcelStatus::AttemptFailed if state.attempts >= MAX_ATTEMPTS => {
                ParcelCommand::Return {
                    reason: format!("{} attempts failed", state.attempts),
                }
            }
            _ => ParcelCommand::Reschedule {
                date: to,
                reason: format!("not delivered on {from}"),
            },
        };
        let returned = matches!(command, ParcelCommand::Return { .. });
        // Refused: it changed since it was read (a driver reached it first).
        Ok(match on_parcel(&*self.log, &id, &command, at).await? {
            Some(0) | None => Carried::Stayed,
            Some(_) if returned => Carried::Returned,
            Some(_) => Carried::Moved,
        })
    }

    /// Records on each `placed` parcel's stream that the plan made at
    /// `planned_at` put it on a route (its command), up to
    /// [`ASSIGNING`] at a time. A parcel planned again onto the route it is
    /// on gets nothing; one that changed since the plan read it (a driver
    /// at its door, an attempt failed, delivered) keeps its state.
    async fn assign(
        &self,
        placed: Vec<(String, ParcelCommand)>,
        planned_at: DateTime<Utc>,
    ) -> Result<(), Status> {
        let mut work = futures::stream::iter(placed)
            .map(|(parcel, command)| {
                let log = Arc::clone(&self.log);
                async move {
                    let id = ParcelId::new(&parcel).map_err(status)?;
                    on_parcel(&*log, &id, &command, planned_at).await.map(drop)
                }
            })
            .buffer_unordered(ASSIGNING);
        while let Some(done) = work.next().await {
            done?;
        }
        Ok(())
    }

    /// Records on `parcel`'s stream that the plan of `date` made at
    /// `planned_at` left it out, and why (`placed_since`: the plan it
    /// replaces had it on a route); whether an event was written.
    async fn leave_out(
        &self,
        parcel: &str,
        date: NaiveDate,
        reason: &str,
        planned_at: DateTime<Utc>,
        placed_since: bool,
    ) -> Result<bool, Status> {
        let id = ParcelId::new(parcel).map_err(status)?;
        let command = ParcelCommand::LeaveOut {
            date,
            // The reply keeps the whole reason; the log a bounded one.
            reason: clip_left_out_reason(reason),
            planned_at,
            placed_since,
        };
        // Refused: this plan's reason is not its any more.
        Ok(on_parcel(&*self.log, &id, &command, planned_at)
            .await?
            .is_some_and(|written| written > 0))
    }
}

/// A solve counted in [`Planning::solving`] while it runs, however it ends.
struct Solving(Arc<std::sync::atomic::AtomicUsize>);

impl Solving {
    fn count(solving: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        solving.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(Arc::clone(solving))
    }
}

impl Drop for Solving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Decides a plan's `command` on `parcel`'s stream at `at`: how many events
/// it wrote, or `None` when the parcel's state refuses it because it
/// changed since the plan read it (delivered, moved to another day, a
/// driver at its door), which is not the plan's to undo and is logged.
async fn on_parcel(
    log: &dyn EventLog,
    parcel: &ParcelId,
    command: &ParcelCommand,
    at: DateTime<Utc>,
) -> Result<Option<usize>, Status> {
    // Decided first on the stream as this process holds it (on Kafka, no
    // request to the broker per parcel); a refusal, a command with
    // nothing to write or a conflict decides again on the log's.
    match Decision::<ParcelState>::new(log, &StreamId::parcel(parcel))
        .recent()
        .enveloped(|parcel, n| n.of_parcel(parcel))
        .run(command, |_| (EventId::new(), at))
        .await
    {
        Ok(d) => Ok(Some(d.events.len())),
        Err(DecideError::Refused(e)) => {
            tracing::debug!(%parcel, error = %e, "planning: the parcel changed since it was planned");
            Ok(None)
        }
        Err(e) => Err(status(e)),
    }
}

#[tonic::async_trait]
impl PlanningService for Planning {
    async fn plan_day(
        &self,
        request: Request<PlanDayRequest>,
    ) -> Result<Response<PlanDayReply>, Status> {
        let planner = threshold_auth::require(&request, &[Role::Planner])?.clone();
        // A simulation's plan is made at its time; else now, when written.
        let stamped = self.clock.stamp(&request)?;
        let now = || stamped.unwrap_or_else(Utc::now);
        let mut r = request.into_inner();
        // A depot's planner plans its own depot.
        if planner.tenant != threshold_auth::ANY_TENANT {
            if r.depot_ids.is_empty() {
                r.depot_ids.push(planner.tenant.clone());
            }
            for d in &r.depot_ids {
                planner.check_tenant("depot", d)?;
            }
        }
        let date = r
            .date
            .as_ref()
            .ok_or_else(|| field("date", "is missing"))
            .and_then(|d| date_from_proto(d).map_err(|e| field("date", e)))?;
        let objective: Objective = if r.objective.is_empty() {
            Objective::Business
        } else {
            r.objective.parse().map_err(|e| field("objective", e))?
        };
        let seconds = match r.seconds_per_depot {
            0.0 => DEFAULT_SECONDS_PER_DEPOT,
            s if s.is_finite() && s > 0.0 && s <= MAX_SECONDS_PER_DEPOT => s,
            s => {
                return Err(field(
                    "seconds_per_depot",
                    format!("{s} is not in (0, {MAX_SECONDS_PER_DEPOT}]"),
                ));
            }
        };
        if r.generations > MAX_GENERATIONS {
            return Err(field(
                "generations",
                format!("{} is more than {MAX_GENERATIONS}", r.generations),
            ));
        }
        let carry_from = r
            .carry_over_from
            .as_ref()
            .map(|d| date_from_proto(d).map_err(|e| field("carry_over_from", e)))
            .transpose()?;
        if let Some(from) = carry_from {
            let days = (date - from).num_days();
            if !(1..=MAX_CARRY_OVER_DAYS).contains(&days) {
                return Err(field(
                    "carry_over_from",
                    format!("{from} is not within the {MAX_CARRY_OVER_DAYS} days before {date}"),
                ));
            }
        }
        // The planner's place is taken before its turn is waited for, and
        // held, like the turn, until the solve ends, called off or not.
        let most = if planner.tenant == threshold_auth::ANY_TENANT {
            PLANS_OF_EVERY_DEPOT
        } else {
            PLANS_PER_DEPOT_TENANT
        };
        let asked = self
            .asked
            .take_up_to(&planner.tenant, most)
            .map_err(|full| {
                let n = match full {
                    threshold_auth::Full::Caller(n) | threshold_auth::Full::Total(n) => n,
                };
                Status::resource_exhausted(format!(
                    "planners of {:?} have {n} plans asked for and not ended, their most: \
                     ask again when one has ended",
                    planner.tenant
                ))
            })?;
        let turn = (Arc::clone(&self.planning).lock_owned().await, asked);

        // Plan from everything durable now.
        let within = std::time::Duration::from_secs(10);
        let catch_up = || async {
            let head = self.log.head().await.map_err(status)?;
            for lag in [
                caught_up(&self.parcels, head, within).await,
                caught_up(&self.routes, head, within).await,
            ] {
                lag.map_err(|at| behind(format!("projections at {at}, the log at {head}; retry")))?;
            }
            Ok::<(), Status>(())
        };
        catch_up().await?;
        // The earlier day's open parcels join this one first.
        let mut carried: HashMap<String, (u32, u32)> = HashMap::new();
        if let Some(from) = carry_from {
            let open = self
                .parcels
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .on(from);
            for (depot, parcels) in open {
                if !r.depot_ids.is_empty() && !r.depot_ids.contains(&depot) {
                    continue;
                }
                for p in parcels {
                    let counts = carried.entry(depot.clone()).or_default();
                    match self.carry_over(&p.parcel_id, from, date, now()).await? {
                        Carried::Moved => counts.0 += 1,
                        Carried::Returned => counts.1 += 1,
                        Carried::Stayed => {}
                    }
                }
            }
            // The plan reads the parcels where they are now.
            catch_up().await?;
        }
        let mut days = self
            .parcels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .on(date);
        if !r.depot_ids.is_empty() {
            if let Some(missing) = r
                .depot_ids
                .iter()
                .find(|d| !days.iter().any(|(depot, _)| depot == *d))
            {
                return Err(Status::not_found(format!(
                    "depot {missing} has no parcels on {date}"
                )));
            }
            days.retain(|(depot, _)| r.depot_ids.contains(depot));
        }
        // The current plan of each depot: stop → van index, and its routes.
        let previous: Vec<Previous> = {
            let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
            days.iter()
                .map(|(depot, _)| {
                    let mut stops = HashMap::new();
                    let mut ids = Vec::new();
                    for route in routes.for_depot(depot, date) {
                        let Some(van) = van_index(&route.vehicle_id) else {
                            continue;
                        };
                        ids.push((route.route_id.clone(), van));
                        for s in &route.stops {
                            for p in &s.parcel_ids {
                                stops.insert(p.clone(), van);
                            }
                        }
                    }
                    Previous { stops, routes: ids }
                })
                .collect()
        };

        // Every depot in parallel, one per core.
        let fleets = Arc::clone(&self.fleets);
        let matrix = Arc::clone(&self.matrix);
        let vault = Arc::clone(&self.vault);
        let options = if r.generations > 0 {
            Options::repeatable(objective, r.generations as usize, r.seed)
        } else {
            Options::seconds(objective, seconds)
        };
        let solving = Arc::clone(&self.solving);
        let turn = Arc::new(turn);
        let solve_turn = Arc::clone(&turn);
        let outcomes = tokio::task::spawn_blocking(move || {
            // The turn is the solve's until it ends, called off or not.
            let _turn = solve_turn;
            let _counted = Solving::count(&solving);
            let work: Vec<_> = days.iter().zip(&previous).collect();
            in_parallel(&work, |((depot, parcels), previous)| {
                plan_depot(
                    depot, date, parcels, previous, &fleets, &*matrix, &vault, options,
                )
            })
        })
        .await
        .map_err(|e| Status::internal(format!("planning failed: {e}")))?;

        let planned_at = now();
        let mut reply = PlanDayReply::default();
        for outcome in outcomes {
            let mut outcome = outcome.map_err(Status::failed_precondition)?;
            let mut placed = Vec::new();
            for command in &outcome.routes {
                let RouteCommand::Plan {
                    route_id, stops, ..
                } = command
                else {
                    continue;
                };
                let stream = StreamId::route(route_id);
                let decided = decide::<Route>(&*self.log, &stream, command, |_| {
                    (EventId::new(), planned_at)
                })
                .await
                .map_err(status)?;
                let plan_version = match decided.events.last() {
                    Some(RouteEvent::Planned(p)) => p.plan_version,
                    Some(RouteEvent::Replanned(r)) => r.plan_version,
                    // Unchanged: the version in effect.
                    _ => {
                        load::<Route>(&*self.log, &stream)
                            .await
                            .map_err(status)?
                            .0
                            .plan_version
                    }
                };
                if !decided.events.is_empty() {
                    outcome.reply.routes_changed += 1;
                }
                for (stop_index, stop) in (0u32..).zip(stops) {
                    for parcel in &stop.parcel_ids {
                        placed.push((
                            parcel.clone(),
                            ParcelCommand::AssignToRoute {
                                route_id: route_id.clone(),
                                plan_version,
                                stop_index,
                            },
                        ));
                    }
                }
            }
            // Each placed parcel's own stream says so (what partners track
            // as on_route), after its route.
            self.assign(placed, planned_at).await?;
            // After the routes: a reason is recorded only for a plan in effect.
            for u in &outcome.reply.unassigned {
                let placed_since = outcome.placed_before.contains(&u.parcel_id);
                self.leave_out(&u.parcel_id, date, &u.reason, planned_at, placed_since)
                    .await?;
            }
            if let Some((moved, returned)) = carried.get(&outcome.reply.depot_id) {
                outcome.reply.carried_over = *moved;
                outcome.reply.returned = *returned;
            }
            reply.depots.push(outcome.reply);
        }
        Ok(Response::new(reply))
    }
}
