//! Who a browser is: single-use sign-in codes, server-side sessions behind
//! an HttpOnly cookie, and each session's CSRF token.
//!
//! A browser never holds a bearer token after signing in: it holds a random
//! 256-bit session id, and the server keeps what that id stands for (the
//! principal, its CSRF token, its expiry). Codes and sessions are bounded in
//! number, in total and per credential, so no one caller can fill memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use threshold_auth::{Principal, Standing};

/// How long a sign-in code can be exchanged.
pub const CODE_TTL: Duration = Duration::from_secs(10 * 60);
/// How long a session lasts without signing in again.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Sign-in codes outstanding at once; the oldest gives way.
const MAX_CODES: usize = 256;
/// Unused sign-in codes one credential may hold.
const MAX_CODES_PER_CREDENTIAL: usize = 8;
/// Sessions at once, over every credential.
const MAX_SESSIONS: usize = 10_000;
/// Sessions one credential may hold; its oldest gives way.
const MAX_SESSIONS_PER_CREDENTIAL: usize = 32;

/// A signed-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// Who signed in.
    pub(crate) principal: Principal,
    /// The credential it signed in with, asked at each page whether it
    /// still holds: revoked, or its token replaced, the session ends.
    pub(crate) standing: Standing,
    /// The token every form of this session carries.
    pub(crate) csrf: String,
    created: Instant,
}

/// 256 random bits, as 64 hex digits.
fn random_id() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal, in time that does not depend on where two strings differ.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The codes and sessions of one console.
#[derive(Default)]
pub(crate) struct Sessions {
    codes: Mutex<HashMap<String, (Standing, Instant)>>,
    sessions: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A code that signs in the holder of `standing` once, within
    /// [`CODE_TTL`].
    pub(crate) fn issue_code(&self, standing: Standing) -> String {
        let principal = standing.principal().clone();
        let mut codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        codes.retain(|_, (_, at)| now.duration_since(*at) < CODE_TTL);
        let oldest = |codes: &HashMap<String, (Standing, Instant)>, name: Option<&str>| {
            codes
                .iter()
                .filter(|(_, (p, _))| name.is_none_or(|n| p.principal().name == n))
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
        };
        // One credential asking again and again replaces its own codes,
        // not the links printed for everyone else.
        let mine = codes
            .values()
            .filter(|(p, _)| p.principal().name == principal.name)
            .count();
        if mine >= MAX_CODES_PER_CREDENTIAL
            && let Some(k) = oldest(&codes, Some(&principal.name))
        {
            codes.remove(&k);
        }
        if codes.len() >= MAX_CODES
            && let Some(k) = oldest(&codes, None)
        {
            codes.remove(&k);
        }
        let code = random_id();
        codes.insert(code.clone(), (standing, now));
        code
    }

    /// Whom a live code of a credential that still holds would sign in,
    /// leaving it unused.
    pub(crate) fn peek(&self, code: &str) -> Option<Principal> {
        let standing = {
            let codes = self.codes.lock().unwrap_or_else(|p| p.into_inner());
            let (standing, at) = codes.get(code)?;
            (at.elapsed() < CODE_TTL).then(|| standing.clone())?
        };
        standing.holds().then(|| standing.principal().clone())
    }

    /// Exchanges a code for a new session's id; a code works once.
    pub(crate) fn redeem(&self, code: &str) -> Option<String> {
        let (standing, at) = self
            .codes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(code)?;
        (at.elapsed() < CODE_TTL).then(|| self.open(standing))
    }

    /// A new session for the holder of `standing`; returns its id.
    pub(crate) fn open(&self, standing: Standing) -> String {
        let principal = standing.principal().clone();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| s.created.elapsed() < SESSION_TTL);
        let oldest = |sessions: &HashMap<String, Session>, name: Option<&str>| {
            sessions
                .iter()
                .filter(|(_, s)| name.is_none_or(|n| s.principal.name == n))
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
        };
        let mine = sessions
            .values()
            .filter(|s| s.principal.name == principal.name)
            .count();
        if mine >= MAX_SESSIONS_PER_CREDENTIAL
            && let Some(k) = oldest(&sessions, Some(&principal.name))
        {
            sessions.remove(&k);
        }
        if sessions.len() >= MAX_SESSIONS
            && let Some(k) = oldest(&sessions, None)
        {
            sessions.remove(&k);
        }
        let id = random_id();
        sessions.insert(
            id.clone(),
            Session {
                principal,
                standing,
                csrf: random_id(),
                created: Instant::now(),
            },
        );
        id
    }

    /// The live session `id` names.
    pub(crate) fn get(&self, id: &str) -> Option<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get(id) {
            Some(s) if s.created.elapsed() < SESSION_TTL => Some(s.clone()),
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends session `id`.
    pub(crate) fn close(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Sessions open now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use threshold_auth::Role;

    /// The standing of a new planner credential named `name`, kept in the
    /// directory `dir`.
    fn planner_in(dir: &std::path::Path, name: &str) -> Standing {
        let token =
            threshold_auth::Credentials::add(dir, name, Role::Planner, "STO-1").expect("added");
        threshold_auth::Authenticator::new(dir)
            .standing(Some(format!("Bearer {token}").as_bytes()))
            .expect("known")
    }

    #[test]
    fn a_code_signs_in_once_and_one_credential_holds_a_bounded_number_of_sessions() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, b) = (planner_in(dir.path(), "a"), planner_in(dir.path(), "b"));
        let planner = |name: &str| if name == "a" { a.clone() } else { b.clone() };
        let s = Sessions::default();
        let code = s.issue_code(planner("a"));
        assert_eq!(code.len(), 64);
        let id = s.redeem(&code).expect("first use");
        assert!(s.redeem(&code).is_none(), "a code works once");
        assert_eq!(s.get(&id).map(|x| x.principal.name), Some("a".into()));
        for _ in 0..100 {
            s.open(planner("a"));
        }
        s.open(planner("b"));
        assert_eq!(s.len(), MAX_SESSIONS_PER_CREDENTIAL + 1);
        s.close(&id);
        assert!(s.get(&id).is_none());
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }

    #[test]
    fn one_credential_asking_for_codes_again_and_again_does_not_void_anothers() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, b) = (planner_in(dir.path(), "a"), planner_in(dir.path(), "b"));
        let planner = |name: &str| if name == "a" { a.clone() } else { b.clone() };
        let s = Sessions::default();
        let theirs = s.issue_code(planner("b"));
        let mine: Vec<String> = (0..1000).map(|_| s.issue_code(planner("a"))).collect();
        assert!(s.redeem(&theirs).is_some(), "b's printed link still works");
        let working = mine.iter().filter(|c| s.redeem(c).is_some()).count();
        assert_eq!(
            working, MAX_CODES_PER_CREDENTIAL,
            "a holds its newest codes only"
        );
        assert!(s.redeem(&mine[999]).is_none(), "used once");
    }
}
