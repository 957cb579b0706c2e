//! Authentication: the setup token, administrator accounts, sessions, CSRF tokens, API tokens
//! and sign-in throttling. The web UI calls this; it never sees a hash or a SQL row it could
//! misuse.
//!
//! - **Setup token**: made once while setup is pending (reused across restarts while its file
//!   still matches), shown on the console, stored as its SHA-256 only; presenting it opens a
//!   short *setup session* that carries the wizard's answers. Completing setup deletes the hash
//!   and every setup session in the same transaction that creates the administrator.
//! - **Sessions**: a 256-bit random id in the cookie, its SHA-256 in the store; a fresh id at
//!   every sign-in (no fixation), idle and absolute expiry, a per-session CSRF token.
//! - **Throttling**: failed sign-ins per client address and per username (see [`throttle`]);
//!   failed setup tokens per client address.
//! - **API tokens**: `gat_` + 256 random bits, shown once, stored as SHA-256.

pub mod password;
pub mod throttle;
pub mod token;

use std::net::IpAddr;
use std::sync::Arc;

use crate::Error;
use crate::clock::Clock;
use crate::store::{
    ApiTokenRecord, EventLevel, SETTING_SETUP_TOKEN, SessionKind, SessionRecord, Store, UserRecord,
};
pub use throttle::{Denied, ThrottlePolicy};
use throttle::{Throttle, ip_key};
pub use token::Secret;

/// Authentication failures, with messages safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("wrong username or password")]
    BadCredentials,
    #[error("{}", throttled_message(*retry_after, *locked))]
    Throttled { retry_after: i64, locked: bool },
    #[error(
        "this setup token is not valid: copy it again from the console or from DATA/setup-token"
    )]
    BadSetupToken,
    #[error("setup is already complete: sign in instead")]
    SetupDone,
    #[error("setup is not complete yet")]
    SetupPending,
    #[error("you are not signed in, or your session expired: sign in again")]
    NotSignedIn,
    #[error("the current password is wrong")]
    WrongCurrentPassword,
    #[error(
        "the form expired or did not come from this page (CSRF check failed): reload the page and try again"
    )]
    Csrf,
}

fn throttled_message(retry_after: i64, locked: bool) -> String {
    if locked {
        format!(
            "too many failed attempts: locked for {} more minute(s)",
            (retry_after + 59) / 60
        )
    } else {
        format!("too many failed attempts: wait {retry_after} second(s) and try again")
    }
}

/// Session lifetimes, in seconds.
#[derive(Debug, Clone)]
pub struct SessionPolicy {
    /// A session unused for this long ends.
    pub idle_secs: i64,
    /// A session ends this long after sign-in, used or not.
    pub absolute_secs: i64,
    /// Lifetime of a setup-wizard session.
    pub setup_secs: i64,
}

impl Default for SessionPolicy {
    fn default() -> SessionPolicy {
        SessionPolicy {
            idle_secs: 3600,
            absolute_secs: 12 * 3600,
            setup_secs: 2 * 3600,
        }
    }
}

/// A session just created: the cookie value is in `token` (shown to nobody else).
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token: Secret,
    pub session: SessionRecord,
}

impl NewSession {
    /// Seconds until the absolute expiry (the cookie's Max-Age).
    pub fn max_age(&self, now: i64) -> i64 {
        (self.session.expires_at - now).max(0)
    }
}

/// How often `last_seen_at` is written for a busy session.
const TOUCH_EVERY: i64 = 30;

/// The authentication service.
#[derive(Debug)]
pub struct Auth {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    policy: SessionPolicy,
    logins: Throttle,
    setup_tries: Throttle,
}

