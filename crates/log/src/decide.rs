//! Deciding a command on a stream's history, and appending what it decides
//! with the expected version: the one way an aggregate's stream is written.
//!
//! A concurrent writer makes the append conflict; the command is then decided
//! again on the new history, up to a bound. So a stream has one order of
//! events however many writers race on it.
//!
//! [`Decision`] is the loop's two steps, the state to decide on
//! ([`Decision::next`]) and the append with its expected version
//! ([`Decision::append`]), for a caller that does more between them (the
//! handheld service checks the home's stream and seals a position) or keeps
//! states between decisions ([`Cache`]). [`decide`] and [`decide_chained`]
//! run the whole loop for a command. [`load`] reads a stream's state for a
//! caller that only looks.
//!
//! Which events are a stream's is the aggregate's to say
//! ([`Aggregate::from_domain`]); this module never picks events by hand. It
//! holds no business rule.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use threshold_domain::{Aggregate, DomainError, EventId, StreamId};

use crate::{Error, EventLog, ExpectedVersion, NewEvent, RecordedEvent, audit};

/// Decisions retried when another writer changed the stream in between.
pub const CONFLICT_RETRIES: usize = 8;

/// What a decision recorded.
#[derive(Debug, Clone)]
pub struct Decided<E> {
    /// The events recorded; none when the command was already in effect or
    /// its events were stored before (a resend).
    pub events: Vec<E>,
    /// The stream's version after them.
    pub version: u64,
    /// Their positions in the log; for a resend, where the original is.
    pub positions: Vec<u64>,
}

/// Why nothing was recorded.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// The aggregate refused the command.
    #[error(transparent)]
    Refused(#[from] DomainError),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] Error),
    /// Other writers kept changing the stream.
    #[error("{0} kept changing; try again")]
    Contended(StreamId),
}

/// A stream as a decision sees it: its aggregate's state, its version, and
/// the ids of the events in it (so a resend is recognised), each with its
/// position and the caller's note on it (`N`, e.g. an attempt number).
#[derive(Debug, Clone)]
pub struct Known<A, N = ()> {
    /// The aggregate's state.
    pub state: A,
    /// The stream's version.
    pub version: u64,
    /// Event id → its position and the caller's note on its event.
    pub ids: HashMap<EventId, (u64, N)>,
    /// The audit hash of the stream's last event (kept for chained streams).
    head: [u8; 32],
}

/// States a caller keeps between decisions, so that a busy stream is not
/// read back for each one. Only ever a shortcut: every append still carries
/// the expected version, so a stale state meets a conflict and is forgotten.
///
/// States are shared, not copied: a decision holds the one the cache holds
/// (a parcel's carries the ids of its whole history). After an append the
/// decision has the cache let its copy go ([`Cache::release`]) and moves
/// the state on in place, unless another decision still holds it (then it
/// copies it).
pub trait Cache<A, N>: Send + Sync {
    /// The state last kept for `stream`, if any.
    fn get(&self, stream: &StreamId) -> Option<Arc<Known<A, N>>>;
    /// The state kept for `stream` at version `base` is about to be moved
    /// on by an append made on it: let it go (kept at another version, keep
    /// it). [`Cache::keep`] follows.
    fn release(&self, stream: &StreamId, base: u64);
    /// `known` is the stream after an append made on version `base`.
    fn keep(&self, stream: &StreamId, base: u64, known: Arc<Known<A, N>>);
    /// The log knew better than the state kept for `stream`.
    fn forget(&self, stream: &StreamId);
}

/// One decision on a stream: [`Decision::next`] gives the state to decide
/// on, [`Decision::append`] appends what was decided with its version, and
/// on a conflict the caller asks `next` again, until the retries are spent.
pub struct Decision<'a, A: Aggregate, N = ()> {
    log: &'a dyn EventLog,
    stream: &'a StreamId,
    retries: usize,
    tried: usize,
    chained: bool,
    cache: Option<&'a dyn Cache<A, N>>,
    note: fn(&A::Event) -> N,
    /// What [`Decision::run`] adds to each new event's envelope from the
    /// state it was decided on.
    envelope: fn(&A, NewEvent) -> NewEvent,
    /// The first read may be [`EventLog::read_stream_recent`].
    recent: bool,
    /// The state [`Decision::next`] gave last may lack other writers'
    /// latest events (it came from the cache or a recent read).
    maybe_behind: bool,
    /// The next read goes to the log's [`EventLog::read_stream`].
    fresh: bool,
}

