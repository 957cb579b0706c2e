//! Users, sessions and API tokens (migration 2), and the setup state they depend on.
//!
//! Secrets never reach this table as such: passwords are argon2id PHC strings, session ids and
//! API tokens are stored as their SHA-256 (they are 256-bit random values, so a fast hash is
//! enough), the setup token's SHA-256 lives in `settings`. The logic (expiry, throttling,
//! rotation) is in [`crate::auth`]; this file only reads and writes rows.

use rusqlite::{OptionalExtension, Row, params};

use super::Store;
use crate::Error;

pub(super) const V2: &str = r#"
CREATE TABLE IF NOT EXISTS users (
    id                   INTEGER PRIMARY KEY,
    username             TEXT NOT NULL UNIQUE COLLATE NOCASE,
    -- argon2id, PHC string format.
    password_hash        TEXT NOT NULL,
    created_at           INTEGER NOT NULL,
    password_changed_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS sessions (
    id            INTEGER PRIMARY KEY,
    -- SHA-256 (hex) of the cookie value; the value itself is never stored.
    token_hash    TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL CHECK (kind IN ('user', 'setup')),
    -- The signed-in user; NULL for a setup-wizard session.
    user_id       INTEGER REFERENCES users(id) ON DELETE CASCADE,
    csrf_token    TEXT NOT NULL,
    -- The setup wizard's answers so far (JSON), for setup sessions.
    data          TEXT,
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    -- Absolute expiry; idle expiry is computed from last_seen_at.
    expires_at    INTEGER NOT NULL,
    CHECK ((kind = 'user') = (user_id IS NOT NULL))
) STRICT;
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user_id);

CREATE TABLE IF NOT EXISTS api_tokens (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    -- SHA-256 (hex) of the token.
    token_hash    TEXT NOT NULL UNIQUE,
    -- The token's first characters, to recognise it in a list.
    prefix        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
) STRICT;
"#;

/// Settings keys owned by the setup flow.
pub const SETTING_SETUP_TOKEN: &str = "setup.token_sha256";
pub const SETTING_SETUP_COMPLETED: &str = "setup.completed_at";

/// A user account (the hash stays inside [`crate::auth`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub username: String,
    pub created_at: i64,
    pub password_changed_at: i64,
}

/// What a session is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A signed-in user.
    User,
    /// A setup wizard that presented the setup token.
    Setup,
}

impl SessionKind {
    fn as_str(self) -> &'static str {
        match self {
            SessionKind::User => "user",
            SessionKind::Setup => "setup",
        }
    }
}

/// A stored session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: i64,
    pub kind: SessionKind,
    pub user: Option<UserRecord>,
    pub csrf_token: String,
    pub data: Option<String>,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
}

impl std::fmt::Debug for SessionRecord {
    // The CSRF token and the wizard's answers (passwords) stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("user", &self.user)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A stored API token (its hash stays here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRecord {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// What completing the setup writes, in one transaction.
#[derive(Clone)]
pub struct SetupCompletion<'a> {
    pub username: &'a str,
    pub password_hash: &'a str,
    /// Settings to write (chat domain, certificate mode, ACME email, Rocket.Chat admin...).
    pub settings: &'a [(&'a str, String)],
}

const USER_COLS: &str = "u.id, u.username, u.created_at, u.password_changed_at";

fn user_row(r: &Row<'_>, base: usize) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: r.get(base)?,
        username: r.get(base + 1)?,
        created_at: r.get(base + 2)?,
        password_changed_at: r.get(base + 3)?,
    })
}

fn session_row(r: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    let kind: String = r.get(1)?;
    let kind = match kind.as_str() {
        "user" => SessionKind::User,
        _ => SessionKind::Setup,
    };
    let user_id: Option<i64> = r.get(8)?;
    let user = match user_id {
        Some(_) => Some(user_row(r, 8)?),
        None => None,
    };
    Ok(SessionRecord {
        id: r.get(0)?,
        kind,
        user,
        csrf_token: r.get(2)?,
        data: r.get(3)?,
        created_at: r.get(4)?,
        last_seen_at: r.get(5)?,
        expires_at: r.get(6)?,
    })
}

impl Store {
    // --- setup ---

    /// Whether the first-run setup has completed.
    pub fn setup_completed(&self) -> Result<bool, Error> {
        Ok(self.setting(SETTING_SETUP_COMPLETED)?.is_some())
    }

