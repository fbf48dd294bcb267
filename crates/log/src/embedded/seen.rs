//! Which event ids the store may hold: a filter that answers "never
//! stored" for almost every new id, so an append of fresh events does not
//! look each one up in the `event_ids` index (a B-tree probe of a random
//! key, ~8% of the server's CPU at the maximum before it came).
//!
//! It is a blocked Bloom filter in layers. The history holds every id in
//! `event_ids` when the store was opened: a thread of its own reads them on
//! a connection of its own while the writer goes on. The writer's layers
//! hold every id it has held in its tail since: the tail recovered at open
//! and each id it commits. An id in `event_ids` at any moment is in one of
//! the two, so "absent from every layer" means never stored. Until the
//! history is read, and when a layer could not be made, the filter answers
//! "maybe" and the writer looks the id up as before.
//!
//! It takes 12 bits of memory per id (about 15 MB for ten million
//! events), looks up under 1% of fresh ids anyway per layer, and gives up
//! above [`MAX_BYTES`]: then every id is looked up. The hashes are not
//! keyed: ids chosen to collide cost their sender the lookups every id
//! cost before the filter, nothing more.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Bits set per id, each in the id's one 512-bit block.
const PROBES: u32 = 7;
/// Bits of filter per id a layer is sized for.
const BITS_PER_ID: usize = 12;
/// The writer's first layer, in ids; each next one is twice the last.
const FIRST_LAYER: usize = 1 << 16;
/// Past this the filter is dropped and every id is looked up.
pub(super) const MAX_BYTES: usize = 256 << 20;

/// One layer: 64-byte blocks, an id's bits all in one block (one cache
/// line a query).
#[derive(Debug)]
struct Layer {
    blocks: Vec<[u64; 8]>,
    ids: usize,
    capacity: usize,
}

/// The id's two hashes: the block, and the bits in it. Ids are random or
/// time-ordered; both halves are mixed so either kind spreads.
fn hashes(id: &[u8; 16]) -> (u64, u64) {
    let (a, b) = id.split_at(8);
    let a = u64::from_le_bytes(a.try_into().unwrap_or_default());
    let b = u64::from_le_bytes(b.try_into().unwrap_or_default());
    let h = mix(a ^ mix(b));
    (h, mix(h ^ 0x9e37_79b9_7f4a_7c15))
}

/// SplitMix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Layer {
    fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1024);
        let blocks = (capacity * BITS_PER_ID).div_ceil(512);
        Self {
            blocks: vec![[0; 8]; blocks],
            ids: 0,
            capacity,
        }
    }

    fn bytes(&self) -> usize {
        self.blocks.len() * 64
    }

    fn block(&self, h: u64) -> usize {
        // Lemire's range reduction: uniform without a division.
        ((u128::from(h) * self.blocks.len() as u128) >> 64) as usize
    }

    fn insert(&mut self, id: &[u8; 16]) {
        let (h, bits) = hashes(id);
        let b = self.block(h);
        let block = &mut self.blocks[b];
        for i in 0..PROBES {
            let bit = (bits >> (9 * i)) & 511;
            block[(bit >> 6) as usize] |= 1 << (bit & 63);
        }
        self.ids += 1;
    }

    /// Whether the id of `hashes` may be held.
    fn may_hold(&self, (h, bits): (u64, u64)) -> bool {
        let block = &self.blocks[self.block(h)];
        (0..PROBES).all(|i| {
            let bit = (bits >> (9 * i)) & 511;
            block[(bit >> 6) as usize] & (1 << (bit & 63)) != 0
        })
    }
}

/// Layers, each new one twice the size of the last when the last is
/// full: any size of set, at about [`BITS_PER_ID`] bits an id.
#[derive(Debug, Default)]
struct Layers(Vec<Layer>);

impl Layers {
    fn bytes(&self) -> usize {
        self.0.iter().map(Layer::bytes).sum()
    }

