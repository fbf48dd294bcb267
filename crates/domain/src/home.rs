//! A home with a smart lock and a camera, as the vendor's devices report it.
//!
//! Registering the lock enrols the home (see [`crate::enrolment`]): the
//! first registration names the household living at the home's address and
//! carries the digest of a one-time claim code; the household claims the
//! home with it ([`Command::Claim`]). A later registration (a new lock or
//! key) by the same vendor, while the home is unclaimed, carries a fresh
//! code and voids the old; once claimed, the claim stays. Every payload
//! naming a home must name the stream's.
//!
//! Registering the lock and claiming the home are decisions; everything
//! after them is a fact: the
//! device saw it happen. Facts are checked for shape and for belonging to
//! this home's lock, then recorded whatever order they arrive in — a relock
//! reported for a door the log thinks is locked is still what the lock said.
//! This module never decides whether a door may be opened (the grant does);
//! it keeps what that decision needs to know, such as whether the camera is
//! up and recording.
//!
//! The device payloads carry no time of their own: when a fact happened is
//! the envelope's `occurred_at`. [`Home::evolve_at`] (and [`Home::fold_at`])
//! take it, so rebuilt state knows since when the door is unlocked and when
//! the camera last reported. Plain [`Aggregate::evolve`] leaves those instants
//! unknown, and an unknown heartbeat never counts as a ready camera.
//!
//! Around an entry the home raises alerts (`AlertRaised`) for the resident
//! and the carrier: a camera going offline while the door is open, a door
//! left open, a handle found unlocked, a lock opening without a redeemed
//! authorization, tampering, and — on [`Command::Watch`], which a watcher
//! runs on the server's clock — a door not relocked in time or a camera
//! fallen silent while it is open. Each kind is raised once per opening.
//! Every reported opening that no redeemed authorization stands behind (no
//! grant, a nonce not redeemed, or a nonce the lock already opened on)
//! raises its alert, once for that opening.
//!
//! A device's clock is not trusted beyond [`DEVICE_CLOCK_SKEW`]:
//! [`device_time`] refuses a report dated further from the server's clock,
//! and records one dated ahead of it at the server's time, so a heartbeat or
//! an unlock dated in the future cannot keep a camera fresh or put off the
//! relock alert. A refused report is recorded as an alert
//! ([`Command::DeviceClockSkewed`]), not as the fact it claimed.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};

use crate::aggregate::Aggregate;
use crate::country::{Country, instant};
use crate::enrolment::{Enrolled, MAX_REFUSED_CLAIMS, MAX_REFUSED_CLAIMS_PER_CODE};
use crate::error::{DomainError, Result, forbidden, invalid};
use crate::ids::{DeviceId, GrantId, HomeId};
use crate::pb::{self, home_event::Event};

/// The length of an ed25519 public key, in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;

/// How far a device's reported time may be from the server's clock, ahead
/// or behind. Further than this, the report is refused: a device whose
/// clock drifted (or was set) that far cannot be believed about when
/// anything happened.
pub const DEVICE_CLOCK_SKEW: Duration = Duration::minutes(2);

/// The instant a device fact reported as happening at `occurred_at` is
/// recorded at, given the server's clock `now`: its own time when that is
/// not ahead of the server's, the server's when it is (a fact cannot have
/// happened after it was received). `occurred_at` further than
/// [`DEVICE_CLOCK_SKEW`] from `now`, either way, is refused as an invalid
/// `occurred_at`.
pub fn device_time(occurred_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let skew = occurred_at.signed_duration_since(now);
    if skew.abs() > DEVICE_CLOCK_SKEW {
        let side = if skew > Duration::zero() {
            "ahead of"
        } else {
            "behind"
        };
        return Err(invalid(
            "occurred_at",
            format!(
                "is {} s {side} the server's clock; a device's time may be at most {} s off",
                skew.num_seconds().abs(),
                DEVICE_CLOCK_SKEW.num_seconds()
            ),
        ));
    }
    Ok(occurred_at.min(now))
}

/// The door, as the lock last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Door {
    /// Locked, or nothing reported since registration.
    #[default]
    Locked,
    /// Unlocked (or reported open).
    Unlocked {
        /// When it was unlocked, if known.
        since: Option<DateTime<Utc>>,
    },
}

/// The home's camera, as it last reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Camera {
    /// The camera that last came online.
    pub id: Option<String>,
    /// Reporting.
    pub online: bool,
    /// Recording, as of its last report.
    pub recording: bool,
    /// When it last reported online: its heartbeat.
    pub last_heartbeat: Option<DateTime<Utc>>,
}

/// A home's state, rebuilt from its stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Home {
    /// The registered lock, its id and public key; `None` before registration.
    pub lock: Option<pb::LockRegistered>,
    /// The door.
    pub door: Door,
    /// The camera.
    pub camera: Camera,
    /// Clips recorded.
    pub clips: u32,
    /// Door alerts (left open, handle found unlocked) since the handle was
    /// last checked locked.
    pub door_alerts: u32,
    /// Tamper reports. Nothing in the stream closes them yet.
    pub tamper_alerts: u32,
    /// The alarm, as its panel last reported: `None` before any report.
    pub alarm_armed: Option<bool>,
    /// The grant the door was last opened under, if any.
    pub opened_under: Option<String>,
    /// Alert kinds raised since the door was last unlocked.
    pub alerted: BTreeSet<i32>,
    /// Alerts raised, in all.
    pub alerts: u32,
    /// The nonces the lock has reported opening on.
    pub opened_nonces: BTreeSet<String>,
    /// The household the home was enrolled for, from its first registration.
    pub household: Option<String>,
    /// The digest of the current claim code; empty when none is live (none
    /// issued, or the home was claimed).
    pub claim_digest: Vec<u8>,
    /// Claims refused since the current code was issued, per resident who
    /// tried.
    pub refused_claims: std::collections::BTreeMap<String, u32>,
    /// The resident who claimed the home.
    pub claimed_by: Option<String>,
}

/// What may be asked of a home: register its lock, or record one device fact.
/// Each fact names the home it is reported for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Register the home's lock, on the stream of `home_id`. The first
    /// registration enrols the home: it carries the household and the
    /// claim code's digest, and the address only sealed. A later one by the
    /// same vendor replaces the lock or key; while the home is unclaimed it
    /// issues its fresh code (the same registration again too: that is how
    /// a vendor asks for a new code), once claimed the same registration
    /// again changes nothing and a new one carries no code.
    RegisterLock {
        /// The home whose stream it is recorded on.
        home_id: HomeId,
        /// The registration, with the server's household, sealed address
        /// and claim digest filled in.
        registration: Box<pb::LockRegistered>,
    },
    /// A resident presents a claim code for the home.
    Claim {
        /// The home.
        home_id: HomeId,
        /// Who claims it.
        resident_ref: String,
        /// The digest of the code presented (normalised, see
        /// [`crate::enrolment::normalise_claim_code`]).
        claim_digest: Vec<u8>,
    },
    /// The lock opened.
    Unlocked {
        /// The home.
        home_id: HomeId,
        /// What the lock reported.
        fact: pb::LockUnlocked,
        /// Whether the grant's nonce it names was redeemed before it opened
        /// (looked up on the grant by the caller).
        redeemed: bool,
    },
    /// A device of the home reported a fact dated `occurred_at`, too far
    /// from the server's clock `now` for [`device_time`]: the fact is not
    /// recorded, the report is, as an alert (once per opening).
    DeviceClockSkewed {
        /// The home.
        home_id: HomeId,
        /// The time the device gave.
        occurred_at: DateTime<Utc>,
        /// The server's clock.
        now: DateTime<Utc>,
    },
    /// The alarm panel reported its state.
    Alarm {
        /// The home.
        home_id: HomeId,
        /// What the panel reported.
        fact: pb::AlarmState,
    },
    /// Look at an open door on the server's clock: raise an alert when it
    /// was not relocked in time, or the camera fell silent while it is open.
    Watch {
        /// The home.
        home_id: HomeId,
        /// The server's clock.
        now: DateTime<Utc>,
        /// How long a door may stay unlocked after an entry.
        relock_within: Duration,
        /// How old the camera's last heartbeat may be.
        heartbeat_max_age: Duration,
    },
    /// The lock closed.
    Relocked {
        /// The home.
        home_id: HomeId,
        /// What the lock reported.
        fact: pb::LockRelocked,
    },
    /// The lock checked its handle.
    HandleChecked {
        /// The home.
        home_id: HomeId,
        /// What the lock reported.
        fact: pb::HandleChecked,
    },
    /// The door stayed open too long.
    DoorLeftOpen {
        /// The home.
        home_id: HomeId,
        /// What the lock reported.
        fact: pb::DoorLeftOpen,
    },
    /// The camera came up (a heartbeat).
    CameraOnline {
        /// The home.
        home_id: HomeId,
        /// What the camera reported.
        fact: pb::CameraOnline,
    },
    /// The camera stopped reporting.
    CameraOffline {
        /// The home.
        home_id: HomeId,
        /// What was reported.
        fact: pb::CameraOffline,
    },
    /// The camera recorded a clip.
    ClipRecorded {
        /// The home.
        home_id: HomeId,
        /// What the camera reported.
        fact: pb::ClipRecorded,
    },
    /// A device reports tampering.
    TamperDetected {
        /// The home.
        home_id: HomeId,
        /// What the device reported.
        fact: pb::TamperDetected,
    },
}

