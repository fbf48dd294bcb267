//! The problem handed to vrp-core, and its answer read back.

use std::collections::HashSet;
use std::sync::Arc;

use vrp_core::construction::features::{
    JobSkills, JobSkillsDimension, VehicleSkillsDimension, create_minimize_tours_feature,
    create_skills_feature,
};
use vrp_core::construction::heuristics::UnassignmentInfo;
use vrp_core::models::common::{Demand, MultiDimLoad, TimeWindow};
use vrp_core::models::problem::{JobIdDimension, VehicleIdDimension};
use vrp_core::models::{Goal, ViolationCode};
use vrp_core::prelude::*;
use vrp_core::rosomaxa::evolution::TelemetryMode;
use vrp_core::rosomaxa::utils::{Parallelism, TimeQuota};

use crate::{Error, Load, Objective, Plan, Problem, Route, Stop, Unassigned, Visit};

/// How to solve.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// What to minimise.
    pub objective: Objective,
    /// Wall-clock seconds the search may take (the initial solution is
    /// always completed).
    pub seconds: f64,
    /// Use a fixed random seed, so a run can be repeated (with the same
    /// generation count; a time limit still varies the result).
    pub repeatable: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            objective: Objective::Business,
            seconds: 5.0,
            repeatable: false,
        }
    }
}

const TIME: ViolationCode = ViolationCode(1);
const CAPACITY: ViolationCode = ViolationCode(2);
const SKILL: ViolationCode = ViolationCode(3);
/// The skill a van needs for in-home stops.
const IN_HOME: &str = "in_home";

/// Plans `problem`. Stops no van could ever take (too heavy, no cleared
/// driver, a window out of every shift's reach) are reported unassigned
/// with their reason before the search; the rest go to vrp-core.
pub fn solve(problem: &Problem, options: Options) -> Result<Plan, Error> {
    problem.validate()?;
    let mut unassigned = Vec::new();
    let mut solvable = Vec::new();
    for (i, stop) in problem.stops.iter().enumerate() {
        match alone(problem, stop) {
            Ok(()) => solvable.push(i),
            Err(reason) => unassigned.push(Unassigned { stop: i, reason }),
        }
    }
    if solvable.is_empty() || problem.vans.is_empty() {
        return Ok(Plan {
            routes: Vec::new(),
            unassigned,
        });
    }

    let vrp = build(problem, &solvable, options.objective)?;
    let vrp = Arc::new(vrp);
    let random: Arc<dyn Random> = if options.repeatable {
        Arc::new(DefaultRandom::new_repeatable())
    } else {
        Arc::new(DefaultRandom::default())
    };
    let environment = Arc::new(Environment::new(
        random,
        Some(Arc::new(TimeQuota::new(options.seconds.max(0.0)))),
        Parallelism::default(),
        Arc::new(|_: &str| {}),
        false,
    ));
    let config = VrpConfigBuilder::new(vrp.clone())
        .set_environment(environment)
        .set_telemetry_mode(TelemetryMode::None)
        .prebuild()
        .and_then(|c| {
            c.with_max_time(Some(options.seconds.ceil().max(1.0) as usize))
                .build()
        })
        .map_err(|e| Error::Solver(e.to_string()))?;
    let solution = Solver::new(vrp, config)
        .solve()
        .map_err(|e| Error::Solver(e.to_string()))?;

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
    routes.sort_by_key(|r| r.van);
    for (job, info) in &solution.unassigned {
        let stop = job_stop(job.dimens())?;
        let code = match info {
            UnassignmentInfo::Simple(c) => Some(*c),
            UnassignmentInfo::Detailed(list) => list.first().map(|(_, c)| *c),
            UnassignmentInfo::Unknown => None,
        };
        let reason = match code {
            Some(TIME) => "no van reaches it inside its window and back within its shift",
            Some(CAPACITY) => "no van has room left for it",
            Some(SKILL) => "no van with a driver cleared for in-home delivery has room for it",
            _ => "no van could take it",
        };
        unassigned.push(Unassigned {
            stop,
            reason: reason.into(),
        });
    }
    unassigned.sort_by_key(|u| u.stop);
    Ok(Plan { routes, unassigned })
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
