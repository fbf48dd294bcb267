//! An independent check of a plan against its problem: recomputes every
//! route from the travel table, without the solver's schedule or state.

use crate::{Load, Plan, Problem};

/// Tolerance for floating-point schedules (seconds, or Solomon units).
const EPS: f64 = 1e-6;

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