/// Checks a lock registration: ids, a 32-byte ed25519 public key, a vendor
/// and one of the four countries.
pub fn validate_registered(r: &pb::LockRegistered) -> Result<()> {
    HomeId::new(&r.home_id)?;
    device_id("lock_id", &r.lock_id)?;
    if r.vendor.trim().is_empty() {
        return Err(invalid("vendor", "is empty"));
    }
    if r.public_key.len() != PUBLIC_KEY_LEN {
        return Err(invalid(
            "public_key",
            format!(
                "is {} bytes long; an ed25519 key is {PUBLIC_KEY_LEN}",
                r.public_key.len()
            ),
        ));
    }
    Country::from_proto(r.country)?;
    Ok(())
}

/// Whether `s` is a hex SHA-256 as clips are pinned with: 64 lowercase hex
/// digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A device id, with the field it came from named in the error.
fn device_id(field: &'static str, s: &str) -> Result<()> {
    DeviceId::new(s).map(drop).map_err(|e| match e {
        DomainError::Invalid { reason, .. } => invalid(field, reason),
        other => other,
    })
}

fn validate_clip(c: &pb::ClipRecorded) -> Result<()> {
    device_id("camera_id", &c.camera_id)?;
    if c.uri.trim().is_empty() {
        return Err(invalid("uri", "is empty"));
    }
    if !is_sha256_hex(&c.sha256) {
        return Err(invalid(
            "sha256",
            format!("{:?} is not 64 lowercase hex digits", c.sha256),
        ));
    }
    let started = c.started_at.as_ref().map(instant).transpose()?;
    let ended = c.ended_at.as_ref().map(instant).transpose()?;
    if let (Some(s), Some(e)) = (started, ended)
        && e < s
    {
        return Err(invalid(
            "ended_at",
            format!("the clip ends at {e}, before it starts at {s}"),
        ));
    }
    Ok(())
}

impl Home {
    /// The registered lock's id.
    pub fn lock_id(&self) -> Option<&str> {
        self.lock.as_ref().map(|l| l.lock_id.as_str())
    }

    /// The public key the home's devices sign their events with.
    pub fn public_key(&self) -> Option<&[u8]> {
        self.lock.as_ref().map(|l| l.public_key.as_slice())
    }

    /// Since when the door is unlocked (`Some(None)`: since a time not
    /// known), or `None` when it is locked.
    pub fn unlocked_since(&self) -> Option<Option<DateTime<Utc>>> {
        match self.door {
            Door::Locked => None,
            Door::Unlocked { since } => Some(since),
        }
    }

    /// An alert of `kind` about the current opening, unless one was raised.
    fn alert(&self, kind: pb::AlertKind, detail: String) -> Option<Event> {
        (!self.alerted.contains(&(kind as i32))).then(|| {
            Event::AlertRaised(pb::AlertRaised {
                kind: kind as i32,
                grant_id: self.opened_under.clone().unwrap_or_default(),
                detail,
            })
        })
    }

    /// Alerts not closed yet: door alerts and tamper reports.
    pub fn open_alerts(&self) -> u32 {
        self.door_alerts.saturating_add(self.tamper_alerts)
    }

    /// Whether the camera can watch an entry at `now`: online, recording, and
    /// heard from within `max_age`. A heartbeat of unknown time is not enough.
    pub fn camera_ready(&self, now: DateTime<Utc>, max_age: Duration) -> bool {
        self.camera.online
            && self.camera.recording
            && self
                .camera
                .last_heartbeat
                .is_some_and(|at| now.signed_duration_since(at) <= max_age)
    }

    /// Applies one recorded event with the instant it occurred (the
    /// envelope's `occurred_at`), which the payloads do not carry.
    pub fn evolve_at(&mut self, event: &Event, occurred_at: DateTime<Utc>) {
        self.apply(event, Some(occurred_at));
    }

