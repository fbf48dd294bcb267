//! The problem handed to vrp-core, and its answer read back.

use std::collections::HashSet;
use std::sync::Arc;

use vrp_core::construction::features::{
    JobSkills, JobSkillsDimension, VehicleSkillsDimension, create_minimize_tours_feature,
    create_skills_feature,
};
use vrp_core::models::common::{Demand, MultiDimLoad, TimeWindow};
use vrp_core::models::problem::{JobIdDimension, VehicleIdDimension};
use vrp_core::models::{Goal, ViolationCode};
use vrp_core::prelude::*;
use vrp_core::rosomaxa::evolution::TelemetryMode;
use vrp_core::rosomaxa::utils::{Parallelism, ThreadPool, TimeQuota};

use crate::insert::Routes;
use crate::{Error, Load, Objective, Plan, Problem, Route, Stop, Unassigned, Visit};

/// How much search, and whether it can be repeated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// Production: search for this many wall-clock seconds (the initial
    /// solution is always completed). Two runs may differ.
    Seconds(f64),
    /// Repeatable: a fixed number of generations from a random source seeded
    /// with `seed`, on one thread, never looking at a clock. The same
    /// problem, seed and count give the same plan on any run and any machine
    /// load. [`Engine::Hgs`] and [`Engine::Insertion`] repeat; for
    /// [`Engine::Hgs`] a generation is one offspring of its genetic search.
    Generations {
        /// Generations of the search after the initial solution.
        generations: usize,
        /// Seeds the random source.
        seed: u64,
    },
}

/// Which search engine plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// Threshold's hybrid genetic search (the `threshold-solver` crate):
    /// the shortest routes, and repeats exactly under a
    /// [`Budget::Generations`].
    #[default]
    Hgs,
    /// vrp-core's rosomaxa metaheuristic; time-bounded only.
    VrpCore,
    /// Threshold's own seeded ruin-and-recreate search over cheapest
    /// insertions: repeats exactly under a [`Budget::Generations`].
    Insertion,
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hgs" => Ok(Engine::Hgs),
            "vrp-core" => Ok(Engine::VrpCore),
            "insertion" => Ok(Engine::Insertion),
            other => Err(format!(
                "{other:?} is not an engine (hgs, vrp-core, insertion)"
            )),
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Hgs => "hgs",
            Engine::VrpCore => "vrp-core",
            Engine::Insertion => "insertion",
        })
    }
}

/// How to solve.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// What to minimise.
    pub objective: Objective,
    /// How long to search.
    pub budget: Budget,
    /// Threads the search may use; 0: every core. A [`Budget::Generations`]
    /// search always uses one. Only [`Engine::VrpCore`] reads it:
    /// [`Engine::Hgs`] and [`Engine::Insertion`] always search on the
    /// calling thread alone, so a day of many depots is planned in
    /// parallel by planning several depots at once (one per core, as
    /// [`in_parallel`](crate::in_parallel) does), not by giving one depot
    /// more threads.
    pub threads: usize,
    /// The engine.
    pub engine: Engine,
}

impl Options {
    /// `seconds` of search on every core, with `objective`.
    pub fn seconds(objective: Objective, seconds: f64) -> Self {
        Self {
            objective,
            budget: Budget::Seconds(seconds),
            ..Self::default()
        }
    }

    /// A repeatable search of `generations` seeded with `seed`, with the
    /// default engine, which repeats.
    pub fn repeatable(objective: Objective, generations: usize, seed: u64) -> Self {
        Self {
            objective,
            budget: Budget::Generations { generations, seed },
            threads: 1,
            engine: Engine::Hgs,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            objective: Objective::Business,
            budget: Budget::Seconds(5.0),
            threads: 0,
            engine: Engine::Hgs,
        }
    }
}

const TIME: ViolationCode = ViolationCode(1);
const CAPACITY: ViolationCode = ViolationCode(2);
const SKILL: ViolationCode = ViolationCode(3);
/// The skill a van needs for in-home stops.
const IN_HOME: &str = "in_home";

