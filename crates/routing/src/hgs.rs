//! The planner's problem handed to `threshold-solver`'s hybrid genetic
//! search, and its answer read back as visiting orders per van.
//!
//! The solver works in integers. Times and travel are scaled by one factor
//! (10 000 per second or metre, smaller when the figures would not fit), and
//! rounded so that whatever the solver finds on time is on time in double
//! precision too: travel and service times, window openings and shift starts
//! round up; window closings and shift ends round down. Distances round to
//! the nearest unit: they only steer the search, the plan's distance is
//! recomputed from the table.
//!
//! Under [`Objective::Business`] (fewest vans, then driving time, then
//! distance) a leg costs its driving time plus a thousandth of its metres,
//! and each van used costs more than any plan's whole travel can (the sum of
//! every stop's round trip from the depot, which bounds any route under the
//! triangle inequality), so fewer vans always win. Under
//! [`Objective::Distance`] a leg costs its distance and vans are free.

use std::time::Duration;

use threshold_solver as hgs;

use crate::solve::{Budget, random_seed};
use crate::{Error, Objective, Problem};

/// Scale of times and travel: units per second (or metre).
const SCALE: f64 = 10_000.0;
/// The solver's bound on any figure (2^40), with room for sums.
const LIMIT: f64 = (1u64 << 36) as f64;
/// The solver's bound on a fixed cost.
const FIXED_LIMIT: i64 = (1 << 40) - 1;
/// Skill bit: cleared for in-home delivery.
const IN_HOME: u64 = 1;

/// The solver's answer: each van's visiting order (indices into
/// [`Problem::stops`]), and the stops it left out with the solver's reason.
pub(crate) struct Orders {
    pub(crate) routes: Vec<Vec<usize>>,
    pub(crate) left: Vec<(usize, String)>,
}

