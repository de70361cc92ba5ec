//! Console sessions: sign-in with `server.master_key` or `admin.token`, a session id in an
//! `HttpOnly; SameSite=Strict` cookie, and a CSRF token per session that every state-changing call
//! must send back in `X-CSRF-Token`.
//!
//! - **Sessions** live in memory ([`MAX_SESSIONS`], the oldest evicted first) for at most
//!   [`LIFETIME`]. A session remembers the SHA-256 of the credential it signed in with and is void as
//!   soon as that credential is no longer configured (a reload that rotates the master key or the
//!   admin token signs everyone out). With neither credential set the console is open (the admin
//!   listener is loopback by default) and `GET /ui/api/session` hands out a session without one, so
//!   the CSRF rule is the same either way.
//! - **CSRF tokens** are `HMAC-SHA256(process key, session id)`: nothing to store, worthless for
//!   another session. Sign-in itself needs the token `GET /ui/api/session` gives before sign-in
//!   (`HMAC(process key, "sign-in")`): only a page of the console's own origin can read it.
//! - **Guessing**: more than [`MAX_FAILURES`] failed sign-ins within a minute are refused with 429
//!   until the minute ends; credentials are compared as SHA-256 digests in constant time.

use crate::config::Config;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "llmproxy_console";
/// Sessions kept at once; the oldest goes first.
pub const MAX_SESSIONS: usize = 64;
/// How long a session lasts (also the cookie's `Max-Age`).
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Failed sign-ins allowed per minute.
pub const MAX_FAILURES: u32 = 10;

type Digest32 = [u8; 32];

struct Session {
    created: Instant,
    /// SHA-256 of the credential signed in with; `None`: an open console (no credential configured).
    credential: Option<Digest32>,
}

/// What a request's cookie amounts to.
pub enum Access {
    /// A live session: its id.
    Session(String),
    /// No session, or a void one.
    None,
}

/// Why a sign-in failed.
#[derive(Debug, PartialEq, Eq)]
pub enum SignInError {
    Wrong,
    TooMany,
}

pub struct Sessions {
    key: [u8; 32],
    map: Mutex<HashMap<String, Session>>,
    /// Failed sign-ins: the minute they were counted in, and how many.
    failures: Mutex<(u64, u32)>,
    started: Instant,
}

impl Default for Sessions {
    fn default() -> Self {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        Sessions {
            key,
            map: Mutex::new(HashMap::new()),
            failures: Mutex::new((0, 0)),
            started: Instant::now(),
        }
    }
}

/// The credentials that open the console: the master key's and the admin token's digests.
fn credentials(cfg: &Config) -> Vec<Digest32> {
    cfg.server
        .master_key
        .iter()
        .chain(cfg.admin.token.iter())
        .filter(|s| !s.is_empty())
        .map(|s| Sha256::digest(s.expose().as_bytes()).into())
        .collect()
}

