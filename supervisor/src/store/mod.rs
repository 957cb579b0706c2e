//! The appliance's SQLite database: one file, `gantry.db`, in the data directory.
//!
//! This module is the only place with SQL. Everything else calls the typed methods of [`Store`].
//! The file is created with mode 0600 (it holds private keys), runs in WAL mode with
//! `synchronous=FULL` so a returned write survives a power cut, with foreign keys enforced and a
//! busy timeout for the rare concurrent writer (a CLI command next to the running service).
//! Times are Unix seconds, given by the caller (from the [`crate::clock::Clock`]).

mod auth;
mod migrations;
mod routes;

pub use auth::{
    ApiTokenRecord, SETTING_SETUP_COMPLETED, SETTING_SETUP_TOKEN, SessionKind, SessionRecord,
    SetupCompletion, UserRecord,
};
pub use routes::ExternalRouteRecord;

use std::fmt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::Error;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "gantry.db";

/// Where a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertSource {
    /// Generated at first start so HTTPS works before any domain exists.
    SelfSigned,
    /// Issued by the ACME CA.
    Acme,
    /// Imported by the operator.
    Uploaded,
}

/// An ACME challenge type Gantry can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    Http01,
    TlsAlpn01,
}

/// The result of one ACME attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Started and not finished (or interrupted by a crash: see [`Store::fail_interrupted_attempts`]).
    Running,
    Issued,
    Failed,
    /// Refused locally by the per-domain order throttle; nothing was sent to the CA.
    Throttled,
}

/// Severity of an [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventLevel {
    Info,
    Warning,
    Error,
}

macro_rules! text_enum {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $s),* }
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok(<$t>::$v),)*
                    other => Err(format!("unknown {} `{other}`", stringify!($t))),
                }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(CertSource { SelfSigned => "self-signed", Acme => "acme", Uploaded => "uploaded" });
text_enum!(ChallengeKind { Http01 => "http-01", TlsAlpn01 => "tls-alpn-01" });
text_enum!(AttemptOutcome {
    Running => "running",
    Issued => "issued",
    Failed => "failed",
    Throttled => "throttled",
});
text_enum!(EventLevel { Info => "info", Warning => "warning", Error => "error" });

/// A domain the operator wants a certificate for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub id: i64,
    /// Lowercase DNS name.
    pub name: String,
    /// Further names on the same certificate.
    pub extra_names: Vec<String>,
    pub preferred_challenge: Option<ChallengeKind>,
    pub created_at: i64,
}

impl Domain {
    /// Every name the certificate must cover, the domain first.
    pub fn all_names(&self) -> Vec<String> {
        let mut v = vec![self.name.clone()];
        for n in &self.extra_names {
            if !v.contains(n) {
                v.push(n.clone());
            }
        }
        v
    }
}

/// A stored certificate with its key.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    pub id: i64,
    pub domain_id: Option<i64>,
    /// The domain's name (None for the self-signed bootstrap certificate).
    pub domain: Option<String>,
    pub source: CertSource,
    pub names: Vec<String>,
    pub chain_pem: String,
    pub key_pem: String,
    pub issuer: String,
    /// Hex serial number.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    pub created_at: i64,
    /// ACME Renewal Information window (start, end), when the CA offers it.
    pub ari_window: Option<(i64, i64)>,
    pub ari_next_check: Option<i64>,
}

impl fmt::Debug for CertificateRecord {
    // The key stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateRecord")
            .field("id", &self.id)
            .field("domain", &self.domain)
            .field("source", &self.source)
            .field("names", &self.names)
            .field("issuer", &self.issuer)
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A certificate to store.
#[derive(Debug, Clone)]
pub struct NewCertificate<'a> {
    pub domain_id: Option<i64>,
    pub source: CertSource,
    pub names: &'a [String],
    pub chain_pem: &'a str,
    pub key_pem: &'a str,
    pub issuer: &'a str,
    pub serial: &'a str,
    pub not_before: i64,
    pub not_after: i64,
}

/// A stored ACME account.
#[derive(Clone)]
pub struct AcmeAccountRecord {
    pub directory_url: String,
    pub email: Option<String>,
    /// instant-acme's `AccountCredentials` as JSON.
    pub credentials_json: String,
    pub created_at: i64,
}

