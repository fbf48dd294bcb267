//! The hybrid genetic search: two subpopulations (feasible, infeasible)
//! ranked by biased fitness (cost rank plus diversity rank, diversity being
//! the broken-pairs distance to the closest members); parents by binary
//! tournament; a selective route exchange crossover (routes of one parent
//! around a random client replace the overlapping routes of the other, the
//! clients left over are inserted greedily); local search on every child,
//! with a stronger-penalty repair for half the infeasible ones; penalties
//! adapted to keep a target share of feasible children; a restart after a
//! long run without improvement. When vehicles have a fixed cost, feasible
//! children that use no more vehicles than the best have their smallest
//! route emptied into the others (route elimination), and the penalties
//! start no lower than the fixed cost's rate per unit of capacity and of
//! shift; without fixed costs the search is unchanged.

use std::time::Instant;

use crate::local::{Local, Penalties, Plain};
use crate::model::Data;
use crate::rng::Rng;
use crate::{Params, Reason, Route, Solution, Unassigned};

const DEPOT: u32 = u32::MAX;
/// Members at the top of a subpopulation whose diversity barely counts.
const ELITE: usize = 4;
/// Closest members averaged for the diversity of one.
const CLOSE: usize = 5;
/// Share of feasible children the penalties aim at.
const TARGET_FEASIBLE: f64 = 0.2;
/// Children between penalty adjustments.
const ADAPT_EVERY: u64 = 50;
/// With fixed vehicle costs, the starting penalties price this share of a
/// vehicle's capacity (or of its shift) in excess (or in time warp) at one
/// fixed cost, times the share's inverse: ten. At one, the search still
/// merges routes it cannot make feasible again; at a hundred or more it
/// rarely tries plans with a vehicle fewer (measured on 500-stop depots).
const VEHICLE_RATE: i64 = 10;

#[derive(Debug, Clone)]
struct Individual {
    routes: Vec<Plain>,
    distance: i64,
    fixed: i64,
    excess: i64,
    warp: i64,
    succ: Vec<u32>,
    pred: Vec<u32>,
    route_of: Vec<u32>,
}

impl Individual {
    fn from(local: &Local<'_>, n: usize) -> Self {
        let routes: Vec<Plain> = local
            .export()
            .into_iter()
            .map(|(t, _, nodes)| (t, nodes))
            .collect();
        let (distance, fixed, excess, warp) = local.measure();
        let mut succ = vec![DEPOT; n];
        let mut pred = vec![DEPOT; n];
        let mut route_of = vec![DEPOT; n];
        for (r, (_, nodes)) in routes.iter().enumerate() {
            for (k, &c) in nodes.iter().enumerate() {
                let c = c as usize;
                route_of[c] = r as u32;
                if k > 0 {
                    pred[c] = nodes[k - 1];
                }
                if k + 1 < nodes.len() {
                    succ[c] = nodes[k + 1];
                }
            }
        }
        Individual {
            routes,
            distance,
            fixed,
            excess,
            warp,
            succ,
            pred,
            route_of,
        }
    }

    fn feasible(&self) -> bool {
        self.excess == 0 && self.warp == 0
    }

    fn cost(&self, p: Penalties) -> i64 {
        self.distance + self.fixed + p.load * self.excess + p.warp * self.warp
    }

    /// Broken-pairs distance: share of clients whose neighbours differ.
    fn distance_to(&self, other: &Individual, active: &[usize]) -> f64 {
        let mut broken = 0usize;
        for &c in active {
            let s = self.succ[c];
            if s != other.succ[c] && s != other.pred[c] {
                broken += 1;
            }
            if self.pred[c] == DEPOT && other.pred[c] != DEPOT && other.succ[c] != DEPOT {
                broken += 1;
            }
        }
        broken as f64 / active.len().max(1) as f64
    }
}

#[derive(Default)]
struct SubPopulation {
    members: Vec<Individual>,
    /// Pairwise broken-pairs distances.
    apart: Vec<Vec<f64>>,
    fitness: Vec<f64>,
    /// Fitness is stale (members or penalties changed).
    dirty: bool,
}

