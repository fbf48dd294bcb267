//! The home: its smart lock and camera, as the devices report them.
//!
//! Device events are facts, not requests: they are checked for shape and for
//! a registered lock, and recorded whatever order they arrive in (a relock
//! reported on a locked door is still what the lock said). The state they
//! build is what unlock decisions read: is the door shut, is the camera up.
//! Signature checks on device events join in the access issue.

use chrono::{DateTime, Duration, Utc};

use crate::aggregate::Aggregate;
use crate::country::{Country, instant};
use crate::error::{DomainError, Result, invalid};
use crate::ids::HomeId;
use crate::pb::{self, home_event::Event};

/// The door as the lock last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Door {
    /// Locked (or never reported otherwise).
    #[default]
    Locked,
    /// Unlocked; since when, if the event's instant was observed.
    Unlocked(Option<DateTime<Utc>>),
}

/// A home's state, rebuilt from its stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Home {
    /// The registered lock, once there is one.
    pub lock: Option<pb::LockRegistered>,
    /// The door.
    pub door: Door,
    /// The camera said it is online.
    pub camera_online: bool,
    /// The camera said it is recording.
    pub camera_recording: bool,
    /// The camera's last heartbeat.
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Alerts raised (door left open, tamper).
    pub alerts: u32,
}

/// A fact reported by one of the home's devices, or its registration.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Register the home's lock and its signing key.
    RegisterLock(pb::LockRegistered),
    /// The lock opened.
    Unlocked(pb::LockUnlocked),
    /// The lock closed.
    Relocked(pb::LockRelocked),
    /// The lock reported the handle.
    HandleChecked(pb::HandleChecked),
    /// The door stayed open too long.
    DoorLeftOpen(pb::DoorLeftOpen),
    /// The camera is up (a heartbeat).
    CameraOnline(pb::CameraOnline),
    /// The camera went away.
    CameraOffline(pb::CameraOffline),
    /// A clip was recorded.
    ClipRecorded(pb::ClipRecorded),
    /// A device reports tampering.
    TamperDetected(pb::TamperDetected),
}

impl Home {
    /// The camera is online, recording, and has sent a heartbeat no older
    /// than `max_age` at `now`.
    pub fn camera_ready(&self, now: DateTime<Utc>, max_age: Duration) -> bool {
        self.camera_online
            && self.camera_recording
            && self
                .last_heartbeat
                .is_some_and(|t| t <= now && now - t <= max_age)
    }

    fn check_lock(&self, lock_id: &str) -> Result<()> {
        match &self.lock {
            Some(l) if l.lock_id == lock_id => Ok(()),
            Some(l) => Err(invalid(
                "lock_id",
                format!(
                    "{lock_id:?} is not the lock of home/{} ({:?})",
                    l.home_id, l.lock_id
                ),
            )),
            None => Err(DomainError::NotFound("home".into())),
        }
    }
}

fn nonempty(field: &'static str, s: &str) -> Result<()> {
    if s.trim().is_empty() {
        return Err(invalid(field, "is empty"));
    }
    Ok(())
}

impl Aggregate for Home {
    type Command = Command;
    type Event = Event;

