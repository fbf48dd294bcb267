//! The problem checked once and laid out flat for the search: nodes are the
//! clients (`0..n`) followed by a start and an end node per vehicle type.
//! Also finds the clients no vehicle could serve even alone, and each
//! client's granular neighbours.

use crate::segment::Seg;
use crate::{Error, MAX_DIMENSIONS, Params, Problem, Reason, Unassigned};

/// A load vector; unused dimensions stay zero.
pub(crate) type Load = [i64; MAX_DIMENSIONS];

/// One vehicle type, flattened.
#[derive(Debug, Clone)]
pub(crate) struct TypeData {
    pub(crate) count: usize,
    pub(crate) capacity: Load,
    pub(crate) skills: u64,
    pub(crate) fixed: i64,
    pub(crate) start: u32,
    pub(crate) end: u32,
}

/// The searched problem.
#[derive(Debug, Clone)]
pub(crate) struct Data {
    /// Number of clients (all of them; only `active` are routed).
    pub(crate) n: usize,
    locations: usize,
    distance: Vec<i64>,
    duration: Vec<i64>,
    location: Vec<u32>,
    pub(crate) skills: Vec<u64>,
    node: Vec<Seg>,
    pub(crate) types: Vec<TypeData>,
    /// Clients to route.
    pub(crate) active: Vec<usize>,
    /// Clients no vehicle can serve, with the reason.
    pub(crate) unassignable: Vec<Unassigned>,
    /// Per client, the nearest others by distance and window proximity.
    pub(crate) neighbours: Vec<Vec<u32>>,
    /// Whether the distance matrix is symmetric (reversing a stretch of a
    /// route keeps its inner distance).
    pub(crate) symmetric: bool,
}

fn invalid(what: impl Into<String>, detail: impl Into<String>) -> Error {
    Error::Invalid {
        what: what.into(),
        detail: detail.into(),
    }
}

fn load_of(v: &[i64]) -> Load {
    let mut l = [0; MAX_DIMENSIONS];
    l[..v.len()].copy_from_slice(v);
    l
}

impl Data {
    pub(crate) fn new(p: &Problem, params: &Params) -> Result<Self, Error> {
        let l = p.locations;
        if l == 0 {
            return Err(invalid("problem", "no locations"));
        }
        if l.checked_mul(l) != Some(p.distance.len()) || p.distance.len() != p.duration.len() {
            return Err(invalid(
                "matrices",
                format!(
                    "want {l}x{l} entries, distance has {}, duration {}",
                    p.distance.len(),
                    p.duration.len()
                ),
            ));
        }
        // Bounds keep every sum of a route far from overflow.
        const BIG: i64 = 1 << 40;
        if let Some(i) = p
            .distance
            .iter()
            .chain(&p.duration)
            .position(|&x| !(0..BIG).contains(&x))
        {
            let m = if i < p.distance.len() {
                "distance"
            } else {
                "duration"
            };
            let i = i % p.distance.len();
            return Err(invalid(
                format!("{m} matrix entry ({}, {})", i / l, i % l),
                "must be in 0..2^40",
            ));
        }
        if !(1..=MAX_DIMENSIONS).contains(&p.dimensions) {
            return Err(invalid(
                "dimensions",
                format!("{} not in 1..={MAX_DIMENSIONS}", p.dimensions),
            ));
        }
        if params.time_limit.is_none() && params.iterations.is_none() {
            return Err(invalid(
                "params",
                "give a time limit or an iteration budget",
            ));
        }
        if params.granular == 0 || params.population < 2 || params.generation == 0 {
            return Err(invalid(
                "params",
                "granular, generation must be positive and population at least 2",
            ));
        }
        let n = p.clients.len();
        if p.vehicle_types.is_empty() {
            return Err(invalid("fleet", "no vehicle types"));
        }
        let mut node = Vec::with_capacity(n + 2 * p.vehicle_types.len());
        let mut location = Vec::with_capacity(node.capacity());
        let mut skills = Vec::with_capacity(n);
        for (i, c) in p.clients.iter().enumerate() {
            let what = || format!("client {i}");
            if c.location >= l {
                return Err(invalid(
                    what(),
                    format!("location {} out of range", c.location),
                ));
            }
            if c.demand.len() != p.dimensions || c.demand.iter().any(|&d| !(0..BIG).contains(&d)) {
                return Err(invalid(
                    what(),
                    format!("demand must be {} values in 0..2^40", p.dimensions),
                ));
            }
            if c.window.0 > c.window.1 || c.window.0 < 0 || c.window.1 >= BIG {
                return Err(invalid(what(), "window must be ordered and in 0..2^40"));
            }
            if !(0..BIG).contains(&c.service) {
                return Err(invalid(what(), "service must be in 0..2^40"));
            }
            location.push(c.location as u32);
            skills.push(c.skills);
            node.push(Seg {
                first: i as u32,
                last: i as u32,
                clients: 1,
                distance: 0,
                duration: c.service,
                warp: 0,
                early: c.window.0,
                late: c.window.1,
                load: load_of(&c.demand),
            });
        }
        let mut types = Vec::with_capacity(p.vehicle_types.len());
        for (t, v) in p.vehicle_types.iter().enumerate() {
            let what = || format!("vehicle type {t}");
            if v.start >= l || v.end >= l {
                return Err(invalid(what(), "start or end location out of range"));
            }
            if v.capacity.len() != p.dimensions
                || v.capacity.iter().any(|&d| !(0..BIG).contains(&d))
            {
                return Err(invalid(
                    what(),
                    format!("capacity must be {} values in 0..2^40", p.dimensions),
                ));
            }
            if v.shift.0 > v.shift.1 || v.shift.0 < 0 || v.shift.1 >= BIG {
                return Err(invalid(what(), "shift must be ordered and in 0..2^40"));
            }
            if !(0..BIG).contains(&v.fixed_cost) {
                return Err(invalid(what(), "fixed cost must be in 0..2^40"));
            }
            let depot = |id: usize| Seg {
                first: id as u32,
                last: id as u32,
                clients: 0,
                distance: 0,
                duration: 0,
                warp: 0,
                early: v.shift.0,
                late: v.shift.1,
                load: [0; MAX_DIMENSIONS],
            };
            let start = node.len();
            node.push(depot(start));
            location.push(v.start as u32);
            node.push(depot(start + 1));
            location.push(v.end as u32);
            types.push(TypeData {
                // More vehicles of one type than clients are never useful.
                count: v.count.min(n),
                capacity: load_of(&v.capacity),
                skills: v.skills,
                fixed: v.fixed_cost,
                start: start as u32,
                end: start as u32 + 1,
            });
        }
        let mut data = Data {
            n,
            locations: l,
            distance: p.distance.clone(),
            duration: p.duration.clone(),
            location,
            skills,
            node,
            types,
            active: Vec::new(),
            unassignable: Vec::new(),
            neighbours: vec![Vec::new(); n],
            symmetric: (0..l)
                .all(|a| (0..a).all(|b| p.distance[a * l + b] == p.distance[b * l + a])),
        };
        for c in 0..n {
            match data.serviceable(c) {
                Ok(()) => data.active.push(c),
                Err(reason) => data.unassignable.push(Unassigned { client: c, reason }),
            }
        }
        data.neighbours = data.granular(params.granular);
        Ok(data)
    }