impl SubPopulation {
    fn add(&mut self, ind: Individual, active: &[usize]) {
        let row: Vec<f64> = self
            .members
            .iter()
            .map(|m| ind.distance_to(m, active))
            .collect();
        for (i, d) in row.iter().enumerate() {
            self.apart[i].push(*d);
        }
        let mut row = row;
        row.push(0.0);
        self.apart.push(row);
        self.members.push(ind);
        self.dirty = true;
    }

    fn remove(&mut self, i: usize) {
        self.members.remove(i);
        self.apart.remove(i);
        for row in &mut self.apart {
            row.remove(i);
        }
        self.dirty = true;
    }

    fn update_fitness(&mut self, p: Penalties) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let n = self.members.len();
        self.fitness = vec![0.0; n];
        if n <= 1 {
            return;
        }
        let mut diversity = Vec::with_capacity(n);
        for i in 0..n {
            let mut d: Vec<f64> = (0..n)
                .filter(|&j| j != i)
                .map(|j| self.apart[i][j])
                .collect();
            d.sort_by(f64::total_cmp);
            let k = CLOSE.min(d.len());
            diversity.push(d[..k].iter().sum::<f64>() / k as f64);
        }
        let mut by_cost: Vec<usize> = (0..n).collect();
        by_cost.sort_by_key(|&i| (self.members[i].cost(p), i));
        let mut by_div: Vec<usize> = (0..n).collect();
        by_div.sort_by(|&a, &b| diversity[b].total_cmp(&diversity[a]).then(a.cmp(&b)));
        let mut div_rank = vec![0.0; n];
        for (r, &i) in by_div.iter().enumerate() {
            div_rank[i] = r as f64 / (n - 1) as f64;
        }
        let weight = 1.0 - ELITE.min(n) as f64 / n as f64;
        for (r, &i) in by_cost.iter().enumerate() {
            self.fitness[i] = r as f64 / (n - 1) as f64 + weight * div_rank[i];
        }
    }

    /// Drops members down to `keep`, clones first, then the least fit.
    fn select_survivors(&mut self, keep: usize, p: Penalties) {
        while self.members.len() > keep {
            self.update_fitness(p);
            let n = self.members.len();
            let worst = (0..n)
                .max_by(|&a, &b| {
                    let clone = |i: usize| (0..n).any(|j| j != i && self.apart[i][j] < 1e-9);
                    clone(a)
                        .cmp(&clone(b))
                        .then(self.fitness[a].total_cmp(&self.fitness[b]))
                })
                .unwrap_or(0);
            self.remove(worst);
        }
    }
}

struct Search<'a> {
    data: &'a Data,
    params: &'a Params,
    rng: Rng,
    local: Local<'a>,
    feasible: SubPopulation,
    infeasible: SubPopulation,
    penalties: Penalties,
    best: Option<Individual>,
    /// Best infeasible, for when nothing feasible is ever found.
    fallback: Option<Individual>,
    load_ok: Vec<bool>,
    warp_ok: Vec<bool>,
    started: Instant,
    iteration: u64,
    /// Some vehicle has a fixed cost: routes are worth eliminating.
    vehicle_cost: bool,
}

pub(crate) fn run(data: &Data, params: &Params) -> Solution {
    let started = Instant::now();
    let max_distance = (0..data.n)
        .flat_map(|i| (0..data.n).map(move |j| (i, j)))
        .map(|(i, j)| data.distance(i, j))
        .max()
        .unwrap_or(1)
        .max(1);
    let max_demand = (0..data.n)
        .map(|c| data.seg(c).load.iter().copied().max().unwrap_or(0))
        .max()
        .unwrap_or(1)
        .max(1);
    // One unit of lateness starts as dear as ten units of travel time's
    // distance: time warp is harder to undo than excess load.
    let (mut dsum, mut tsum) = (0i64, 0i64);
    for &i in data.active.iter().take(200) {
        for &j in data.active.iter().take(200) {
            dsum += data.distance(i, j);
            tsum += data.duration(i, j);
        }
    }
    let ratio = if tsum > 0 {
        dsum as f64 / tsum as f64
    } else {
        1.0
    };
    let penalties = vehicle_rate(
        data,
        Penalties {
            load: (max_distance / max_demand).clamp(1, 1 << 20),
            warp: ((10.0 * ratio).round() as i64).clamp(1, 1 << 20),
        },
    );
    let mut s = Search {
        data,
        params,
        rng: Rng::new(params.seed),
        local: Local::new(data),
        feasible: SubPopulation::default(),
        infeasible: SubPopulation::default(),
        penalties,
        best: None,
        fallback: None,
        load_ok: Vec::new(),
        warp_ok: Vec::new(),
        started,
        iteration: 0,
        vehicle_cost: data.types.iter().any(|t| t.count > 0 && t.fixed > 0),
    };
    if !data.active.is_empty() {
        s.search();
    }
    s.solution()
}

