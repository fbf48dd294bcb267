//! An independent check of a plan against its problem: recomputes every
//! route from the travel table, without the solver's schedule or state.

use crate::{Cause, Load, Plan, Problem};

/// Tolerance for floating-point schedules (seconds, or Solomon units).
const EPS: f64 = 1e-6;
/// Tolerance when asking whether a left-out stop would fit: the planner's
/// own, so a stop at a rounding error from its window is not called
/// insertable by one and not by the other.
const STRICT: f64 = 1e-9;

/// One way a plan breaks its problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Violation {
    /// A van carries more than it can.
    #[error("van {van}: loads {load:?}, more than its capacity {capacity:?}")]
    Capacity {
        /// The van's index.
        van: usize,
        /// What the route hands over.
        load: Load,
        /// What it carries at most.
        capacity: Load,
    },
    /// Service starts outside the stop's window.
    #[error("stop {stop}: service starts at {start}, outside its window {window:?}")]
    Window {
        /// The stop's index.
        stop: usize,
        /// When service starts, recomputed.
        start: f64,
        /// Its window.
        window: (f64, f64),
    },
    /// An in-home stop on a van whose driver is not cleared.
    #[error("stop {stop}: in-home on van {van}, whose driver is not cleared")]
    Skill {
        /// The stop's index.
        stop: usize,
        /// The van's index.
        van: usize,
    },
    /// A van leaves before its shift or is back after it.
    #[error("van {van}: works {from}..{to}, outside its shift {shift:?}")]
    Shift {
        /// The van's index.
        van: usize,
        /// Departure.
        from: f64,
        /// Return, recomputed.
        to: f64,
        /// The shift.
        shift: (f64, f64),
    },
    /// The planned times cannot be driven.
    #[error("stop {stop}: planned at {planned}, but cannot start before {earliest}")]
    Schedule {
        /// The stop's index.
        stop: usize,
        /// The planned service start.
        planned: f64,
        /// The earliest possible, recomputed.
        earliest: f64,
    },
    /// A stop reported unplannable whose cause the plan's routes do not bear
    /// out: it fits somewhere (`found` is `None`), or it is blocked for
    /// another reason than the one given (or none was given).
    #[error("stop {stop}: reported unplannable ({claimed:?}), but {}", match found {
        None => "it fits into a route".to_string(),
        Some(c) => format!("the plan shows {c:?}: {c}"),
    })]
    Unconfirmed {
        /// The stop's index.
        stop: usize,
        /// The cause reported.
        claimed: Option<Cause>,
        /// The cause the checker finds; `None`: it fits.
        found: Option<Cause>,
    },
    /// A stop served twice, or neither served nor reported unassigned, or a
    /// van used twice, or an index out of range.
    #[error("{0}")]
    Coverage(String),
}