    /// Adds `id`; false (and nothing added) when a new layer would take the
    /// layers past `room` bytes.
    fn insert(&mut self, id: &[u8; 16], first: usize, room: usize) -> bool {
        if self.0.last().is_none_or(|l| l.ids >= l.capacity) {
            let next = self.0.last().map_or(first, |l| l.capacity * 2);
            if self.bytes() + next * BITS_PER_ID / 8 > room {
                return false;
            }
            self.0.push(Layer::new(next));
        }
        if let Some(layer) = self.0.last_mut() {
            layer.insert(id);
        }
        true
    }

    fn may_hold_hashed(&self, hashed: (u64, u64)) -> bool {
        self.0.iter().any(|l| l.may_hold(hashed))
    }

    fn ids(&self) -> usize {
        self.0.iter().map(|l| l.ids).sum()
    }
}

/// The history as its thread reads it: the ids in `event_ids`, and how
/// long the read took.
type Read = Result<(Layers, std::time::Duration), String>;

/// What the filter shows outside the writer thread.
#[derive(Debug, Default, Clone)]
pub(super) struct Stats {
    /// Set while the filter answers (its history read, not given up).
    pub(super) ready: Arc<AtomicBool>,
    /// Lookups it spared: fresh ids it knew were never stored.
    pub(super) spared: Arc<AtomicU64>,
}

/// The writer's filter. Only the writer thread touches it.
#[derive(Debug)]
pub(super) struct Seen {
    history: History,
    /// Every id the writer has put in its tail since open.
    ours: Layers,
    /// Shared with the log's handle.
    stats: Stats,
    /// When the store was opened.
    started: std::time::Instant,
}

#[derive(Debug)]
enum History {
    Reading {
        rx: mpsc::Receiver<Read>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    },
    Read(Layers),
    /// Not to be had (a read failed, or the filter outgrew [`MAX_BYTES`]):
    /// every id is looked up.
    None,
}

impl Seen {
    /// Starts reading the history of the store at `path`, of about
    /// `expected` ids, on a thread of its own; `ready` is set once the
    /// filter answers.
    pub(super) fn start(path: PathBuf, expected: u64, stats: &Stats) -> Self {
        let (tx, rx) = mpsc::sync_channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let first = usize::try_from(expected)
            .unwrap_or(usize::MAX)
            .min(MAX_BYTES * 8 / BITS_PER_ID);
        let history = match std::thread::Builder::new()
            .name("threshold-log-ids".into())
            .spawn(move || {
                let _ = tx.send(read_history(&path, first, CHUNK, &stopped));
            }) {
            Ok(thread) => History::Reading {
                rx,
                stop,
                thread: Some(thread),
            },
            Err(e) => {
                tracing::warn!(error = %e, "the event-id filter's thread did not start; every id is looked up");
                History::None
            }
        };
        Self {
            history,
            ours: Layers::default(),
            stats: stats.clone(),
            started: std::time::Instant::now(),
        }
    }

    /// Records that `id` is in the writer's tail (and so may be stored).
    pub(super) fn insert(&mut self, id: &[u8; 16]) {
        if matches!(self.history, History::None) {
            return;
        }
        let room = MAX_BYTES.saturating_sub(self.history_bytes());
        if !self.ours.insert(id, FIRST_LAYER, room) {
            self.give_up("it would outgrow its memory bound");
        }
    }

    /// Takes the history once it is read; call before each group.
    pub(super) fn poll(&mut self) {
        let History::Reading { rx, .. } = &self.history else {
            return;
        };
        match rx.try_recv() {
            Ok(Ok((layers, took))) => {
                if layers.bytes() + self.ours.bytes() > MAX_BYTES {
                    self.give_up("the store's ids outgrow its memory bound");
                    return;
                }
                tracing::info!(
                    ids = layers.ids(),
                    mib = layers.bytes() >> 20,
                    read_seconds = took.as_secs_f64(),
                    seconds_since_open = self.started.elapsed().as_secs_f64(),
                    "the event-id filter has read the store's ids"
                );
                self.join();
                self.history = History::Read(layers);
                self.stats.ready.store(true, Ordering::Release);
            }
            Ok(Err(e)) => self.give_up(&e),
            Err(mpsc::TryRecvError::Empty) => {}
            Err(mpsc::TryRecvError::Disconnected) => self.give_up("its thread stopped"),
        }
    }