impl<'a> Search<'a> {
    fn stop(&self) -> bool {
        self.params.iterations.is_some_and(|b| self.iteration >= b)
            || self
                .params
                .time_limit
                .is_some_and(|t| self.started.elapsed() >= t)
    }

    fn search(&mut self) {
        self.initial();
        let mut last_improved = self.iteration;
        let mut best_cost = self.best_cost();
        while !self.stop() {
            self.iteration += 1;
            let (a, b) = (self.tournament(), self.tournament());
            let (routes, clean, missing) = self.crossover(&a, &b);
            self.educate(&routes, &clean, &missing);
            if self.iteration.is_multiple_of(ADAPT_EVERY) {
                self.adapt();
            }
            let c = self.best_cost();
            if c < best_cost {
                best_cost = c;
                last_improved = self.iteration;
            } else if self.iteration - last_improved > self.params.restart_after {
                self.feasible = SubPopulation::default();
                self.infeasible = SubPopulation::default();
                self.initial();
                last_improved = self.iteration;
            }
        }
    }

    fn best_cost(&self) -> i64 {
        self.best
            .as_ref()
            .map_or(i64::MAX, |b| b.distance + b.fixed)
    }

    /// Four times the population size of random solutions, each improved.
    fn initial(&mut self) {
        let data = self.data;
        let total: usize = data.types.iter().map(|t| t.count).sum();
        // Enough routes for the load, with slack; the search adjusts.
        let mut demand = [0i64; crate::MAX_DIMENSIONS];
        for &c in &data.active {
            for (d, x) in demand.iter_mut().zip(data.seg(c).load.iter()) {
                *d += x;
            }
        }
        let cap = data
            .types
            .iter()
            .fold([0i64; crate::MAX_DIMENSIONS], |mut m, t| {
                for (m, c) in m.iter_mut().zip(t.capacity.iter()) {
                    *m = (*m).max(*c);
                }
                m
            });
        let need = demand
            .iter()
            .zip(cap.iter())
            .filter(|(_, c)| **c > 0)
            .map(|(d, c)| (d + c - 1) / c)
            .max()
            .unwrap_or(1) as usize;
        let want = (need + need / 5 + 1).clamp(1, total.max(1));
        let mut slots: Vec<usize> = Vec::with_capacity(total);
        for (t, ty) in data.types.iter().enumerate() {
            slots.extend(std::iter::repeat_n(t, ty.count));
        }
        for i in 0..4 * self.params.population {
            // With a time limit, the initial population takes at most a
            // fifth of it: on large instances the search needs the rest.
            let late = self.params.time_limit.is_some_and(|t| {
                i >= 2 && self.started.elapsed().as_secs_f64() > 0.2 * t.as_secs_f64()
            });
            if self.stop() || late {
                break;
            }
            let (plain, missing) = if i % 2 == 0 {
                self.construct(&slots)
            } else {
                (self.scatter(&slots, want), Vec::new())
            };
            self.educate(&plain, &[], &missing);
        }
    }

