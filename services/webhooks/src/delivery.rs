//! Delivering the log's outcomes to endpoints: one task per active
//! endpoint, at most one request in flight each, so an endpoint's events
//! arrive in log order (and so in order per parcel) and a slow or failing
//! endpoint holds up only itself.
//!
//! A task subscribes to the log after its endpoint's durable position,
//! delivers each of its partner's events of the kinds it wants, retrying
//! on the [`Schedule`], records every attempt, and moves the position on
//! once the event is delivered. Killed at any moment, it resumes from the
//! position: the event in flight is delivered again, under the same
//! `webhook-id`, which the receiver deduplicates.
//!
//! An endpoint is its partner's only while the partner holds a credential:
//! when the registry is given the credentials ([`Webhooks::with_credentials`]),
//! each request waits until a partner credential of the endpoint's partner
//! itself exists (one of every partner, `*`, is the carrier's and does not
//! count). A partner whose credentials are all revoked receives nothing
//! more; its outcomes wait at the endpoint's position, with one alert, and
//! go out when a credential is added again (a token rotated by revoking the
//! old one first loses nothing), or never, when the carrier deletes the
//! endpoint.
//!
//! [`Webhooks::with_credentials`]: crate::Webhooks::with_credentials

use std::time::Duration;

use chrono::Utc;
use rand::Rng as _;
use threshold_auth::{CredentialStore, Role};
use threshold_log::{EventLog, Position};

use crate::client::Sender;
use crate::payload::{WebhookEvent, webhook_event};
use crate::store::{Attempt, Endpoint, State, Store, Verdict};

/// When failed deliveries are retried: the Standard Webhooks guidance
/// (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), continued at
/// 10 h so the last retry is over three days after the first attempt.
/// After the last one fails the endpoint is disabled and an alert raised.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The wait before each retry, in order.
    pub delays: Vec<Duration>,
    /// Each wait is varied by up to this fraction either way, so retries
    /// of many events do not arrive together.
    pub jitter: f64,
    /// Real time runs this many times slower than the schedule says: 1 in
    /// production; tests and the benchmark run a day's schedule in moments.
    pub divisor: u32,
}

impl Default for Schedule {
    fn default() -> Self {
        let (s, m, h) = (1, 60, 3600);
        let mut delays: Vec<Duration> = [5 * s, 5 * m, 30 * m, 2 * h, 5 * h, 10 * h, 10 * h]
            .into_iter()
            .map(Duration::from_secs)
            .collect();
        delays.extend([Duration::from_secs(10 * h); 5]);
        Self {
            delays,
            jitter: 0.2,
            divisor: 1,
        }
    }
}

impl Schedule {
    /// The standard schedule run `divisor` times faster.
    pub fn accelerated(divisor: u32) -> Self {
        Self {
            divisor: divisor.max(1),
            ..Self::default()
        }
    }

    /// The longest the schedule waits in total: at least three days.
    pub fn span(&self) -> Duration {
        self.delays.iter().sum()
    }

    /// The wait after failed attempt `n` (from 1), with jitter, honouring
    /// a `Retry-After` of `retry_after` seconds (up to the schedule's
    /// longest wait); `None` when the schedule has run out.
    pub fn after(&self, n: u32, retry_after: Option<u64>) -> Option<Duration> {
        let base = *self.delays.get(usize::try_from(n).ok()?.checked_sub(1)?)?;
        let longest = self.delays.iter().max().copied().unwrap_or(base);
        let asked = retry_after
            .map_or(Duration::ZERO, Duration::from_secs)
            .min(longest);
        let wait = base.max(asked);
        let factor = 1.0 + self.jitter * rand::rng().random_range(-1.0..=1.0);
        Some(wait.mul_f64(factor.max(0.0)) / self.divisor)
    }
}

/// What a delivery came to.
enum Done {
    /// Delivered: move on.
    Delivered,
    /// The endpoint was disabled: stop.
    Disabled,
}

/// Everything a delivery task needs.
pub(crate) struct Ctx {
    pub(crate) log: std::sync::Arc<dyn EventLog>,
    pub(crate) store: std::sync::Arc<Store>,
    pub(crate) sender: Sender,
    pub(crate) schedule: Schedule,
    /// Endpoints disabled, by reason (`gone`, `exhausted`): the alerts
    /// the carrier's dashboard shows beside the homes'.
    pub(crate) alerts: opentelemetry::metrics::Counter<u64>,
    /// The credentials an endpoint's partner must hold one of for its
    /// deliveries to go out; unset, every endpoint delivers.
    pub(crate) credentials: std::sync::OnceLock<std::sync::Arc<dyn CredentialStore>>,
}