    /// True when `id` was certainly never stored; false when it may have
    /// been (look it up).
    pub(super) fn never_stored(&self, id: &[u8; 16]) -> bool {
        let History::Read(history) = &self.history else {
            return false;
        };
        // Hashed once for every layer of both.
        let hashed = hashes(id);
        let absent = !history.may_hold_hashed(hashed) && !self.ours.may_hold_hashed(hashed);
        if absent {
            self.stats.spared.fetch_add(1, Ordering::Relaxed);
        }
        absent
    }

    /// Stops reading the history, if it is still being read, and waits for
    /// its thread: its connection is closed when this returns.
    pub(super) fn stop(&mut self) {
        if let History::Reading { stop, .. } = &self.history {
            stop.store(true, Ordering::Relaxed);
        }
        self.join();
    }

    fn join(&mut self) {
        if let History::Reading { thread, .. } = &mut self.history
            && let Some(thread) = thread.take()
        {
            let _ = thread.join();
        }
    }

    fn history_bytes(&self) -> usize {
        match &self.history {
            History::Read(l) => l.bytes(),
            _ => 0,
        }
    }

    fn give_up(&mut self, why: &str) {
        tracing::warn!(
            reason = why,
            "the event-id filter is off; every new id is looked up in the index"
        );
        self.stop();
        self.history = History::None;
        self.ours = Layers::default();
        self.stats.ready.store(false, Ordering::Release);
    }
}

/// Ids read in one statement: each chunk is a read transaction of its
/// own, so the read never holds a snapshot long enough to keep the
/// writer's checkpoint of the WAL waiting.
const CHUNK: usize = 16_384;