/// Plans the `solvable` stops of `problem` with the genetic search.
pub(crate) fn plan(
    problem: &Problem,
    solvable: &[usize],
    objective: Objective,
    budget: Budget,
) -> Result<Orders, Error> {
    let t = &problem.table;
    let n = t.len();
    // Times from the earliest shift start, so none is negative.
    let origin = problem
        .vans
        .iter()
        .map(|v| v.shift.0)
        .fold(f64::INFINITY, f64::min);
    let horizon = problem
        .vans
        .iter()
        .map(|v| v.shift.1 - origin)
        .fold(0.0, f64::max);
    let largest = t
        .durations()
        .iter()
        .chain(t.distances())
        .fold(horizon, |m, &x| m.max(x));
    let mut scale = SCALE;
    while scale > 1.0 && largest * scale >= LIMIT {
        scale /= 10.0;
    }
    let up = |x: f64| (x * scale).ceil().max(0.0) as i64;
    let down = |x: f64| (x * scale).floor() as i64;
    let near = |x: f64| (x * scale).round().max(0.0) as i64;

    let duration: Vec<i64> = t.durations().iter().map(|&d| up(d)).collect();
    let cost = |a: usize, b: usize| match objective {
        Objective::Distance => near(t.distance(a, b)),
        Objective::Business => near(t.duration(a, b) + t.distance(a, b) / 1000.0),
    };
    let mut distance = Vec::with_capacity(n * n);
    for a in 0..n {
        for b in 0..n {
            distance.push(cost(a, b));
        }
    }

    // Identical vans form one vehicle type; `members[k]` are its vans.
    let mut types: Vec<hgs::VehicleType> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (i, v) in problem.vans.iter().enumerate() {
        let shift = (up(v.shift.0 - origin), down(v.shift.1 - origin));
        if shift.1 < shift.0 {
            continue;
        }
        let ty = hgs::VehicleType {
            count: 1,
            capacity: vec![i64::from(v.capacity.weight), i64::from(v.capacity.volume)],
            start: 0,
            end: 0,
            shift,
            skills: if v.in_home { IN_HOME } else { 0 },
            fixed_cost: 0,
        };
        match types
            .iter()
            .position(|k| k.capacity == ty.capacity && k.shift == ty.shift && k.skills == ty.skills)
        {
            Some(k) => {
                types[k].count += 1;
                members[k].push(i);
            }
            None => {
                types.push(ty);
                members.push(vec![i]);
            }
        }
    }

    let (open_all, close_all) = (0, types.iter().map(|k| k.shift.1).max().unwrap_or(0));
    let mut clients = Vec::with_capacity(solvable.len());
    let mut index = Vec::with_capacity(solvable.len());
    let mut left = Vec::new();
    for &i in solvable {
        let s = &problem.stops[i];
        let window = match s.window {
            Some((a, z)) => (up((a - origin).max(0.0)), down(z - origin).min(close_all)),
            None => (open_all, close_all),
        };
        if window.1 < window.0 || types.is_empty() {
            // Too narrow to keep in whole units: the repair step, in
            // double precision, tries it.
            left.push((
                i,
                "its window is narrower than the planner's time step".into(),
            ));
            continue;
        }
        clients.push(hgs::Client {
            location: s.location,
            demand: vec![i64::from(s.load.weight), i64::from(s.load.volume)],
            window,
            service: up(s.service),
            skills: if s.in_home { IN_HOME } else { 0 },
        });
        index.push(i);
    }
    let mut routes = vec![Vec::new(); problem.vans.len()];
    if clients.is_empty() {
        return Ok(Orders { routes, left });
    }
    if objective == Objective::Business {
        let round_trips = clients.iter().fold(0i64, |sum, c| {
            sum.saturating_add(distance[c.location] + distance[c.location * n])
        });
        let fixed = round_trips.saturating_add(1).min(FIXED_LIMIT);
        for k in &mut types {
            k.fixed_cost = fixed;
        }
    }

    let mut params = hgs::Params::default();
    match budget {
        Budget::Generations { generations, seed } => {
            params.seed = seed;
            params.iterations = Some(generations as u64);
            params.time_limit = None;
        }
        Budget::Seconds(s) => {
            params.seed = random_seed();
            params.iterations = None;
            // An endless budget is a day's search; the clock still bounds it.
            let s = if s.is_finite() { s.max(0.0) } else { 86_400.0 };
            params.time_limit = Some(Duration::from_secs_f64(s));
        }
    }
    let input = hgs::Problem {
        locations: n,
        distance,
        duration,
        dimensions: 2,
        clients,
        vehicle_types: types,
    };
    let solution = hgs::solve(&input, &params).map_err(|e| Error::Solver(e.to_string()))?;
    for r in &solution.routes {
        let van = members
            .get(r.vehicle_type)
            .and_then(|m| m.get(r.vehicle))
            .copied()
            .ok_or_else(|| Error::Solver("a route on a vehicle that does not exist".into()))?;
        let order: Option<Vec<usize>> = r.clients.iter().map(|&c| index.get(c).copied()).collect();
        routes[van] = order
            .ok_or_else(|| Error::Solver("a route with a client that does not exist".into()))?;
    }
    for u in &solution.unassigned {
        let stop = index
            .get(u.client)
            .copied()
            .ok_or_else(|| Error::Solver("left out a client that does not exist".into()))?;
        let why = match u.reason {
            hgs::Reason::NoCompatibleVehicle => "no van's driver is cleared for in-home delivery",
            hgs::Reason::ExceedsCapacity => "more than any van that may take it carries",
            hgs::Reason::WindowUnreachable => "its window cannot be met within any shift",
            hgs::Reason::FleetExhausted => "the fleet cannot serve every stop",
        };
        left.push((stop, why.into()));
    }
    // A budget too small to finish even the first solutions leaves clients
    // in neither list: they go to the repair step like the others.
    let mut covered = vec![false; index.len()];
    for c in solution
        .routes
        .iter()
        .flat_map(|r| &r.clients)
        .chain(solution.unassigned.iter().map(|u| &u.client))
    {
        if let Some(x) = covered.get_mut(*c) {
            *x = true;
        }
    }
    for (c, &stop) in index.iter().enumerate() {
        if !covered[c] {
            left.push((stop, "the search ended before placing it".into()));
        }
    }
    Ok(Orders { routes, left })
}