impl<'a, A: Aggregate> Decision<'a, A, ()> {
    /// A decision on `stream` in `log`, retried up to [`CONFLICT_RETRIES`] times.
    pub fn new(log: &'a dyn EventLog, stream: &'a StreamId) -> Self {
        Self {
            log,
            stream,
            retries: CONFLICT_RETRIES,
            tried: 0,
            chained: false,
            cache: None,
            note: |_| (),
            envelope: |_, n| n,
            recent: false,
            maybe_behind: false,
            fresh: false,
        }
    }

    /// The same decision keeping `note` of each event with its id in
    /// [`Known::ids`] (the default note for another aggregate's events).
    /// A cache holds states with their notes, so it is given after this.
    pub fn noting<M>(self, note: fn(&A::Event) -> M) -> Decision<'a, A, M> {
        Decision {
            log: self.log,
            stream: self.stream,
            retries: self.retries,
            tried: self.tried,
            chained: self.chained,
            cache: None,
            note,
            envelope: self.envelope,
            recent: self.recent,
            maybe_behind: false,
            fresh: false,
        }
    }
}

impl<'a, A, N> Decision<'a, A, N>
where
    A: Aggregate,
    N: Default,
{
    /// Each event [`Decision::run`] appends has its envelope completed by
    /// `envelope` from the state it was decided on (e.g. a parcel's
    /// partner and country, [`NewEvent::of_parcel`]).
    pub fn enveloped(mut self, envelope: fn(&A, NewEvent) -> NewEvent) -> Self {
        self.envelope = envelope;
        self
    }

    /// Retried up to `retries` times in all.
    pub fn retries(mut self, retries: usize) -> Self {
        self.retries = retries;
        self
    }

    /// For a home stream: each new event also commits to the hash of the
    /// one before it, read in the same history the decision was made on
    /// ([`crate::audit`]), so the chain holds whoever writes concurrently.
    pub fn chained(mut self) -> Self {
        self.chained = true;
        self
    }

    /// Takes states from `cache` instead of reading the stream, and keeps
    /// the state after each append there.
    pub fn cached(mut self, cache: &'a dyn Cache<A, N>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Reads the stream first with [`EventLog::read_stream_recent`] (on
    /// Kafka, without a round trip to the broker); after a conflict, or
    /// once [`Decision::confirm`] asked, with [`EventLog::read_stream`].
    /// For a caller whose refusals call `confirm` first.
    pub fn recent(mut self) -> Self {
        self.recent = true;
        self
    }

    /// Before refusing on the state [`Decision::next`] gave last: `true`
    /// when that state may lack other writers' latest events (it came from
    /// the cache or a recent read), and then the next `next` reads the
    /// stream from the log, not counted as a retry; decide again on it.
    /// `false` when the state was read from the log: refuse.
    pub fn confirm(&mut self) -> bool {
        if !self.maybe_behind {
            return false;
        }
        self.maybe_behind = false;
        self.fresh = true;
        self.tried = self.tried.saturating_sub(1);
        true
    }

    /// The stream to decide on next: the cached state, or the stream read
    /// back; `None` once every retry is spent.
    pub async fn next(&mut self) -> Result<Option<Arc<Known<A, N>>>, Error> {
        if self.tried >= self.retries {
            return Ok(None);
        }
        self.tried += 1;
        let fresh = std::mem::take(&mut self.fresh);
        if !fresh && let Some(known) = self.cache.and_then(|c| c.get(self.stream)) {
            self.maybe_behind = true;
            return Ok(Some(known));
        }
        // Only the first read: after a conflict the stream is read fresh.
        self.maybe_behind = self.recent && !fresh && self.tried == 1;
        let history = if self.maybe_behind {
            self.log
                .read_stream_recent(self.stream, 0, usize::MAX)
                .await?
        } else {
            self.log.read_stream(self.stream, 0, usize::MAX).await?
        };
        let mut known = Known {
            state: A::default(),
            version: history.last().map_or(0, |r| r.stream_version),
            ids: HashMap::with_capacity(history.len()),
            head: audit::GENESIS,
        };
        for r in &history {
            let event = A::from_domain(r.decode()?);
            let note = event.as_ref().map_or_else(N::default, self.note);
            known.ids.insert(r.event.event_id, (r.position.0, note));
            if let Some(e) = event {
                known.state.evolve_recorded(&e, r.event.occurred_at);
            }
        }
        if self.chained {
            known.head = history.last().map_or(audit::GENESIS, audit::hash_of);
        }
        Ok(Some(Arc::new(known)))
    }

    /// Appends `decided` (each event with its envelope) with the version
    /// `known` is at. `None` when the stream moved on meanwhile or the log
    /// already had one of the events: ask [`Decision::next`] again. Deciding
    /// nothing writes nothing.
    pub async fn append(
        &mut self,
        known: Arc<Known<A, N>>,
        decided: Vec<(A::Event, NewEvent)>,
    ) -> Result<Option<Decided<A::Event>>, Error>
    where
        A: Clone,
        N: Clone,
    {
        if decided.is_empty() {
            return Ok(Some(Decided {
                events: Vec::new(),
                version: known.version,
                positions: Vec::new(),
            }));
        }
        let (events, mut new): (Vec<_>, Vec<_>) = decided.into_iter().unzip();
        let mut head = known.head;
        if self.chained {
            for n in &mut new {
                audit::seal(n, head)?;
                head = audit::hash_of_new(n);
            }
        }
        let base = known.version;
        // Only what a cache keeps needs the state moved on.
        let stamps: Vec<(EventId, DateTime<Utc>)> = match self.cache {
            Some(_) => new.iter().map(|n| (n.event_id, n.occurred_at)).collect(),
            None => Vec::new(),
        };
        match self
            .log
            .append(self.stream, ExpectedVersion::Exactly(base), new)
            .await
        {
            Ok(out) if out.acks.iter().all(|a| !a.is_duplicate()) => {
                let positions: Vec<u64> = out.acks.iter().map(|a| a.position().0).collect();
                if let Some(cache) = self.cache {
                    // Held by this decision and the cache alone: the cache's
                    // copy goes first, and the state is moved on in place
                    // (a decision that looks meanwhile, for the few
                    // microseconds it takes, reads the stream). Held by
                    // another decision too: copied, the cache keeping its
                    // state until the new one replaces it.
                    if Arc::strong_count(&known) <= 2 {
                        cache.release(self.stream, base);
                    }
                    let mut known = Arc::unwrap_or_clone(known);
                    known.version = out.stream_version;
                    known.head = head;
                    for ((e, (id, at)), position) in events.iter().zip(&stamps).zip(&positions) {
                        known.state.evolve_recorded(e, *at);
                        known.ids.insert(*id, (*position, (self.note)(e)));
                    }
                    cache.keep(self.stream, base, Arc::new(known));
                }
                Ok(Some(Decided {
                    events,
                    version: out.stream_version,
                    positions,
                }))
            }
            // The log knew better (an id it already had, or another
            // writer's events): decide again on what it holds.
            Ok(_) | Err(Error::Conflict { .. }) => {
                if let Some(cache) = self.cache {
                    cache.forget(self.stream);
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Decides `command` on each state [`Decision::next`] gives and appends
    /// the result, each event under the id and time `stamp` gives it. An
    /// event id the stream holds already makes it a resend: nothing is
    /// written and the original's position is answered.
    pub async fn run(
        mut self,
        command: &A::Command,
        stamp: impl Fn(&A::Event) -> (EventId, DateTime<Utc>),
    ) -> Result<Decided<A::Event>, DecideError>
    where
        A: Clone,
        N: Clone,
        A::Event: Clone,
    {
        while let Some(known) = self.next().await? {
            let events = match known.state.decide(command) {
                // Refused, or nothing to write, on a state that may lack
                // another writer's latest events: decide again on the log's.
                Ok(events) if events.is_empty() && self.confirm() => continue,
                Err(_) if self.confirm() => continue,
                decided => decided?,
            };
            let decided: Vec<(A::Event, NewEvent)> = events
                .into_iter()
                .map(|e| {
                    let (id, at) = stamp(&e);
                    let n = NewEvent::new(id, &A::into_domain(e.clone()), at);
                    (e, (self.envelope)(&known.state, n))
                })
                .collect();
            let resent: Vec<u64> = decided
                .iter()
                .filter_map(|(_, n)| known.ids.get(&n.event_id).map(|(p, _)| *p))
                .collect();
            if !resent.is_empty() {
                return Ok(Decided {
                    events: Vec::new(),
                    version: known.version,
                    positions: resent,
                });
            }
            if let Some(done) = self.append(known, decided).await? {
                return Ok(done);
            }
        }
        Err(DecideError::Contended(self.stream.clone()))
    }
}

/// Decides `command` on the aggregate's history in `stream` and appends the
/// result with the expected version; `stamp` gives each new event its id
/// and time.
pub async fn decide<A>(
    log: &dyn EventLog,
    stream: &StreamId,
    command: &A::Command,
    stamp: impl Fn(&A::Event) -> (EventId, DateTime<Utc>),
) -> Result<Decided<A::Event>, DecideError>
where
    A: Aggregate + Clone,
    A::Event: Clone,
{
    Decision::<A>::new(log, stream).run(command, stamp).await
}

/// [`decide`] for a home stream: each new event also commits to the hash of
/// the one before it ([`Decision::chained`]).
pub async fn decide_chained<A>(
    log: &dyn EventLog,
    stream: &StreamId,
    command: &A::Command,
    stamp: impl Fn(&A::Event) -> (EventId, DateTime<Utc>),
) -> Result<Decided<A::Event>, DecideError>
where
    A: Aggregate + Clone,
    A::Event: Clone,
{
    Decision::<A>::new(log, stream)
        .chained()
        .run(command, stamp)
        .await
}

/// A stream's history and the state its aggregate folds it to, for a
/// caller that looks without deciding.
pub async fn load<A: Aggregate>(
    log: &dyn EventLog,
    stream: &StreamId,
) -> Result<(A, Vec<RecordedEvent>), Error> {
    let history = log.read_stream(stream, 0, usize::MAX).await?;
    let mut state = A::default();
    for r in &history {
        if let Some(e) = A::from_domain(r.decode()?) {
            state.evolve_recorded(&e, r.event.occurred_at);
        }
    }
    Ok((state, history))
}

/// The aggregate's events in `history`, each with the instant it occurred,
/// for rules that read a stream's events rather than its state (a home's
/// entries). An event that does not decode is passed over.
pub fn recorded<A: Aggregate>(
    history: &[RecordedEvent],
) -> impl Iterator<Item = (A::Event, DateTime<Utc>)> + '_ {
    history
        .iter()
        .filter_map(|r| Some((A::from_domain(r.decode().ok()?)?, r.event.occurred_at)))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use threshold_domain::route::{Command, Route};
    use threshold_domain::{DepotId, DriverId, RouteId, VehicleId, pb};

    use super::*;
    use crate::{EmbeddedLog, EmbeddedOptions};

    fn log() -> (tempfile::TempDir, EmbeddedLog) {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).expect("open");
        (dir, log)
    }

    fn plan(parcels: &[&str]) -> Command {
        Command::Plan {
            route_id: RouteId::new("r-1").expect("id"),
            depot_id: DepotId::new("STO-1").expect("id"),
            local_date: chrono::NaiveDate::from_ymd_opt(2026, 11, 23).expect("date"),
            vehicle_id: VehicleId::new("STO-1-van-1").expect("id"),
            driver_id: DriverId::new("drv-1").expect("id"),
            stops: vec![pb::PlannedStop {
                index: 0,
                parcel_ids: parcels.iter().map(|p| (*p).to_owned()).collect(),
                ..Default::default()
            }],
            reason: "test".into(),
        }
    }

    fn stream() -> StreamId {
        StreamId::route(&RouteId::new("r-1").expect("id"))
    }

    fn fresh(_: &pb::route_event::Event) -> (EventId, DateTime<Utc>) {
        (EventId::new(), Utc::now())
    }

    #[allow(clippy::type_complexity)]
    struct Kept<N = ()>(Mutex<HashMap<StreamId, Arc<Known<Route, N>>>>, Mutex<u32>);

    impl<N> Default for Kept<N> {
        fn default() -> Self {
            Self(Mutex::default(), Mutex::default())
        }
    }

    impl<N: Send + Sync> Cache<Route, N> for Kept<N> {
        fn get(&self, stream: &StreamId) -> Option<Arc<Known<Route, N>>> {
            self.0.lock().expect("lock").get(stream).cloned()
        }
        fn release(&self, stream: &StreamId, base: u64) {
            let mut kept = self.0.lock().expect("lock");
            if kept.get(stream).is_some_and(|k| k.version == base) {
                kept.remove(stream);
            }
        }
        fn keep(&self, stream: &StreamId, _base: u64, known: Arc<Known<Route, N>>) {
            self.0.lock().expect("lock").insert(stream.clone(), known);
        }
        fn forget(&self, stream: &StreamId) {
            *self.1.lock().expect("lock") += 1;
            self.0.lock().expect("lock").remove(stream);
        }
    }

    #[tokio::test]
    async fn a_command_in_effect_decides_nothing() {
        let (_dir, log) = log();
        let first = decide::<Route>(&log, &stream(), &plan(&["SE-1"]), fresh)
            .await
            .expect("decided");
        assert_eq!((first.events.len(), first.version), (1, 1));
        let again = decide::<Route>(&log, &stream(), &plan(&["SE-1"]), fresh)
            .await
            .expect("decided");
        assert!(again.events.is_empty());
        assert_eq!(again.version, 1);
    }

    #[tokio::test]
    async fn a_resent_event_id_answers_where_the_original_is() {
        let (_dir, log) = log();
        let id = EventId::new();
        let first = decide::<Route>(&log, &stream(), &plan(&["SE-1"]), |_| (id, Utc::now()))
            .await
            .expect("decided");
        let resent = decide::<Route>(&log, &stream(), &plan(&["SE-2"]), |_| (id, Utc::now()))
            .await
            .expect("decided");
        assert!(resent.events.is_empty());
        assert_eq!(resent.positions, first.positions);
    }

    #[tokio::test]
    async fn a_stale_cached_state_is_forgotten_and_the_stream_read_again() {
        let (_dir, log) = log();
        let kept = Arc::new(Kept::default());
        let s = stream();
        Decision::<Route>::new(&log, &s)
            .cached(&*kept)
            .run(&plan(&["SE-1"]), fresh)
            .await
            .expect("decided");
        assert_eq!(kept.get(&s).map(|k| k.version), Some(1));
        // Another writer moves the stream on behind the cache's back.
        decide::<Route>(&log, &s, &plan(&["SE-2"]), fresh)
            .await
            .expect("decided");
        let third = Decision::<Route>::new(&log, &s)
            .cached(&*kept)
            .run(&plan(&["SE-3"]), fresh)
            .await
            .expect("decided");
        assert_eq!(third.version, 3);
        assert_eq!(*kept.1.lock().expect("lock"), 1, "forgotten once");
        let k = kept.get(&s).expect("kept");
        assert_eq!(k.version, 3);
        assert_eq!(k.state.plan_version, 3);
    }

    /// A note that counts its copies on this thread: a kept state copied
    /// copies the note of each of its events.
    #[derive(Debug, Default)]
    struct Counted;

    thread_local! {
        static COPIES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    impl Clone for Counted {
        fn clone(&self) -> Self {
            COPIES.set(COPIES.get() + 1);
            Counted
        }
    }

    /// The events `plan` decides on `known`, each with its envelope.
    fn decided<N>(
        known: &Known<Route, N>,
        parcels: &[&str],
    ) -> Vec<(pb::route_event::Event, NewEvent)> {
        known
            .state
            .decide(&plan(parcels))
            .expect("decided")
            .into_iter()
            .map(|e| {
                let n = NewEvent::new(EventId::new(), &Route::into_domain(e.clone()), Utc::now());
                (e, n)
            })
            .collect()
    }

    #[tokio::test]
    async fn a_kept_state_is_shared_and_moved_on_only_where_nobody_else_holds_it() {
        let (_dir, log) = log();
        let kept = Kept::<Counted>::default();
        let s = stream();
        let noted = |_: &pb::route_event::Event| Counted;
        Decision::<Route>::new(&log, &s)
            .noting(noted)
            .cached(&kept)
            .run(&plan(&["SE-1"]), fresh)
            .await
            .expect("decided");

        // Held by this decision and the cache alone: moved on, not copied.
        let mut d = Decision::<Route>::new(&log, &s).noting(noted).cached(&kept);
        let known = d.next().await.expect("read").expect("a state");
        assert_eq!(
            Arc::strong_count(&known),
            2,
            "the cache's own state, shared"
        );
        let events = decided(&known, &["SE-2"]);
        COPIES.set(0);
        let done = d.append(known, events).await.expect("append");
        assert_eq!(done.map(|d| d.version), Some(2));
        assert_eq!(COPIES.get(), 0, "the state was copied");
        let now = kept.get(&s).expect("kept again");
        assert_eq!(
            (now.version, now.state.plan_version, now.ids.len()),
            (2, 2, 2)
        );
        drop(now);

        // Held by another decision too: copied, and what it holds stays.
        let mut d = Decision::<Route>::new(&log, &s).noting(noted).cached(&kept);
        let known = d.next().await.expect("read").expect("a state");
        let other = kept.get(&s).expect("kept");
        assert!(Arc::ptr_eq(&known, &other));
        let events = decided(&known, &["SE-3"]);
        COPIES.set(0);
        d.append(known, events).await.expect("append");
        assert_eq!(COPIES.get(), 2, "each of its two events' notes copied once");
        assert_eq!((other.version, other.ids.len()), (2, 2));
        let now = kept.get(&s).expect("kept again");
        assert_eq!((now.version, now.ids.len()), (3, 3));
    }

    /// A real log that counts which of its reads a decision asked for.
    struct Reads {
        log: EmbeddedLog,
        recent: std::sync::atomic::AtomicU32,
        fresh: std::sync::atomic::AtomicU32,
    }

    #[async_trait::async_trait]
    impl EventLog for Reads {
        async fn append(
            &self,
            stream: &StreamId,
            expected: ExpectedVersion,
            events: Vec<NewEvent>,
        ) -> crate::Result<crate::AppendOutcome> {
            self.log.append(stream, expected, events).await
        }
        async fn read_stream(
            &self,
            stream: &StreamId,
            after: u64,
            max: usize,
        ) -> crate::Result<Vec<RecordedEvent>> {
            self.fresh
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.log.read_stream(stream, after, max).await
        }
        async fn read_stream_recent(
            &self,
            stream: &StreamId,
            after: u64,
            max: usize,
        ) -> crate::Result<Vec<RecordedEvent>> {
            self.recent
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.log.read_stream(stream, after, max).await
        }
        async fn read_all(
            &self,
            after: crate::Position,
            max: usize,
        ) -> crate::Result<Vec<RecordedEvent>> {
            self.log.read_all(after, max).await
        }
        async fn head(&self) -> crate::Result<crate::Position> {
            self.log.head().await
        }
        fn subscribe(&self, after: crate::Position) -> crate::Subscription {
            self.log.subscribe(after)
        }
    }

    impl Reads {
        fn counts(&self) -> (u32, u32) {
            use std::sync::atomic::Ordering::Relaxed;
            (self.recent.load(Relaxed), self.fresh.load(Relaxed))
        }
    }

    #[tokio::test]
    async fn a_recent_read_is_confirmed_on_the_log_before_a_refusal_and_not_after_a_conflict() {
        let (_dir, log) = log();
        let log = Reads {
            log,
            recent: Default::default(),
            fresh: Default::default(),
        };
        let s = stream();
        decide::<Route>(&log, &s, &plan(&["SE-1"]), fresh)
            .await
            .expect("decided");
        let before = log.counts();
        // One retry only: confirming does not spend it.
        let mut d = Decision::<Route>::new(&log, &s).retries(1).recent();
        let known = d.next().await.expect("read").expect("a state");
        assert_eq!(known.version, 1);
        assert_eq!(log.counts().0 - before.0, 1, "the first read is recent");
        assert!(d.confirm(), "a recent read may be behind: confirm it");
        let known = d
            .next()
            .await
            .expect("read")
            .expect("confirming spends no retry");
        assert_eq!(known.version, 1);
        assert_eq!(log.counts().1 - before.1, 1, "confirmed on read_stream");
        assert!(!d.confirm(), "read from the log: refuse on it");

        // A conflict after a recent read: the next read is from the log.
        let mut d = Decision::<Route>::new(&log, &s).recent();
        let stale = d.next().await.expect("read").expect("a state");
        decide::<Route>(&log, &s, &plan(&["SE-2"]), fresh)
            .await
            .expect("another writer");
        let decided: Vec<_> = stale
            .state
            .decide(&plan(&["SE-3"]))
            .expect("decided")
            .into_iter()
            .map(|e| {
                let n = NewEvent::new(EventId::new(), &Route::into_domain(e.clone()), Utc::now());
                (e, n)
            })
            .collect();
        assert!(!decided.is_empty());
        assert!(d.append(stale, decided).await.expect("append").is_none());
        let counts = log.counts();
        let known = d.next().await.expect("read").expect("a state");
        assert_eq!(known.version, 2);
        assert_eq!(
            log.counts(),
            (counts.0, counts.1 + 1),
            "after a conflict: read_stream"
        );
    }

    #[tokio::test]
    async fn a_refusal_on_a_cached_state_is_confirmed_on_the_log_first() {
        let (_dir, log) = log();
        let kept = Kept::default();
        let s = stream();
        Decision::<Route>::new(&log, &s)
            .cached(&kept)
            .run(&plan(&["SE-1"]), fresh)
            .await
            .expect("decided");
        decide::<Route>(&log, &s, &plan(&["SE-2"]), fresh)
            .await
            .expect("another writer");
        let mut d = Decision::<Route>::new(&log, &s).retries(1).cached(&kept);
        let cached = d.next().await.expect("read").expect("a state");
        assert_eq!(cached.version, 1, "the cache is behind");
        assert!(d.confirm());
        let known = d.next().await.expect("read").expect("a state");
        assert_eq!(known.version, 2, "read past the cache");
        assert!(!d.confirm());
    }

    #[tokio::test]
    async fn run_confirms_a_cached_command_in_effect_before_deciding_nothing() {
        let (_dir, log) = log();
        let kept = Kept::default();
        let s = stream();
        Decision::<Route>::new(&log, &s)
            .cached(&kept)
            .run(&plan(&["SE-1"]), fresh)
            .await
            .expect("decided");
        decide::<Route>(&log, &s, &plan(&["SE-2"]), fresh)
            .await
            .expect("another writer");
        // The cache says the SE-1 plan is in effect; the log says SE-2 is.
        let again = Decision::<Route>::new(&log, &s)
            .cached(&kept)
            .run(&plan(&["SE-1"]), fresh)
            .await
            .expect("decided");
        assert_eq!((again.events.len(), again.version), (1, 3), "{again:?}");
    }
}