impl Auth {
    pub fn new(
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        policy: SessionPolicy,
        throttle: ThrottlePolicy,
    ) -> Auth {
        Auth {
            store,
            clock,
            policy,
            logins: Throttle::new(throttle.clone()),
            setup_tries: Throttle::new(throttle),
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn policy(&self) -> &SessionPolicy {
        &self.policy
    }

    fn event(&self, level: EventLevel, kind: &str, subject: Option<&str>, message: &str) {
        match level {
            EventLevel::Info => tracing::info!(kind, subject, "{message}"),
            EventLevel::Warning => tracing::warn!(kind, subject, "{message}"),
            EventLevel::Error => tracing::error!(kind, subject, "{message}"),
        }
        if let Err(e) = self
            .store
            .add_event(level, kind, subject, message, self.clock.now())
        {
            tracing::error!(error = %e, "cannot record an event");
        }
    }

    // --- setup token ---

    /// Whether the first-run setup is still pending.
    pub fn setup_pending(&self) -> Result<bool, Error> {
        Ok(!self.store.setup_completed()?)
    }

    /// While setup is pending: the setup token, reusing `previous` (the token file left by an
    /// earlier start) when its hash is the stored one, else a new one whose hash replaces the
    /// stored one. `None` once setup is complete.
    pub fn ensure_setup_token(&self, previous: Option<&str>) -> Result<Option<Secret>, Error> {
        if !self.setup_pending()? {
            return Ok(None);
        }
        let stored = self.store.setting(SETTING_SETUP_TOKEN)?;
        if let (Some(prev), Some(stored)) = (previous, stored.as_deref()) {
            let prev = prev.trim();
            if token::constant_time_eq(
                &token::sha256_hex(&token::normalize_setup_token(prev)),
                stored,
            ) {
                return Ok(Some(Secret::new(prev)));
            }
        }
        let t = token::setup_token();
        self.store.set_setting(
            SETTING_SETUP_TOKEN,
            &token::sha256_hex(&token::normalize_setup_token(&t)),
            self.clock.now(),
        )?;
        self.event(
            EventLevel::Info,
            "setup.token",
            None,
            "a new setup token was made (shown on the console and in DATA/setup-token)",
        );
        Ok(Some(Secret::new(t)))
    }

    /// Checks a presented setup token (throttled per client address).
    pub fn check_setup_token(&self, presented: &str, ip: IpAddr) -> Result<(), Error> {
        if !self.setup_pending()? {
            return Err(AuthError::SetupDone.into());
        }
        let now = self.clock.now();
        let key = ip_key(ip);
        let keys = [key.as_str()];
        self.setup_tries
            .check(&keys, now)
            .map_err(|d| AuthError::Throttled {
                retry_after: d.retry_after,
                locked: d.locked,
            })?;
        let stored = self.store.setting(SETTING_SETUP_TOKEN)?;
        let ok = stored.is_some_and(|s| {
            token::constant_time_eq(
                &token::sha256_hex(&token::normalize_setup_token(presented)),
                &s,
            )
        });
        if !ok {
            self.setup_tries.failure(&keys, now);
            self.event(
                EventLevel::Warning,
                "setup.token_refused",
                Some(&ip.to_string()),
                "a wrong setup token was presented",
            );
            return Err(AuthError::BadSetupToken.into());
        }
        self.setup_tries.success(&keys);
        Ok(())
    }

    /// Checks the setup token and opens a setup session for the wizard.
    pub fn begin_setup(&self, presented: &str, ip: IpAddr) -> Result<NewSession, Error> {
        self.check_setup_token(presented, ip)?;
        self.create_session(SessionKind::Setup, None, Some("{}"))
    }

    // --- sessions ---

    fn create_session(
        &self,
        kind: SessionKind,
        user: Option<&UserRecord>,
        data: Option<&str>,
    ) -> Result<NewSession, Error> {
        let now = self.clock.now();
        let t = token::session_token();
        let csrf = token::session_token();
        let life = match kind {
            SessionKind::User => self.policy.absolute_secs,
            SessionKind::Setup => self.policy.setup_secs,
        };
        let id = self.store.insert_session(
            &token::sha256_hex(&t),
            kind,
            user.map(|u| u.id),
            &csrf,
            data,
            now,
            now + life,
        )?;
        Ok(NewSession {
            token: Secret::new(t),
            session: SessionRecord {
                id,
                kind,
                user: user.cloned(),
                csrf_token: csrf,
                data: data.map(str::to_owned),
                created_at: now,
                last_seen_at: now,
                expires_at: now + life,
            },
        })
    }

    /// A new session for `user` (after sign-in or setup).
    pub fn session_for(&self, user: &UserRecord) -> Result<NewSession, Error> {
        self.create_session(SessionKind::User, Some(user), None)
    }

    /// The live session a cookie value names, if any. Expired sessions are deleted.
    pub fn session(&self, cookie: &str) -> Result<Option<SessionRecord>, Error> {
        if cookie.is_empty() || cookie.len() > 128 {
            return Ok(None);
        }
        let Some(s) = self.store.session_by_hash(&token::sha256_hex(cookie))? else {
            return Ok(None);
        };
        let now = self.clock.now();
        let idle = match s.kind {
            SessionKind::User => self.policy.idle_secs,
            SessionKind::Setup => self.policy.setup_secs,
        };
        if now >= s.expires_at || now >= s.last_seen_at + idle {
            self.store.delete_session(s.id)?;
            return Ok(None);
        }
        if s.kind == SessionKind::Setup && !self.setup_pending()? {
            self.store.delete_session(s.id)?;
            return Ok(None);
        }
        if now - s.last_seen_at >= TOUCH_EVERY {
            self.store.touch_session(s.id, now)?;
        }
        Ok(Some(s))
    }

    /// Whether `presented` is the session's CSRF token.
    pub fn csrf_ok(&self, session: &SessionRecord, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| token::constant_time_eq(p, &session.csrf_token))
    }

    /// Like [`Auth::csrf_ok`], as an error.
    pub fn require_csrf(
        &self,
        session: &SessionRecord,
        presented: Option<&str>,
    ) -> Result<(), Error> {
        if self.csrf_ok(session, presented) {
            Ok(())
        } else {
            Err(AuthError::Csrf.into())
        }
    }

    /// Saves the wizard's answers in a setup session.
    pub fn set_session_data(&self, session: &SessionRecord, data: &str) -> Result<(), Error> {
        self.store.set_session_data(session.id, data)
    }

    /// Signs in: throttled per client address and username; a new session on success.
    pub fn sign_in(&self, username: &str, password: &str, ip: IpAddr) -> Result<NewSession, Error> {
        if self.setup_pending()? {
            return Err(AuthError::SetupPending.into());
        }
        let now = self.clock.now();
        let ipk = ip_key(ip);
        let name = username.trim();
        let userk = format!("user:{}", name.to_lowercase());
        let keys = [ipk.as_str(), userk.as_str()];
        if let Err(d) = self.logins.check(&keys, now) {
            self.event(
                EventLevel::Warning,
                "auth.throttled",
                Some(name),
                &format!(
                    "sign-in refused by the throttle for {ip} (retry in {} s)",
                    d.retry_after
                ),
            );
            return Err(AuthError::Throttled {
                retry_after: d.retry_after,
                locked: d.locked,
            }
            .into());
        }
        let found = if name.is_empty() || name.len() > 128 {
            None
        } else {
            self.store.user_with_hash(name)?
        };
        let ok = match &found {
            Some((_, hash)) => password::verify(password, hash),
            None => {
                // Same work as for a real user: no username oracle by timing.
                let _ = password::verify(password, password::dummy_hash());
                false
            }
        };
        match found {
            Some((user, _)) if ok => {
                self.logins.success(&keys);
                let s = self.session_for(&user)?;
                self.event(
                    EventLevel::Info,
                    "auth.sign_in",
                    Some(&user.username),
                    &format!("signed in from {ip}"),
                );
                Ok(s)
            }
            _ => {
                self.logins.failure(&keys, now);
                self.event(
                    EventLevel::Warning,
                    "auth.sign_in_failed",
                    Some(name),
                    &format!("failed sign-in from {ip}"),
                );
                Err(AuthError::BadCredentials.into())
            }
        }
    }

    /// Ends a session.
    pub fn sign_out(&self, session: &SessionRecord) -> Result<(), Error> {
        self.store.delete_session(session.id)?;
        if let Some(u) = &session.user {
            self.event(
                EventLevel::Info,
                "auth.sign_out",
                Some(&u.username),
                "signed out",
            );
        }
        Ok(())
    }

    /// Changes a user's password after checking the current one; every other session of the
    /// user ends. Returns a fresh session replacing `session` (rotated id).
    pub fn change_password(
        &self,
        session: &SessionRecord,
        current: &str,
        new: &str,
        ip: IpAddr,
    ) -> Result<NewSession, Error> {
        let user = session.user.as_ref().ok_or(AuthError::NotSignedIn)?;
        let now = self.clock.now();
        let userk = format!("user:{}", user.username.to_lowercase());
        let ipk = ip_key(ip);
        let keys = [ipk.as_str(), userk.as_str()];
        self.logins
            .check(&keys, now)
            .map_err(|d| AuthError::Throttled {
                retry_after: d.retry_after,
                locked: d.locked,
            })?;
        let hash = self
            .store
            .password_hash(user.id)?
            .ok_or(AuthError::NotSignedIn)?;
        if !password::verify(current, &hash) {
            self.logins.failure(&keys, now);
            return Err(AuthError::WrongCurrentPassword.into());
        }
        if let Some(why) = password::weakness(new, Some(&user.username)) {
            return Err(Error::Field {
                field: "new_password",
                message: why,
            });
        }
        let new_hash = password::hash(new)?;
        let fresh = self.session_for(user)?;
        self.store
            .set_password(user.id, &new_hash, Some(fresh.session.id), now)?;
        self.event(
            EventLevel::Info,
            "auth.password_changed",
            Some(&user.username),
            "password changed; other sessions ended",
        );
        Ok(fresh)
    }

    /// Deletes expired sessions (run now and then).
    pub fn sweep(&self) -> Result<usize, Error> {
        self.store
            .delete_expired_sessions(self.clock.now(), self.policy.idle_secs)
    }

    // --- API tokens ---

    /// Creates an API token for `user`; the token is returned once and never stored.
    pub fn create_api_token(
        &self,
        user: &UserRecord,
        name: &str,
    ) -> Result<(Secret, ApiTokenRecord), Error> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(Error::Field {
                field: "name",
                message: "give the token a name of 1 to 64 characters".into(),
            });
        }
        let t = token::api_token();
        let prefix: String = t.chars().take(token::API_TOKEN_PREFIX.len() + 6).collect();
        let rec = self.store.insert_api_token(
            user.id,
            name,
            &token::sha256_hex(&t),
            &prefix,
            self.clock.now(),
        )?;
        self.event(
            EventLevel::Info,
            "auth.api_token_created",
            Some(&user.username),
            &format!("API token `{name}` ({prefix}...) created"),
        );
        Ok((Secret::new(t), rec))
    }

    pub fn api_tokens(&self, user: &UserRecord) -> Result<Vec<ApiTokenRecord>, Error> {
        self.store.api_tokens(user.id)
    }

    pub fn revoke_api_token(&self, user: &UserRecord, id: i64) -> Result<bool, Error> {
        let gone = self.store.delete_api_token(user.id, id)?;
        if gone {
            self.event(
                EventLevel::Info,
                "auth.api_token_revoked",
                Some(&user.username),
                &format!("API token #{id} revoked"),
            );
        }
        Ok(gone)
    }

    /// The user a bearer token belongs to.
    pub fn bearer(&self, presented: &str) -> Result<Option<UserRecord>, Error> {
        if !presented.starts_with(token::API_TOKEN_PREFIX) || presented.len() > 128 {
            return Ok(None);
        }
        self.store
            .use_api_token(&token::sha256_hex(presented), self.clock.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::OffsetClock;
    use crate::store::SetupCompletion;
    use std::time::Duration;

    fn auth() -> (tempfile::TempDir, Arc<Store>, Arc<OffsetClock>, Auth) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(OffsetClock::new());
        let store = Arc::new(Store::open(dir.path(), clock.now()).unwrap());
        let a = Auth::new(
            store.clone(),
            clock.clone(),
            SessionPolicy::default(),
            ThrottlePolicy::default(),
        );
        (dir, store, clock, a)
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    fn complete(store: &Store, clock: &OffsetClock) -> UserRecord {
        let hash = password::hash("violet-otter-carries-lamps").unwrap();
        store
            .complete_setup(
                &SetupCompletion {
                    username: "admin",
                    password_hash: &hash,
                    settings: &[],
                },
                clock.now(),
            )
            .unwrap()
    }

    #[test]
    fn setup_token_lifecycle() {
        let (_d, store, clock, a) = auth();
        let t = a.ensure_setup_token(None).unwrap().unwrap();
        // Reused while the file still holds it; replaced when the file is wrong.
        assert_eq!(
            a.ensure_setup_token(Some(t.expose())).unwrap(),
            Some(t.clone())
        );
        let wrong = a.begin_setup("aaaaa-bbbbb-ccccc-ddddd", IP).unwrap_err();
        assert!(
            matches!(wrong, Error::Auth(AuthError::BadSetupToken)),
            "{wrong}"
        );
        // Typed with capitals and spaces instead of dashes is fine.
        let typed = t.expose().to_uppercase().replace('-', " ");
        let s = a.begin_setup(&typed, IP).unwrap();
        assert_eq!(s.session.kind, SessionKind::Setup);
        assert!(a.session(s.token.expose()).unwrap().is_some());
        complete(&store, &clock);
        // Completed: the token and the setup session are dead.
        assert!(matches!(
            a.begin_setup(t.expose(), IP).unwrap_err(),
            Error::Auth(AuthError::SetupDone)
        ));
        assert!(a.session(s.token.expose()).unwrap().is_none());
        assert_eq!(a.ensure_setup_token(Some(t.expose())).unwrap(), None);
    }

    #[test]
    fn setup_token_guessing_is_throttled() {
        let (_d, _store, _clock, a) = auth();
        let t = a.ensure_setup_token(None).unwrap().unwrap();
        for _ in 0..4 {
            let _ = a.check_setup_token("nope", IP);
        }
        // Even the right token waits now.
        let e = a.check_setup_token(t.expose(), IP).unwrap_err();
        assert!(matches!(e, Error::Auth(AuthError::Throttled { .. })), "{e}");
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        a.check_setup_token(t.expose(), other).unwrap();
    }

    #[test]
    fn sign_in_sessions_expiry_and_throttle() {
        let (_d, store, clock, a) = auth();
        let user = complete(&store, &clock);
        let s1 = a
            .sign_in("ADMIN", "violet-otter-carries-lamps", IP)
            .unwrap();
        let s2 = a
            .sign_in("admin", "violet-otter-carries-lamps", IP)
            .unwrap();
        // A new id at every sign-in.
        assert_ne!(s1.token, s2.token);
        assert_ne!(s1.session.csrf_token, s2.session.csrf_token);
        let live = a.session(s1.token.expose()).unwrap().unwrap();
        assert_eq!(live.user.as_ref().unwrap().id, user.id);
        assert!(a.csrf_ok(&live, Some(&s1.session.csrf_token)));
        assert!(!a.csrf_ok(&live, Some(&s2.session.csrf_token)));
        assert!(!a.csrf_ok(&live, None));

        // Idle expiry.
        clock.advance(Duration::from_secs(3601));
        assert!(a.session(s1.token.expose()).unwrap().is_none());
        // Absolute expiry, even when used.
        let s3 = a
            .sign_in("admin", "violet-otter-carries-lamps", IP)
            .unwrap();
        for _ in 0..15 {
            clock.advance(Duration::from_secs(3000));
            let _ = a.session(s3.token.expose()).unwrap();
        }
        assert!(a.session(s3.token.expose()).unwrap().is_none());

        // Throttling: three free failures, then the right password must wait too.
        for _ in 0..4 {
            assert!(matches!(
                a.sign_in("admin", "wrong-password-here", IP).unwrap_err(),
                Error::Auth(AuthError::BadCredentials)
            ));
        }
        let e = a
            .sign_in("admin", "violet-otter-carries-lamps", IP)
            .unwrap_err();
        assert!(matches!(e, Error::Auth(AuthError::Throttled { .. })), "{e}");
        // Per username too: another address is refused for the same account.
        let e = a
            .sign_in(
                "admin",
                "violet-otter-carries-lamps",
                "198.51.100.7".parse().unwrap(),
            )
            .unwrap_err();
        assert!(matches!(e, Error::Auth(AuthError::Throttled { .. })), "{e}");
        // Unknown users fail the same way.
        assert!(matches!(
            a.sign_in(
                "nobody",
                "violet-otter-carries-lamps",
                "198.51.100.8".parse().unwrap()
            )
            .unwrap_err(),
            Error::Auth(AuthError::BadCredentials)
        ));
    }

    #[test]
    fn password_change_and_api_tokens() {
        let (_d, store, clock, a) = auth();
        let user = complete(&store, &clock);
        let s1 = a
            .sign_in("admin", "violet-otter-carries-lamps", IP)
            .unwrap();
        let s2 = a
            .sign_in("admin", "violet-otter-carries-lamps", IP)
            .unwrap();
        let weak = a
            .change_password(&s1.session, "violet-otter-carries-lamps", "password123", IP)
            .unwrap_err();
        assert!(
            matches!(
                weak,
                Error::Field {
                    field: "new_password",
                    ..
                }
            ),
            "{weak}"
        );
        assert!(matches!(
            a.change_password(&s1.session, "nope", "granite-heron-sings-softly", IP)
                .unwrap_err(),
            Error::Auth(AuthError::WrongCurrentPassword)
        ));
        let fresh = a
            .change_password(
                &s1.session,
                "violet-otter-carries-lamps",
                "granite-heron-sings-softly",
                IP,
            )
            .unwrap();
        assert!(a.session(fresh.token.expose()).unwrap().is_some());
        assert!(a.session(s1.token.expose()).unwrap().is_none());
        assert!(a.session(s2.token.expose()).unwrap().is_none());
        a.sign_in("admin", "granite-heron-sings-softly", IP)
            .unwrap();

        let (t, rec) = a.create_api_token(&user, "ci").unwrap();
        assert_eq!(a.bearer(t.expose()).unwrap().unwrap().id, user.id);
        assert!(a.bearer("gat_wrong").unwrap().is_none());
        assert!(a.bearer("").unwrap().is_none());
        assert!(a.create_api_token(&user, " ").is_err());
        assert!(a.revoke_api_token(&user, rec.id).unwrap());
        assert!(a.bearer(t.expose()).unwrap().is_none());
    }
}
