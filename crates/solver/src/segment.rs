//! Route segments: everything needed to cost a route built by joining
//! pieces of others, in O(1) per join (load, distance, and the time-warp
//! summary of Nagata et al. and Vidal et al.: duration, accumulated time
//! warp, earliest and latest feasible start).

use crate::model::{Data, Load};

/// A sequence of consecutive nodes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seg {
    pub(crate) first: u32,
    pub(crate) last: u32,
    pub(crate) clients: u32,
    pub(crate) distance: i64,
    pub(crate) duration: i64,
    pub(crate) warp: i64,
    pub(crate) early: i64,
    pub(crate) late: i64,
    pub(crate) load: Load,
}

impl Seg {
    /// `self` then `next`, travelling from the last node of one to the first
    /// of the other.
    #[inline(always)]
    pub(crate) fn then(&self, next: &Seg, data: &Data) -> Seg {
        let (a, b) = (self.last as usize, next.first as usize);
        let travel = data.duration(a, b);
        let delta = self.duration - self.warp + travel;
        let wait = (next.early - delta - self.late).max(0);
        let warp = (self.early + delta - next.late).max(0);
        let mut load = self.load;
        for (l, n) in load.iter_mut().zip(next.load.iter()) {
            *l += n;
        }
        Seg {
            first: self.first,
            last: next.last,
            clients: self.clients + next.clients,
            distance: self.distance + next.distance + data.distance(a, b),
            duration: self.duration + next.duration + travel + wait,
            warp: self.warp + next.warp + warp,
            early: (next.early - delta).max(self.early) - wait,
            late: (next.late - delta).min(self.late) + warp,
            load,
        }
    }
}
