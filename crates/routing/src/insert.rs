//! Routes as visiting orders, with what it takes to test an insertion in
//! constant time: each route's earliest service starts (forward) and latest
//! service starts that keep the rest of the route on time (backward).
//!
//! Used three ways: to repair a search's answer (every left-out stop gets a
//! cheapest feasible insertion, then one with another stop moved out of its
//! way), to say why a stop still cannot be planned, and as a small seeded
//! ruin-and-recreate search that repeats exactly.

use crate::{Cause, Objective, Problem, Route, Visit};

/// Below this, a time is on time (seconds, or Solomon units). Stricter than
/// the checker's tolerance, so whatever passes here passes there.
const EPS: f64 = 1e-9;

/// Cost of a van used, under the business objective (a van outweighs any
/// driving it saves), and of a stop left out (outweighs any van).
const VAN: f64 = 1e7;
const LEFT_OUT: f64 = 1e10;

/// A random source from a seed: SplitMix64, the same on every platform.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One van's route with its schedule bounds.
#[derive(Clone, Default)]
struct Tour {
    stops: Vec<usize>,
    /// Earliest service start at each stop.
    early: Vec<f64>,
    /// Latest service start at each stop that keeps the rest on time.
    late: Vec<f64>,
    weight: i64,
    volume: i64,
}

/// Every van's route.
#[derive(Clone)]
pub(crate) struct Routes<'a> {
    p: &'a Problem,
    objective: Objective,
    tours: Vec<Tour>,
}

/// Where a stop would go, and what it adds to the cost.
#[derive(Clone, Copy)]
struct Slot {
    van: usize,
    at: usize,
    cost: f64,
}

impl<'a> Routes<'a> {
    /// `orders[van]`: the stops van `van` visits, in order.
    pub(crate) fn new(p: &'a Problem, objective: Objective, orders: Vec<Vec<usize>>) -> Self {
        let mut r = Self {
            p,
            objective,
            tours: vec![Tour::default(); p.vans.len()],
        };
        for (van, stops) in orders.into_iter().enumerate().take(p.vans.len()) {
            r.tours[van].stops = stops;
            r.refresh(van);
        }
        r
    }

    fn refresh(&mut self, van: usize) {
        let p = self.p;
        let v = &p.vans[van];
        let t = &mut self.tours[van];
        let n = t.stops.len();
        t.early.clear();
        t.late.clear();
        t.early.reserve(n);
        let (mut at, mut here) = (v.shift.0, 0);
        t.weight = 0;
        t.volume = 0;
        for &s in &t.stops {
            let stop = &p.stops[s];
            t.weight += i64::from(stop.load.weight);
            t.volume += i64::from(stop.load.volume);
            let arrive = at + p.table.duration(here, stop.location);
            let start = stop.window.map_or(arrive, |(open, _)| arrive.max(open));
            t.early.push(start);
            at = start + stop.service;
            here = stop.location;
        }
        t.late.resize(n, 0.0);
        let (mut latest, mut next) = (v.shift.1, 0);
        for i in (0..n).rev() {
            let stop = &p.stops[t.stops[i]];
            let close = stop.window.map_or(f64::MAX, |(_, c)| c);
            let l = close.min(latest - p.table.duration(stop.location, next) - stop.service);
            t.late[i] = l;
            latest = l;
            next = stop.location;
        }
    }

    /// Whether van `van`'s route is on time and within capacity.
    fn feasible(&self, van: usize) -> bool {
        let t = &self.tours[van];
        let cap = self.p.vans[van].capacity;
        t.weight <= i64::from(cap.weight)
            && t.volume <= i64::from(cap.volume)
            && t.early.iter().zip(&t.late).all(|(e, l)| *e <= *l + EPS)
            && self.back(van) <= self.p.vans[van].shift.1 + EPS
    }

    fn back(&self, van: usize) -> f64 {
        let t = &self.tours[van];
        match t.stops.last() {
            None => self.p.vans[van].shift.0,
            Some(&s) => {
                let stop = &self.p.stops[s];
                t.early[t.stops.len() - 1] + stop.service + self.p.table.duration(stop.location, 0)
            }
        }
    }