    /// Random clients spread over `want` vehicles, each route in order of
    /// closing time: a poor start, but a diverse one.
    fn scatter(&mut self, slots: &[usize], want: usize) -> Vec<Plain> {
        let data = self.data;
        let mut order = data.active.clone();
        self.rng.shuffle(&mut order);
        let mut routes: Vec<Vec<u32>> = vec![Vec::new(); slots.len()];
        for &c in &order {
            let fits: Vec<usize> = (0..want).filter(|&r| data.fits(c, slots[r])).collect();
            let r = if fits.is_empty() {
                let all: Vec<usize> = (0..slots.len())
                    .filter(|&r| data.fits(c, slots[r]))
                    .collect();
                all[self.rng.below(all.len())]
            } else {
                fits[self.rng.below(fits.len())]
            };
            routes[r].push(c as u32);
        }
        for r in &mut routes {
            r.sort_by_key(|&c| {
                let s = data.seg(c as usize);
                (s.late, s.early, c)
            });
        }
        routes
            .into_iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(i, r)| (slots[i], r))
            .collect()
    }

    /// Routes grown one at a time from a random client by appending a near
    /// client that keeps the route feasible; what is left is returned to be
    /// inserted. Starts the local search much closer to good solutions on
    /// large instances.
    fn construct(&mut self, slots: &[usize]) -> (Vec<Plain>, Vec<u32>) {
        let data = self.data;
        let mut order = data.active.clone();
        self.rng.shuffle(&mut order);
        let mut routed = vec![false; data.n];
        let mut slots = slots.to_vec();
        self.rng.shuffle(&mut slots);
        let mut out = Vec::new();
        let mut next = 0;
        for &t in &slots {
            while next < order.len() && routed[order[next]] {
                next += 1;
            }
            let Some(&first) = order[next..]
                .iter()
                .find(|&&c| !routed[c] && data.fits(c, t))
            else {
                continue;
            };
            let ty = &data.types[t];
            let end = data.seg(ty.end as usize);
            let ok = |s: &crate::segment::Seg| {
                let full = s.then(&end, data);
                full.warp == 0 && data.excess(&full.load, t) == 0
            };
            let mut seg = data.seg(ty.start as usize).then(&data.seg(first), data);
            routed[first] = true;
            let mut route = vec![first as u32];
            let mut last = first;
            loop {
                let mut found = None;
                for &c in &data.neighbours[last] {
                    let c = c as usize;
                    if routed[c] || !data.fits(c, t) || self.rng.unit() < 0.1 {
                        continue;
                    }
                    let s = seg.then(&data.seg(c), data);
                    if ok(&s) {
                        found = Some((c, s));
                        break;
                    }
                }
                let Some((c, s)) = found else { break };
                routed[c] = true;
                route.push(c as u32);
                seg = s;
                last = c;
            }
            out.push((t, route));
        }
        let missing = order
            .iter()
            .filter(|&&c| !routed[c])
            .map(|&c| c as u32)
            .collect();
        (out, missing)
    }

    /// Local search on a child, insertion into the population, and for half
    /// the infeasible children a repair with ten times the penalties.
    fn educate(&mut self, routes: &[Plain], clean: &[bool], missing: &[u32]) {
        self.local.penalties = self.penalties;
        let dropped = self.local.load(routes, clean);
        for &c in missing.iter().chain(&dropped) {
            self.local.insert(c as usize);
        }
        self.local.run(&mut self.rng);
        let ind = Individual::from(&self.local, self.data.n);
        self.load_ok.push(ind.excess == 0);
        self.warp_ok.push(ind.warp == 0);
        let feasible = ind.feasible();
        let used = ind.routes.len();
        self.add(ind);
        if feasible
            && self.vehicle_cost
            && self.best.as_ref().is_none_or(|b| used <= b.routes.len())
        {
            self.eliminate(used);
            return;
        }
        if !feasible && self.rng.unit() < 0.5 {
            for factor in [10, 100] {
                self.local.penalties = Penalties {
                    load: self.penalties.load.saturating_mul(factor),
                    warp: self.penalties.warp.saturating_mul(factor),
                };
                self.local.run(&mut self.rng);
                let ind = Individual::from(&self.local, self.data.n);
                if ind.feasible() {
                    self.add(ind);
                    break;
                }
            }
        }
    }

    /// With vehicles that cost, from the feasible local optimum the local
    /// search holds (`used` routes): empties its smallest route, inserts
    /// those clients into the other routes and searches again, with the
    /// repair's stronger penalties if need be; on a feasible result, one
    /// vehicle fewer, and tries again from there. The local search alone
    /// rarely empties a route: every client but the last must move at a
    /// loss before the fixed cost is saved.
    fn eliminate(&mut self, mut used: usize) {
        // Each attempt is up to three local searches: the budget bounds them.
        while !self.stop() {
            let Some(clients) = self.local.empty_smallest() else {
                return;
            };
            for &c in &clients {
                self.local.insert_used(c as usize);
            }
            let mut done = false;
            for factor in [1, 10, 100] {
                self.local.penalties = Penalties {
                    load: self.penalties.load.saturating_mul(factor),
                    warp: self.penalties.warp.saturating_mul(factor),
                };
                self.local.run(&mut self.rng);
                let ind = Individual::from(&self.local, self.data.n);
                let (feasible, now) = (ind.feasible(), ind.routes.len());
                if factor == 1 || feasible {
                    self.add(ind);
                }
                if feasible {
                    done = now < used;
                    used = now;
                    break;
                }
            }
            if !done {
                return;
            }
        }
    }

    fn add(&mut self, ind: Individual) {
        let keep = self.params.population;
        let most = keep + self.params.generation;
        if ind.feasible() {
            if self
                .best
                .as_ref()
                .is_none_or(|b| ind.distance + ind.fixed < b.distance + b.fixed)
            {
                self.best = Some(ind.clone());
            }
            self.feasible.add(ind, &self.data.active);
            if self.feasible.members.len() > most {
                self.feasible.select_survivors(keep, self.penalties);
            }
        } else {
            if self.best.is_none()
                && self
                    .fallback
                    .as_ref()
                    .is_none_or(|b| ind.cost(self.penalties) < b.cost(self.penalties))
            {
                self.fallback = Some(ind.clone());
            }
            self.infeasible.add(ind, &self.data.active);
            if self.infeasible.members.len() > most {
                self.infeasible.select_survivors(keep, self.penalties);
            }
        }
    }

    /// Raises or lowers each penalty towards the target feasible share.
    fn adapt(&mut self) {
        let adjust = |p: i64, ok: &[bool]| {
            if ok.is_empty() {
                return p;
            }
            let share = ok.iter().filter(|&&b| b).count() as f64 / ok.len() as f64;
            if share < TARGET_FEASIBLE - 0.05 {
                ((p as f64 * 1.3) as i64).max(p + 1).min(1 << 30)
            } else if share > TARGET_FEASIBLE + 0.05 {
                ((p as f64 * 0.85) as i64).max(1)
            } else {
                p
            }
        };
        self.penalties = Penalties {
            load: adjust(self.penalties.load, &self.load_ok),
            warp: adjust(self.penalties.warp, &self.warp_ok),
        };
        // Infeasible members rank by penalised cost.
        self.infeasible.dirty = true;
        self.load_ok.clear();
        self.warp_ok.clear();
    }

    /// Binary tournament over both subpopulations by biased fitness.
    fn tournament(&mut self) -> Individual {
        self.feasible.update_fitness(self.penalties);
        self.infeasible.update_fitness(self.penalties);
        let nf = self.feasible.members.len();
        let total = nf + self.infeasible.members.len();
        let mut pick = || {
            let i = self.rng.below(total);
            if i < nf {
                (self.feasible.fitness[i], &self.feasible.members[i])
            } else {
                (
                    self.infeasible.fitness[i - nf],
                    &self.infeasible.members[i - nf],
                )
            }
        };
        let (fa, a) = pick();
        let (fb, b) = pick();
        if fb < fa { b.clone() } else { a.clone() }
    }

    /// Selective route exchange: routes of `a` around a random client, in
    /// place of the routes of `b` they overlap most; returns the child's
    /// routes and the clients to insert.
    fn crossover(&mut self, a: &Individual, b: &Individual) -> (Vec<Plain>, Vec<bool>, Vec<u32>) {
        let data = self.data;
        let (na, nb) = (a.routes.len(), b.routes.len());
        if na == 0 || nb == 0 {
            return (a.routes.clone(), Vec::new(), Vec::new());
        }
        let most = na.min(nb);
        let k = if most <= 1 {
            1
        } else {
            1 + self.rng.below(most - 1)
        };
        let seed = data.active[self.rng.below(data.active.len())];
        let mut from_a: Vec<u32> = vec![a.route_of[seed]];
        for &v in &data.neighbours[seed] {
            if from_a.len() >= k {
                break;
            }
            let r = a.route_of[v as usize];
            if r != DEPOT && !from_a.contains(&r) {
                from_a.push(r);
            }
        }
        while from_a.len() < k {
            let r = self.rng.below(na) as u32;
            if !from_a.contains(&r) {
                from_a.push(r);
            }
        }
        let mut taken = vec![false; data.n];
        for &r in &from_a {
            for &c in &a.routes[r as usize].1 {
                taken[c as usize] = true;
            }
        }
        let mut overlap: Vec<(usize, usize)> = b
            .routes
            .iter()
            .enumerate()
            .map(|(r, (_, nodes))| (nodes.iter().filter(|&&c| taken[c as usize]).count(), r))
            .collect();
        overlap.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
        let mut replaced = vec![false; nb];
        for &(_, r) in overlap.iter().take(k) {
            replaced[r] = true;
        }
        let mut child: Vec<Plain> = from_a
            .iter()
            .map(|&r| a.routes[r as usize].clone())
            .collect();
        let mut clean = vec![false; child.len()];
        let mut missing = Vec::new();
        for (r, (t, nodes)) in b.routes.iter().enumerate() {
            if replaced[r] {
                missing.extend(nodes.iter().copied().filter(|&c| !taken[c as usize]));
            } else {
                let kept: Vec<u32> = nodes
                    .iter()
                    .copied()
                    .filter(|&c| !taken[c as usize])
                    .collect();
                if !kept.is_empty() {
                    clean.push(kept.len() == nodes.len());
                    child.push((*t, kept));
                }
            }
        }
        self.rng.shuffle(&mut missing);
        (child, clean, missing)
    }

    fn solution(mut self) -> Solution {
        let data = self.data;
        let mut unassigned = data.unassignable.clone();
        let chosen = self.best.take().or(self.fallback.take());
        let Some(ind) = chosen else {
            return Solution {
                routes: Vec::new(),
                unassigned,
                distance: 0,
                cost: 0,
                iterations: self.iteration,
            };
        };
        self.local.penalties = Penalties {
            load: 1 << 20,
            warp: 1 << 20,
        };
        self.local.load(&ind.routes, &[]);
        // Only an infeasible fallback has violating routes: take clients out
        // until every route holds.
        while let Some(r) = self.local.violating_route() {
            let c = self.local.remove_worst(r);
            unassigned.push(Unassigned {
                client: c as usize,
                reason: Reason::FleetExhausted,
            });
        }
        unassigned.sort_by_key(|u| u.client);
        let (distance, fixed, _, _) = self.local.measure();
        let routes = self
            .local
            .export()
            .into_iter()
            .map(|(t, v, nodes)| Route {
                vehicle_type: t,
                vehicle: v,
                clients: nodes.into_iter().map(|c| c as usize).collect(),
            })
            .collect();
        Solution {
            routes,
            unassigned,
            distance,
            cost: distance + fixed,
            iterations: self.iteration,
        }
    }
}

