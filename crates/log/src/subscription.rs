//! A subscription: catch-up, then live, as a stream of events.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use crate::{RecordedEvent, Result};

/// Events after a position, in position order, as they become durable.
///
/// An event the log holds in memory is shared among the subscriptions that
/// take it, not copied for each (`Arc::unwrap_or_clone` for one to own);
/// one read from storage is its subscription's own. Dropping it ends the
/// subscription. An error is the last item.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Result<Arc<RecordedEvent>>>,
}

impl Subscription {
    /// A subscription fed by a backend's task through `rx`.
    pub fn from_channel(rx: mpsc::Receiver<Result<Arc<RecordedEvent>>>) -> Self {
        Self { rx }
    }

    /// The next event; `None` once the log is closed.
    pub async fn next(&mut self) -> Option<Result<Arc<RecordedEvent>>> {
        self.rx.recv().await
    }

    /// The next event if one is already there, without waiting; `None`
    /// when none is (or the log is closed: [`Self::next`] then says so).
    pub fn try_next(&mut self) -> Option<Result<Arc<RecordedEvent>>> {
        self.rx.try_recv().ok()
    }
}

impl futures::Stream for Subscription {
    type Item = Result<Arc<RecordedEvent>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