    fn leg(&self, a: usize, b: usize) -> f64 {
        match self.objective {
            Objective::Business => {
                self.p.table.duration(a, b) + 0.001 * self.p.table.distance(a, b)
            }
            Objective::Distance => self.p.table.distance(a, b),
        }
    }

    /// Whether the van may carry the stop at all: skill and room.
    fn compatible(&self, van: usize, s: usize) -> (bool, bool) {
        let (v, stop, t) = (&self.p.vans[van], &self.p.stops[s], &self.tours[van]);
        let skill = !stop.in_home || v.in_home;
        let room = t.weight + i64::from(stop.load.weight) <= i64::from(v.capacity.weight)
            && t.volume + i64::from(stop.load.volume) <= i64::from(v.capacity.volume);
        (skill, room)
    }

    /// Whether `s` fits between positions `at - 1` and `at` of `van`'s
    /// route, on time (capacity aside); and the cost it adds.
    fn fits_at(&self, van: usize, s: usize, at: usize) -> Option<f64> {
        let p = self.p;
        let (v, t, stop) = (&p.vans[van], &self.tours[van], &p.stops[s]);
        let (depart, from) = if at == 0 {
            (v.shift.0, 0)
        } else {
            let prev = &p.stops[t.stops[at - 1]];
            (t.early[at - 1] + prev.service, prev.location)
        };
        let arrive = depart + p.table.duration(from, stop.location);
        let (open, close) = stop.window.unwrap_or((f64::MIN, f64::MAX));
        let start = arrive.max(open);
        if start > close + EPS {
            return None;
        }
        let leave = start + stop.service;
        let to = t.stops.get(at).map_or(0, |&n| p.stops[n].location);
        let next = leave + p.table.duration(stop.location, to);
        let ok = match t.stops.get(at) {
            Some(&n) => {
                let open_n = p.stops[n].window.map_or(f64::MIN, |(o, _)| o);
                next.max(open_n) <= t.late[at] + EPS
            }
            None => next <= v.shift.1 + EPS,
        };
        if !ok {
            return None;
        }
        let mut cost =
            self.leg(from, stop.location) + self.leg(stop.location, to) - self.leg(from, to);
        if t.stops.is_empty() && self.objective == Objective::Business {
            cost += VAN;
        }
        Some(cost)
    }

    /// The cheapest place for `s`, if any.
    fn best(&self, s: usize) -> Option<Slot> {
        let mut best: Option<Slot> = None;
        let mut empty_tried: Vec<usize> = Vec::new();
        for van in 0..self.tours.len() {
            let (skill, room) = self.compatible(van, s);
            if !skill || !room {
                continue;
            }
            // Empty vans alike give the same cost: try one of each kind.
            if self.tours[van].stops.is_empty() {
                let v = &self.p.vans[van];
                if empty_tried.iter().any(|&o| {
                    let w = &self.p.vans[o];
                    w.capacity == v.capacity && w.shift == v.shift && w.in_home == v.in_home
                }) {
                    continue;
                }
                empty_tried.push(van);
            }
            for at in 0..=self.tours[van].stops.len() {
                if let Some(cost) = self.fits_at(van, s, at)
                    && best.is_none_or(|b| cost < b.cost)
                {
                    best = Some(Slot { van, at, cost });
                }
            }
        }
        best
    }

    fn put(&mut self, s: usize, slot: Slot) {
        self.tours[slot.van].stops.insert(slot.at, s);
        self.refresh(slot.van);
    }

    fn take(&mut self, van: usize, at: usize) -> usize {
        let s = self.tours[van].stops.remove(at);
        self.refresh(van);
        s
    }

    fn find(&self, s: usize) -> Option<(usize, usize)> {
        self.tours
            .iter()
            .enumerate()
            .find_map(|(van, t)| t.stops.iter().position(|&x| x == s).map(|at| (van, at)))
    }