    /// Creates the administrator, writes `settings`, marks setup complete, forgets the setup
    /// token and ends every setup session: all or nothing. Fails if setup already completed.
    pub fn complete_setup(&self, c: &SetupCompletion<'_>, now: i64) -> Result<UserRecord, Error> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let done: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM settings WHERE key = ?1)",
            [SETTING_SETUP_COMPLETED],
            |r| r.get(0),
        )?;
        if done {
            return Err(Error::Invalid("setup has already been completed".into()));
        }
        tx.execute(
            "INSERT INTO users (username, password_hash, created_at, password_changed_at)
             VALUES (?1, ?2, ?3, ?3)",
            params![c.username, c.password_hash, now],
        )?;
        let id = tx.last_insert_rowid();
        for (k, v) in c.settings {
            tx.execute(
                "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                params![k, v, now],
            )?;
        }
        tx.execute(
            "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?2)",
            params![SETTING_SETUP_COMPLETED, now],
        )?;
        tx.execute("DELETE FROM settings WHERE key = ?1", [SETTING_SETUP_TOKEN])?;
        tx.execute("DELETE FROM sessions WHERE kind = 'setup'", [])?;
        let user = tx.query_row(
            &format!("SELECT {USER_COLS} FROM users u WHERE u.id = ?1"),
            [id],
            |r| user_row(r, 0),
        )?;
        tx.commit()?;
        Ok(user)
    }

    // --- users ---

    /// A user and their password hash, by case-insensitive username.
    pub fn user_with_hash(&self, username: &str) -> Result<Option<(UserRecord, String)>, Error> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {USER_COLS}, u.password_hash FROM users u WHERE u.username = ?1"),
                [username],
                |r| Ok((user_row(r, 0)?, r.get(4)?)),
            )
            .optional()?)
    }

    pub fn password_hash(&self, user_id: i64) -> Result<Option<String>, Error> {
        Ok(self
            .conn()
            .query_row(
                "SELECT password_hash FROM users WHERE id = ?1",
                [user_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn users(&self) -> Result<Vec<UserRecord>, Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {USER_COLS} FROM users u ORDER BY u.id"))?;
        let rows = stmt.query_map([], |r| user_row(r, 0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Sets a new password hash and ends every session of the user except `keep_session`.
    pub fn set_password(
        &self,
        user_id: i64,
        password_hash: &str,
        keep_session: Option<i64>,
        now: i64,
    ) -> Result<(), Error> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE users SET password_hash = ?2, password_changed_at = ?3 WHERE id = ?1",
            params![user_id, password_hash, now],
        )?;
        tx.execute(
            "DELETE FROM sessions WHERE user_id = ?1 AND id IS NOT ?2",
            params![user_id, keep_session],
        )?;
        tx.commit()?;
        Ok(())
    }

    // --- sessions ---

    /// Stores a new session. `token_hash` is the SHA-256 of the cookie value.
    #[allow(clippy::too_many_arguments)]
    pub fn insert_session(
        &self,
        token_hash: &str,
        kind: SessionKind,
        user_id: Option<i64>,
        csrf_token: &str,
        data: Option<&str>,
        now: i64,
        expires_at: i64,
    ) -> Result<i64, Error> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO sessions (token_hash, kind, user_id, csrf_token, data, created_at,
                 last_seen_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
            params![
                token_hash,
                kind.as_str(),
                user_id,
                csrf_token,
                data,
                now,
                expires_at
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    pub fn session_by_hash(&self, token_hash: &str) -> Result<Option<SessionRecord>, Error> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT s.id, s.kind, s.csrf_token, s.data, s.created_at, s.last_seen_at,
                         s.expires_at, NULL, {USER_COLS}
                     FROM sessions s LEFT JOIN users u ON u.id = s.user_id
                     WHERE s.token_hash = ?1"
                ),
                [token_hash],
                session_row,
            )
            .optional()?)
    }

    pub fn touch_session(&self, id: i64, now: i64) -> Result<(), Error> {
        self.conn().execute(
            "UPDATE sessions SET last_seen_at = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        Ok(())
    }

    pub fn set_session_data(&self, id: i64, data: &str) -> Result<(), Error> {
        self.conn().execute(
            "UPDATE sessions SET data = ?2 WHERE id = ?1",
            params![id, data],
        )?;
        Ok(())
    }

    pub fn delete_session(&self, id: i64) -> Result<(), Error> {
        self.conn()
            .execute("DELETE FROM sessions WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Deletes sessions past their absolute expiry or idle for longer than `idle` seconds.
    pub fn delete_expired_sessions(&self, now: i64, idle: i64) -> Result<usize, Error> {
        Ok(self.conn().execute(
            "DELETE FROM sessions WHERE expires_at <= ?1 OR last_seen_at + ?2 <= ?1",
            params![now, idle],
        )?)
    }

    // --- API tokens ---

    pub fn insert_api_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &str,
        prefix: &str,
        now: i64,
    ) -> Result<ApiTokenRecord, Error> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO api_tokens (user_id, name, token_hash, prefix, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![user_id, name, token_hash, prefix, now],
        )?;
        Ok(ApiTokenRecord {
            id: conn.last_insert_rowid(),
            user_id,
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            created_at: now,
            last_used_at: None,
        })
    }

    pub fn api_tokens(&self, user_id: i64) -> Result<Vec<ApiTokenRecord>, Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, user_id, name, prefix, created_at, last_used_at FROM api_tokens
             WHERE user_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([user_id], |r| {
            Ok(ApiTokenRecord {
                id: r.get(0)?,
                user_id: r.get(1)?,
                name: r.get(2)?,
                prefix: r.get(3)?,
                created_at: r.get(4)?,
                last_used_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes one of the user's tokens. Returns whether it existed.
    pub fn delete_api_token(&self, user_id: i64, id: i64) -> Result<bool, Error> {
        Ok(self.conn().execute(
            "DELETE FROM api_tokens WHERE id = ?1 AND user_id = ?2",
            params![id, user_id],
        )? > 0)
    }

    /// The user a token hash belongs to, marking the token used.
    pub fn use_api_token(&self, token_hash: &str, now: i64) -> Result<Option<UserRecord>, Error> {
        let conn = self.conn();
        let user = conn
            .query_row(
                &format!(
                    "SELECT {USER_COLS} FROM api_tokens t JOIN users u ON u.id = t.user_id
                     WHERE t.token_hash = ?1"
                ),
                [token_hash],
                |r| user_row(r, 0),
            )
            .optional()?;
        if user.is_some() {
            conn.execute(
                "UPDATE api_tokens SET last_used_at = ?2 WHERE token_hash = ?1",
                params![token_hash, now],
            )?;
        }
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_users_sessions_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1).unwrap();
        assert!(!store.setup_completed().unwrap());
        store.set_setting(SETTING_SETUP_TOKEN, "abc", 1).unwrap();
        let setup = store
            .insert_session("h-setup", SessionKind::Setup, None, "c", Some("{}"), 1, 100)
            .unwrap();
        let settings = [("chat.domain", "chat.example.com".to_owned())];
        let user = store
            .complete_setup(
                &SetupCompletion {
                    username: "Admin",
                    password_hash: "$argon2id$x",
                    settings: &settings,
                },
                2,
            )
            .unwrap();
        assert!(store.setup_completed().unwrap());
        assert_eq!(store.setting(SETTING_SETUP_TOKEN).unwrap(), None);
        assert_eq!(
            store.setting("chat.domain").unwrap().as_deref(),
            Some("chat.example.com")
        );
        assert!(
            store.session_by_hash("h-setup").unwrap().is_none(),
            "{setup}"
        );
        // A second completion is refused and changes nothing.
        let again = SetupCompletion {
            username: "other",
            password_hash: "x",
            settings: &[],
        };
        assert!(store.complete_setup(&again, 3).is_err());
        assert_eq!(store.users().unwrap().len(), 1);

        // Case-insensitive usernames.
        let (u, hash) = store.user_with_hash("admin").unwrap().unwrap();
        assert_eq!((u.id, hash.as_str()), (user.id, "$argon2id$x"));

        let s1 = store
            .insert_session("h1", SessionKind::User, Some(user.id), "c1", None, 5, 50)
            .unwrap();
        let s2 = store
            .insert_session("h2", SessionKind::User, Some(user.id), "c2", None, 5, 50)
            .unwrap();
        let rec = store.session_by_hash("h1").unwrap().unwrap();
        assert_eq!(rec.user.as_ref().unwrap().username, "Admin");
        assert_eq!(rec.kind, SessionKind::User);
        store.set_password(user.id, "new", Some(s1), 6).unwrap();
        assert!(store.session_by_hash("h1").unwrap().is_some());
        assert!(store.session_by_hash("h2").unwrap().is_none(), "{s2}");
        assert_eq!(
            store.password_hash(user.id).unwrap().as_deref(),
            Some("new")
        );

        // Idle expiry (idle 10 s: last seen at 5, now 15) removes it.
        assert_eq!(store.delete_expired_sessions(15, 10).unwrap(), 1);

        let t = store
            .insert_api_token(user.id, "ci", "th", "gat_abcd", 7)
            .unwrap();
        assert_eq!(store.api_tokens(user.id).unwrap(), vec![t.clone()]);
        assert_eq!(store.use_api_token("th", 8).unwrap().unwrap().id, user.id);
        assert_eq!(store.api_tokens(user.id).unwrap()[0].last_used_at, Some(8));
        assert!(store.use_api_token("nope", 8).unwrap().is_none());
        assert!(!store.delete_api_token(user.id + 1, t.id).unwrap());
        assert!(store.delete_api_token(user.id, t.id).unwrap());
    }
}