/// Penalties no lower than ten times the rate at which a vehicle buys
/// capacity and time, when vehicles have a fixed cost: a tenth of a
/// vehicle's capacity of excess load, or a tenth of a shift of time warp,
/// costs one fixed cost. Penalties set
/// from distances alone are tiny next to a fixed cost that outweighs any
/// travel, and the search would merge every route into one hopelessly late
/// and overloaded route (each merge saves a vehicle) and never find a
/// feasible plan with few vehicles. Without fixed costs, `p` unchanged.
fn vehicle_rate(data: &Data, p: Penalties) -> Penalties {
    let used = || data.types.iter().filter(|t| t.count > 0);
    let fixed = used().map(|t| t.fixed).min().unwrap_or(0);
    if fixed == 0 {
        return p;
    }
    // The binding load dimension: the one whose total demand fills the
    // most of a vehicle's capacity.
    let mut demand = [0i64; crate::MAX_DIMENSIONS];
    for &c in &data.active {
        for (d, x) in demand.iter_mut().zip(data.seg(c).load.iter()) {
            *d += x;
        }
    }
    let capacity = (0..crate::MAX_DIMENSIONS)
        .filter_map(|d| {
            let cap = used().map(|t| t.capacity[d]).max().unwrap_or(0);
            (cap > 0 && demand[d] > 0).then(|| (demand[d] as f64 / cap as f64, cap))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|x| x.1);
    let shift = used()
        .map(|t| {
            let (s, e) = (data.seg(t.start as usize), data.seg(t.end as usize));
            e.late - s.early
        })
        .max()
        .unwrap_or(0);
    let rate = |per: Option<i64>| match per {
        Some(x) if x > 0 => (fixed.saturating_mul(VEHICLE_RATE) / x).clamp(1, 1 << 30),
        _ => 1,
    };
    Penalties {
        load: p.load.max(rate(capacity)),
        warp: p.warp.max(rate(Some(shift))),
    }
}
