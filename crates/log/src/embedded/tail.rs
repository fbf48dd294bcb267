//! The index tail: where events after the last indexed position are found
//! until the writer has folded them into `stream_index` and `event_ids`.
//!
//! The writer adds to it after each commit and removes a generation once
//! that generation is in the index tables; readers look here first, then in
//! the tables. It is never the only record of anything: on open it is
//! rebuilt from the `events` rows after `meta.indexed_upto`.

use std::collections::HashMap;
use std::sync::Arc;

/// Where one event is: (position, stream, version).
pub(super) type Located = (u64, Arc<str>, u64);

/// The index entries of a run of consecutive positions.
#[derive(Debug, Default)]
pub(super) struct Generation {
    /// Stream → (version, position), in version order.
    pub(super) streams: HashMap<Arc<str>, Vec<(u64, u64)>>,
    /// Event id → where it is.
    pub(super) ids: HashMap<[u8; 16], Located>,
    /// Events in this generation.
    pub(super) len: usize,
}

impl Generation {
    pub(super) fn add(&mut self, id: [u8; 16], stream: &Arc<str>, version: u64, position: u64) {
        self.streams
            .entry(Arc::clone(stream))
            .or_default()
            .push((version, position));
        self.ids.insert(id, (position, Arc::clone(stream), version));
        self.len += 1;
    }
}

/// Everything not yet in the index tables.
#[derive(Debug, Default)]
pub(super) struct Tail {
    /// Being written to the index tables, in slices.
    pub(super) sealed: Option<Generation>,
    /// Receiving new events.
    pub(super) active: Generation,
}

impl Tail {
    pub(super) fn find_id(&self, id: &[u8; 16]) -> Option<Located> {
        self.active
            .ids
            .get(id)
            .or_else(|| self.sealed.as_ref().and_then(|g| g.ids.get(id)))
            .cloned()
    }

    /// The highest version of `stream` in the tail, if it has any.
    pub(super) fn last_version(&self, stream: &str) -> Option<u64> {
        let last = |g: &Generation| g.streams.get(stream).and_then(|v| v.last()).map(|e| e.0);
        last(&self.active).or_else(|| self.sealed.as_ref().and_then(last))
    }

    /// (version, position) of `stream` above `after_version`, in version order.
    pub(super) fn stream_after(&self, stream: &str, after_version: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for g in self.sealed.iter().chain(std::iter::once(&self.active)) {
            if let Some(v) = g.streams.get(stream) {
                out.extend(v.iter().filter(|(ver, _)| *ver > after_version));
            }
        }
        out
    }
}

/// The writer's private plan for folding a sealed generation into the
/// index tables, sorted by key so each page is written once.
#[derive(Debug)]
pub(super) struct FlushPlan {
    /// The last position of the sealed generation.
    pub(super) upto: u64,
    pub(super) streams: Vec<(Arc<str>, u64, u64)>,
    pub(super) ids: Vec<([u8; 16], u64)>,
    pub(super) stream_cursor: usize,
    pub(super) id_cursor: usize,
}

impl FlushPlan {
    pub(super) fn new(generation: &Generation, upto: u64) -> Self {
        let mut streams: Vec<(Arc<str>, u64, u64)> = generation
            .streams
            .iter()
            .flat_map(|(s, v)| v.iter().map(move |(ver, pos)| (Arc::clone(s), *ver, *pos)))
            .collect();
        streams.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut ids: Vec<([u8; 16], u64)> = generation
            .ids
            .iter()
            .map(|(id, (pos, _, _))| (*id, *pos))
            .collect();
        ids.sort_unstable();
        Self {
            upto,
            streams,
            ids,
            stream_cursor: 0,
            id_cursor: 0,
        }
    }

    pub(super) fn is_done(&self) -> bool {
        self.stream_cursor >= self.streams.len() && self.id_cursor >= self.ids.len()
    }
}
