//! Solutions checked by an evaluator written here, independent of the
//! search's segments and penalties: every client once, skills, every load
//! dimension, windows and shifts simulated stop by stop, the distance summed.

use threshold_solver::{Client, Error, Params, Problem, Reason, Solution, VehicleType, solve};

/// A deterministic generator for test instances (not the solver's).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: i64) -> i64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as i64
    }
}

fn euclidean(points: &[(i64, i64)]) -> Vec<i64> {
    let mut m = Vec::new();
    for a in points {
        for b in points {
            let (dx, dy) = ((a.0 - b.0) as f64, (a.1 - b.1) as f64);
            m.push((dx.hypot(dy) * 10.0).round() as i64);
        }
    }
    m
}

/// Checks `s` against `p`; returns the distance it recomputes.
fn evaluate(p: &Problem, s: &Solution) -> i64 {
    let l = p.locations;
    let mut seen = vec![0; p.clients.len()];
    let mut used = std::collections::HashSet::new();
    let mut total = 0;
    for r in &s.routes {
        let v = &p.vehicle_types[r.vehicle_type];
        assert!(
            r.vehicle < v.count,
            "vehicle {} of type {}",
            r.vehicle,
            r.vehicle_type
        );
        assert!(
            used.insert((r.vehicle_type, r.vehicle)),
            "vehicle used twice"
        );
        assert!(!r.clients.is_empty(), "empty route reported");
        let mut load = vec![0; p.dimensions];
        let (mut at, mut time) = (v.start, v.shift.0);
        for &c in &r.clients {
            let client = &p.clients[c];
            seen[c] += 1;
            assert_eq!(
                client.skills & !v.skills,
                0,
                "client {c} lacks skills on type {}",
                r.vehicle_type
            );
            for (x, d) in load.iter_mut().zip(&client.demand) {
                *x += d;
            }
            total += p.distance[at * l + client.location];
            time = (time + p.duration[at * l + client.location]).max(client.window.0);
            assert!(
                time <= client.window.1,
                "client {c} served at {time}, window {:?}",
                client.window
            );
            time += client.service;
            at = client.location;
        }
        total += p.distance[at * l + v.end];
        time += p.duration[at * l + v.end];
        assert!(
            time <= v.shift.1,
            "back at {time} after shift end {}",
            v.shift.1
        );
        for (d, (x, c)) in load.iter().zip(&v.capacity).enumerate() {
            assert!(x <= c, "dimension {d}: load {x} over capacity {c}");
        }
    }
    for u in &s.unassigned {
        seen[u.client] += 1;
    }
    for (c, n) in seen.iter().enumerate() {
        assert_eq!(*n, 1, "client {c} appears {n} times");
    }
    assert_eq!(total, s.distance, "reported distance");
    total
}

fn budget(seed: u64, iterations: u64) -> Params {
    Params {
        seed,
        time_limit: None,
        iterations: Some(iterations),
        ..Params::default()
    }
}

/// Random clients around a central depot, windows of varying width.
fn random(n: usize, seed: u64, types: Vec<VehicleType>, dims: usize, skills: bool) -> Problem {
    let mut g = Lcg(seed);
    let mut points = vec![(50, 50)];
    let mut clients = Vec::new();
    for i in 0..n {
        points.push((g.next(101), g.next(101)));
        let start = g.next(600) * 10;
        let width = 300 + g.next(1200) * 10;
        clients.push(Client {
            location: i + 1,
            demand: (0..dims).map(|_| 1 + g.next(10)).collect(),
            window: (start, start + width),
            service: 50 + g.next(50),
            skills: if skills { g.next(4) as u64 & 0b11 } else { 0 },
        });
    }
    let m = euclidean(&points);
    Problem {
        locations: points.len(),
        distance: m.clone(),
        duration: m,
        dimensions: dims,
        clients,
        vehicle_types: types,
    }
}

fn van(count: usize, capacity: Vec<i64>, skills: u64) -> VehicleType {
    VehicleType {
        count,
        capacity,
        start: 0,
        end: 0,
        shift: (0, 20_000),
        skills,
        fixed_cost: 0,
    }
}

#[test]
fn solutions_hold_every_constraint() {
    for seed in 1..=3 {
        let p = random(60, seed, vec![van(12, vec![60], 0)], 1, false);
        let s = solve(&p, &budget(seed, 300)).expect("solve");
        evaluate(&p, &s);
        assert!(s.unassigned.is_empty(), "seed {seed}: {:?}", s.unassigned);
    }
}

