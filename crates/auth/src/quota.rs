//! What callers may hold at once: a bounded number of places in all and
//! per caller (a credential or a tenant), each given back when dropped.
//! Manifest loads, outcome subscriptions and console uploads take theirs
//! before they read anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Places held now, in all and per caller.
#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_caller: HashMap<String, usize>,
}

/// At most `total` places in all and `per_caller` for one caller.
#[derive(Debug, Clone)]
pub struct Quota {
    held: Arc<Mutex<Held>>,
    total: usize,
    per_caller: usize,
}

/// Why no place was given: the caller holds its most, or everyone
/// together holds theirs; each with the places held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The caller holds this many, its most.
    Caller(usize),
    /// Every caller together holds this many, the most.
    Total(usize),
}

/// One place held; dropping it gives it back.
#[derive(Debug)]
pub struct Place {
    held: Arc<Mutex<Held>>,
    caller: String,
}

impl Quota {
    /// At most `total` places in all and `per_caller` for one caller.
    pub fn new(total: usize, per_caller: usize) -> Self {
        Self {
            held: Arc::default(),
            total,
            per_caller,
        }
    }

    /// A place for `caller`, or why there is none: the caller's own bound
    /// is asked first.
    pub fn take(&self, caller: &str) -> Result<Place, Full> {
        self.take_up_to(caller, self.per_caller)
    }

    /// [`Quota::take`], with `most` places for this caller instead of the
    /// quota's own bound (still within the total): a caller that is many
    /// parties, such as a credential of every tenant, is bounded by the
    /// total alone with `usize::MAX`.
    pub fn take_up_to(&self, caller: &str, most: usize) -> Result<Place, Full> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let mine = held.by_caller.get(caller).copied().unwrap_or(0);
        if mine >= most {
            return Err(Full::Caller(mine));
        }
        if held.total >= self.total {
            return Err(Full::Total(held.total));
        }
        held.total += 1;
        *held.by_caller.entry(caller.to_owned()).or_default() += 1;
        Ok(Place {
            held: Arc::clone(&self.held),
            caller: caller.to_owned(),
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.by_caller.get_mut(&self.caller) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.by_caller.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_per_caller_and_in_all_and_given_back_when_dropped() {
        let q = Quota::new(3, 2);
        let a1 = q.take("a").expect("a's first");
        let a2 = q.take("a").expect("a's second");
        assert_eq!(q.take("a").unwrap_err(), Full::Caller(2));
        let b1 = q.take("b").expect("b's first");
        assert_eq!(q.take("c").unwrap_err(), Full::Total(3));
        // A caller over its own bound is told so first.
        assert_eq!(q.take("a").unwrap_err(), Full::Caller(2));
        drop(a1);
        let c1 = q.take("c").expect("room again");
        drop((a2, b1, c1));
        let again: Vec<Place> = (0..2)
            .map(|_| q.take("a").expect("all given back"))
            .collect();
        assert_eq!(again.len(), 2);
        // A bound of its own for one caller, still within the total.
        let fleet = q.take_up_to("fleet", usize::MAX).expect("within the total");
        assert_eq!(
            q.take_up_to("fleet", usize::MAX).unwrap_err(),
            Full::Total(3)
        );
        assert_eq!(q.take_up_to("a", 5).unwrap_err(), Full::Total(3));
        drop(again);
        let more = q
            .take_up_to("fleet", usize::MAX)
            .expect("past the per-caller 2");
        let most = q.take_up_to("fleet", usize::MAX).expect("to the total");
        assert_eq!(q.take_up_to("fleet", 3).unwrap_err(), Full::Caller(3));
        drop((fleet, more, most));
    }
}