    /// The cost of the routes.
    pub(crate) fn cost(&self) -> f64 {
        let mut c = 0.0;
        for t in &self.tours {
            if t.stops.is_empty() {
                continue;
            }
            if self.objective == Objective::Business {
                c += VAN;
            }
            let mut here = 0;
            for &s in &t.stops {
                let l = self.p.stops[s].location;
                c += self.leg(here, l);
                here = l;
            }
            c += self.leg(here, 0);
        }
        c
    }

    /// Inserts each of `left` where it is cheapest; if it fits nowhere,
    /// tries moving one nearby stop elsewhere to make room. Returns the
    /// stops that still fit nowhere, and the vans whose routes changed.
    pub(crate) fn repair(&mut self, left: &[usize]) -> (Vec<usize>, Vec<usize>) {
        let mut still = Vec::new();
        let mut changed = Vec::new();
        for &s in left {
            if let Some(slot) = self.best(s) {
                self.put(s, slot);
                changed.push(slot.van);
                continue;
            }
            match self.relocate_for(s) {
                Some(vans) => changed.extend(vans),
                None => still.push(s),
            }
        }
        changed.sort_unstable();
        changed.dedup();
        (still, changed)
    }

    /// Moves one planned stop elsewhere so that `s` fits; the nearest
    /// stops first. Returns the vans changed.
    fn relocate_for(&mut self, s: usize) -> Option<Vec<usize>> {
        let here = self.p.stops[s].location;
        let mut planned: Vec<(f64, usize, usize)> = Vec::new();
        for (van, t) in self.tours.iter().enumerate() {
            if !self.compatible(van, s).0 {
                continue;
            }
            for (at, &o) in t.stops.iter().enumerate() {
                let l = self.p.stops[o].location;
                let d = self
                    .p
                    .table
                    .duration(here, l)
                    .min(self.p.table.duration(l, here));
                planned.push((d, van, at));
            }
        }
        planned.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        for &(_, van, at) in planned.iter().take(60) {
            let before = self.tours[van].clone();
            let o = self.take(van, at);
            if let Some(slot_s) = self.best(s) {
                self.put(s, slot_s);
                if let Some(slot_o) = self.best(o) {
                    self.put(o, slot_o);
                    return Some(vec![van, slot_s.van, slot_o.van]);
                }
                // Undo `s`.
                if let Some((v, a)) = self.find(s) {
                    self.take(v, a);
                }
            }
            self.tours[van] = before;
        }
        None
    }

    /// Why `s` fits nowhere: `None` when it does fit somewhere.
    pub(crate) fn blocked(&self, s: usize) -> Option<Cause> {
        let (mut any_skill, mut room_somewhere) = (false, false);
        for van in 0..self.tours.len() {
            let (skill, room) = self.compatible(van, s);
            if !skill {
                continue;
            }
            any_skill = true;
            if !room {
                continue;
            }
            room_somewhere = true;
            if (0..=self.tours[van].stops.len()).any(|at| self.fits_at(van, s, at).is_some()) {
                return None;
            }
        }
        Some(if !any_skill {
            Cause::Skill
        } else if !room_somewhere {
            Cause::Capacity
        } else {
            let all_room = (0..self.tours.len())
                .filter(|&v| self.compatible(v, s).0)
                .all(|v| self.compatible(v, s).1);
            if all_room {
                Cause::Time
            } else {
                Cause::CapacityOrTime
            }
        })
    }