#[test]
fn skills_and_two_dimensional_capacity_hold() {
    // Weight and volume; skill 1 only on the first type, skill 2 only on
    // the second, so clients needing both are unservable.
    let types = vec![van(8, vec![40, 25], 0b01), van(8, vec![25, 40], 0b10)];
    let p = random(50, 7, types, 2, true);
    let s = solve(&p, &budget(3, 300)).expect("solve");
    evaluate(&p, &s);
    for u in &s.unassigned {
        assert_eq!(p.clients[u.client].skills, 0b11, "{u:?}");
        assert_eq!(u.reason, Reason::NoCompatibleVehicle);
    }
    let both = p.clients.iter().filter(|c| c.skills == 0b11).count();
    assert!(both > 0, "the instance must test incompatibility");
    assert_eq!(s.unassigned.len(), both);
}

#[test]
fn same_seed_and_budget_give_the_same_plan() {
    let p = random(50, 11, vec![van(10, vec![50], 0)], 1, false);
    let a = solve(&p, &budget(42, 200)).expect("solve");
    let b = solve(&p, &budget(42, 200)).expect("solve");
    assert_eq!(a, b);
    assert_eq!(a.iterations, 200);
    evaluate(&p, &a);
}

#[test]
fn clients_no_vehicle_can_serve_are_reported_with_the_reason() {
    let mut p = random(12, 5, vec![van(4, vec![30], 0b1)], 1, false);
    p.clients[2].skills = 0b10;
    p.clients[4].demand = vec![31];
    // Window closes before any vehicle can arrive.
    let travel = p.duration[p.clients[6].location];
    p.clients[6].window = (0, travel - 1);
    // Reachable, but the shift ends before the vehicle could be back.
    p.clients[8].window = (19_990, 19_995);
    let s = solve(&p, &budget(1, 100)).expect("solve");
    evaluate(&p, &s);
    let reasons: Vec<(usize, Reason)> = s.unassigned.iter().map(|u| (u.client, u.reason)).collect();
    assert_eq!(
        reasons,
        vec![
            (2, Reason::NoCompatibleVehicle),
            (4, Reason::ExceedsCapacity),
            (6, Reason::WindowUnreachable),
            (8, Reason::WindowUnreachable),
        ]
    );
}

#[test]
fn a_fleet_too_small_leaves_clients_out_and_says_so() {
    // One vehicle of capacity 10, three clients of 6: one fits.
    let mut p = random(3, 9, vec![van(1, vec![10], 0)], 1, false);
    for c in &mut p.clients {
        c.demand = vec![6];
        c.window = (0, 20_000);
    }
    let s = solve(&p, &budget(1, 50)).expect("solve");
    evaluate(&p, &s);
    assert_eq!(s.routes.len(), 1);
    assert_eq!(s.routes[0].clients.len(), 1);
    assert_eq!(s.unassigned.len(), 2);
    assert!(
        s.unassigned
            .iter()
            .all(|u| u.reason == Reason::FleetExhausted)
    );
}

/// The optimum by enumeration: every order of the clients cut into at most
/// `vehicles` routes.
fn brute_force(p: &Problem, vehicles: usize) -> i64 {
    let n = p.clients.len();
    let v = &p.vehicle_types[0];
    let l = p.locations;
    let route_cost = |r: &[usize]| -> Option<i64> {
        let (mut at, mut time, mut load, mut dist) = (v.start, v.shift.0, 0, 0);
        for &c in r {
            let cl = &p.clients[c];
            dist += p.distance[at * l + cl.location];
            time = (time + p.duration[at * l + cl.location]).max(cl.window.0);
            if time > cl.window.1 {
                return None;
            }
            time += cl.service;
            load += cl.demand[0];
            at = cl.location;
        }
        time += p.duration[at * l + v.end];
        (load <= v.capacity[0] && time <= v.shift.1).then(|| dist + p.distance[at * l + v.end])
    };
    let mut best = i64::MAX;
    let mut perm: Vec<usize> = (0..n).collect();
    // Heap's algorithm over orders; each order cut at every set of points.
    let mut c = vec![0; n];
    let mut visit = |perm: &[usize]| {
        for cuts in 0u32..(1 << (n - 1)) {
            if cuts.count_ones() as usize + 1 > vehicles {
                continue;
            }
            let (mut total, mut start) = (0, 0);
            let mut ok = true;
            for k in 0..n {
                if k == n - 1 || cuts & (1 << k) != 0 {
                    match route_cost(&perm[start..=k]) {
                        Some(x) => total += x,
                        None => {
                            ok = false;
                            break;
                        }
                    }
                    start = k + 1;
                }
            }
            if ok {
                best = best.min(total);
            }
        }
    };
    visit(&perm);
    let mut i = 0;
    while i < n {
        if c[i] < i {
            if i % 2 == 0 {
                perm.swap(0, i);
            } else {
                perm.swap(c[i], i);
            }
            visit(&perm);
            c[i] += 1;
            i = 0;
        } else {
            c[i] = 0;
            i += 1;
        }
    }
    best
}

