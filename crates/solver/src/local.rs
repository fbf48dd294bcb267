//! The local search: for each client `u` and each granular neighbour `v`,
//! the first improving move among relocations (of `u`, of `u` and its
//! successor), swaps (1-1, 2-1, 2-2), 2-opt* between routes, and
//! relocation, swap and reversal within a route; and relocation of `u` into
//! an unused vehicle. Moves are costed in O(1) from cached prefix and suffix
//! segments (intra-route moves join the part between the two positions).
//! Cost is distance plus fixed costs plus penalties on load excess and time
//! warp. Also the greedy insertion the crossover uses to place clients.

use crate::model::Data;
use crate::rng::Rng;
use crate::segment::Seg;

/// Penalty weights per unit of load excess and of time warp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Penalties {
    pub(crate) load: i64,
    pub(crate) warp: i64,
}

/// One vehicle's route with its cached segments.
#[derive(Debug, Clone)]
struct RouteState {
    ty: usize,
    nodes: Vec<u32>,
    /// `pre[k]`: the start depot and the first `k` clients.
    pre: Vec<Seg>,
    /// `suf[k]`: clients from position `k` on and the end depot.
    suf: Vec<Seg>,
    /// Union of the skills needed by the clients from position `k` on.
    suf_skills: Vec<u64>,
    cost: i64,
    modified: u64,
}

/// A route as exported: vehicle type and clients in order.
pub(crate) type Plain = (usize, Vec<u32>);

/// Search state over every vehicle of the fleet.
pub(crate) struct Local<'a> {
    data: &'a Data,
    routes: Vec<RouteState>,
    route_of: Vec<u32>,
    pos_of: Vec<u32>,
    tested: Vec<u64>,
    counter: u64,
    pub(crate) penalties: Penalties,
    order: Vec<u32>,
    scratch: Vec<u32>,
    /// Whether two types' end depots are interchangeable (same node data).
    same_end: Vec<bool>,
}

impl<'a> Local<'a> {
    pub(crate) fn new(data: &'a Data) -> Self {
        let mut routes = Vec::new();
        for (t, ty) in data.types.iter().enumerate() {
            for _ in 0..ty.count {
                routes.push(RouteState {
                    ty: t,
                    nodes: Vec::new(),
                    pre: Vec::new(),
                    suf: Vec::new(),
                    suf_skills: Vec::new(),
                    cost: 0,
                    modified: 0,
                });
            }
        }
        let tn = data.types.len();
        let mut same_end = vec![false; tn * tn];
        for a in 0..tn {
            for b in 0..tn {
                let (x, y) = (
                    data.seg(data.types[a].end as usize),
                    data.seg(data.types[b].end as usize),
                );
                same_end[a * tn + b] = data.distance(x.first as usize, y.first as usize) == 0
                    && data.distance(y.first as usize, x.first as usize) == 0
                    && data.duration(x.first as usize, y.first as usize) == 0
                    && data.duration(y.first as usize, x.first as usize) == 0
                    && x.early == y.early
                    && x.late == y.late;
            }
        }
        let mut l = Local {
            data,
            routes,
            route_of: vec![u32::MAX; data.n],
            pos_of: vec![0; data.n],
            tested: vec![0; data.n],
            counter: 1,
            penalties: Penalties { load: 1, warp: 1 },
            order: data.active.iter().map(|&c| c as u32).collect(),
            scratch: Vec::new(),
            same_end,
        };
        for r in 0..l.routes.len() {
            l.update(r);
        }
        l
    }

    /// Penalised cost of a whole route held in `s` for a vehicle of type `t`.
    #[inline(always)]
    fn cost(&self, s: &Seg, t: usize) -> i64 {
        if s.clients == 0 {
            return 0;
        }
        s.distance
            + self.data.types[t].fixed
            + self.penalties.load * self.data.excess(&s.load, t)
            + self.penalties.warp * s.warp
    }