    fn decide(&self, command: &Command) -> Result<Vec<Event>> {
        if let Command::RegisterLock(r) = command {
            HomeId::new(&r.home_id)?;
            nonempty("lock_id", &r.lock_id)?;
            nonempty("vendor", &r.vendor)?;
            Country::from_proto(r.country)?;
            if r.public_key.len() != 32 {
                return Err(invalid(
                    "public_key",
                    format!(
                        "an ed25519 key has 32 bytes, this has {}",
                        r.public_key.len()
                    ),
                ));
            }
            return match &self.lock {
                None => Ok(vec![Event::LockRegistered(r.clone())]),
                Some(existing) if existing == r => Ok(vec![]),
                Some(existing) => Err(DomainError::AlreadyExists(format!(
                    "home/{}",
                    existing.home_id
                ))),
            };
        }
        if self.lock.is_none() {
            return Err(DomainError::NotFound("home".into()));
        }
        let event = match command {
            Command::RegisterLock(_) => return Ok(vec![]), // handled above
            Command::Unlocked(e) => {
                self.check_lock(&e.lock_id)?;
                Event::Unlocked(e.clone())
            }
            Command::Relocked(e) => {
                self.check_lock(&e.lock_id)?;
                Event::Relocked(e.clone())
            }
            Command::HandleChecked(e) => {
                self.check_lock(&e.lock_id)?;
                Event::HandleChecked(e.clone())
            }
            Command::DoorLeftOpen(e) => {
                self.check_lock(&e.lock_id)?;
                Event::DoorLeftOpen(e.clone())
            }
            Command::CameraOnline(e) => {
                nonempty("camera_id", &e.camera_id)?;
                Event::CameraOnline(e.clone())
            }
            Command::CameraOffline(e) => {
                nonempty("camera_id", &e.camera_id)?;
                Event::CameraOffline(e.clone())
            }
            Command::ClipRecorded(e) => {
                nonempty("camera_id", &e.camera_id)?;
                nonempty("uri", &e.uri)?;
                if e.sha256.len() != 64
                    || !e
                        .sha256
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                {
                    return Err(invalid("sha256", "must be 64 lowercase hex digits"));
                }
                if let (Some(s), Some(t)) = (&e.started_at, &e.ended_at)
                    && instant(t)? < instant(s)?
                {
                    return Err(invalid("ended_at", "is before started_at"));
                }
                Event::ClipRecorded(e.clone())
            }
            Command::TamperDetected(e) => {
                nonempty("device_id", &e.device_id)?;
                Event::TamperDetected(e.clone())
            }
        };
        Ok(vec![event])
    }

    fn evolve(&mut self, event: &Event) {
        match event {
            Event::LockRegistered(r) => self.lock = Some(r.clone()),
            // Instants of device facts travel in their envelopes; `evolve`
            // sees only payloads, so `observe` adds the moment.
            Event::Unlocked(_) => {
                if self.door == Door::Locked {
                    self.door = Door::Unlocked(None);
                }
            }
            Event::Relocked(_) => self.door = Door::Locked,
            Event::HandleChecked(h) => {
                if h.locked {
                    self.door = Door::Locked;
                }
            }
            Event::DoorLeftOpen(_) | Event::TamperDetected(_) => self.alerts += 1,
            Event::CameraOnline(c) => {
                self.camera_online = true;
                self.camera_recording = c.recording;
            }
            Event::CameraOffline(_) => {
                self.camera_online = false;
                self.camera_recording = false;
            }
            Event::ClipRecorded(_) => {}
        }
    }
}