impl fmt::Debug for AcmeAccountRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeAccountRecord")
            .field("directory_url", &self.directory_url)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// One ACME attempt for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub id: i64,
    pub domain_id: i64,
    pub directory_url: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub challenge: Option<ChallengeKind>,
    pub order_created: bool,
    pub outcome: AttemptOutcome,
    pub error: Option<String>,
    pub certificate_id: Option<i64>,
    pub retry_after: Option<i64>,
}

/// An entry of the events log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: i64,
    pub at: i64,
    pub level: EventLevel,
    pub kind: String,
    pub subject: Option<String>,
    pub message: String,
}

/// The database. Cheap to share behind an `Arc`; every method is a short synchronous transaction.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn parse_col<T: FromStr<Err = String>>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let s: String = row.get(idx)?;
    s.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, e.into())
    })
}

fn parse_opt_col<T: FromStr<Err = String>>(
    row: &Row<'_>,
    idx: usize,
) -> rusqlite::Result<Option<T>> {
    let s: Option<String> = row.get(idx)?;
    s.map(|s| {
        s.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, e.into())
        })
    })
    .transpose()
}

fn json_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<Vec<String>> {
    let s: String = row.get(idx)?;
    serde_json::from_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, e.into())
    })
}

fn to_json(v: &[String]) -> String {
    // Serialising a slice of strings cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

const DOMAIN_COLS: &str = "id, name, extra_names, preferred_challenge, created_at";

fn domain_row(r: &Row<'_>) -> rusqlite::Result<Domain> {
    Ok(Domain {
        id: r.get(0)?,
        name: r.get(1)?,
        extra_names: json_col(r, 2)?,
        preferred_challenge: parse_opt_col(r, 3)?,
        created_at: r.get(4)?,
    })
}

const CERT_COLS: &str = "c.id, c.domain_id, d.name, c.source, c.names, c.chain_pem, c.key_pem, \
     c.issuer, c.serial, c.not_before, c.not_after, c.created_at, c.ari_window_start, \
     c.ari_window_end, c.ari_next_check";

fn cert_row(r: &Row<'_>) -> rusqlite::Result<CertificateRecord> {
    let start: Option<i64> = r.get(12)?;
    let end: Option<i64> = r.get(13)?;
    Ok(CertificateRecord {
        id: r.get(0)?,
        domain_id: r.get(1)?,
        domain: r.get(2)?,
        source: parse_col(r, 3)?,
        names: json_col(r, 4)?,
        chain_pem: r.get(5)?,
        key_pem: r.get(6)?,
        issuer: r.get(7)?,
        serial: r.get(8)?,
        not_before: r.get(9)?,
        not_after: r.get(10)?,
        created_at: r.get(11)?,
        ari_window: start.zip(end),
        ari_next_check: r.get(14)?,
    })
}

const ATTEMPT_COLS: &str = "id, domain_id, directory_url, started_at, finished_at, challenge, \
     order_created, outcome, error, certificate_id, retry_after";

fn attempt_row(r: &Row<'_>) -> rusqlite::Result<AttemptRecord> {
    Ok(AttemptRecord {
        id: r.get(0)?,
        domain_id: r.get(1)?,
        directory_url: r.get(2)?,
        started_at: r.get(3)?,
        finished_at: r.get(4)?,
        challenge: parse_opt_col(r, 5)?,
        order_created: r.get(6)?,
        outcome: parse_col(r, 7)?,
        error: r.get(8)?,
        certificate_id: r.get(9)?,
        retry_after: r.get(10)?,
    })
}

impl Store {
    /// Opens (creating if needed) `gantry.db` in `data_dir` and applies pending migrations.
    pub fn open(data_dir: &Path, now: i64) -> Result<Store, Error> {
        let io = |what: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io {
                what,
                path: path.clone(),
                source,
            }
        };
        if !data_dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data_dir)
                .map_err(io("cannot create the data directory", data_dir))?;
        }
        let path = data_dir.join(DB_FILE);
        // Create the file ourselves so it never exists with a wider mode, then enforce 0600 on
        // an existing one too. SQLite gives the -wal and -shm files the database's mode.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io("cannot create the database", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(io("cannot set the mode of the database", &path))?;

        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Invalid(format!(
                "{}: SQLite refused WAL mode (got `{mode}`)",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        let ran = migrations::migrate(&mut conn, now)?;
        if ran > 0 {
            tracing::info!(path = %path.display(), migrations = ran, "database schema updated");
        }
        Ok(Store {
            conn: Mutex::new(conn),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: SQLite rolls back any
        // open transaction when the Transaction guard drops.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The version of the newest applied migration.
    pub fn schema_version(&self) -> Result<i64, Error> {
        Ok(self.conn().query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )?)
    }

    // --- settings ---

    pub fn setting(&self, key: &str) -> Result<Option<String>, Error> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_setting(&self, key: &str, value: &str, now: i64) -> Result<(), Error> {
        self.conn().execute(
            "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![key, value, now],
        )?;
        Ok(())
    }

    // --- domains ---

    /// Adds a domain, or updates its extra names. Names must already be validated and lowercase.
    pub fn upsert_domain(
        &self,
        name: &str,
        extra_names: &[String],
        now: i64,
    ) -> Result<Domain, Error> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO domains (name, extra_names, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET extra_names = excluded.extra_names",
            params![name, to_json(extra_names), now],
        )?;
        Ok(conn.query_row(
            &format!("SELECT {DOMAIN_COLS} FROM domains WHERE name = ?1"),
            [name],
            domain_row,
        )?)
    }

    pub fn domain(&self, name: &str) -> Result<Option<Domain>, Error> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {DOMAIN_COLS} FROM domains WHERE name = ?1"),
                [name],
                domain_row,
            )
            .optional()?)
    }

    pub fn domains(&self) -> Result<Vec<Domain>, Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {DOMAIN_COLS} FROM domains ORDER BY name"))?;
        let rows = stmt.query_map([], domain_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes a domain with its certificates and attempts. Returns whether it existed.
    pub fn remove_domain(&self, name: &str) -> Result<bool, Error> {
        Ok(self
            .conn()
            .execute("DELETE FROM domains WHERE name = ?1", [name])?
            > 0)
    }

    pub fn set_preferred_challenge(
        &self,
        domain_id: i64,
        challenge: ChallengeKind,
    ) -> Result<(), Error> {
        self.conn().execute(
            "UPDATE domains SET preferred_challenge = ?2 WHERE id = ?1",
            params![domain_id, challenge.as_str()],
        )?;
        Ok(())
    }

    // --- certificates ---

    /// Stores a certificate as the current one for its domain (or as the current self-signed one),
    /// marking the previous current one replaced, in one committed transaction.
    pub fn insert_certificate(
        &self,
        c: &NewCertificate<'_>,
        now: i64,
    ) -> Result<CertificateRecord, Error> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        match c.domain_id {
            Some(d) => tx.execute(
                "UPDATE certificates SET replaced_at = ?2 WHERE domain_id = ?1 AND replaced_at IS NULL",
                params![d, now],
            )?,
            None => tx.execute(
                "UPDATE certificates SET replaced_at = ?2
                 WHERE domain_id IS NULL AND source = ?1 AND replaced_at IS NULL",
                params![c.source.as_str(), now],
            )?,
        };
        tx.execute(
            "INSERT INTO certificates (domain_id, source, names, chain_pem, key_pem, issuer, serial,
                 not_before, not_after, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                c.domain_id,
                c.source.as_str(),
                to_json(c.names),
                c.chain_pem,
                c.key_pem,
                c.issuer,
                c.serial,
                c.not_before,
                c.not_after,
                now
            ],
        )?;
        let id = tx.last_insert_rowid();
        let rec = tx.query_row(
            &format!(
                "SELECT {CERT_COLS} FROM certificates c LEFT JOIN domains d ON d.id = c.domain_id
                 WHERE c.id = ?1"
            ),
            [id],
            cert_row,
        )?;
        tx.commit()?;
        Ok(rec)
    }

    /// Every current certificate (one per domain, plus the self-signed one), newest first.
    pub fn current_certificates(&self) -> Result<Vec<CertificateRecord>, Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {CERT_COLS} FROM certificates c LEFT JOIN domains d ON d.id = c.domain_id
             WHERE c.replaced_at IS NULL ORDER BY c.created_at DESC, c.id DESC"
        ))?;
        let rows = stmt.query_map([], cert_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn current_certificate(&self, domain_id: i64) -> Result<Option<CertificateRecord>, Error> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {CERT_COLS} FROM certificates c LEFT JOIN domains d ON d.id = c.domain_id
                     WHERE c.domain_id = ?1 AND c.replaced_at IS NULL ORDER BY c.id DESC LIMIT 1"
                ),
                [domain_id],
                cert_row,
            )
            .optional()?)
    }

    pub fn current_self_signed(&self) -> Result<Option<CertificateRecord>, Error> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {CERT_COLS} FROM certificates c LEFT JOIN domains d ON d.id = c.domain_id
                     WHERE c.domain_id IS NULL AND c.source = 'self-signed' AND c.replaced_at IS NULL
                     ORDER BY c.id DESC LIMIT 1"
                ),
                [],
                cert_row,
            )
            .optional()?)
    }

    /// How many certificates were ever stored for a domain (history included).
    pub fn certificate_count(&self, domain_id: i64) -> Result<i64, Error> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM certificates WHERE domain_id = ?1",
            [domain_id],
            |r| r.get(0),
        )?)
    }

    /// Records the CA's renewal window (or its absence) and when to ask again.
    pub fn set_ari(
        &self,
        certificate_id: i64,
        window: Option<(i64, i64)>,
        next_check: i64,
    ) -> Result<(), Error> {
        self.conn().execute(
            "UPDATE certificates SET ari_window_start = ?2, ari_window_end = ?3, ari_next_check = ?4
             WHERE id = ?1",
            params![
                certificate_id,
                window.map(|w| w.0),
                window.map(|w| w.1),
                next_check
            ],
        )?;
        Ok(())
    }

    // --- ACME accounts ---

    pub fn acme_account(&self, directory_url: &str) -> Result<Option<AcmeAccountRecord>, Error> {
        Ok(self
            .conn()
            .query_row(
                "SELECT directory_url, email, credentials, created_at FROM acme_accounts
                 WHERE directory_url = ?1",
                [directory_url],
                |r| {
                    Ok(AcmeAccountRecord {
                        directory_url: r.get(0)?,
                        email: r.get(1)?,
                        credentials_json: r.get(2)?,
                        created_at: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn save_acme_account(&self, rec: &AcmeAccountRecord) -> Result<(), Error> {
        self.conn().execute(
            "INSERT INTO acme_accounts (directory_url, email, credentials, created_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(directory_url) DO UPDATE SET email = excluded.email,
                 credentials = excluded.credentials, created_at = excluded.created_at",
            params![
                rec.directory_url,
                rec.email,
                rec.credentials_json,
                rec.created_at
            ],
        )?;
        Ok(())
    }

    // --- ACME attempts ---

    /// Records the start of an attempt that is about to create an order at the CA. Committed
    /// before the order is sent, so that it counts for the throttle even if the process dies.
    pub fn begin_attempt(
        &self,
        domain_id: i64,
        directory_url: &str,
        challenge: ChallengeKind,
        now: i64,
    ) -> Result<i64, Error> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO acme_attempts (domain_id, directory_url, started_at, challenge,
                 order_created, outcome)
             VALUES (?1, ?2, ?3, ?4, 1, 'running')",
            params![domain_id, directory_url, now, challenge.as_str()],
        )?;
        Ok(conn.last_insert_rowid())
    }

    pub fn finish_attempt(
        &self,
        attempt_id: i64,
        outcome: AttemptOutcome,
        error: Option<&str>,
        certificate_id: Option<i64>,
        now: i64,
    ) -> Result<(), Error> {
        self.conn().execute(
            "UPDATE acme_attempts SET outcome = ?2, error = ?3, certificate_id = ?4, finished_at = ?5
             WHERE id = ?1",
            params![attempt_id, outcome.as_str(), error, certificate_id, now],
        )?;
        Ok(())
    }

    /// Sets the backoff deadline on an attempt.
    pub fn set_retry_after(&self, attempt_id: i64, retry_after: i64) -> Result<(), Error> {
        self.conn().execute(
            "UPDATE acme_attempts SET retry_after = ?2 WHERE id = ?1",
            params![attempt_id, retry_after],
        )?;
        Ok(())
    }

    /// Records an attempt refused by the throttle (nothing sent to the CA).
    pub fn record_throttled(
        &self,
        domain_id: i64,
        directory_url: &str,
        error: &str,
        retry_after: i64,
        now: i64,
    ) -> Result<(), Error> {
        self.conn().execute(
            "INSERT INTO acme_attempts (domain_id, directory_url, started_at, finished_at,
                 order_created, outcome, error, retry_after)
             VALUES (?1, ?2, ?3, ?3, 0, 'throttled', ?4, ?5)",
            params![domain_id, directory_url, now, error, retry_after],
        )?;
        Ok(())
    }

    /// Orders created for a domain since `since` (for the throttle), with the oldest one's time.
    pub fn orders_since(&self, domain_id: i64, since: i64) -> Result<(u32, Option<i64>), Error> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*), MIN(started_at) FROM acme_attempts
             WHERE domain_id = ?1 AND order_created = 1 AND started_at >= ?2",
            params![domain_id, since],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// A domain's attempts, newest first.
    pub fn attempts(&self, domain_id: i64, limit: u32) -> Result<Vec<AttemptRecord>, Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {ATTEMPT_COLS} FROM acme_attempts WHERE domain_id = ?1
             ORDER BY started_at DESC, id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![domain_id, limit], attempt_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks attempts left `running` by a previous process as failed. They still count for the
    /// throttle. Returns how many there were.
    pub fn fail_interrupted_attempts(&self, now: i64) -> Result<usize, Error> {
        Ok(self.conn().execute(
            "UPDATE acme_attempts SET outcome = 'failed', finished_at = ?1,
                 error = 'interrupted: the process stopped during the attempt'
             WHERE outcome = 'running'",
            [now],
        )?)
    }

    // --- events ---

    pub fn add_event(
        &self,
        level: EventLevel,
        kind: &str,
        subject: Option<&str>,
        message: &str,
        now: i64,
    ) -> Result<(), Error> {
        self.conn().execute(
            "INSERT INTO events (at, level, kind, subject, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![now, level.as_str(), kind, subject, message],
        )?;
        Ok(())
    }

    /// The newest events first.
    pub fn events(&self, limit: u32) -> Result<Vec<Event>, Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, at, level, kind, subject, message FROM events ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok(Event {
                id: r.get(0)?,
                at: r.get(1)?,
                level: parse_col(r, 2)?,
                kind: r.get(3)?,
                subject: r.get(4)?,
                message: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_sets_mode_wal_and_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = Store::open(&data, 100).unwrap();
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(dmode, 0o700);
        store.set_setting("k", "v", 1).unwrap();
        let wal = data.join(format!("{DB_FILE}-wal"));
        assert!(wal.exists(), "WAL file missing");
        assert_eq!(
            std::fs::metadata(&wal).unwrap().permissions().mode() & 0o777,
            0o600
        );
        {
            let conn = store.conn();
            let fk: bool = conn
                .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
                .unwrap();
            assert!(fk);
            let jm: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(jm, "wal");
        }
        assert_eq!(
            store.schema_version().unwrap(),
            migrations::MIGRATIONS.last().unwrap().version
        );
        drop(store);
        // Reopening applies nothing and keeps the data.
        let store = Store::open(&data, 200).unwrap();
        assert_eq!(store.setting("k").unwrap().as_deref(), Some("v"));
    }

    #[test]
    fn certificates_replace_and_cascade() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1).unwrap();
        let d = store
            .upsert_domain("a.example.com", &["b.example.com".into()], 1)
            .unwrap();
        assert_eq!(d.all_names(), vec!["a.example.com", "b.example.com"]);
        let names = d.all_names();
        let new = |serial: &'static str| NewCertificate {
            domain_id: Some(d.id),
            source: CertSource::Acme,
            names: &names,
            chain_pem: "chain",
            key_pem: "key",
            issuer: "CN=x",
            serial,
            not_before: 0,
            not_after: 10,
        };
        store.insert_certificate(&new("01"), 5).unwrap();
        let second = store.insert_certificate(&new("02"), 6).unwrap();
        assert_eq!(store.current_certificate(d.id).unwrap(), Some(second));
        assert_eq!(store.current_certificates().unwrap().len(), 1);
        assert_eq!(store.certificate_count(d.id).unwrap(), 2);
        let a = store
            .begin_attempt(d.id, "https://ca", ChallengeKind::Http01, 7)
            .unwrap();
        store
            .finish_attempt(a, AttemptOutcome::Failed, Some("boom"), None, 8)
            .unwrap();
        assert_eq!(store.orders_since(d.id, 0).unwrap(), (1, Some(7)));
        assert!(store.remove_domain("a.example.com").unwrap());
        assert!(store.current_certificates().unwrap().is_empty());
        assert!(store.attempts(d.id, 10).unwrap().is_empty());
    }

    #[test]
    fn foreign_keys_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1).unwrap();
        let err = store
            .begin_attempt(999, "https://ca", ChallengeKind::Http01, 1)
            .unwrap_err();
        assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
    }
}