    /// Rebuilds a home from its events and the instants they occurred.
    pub fn fold_at<'a>(events: impl IntoIterator<Item = (&'a Event, DateTime<Utc>)>) -> Self {
        let mut home = Self::default();
        for (event, at) in events {
            home.evolve_at(event, at);
        }
        home
    }

    /// What a grant's issue needs to know of the home: `None` before it is
    /// enrolled. Whether its household was forgotten is the vault's to say:
    /// `false` here, for the caller to set.
    pub fn enrolled(&self) -> Option<Enrolled> {
        self.household.as_ref().map(|h| Enrolled {
            household: h.clone(),
            claimed_by: self.claimed_by.clone(),
            household_forgotten: false,
        })
    }

    /// Whether a claim code is live for `resident`: issued, not used, and
    /// not voided for it by [`MAX_REFUSED_CLAIMS`] of its own refused
    /// claims. Another resident's wrong codes do not void it: one caller
    /// cannot keep a household from claiming its home (a code has 80
    /// random bits, so the guesses allowed each resident give nothing).
    ///
    /// All residents' refusals together void it at
    /// [`MAX_REFUSED_CLAIMS_PER_CODE`]: that bounds the guesses at a code
    /// and what a home's stream records of them, while keeping a household
    /// from its home takes that many residents' credentials.
    pub fn claim_code_live_for(&self, resident: &str) -> bool {
        !self.claim_digest.is_empty()
            && self.refused_claims.get(resident).copied().unwrap_or(0) < MAX_REFUSED_CLAIMS
            && self.refused_claims.values().sum::<u32>() < MAX_REFUSED_CLAIMS_PER_CODE
    }

    fn register(&self, home_id: &HomeId, r: &pb::LockRegistered) -> Result<Vec<Event>> {
        validate_registered(r)?;
        if r.home_id != home_id.as_str() {
            return Err(invalid(
                "home_id",
                format!(
                    "the registration names home {}, sent for home {home_id}",
                    r.home_id
                ),
            ));
        }
        if r.address.is_some() {
            return Err(invalid(
                "address",
                "is stored only sealed; the server seals it before deciding",
            ));
        }
        let Some(existing) = &self.lock else {
            if r.household_id.is_empty() || r.sealed_address.is_none() {
                return Err(invalid(
                    "address",
                    "is missing: a home's first registration carries its postal address",
                ));
            }
            if r.claim_digest.is_empty() {
                return Err(invalid("claim_digest", "is missing on an enrolment"));
            }
            return Ok(vec![Event::LockRegistered(r.clone())]);
        };
        if existing.vendor != r.vendor {
            return Err(forbidden(
                "vendor",
                format!("home {home_id} is registered by another vendor"),
            ));
        }
        // A home registered before enrolment existed has no household: its
        // vendor's next registration with the address enrols it.
        if !r.household_id.is_empty()
            && self
                .household
                .as_deref()
                .is_some_and(|h| h != r.household_id)
        {
            return Err(invalid(
                "address",
                format!("is not the address home {home_id} was enrolled at"),
            ));
        }
        let mut stored = r.clone();
        if self.claimed_by.is_some() {
            // Claimed: the claim stays, and no code is issued.
            stored.claim_digest.clear();
            if (&existing.lock_id, &existing.public_key, existing.country)
                == (&stored.lock_id, &stored.public_key, stored.country)
            {
                return Ok(vec![]);
            }
        } else if stored.claim_digest.is_empty() {
            return Err(invalid(
                "claim_digest",
                "is missing on a registration of an unclaimed home",
            ));
        }
        // A new lock, a rotated key or a fresh code: the stream keeps both.
        Ok(vec![Event::LockRegistered(stored)])
    }

    fn claim(&self, home_id: &HomeId, resident_ref: &str, digest: &[u8]) -> Result<Vec<Event>> {
        self.registered(home_id)?;
        if resident_ref.trim().is_empty() {
            return Err(invalid("resident_ref", "is missing"));
        }
        match &self.claimed_by {
            Some(r) if r == resident_ref => return Ok(vec![]),
            // Used: whoever else presents a code is told only that it does
            // not match, so nothing says the home was claimed, or by whom.
            Some(_) => return Err(forbidden("claim_code", "does not match")),
            None => {}
        }
        if !self.claim_code_live_for(resident_ref) {
            return Err(DomainError::InvalidState {
                subject: "claim_code".into(),
                action: "claim the home",
                state: format!(
                    "its code is void for {resident_ref} after {MAX_REFUSED_CLAIMS} refused \
                     claims; ask the lock vendor for a new code"
                ),
            });
        }
        if self.claim_digest != digest {
            return Ok(vec![Event::ClaimRefused(pb::ClaimRefused {
                resident_ref: resident_ref.to_owned(),
                reason: pb::ClaimRefusal::WrongCode as i32,
            })]);
        }
        Ok(vec![Event::Claimed(pb::HomeClaimed {
            resident_ref: resident_ref.to_owned(),
        })])
    }

    /// The registered lock of the home a fact is reported for.
    fn registered(&self, home_id: &HomeId) -> Result<&pb::LockRegistered> {
        match &self.lock {
            None => Err(DomainError::NotFound(format!("home/{home_id}"))),
            Some(l) if l.home_id != home_id.as_str() => Err(invalid(
                "home_id",
                format!("{home_id} is not this home, home/{}", l.home_id),
            )),
            Some(l) => Ok(l),
        }
    }

    /// The lock a lock fact comes from must be the registered one.
    fn registered_lock(&self, home_id: &HomeId, lock_id: &str) -> Result<()> {
        let lock = self.registered(home_id)?;
        if lock.lock_id != lock_id {
            return Err(invalid(
                "lock_id",
                format!(
                    "{lock_id:?} is not the lock of home/{}, {}",
                    lock.home_id, lock.lock_id
                ),
            ));
        }
        Ok(())
    }

    fn apply(&mut self, event: &Event, at: Option<DateTime<Utc>>) {
        match event {
            Event::LockRegistered(r) => {
                self.lock = Some(r.clone());
                if !r.household_id.is_empty() {
                    self.household = Some(r.household_id.clone());
                }
                if !r.claim_digest.is_empty() {
                    self.claim_digest.clone_from(&r.claim_digest);
                    self.refused_claims.clear();
                }
            }
            Event::Claimed(c) => {
                self.claimed_by = Some(c.resident_ref.clone());
                self.claim_digest.clear();
            }
            Event::ClaimRefused(r) => {
                let n = self
                    .refused_claims
                    .entry(r.resident_ref.clone())
                    .or_default();
                *n = n.saturating_add(1);
            }
            Event::Unlocked(u) => {
                self.door = Door::Unlocked { since: at };
                self.opened_under = (!u.grant_id.is_empty()).then(|| u.grant_id.clone());
                self.alerted.clear();
                if !u.nonce.is_empty() {
                    self.opened_nonces.insert(u.nonce.clone());
                }
            }
            Event::Relocked(_) => self.door = Door::Locked,
            Event::HandleChecked(h) if h.locked => {
                self.door = Door::Locked;
                self.door_alerts = 0;
            }
            Event::Alarm(a) => self.alarm_armed = Some(a.armed),
            Event::AlertRaised(a) => {
                self.alerted.insert(a.kind);
                self.alerts = self.alerts.saturating_add(1);
            }
            Event::HandleChecked(_) => {
                self.still_unlocked(at);
                self.door_alerts = self.door_alerts.saturating_add(1);
            }
            Event::DoorLeftOpen(_) => {
                self.still_unlocked(at);
                self.door_alerts = self.door_alerts.saturating_add(1);
            }
            Event::CameraOnline(c) => {
                self.camera = Camera {
                    id: Some(c.camera_id.clone()),
                    online: true,
                    recording: c.recording,
                    last_heartbeat: at,
                };
            }
            Event::CameraOffline(_) => {
                self.camera.online = false;
                self.camera.recording = false;
            }
            Event::ClipRecorded(_) => self.clips = self.clips.saturating_add(1),
            Event::TamperDetected(_) => self.tamper_alerts = self.tamper_alerts.saturating_add(1),
        }
    }

    /// The door is not locked; if the log thought it was, it is from `at`.
    fn still_unlocked(&mut self, at: Option<DateTime<Utc>>) {
        if self.door == Door::Locked {
            self.door = Door::Unlocked { since: at };
        }
    }
}

/// One entry into a home: the lock opening on a redeemed nonce, and what the
/// home's devices reported until the door was locked again. The lock opening
/// again on the same nonce belongs to the entry (with its `NonceReused`
/// alert) and opens it again until the next relock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The lock that opened.
    pub lock_id: String,
    /// When it opened.
    pub unlocked_at: DateTime<Utc>,
    /// When the lock reported the door locked again, and no handle check
    /// since found it open; `None` while it is not.
    pub relocked_at: Option<DateTime<Utc>>,
    /// Hashes of the clips recorded from the unlock to the relock.
    pub clips: Vec<String>,
    /// Alerts raised about this entry, until the next one.
    pub alerts: Vec<i32>,
}

/// The entry the lock made on `nonce`, from a home's events in stream order
/// with the instants they occurred; `None` when the lock never reported
/// opening on it.
pub fn entry(
    events: impl IntoIterator<Item = (Event, DateTime<Utc>)>,
    nonce: &str,
) -> Option<Entry> {
    let mut found: Option<Entry> = None;
    for (event, at) in events {
        match (&mut found, event) {
            (None, Event::Unlocked(u)) if !nonce.is_empty() && u.nonce == nonce => {
                found = Some(Entry {
                    lock_id: u.lock_id,
                    unlocked_at: at,
                    relocked_at: None,
                    clips: Vec::new(),
                    alerts: Vec::new(),
                });
            }
            (None, _) => {}
            // The lock opening again on the same nonce is this entry going
            // on (with its alert): the door is open again until relocked.
            (Some(e), Event::Unlocked(u)) if u.nonce == nonce => e.relocked_at = None,
            // The next opening ends this entry.
            (Some(_), Event::Unlocked(_)) => break,
            (Some(e), Event::Relocked(_)) => {
                e.relocked_at.get_or_insert(at);
            }
            (Some(e), Event::HandleChecked(h)) => {
                e.relocked_at = if h.locked {
                    Some(e.relocked_at.unwrap_or(at))
                } else {
                    None
                };
            }
            (Some(e), Event::ClipRecorded(c)) if e.relocked_at.is_none() => e.clips.push(c.sha256),
            (Some(e), Event::AlertRaised(a)) => e.alerts.push(a.kind),
            (Some(_), _) => {}
        }
    }
    found
}

impl Aggregate for Home {
    type Command = Command;
    type Event = Event;