#[test]
fn a_small_instance_is_solved_to_its_optimum() {
    let mut p = random(8, 21, vec![van(3, vec![20], 0)], 1, false);
    for c in &mut p.clients {
        c.demand = vec![5 + (c.location as i64 % 3)];
    }
    let optimum = brute_force(&p, 3);
    assert!(optimum < i64::MAX, "instance must be feasible");
    let s = solve(&p, &budget(1, 500)).expect("solve");
    assert_eq!(evaluate(&p, &s), optimum);
}

#[test]
fn bad_input_is_named() {
    let mut p = random(5, 1, vec![van(2, vec![10], 0)], 1, false);
    p.distance.pop();
    let e = solve(&p, &budget(1, 10)).expect_err("short matrix");
    assert!(
        matches!(&e, Error::Invalid { what, .. } if what == "matrices"),
        "{e}"
    );
    let mut p = random(5, 1, vec![van(2, vec![10], 0)], 1, false);
    p.clients[3].window = (10, 5);
    let e = solve(&p, &budget(1, 10)).expect_err("window");
    assert!(e.to_string().contains("client 3"), "{e}");
    let p = random(5, 1, vec![van(2, vec![10], 0)], 1, false);
    let params = Params {
        time_limit: None,
        iterations: None,
        ..Params::default()
    };
    assert!(solve(&p, &params).is_err());
}

/// Six clusters of six clients in six directions from the depot, whose
/// demands fill exactly `vehicles` vehicles (so no plan has fewer), with
/// windows that never bind, and a fixed cost above any plan's travel.
fn clusters_filling(vehicles: i64) -> Problem {
    let mut points = vec![(500, 500)];
    let mut clients = Vec::new();
    for k in 0..6 {
        let angle = k as f64 * std::f64::consts::TAU / 6.0;
        let (cx, cy) = (500.0 + 400.0 * angle.cos(), 500.0 + 400.0 * angle.sin());
        for i in 0..6i64 {
            points.push((cx as i64 + 7 * (i % 3), cy as i64 + 7 * (i / 3)));
            clients.push(Client {
                location: points.len() - 1,
                demand: vec![1 + i],
                window: (0, 1_000_000),
                service: 10,
                skills: 0,
            });
        }
    }
    let m = euclidean(&points);
    let total: i64 = clients.iter().map(|c| c.demand[0]).sum();
    let round_trips: i64 = clients
        .iter()
        .map(|c| m[c.location] + m[c.location * points.len()])
        .sum();
    Problem {
        locations: points.len(),
        distance: m.clone(),
        duration: m,
        dimensions: 1,
        clients,
        vehicle_types: vec![VehicleType {
            count: 12,
            capacity: vec![total / vehicles],
            start: 0,
            end: 0,
            shift: (0, 1_000_000),
            skills: 0,
            fixed_cost: round_trips + 1,
        }],
    }
}

#[test]
fn a_fixed_cost_above_all_travel_gives_the_fewest_vehicles() {
    let p = clusters_filling(3);
    for seed in 1..=3 {
        let s = solve(&p, &budget(seed, 300)).expect("solve");
        evaluate(&p, &s);
        assert!(s.unassigned.is_empty(), "seed {seed}: {:?}", s.unassigned);
        assert_eq!(s.routes.len(), 3, "seed {seed}: {:?}", s.routes);
        assert_eq!(s.cost, s.distance + 3 * p.vehicle_types[0].fixed_cost);
    }
}