/// Whether signing in is needed under `cfg`.
pub fn sign_in_required(cfg: &Config) -> bool {
    !credentials(cfg).is_empty()
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// HMAC-SHA256 (RFC 2104) of `msg` under a 32-byte key.
fn hmac(key: &[u8; 32], msg: &[u8]) -> Digest32 {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (n, v) = pair.trim().split_once('=')?;
        (n == name).then_some(v)
    })
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding this lock leaves at worst a session too many: keep going.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session a cookie value names, if it is alive under `cfg`.
    pub fn access(&self, cookie_value: Option<&str>, cfg: &Config) -> Access {
        let Some(id) = cookie_value.filter(|v| v.len() == 64) else {
            return Access::None;
        };
        let creds = credentials(cfg);
        let mut map = self.lock();
        let Some(s) = map.get(id) else {
            return Access::None;
        };
        let alive = s.created.elapsed() < LIFETIME
            && match &s.credential {
                None => creds.is_empty(),
                Some(d) => creds.iter().any(|c| bool::from(c.ct_eq(d))),
            };
        if !alive {
            map.remove(id);
            return Access::None;
        }
        Access::Session(id.to_string())
    }

    /// A new session, signed in with `credential` (`None`: the open console).
    fn create(&self, credential: Option<Digest32>) -> String {
        let mut raw = [0u8; 32];
        OsRng.fill_bytes(&mut raw);
        let id = hex(&raw);
        let mut map = self.lock();
        map.retain(|_, s| s.created.elapsed() < LIFETIME);
        while map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(
            id.clone(),
            Session {
                created: Instant::now(),
                credential,
            },
        );
        id
    }

    /// A session for the open console (no credential configured).
    pub fn open(&self, cfg: &Config) -> Option<String> {
        (!sign_in_required(cfg)).then(|| self.create(None))
    }

    /// Sign in with `secret`: a new session when it is the master key or the admin token.
    pub fn sign_in(&self, secret: &str, cfg: &Config) -> Result<String, SignInError> {
        let minute = self.started.elapsed().as_secs() / 60;
        {
            let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            if f.0 == minute && f.1 >= MAX_FAILURES {
                return Err(SignInError::TooMany);
            }
        }
        let given: Digest32 = Sha256::digest(secret.as_bytes()).into();
        let mut matched = false;
        for c in credentials(cfg) {
            matched |= bool::from(c.ct_eq(&given));
        }
        if !matched || secret.is_empty() {
            let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            if f.0 != minute {
                *f = (minute, 0);
            }
            f.1 += 1;
            return Err(SignInError::Wrong);
        }
        Ok(self.create(Some(given)))
    }

    pub fn sign_out(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The CSRF token of a session, or (`None`) the one that sign-in needs.
    pub fn csrf(&self, session: Option<&str>) -> String {
        let msg = match session {
            Some(id) => format!("session:{id}"),
            None => "sign-in".to_string(),
        };
        hex(&hmac(&self.key, msg.as_bytes()))
    }

    /// Whether `given` is the CSRF token of `session` (or of sign-in), in constant time.
    pub fn csrf_ok(&self, session: Option<&str>, given: Option<&str>) -> bool {
        let Some(given) = given else {
            return false;
        };
        let want = self.csrf(session);
        want.len() == given.len() && bool::from(want.as_bytes().ct_eq(given.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(master: Option<&str>, token: Option<&str>) -> Config {
        let mut text =
            String::from("server:\n  listeners: [{name: main, listen: \"127.0.0.1:4000\"}]\n");
        if let Some(m) = master {
            text.push_str(&format!("  master_key: {m}\n"));
        }
        if let Some(t) = token {
            text.push_str(&format!("admin: {{token: {t}}}\n"));
        }
        struct NoEnv;
        impl crate::config::Env for NoEnv {
            fn var(&self, _: &str) -> Option<String> {
                None
            }
        }
        crate::config::parse(&text, &NoEnv).unwrap()
    }

    #[test]
    fn hmac_matches_a_reference_implementation() {
        // Python: hmac.new(b"\x0b" * 32, b"Hi There", hashlib.sha256).hexdigest()
        let key = [0x0bu8; 32];
        assert_eq!(
            hex(&hmac(&key, b"Hi There")),
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
        );
    }

    #[test]
    fn sign_in_with_either_credential_and_sessions_die_with_it() {
        let s = Sessions::default();
        let c = cfg(Some("sk-master-0123456789"), Some("admin-token-0123456789"));
        assert!(sign_in_required(&c));
        assert!(s.open(&c).is_none());
        assert_eq!(s.sign_in("nope", &c), Err(SignInError::Wrong));
        assert_eq!(s.sign_in("", &c), Err(SignInError::Wrong));
        let a = s.sign_in("sk-master-0123456789", &c).unwrap();
        let b = s.sign_in("admin-token-0123456789", &c).unwrap();
        assert!(matches!(s.access(Some(&a), &c), Access::Session(_)));
        assert!(matches!(s.access(Some(&b), &c), Access::Session(_)));
        assert!(matches!(s.access(Some("x"), &c), Access::None));
        // The master key rotated: its sessions are void, the admin token's live on.
        let rotated = cfg(
            Some("sk-master-rotated-000"),
            Some("admin-token-0123456789"),
        );
        assert!(matches!(s.access(Some(&a), &rotated), Access::None));
        assert!(matches!(s.access(Some(&b), &rotated), Access::Session(_)));
        s.sign_out(&b);
        assert!(matches!(s.access(Some(&b), &rotated), Access::None));
    }

    #[test]
    fn open_console_sessions_end_when_a_credential_appears() {
        let s = Sessions::default();
        let open = cfg(None, None);
        let id = s.open(&open).unwrap();
        assert!(matches!(s.access(Some(&id), &open), Access::Session(_)));
        let locked = cfg(None, Some("admin-token-0123456789"));
        assert!(matches!(s.access(Some(&id), &locked), Access::None));
    }

    #[test]
    fn csrf_tokens_are_per_session() {
        let s = Sessions::default();
        let c = cfg(None, None);
        let a = s.open(&c).unwrap();
        let b = s.open(&c).unwrap();
        let ta = s.csrf(Some(&a));
        assert!(s.csrf_ok(Some(&a), Some(&ta)));
        assert!(!s.csrf_ok(Some(&b), Some(&ta)));
        assert!(!s.csrf_ok(Some(&a), None));
        assert!(!s.csrf_ok(None, Some(&ta)));
        assert!(s.csrf_ok(None, Some(&s.csrf(None))));
    }

    #[test]
    fn guessing_is_limited_and_sessions_bounded() {
        let s = Sessions::default();
        let c = cfg(Some("sk-master-0123456789"), None);
        for _ in 0..MAX_FAILURES {
            assert_eq!(s.sign_in("wrong", &c), Err(SignInError::Wrong));
        }
        assert_eq!(
            s.sign_in("sk-master-0123456789", &c),
            Err(SignInError::TooMany)
        );
        let s = Sessions::default();
        for _ in 0..(MAX_SESSIONS + 5) {
            s.sign_in("sk-master-0123456789", &c).unwrap();
        }
        assert_eq!(s.lock().len(), MAX_SESSIONS);
    }

    #[test]
    fn cookie_parsing() {
        assert_eq!(
            cookie("a=1; llmproxy_console=abc; b=2", COOKIE),
            Some("abc")
        );
        assert_eq!(cookie("xllmproxy_console=abc", COOKIE), None);
    }
}
