//! The watcher: which homes' doors are unlocked and which open grants'
//! windows end, read from the log once and then kept by this service's own
//! decisions; every tick it raises the alerts due and closes ended grants.
//!
//! It must never decide on its own: alerts and expiries go through the
//! home's and grant's aggregates like any command ([`crate::streams`]).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use threshold_domain::grant::Command as GrantCommand;
use threshold_domain::home::Command as HomeCommand;
use threshold_domain::{Category, DomainEvent, EventId, GrantId, HomeId, pb};
use threshold_log::Position;
use threshold_status::status;
use tonic::Status;

use crate::{Access, CAMERA_HEARTBEAT_MAX_AGE, RELOCK_WITHIN};

/// The watcher's reading of the log: where it got to, which homes' doors
/// were unlocked there, and when the open grants' windows end.
#[derive(Default)]
pub(crate) struct OpenDoors {
    after: Position,
    /// The log was read up to its head once: since then this service's own
    /// decisions (it is the only writer of grants and homes) keep it.
    recovered: bool,
    homes: BTreeSet<HomeId>,
    grants: HashMap<GrantId, DateTime<Utc>>,
}

impl OpenDoors {
    /// Follows one event of `home`'s.
    pub(crate) fn home(&mut self, home: HomeId, event: &pb::home_event::Event) {
        use pb::home_event::Event as H;
        match event {
            H::Unlocked(_) => {
                self.homes.insert(home);
            }
            H::Relocked(_) => {
                self.homes.remove(&home);
            }
            H::HandleChecked(h) if h.locked => {
                self.homes.remove(&home);
            }
            _ => {}
        }
    }

    /// Follows one event of grant `id`'s.
    pub(crate) fn grant(&mut self, id: GrantId, event: &pb::grant_event::Event) {
        use pb::grant_event::Event as G;
        match event {
            G::Issued(g) => {
                if let Some((_, end)) = g
                    .window
                    .as_ref()
                    .and_then(|w| threshold_domain::country::window_bounds(w).ok())
                {
                    self.grants.insert(id, end);
                }
            }
            G::Revoked(_) | G::Expired(_) => {
                self.grants.remove(&id);
            }
            _ => {}
        }
    }
}

impl Access {
    /// Looks at every home whose door is unlocked at `now` and raises the
    /// alerts due: not relocked within [`RELOCK_WITHIN`], or a camera silent
    /// for longer than [`CAMERA_HEARTBEAT_MAX_AGE`] while it is open.
    /// Returns how many alerts were raised. [`Access::spawn_watcher`] runs it
    /// every second; it reads the homes to look at from the log, so a
    /// restarted server watches the doors opened before it stopped.
    pub async fn watch(&self, now: DateTime<Utc>) -> Result<u32, Status> {
        let (homes, ended) = self.open_doors(now).await?;
        // Grants whose window has ended are closed, for the resident to see.
        for grant_id in ended {
            let expire = GrantCommand::Expire {
                grant_id: grant_id.clone(),
                now,
            };
            self.grant(&grant_id, &expire, now).await?;
        }
        let mut raised = 0;
        for home_id in homes {
            let command = HomeCommand::Watch {
                home_id: home_id.clone(),
                now,
                relock_within: RELOCK_WITHIN,
                heartbeat_max_age: CAMERA_HEARTBEAT_MAX_AGE,
            };
            let decided = self.home(&home_id, command, EventId::new(), now).await?;
            raised += decided.events.len() as u32;
        }
        Ok(raised)
    }

    /// Homes whose last lock report left the door unlocked, and open grants
    /// whose window has ended by `now`: read from the log once, then kept by
    /// this service's own decisions.
    async fn open_doors(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(BTreeSet<HomeId>, Vec<GrantId>), Status> {
        let mut seen = self.open.lock().await;
        while !seen.recovered {
            let batch = self.log.read_all(seen.after, 4096).await.map_err(status)?;
            let Some(last) = batch.last() else {
                seen.recovered = true;
                break;
            };
            seen.after = last.position;
            for r in &batch {
                match (r.stream.category(), r.decode()) {
                    (Category::Grant, Ok(DomainEvent::Grant(e))) => {
                        if let Ok(id) = GrantId::new(r.stream.id()) {
                            seen.grant(id, &e);
                        }
                    }
                    (Category::Home, Ok(DomainEvent::Home(e))) => {
                        if let Ok(home) = HomeId::new(r.stream.id()) {
                            seen.home(home, &e);
                        }
                    }
                    _ => {}
                }
            }
        }
        let ended = seen
            .grants
            .iter()
            .filter(|(_, end)| **end <= now)
            .map(|(id, _)| id.clone())
            .collect();
        Ok((seen.homes.clone(), ended))
    }

    /// Runs [`Access::watch`] every `every` on the server's clock until the
    /// runtime stops. A simulation has no one clock to watch on (each
    /// request carries its own time), so a simulation's server does not run
    /// it: there the locks' own reports (door left open, camera offline)
    /// raise the alerts, and tests call [`Access::watch`] with the time.
    pub fn spawn_watcher(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let access = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = access.watch(Utc::now()).await {
                    tracing::warn!(error = %e.message(), "watching open doors");
                }
            }
        })
    }
}