    /// Lower bound of the cost of a route made of `a` then `b`: its
    /// distance and fixed cost, penalties left out. Cheap, so most moves are
    /// discarded before their time warp is computed.
    #[inline(always)]
    fn bound2(&self, a: &Seg, b: &Seg, t: usize) -> i64 {
        if a.clients + b.clients == 0 {
            return 0;
        }
        a.distance
            + b.distance
            + self.data.distance(a.last as usize, b.first as usize)
            + self.data.types[t].fixed
    }

    /// As [`Self::bound2`] for `a`, the clients `m` in order, then `b`.
    #[inline(always)]
    fn bound3(&self, a: &Seg, m: &[usize], b: &Seg, t: usize) -> i64 {
        let d = self.data;
        let mut x = a.distance + b.distance + d.types[t].fixed;
        let mut prev = a.last as usize;
        for &c in m {
            x += d.distance(prev, c);
            prev = c;
        }
        x + d.distance(prev, b.first as usize)
    }

    fn update(&mut self, r: usize) {
        let data = self.data;
        self.counter += 1;
        let route = &mut self.routes[r];
        let ty = &data.types[route.ty];
        let len = route.nodes.len();
        route.pre.clear();
        route.pre.push(data.seg(ty.start as usize));
        for k in 0..len {
            let c = route.nodes[k] as usize;
            let s = route.pre[k].then(&data.seg(c), data);
            route.pre.push(s);
            self.route_of[c] = r as u32;
            self.pos_of[c] = k as u32;
        }
        route.suf.clear();
        route.suf.resize(len + 1, data.seg(ty.end as usize));
        route.suf_skills.clear();
        route.suf_skills.resize(len + 1, 0);
        for k in (0..len).rev() {
            let c = route.nodes[k] as usize;
            route.suf[k] = data.seg(c).then(&route.suf[k + 1], data);
            route.suf_skills[k] = route.suf_skills[k + 1] | data.skills[c];
        }
        route.modified = self.counter;
        let full = route.pre[len].then(&route.suf[len], data);
        let t = route.ty;
        self.routes[r].cost = self.cost(&full, t);
    }

    /// Replaces the whole state by `routes` (types must have free vehicles;
    /// routes beyond a type's count are dropped and their clients returned).
    /// Routes marked in `clean` come unchanged from a local optimum: the
    /// search skips pairs of clean routes until one of them changes.
    pub(crate) fn load(&mut self, routes: &[Plain], clean: &[bool]) -> Vec<u32> {
        for r in &mut self.routes {
            r.nodes.clear();
        }
        self.route_of.fill(u32::MAX);
        let mut dropped = Vec::new();
        let mut next = 0;
        let mut dirty = Vec::new();
        for (k, (t, nodes)) in routes.iter().enumerate() {
            // Vehicles are laid out by type, so search from the first of `t`.
            let slot = (next..self.routes.len())
                .chain(0..next)
                .find(|&i| self.routes[i].ty == *t && self.routes[i].nodes.is_empty());
            match slot {
                Some(i) => {
                    self.routes[i].nodes.extend_from_slice(nodes);
                    next = i;
                    if !clean.get(k).copied().unwrap_or(false) {
                        dirty.push(i);
                    }
                }
                None => dropped.extend_from_slice(nodes),
            }
        }
        for r in 0..self.routes.len() {
            self.update(r);
        }
        self.tested.fill(self.counter);
        for r in dirty {
            self.counter += 1;
            self.routes[r].modified = self.counter;
        }
        dropped
    }