/// How often a held endpoint looks again for its partner's credential.
const HELD_EVERY: Duration = threshold_auth::STANDING_EVERY;

/// Positions skipped (other partners' or unwanted events) before the
/// position is saved anyway, so a restart does not rescan a long stretch.
const SAVE_SKIPPED: u64 = 4096;

/// Delivers to `ep` from its durable position until it is paused,
/// disabled or deleted (the task is then aborted or returns).
pub(crate) async fn run(ctx: std::sync::Arc<Ctx>, ep: Endpoint) {
    let mut at = ep.cursor;
    let mut saved = at;
    loop {
        let mut events = ctx.log.subscribe(Position(at));
        while let Some(next) = events.next().await {
            let event = match next {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(endpoint = ep.id, error = %e, "webhook subscription failed; resubscribing");
                    break;
                }
            };
            at = event.position.0;
            // Another partner's event is passed over before it is decoded:
            // every endpoint reads the whole log.
            let theirs = event.event.tenant.as_deref() == Some(ep.tenant.as_str());
            let wanted = theirs
                .then(|| webhook_event(&event))
                .flatten()
                .filter(|w| w.tenant == ep.tenant && ep.kinds.iter().any(|k| k == w.kind));
            let Some(mut w) = wanted else {
                if at - saved >= SAVE_SKIPPED {
                    save(&ctx, &ep, at);
                    saved = at;
                }
                continue;
            };
            if let Some(proof) = w.payload.data.proof_of_delivery.as_mut() {
                let head = receipt_head(&ctx, &ep, &event).await;
                proof.receipt_chain_version = head.as_ref().map(|h| h.version);
                proof.receipt_chain_head = head.map(|h| h.hash);
            }
            match deliver(&ctx, &ep, &w).await {
                Done::Delivered => {
                    save(&ctx, &ep, at);
                    saved = at;
                }
                Done::Disabled => return,
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The chain head proving `event`, read from the log; a read that fails
/// is tried again, since a payload sent without its proof would be sent
/// for good.
async fn receipt_head(
    ctx: &Ctx,
    ep: &Endpoint,
    event: &threshold_log::RecordedEvent,
) -> Option<crate::proof::ChainHead> {
    let mut pause = Backoff::default();
    loop {
        match crate::proof::receipt_head(ctx.log.as_ref(), event).await {
            Ok(head) => return head,
            Err(e) => {
                tracing::warn!(endpoint = ep.id, error = %e, retry_in = ?pause.next(), "proof of delivery not read; trying again");
                pause.wait().await;
            }
        }
    }
}

/// The pause before trying a local failure again (an unreadable log, a
/// secret the vault cannot open): one second, doubling to five minutes, so
/// a failure that lasts does not write a warning every second.
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(Duration::from_secs(1))
    }
}

impl Backoff {
    const MAX: Duration = Duration::from_secs(300);

    fn next(&self) -> Duration {
        self.0
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Self::MAX);
    }
}

fn save(ctx: &Ctx, ep: &Endpoint, at: u64) {
    if let Err(e) = ctx.store.set_cursor(&ep.id, at) {
        tracing::warn!(endpoint = ep.id, error = %e, "webhook position not saved");
    }
}

async fn deliver(ctx: &Ctx, ep: &Endpoint, w: &WebhookEvent) -> Done {
    let body = w.body();
    let mut n: u32 = 1;
    let mut pause = Backoff::default();
    loop {
        // Looked at before every request: a retry days later is sent only
        // if the partner still holds a credential then.
        while_no_credential(ctx, ep, w).await;
        let secrets = match ctx.store.secrets(&ep.id, Utc::now()) {
            Ok(s) if !s.is_empty() => s,
            Ok(_) | Err(_) => {
                tracing::warn!(endpoint = ep.id, retry_in = ?pause.next(), "webhook endpoint has no valid secret");
                pause.wait().await;
                continue;
            }
        };
        let at = Utc::now();
        let r = ctx
            .sender
            .send(&ep.url, &w.id, body.clone(), &secrets)
            .await;
        let wait = ctx.schedule.after(n, r.retry_after);
        let verdict = match r.status {
            Some(200..=299) => Verdict::Delivered,
            Some(410) => Verdict::Gone,
            _ if wait.is_none() => Verdict::Exhausted,
            _ => Verdict::Retry,
        };
        let attempt = Attempt {
            event_id: w.id.clone(),
            position: w.position,
            parcel_id: w.parcel_id.clone(),
            attempt: n,
            at,
            status: r.status,
            error: r.error,
            latency_ms: u64::try_from(r.latency.as_millis()).unwrap_or(u64::MAX),
            excerpt: r.excerpt,
            verdict,
        };
        if let Err(e) = ctx.store.record(&ep.id, &attempt) {
            tracing::warn!(endpoint = ep.id, error = %e, "webhook attempt not recorded");
        }
        match (verdict, wait) {
            (Verdict::Delivered, _) => return Done::Delivered,
            (Verdict::Retry, Some(wait)) => {
                tokio::time::sleep(wait).await;
                n += 1;
            }
            (Verdict::Gone, _) => {
                disable(ctx, ep, "gone", "the endpoint answered 410 Gone");
                return Done::Disabled;
            }
            _ => {
                disable(
                    ctx,
                    ep,
                    "exhausted",
                    &format!(
                        "event {} failed {n} attempts over the whole retry schedule (last: {})",
                        w.id,
                        attempt
                            .status
                            .map_or(attempt.error.clone(), |s| format!("HTTP {s}"))
                    ),
                );
                return Done::Disabled;
            }
        }
    }
}

