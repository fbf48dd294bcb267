//! Unplanned means unplannable: every stop a plan leaves out carries a
//! cause the independent checker confirms against the plan's routes, and
//! a stop that fits, perhaps only after moving others, is planned.

use threshold_routing::{
    Cause, Load, Objective, Options, Plan, Problem, Stop, Table, Unassigned, Van, Violation, check,
    solve,
};

fn van(i: usize, weight: i32, in_home: bool, shift: (f64, f64)) -> Van {
    Van {
        id: format!("v{i}"),
        driver_id: format!("d{i}"),
        capacity: Load { weight, volume: 0 },
        shift,
        in_home,
    }
}

fn stop(location: usize, weight: i32, window: Option<(f64, f64)>, in_home: bool) -> Stop {
    Stop {
        id: format!("s{location}"),
        location,
        load: Load { weight, volume: 0 },
        window,
        service: 1.0,
        in_home,
    }
}

/// A day whose stops pack into the vans only one way: 2 vans of 10 and
/// loads 3, 4, 6, 7 (3 + 7 and 4 + 6), an in-home one among them and one
/// cleared van.
fn tight_day() -> Problem {
    Problem {
        name: "tight".into(),
        table: Table::euclidean(&[(0.0, 0.0), (3.0, 0.0), (0.0, 3.0), (3.0, 3.0), (-3.0, 0.0)]),
        vans: vec![
            van(0, 10, true, (0.0, 100.0)),
            van(1, 10, false, (0.0, 100.0)),
        ],
        stops: vec![
            stop(1, 3, None, false),
            stop(2, 4, None, false),
            stop(3, 6, None, false),
            stop(4, 7, Some((0.0, 50.0)), true),
        ],
    }
}

#[test]
fn a_tight_day_is_planned_whole_by_every_engine_and_seed() {
    let p = tight_day();
    for seed in 0..20 {
        // No search at all: construction and repair alone.
        for generations in [0, 5] {
            let plan = solve(
                &p,
                Options::repeatable(Objective::Business, generations, seed),
            )
            .expect("solve");
            assert!(check(&p, &plan).is_empty(), "{:?}", check(&p, &plan));
            assert!(
                plan.unassigned.is_empty(),
                "seed {seed}: {:?}",
                plan.unassigned
            );
        }
    }
    let plan = solve(&p, Options::seconds(Objective::Business, 0.2)).expect("solve");
    assert!(check(&p, &plan).is_empty());
    assert!(plan.unassigned.is_empty(), "{:?}", plan.unassigned);
}

#[test]
fn every_left_out_stop_has_a_confirmed_cause() {
    // One van of 10 for 6 + 5 + a window no one can reach + in-home
    // without a cleared driver.
    let p = Problem {
        name: "overfull".into(),
        table: Table::euclidean(&[(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (50.0, 0.0), (1.0, 1.0)]),
        vans: vec![van(0, 10, false, (0.0, 100.0))],
        stops: vec![
            stop(1, 6, None, false),
            stop(2, 5, None, false),
            stop(3, 1, Some((0.0, 10.0)), false),
            stop(4, 1, Some((0.0, 90.0)), true),
        ],
    };
    for options in [
        Options::seconds(Objective::Business, 0.2),
        Options::repeatable(Objective::Business, 20, 3),
    ] {
        let plan = solve(&p, options).expect("solve");
        assert!(check(&p, &plan).is_empty(), "{:?}", check(&p, &plan));
        let causes: Vec<(usize, Option<Cause>)> =
            plan.unassigned.iter().map(|u| (u.stop, u.cause)).collect();
        assert_eq!(causes.len(), 3, "{causes:?}");
        assert!(causes.contains(&(2, Some(Cause::Time))), "{causes:?}");
        assert!(causes.contains(&(3, Some(Cause::Skill))), "{causes:?}");
        // Either 6 or 5 rides; the other has no room.
        assert!(
            causes.contains(&(0, Some(Cause::Capacity)))
                || causes.contains(&(1, Some(Cause::Capacity))),
            "{causes:?}"
        );
        assert!(plan.unassigned.iter().all(|u| !u.reason.is_empty()));
    }
}

#[test]
fn the_checker_refuses_a_cause_the_plan_does_not_bear_out() {
    let p = tight_day();
    let plan = solve(&p, Options::repeatable(Objective::Business, 10, 1)).expect("solve");
    assert!(check(&p, &plan).is_empty());
    // Take out the 3: it fits back where it was, so "no room" is false.
    let mut out = plan.clone();
    for r in &mut out.routes {
        r.visits.retain(|v| v.stop != 0);
    }
    let out = Plan::from_orders(
        &p,
        &out.routes
            .iter()
            .map(|r| (r.van, r.visits.iter().map(|v| v.stop).collect()))
            .collect::<Vec<_>>(),
        "test",
    );
    let claim = |cause| Plan {
        routes: out.routes.clone(),
        unassigned: vec![Unassigned {
            stop: 0,
            reason: "no room".into(),
            cause,
        }],
    };
    for cause in [Some(Cause::Capacity), Some(Cause::Time), None] {
        let v = check(&p, &claim(cause));
        assert!(
            v.iter().any(|v| matches!(
                v,
                Violation::Unconfirmed {
                    stop: 0,
                    found: None,
                    ..
                }
            )),
            "{cause:?}: {v:?}"
        );
    }
    // A stop that truly fits nowhere, reported with the wrong cause.
    let mut heavy = p.clone();
    heavy.stops[0].load.weight = 11;
    let plan = solve(&heavy, Options::repeatable(Objective::Business, 10, 1)).expect("solve");
    assert!(check(&heavy, &plan).is_empty());
    let mut wrong = plan.clone();
    let u = wrong
        .unassigned
        .iter_mut()
        .find(|u| u.stop == 0)
        .expect("the 11 is left out");
    assert_eq!(u.cause, Some(Cause::Capacity));
    u.cause = Some(Cause::Time);
    assert!(check(&heavy, &wrong).iter().any(|v| matches!(
        v,
        Violation::Unconfirmed {
            stop: 0,
            found: Some(Cause::Capacity),
            ..
        }
    )));
}