/// Plans `problem`. Stops no van could take even alone (too heavy, no
/// cleared driver, a window out of every shift's reach) are kept out of the
/// search; the rest go to the engine. Then every stop left out is tried
/// again: at its cheapest feasible position in any route, else after moving
/// one nearby stop elsewhere. What still fits nowhere is reported with a
/// [`Cause`](crate::Cause) that [`check`](crate::check) confirms.
pub fn solve(problem: &Problem, options: Options) -> Result<Plan, Error> {
    problem.validate()?;
    let mut details = std::collections::HashMap::new();
    let mut solvable = Vec::new();
    for (i, stop) in problem.stops.iter().enumerate() {
        match alone(problem, stop) {
            Ok(()) => solvable.push(i),
            Err(reason) => {
                details.insert(i, reason);
            }
        }
    }
    let (mut routes, mut left) = if solvable.is_empty() || problem.vans.is_empty() {
        (Vec::new(), solvable)
    } else {
        match (options.engine, options.budget) {
            (Engine::Hgs, budget) => {
                let orders = crate::hgs::plan(problem, &solvable, options.objective, budget)?;
                let mut r = Routes::new(problem, options.objective, orders.routes);
                let mut left: Vec<usize> = orders.left.iter().map(|(s, _)| *s).collect();
                if !left.is_empty() {
                    // Stops the genetic search could not fit: the insertion
                    // search, from its routes, on the same budget (a tenth
                    // of the time, at most a second), may pack them in.
                    let (generations, seed, deadline) = match budget {
                        Budget::Generations { generations, seed } => (generations, seed, None),
                        Budget::Seconds(s) => (
                            usize::MAX,
                            random_seed(),
                            Some(
                                std::time::Instant::now()
                                    + std::time::Duration::from_secs_f64(
                                        (s / 10.0).clamp(0.0, 1.0),
                                    ),
                            ),
                        ),
                    };
                    left = r.search(left, generations, seed, deadline);
                }
                // The solver's reason, for the stops still out.
                for (stop, why) in orders.left {
                    if left.contains(&stop) {
                        details.entry(stop).or_insert(why);
                    }
                }
                let routes = (0..problem.vans.len()).filter_map(|v| r.route(v)).collect();
                (routes, left)
            }
            (Engine::VrpCore, Budget::Seconds(_)) => {
                let vrp = Arc::new(build(problem, &solvable, options.objective)?);
                read_back(&search(vrp, options)?)?
            }
            (Engine::VrpCore, Budget::Generations { .. }) => {
                return Err(Error::Invalid {
                    what: "options".into(),
                    detail: "vrp-core cannot repeat a run (its search iterates hash maps seeded per process); plan repeatably with the insertion engine".into(),
                });
            }
            (Engine::Insertion, budget) => {
                let (generations, seed) = match budget {
                    Budget::Generations { generations, seed } => (generations, seed),
                    // Time-bounded: as many generations as fit, from a random seed.
                    Budget::Seconds(_) => (usize::MAX, random_seed()),
                };
                let deadline = match budget {
                    Budget::Seconds(s) if s.is_finite() => Some(
                        std::time::Instant::now() + std::time::Duration::from_secs_f64(s.max(0.0)),
                    ),
                    _ => None,
                };
                let mut r = Routes::new(
                    problem,
                    options.objective,
                    vec![Vec::new(); problem.vans.len()],
                );
                let left = r.search(solvable, generations, seed, deadline);
                let routes = (0..problem.vans.len()).filter_map(|v| r.route(v)).collect();
                (routes, left)
            }
        }
    };
    // Everything not planned, the stops kept out first: try them again.
    left.extend(details.keys().copied());
    left.sort_unstable();
    left.dedup();
    let mut orders = vec![Vec::new(); problem.vans.len()];
    for r in &routes {
        if let Some(o) = orders.get_mut(r.van) {
            *o = r.visits.iter().map(|v| v.stop).collect();
        }
    }
    let mut repaired = Routes::new(problem, options.objective, orders);
    let (still, changed) = repaired.repair(&left);
    for van in changed {
        routes.retain(|r| r.van != van);
        routes.extend(repaired.route(van));
    }
    routes.sort_by_key(|r| r.van);
    let mut unassigned = Vec::new();
    for s in still {
        let Some(cause) = repaired.blocked(s) else {
            return Err(Error::Solver(format!(
                "stop {} fits a route but was not placed",
                problem.stops[s].id
            )));
        };
        let reason = match details.get(&s) {
            Some(d) if d != cause.describe() => format!("{}: {d}", cause.describe()),
            _ => cause.describe().to_owned(),
        };
        unassigned.push(Unassigned {
            stop: s,
            reason,
            cause: Some(cause),
        });
    }
    Ok(Plan { routes, unassigned })
}

