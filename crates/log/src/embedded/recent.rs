//! The last events committed, kept in memory for subscribers.
//!
//! Every subscriber close behind the head takes new events from here
//! instead of a read of the database apiece (and `read_versions` the events
//! it finds here, for a publisher close behind): with a handful of read models
//! following the log and a commit every few milliseconds, those reads (a
//! blocking task, a read transaction and its file locks each) cost more
//! than the commits. The writer adds a commit's events before it publishes
//! the new head, so whatever the head says is here, unless it has already
//! been pushed out; a subscriber further behind reads the database as
//! before. It is never the only record of anything.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::event::{Position, RecordedEvent};

/// How much a held event takes in memory, roughly: the event and what its
/// fields hold. What [`Recent`]'s byte bound counts.
pub(super) fn footprint(event: &RecordedEvent) -> usize {
    let e = &event.event;
    let text = |t: &Option<String>| t.as_ref().map_or(0, String::len);
    size_of::<RecordedEvent>()
        + event.stream.id().len()
        + e.event_type.len()
        + text(&e.tenant)
        + text(&e.causation_id)
        + text(&e.correlation_id)
        + text(&e.traceparent)
        + text(&e.tracestate)
        + e.payload.len()
}

/// The last committed events, at consecutive positions.
#[derive(Debug)]
pub(super) struct Recent {
    events: VecDeque<Arc<RecordedEvent>>,
    /// The [`footprint`]s of `events`, summed.
    bytes: usize,
    capacity: usize,
    max_bytes: usize,
}

impl Recent {
    pub(super) fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            events: VecDeque::with_capacity(capacity.min(1024)),
            bytes: 0,
            capacity: capacity.max(1),
            max_bytes,
        }
    }

    /// A commit's events, in position order, following those held.
    pub(super) fn extend(&mut self, committed: impl IntoIterator<Item = RecordedEvent>) {
        for event in committed {
            if let Some(last) = self.events.back()
                && event.position.0 != last.position.0 + 1
            {
                // Not the next position (never, from the one writer): start
                // again from this one rather than hold a gap.
                self.events.clear();
                self.bytes = 0;
            }
            self.bytes += footprint(&event);
            self.events.push_back(Arc::new(event));
            while self.events.len() > 1
                && (self.events.len() > self.capacity || self.bytes > self.max_bytes)
            {
                if let Some(gone) = self.events.pop_front() {
                    self.bytes -= footprint(&gone);
                }
            }
        }
    }

    /// The event at `position`, if it is held.
    pub(super) fn at(&self, position: Position) -> Option<Arc<RecordedEvent>> {
        let first = self.events.front()?.position.0;
        let i = usize::try_from(position.0.checked_sub(first)?).ok()?;
        self.events.get(i).cloned()
    }

    /// Up to `max` events after `after`, or `None` when the first of them
    /// is no longer (or not yet) held: then the database has them. Shared:
    /// the caller copies them once the lock is let go.
    pub(super) fn after(&self, after: Position, max: usize) -> Option<Vec<Arc<RecordedEvent>>> {
        let first = self.events.front()?.position.0;
        let next = after.0.checked_add(1)?;
        if next < first {
            return None;
        }
        let from = usize::try_from(next - first).ok()?;
        if from >= self.events.len() {
            return None;
        }
        Some(self.events.range(from..).take(max).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use threshold_domain::StreamId;

    use super::*;

    fn at(position: u64) -> RecordedEvent {
        RecordedEvent {
            position: Position(position),
            stream: "parcel/SE-1".parse::<StreamId>().expect("stream id"),
            stream_version: position,
            recorded_at: Utc::now(),
            event: crate::contract::failed_attempt(1),
        }
    }

    fn positions(events: Option<Vec<Arc<RecordedEvent>>>) -> Option<Vec<u64>> {
        events.map(|e| e.iter().map(|e| e.position.0).collect())
    }

    #[test]
    fn an_event_is_found_at_its_position_while_it_is_held() {
        let at_of = |r: &Recent, p: u64| r.at(Position(p)).map(|e| e.position.0);
        let mut recent = Recent::new(4, usize::MAX);
        assert_eq!(at_of(&recent, 1), None, "nothing held");
        recent.extend((1..=6).map(at));
        // 3..=6 held: 1 and 2 pushed out, 7 not yet committed.
        for (p, held) in [
            (0, None),
            (1, None),
            (2, None),
            (3, Some(3)),
            (6, Some(6)),
            (7, None),
        ] {
            assert_eq!(at_of(&recent, p), held, "position {p}");
        }
        // After a gap the buffer starts again from the new position.
        recent.extend([at(10)]);
        assert_eq!(at_of(&recent, 6), None);
        assert_eq!(at_of(&recent, 10), Some(10));
    }

    #[test]
    fn a_subscriber_close_behind_takes_what_follows_it_and_one_further_behind_reads_the_database() {
        let mut recent = Recent::new(4, usize::MAX);
        assert_eq!(
            positions(recent.after(Position(0), 10)),
            None,
            "nothing held"
        );
        recent.extend((1..=3).map(at));
        assert_eq!(
            positions(recent.after(Position(0), 10)),
            Some(vec![1, 2, 3])
        );
        assert_eq!(
            positions(recent.after(Position(1), 1)),
            Some(vec![2]),
            "at most max"
        );
        assert_eq!(
            positions(recent.after(Position(3), 10)),
            None,
            "nothing after the last"
        );
        recent.extend((4..=6).map(at));
        // 1 and 2 were pushed out: a subscriber at 0 or 1 reads the database.
        assert_eq!(positions(recent.after(Position(1), 10)), None);
        assert_eq!(
            positions(recent.after(Position(2), 10)),
            Some(vec![3, 4, 5, 6])
        );
    }

    #[test]
    fn large_events_are_kept_fewer() {
        let sized = |p: u64, payload: usize| {
            let mut e = at(p);
            e.event.payload = vec![0; payload].into();
            e
        };
        let each = footprint(&sized(1, 100));
        assert!(each > 100, "the event's own fields count too: {each}");
        let mut recent = Recent::new(100, 2 * each + each / 2);
        recent.extend((1..=5).map(|p| sized(p, 100)));
        // The bound holds two events of that size.
        assert_eq!(positions(recent.after(Position(2), 10)), None);
        assert_eq!(positions(recent.after(Position(3), 10)), Some(vec![4, 5]));
        // One larger than the bound is still kept, alone.
        recent.extend([sized(6, 10 * each)]);
        assert_eq!(positions(recent.after(Position(5), 10)), Some(vec![6]));
        assert_eq!(positions(recent.after(Position(4), 10)), None);
    }

    #[test]
    fn a_gap_in_positions_starts_the_window_again() {
        let mut recent = Recent::new(8, usize::MAX);
        recent.extend((1..=3).map(at));
        recent.extend((7..=8).map(at));
        assert_eq!(positions(recent.after(Position(2), 10)), None);
        assert_eq!(positions(recent.after(Position(6), 10)), Some(vec![7, 8]));
    }
}