    /// A seeded ruin-and-recreate search over `generations` (or until
    /// `deadline`, for a time-bounded run), keeping the best routes found;
    /// `left` are stops not yet planned. Returns the stops still left out.
    pub(crate) fn search(
        &mut self,
        mut left: Vec<usize>,
        generations: usize,
        seed: u64,
        deadline: Option<std::time::Instant>,
    ) -> Vec<usize> {
        let mut rng = Rng::new(seed);
        let n = self.p.stops.len();
        let score = |r: &Routes<'_>, left: &[usize]| r.cost() + LEFT_OUT * left.len() as f64;
        // The most constrained first: windowed stops by closing time, then
        // the farthest from the depot.
        let key = |s: usize| {
            let stop = &self.p.stops[s];
            (
                stop.window.map_or(f64::MAX, |(_, c)| c),
                -self.p.table.duration(0, stop.location),
            )
        };
        left.sort_by(|&a, &b| {
            let (ka, kb) = (key(a), key(b));
            ka.0.total_cmp(&kb.0)
                .then(ka.1.total_cmp(&kb.1))
                .then(a.cmp(&b))
        });
        left = self.recreate(left, &mut rng);
        let mut best = (self.tours.clone(), left.clone(), score(self, &left));
        let mut current = best.2;
        for g in 0..generations {
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                break;
            }
            let saved = (self.tours.clone(), left.clone());
            let mut out = left.clone();
            let planned: Vec<usize> = self
                .tours
                .iter()
                .flat_map(|t| t.stops.iter().copied())
                .collect();
            if planned.is_empty() {
                break;
            }
            if rng.below(8) == 0 {
                // Empty a whole route, to try with one van fewer.
                let used: Vec<usize> = (0..self.tours.len())
                    .filter(|&v| !self.tours[v].stops.is_empty())
                    .collect();
                let van = used[rng.below(used.len())];
                out.extend(std::mem::take(&mut self.tours[van].stops));
                self.refresh(van);
            } else {
                // A stop and its nearest planned neighbours.
                let k = 2 + rng.below((n / 10).clamp(2, 30));
                let centre = self.p.stops[planned[rng.below(planned.len())]].location;
                let mut near: Vec<(f64, usize)> = planned
                    .iter()
                    .map(|&s| (self.p.table.duration(centre, self.p.stops[s].location), s))
                    .collect();
                near.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                for &(_, s) in near.iter().take(k) {
                    if let Some((van, at)) = self.find(s) {
                        self.take(van, at);
                        out.push(s);
                    }
                }
            }
            // Reinsert in a random order.
            for i in (1..out.len()).rev() {
                out.swap(i, rng.below(i + 1));
            }
            let still = self.recreate(out, &mut rng);
            let s = score(self, &still);
            // Record-to-record: accept within a margin that narrows to none.
            let margin = if deadline.is_some() {
                0.005
            } else {
                0.02 * (1.0 - g as f64 / generations.max(1) as f64)
            };
            if s < best.2 - EPS {
                best = (self.tours.clone(), still.clone(), s);
            }
            if s <= best.2 * (1.0 + margin) || s < current {
                current = s;
                left = still;
            } else {
                self.tours = saved.0;
                left = saved.1;
            }
        }
        self.tours = best.0;
        best.1
    }

    /// Cheapest insertion of each of `out`, in order; returns those that fit nowhere.
    fn recreate(&mut self, out: Vec<usize>, rng: &mut Rng) -> Vec<usize> {
        let _ = rng;
        let mut still = Vec::new();
        for s in out {
            match self.best(s) {
                Some(slot) => self.put(s, slot),
                None => still.push(s),
            }
        }
        still
    }

    /// The routes with their schedules, each service as early as it can be.
    pub(crate) fn route(&self, van: usize) -> Option<Route> {
        let t = &self.tours[van];
        if t.stops.is_empty() {
            return None;
        }
        debug_assert!(self.feasible(van));
        let visits = t
            .stops
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let stop = &self.p.stops[s];
                let (from, depart) = if i == 0 {
                    (0, self.p.vans[van].shift.0)
                } else {
                    let prev = &self.p.stops[t.stops[i - 1]];
                    (prev.location, t.early[i - 1] + prev.service)
                };
                Visit {
                    stop: s,
                    arrival: depart + self.p.table.duration(from, stop.location),
                    start: t.early[i],
                    departure: t.early[i] + stop.service,
                }
            })
            .collect();
        Some(Route {
            van,
            departure: self.p.vans[van].shift.0,
            visits,
            back: self.back(van),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Load, Plan, Stop, Table, Van, check};

    fn van(i: usize, weight: i32, in_home: bool) -> Van {
        Van {
            id: format!("v{i}"),
            driver_id: format!("d{i}"),
            capacity: Load { weight, volume: 0 },
            shift: (0.0, 1000.0),
            in_home,
        }
    }

    fn stop(location: usize, weight: i32, in_home: bool) -> Stop {
        Stop {
            id: format!("s{location}"),
            location,
            load: Load { weight, volume: 0 },
            window: in_home.then_some((0.0, 500.0)),
            service: 1.0,
            in_home,
        }
    }

    fn plan_of(p: &Problem, r: &Routes<'_>, left: &[usize]) -> Plan {
        Plan {
            routes: (0..p.vans.len()).filter_map(|v| r.route(v)).collect(),
            unassigned: left
                .iter()
                .map(|&s| crate::Unassigned {
                    stop: s,
                    reason: "test".into(),
                    cause: r.blocked(s),
                })
                .collect(),
        }
    }

    /// Two vans of 10; van 0 carries 3 + 4, van 1 carries 6: a stop of 5
    /// fits neither, but moving the 3 to van 1 makes room on van 0.
    #[test]
    fn a_stop_that_fits_only_after_moving_another_is_planned() {
        let p = Problem {
            name: "packing".into(),
            table: Table::euclidean(&[(0.0, 0.0), (1.0, 0.0), (2.0, 0.0), (0.0, 1.0), (1.0, 1.0)]),
            vans: vec![van(0, 10, false), van(1, 10, false)],
            stops: vec![
                stop(1, 3, false),
                stop(2, 4, false),
                stop(3, 6, false),
                stop(4, 5, false),
            ],
        };
        let mut r = Routes::new(&p, Objective::Distance, vec![vec![0, 1], vec![2]]);
        // As a search might leave it: no single insertion fits, and the
        // checker confirms that much.
        assert_eq!(r.blocked(3), Some(Cause::Capacity));
        assert!(check(&p, &plan_of(&p, &r, &[3])).is_empty());
        let (still, changed) = r.repair(&[3]);
        assert!(still.is_empty(), "{still:?}");
        assert_eq!(changed, vec![0, 1]);
        let plan = plan_of(&p, &r, &[]);
        assert!(check(&p, &plan).is_empty(), "{:?}", check(&p, &plan));
        assert_eq!(plan.routes.iter().map(|r| r.visits.len()).sum::<usize>(), 4);
    }

    /// The report of the issue: an in-home parcel, the one cleared van full
    /// with a doorstep parcel another van could take.
    #[test]
    fn an_in_home_stop_gets_the_cleared_van_once_a_doorstep_parcel_moves() {
        let p = Problem {
            name: "cleared".into(),
            table: Table::euclidean(&[(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]),
            vans: vec![van(0, 10, true), van(1, 10, false)],
            stops: vec![stop(1, 8, false), stop(2, 5, true)],
        };
        let mut r = Routes::new(&p, Objective::Business, vec![vec![0], vec![]]);
        assert_eq!(r.blocked(1), Some(Cause::Capacity));
        let (still, _) = r.repair(&[1]);
        assert!(still.is_empty());
        let plan = plan_of(&p, &r, &[]);
        assert!(check(&p, &plan).is_empty());
        let on = |s: usize| {
            plan.routes
                .iter()
                .find(|r| r.visits.iter().any(|v| v.stop == s))
        };
        assert_eq!(on(1).map(|r| r.van), Some(0));
        assert_eq!(on(0).map(|r| r.van), Some(1));
    }

    /// What fits nowhere even after a move stays out, with its cause.
    #[test]
    fn a_stop_that_fits_nowhere_stays_out_with_a_confirmed_cause() {
        let p = Problem {
            name: "full".into(),
            table: Table::euclidean(&[(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]),
            vans: vec![van(0, 10, false)],
            stops: vec![stop(1, 6, false), stop(2, 4, false), stop(3, 2, false)],
        };
        let mut r = Routes::new(&p, Objective::Distance, vec![vec![0, 1]]);
        let (still, _) = r.repair(&[2]);
        assert_eq!(still, vec![2]);
        let plan = plan_of(&p, &r, &still);
        assert_eq!(plan.unassigned[0].cause, Some(Cause::Capacity));
        assert!(check(&p, &plan).is_empty());
    }
}