/// A seed for a time-bounded search, from the clock.
pub(crate) fn random_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// vrp-core's routes and the stops it left out.
fn read_back(solution: &Solution) -> Result<(Vec<Route>, Vec<usize>), Error> {
    let mut routes = Vec::new();
    for route in &solution.routes {
        let van: usize = route
            .actor
            .vehicle
            .dimens
            .get_vehicle_id()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| Error::Solver("a route without its van".into()))?;
        let mut visits = Vec::new();
        for a in route.tour.all_activities() {
            let Some(single) = &a.job else { continue };
            let stop = job_stop(&single.dimens)?;
            visits.push(Visit {
                stop,
                arrival: a.schedule.arrival,
                start: a.schedule.arrival.max(a.place.time.start),
                departure: a.schedule.departure,
            });
        }
        if visits.is_empty() {
            continue;
        }
        routes.push(Route {
            van,
            departure: route.tour.start().map_or(0.0, |s| s.schedule.departure),
            visits,
            back: route.tour.end().map_or(0.0, |e| e.schedule.arrival),
        });
    }
    let mut left = Vec::new();
    for (job, _) in &solution.unassigned {
        left.push(job_stop(job.dimens())?);
    }
    Ok((routes, left))
}

/// Runs vrp-core's search for `options`' seconds on `options`' threads.
fn search(vrp: Arc<vrp_core::models::Problem>, options: Options) -> Result<Solution, Error> {
    let seconds = match options.budget {
        Budget::Seconds(s) if s.is_finite() => s.max(0.0),
        _ => 0.0,
    };
    let threads = if options.threads == 0 {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    } else {
        options.threads
    };
    let environment = Arc::new(Environment::new(
        Arc::new(DefaultRandom::default()),
        Some(Arc::new(TimeQuota::new(seconds))),
        Parallelism::new_with_cpus(threads),
        Arc::new(|_: &str| {}),
        false,
    ));
    let run = move || {
        let config = VrpConfigBuilder::new(vrp.clone())
            .set_environment(environment)
            .set_telemetry_mode(TelemetryMode::None)
            .prebuild()
            .and_then(|c| {
                c.with_max_time(Some(seconds.ceil().max(1.0) as usize))
                    .build()
            })
            .map_err(|e| Error::Solver(e.to_string()))?;
        Solver::new(vrp, config)
            .solve()
            .map_err(|e| Error::Solver(e.to_string()))
    };
    if threads == 1 {
        // Its parallel steps run on this one thread, not on rayon's global pool.
        ThreadPool::new(1).execute(run)
    } else {
        run()
    }
}

fn job_stop(dimens: &Dimensions) -> Result<usize, Error> {
    dimens
        .get_job_id()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| Error::Solver("a job without its stop".into()))
}

/// Why no van, even empty and serving nothing else, could take `stop`.
fn alone(problem: &Problem, stop: &Stop) -> Result<(), String> {
    let t = &problem.table;
    let (out, back) = (t.duration(0, stop.location), t.duration(stop.location, 0));
    let mut reasons = Vec::new();
    let vans: Vec<_> = problem
        .vans
        .iter()
        .filter(|v| !stop.in_home || v.in_home)
        .collect();
    if vans.is_empty() {
        return Err("no van's driver is cleared for in-home delivery".into());
    }
    let vans: Vec<_> = vans
        .into_iter()
        .filter(|v| stop.load.fits(v.capacity))
        .collect();
    if vans.is_empty() {
        return Err(format!(
            "{} g, {} cm³ is more than any {}van carries",
            stop.load.weight,
            stop.load.volume,
            if stop.in_home { "cleared " } else { "" }
        ));
    }
    for v in vans {
        let arrive = v.shift.0 + out;
        let (open, close) = stop.window.unwrap_or((f64::MIN, f64::MAX));
        let start = arrive.max(open);
        if start > close + 1e-9 {
            reasons.push(format!(
                "its window closes at {close:.0} s, the earliest arrival is {arrive:.0} s"
            ));
            continue;
        }
        if start + stop.service + back > v.shift.1 + 1e-9 {
            reasons.push(format!(
                "serving it ends a shift at {:.0} s, after {:.0} s",
                start + stop.service + back,
                v.shift.1
            ));
            continue;
        }
        return Ok(());
    }
    reasons.dedup();
    Err(format!("cannot be met: {}", reasons.join("; ")))
}