    /// The current routes (non-empty), with their vehicle index per type.
    pub(crate) fn export(&self) -> Vec<(usize, usize, Vec<u32>)> {
        let mut first = vec![usize::MAX; self.data.types.len()];
        let mut out = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            if first[r.ty] == usize::MAX {
                first[r.ty] = i;
            }
            if !r.nodes.is_empty() {
                out.push((r.ty, i - first[r.ty], r.nodes.clone()));
            }
        }
        out
    }

    /// Distance, fixed cost, load excess and time warp of the current routes.
    pub(crate) fn measure(&self) -> (i64, i64, i64, i64) {
        let mut m = (0, 0, 0, 0);
        for r in &self.routes {
            if r.nodes.is_empty() {
                continue;
            }
            let len = r.nodes.len();
            let full = r.pre[len].then(&r.suf[len], self.data);
            m.0 += full.distance;
            m.1 += self.data.types[r.ty].fixed;
            m.2 += self.data.excess(&full.load, r.ty);
            m.3 += full.warp;
        }
        m
    }

    /// Route-by-route feasibility and the routes' clients, for repair.
    pub(crate) fn violating_route(&self) -> Option<usize> {
        self.routes.iter().position(|r| {
            let len = r.nodes.len();
            let full = r.pre[len].then(&r.suf[len], self.data);
            len > 0 && (full.warp > 0 || self.data.excess(&full.load, r.ty) > 0)
        })
    }

    /// Takes out of route `r` the client whose removal lowers its penalised
    /// cost most; returns it.
    pub(crate) fn remove_worst(&mut self, r: usize) -> u32 {
        let route = &self.routes[r];
        let mut best = (i64::MAX, 0);
        for k in 0..route.nodes.len() {
            let s = route.pre[k].then(&route.suf[k + 1], self.data);
            let c = self.cost(&s, route.ty);
            if c < best.0 {
                best = (c, k);
            }
        }
        let c = self.routes[r].nodes.remove(best.1);
        self.route_of[c as usize] = u32::MAX;
        self.update(r);
        c
    }

    /// Empties the used route with the fewest clients (ties: the lowest
    /// load, then the first) and returns its clients; `None` with fewer
    /// than two routes in use.
    pub(crate) fn empty_smallest(&mut self) -> Option<Vec<u32>> {
        let used = self.routes.iter().filter(|r| !r.nodes.is_empty()).count();
        if used < 2 {
            return None;
        }
        let r = (0..self.routes.len())
            .filter(|&r| !self.routes[r].nodes.is_empty())
            .min_by_key(|&r| {
                let route = &self.routes[r];
                (route.nodes.len(), route.pre[route.nodes.len()].load, r)
            })?;
        let clients = std::mem::take(&mut self.routes[r].nodes);
        for &c in &clients {
            self.route_of[c as usize] = u32::MAX;
        }
        self.update(r);
        Some(clients)
    }

    /// Inserts `c` where it raises the penalised cost least, among the
    /// routes in use only.
    pub(crate) fn insert_used(&mut self, c: usize) {
        let data = self.data;
        let node = data.seg(c);
        let mut best = (i64::MAX, usize::MAX, 0);
        for (r, route) in self.routes.iter().enumerate() {
            if route.nodes.is_empty() || !data.fits(c, route.ty) {
                continue;
            }
            for g in 0..=route.nodes.len() {
                let s = route.pre[g].then(&node, data).then(&route.suf[g], data);
                let d = self.cost(&s, route.ty) - route.cost;
                if d < best.0 {
                    best = (d, r, g);
                }
            }
        }
        if best.1 == usize::MAX {
            self.insert(c);
            return;
        }
        self.routes[best.1].nodes.insert(best.2, c as u32);
        self.update(best.1);
    }

    /// Inserts `c` where it raises the penalised cost least.
    pub(crate) fn insert(&mut self, c: usize) {
        let data = self.data;
        let node = data.seg(c);
        let mut best = (i64::MAX, usize::MAX, 0);
        let mut empty_seen = vec![false; data.types.len()];
        for (r, route) in self.routes.iter().enumerate() {
            if !data.fits(c, route.ty) {
                continue;
            }
            if route.nodes.is_empty() {
                if empty_seen[route.ty] {
                    continue;
                }
                empty_seen[route.ty] = true;
            }
            for g in 0..=route.nodes.len() {
                let s = route.pre[g].then(&node, data).then(&route.suf[g], data);
                let d = self.cost(&s, route.ty) - route.cost;
                if d < best.0 {
                    best = (d, r, g);
                }
            }
        }
        if best.1 == usize::MAX {
            // No compatible vehicle at all: the model never activates such
            // a client, so this is unreachable; keep it out of the routes.
            return;
        }
        self.routes[best.1].nodes.insert(best.2, c as u32);
        self.update(best.1);
    }

    /// Runs the local search to a local optimum.
    pub(crate) fn run(&mut self, rng: &mut Rng) {
        let data = self.data;
        rng.shuffle(&mut self.order);
        loop {
            let mut improved = false;
            for i in 0..self.order.len() {
                let u = self.order[i] as usize;
                let last = self.tested[u];
                self.tested[u] = self.counter;
                for k in 0..data.neighbours[u].len() {
                    let v = data.neighbours[u][k] as usize;
                    let (ru, rv) = (self.route_of[u] as usize, self.route_of[v] as usize);
                    if ru == u32::MAX as usize || rv == u32::MAX as usize {
                        continue;
                    }
                    if self.routes[ru].modified.max(self.routes[rv].modified) <= last {
                        continue;
                    }
                    let moved = if ru == rv {
                        self.intra(u, v)
                    } else {
                        self.inter(u, v)
                    };
                    improved |= moved;
                }
                let ru = self.route_of[u] as usize;
                if ru != u32::MAX as usize
                    && self.routes[ru].modified > last
                    && self.move_to_unused(u)
                {
                    improved = true;
                }
            }
            if !improved {
                break;
            }
        }
    }

    /// Relocates `u` to an unused vehicle if that lowers the cost.
    fn move_to_unused(&mut self, u: usize) -> bool {
        let data = self.data;
        let ru = self.route_of[u] as usize;
        let pu = self.pos_of[u] as usize;
        let (tu, cu) = (self.routes[ru].ty, self.routes[ru].cost);
        if self.routes[ru].nodes.len() == 1 {
            return false;
        }
        let new_u = self.routes[ru].pre[pu].then(&self.routes[ru].suf[pu + 1], data);
        let base = self.cost(&new_u, tu) - cu;
        let mut last_ty = usize::MAX;
        for r in 0..self.routes.len() {
            let route = &self.routes[r];
            if !route.nodes.is_empty() || route.ty == last_ty || !data.fits(u, route.ty) {
                continue;
            }
            last_ty = route.ty;
            let s = route.pre[0]
                .then(&data.seg(u), data)
                .then(&route.suf[0], data);
            if base + self.cost(&s, route.ty) < 0 {
                self.routes[ru].nodes.remove(pu);
                self.routes[r].nodes.push(u as u32);
                self.update(ru);
                self.update(r);
                return true;
            }
        }
        false
    }

    /// Clients from position `k` of route `r` followed by the end depot of
    /// type `t` (the cached suffix when the end depots agree).
    #[inline]
    fn tail(&self, r: usize, k: usize, t: usize) -> Seg {
        let route = &self.routes[r];
        let tn = self.data.types.len();
        if self.same_end[route.ty * tn + t] {
            return route.suf[k];
        }
        let data = self.data;
        let mut s = data.seg(data.types[t].end as usize);
        for i in (k..route.nodes.len()).rev() {
            s = data.seg(route.nodes[i] as usize).then(&s, data);
        }
        s
    }

    /// Clients at positions `i..=j` of route `r` (`i <= j`).
    #[inline]
    fn between(&self, r: usize, i: usize, j: usize) -> Seg {
        let data = self.data;
        let nodes = &self.routes[r].nodes;
        let mut s = data.seg(nodes[i] as usize);
        for &c in &nodes[i + 1..=j] {
            s = s.then(&data.seg(c as usize), data);
        }
        s
    }

    /// Moves between the routes of `u` and `v`; applies the first improving.
    fn inter(&mut self, u: usize, v: usize) -> bool {
        let data = self.data;
        let (ru, rv) = (self.route_of[u] as usize, self.route_of[v] as usize);
        let (pu, pv) = (self.pos_of[u] as usize, self.pos_of[v] as usize);
        let (a, b) = (&self.routes[ru], &self.routes[rv]);
        let (tu, tv) = (a.ty, b.ty);
        let (lu, lv) = (a.nodes.len(), b.nodes.len());
        let base = a.cost + b.cost;
        let (su, sv) = (data.seg(u), data.seg(v));
        let x = (pu + 1 < lu).then(|| a.nodes[pu + 1] as usize);
        let y = (pv + 1 < lv).then(|| b.nodes[pv + 1] as usize);
        let u_in_v = data.fits(u, tv);
        let v_in_u = data.fits(v, tu);
        let x_in_v = x.is_some_and(|x| data.fits(x, tv));
        let y_in_u = y.is_some_and(|y| data.fits(y, tu));

        if u_in_v {
            // u out of its route, then after or before v.
            let bu = self.bound2(&a.pre[pu], &a.suf[pu + 1], tu);
            if bu + self.bound3(&b.pre[pv + 1], &[u], &b.suf[pv + 1], tv) < base {
                let new_u = a.pre[pu].then(&a.suf[pu + 1], data);
                let after = b.pre[pv + 1].then(&su, data).then(&b.suf[pv + 1], data);
                if self.cost(&new_u, tu) + self.cost(&after, tv) < base {
                    self.routes[ru].nodes.remove(pu);
                    self.routes[rv].nodes.insert(pv + 1, u as u32);
                    return self.done(ru, rv);
                }
            }
            if bu + self.bound3(&b.pre[pv], &[u], &b.suf[pv], tv) < base {
                let new_u = a.pre[pu].then(&a.suf[pu + 1], data);
                let before = b.pre[pv].then(&su, data).then(&b.suf[pv], data);
                if self.cost(&new_u, tu) + self.cost(&before, tv) < base {
                    self.routes[ru].nodes.remove(pu);
                    self.routes[rv].nodes.insert(pv, u as u32);
                    return self.done(ru, rv);
                }
            }
            if let Some(x) = x.filter(|_| x_in_v) {
                let bound = self.bound2(&a.pre[pu], &a.suf[pu + 2], tu)
                    + self.bound3(&b.pre[pv + 1], &[u, x], &b.suf[pv + 1], tv);
                if bound < base {
                    let new_u = a.pre[pu].then(&a.suf[pu + 2], data);
                    let new_v = b.pre[pv + 1]
                        .then(&su, data)
                        .then(&data.seg(x), data)
                        .then(&b.suf[pv + 1], data);
                    if self.cost(&new_u, tu) + self.cost(&new_v, tv) < base {
                        self.routes[ru].nodes.drain(pu..pu + 2);
                        let nodes = &mut self.routes[rv].nodes;
                        nodes.insert(pv + 1, x as u32);
                        nodes.insert(pv + 1, u as u32);
                        return self.done(ru, rv);
                    }
                }
            }
        }
        if u_in_v && v_in_u {
            let bound = self.bound3(&a.pre[pu], &[v], &a.suf[pu + 1], tu)
                + self.bound3(&b.pre[pv], &[u], &b.suf[pv + 1], tv);
            if bound < base {
                let new_u = a.pre[pu].then(&sv, data).then(&a.suf[pu + 1], data);
                let new_v = b.pre[pv].then(&su, data).then(&b.suf[pv + 1], data);
                if self.cost(&new_u, tu) + self.cost(&new_v, tv) < base {
                    self.routes[ru].nodes[pu] = v as u32;
                    self.routes[rv].nodes[pv] = u as u32;
                    return self.done(ru, rv);
                }
            }
            if let Some(x) = x.filter(|_| x_in_v) {
                let sx = data.seg(x);
                let bound = self.bound3(&a.pre[pu], &[v], &a.suf[pu + 2], tu)
                    + self.bound3(&b.pre[pv], &[u, x], &b.suf[pv + 1], tv);
                if bound < base {
                    let new_u = a.pre[pu].then(&sv, data).then(&a.suf[pu + 2], data);
                    let new_v = b.pre[pv]
                        .then(&su, data)
                        .then(&sx, data)
                        .then(&b.suf[pv + 1], data);
                    if self.cost(&new_u, tu) + self.cost(&new_v, tv) < base {
                        let nodes = &mut self.routes[ru].nodes;
                        nodes[pu] = v as u32;
                        nodes.remove(pu + 1);
                        let nodes = &mut self.routes[rv].nodes;
                        nodes[pv] = u as u32;
                        nodes.insert(pv + 1, x as u32);
                        return self.done(ru, rv);
                    }
                }
                if let Some(y) = y.filter(|_| y_in_u) {
                    let bound = self.bound3(&a.pre[pu], &[v, y], &a.suf[pu + 2], tu)
                        + self.bound3(&b.pre[pv], &[u, x], &b.suf[pv + 2], tv);
                    if bound < base {
                        let sy = data.seg(y);
                        let new_u = a.pre[pu]
                            .then(&sv, data)
                            .then(&sy, data)
                            .then(&a.suf[pu + 2], data);
                        let new_v = b.pre[pv]
                            .then(&su, data)
                            .then(&sx, data)
                            .then(&b.suf[pv + 2], data);
                        if self.cost(&new_u, tu) + self.cost(&new_v, tv) < base {
                            let nodes = &mut self.routes[ru].nodes;
                            nodes[pu] = v as u32;
                            nodes[pu + 1] = y as u32;
                            let nodes = &mut self.routes[rv].nodes;
                            nodes[pv] = u as u32;
                            nodes[pv + 1] = x as u32;
                            return self.done(ru, rv);
                        }
                    }
                }
            }
        }
        // 2-opt*: u's route keeps its start up to u and takes v's tail
        // (from v's successor, or from v itself); v's route takes u's tail.
        let (ku, kv) = (data.types[tu].skills, data.types[tv].skills);
        let u_tail_ok = a.suf_skills[pu + 1] & !kv == 0;
        let tn = data.types.len();
        let same = self.same_end[tu * tn + tv];
        for k in [pv + 1, pv] {
            if !u_tail_ok || b.suf_skills[k] & !ku != 0 {
                continue;
            }
            if same
                && self.bound2(&a.pre[pu + 1], &b.suf[k], tu)
                    + self.bound2(&b.pre[k], &a.suf[pu + 1], tv)
                    >= base
            {
                continue;
            }
            let new_u = a.pre[pu + 1].then(&self.tail(rv, k, tu), data);
            let new_v = b.pre[k].then(&self.tail(ru, pu + 1, tv), data);
            if self.cost(&new_u, tu) + self.cost(&new_v, tv) < base {
                let mut tail_u = std::mem::take(&mut self.scratch);
                tail_u.clear();
                tail_u.extend(self.routes[ru].nodes.drain(pu + 1..));
                let tail_v: Vec<u32> = self.routes[rv].nodes.drain(k..).collect();
                self.routes[ru].nodes.extend_from_slice(&tail_v);
                self.routes[rv].nodes.extend_from_slice(&tail_u);
                self.scratch = tail_u;
                return self.done(ru, rv);
            }
        }
        false
    }

    /// Moves within the route of `u` and `v`; applies the first improving.
    fn intra(&mut self, u: usize, v: usize) -> bool {
        let data = self.data;
        let r = self.route_of[u] as usize;
        let (i, j) = (self.pos_of[u] as usize, self.pos_of[v] as usize);
        let route = &self.routes[r];
        let t = route.ty;
        let base = route.cost;
        let su = data.seg(u);
        // Distance of the route now, and the nodes around a position.
        let len = route.nodes.len();
        let dist = route.pre[len].distance
            + route.suf[len].distance
            + data.distance(route.pre[len].last as usize, route.suf[len].first as usize);
        let fixed = data.types[t].fixed;
        let before = |k: usize| route.pre[k].last as usize;
        let at_or_end = |k: usize| route.suf[k].first as usize;
        let d = |a: usize, b: usize| data.distance(a, b);
        let (pu_, xu) = (before(i), at_or_end(i + 1));
        let out_u = d(pu_, xu) - d(pu_, u) - d(u, xu);
        // u to the gap after v, then to the gap before v.
        for g in [j + 1, j] {
            if g == i || g == i + 1 {
                continue;
            }
            let (p, q) = (before(g), at_or_end(g));
            if dist + fixed + out_u + d(p, u) + d(u, q) - d(p, q) >= base {
                continue;
            }
            let s = if g < i {
                route.pre[g]
                    .then(&su, data)
                    .then(&self.between(r, g, i - 1), data)
                    .then(&route.suf[i + 1], data)
            } else {
                route.pre[i]
                    .then(&self.between(r, i + 1, g - 1), data)
                    .then(&su, data)
                    .then(&route.suf[g], data)
            };
            if self.cost(&s, t) < base {
                let nodes = &mut self.routes[r].nodes;
                let c = nodes.remove(i);
                nodes.insert(if g > i { g - 1 } else { g }, c);
                return self.done(r, r);
            }
        }
        // Swap u and v.
        let (lo, hi) = (i.min(j), i.max(j));
        let (a, b) = (route.nodes[lo] as usize, route.nodes[hi] as usize);
        let (pa, xa, pb, xb) = (before(lo), at_or_end(lo + 1), before(hi), at_or_end(hi + 1));
        let change = if hi == lo + 1 {
            d(pa, b) + d(b, a) + d(a, xb) - d(pa, a) - d(a, b) - d(b, xb)
        } else {
            d(pa, b) + d(b, xa) + d(pb, a) + d(a, xb) - d(pa, a) - d(a, xa) - d(pb, b) - d(b, xb)
        };
        if dist + fixed + change < base {
            let (slo, shi) = (data.seg(a), data.seg(b));
            let s = if hi == lo + 1 {
                route.pre[lo].then(&shi, data).then(&slo, data)
            } else {
                route.pre[lo]
                    .then(&shi, data)
                    .then(&self.between(r, lo + 1, hi - 1), data)
                    .then(&slo, data)
            }
            .then(&route.suf[hi + 1], data);
            if self.cost(&s, t) < base {
                self.routes[r].nodes.swap(lo, hi);
                return self.done(r, r);
            }
        }
        // Reverse lo+1..=hi, making the later of the two follow the earlier.
        if hi > lo + 1 {
            let nodes = &route.nodes;
            let bounded =
                !data.symmetric || dist + fixed + d(a, b) + d(xa, xb) - d(a, xa) - d(b, xb) < base;
            if bounded {
                let mut s = route.pre[lo + 1];
                for k in (lo + 1..=hi).rev() {
                    s = s.then(&data.seg(nodes[k] as usize), data);
                }
                let s = s.then(&route.suf[hi + 1], data);
                if self.cost(&s, t) < base {
                    self.routes[r].nodes[lo + 1..=hi].reverse();
                    return self.done(r, r);
                }
            }
        }
        false
    }

    fn done(&mut self, ru: usize, rv: usize) -> bool {
        self.update(ru);
        if rv != ru {
            self.update(rv);
        }
        true
    }
}
