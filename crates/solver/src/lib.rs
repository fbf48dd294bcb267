//! A solver for vehicle routing with time windows: hybrid genetic search
//! with a granular local search, penalised infeasibility (load excess and
//! time warp) and route-exchange crossover.
//!
//! # Public API
//!
//! - [`Problem`]: integer distance and duration matrices over locations,
//!   [`Client`]s (location, demand vector, time window, service duration,
//!   required skills as a bitmask) and [`VehicleType`]s (count, capacity
//!   vector, start and end location, shift, skills bitmask, fixed cost).
//!   Matrices are integers: callers pick the scale (the Solomon benchmark
//!   uses 1/10 000 of a unit, durations rounded up so a plan feasible here
//!   is feasible in exact arithmetic).
//! - [`solve`]`(&problem, &`[`Params`]`) -> Result<`[`Solution`]`, `[`Error`]`>`.
//!   [`Params`] holds the seed, the time limit and/or the iteration budget
//!   and search sizes. With an iteration budget and no time limit the result
//!   is bit-identical for a given seed.
//! - [`Solution`]: one [`Route`] per used vehicle (its type, its index
//!   among that type's vehicles, the client indices in visiting order), the
//!   [`Unassigned`] clients each with a [`Reason`], the total distance and
//!   whether every constraint holds.
//!
//! Clients that no vehicle could serve even alone (no vehicle type has the
//! skills, demand above every compatible capacity, window unreachable within
//! any compatible shift) are reported with that reason and left out of the
//! search. If the fleet cannot serve all the others, clients are taken out
//! of violating routes until the plan is feasible and are reported as
//! [`Reason::FleetExhausted`].
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use threshold_solver::{Client, Params, Problem, VehicleType, solve};
//!
//! // A depot (location 0) and two clients on a line, 10 apart.
//! let d = vec![0, 10, 20, 10, 0, 10, 20, 10, 0];
//! let client = |location| Client {
//!     location,
//!     demand: vec![1, 1],
//!     window: (0, 100),
//!     service: 5,
//!     skills: 0,
//! };
//! let problem = Problem {
//!     locations: 3,
//!     distance: d.clone(),
//!     duration: d,
//!     dimensions: 2,
//!     clients: vec![client(1), client(2)],
//!     vehicle_types: vec![VehicleType {
//!         count: 2,
//!         capacity: vec![5, 5],
//!         start: 0,
//!         end: 0,
//!         shift: (0, 200),
//!         skills: 0,
//!         fixed_cost: 0,
//!     }],
//! };
//! let params = Params { iterations: Some(20), time_limit: None, ..Params::default() };
//! let solution = solve(&problem, &params)?;
//! assert_eq!(solution.distance, 40);
//! assert_eq!(solution.routes.len(), 1);
//! # Ok::<(), threshold_solver::Error>(())
//! ```
//!
//! # Benchmark
//!
//! `cargo bench -p threshold-solver --bench solomon` runs the 56 Solomon
//! instances (5 s each by default) and optionally Gehring & Homberger ones,
//! checks every plan in double precision, prints the gap to the best-known
//! distance (and to a peer solver's, given its results) and writes JSON
//! under `target/bench/`; see the bench's module docs for the settings.
//! `benches/pyvrp_peer.py` produces the peer figures with PyVRP.
//!
//! # Layout
//!
//! - `model`: validation, the flat internal data and the unassignable check.
//! - `segment`: route segments with O(1) concatenation (distance, load,
//!   duration, time warp).
//! - `local`: the granular local search (relocate, swap, 2-opt*, intra-route
//!   moves) and greedy insertion.
//! - `genetic`: population, diversity, crossover, penalty control, route
//!   elimination (with fixed vehicle costs), restarts.
//! - `rng`: the seeded generator.

mod genetic;
mod local;
mod model;
mod rng;
mod segment;

use std::time::Duration;

/// The largest number of load dimensions (weight, volume, ...).
pub const MAX_DIMENSIONS: usize = 4;