fn load(l: Load) -> MultiDimLoad {
    MultiDimLoad::new(vec![l.weight, l.volume])
}

/// The vrp-core problem for the `solvable` stops.
fn build(
    problem: &Problem,
    solvable: &[usize],
    objective: Objective,
) -> Result<vrp_core::models::Problem, Error> {
    let err = |e: GenericError| Error::Solver(e.to_string());
    let transport: Arc<dyn TransportCost> = Arc::new(
        SimpleTransportCost::new(
            problem.table.durations().to_vec(),
            problem.table.distances().to_vec(),
        )
        .map_err(err)?,
    );
    let mut jobs = Vec::with_capacity(solvable.len());
    for &i in solvable {
        let s = &problem.stops[i];
        let mut b = SingleBuilder::default()
            .id(&i.to_string())
            .demand(Demand {
                pickup: (MultiDimLoad::default(), MultiDimLoad::default()),
                delivery: (load(s.load), MultiDimLoad::default()),
            })
            .location(s.location)
            .map_err(err)?
            .duration(s.service)
            .map_err(err)?;
        if let Some((a, z)) = s.window {
            b = b.times(vec![TimeWindow::new(a, z)]).map_err(err)?;
        }
        if s.in_home {
            b = b.dimension(|d| {
                d.set_job_skills(JobSkills::new(Some(vec![IN_HOME.into()]), None, None));
            });
        }
        jobs.push(b.build_as_job().map_err(err)?);
    }
    let mut vehicles = Vec::with_capacity(problem.vans.len());
    for (i, v) in problem.vans.iter().enumerate() {
        let skills: HashSet<String> = if v.in_home {
            HashSet::from([IN_HOME.to_owned()])
        } else {
            HashSet::new()
        };
        let mut vehicle = VehicleBuilder::default()
            .id(&i.to_string())
            .add_detail(
                VehicleDetailBuilder::default()
                    .set_start_location(0)
                    .set_start_time(v.shift.0)
                    .set_end_location(0)
                    .set_end_time(v.shift.1)
                    .build()
                    .map_err(err)?,
            )
            .capacity(load(v.capacity))
            .dimension(|d| {
                d.set_vehicle_skills(skills);
            })
            .build()
            .map_err(err)?;
        match objective {
            // Driving time first; a metre is worth a millisecond, to break ties.
            Objective::Business => {
                vehicle.costs.per_driving_time = 1.0;
                vehicle.costs.per_distance = 0.001;
            }
            Objective::Distance => {
                vehicle.costs.per_distance = 1.0;
            }
        }
        vehicles.push(vehicle);
    }

    let transport_feature = TransportFeatureBuilder::new("travel")
        .set_violation_code(TIME)
        .set_time_constrained(true)
        .set_transport_cost(transport.clone());
    let transport_feature = match objective {
        Objective::Business => transport_feature.build_minimize_cost(),
        Objective::Distance => transport_feature.build_minimize_distance(),
    }
    .map_err(err)?;
    let features = vec![
        MinimizeUnassignedBuilder::new("unassigned")
            .build()
            .map_err(err)?,
        create_minimize_tours_feature("tours").map_err(err)?,
        transport_feature,
        CapacityFeatureBuilder::<MultiDimLoad>::new("capacity")
            .set_violation_code(CAPACITY)
            .build()
            .map_err(err)?,
        create_skills_feature("skills", SKILL).map_err(err)?,
    ];
    let (main, alternative): (&[&str], &[&str]) = match objective {
        Objective::Business => (
            &["unassigned", "tours", "travel"],
            &["unassigned", "travel"],
        ),
        Objective::Distance => (
            &["unassigned", "travel"],
            &["unassigned", "tours", "travel"],
        ),
    };
    let goal = GoalContextBuilder::with_features(&features)
        .map_err(err)?
        .set_main_goal(Goal::subset_of(&features, main).map_err(err)?)
        .add_alternative_goal(Goal::subset_of(&features, alternative).map_err(err)?, 0.1)
        .build()
        .map_err(err)?;
    ProblemBuilder::default()
        .add_jobs(jobs.into_iter())
        .add_vehicles(vehicles.into_iter())
        .with_goal(goal)
        .with_transport_cost(transport)
        .with_logger(Arc::new(|_: &str| {}))
        .build()
        .map_err(err)
}