    /// Whether some vehicle could serve `c` on a route of its own.
    fn serviceable(&self, c: usize) -> Result<(), Reason> {
        let compatible: Vec<&TypeData> = self
            .types
            .iter()
            .filter(|t| t.count > 0 && self.skills[c] & !t.skills == 0)
            .collect();
        if compatible.is_empty() {
            return Err(Reason::NoCompatibleVehicle);
        }
        let fits: Vec<&&TypeData> = compatible
            .iter()
            .filter(|t| {
                self.node[c]
                    .load
                    .iter()
                    .zip(t.capacity.iter())
                    .all(|(d, k)| d <= k)
            })
            .collect();
        if fits.is_empty() {
            return Err(Reason::ExceedsCapacity);
        }
        let reachable = fits.iter().any(|t| {
            let route = self
                .seg(t.start as usize)
                .then(&self.node[c], self)
                .then(&self.seg(t.end as usize), self);
            route.warp == 0
        });
        if !reachable {
            return Err(Reason::WindowUnreachable);
        }
        Ok(())
    }

    fn granular(&self, k: usize) -> Vec<Vec<u32>> {
        let mut out = vec![Vec::new(); self.n];
        let share_vehicle = |a: usize, b: usize| {
            let need = self.skills[a] | self.skills[b];
            self.types
                .iter()
                .any(|t| t.count > 0 && need & !t.skills == 0)
        };
        // Directed proximity: travel plus waiting (weighted lightly) plus
        // the time warp of serving `j` right after `i`.
        let proximity = |i: usize, j: usize| {
            let (a, b) = (&self.node[i], &self.node[j]);
            let t = self.duration(i, j);
            let wait = (b.early - t - a.duration - a.late).max(0);
            let warp = (a.early + a.duration + t - b.late).max(0);
            self.distance(i, j) as f64 + 0.2 * wait as f64 + warp as f64
        };
        let mut cand: Vec<(f64, u32)> = Vec::with_capacity(self.active.len());
        for &i in &self.active {
            cand.clear();
            for &j in &self.active {
                if j != i && share_vehicle(i, j) {
                    cand.push((proximity(i, j).min(proximity(j, i)), j as u32));
                }
            }
            cand.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            out[i] = cand.iter().take(k).map(|c| c.1).collect();
        }
        out
    }

    #[inline(always)]
    pub(crate) fn distance(&self, a: usize, b: usize) -> i64 {
        self.distance[self.location[a] as usize * self.locations + self.location[b] as usize]
    }

    #[inline(always)]
    pub(crate) fn duration(&self, a: usize, b: usize) -> i64 {
        self.duration[self.location[a] as usize * self.locations + self.location[b] as usize]
    }

    /// The one-node segment of node `i`.
    #[inline]
    pub(crate) fn seg(&self, i: usize) -> Seg {
        self.node[i]
    }

    /// Whether client `c` may ride a vehicle of type `t`.
    #[inline]
    pub(crate) fn fits(&self, c: usize, t: usize) -> bool {
        self.skills[c] & !self.types[t].skills == 0
    }

    /// Load beyond the capacity of type `t`, summed over dimensions.
    #[inline(always)]
    pub(crate) fn excess(&self, load: &Load, t: usize) -> i64 {
        let cap = &self.types[t].capacity;
        let mut e = 0;
        for d in 0..MAX_DIMENSIONS {
            e += (load[d] - cap[d]).max(0);
        }
        e
    }
}