/// Every way `plan` breaks `problem`; empty when it is feasible.
pub fn check(problem: &Problem, plan: &Plan) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut seen = vec![0u32; problem.stops.len()];
    let mut vans = vec![false; problem.vans.len()];
    let t = &problem.table;
    for r in &plan.routes {
        let Some(van) = problem.vans.get(r.van) else {
            out.push(Violation::Coverage(format!(
                "route of unknown van {}",
                r.van
            )));
            continue;
        };
        if std::mem::replace(&mut vans[r.van], true) {
            out.push(Violation::Coverage(format!("van {} has two routes", r.van)));
        }
        let mut load = Load::default();
        // Driven from the recorded departure; waiting is allowed, hurrying not.
        let mut at = r.departure;
        let mut here = 0;
        for v in &r.visits {
            let Some(stop) = problem.stops.get(v.stop) else {
                out.push(Violation::Coverage(format!("unknown stop {}", v.stop)));
                continue;
            };
            seen[v.stop] += 1;
            load = load + stop.load;
            if stop.in_home && !van.in_home {
                out.push(Violation::Skill {
                    stop: v.stop,
                    van: r.van,
                });
            }
            let arrive = at + t.duration(here, stop.location);
            let (open, close) = stop.window.unwrap_or((f64::MIN, f64::MAX));
            let earliest = arrive.max(open);
            if v.start + EPS < earliest {
                out.push(Violation::Schedule {
                    stop: v.stop,
                    planned: v.start,
                    earliest,
                });
            }
            let start = v.start.max(earliest);
            if start > close + EPS {
                out.push(Violation::Window {
                    stop: v.stop,
                    start,
                    window: (open, close),
                });
            }
            at = start + stop.service;
            here = stop.location;
        }
        let back = at + t.duration(here, 0);
        if r.departure + EPS < van.shift.0 || back > van.shift.1 + EPS {
            out.push(Violation::Shift {
                van: r.van,
                from: r.departure,
                to: back,
                shift: van.shift,
            });
        }
        if !load.fits(van.capacity) {
            out.push(Violation::Capacity {
                van: r.van,
                load,
                capacity: van.capacity,
            });
        }
    }
    for u in &plan.unassigned {
        if u.stop < problem.stops.len() {
            let found = unplannable(problem, plan, u.stop);
            if found.is_none() || found != u.cause {
                out.push(Violation::Unconfirmed {
                    stop: u.stop,
                    claimed: u.cause,
                    found,
                });
            }
        }
        match seen.get_mut(u.stop) {
            Some(n) => *n += 1,
            None => out.push(Violation::Coverage(format!("unknown stop {}", u.stop))),
        }
        if u.reason.trim().is_empty() {
            out.push(Violation::Coverage(format!(
                "stop {} unassigned without a reason",
                u.stop
            )));
        }
    }
    for (i, n) in seen.iter().enumerate() {
        match n {
            1 => {}
            0 => out.push(Violation::Coverage(format!(
                "stop {} ({}) is neither planned nor reported unassigned",
                i, problem.stops[i].id
            ))),
            _ => out.push(Violation::Coverage(format!(
                "stop {} ({}) appears {n} times",
                i, problem.stops[i].id
            ))),
        }
    }
    out
}

/// Why `stop` fits nowhere in `plan`'s routes (or an unused van), trying it
/// at every position of every van that may take it and driving each
/// resulting route from the van's shift start; `None` when it fits.
/// Deliberately by brute force, sharing nothing with the planner's repair.
fn unplannable(problem: &Problem, plan: &Plan, stop: usize) -> Option<Cause> {
    let s = &problem.stops[stop];
    let t = &problem.table;
    let (mut any_skill, mut room_somewhere, mut full_somewhere) = (false, false, false);
    for (vi, van) in problem.vans.iter().enumerate() {
        if s.in_home && !van.in_home {
            continue;
        }
        any_skill = true;
        let order: Vec<usize> = plan
            .routes
            .iter()
            .filter(|r| r.van == vi)
            .flat_map(|r| r.visits.iter().map(|v| v.stop))
            .filter(|&x| x < problem.stops.len())
            .collect();
        let load = order.iter().fold(s.load, |l, &x| l + problem.stops[x].load);
        if !load.fits(van.capacity) {
            full_somewhere = true;
            continue;
        }
        room_somewhere = true;
        for at in 0..=order.len() {
            let mut seq = order.clone();
            seq.insert(at, stop);
            let (mut clock, mut here, mut on_time) = (van.shift.0, 0, true);
            for &x in &seq {
                let st = &problem.stops[x];
                let arrive = clock + t.duration(here, st.location);
                let (open, close) = st.window.unwrap_or((f64::MIN, f64::MAX));
                let start = arrive.max(open);
                if start > close + STRICT {
                    on_time = false;
                    break;
                }
                clock = start + st.service;
                here = st.location;
            }
            if on_time && clock + t.duration(here, 0) <= van.shift.1 + STRICT {
                return None;
            }
        }
    }
    Some(if !any_skill {
        Cause::Skill
    } else if !room_somewhere {
        Cause::Capacity
    } else if !full_somewhere {
        Cause::Time
    } else {
        Cause::CapacityOrTime
    })
}