    fn from_domain(event: crate::DomainEvent) -> Option<Event> {
        match event {
            crate::DomainEvent::Home(e) => Some(e),
            _ => None,
        }
    }

    fn into_domain(event: Event) -> crate::DomainEvent {
        crate::DomainEvent::Home(event)
    }

    fn decide(&self, command: &Command) -> Result<Vec<Event>> {
        match command {
            Command::RegisterLock {
                home_id,
                registration,
            } => self.register(home_id, registration),
            Command::Claim {
                home_id,
                resident_ref,
                claim_digest,
            } => self.claim(home_id, resident_ref, claim_digest),
            Command::Unlocked {
                home_id,
                fact,
                redeemed,
            } => {
                self.registered_lock(home_id, &fact.lock_id)?;
                if !fact.grant_id.is_empty() {
                    GrantId::new(&fact.grant_id)?;
                    if fact.nonce.is_empty() {
                        return Err(invalid(
                            "nonce",
                            "an unlock under a grant carries the nonce it was authorized with",
                        ));
                    }
                }
                let mut events = vec![Event::Unlocked(fact.clone())];
                // One alert for this opening at most: what is wrong first.
                let alert = if fact.grant_id.is_empty() {
                    Some((
                        pb::AlertKind::UnlockWithoutAuthorization,
                        "the lock opened under no grant".to_owned(),
                    ))
                } else if !redeemed {
                    Some((
                        pb::AlertKind::UnlockWithoutAuthorization,
                        format!(
                            "the lock opened on nonce {} which was not redeemed on the grant",
                            fact.nonce
                        ),
                    ))
                } else if self.opened_nonces.contains(&fact.nonce) {
                    Some((
                        pb::AlertKind::NonceReused,
                        format!(
                            "the lock opened again on nonce {}, spent on an earlier opening",
                            fact.nonce
                        ),
                    ))
                } else {
                    None
                };
                if let Some((kind, detail)) = alert {
                    events.push(Event::AlertRaised(pb::AlertRaised {
                        kind: kind as i32,
                        grant_id: fact.grant_id.clone(),
                        detail,
                    }));
                }
                Ok(events)
            }
            Command::DeviceClockSkewed {
                home_id,
                occurred_at,
                now,
            } => {
                self.registered(home_id)?;
                let Err(refused) = device_time(*occurred_at, *now) else {
                    return Ok(vec![]);
                };
                Ok(self
                    .alert(
                        pb::AlertKind::DeviceClockSkew,
                        format!("a device report dated {occurred_at} was refused: {refused}"),
                    )
                    .into_iter()
                    .collect())
            }
            Command::Alarm { home_id, fact } => {
                self.registered(home_id)?;
                device_id("device_id", &fact.device_id)?;
                Ok(vec![Event::Alarm(fact.clone())])
            }
            Command::Watch {
                home_id,
                now,
                relock_within,
                heartbeat_max_age,
            } => {
                self.registered(home_id)?;
                let Some(since) = self.unlocked_since() else {
                    return Ok(vec![]);
                };
                let mut events = Vec::new();
                if let Some(since) = since
                    && now.signed_duration_since(since) > *relock_within
                {
                    events.extend(self.alert(
                        pb::AlertKind::RelockOverdue,
                        format!(
                            "unlocked at {since} and not relocked within {} s",
                            relock_within.num_seconds()
                        ),
                    ));
                }
                if !self.camera_ready(*now, *heartbeat_max_age) {
                    let last = self
                        .camera
                        .last_heartbeat
                        .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339());
                    events.extend(self.alert(
                        pb::AlertKind::CameraOfflineWhileOpen,
                        format!("the door is open and the camera's last heartbeat was {last}"),
                    ));
                }
                Ok(events)
            }
            Command::Relocked { home_id, fact } => {
                self.registered_lock(home_id, &fact.lock_id)?;
                Ok(vec![Event::Relocked(fact.clone())])
            }
            Command::HandleChecked { home_id, fact } => {
                self.registered_lock(home_id, &fact.lock_id)?;
                let mut events = vec![Event::HandleChecked(fact.clone())];
                if !fact.locked {
                    events.extend(self.alert(
                        pb::AlertKind::HandleNotLocked,
                        "the handle check found the door not locked".into(),
                    ));
                }
                Ok(events)
            }
            Command::DoorLeftOpen { home_id, fact } => {
                self.registered_lock(home_id, &fact.lock_id)?;
                if fact.open_seconds == 0 {
                    return Err(invalid("open_seconds", "must be more than 0"));
                }
                let mut events = vec![Event::DoorLeftOpen(fact.clone())];
                events.extend(self.alert(
                    pb::AlertKind::DoorLeftOpen,
                    format!("the lock reports the door open for {} s", fact.open_seconds),
                ));
                Ok(events)
            }
            Command::CameraOnline { home_id, fact } => {
                self.registered(home_id)?;
                device_id("camera_id", &fact.camera_id)?;
                Ok(vec![Event::CameraOnline(fact.clone())])
            }
            Command::CameraOffline { home_id, fact } => {
                self.registered(home_id)?;
                device_id("camera_id", &fact.camera_id)?;
                let mut events = vec![Event::CameraOffline(fact.clone())];
                if self.door != Door::Locked {
                    events.extend(self.alert(
                        pb::AlertKind::CameraOfflineWhileOpen,
                        format!(
                            "the camera went offline while the door is open: {}",
                            fact.reason
                        ),
                    ));
                }
                Ok(events)
            }
            Command::ClipRecorded { home_id, fact } => {
                self.registered(home_id)?;
                validate_clip(fact)?;
                Ok(vec![Event::ClipRecorded(fact.clone())])
            }
            Command::TamperDetected { home_id, fact } => {
                self.registered(home_id)?;
                device_id("device_id", &fact.device_id)?;
                Ok(vec![
                    Event::TamperDetected(fact.clone()),
                    Event::AlertRaised(pb::AlertRaised {
                        kind: pb::AlertKind::Tamper as i32,
                        grant_id: self.opened_under.clone().unwrap_or_default(),
                        detail: format!("{}: {}", fact.device_id, fact.detail),
                    }),
                ])
            }
        }
    }

    fn evolve(&mut self, event: &Event) {
        self.apply(event, None);
    }

    fn evolve_recorded(&mut self, event: &Event, occurred_at: DateTime<Utc>) {
        self.apply(event, Some(occurred_at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;
    use crate::country::timestamp;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn home() -> HomeId {
        HomeId::new("home-1").unwrap()
    }

    fn lock() -> pb::LockRegistered {
        pb::LockRegistered {
            home_id: "home-1".into(),
            lock_id: "lock-1".into(),
            vendor: "acme-locks".into(),
            public_key: vec![7; 32],
            country: pb::Country::No as i32,
            address: None,
            sealed_address: Some(pb::Sealed {
                subject: "hh-1".into(),
                ..Default::default()
            }),
            household_id: "hh-1".into(),
            claim_digest: vec![1; 32],
        }
    }

    fn registered() -> Event {
        Event::LockRegistered(lock())
    }

    fn unlocked() -> pb::LockUnlocked {
        pb::LockUnlocked {
            lock_id: "lock-1".into(),
            grant_id: "g-1".into(),
            nonce: "n-1".into(),
        }
    }

    fn relocked() -> pb::LockRelocked {
        pb::LockRelocked {
            lock_id: "lock-1".into(),
        }
    }

    fn handle(locked: bool) -> pb::HandleChecked {
        pb::HandleChecked {
            lock_id: "lock-1".into(),
            locked,
        }
    }

    fn left_open() -> pb::DoorLeftOpen {
        pb::DoorLeftOpen {
            lock_id: "lock-1".into(),
            open_seconds: 90,
        }
    }

    fn online(recording: bool) -> pb::CameraOnline {
        pb::CameraOnline {
            camera_id: "cam-1".into(),
            recording,
        }
    }

    fn offline() -> pb::CameraOffline {
        pb::CameraOffline {
            camera_id: "cam-1".into(),
            reason: "no heartbeat".into(),
        }
    }

    fn clip() -> pb::ClipRecorded {
        pb::ClipRecorded {
            camera_id: "cam-1".into(),
            uri: "s3://clips/home-1/0001.mp4".into(),
            sha256: SHA.into(),
            started_at: Some(timestamp(utc("2026-11-23T09:30:00Z"))),
            ended_at: Some(timestamp(utc("2026-11-23T09:32:00Z"))),
        }
    }

    fn tamper() -> pb::TamperDetected {
        pb::TamperDetected {
            device_id: "lock-1".into(),
            detail: "case opened".into(),
        }
    }

    fn invalid_field(result: Result<Vec<Event>>) -> &'static str {
        match result {
            Err(DomainError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    /// Every fact command with its event, for the home `home_id`.
    fn every_fact(home_id: HomeId) -> Vec<(Command, Event)> {
        vec![
            (
                Command::Unlocked {
                    home_id: home_id.clone(),
                    fact: unlocked(),
                    redeemed: true,
                },
                Event::Unlocked(unlocked()),
            ),
            (
                Command::Relocked {
                    home_id: home_id.clone(),
                    fact: relocked(),
                },
                Event::Relocked(relocked()),
            ),
            (
                Command::HandleChecked {
                    home_id: home_id.clone(),
                    fact: handle(true),
                },
                Event::HandleChecked(handle(true)),
            ),
            (
                Command::DoorLeftOpen {
                    home_id: home_id.clone(),
                    fact: left_open(),
                },
                Event::DoorLeftOpen(left_open()),
            ),
            (
                Command::CameraOnline {
                    home_id: home_id.clone(),
                    fact: online(true),
                },
                Event::CameraOnline(online(true)),
            ),
            (
                Command::CameraOffline {
                    home_id: home_id.clone(),
                    fact: offline(),
                },
                Event::CameraOffline(offline()),
            ),
            (
                Command::ClipRecorded {
                    home_id: home_id.clone(),
                    fact: clip(),
                },
                Event::ClipRecorded(clip()),
            ),
            (
                Command::TamperDetected {
                    home_id,
                    fact: tamper(),
                },
                Event::TamperDetected(tamper()),
            ),
        ]
    }

    fn register(r: pb::LockRegistered) -> Command {
        Command::RegisterLock {
            home_id: home(),
            registration: Box::new(r),
        }
    }

    fn claim(resident: &str, digest: &[u8]) -> Command {
        Command::Claim {
            home_id: home(),
            resident_ref: resident.into(),
            claim_digest: digest.to_vec(),
        }
    }

    fn claimed(resident: &str) -> Event {
        Event::Claimed(pb::HomeClaimed {
            resident_ref: resident.into(),
        })
    }

    #[test]
    fn a_lock_registered_enrols_the_home_for_its_household() {
        assert_eq!(
            given::<Home>(&[]).decide(&register(lock())).unwrap(),
            vec![registered()]
        );
        let h = given::<Home>(&[registered()]);
        assert_eq!(h.lock_id(), Some("lock-1"));
        assert_eq!(h.public_key(), Some(&[7u8; 32][..]));
        assert_eq!(h.door, Door::Locked);
        assert_eq!(
            h.enrolled().map(|e| (e.household, e.claimed_by)),
            Some(("hh-1".to_owned(), None))
        );
        assert!(h.claim_code_live_for("res-1"));
        // Unclaimed, the same registration again issues a fresh code (how a
        // vendor asks for one); claimed, it changes nothing.
        let fresh = pb::LockRegistered {
            claim_digest: vec![2; 32],
            ..lock()
        };
        assert_eq!(
            h.decide(&register(fresh.clone())).unwrap(),
            vec![Event::LockRegistered(fresh)]
        );
        let h = given::<Home>(&[registered(), claimed("res-1")]);
        assert_eq!(h.decide(&register(lock())).unwrap(), vec![]);
    }

    #[test]
    fn a_first_registration_without_an_address_or_for_another_home_is_refused() {
        let bare = pb::LockRegistered {
            household_id: String::new(),
            sealed_address: None,
            ..lock()
        };
        assert_eq!(
            invalid_field(given::<Home>(&[]).decide(&register(bare))),
            "address"
        );
        let clear = pb::LockRegistered {
            address: Some(pb::Address::default()),
            ..lock()
        };
        assert_eq!(
            invalid_field(given::<Home>(&[]).decide(&register(clear))),
            "address"
        );
        // The payload names home-2, on home-1's stream: refused, first
        // registration or not, naming both.
        let elsewhere = pb::LockRegistered {
            home_id: "home-2".into(),
            ..lock()
        };
        for h in [given::<Home>(&[]), given::<Home>(&[registered()])] {
            match h.decide(&register(elsewhere.clone())) {
                Err(DomainError::Invalid {
                    field: "home_id",
                    reason,
                }) => assert!(
                    reason.contains("home-2") && reason.contains("home-1"),
                    "{reason}"
                ),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_new_lock_or_key_replaces_the_old_one_and_keeps_the_claim() {
        let h = given::<Home>(&[registered()]);
        let rotated = pb::LockRegistered {
            public_key: vec![8; 32],
            claim_digest: vec![3; 32],
            household_id: String::new(),
            sealed_address: None,
            ..lock()
        };
        assert_eq!(
            h.decide(&register(rotated.clone())).unwrap(),
            vec![Event::LockRegistered(rotated.clone())]
        );
        let h = given::<Home>(&[registered(), Event::LockRegistered(rotated.clone())]);
        assert_eq!(h.public_key(), Some(&[8u8; 32][..]));
        // The household stays; the old code is void, the new one live.
        assert_eq!(h.household.as_deref(), Some("hh-1"));
        assert_eq!(h.decide(&claim("res-1", &[1; 32])).unwrap().len(), 1);
        assert!(matches!(
            &h.decide(&claim("res-1", &[1; 32])).unwrap()[..],
            [Event::ClaimRefused(_)]
        ));
        assert_eq!(
            h.decide(&claim("res-1", &[3; 32])).unwrap(),
            vec![claimed("res-1")]
        );
        // Once claimed, a new key carries no code and the claim stays.
        let h = given::<Home>(&[registered(), claimed("res-1")]);
        let stored = match &h.decide(&register(rotated)).unwrap()[..] {
            [Event::LockRegistered(r)] => r.clone(),
            other => panic!("{other:?}"),
        };
        assert!(stored.claim_digest.is_empty());
        let h = given::<Home>(&[
            registered(),
            claimed("res-1"),
            Event::LockRegistered(stored),
        ]);
        assert_eq!(h.claimed_by.as_deref(), Some("res-1"));
        // Another vendor, or another household's address, is refused.
        let other_vendor = pb::LockRegistered {
            vendor: "other-locks".into(),
            ..lock()
        };
        assert!(matches!(
            h.decide(&register(other_vendor)),
            Err(DomainError::Forbidden { field, .. }) if field == "vendor"
        ));
        let moved = pb::LockRegistered {
            household_id: "hh-2".into(),
            ..lock()
        };
        assert_eq!(invalid_field(h.decide(&register(moved))), "address");
    }

    #[test]
    fn a_home_is_claimed_once_with_its_code_and_five_wrong_codes_void_it() {
        let h = given::<Home>(&[registered()]);
        // A wrong code is recorded, never the code itself.
        let wrong = h.decide(&claim("res-2", &[9; 32])).unwrap();
        assert_eq!(
            wrong,
            vec![Event::ClaimRefused(pb::ClaimRefused {
                resident_ref: "res-2".into(),
                reason: pb::ClaimRefusal::WrongCode as i32,
            })]
        );
        // The right one claims it; the same resident again changes nothing;
        // anyone else is told only that the code does not match.
        assert_eq!(
            h.decide(&claim("res-1", &[1; 32])).unwrap(),
            vec![claimed("res-1")]
        );
        let done = given::<Home>(&[registered(), claimed("res-1")]);
        assert_eq!(done.decide(&claim("res-1", &[1; 32])).unwrap(), vec![]);
        assert_eq!(
            done.decide(&claim("res-2", &[1; 32]))
                .unwrap_err()
                .to_string(),
            "claim_code: does not match"
        );
        // Five refusals void the code for the resident who made them: even
        // the right one is refused to it, until the vendor registers the
        // lock again. Another resident's code is still live.
        let mut history = vec![registered()];
        history.extend(std::iter::repeat_n(
            wrong[0].clone(),
            MAX_REFUSED_CLAIMS as usize,
        ));
        let void = given::<Home>(&history);
        assert!(!void.claim_code_live_for("res-2"));
        assert!(matches!(
            void.decide(&claim("res-2", &[1; 32])),
            Err(DomainError::InvalidState { .. })
        ));
        assert!(void.claim_code_live_for("res-1"));
        assert_eq!(
            void.decide(&claim("res-1", &[1; 32])).unwrap(),
            vec![claimed("res-1")]
        );
        // Every resident's refusals together void it for everyone: the
        // guesses at a code, and what the stream records of them, are
        // bounded however many residents guess.
        let mut many = vec![registered()];
        for n in 0..MAX_REFUSED_CLAIMS_PER_CODE {
            many.push(Event::ClaimRefused(pb::ClaimRefused {
                resident_ref: format!("guesser-{}", n / MAX_REFUSED_CLAIMS),
                reason: pb::ClaimRefusal::WrongCode as i32,
            }));
        }
        let spent = given::<Home>(&many);
        assert!(!spent.claim_code_live_for("res-1"));
        assert!(matches!(
            spent.decide(&claim("res-1", &[1; 32])),
            Err(DomainError::InvalidState { .. })
        ));
        many.pop();
        assert!(given::<Home>(&many).claim_code_live_for("res-1"));
        history.push(Event::LockRegistered(pb::LockRegistered {
            claim_digest: vec![4; 32],
            ..lock()
        }));
        assert_eq!(
            given::<Home>(&history)
                .decide(&claim("res-1", &[4; 32]))
                .unwrap(),
            vec![claimed("res-1")]
        );
        // A home never enrolled cannot be claimed.
        assert!(matches!(
            given::<Home>(&[]).decide(&claim("res-1", &[1; 32])),
            Err(DomainError::NotFound(_))
        ));
    }

    #[test]
    fn registrations_are_validated() {
        let cases = [
            (
                "home_id",
                pb::LockRegistered {
                    home_id: String::new(),
                    ..lock()
                },
            ),
            (
                "lock_id",
                pb::LockRegistered {
                    lock_id: "lock 1".into(),
                    ..lock()
                },
            ),
            (
                "vendor",
                pb::LockRegistered {
                    vendor: " ".into(),
                    ..lock()
                },
            ),
            (
                "public_key",
                pb::LockRegistered {
                    public_key: vec![7; 31],
                    ..lock()
                },
            ),
            (
                "public_key",
                pb::LockRegistered {
                    public_key: vec![7; 33],
                    ..lock()
                },
            ),
            (
                "public_key",
                pb::LockRegistered {
                    public_key: vec![],
                    ..lock()
                },
            ),
            (
                "country",
                pb::LockRegistered {
                    country: 0,
                    ..lock()
                },
            ),
        ];
        for (field, broken) in cases {
            assert_eq!(
                invalid_field(given::<Home>(&[]).decide(&register(broken))),
                field
            );
        }
    }

    #[test]
    fn every_fact_of_a_registered_home_is_recorded() {
        let h = given::<Home>(&[registered()]);
        for (command, event) in every_fact(home()) {
            assert_eq!(h.decide(&command).unwrap()[0], event);
        }
    }

    #[test]
    fn no_fact_is_recorded_for_a_home_without_a_lock() {
        let h = given::<Home>(&[]);
        for (command, _) in every_fact(home()) {
            assert_eq!(
                h.decide(&command),
                Err(DomainError::NotFound("home/home-1".into()))
            );
        }
    }

    #[test]
    fn facts_for_another_home_are_refused() {
        let h = given::<Home>(&[registered()]);
        for (command, _) in every_fact(HomeId::new("home-2").unwrap()) {
            assert_eq!(invalid_field(h.decide(&command)), "home_id");
        }
    }

    #[test]
    fn lock_facts_come_from_the_registered_lock() {
        let h = given::<Home>(&[registered()]);
        let other = || "lock-2".to_owned();
        let commands = [
            Command::Unlocked {
                home_id: home(),
                fact: pb::LockUnlocked {
                    lock_id: other(),
                    ..unlocked()
                },
                redeemed: true,
            },
            Command::Relocked {
                home_id: home(),
                fact: pb::LockRelocked { lock_id: other() },
            },
            Command::HandleChecked {
                home_id: home(),
                fact: pb::HandleChecked {
                    lock_id: other(),
                    locked: true,
                },
            },
            Command::DoorLeftOpen {
                home_id: home(),
                fact: pb::DoorLeftOpen {
                    lock_id: other(),
                    open_seconds: 90,
                },
            },
        ];
        for command in commands {
            assert_eq!(invalid_field(h.decide(&command)), "lock_id");
        }
    }

    #[test]
    fn facts_are_recorded_whatever_order_they_arrive_in() {
        // The log thinks the door is locked; the lock says it relocked. Fine.
        let h = given::<Home>(&[registered()]);
        assert_eq!(h.door, Door::Locked);
        let relock = Command::Relocked {
            home_id: home(),
            fact: relocked(),
        };
        assert_eq!(
            h.decide(&relock).unwrap(),
            vec![Event::Relocked(relocked())]
        );
        // Two unlocks in a row, and an offline camera going offline again.
        let h = given::<Home>(&[
            registered(),
            Event::Unlocked(unlocked()),
            Event::CameraOffline(offline()),
        ]);
        // (Another nonce: the same one again is a replay, and alerts.)
        let unlock = Command::Unlocked {
            home_id: home(),
            fact: pb::LockUnlocked {
                nonce: "n-2".into(),
                ..unlocked()
            },
            redeemed: true,
        };
        assert_eq!(h.decide(&unlock).unwrap().len(), 1);
        let down = Command::CameraOffline {
            home_id: home(),
            fact: offline(),
        };
        assert_eq!(h.decide(&down).unwrap()[0], Event::CameraOffline(offline()));
    }

    fn alert_kinds(events: &[Event]) -> Vec<pb::AlertKind> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::AlertRaised(a) => pb::AlertKind::try_from(a.kind).ok(),
                _ => None,
            })
            .collect()
    }

    fn watch(now: &str) -> Command {
        Command::Watch {
            home_id: home(),
            now: utc(now),
            relock_within: Duration::minutes(3),
            heartbeat_max_age: Duration::seconds(60),
        }
    }

    /// A home whose camera beat at 10:00 and whose door opened at 10:00:30
    /// under grant g-1.
    fn opened() -> Home {
        Home::fold_at([
            (&registered(), utc("2026-11-23T09:00:00Z")),
            (
                &Event::CameraOnline(online(true)),
                utc("2026-11-23T10:00:00Z"),
            ),
            (&Event::Unlocked(unlocked()), utc("2026-11-23T10:00:30Z")),
        ])
    }

    #[test]
    fn an_entry_ends_with_the_relock_and_a_handle_found_open_undoes_it() {
        let t = |m: u32| utc(&format!("2026-11-23T10:{m:02}:00Z"));
        let events = vec![
            (registered(), t(0)),
            (Event::Unlocked(unlocked()), t(1)),
            (Event::ClipRecorded(clip()), t(2)),
            (Event::Relocked(relocked()), t(3)),
        ];
        let e = entry(events.clone(), "n-1").unwrap();
        assert_eq!((e.unlocked_at, e.relocked_at), (t(1), Some(t(3))));
        assert_eq!(e.clips, [SHA]);
        assert_eq!(entry(events.clone(), "n-2"), None);
        let mut open = events.clone();
        open.push((Event::HandleChecked(handle(false)), t(4)));
        assert_eq!(entry(open.clone(), "n-1").unwrap().relocked_at, None);
        open.push((Event::HandleChecked(handle(true)), t(5)));
        assert_eq!(entry(open, "n-1").unwrap().relocked_at, Some(t(5)));
        // Not relocked before the next opening.
        let next = vec![
            (Event::Unlocked(unlocked()), t(1)),
            (
                Event::Unlocked(pb::LockUnlocked {
                    nonce: "n-9".into(),
                    ..unlocked()
                }),
                t(6),
            ),
            (Event::Relocked(relocked()), t(7)),
        ];
        assert_eq!(entry(next, "n-1").unwrap().relocked_at, None);
    }

    #[test]
    fn a_door_not_relocked_in_time_raises_one_alert() {
        let mut h = opened();
        assert_eq!(h.opened_under.as_deref(), Some("g-1"));
        assert_eq!(h.decide(&watch("2026-11-23T10:00:50Z")).unwrap(), vec![]);
        let late = h.decide(&watch("2026-11-23T10:03:31Z")).unwrap();
        assert_eq!(
            alert_kinds(&late),
            [
                pb::AlertKind::RelockOverdue,
                pb::AlertKind::CameraOfflineWhileOpen
            ],
            "3 min after the unlock, and the camera silent for over 60 s"
        );
        match &late[0] {
            Event::AlertRaised(a) => assert_eq!(a.grant_id, "g-1"),
            other => panic!("{other:?}"),
        }
        for e in &late {
            h.evolve_at(e, utc("2026-11-23T10:03:31Z"));
        }
        assert_eq!(
            h.decide(&watch("2026-11-23T10:10:00Z")).unwrap(),
            vec![],
            "once"
        );
        assert_eq!(h.alerts, 2);
        // Relocked: nothing to watch.
        h.evolve_at(&Event::Relocked(relocked()), utc("2026-11-23T10:11:00Z"));
        assert_eq!(h.decide(&watch("2026-11-23T11:00:00Z")).unwrap(), vec![]);
    }

    #[test]
    fn a_camera_going_offline_while_the_door_is_open_raises_an_alert() {
        let h = opened();
        let down = Command::CameraOffline {
            home_id: home(),
            fact: offline(),
        };
        assert_eq!(
            alert_kinds(&h.decide(&down).unwrap()),
            [pb::AlertKind::CameraOfflineWhileOpen]
        );
        // With the door locked, a camera going offline is only a fact.
        let h = given::<Home>(&[registered()]);
        assert_eq!(alert_kinds(&h.decide(&down).unwrap()), []);
    }

    #[test]
    fn an_unlock_without_a_redeemed_authorization_raises_an_alert() {
        let h = given::<Home>(&[registered()]);
        let unlock = |redeemed| Command::Unlocked {
            home_id: home(),
            fact: unlocked(),
            redeemed,
        };
        assert_eq!(alert_kinds(&h.decide(&unlock(true)).unwrap()), []);
        assert_eq!(
            alert_kinds(&h.decide(&unlock(false)).unwrap()),
            [pb::AlertKind::UnlockWithoutAuthorization]
        );
    }

    #[test]
    fn left_open_handle_and_tamper_reports_raise_alerts() {
        let h = opened();
        let left = Command::DoorLeftOpen {
            home_id: home(),
            fact: left_open(),
        };
        assert_eq!(
            alert_kinds(&h.decide(&left).unwrap()),
            [pb::AlertKind::DoorLeftOpen]
        );
        let handle = Command::HandleChecked {
            home_id: home(),
            fact: handle(false),
        };
        assert_eq!(
            alert_kinds(&h.decide(&handle).unwrap()),
            [pb::AlertKind::HandleNotLocked]
        );
        let t = Command::TamperDetected {
            home_id: home(),
            fact: tamper(),
        };
        assert_eq!(alert_kinds(&h.decide(&t).unwrap()), [pb::AlertKind::Tamper]);
    }

    #[test]
    fn unlocks_are_validated() {
        let h = given::<Home>(&[registered()]);
        let unlock = |grant_id: &str, nonce: &str| Command::Unlocked {
            home_id: home(),
            fact: pb::LockUnlocked {
                lock_id: "lock-1".into(),
                grant_id: grant_id.into(),
                nonce: nonce.into(),
            },
            redeemed: false,
        };
        assert_eq!(invalid_field(h.decide(&unlock("g-1", ""))), "nonce");
        assert_eq!(invalid_field(h.decide(&unlock("g 1", "n"))), "grant_id");
        // An opening under no grant is recorded, and alerts.
        assert_eq!(
            alert_kinds(&h.decide(&unlock("", "")).unwrap()),
            [pb::AlertKind::UnlockWithoutAuthorization]
        );
    }

    #[test]
    fn device_facts_are_validated() {
        let h = given::<Home>(&[registered()]);
        let cases = [
            (
                "open_seconds",
                Command::DoorLeftOpen {
                    home_id: home(),
                    fact: pb::DoorLeftOpen {
                        open_seconds: 0,
                        ..left_open()
                    },
                },
            ),
            (
                "camera_id",
                Command::CameraOnline {
                    home_id: home(),
                    fact: pb::CameraOnline {
                        camera_id: String::new(),
                        recording: true,
                    },
                },
            ),
            (
                "camera_id",
                Command::CameraOffline {
                    home_id: home(),
                    fact: pb::CameraOffline {
                        camera_id: "cam/1".into(),
                        ..offline()
                    },
                },
            ),
            (
                "device_id",
                Command::TamperDetected {
                    home_id: home(),
                    fact: pb::TamperDetected {
                        device_id: String::new(),
                        ..tamper()
                    },
                },
            ),
        ];
        for (field, command) in cases {
            assert_eq!(invalid_field(h.decide(&command)), field);
        }
    }

    #[test]
    fn clips_are_pinned_by_a_lowercase_hex_sha256() {
        let h = given::<Home>(&[registered()]);
        let record = |fact| Command::ClipRecorded {
            home_id: home(),
            fact,
        };
        let mut backwards = clip();
        std::mem::swap(&mut backwards.started_at, &mut backwards.ended_at);
        let cases = [
            (
                "sha256",
                pb::ClipRecorded {
                    sha256: SHA.to_uppercase(),
                    ..clip()
                },
            ),
            (
                "sha256",
                pb::ClipRecorded {
                    sha256: SHA[..63].into(),
                    ..clip()
                },
            ),
            (
                "sha256",
                pb::ClipRecorded {
                    sha256: format!("{SHA}0"),
                    ..clip()
                },
            ),
            (
                "sha256",
                pb::ClipRecorded {
                    sha256: SHA.replace('9', "g"),
                    ..clip()
                },
            ),
            (
                "sha256",
                pb::ClipRecorded {
                    sha256: String::new(),
                    ..clip()
                },
            ),
            (
                "uri",
                pb::ClipRecorded {
                    uri: " ".into(),
                    ..clip()
                },
            ),
            (
                "camera_id",
                pb::ClipRecorded {
                    camera_id: String::new(),
                    ..clip()
                },
            ),
            ("ended_at", backwards),
        ];
        for (field, broken) in cases {
            assert_eq!(invalid_field(h.decide(&record(broken))), field);
        }
        assert!(is_sha256_hex(SHA));
        let untimed = pb::ClipRecorded {
            started_at: None,
            ended_at: None,
            ..clip()
        };
        assert_eq!(h.decide(&record(untimed)).unwrap().len(), 1);
    }

    #[test]
    fn the_door_follows_the_lock_with_the_instant_it_was_unlocked() {
        let t = utc("2026-11-23T09:30:00Z");
        let events = [registered(), Event::Unlocked(unlocked())];
        let h = Home::fold_at(events.iter().map(|e| (e, t)));
        assert_eq!(h.door, Door::Unlocked { since: Some(t) });
        // Without instants the door is unlocked since an unknown time.
        assert_eq!(given::<Home>(&events).door, Door::Unlocked { since: None });
        let h = given::<Home>(&[
            registered(),
            Event::Unlocked(unlocked()),
            Event::Relocked(relocked()),
        ]);
        assert_eq!(h.door, Door::Locked);
    }

    #[test]
    fn door_alerts_stay_open_until_the_handle_is_checked_locked() {
        let t0 = utc("2026-11-23T09:30:00Z");
        let t1 = utc("2026-11-23T09:35:00Z");
        let mut h = given::<Home>(&[registered()]);
        h.evolve_at(&Event::Unlocked(unlocked()), t0);
        h.evolve_at(&Event::DoorLeftOpen(left_open()), t1);
        assert_eq!(h.door, Door::Unlocked { since: Some(t0) });
        h.evolve_at(&Event::Relocked(relocked()), t1);
        h.evolve_at(&Event::HandleChecked(handle(false)), t1);
        // The relock did not hold: unlocked again from the check.
        assert_eq!(h.door, Door::Unlocked { since: Some(t1) });
        assert_eq!(h.door_alerts, 2);
        h.evolve_at(&Event::TamperDetected(tamper()), t1);
        assert_eq!(h.open_alerts(), 3);
        h.evolve_at(&Event::HandleChecked(handle(true)), t1);
        assert_eq!(h.door, Door::Locked);
        assert_eq!(h.open_alerts(), 1, "a tamper report stays open");
    }

    #[test]
    fn a_camera_is_ready_when_online_recording_and_recently_heard_from() {
        let beat = utc("2026-11-23T09:30:00Z");
        let max_age = Duration::seconds(60);
        let at = |e: Event| (e, beat);
        let history = [at(registered()), at(Event::CameraOnline(online(true)))];
        let h = Home::fold_at(history.iter().map(|(e, t)| (e, *t)));
        assert_eq!(h.camera.id.as_deref(), Some("cam-1"));
        assert!(h.camera_ready(utc("2026-11-23T09:30:30Z"), max_age));
        assert!(h.camera_ready(utc("2026-11-23T09:31:00Z"), max_age));
        assert!(
            !h.camera_ready(utc("2026-11-23T09:31:01Z"), max_age),
            "stale"
        );

        let mut idle = h.clone();
        idle.evolve_at(&Event::CameraOnline(online(false)), beat);
        assert!(!idle.camera_ready(beat, max_age), "not recording");

        let mut down = h.clone();
        down.evolve_at(&Event::CameraOffline(offline()), beat);
        assert!(!down.camera.online);
        assert!(!down.camera_ready(beat, max_age), "offline");

        // Folded without instants, the heartbeat's time is unknown: not ready.
        let h = given::<Home>(&[registered(), Event::CameraOnline(online(true))]);
        assert!(h.camera.online);
        assert!(!h.camera_ready(beat, max_age));
    }

    #[test]
    fn clips_are_counted() {
        let h = given::<Home>(&[
            registered(),
            Event::ClipRecorded(clip()),
            Event::ClipRecorded(clip()),
        ]);
        assert_eq!(h.clips, 2);
    }

    #[test]
    fn a_device_time_is_bounded_by_the_servers_clock() {
        let now = utc("2026-11-23T10:00:00Z");
        let skew = DEVICE_CLOCK_SKEW;
        // Behind within the skew: its own time.
        let behind = now - skew;
        assert_eq!(device_time(behind, now).unwrap(), behind);
        // Ahead within the skew: the server's time.
        assert_eq!(device_time(now + skew, now).unwrap(), now);
        // Further, either way: refused as an invalid occurred_at.
        for at in [
            now + skew + Duration::seconds(1),
            now - skew - Duration::seconds(1),
        ] {
            let refused = device_time(at, now).map(|_| vec![]);
            assert_eq!(invalid_field(refused), "occurred_at");
        }
    }

    #[test]
    fn a_skewed_report_is_recorded_as_one_alert_per_opening() {
        let now = utc("2026-11-23T10:00:00Z");
        let skewed = |at: DateTime<Utc>| Command::DeviceClockSkewed {
            home_id: home(),
            occurred_at: at,
            now,
        };
        let h = opened();
        // Given an open door, when a report dated an hour ahead comes,
        // then one alert about this opening.
        let events = h.decide(&skewed(now + Duration::hours(1))).unwrap();
        assert_eq!(alert_kinds(&events), [pb::AlertKind::DeviceClockSkew]);
        assert!(matches!(&events[..], [Event::AlertRaised(a)] if a.grant_id == "g-1"));
        // Once: after it, the next skewed report adds nothing.
        let mut after = h.clone();
        after.evolve_at(&events[0], now);
        assert_eq!(after.decide(&skewed(now - Duration::hours(1))).unwrap(), []);
        // A time within the skew is no alert; an unregistered home none.
        assert_eq!(h.decide(&skewed(now + Duration::seconds(90))).unwrap(), []);
        assert!(matches!(
            Home::default().decide(&skewed(now + Duration::hours(1))),
            Err(DomainError::NotFound(_))
        ));
    }

    #[test]
    fn a_heartbeat_or_unlock_dated_ahead_does_not_outlive_the_servers_clock() {
        let now = utc("2026-11-23T10:00:00Z");
        // Given a heartbeat and an unlock both dated two minutes ahead,
        // recorded at the time device_time gives them.
        let ahead = now + DEVICE_CLOCK_SKEW;
        let at = device_time(ahead, now).unwrap();
        let h = Home::fold_at([
            (&registered(), now - Duration::hours(1)),
            (&Event::CameraOnline(online(true)), at),
            (&Event::Unlocked(unlocked()), at),
        ]);
        // When the watcher looks just past the heartbeat's age and the
        // relock's time, counted from the server's receipt,
        let watch = Command::Watch {
            home_id: home(),
            now: now + Duration::minutes(3) + Duration::seconds(1),
            relock_within: Duration::minutes(3),
            heartbeat_max_age: Duration::seconds(60),
        };
        // then both alerts are due: the device's future date bought nothing.
        assert_eq!(
            alert_kinds(&h.decide(&watch).unwrap()),
            [
                pb::AlertKind::RelockOverdue,
                pb::AlertKind::CameraOfflineWhileOpen
            ]
        );
        assert!(!h.camera_ready(now + Duration::seconds(61), Duration::seconds(60)));
    }

    #[test]
    fn a_spent_nonce_opening_again_alerts_once_and_shows_on_its_entry() {
        let t = |m: u32| utc(&format!("2026-11-23T10:{m:02}:00Z"));
        // Given the lock opened on n-1 (redeemed) and relocked,
        let h = given::<Home>(&[
            registered(),
            Event::Unlocked(unlocked()),
            Event::Relocked(relocked()),
        ]);
        // when it reports opening on n-1 again, still redeemed on the grant,
        let again = Command::Unlocked {
            home_id: home(),
            fact: unlocked(),
            redeemed: true,
        };
        let events = h.decide(&again).unwrap();
        // then the opening is recorded with one NonceReused alert.
        assert_eq!(events.len(), 2);
        assert_eq!(alert_kinds(&events), [pb::AlertKind::NonceReused]);
        // The entry on n-1 goes on: the alert is on its receipt, and it is
        // relocked only once the lock says so again.
        let mut history = vec![
            (registered(), t(0)),
            (Event::Unlocked(unlocked()), t(1)),
            (Event::Relocked(relocked()), t(2)),
        ];
        history.extend(events.into_iter().map(|e| (e, t(3))));
        let e = entry(history.clone(), "n-1").unwrap();
        assert_eq!(e.alerts, [pb::AlertKind::NonceReused as i32]);
        assert_eq!((e.unlocked_at, e.relocked_at), (t(1), None));
        history.push((Event::Relocked(relocked()), t(4)));
        assert_eq!(entry(history, "n-1").unwrap().relocked_at, Some(t(4)));
        // A first opening on a redeemed nonce alerts nothing.
        let first = Command::Unlocked {
            home_id: home(),
            fact: pb::LockUnlocked {
                nonce: "n-2".into(),
                ..unlocked()
            },
            redeemed: true,
        };
        assert_eq!(alert_kinds(&h.decide(&first).unwrap()), []);
    }
}