impl Home {
    /// Applies an event together with the instant it occurred (from its
    /// envelope): the door's unlock time and the camera's heartbeat.
    pub fn observe(&mut self, event: &Event, at: DateTime<Utc>) {
        self.evolve(event);
        match event {
            Event::Unlocked(_) => self.door = Door::Unlocked(Some(at)),
            Event::CameraOnline(_) => {
                self.last_heartbeat = Some(self.last_heartbeat.map_or(at, |t| t.max(at)));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;
    use crate::country::timestamp;
    use chrono::TimeZone;

    fn registered() -> pb::LockRegistered {
        pb::LockRegistered {
            home_id: "home-1".into(),
            lock_id: "lock-1".into(),
            vendor: "acme-locks".into(),
            public_key: vec![7; 32],
            country: pb::Country::No as i32,
        }
    }

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, h, m, s).unwrap()
    }

    #[test]
    fn a_lock_is_registered_once_with_a_32_byte_key() {
        let r = registered();
        assert_eq!(
            given::<Home>(&[])
                .decide(&Command::RegisterLock(r.clone()))
                .unwrap(),
            vec![Event::LockRegistered(r.clone())]
        );
        let home = given::<Home>(&[Event::LockRegistered(r.clone())]);
        assert_eq!(
            home.decide(&Command::RegisterLock(r.clone())).unwrap(),
            vec![]
        );
        let other = pb::LockRegistered {
            lock_id: "lock-2".into(),
            ..r.clone()
        };
        assert!(matches!(
            home.decide(&Command::RegisterLock(other)),
            Err(DomainError::AlreadyExists(_))
        ));
        let short = pb::LockRegistered {
            public_key: vec![1; 31],
            ..r
        };
        let err = given::<Home>(&[])
            .decide(&Command::RegisterLock(short))
            .unwrap_err();
        assert!(
            matches!(
                err,
                DomainError::Invalid {
                    field: "public_key",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn facts_need_a_registered_lock_and_the_right_lock() {
        let relock = Command::Relocked(pb::LockRelocked {
            lock_id: "lock-1".into(),
        });
        assert_eq!(
            given::<Home>(&[]).decide(&relock).unwrap_err(),
            DomainError::NotFound("home".into())
        );
        let home = given::<Home>(&[Event::LockRegistered(registered())]);
        // A relock on a locked door is still recorded: it is what the lock said.
        assert_eq!(home.decide(&relock).unwrap().len(), 1);
        let wrong = Command::Relocked(pb::LockRelocked {
            lock_id: "lock-9".into(),
        });
        assert!(matches!(
            home.decide(&wrong),
            Err(DomainError::Invalid {
                field: "lock_id",
                ..
            })
        ));
    }

    #[test]
    fn clips_must_carry_a_real_hash() {
        let home = given::<Home>(&[Event::LockRegistered(registered())]);
        let clip = |sha: &str| {
            Command::ClipRecorded(pb::ClipRecorded {
                camera_id: "cam-1".into(),
                uri: "s3://clips/1.mp4".into(),
                sha256: sha.into(),
                started_at: Some(timestamp(at(9, 0, 0))),
                ended_at: Some(timestamp(at(9, 1, 0))),
            })
        };
        assert!(home.decide(&clip(&"ab".repeat(32))).is_ok());
        assert!(home.decide(&clip("abc")).is_err());
        assert!(
            home.decide(&clip(&"AB".repeat(32))).is_err(),
            "lowercase hex only"
        );
        let mut backwards = clip(&"ab".repeat(32));
        if let Command::ClipRecorded(c) = &mut backwards {
            c.ended_at = Some(timestamp(at(8, 59, 0)));
        }
        assert!(matches!(
            home.decide(&backwards),
            Err(DomainError::Invalid {
                field: "ended_at",
                ..
            })
        ));
    }

    #[test]
    fn the_door_and_camera_follow_what_the_devices_report() {
        let mut home = Home::default();
        home.observe(&Event::LockRegistered(registered()), at(8, 0, 0));
        home.observe(
            &Event::CameraOnline(pb::CameraOnline {
                camera_id: "cam-1".into(),
                recording: true,
            }),
            at(9, 0, 0),
        );
        assert!(home.camera_ready(at(9, 0, 30), Duration::seconds(60)));
        assert!(
            !home.camera_ready(at(9, 2, 0), Duration::seconds(60)),
            "heartbeat too old"
        );
        home.observe(
            &Event::Unlocked(pb::LockUnlocked {
                lock_id: "lock-1".into(),
                ..Default::default()
            }),
            at(9, 1, 0),
        );
        assert_eq!(home.door, Door::Unlocked(Some(at(9, 1, 0))));
        home.observe(
            &Event::Relocked(pb::LockRelocked {
                lock_id: "lock-1".into(),
            }),
            at(9, 2, 0),
        );
        assert_eq!(home.door, Door::Locked);
        home.observe(
            &Event::CameraOffline(pb::CameraOffline {
                camera_id: "cam-1".into(),
                reason: "deauth".into(),
            }),
            at(9, 3, 0),
        );
        assert!(!home.camera_ready(at(9, 3, 1), Duration::seconds(60)));
        home.observe(
            &Event::DoorLeftOpen(pb::DoorLeftOpen {
                lock_id: "lock-1".into(),
                open_seconds: 300,
            }),
            at(9, 4, 0),
        );
        assert_eq!(home.alerts, 1);
    }
}