/// Errors: the problem is malformed; each says what and where.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A field of the problem or parameters is invalid.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// Which item (e.g. "client 3").
        what: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// A client to visit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Index into the matrices.
    pub location: usize,
    /// Demand per dimension (as many as [`Problem::dimensions`]).
    pub demand: Vec<i64>,
    /// Earliest and latest start of service.
    pub window: (i64, i64),
    /// Service duration.
    pub service: i64,
    /// Skills the vehicle must have (bitmask).
    pub skills: u64,
}

/// A kind of vehicle, `count` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VehicleType {
    /// How many vehicles of this type there are.
    pub count: usize,
    /// Capacity per dimension.
    pub capacity: Vec<i64>,
    /// Location the route starts at.
    pub start: usize,
    /// Location the route ends at.
    pub end: usize,
    /// Earliest departure and latest return.
    pub shift: (i64, i64),
    /// Skills the vehicle has (bitmask).
    pub skills: u64,
    /// Cost of using one vehicle of this type, in distance units. When
    /// any type has one, the search also tries to empty the smallest route
    /// of its plans; when every type has one, its infeasibility penalties
    /// start no lower than the rate at which the cheapest vehicle buys
    /// capacity and time (see `genetic`). With no fixed cost at all, the
    /// search is exactly as without these steps.
    pub fixed_cost: i64,
}

/// A routing problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Number of locations; matrices are `locations * locations`, row-major.
    pub locations: usize,
    /// Distance from row to column.
    pub distance: Vec<i64>,
    /// Travel time from row to column.
    pub duration: Vec<i64>,
    /// Load dimensions, 1 to [`MAX_DIMENSIONS`].
    pub dimensions: usize,
    /// The clients; a solution refers to them by index.
    pub clients: Vec<Client>,
    /// The fleet.
    pub vehicle_types: Vec<VehicleType>,
}

/// Search parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Seed of every random choice.
    pub seed: u64,
    /// Stop after this long (wall clock).
    pub time_limit: Option<Duration>,
    /// Stop after this many genetic iterations.
    pub iterations: Option<u64>,
    /// Neighbours per client considered by the local search.
    pub granular: usize,
    /// Minimum subpopulation size.
    pub population: usize,
    /// Offspring per generation before survivor selection.
    pub generation: usize,
    /// Restart the population after this many iterations without a better
    /// solution.
    pub restart_after: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            seed: 1,
            time_limit: Some(Duration::from_secs(5)),
            iterations: None,
            granular: 30,
            population: 25,
            generation: 40,
            restart_after: 20_000,
        }
    }
}

/// One vehicle's route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Index of the vehicle type.
    pub vehicle_type: usize,
    /// Which of that type's vehicles (0-based).
    pub vehicle: usize,
    /// Client indices in visiting order.
    pub clients: Vec<usize>,
}

/// Why a client is not in any route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No vehicle type has all the skills the client needs.
    NoCompatibleVehicle,
    /// The demand exceeds the capacity of every compatible vehicle type.
    ExceedsCapacity,
    /// No compatible vehicle can reach the client within its window and
    /// return within its shift.
    WindowUnreachable,
    /// Each client could be served alone, but the fleet cannot serve them all.
    FleetExhausted,
}

/// A client left out, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unassigned {
    /// Client index.
    pub client: usize,
    /// Why.
    pub reason: Reason,
}

/// The best plan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solution {
    /// Non-empty routes.
    pub routes: Vec<Route>,
    /// Clients not served.
    pub unassigned: Vec<Unassigned>,
    /// Total distance of the routes.
    pub distance: i64,
    /// Distance plus fixed costs of the used vehicles.
    pub cost: i64,
    /// Genetic iterations run.
    pub iterations: u64,
}

/// Solves `problem`; stops at the time limit or iteration budget, whichever
/// comes first (at least one must be given).
pub fn solve(problem: &Problem, params: &Params) -> Result<Solution, Error> {
    let data = model::Data::new(problem, params)?;
    Ok(genetic::run(&data, params))
}
