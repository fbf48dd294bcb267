//! The shape every aggregate has: `decide` holds all business logic,
//! `evolve` holds none. State is only ever rebuilt by folding events.
//! Each aggregate also says which [`DomainEvent`]s are its own, so the log
//! can fold a stream and store what is decided without the caller picking
//! events out by hand.

use crate::error::Result;
use crate::event::DomainEvent;

/// An event-sourced aggregate.
pub trait Aggregate: Default {
    /// What may be asked of it.
    type Command;
    /// What it records.
    type Event;

    /// Decides what happens when `command` meets the current state: the
    /// events to record, or why not. Deciding nothing (an empty vector) means
    /// the command is already in effect — asking twice is harmless.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>>;

    /// Applies one recorded event. Never fails: a recorded event is a fact.
    fn evolve(&mut self, event: &Self::Event);

    /// This aggregate's event, if `event` is one (a stream holds only its
    /// aggregate's events; anything else is passed over).
    fn from_domain(event: DomainEvent) -> Option<Self::Event>;

    /// `event` as the payload of a log entry.
    fn into_domain(event: Self::Event) -> DomainEvent;

    /// Applies one recorded event with the instant it occurred (its
    /// envelope's `occurred_at`), for aggregates whose rules need it.
    fn evolve_recorded(
        &mut self,
        event: &Self::Event,
        _occurred_at: chrono::DateTime<chrono::Utc>,
    ) {
        self.evolve(event);
    }
}

/// Rebuilds an aggregate's state from its events.
pub fn fold<'a, A>(events: impl IntoIterator<Item = &'a A::Event>) -> A
where
    A: Aggregate,
    A::Event: 'a,
{
    let mut state = A::default();
    for e in events {
        state.evolve(e);
    }
    state
}

/// given(events) / when(command) / then(events or error), for tests.
#[cfg(test)]
pub(crate) fn given<A: Aggregate>(events: &[A::Event]) -> A {
    fold::<A>(events)
}