/// Waits while `ep`'s partner holds no partner credential, raising one
/// alert when the wait starts; `w` waits at the endpoint's position. The
/// credentials unreadable also hold it: nothing is sent on a credential
/// that cannot be seen.
async fn while_no_credential(ctx: &Ctx, ep: &Endpoint, w: &WebhookEvent) {
    let Some(store) = ctx.credentials.get() else {
        return;
    };
    let mut held = false;
    let mut unreadable = false;
    loop {
        match store.current() {
            Ok(c) if c.held_by(Role::Partner, &ep.tenant) => break,
            Ok(_) if !held => {
                held = true;
                ctx.alerts
                    .add(1, &[opentelemetry::KeyValue::new("reason", "held")]);
                let message = format!(
                    "endpoint {} ({}) held before event {}: partner {} holds no partner credential; \
                     its outcomes wait until one is added, or the endpoint is deleted",
                    ep.id, ep.url, w.id, ep.tenant
                );
                tracing::warn!(endpoint = ep.id, partner = ep.tenant, "{message}");
                if let Err(e) = ctx.store.alert(&ep.tenant, &ep.id, &message, Utc::now()) {
                    tracing::warn!(endpoint = ep.id, error = %e, "webhook alert not recorded");
                }
            }
            Ok(_) => {}
            Err(e) if !unreadable => {
                unreadable = true;
                tracing::warn!(endpoint = ep.id, error = %e, "credentials unreadable; webhook deliveries wait");
            }
            Err(_) => {}
        }
        tokio::time::sleep(HELD_EVERY).await;
    }
    if held {
        tracing::info!(
            endpoint = ep.id,
            partner = ep.tenant,
            "partner holds a credential again; webhook deliveries go on"
        );
    }
}

fn disable(ctx: &Ctx, ep: &Endpoint, reason: &'static str, why: &str) {
    ctx.alerts
        .add(1, &[opentelemetry::KeyValue::new("reason", reason)]);
    let now = Utc::now();
    if let Err(e) = ctx
        .store
        .set_state(&ep.tenant, &ep.id, State::Disabled, why)
    {
        tracing::warn!(endpoint = ep.id, error = %e, "webhook endpoint not disabled");
    }
    let message = format!("endpoint {} ({}) disabled: {why}", ep.id, ep.url);
    if let Err(e) = ctx.store.alert(&ep.tenant, &ep.id, &message, now) {
        tracing::warn!(endpoint = ep.id, error = %e, "webhook alert not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_spans_three_days_then_runs_out() {
        let s = Schedule::default();
        assert!(
            s.span() >= Duration::from_secs(3 * 24 * 3600),
            "{:?}",
            s.span()
        );
        let first = s.after(1, None).expect("retry");
        assert!(
            first >= Duration::from_secs(4) && first <= Duration::from_secs(6),
            "{first:?}"
        );
        assert!(s.after(s.delays.len() as u32, None).is_some());
        assert!(s.after(s.delays.len() as u32 + 1, None).is_none());
    }

    #[test]
    fn retry_after_lengthens_a_wait_up_to_the_longest() {
        let s = Schedule {
            jitter: 0.0,
            ..Schedule::default()
        };
        assert_eq!(s.after(1, Some(120)), Some(Duration::from_secs(120)));
        assert_eq!(s.after(1, Some(1)), Some(Duration::from_secs(5)));
        assert_eq!(
            s.after(1, Some(u64::MAX)),
            Some(Duration::from_secs(36_000))
        );
        let fast = Schedule {
            jitter: 0.0,
            ..Schedule::accelerated(1000)
        };
        assert_eq!(fast.after(1, None), Some(Duration::from_millis(5)));
    }
}