/// Reads every id in `event_ids`, on a read-only connection of its own,
/// into layers whose first is sized for `first` ids, `chunk` ids a
/// statement in key order.
///
/// An id indexed while the read goes on can fall behind it (a key below
/// the chunk being read), and need not be read: it was in the writer's
/// tail in this process's time, recovered at open or committed since, so
/// the writer's own layers hold it.
fn read_history(path: &std::path::Path, first: usize, chunk: usize, stop: &AtomicBool) -> Read {
    let began = std::time::Instant::now();
    let fail = |e: rusqlite::Error| format!("reading {}: {e}", path.display());
    let conn = super::open_reader(path).map_err(|e| e.to_string())?;
    let mut layers = Layers::default();
    let mut stmt = conn
        .prepare("SELECT event_id FROM event_ids WHERE event_id > ?1 ORDER BY event_id LIMIT ?2")
        .map_err(fail)?;
    // An empty blob sorts before every id.
    let mut after = Vec::new();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err("the store was closed".into());
        }
        let mut rows = stmt
            .query(rusqlite::params![after, chunk as i64])
            .map_err(fail)?;
        let mut read = 0;
        while let Some(row) = rows.next().map_err(fail)? {
            let id = row.get_ref(0).and_then(|v| v.as_blob().map_err(Into::into));
            let id = id.map_err(fail)?;
            let Ok(id) = <&[u8; 16]>::try_from(id) else {
                return Err(format!(
                    "{}: an event id of {} bytes in event_ids",
                    path.display(),
                    id.len()
                ));
            };
            if !layers.insert(id, first, MAX_BYTES) {
                return Err("the store's ids outgrow its memory bound".into());
            }
            after.clear();
            after.extend_from_slice(id);
            read += 1;
        }
        if read < chunk {
            return Ok((layers, began.elapsed()));
        }
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    impl Layers {
        fn may_hold(&self, id: &[u8; 16]) -> bool {
            self.may_hold_hashed(hashes(id))
        }
    }

    fn ids(n: usize, salt: u8) -> Vec<[u8; 16]> {
        (0..n)
            .map(|i| {
                let mut id = *uuid::Uuid::new_v4().as_bytes();
                id[0] = salt;
                // Time-ordered ids share their leading bytes; half of these do.
                if i % 2 == 0 {
                    id[1..7].copy_from_slice(&[1, 2, 3, 4, 5, 6]);
                }
                id
            })
            .collect()
    }

    #[test]
    fn every_id_added_is_held_across_layers_and_few_others_seem_to_be() {
        let mut layers = Layers::default();
        let added = ids(200_000, 1);
        for id in &added {
            assert!(layers.insert(id, 1024, MAX_BYTES));
        }
        // 1024, 2048, ...: the set outgrew its first layer many times over.
        assert!(layers.0.len() > 5, "{} layers", layers.0.len());
        assert!(
            added.iter().all(|id| layers.may_hold(id)),
            "an id added was ruled out"
        );
        let others = ids(200_000, 2);
        let false_hits = others.iter().filter(|id| layers.may_hold(id)).count();
        // ~0.5% a full layer, over every layer the set took: the ids are
        // random, so the bound allows each layer half as much again (8
        // layers: under 5.8%; a run gave 3.01% against the 3% this once
        // asserted for any number of layers).
        let rate = false_hits as f64 / others.len() as f64;
        let layers_taken = i32::try_from(layers.0.len()).expect("a few layers");
        let bound = 1.0 - (1.0 - 0.0075f64).powi(layers_taken);
        assert!(
            rate < bound,
            "{false_hits} of {} fresh ids seemed held over {layers_taken} layers (bound {bound:.4})",
            others.len()
        );
        // One layer sized for the whole set answers as a filter should.
        let mut one = Layers::default();
        for id in &added {
            assert!(one.insert(id, added.len(), MAX_BYTES));
        }
        assert_eq!(one.0.len(), 1);
        let false_hits = others.iter().filter(|id| one.may_hold(id)).count();
        assert!(
            false_hits < others.len() / 100,
            "{false_hits} of {} fresh ids seemed held by one layer",
            others.len()
        );
    }

    #[test]
    fn a_layer_that_would_pass_the_bound_is_not_made() {
        let mut layers = Layers::default();
        let room = Layer::new(1024).bytes() + Layer::new(2048).bytes();
        let added = ids(1024 + 2048 + 1, 3);
        let (fit, over) = added.split_at(1024 + 2048);
        assert!(fit.iter().all(|id| layers.insert(id, 1024, room)));
        assert!(!layers.insert(&over[0], 1024, room));
        assert_eq!(layers.bytes(), room);
    }

    #[test]
    fn the_history_is_read_whole_in_chunks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ids.db");
        let db = Connection::open(&path).expect("open");
        db.execute_batch(
            "CREATE TABLE event_ids (event_id BLOB NOT NULL PRIMARY KEY, position INTEGER NOT NULL) STRICT, WITHOUT ROWID;",
        )
        .expect("schema");
        let stored = ids(10_000, 4);
        let mut put = db
            .prepare("INSERT INTO event_ids (event_id, position) VALUES (?1, ?2)")
            .expect("prepare");
        for (n, id) in stored.iter().enumerate() {
            put.execute(rusqlite::params![id.as_slice(), n as i64])
                .expect("insert");
        }
        drop(put);
        let stop = AtomicBool::new(false);
        // Chunks that divide the set and one that does not; a first layer
        // far too small.
        for chunk in [1_000, 999, 20_000] {
            let (layers, _) = read_history(&path, 10, chunk, &stop).expect("read");
            assert_eq!(layers.ids(), stored.len(), "chunks of {chunk}");
            assert!(
                stored.iter().all(|id| layers.may_hold(id)),
                "chunks of {chunk}"
            );
        }
        stop.store(true, Ordering::Relaxed);
        assert!(read_history(&path, 10, 1_000, &stop).is_err());
    }
}
