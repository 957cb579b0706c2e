//! Numbered schema migrations.
//!
//! Each migration runs once, in order, inside its own transaction, and is recorded in
//! `schema_migrations`. Each one must also be idempotent on its own (`IF NOT EXISTS` everywhere;
//! a column added later goes through a check of `pragma_table_info` first), so that a database
//! restored from a backup taken halfway, or a migration re-run by hand, ends in the same schema:
//! the test `migrations_twice_equal_fresh` applies all of them twice and compares.
//!
//! Never edit a migration that has shipped; add a new one.

use rusqlite::{Connection, Transaction};

/// One schema step.
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) apply: fn(&Transaction<'_>) -> rusqlite::Result<()>,
}

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "settings, domains, certificates, ACME accounts and attempts, events",
        apply: |tx| tx.execute_batch(V1),
    },
    Migration {
        version: 2,
        name: "users, sessions, API tokens",
        apply: |tx| tx.execute_batch(super::auth::V2),
    },
    Migration {
        version: 3,
        name: "external routes (services outside the cluster)",
        apply: |tx| tx.execute_batch(super::routes::V3),
    },
];

const V1: &str = r#"
CREATE TABLE IF NOT EXISTS settings (
    key         TEXT PRIMARY KEY NOT NULL,
    value       TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS domains (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    -- JSON array of further DNS names on the same certificate.
    extra_names          TEXT NOT NULL DEFAULT '[]',
    -- The challenge that last worked, tried first next time.
    preferred_challenge  TEXT CHECK (preferred_challenge IN ('http-01', 'tls-alpn-01')),
    created_at           INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS certificates (
    id                INTEGER PRIMARY KEY,
    -- NULL for the self-signed bootstrap certificate.
    domain_id         INTEGER REFERENCES domains(id) ON DELETE CASCADE,
    source            TEXT NOT NULL CHECK (source IN ('self-signed', 'acme', 'uploaded')),
    -- JSON array of the names the certificate covers.
    names             TEXT NOT NULL,
    chain_pem         TEXT NOT NULL,
    key_pem           TEXT NOT NULL,
    issuer            TEXT NOT NULL,
    serial            TEXT NOT NULL,
    not_before        INTEGER NOT NULL,
    not_after         INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    -- Set when a newer certificate took its place; the current one has NULL.
    replaced_at       INTEGER,
    -- ACME Renewal Information (RFC 9773), where the CA offers it.
    ari_window_start  INTEGER,
    ari_window_end    INTEGER,
    ari_next_check    INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS certificates_current ON certificates(domain_id) WHERE replaced_at IS NULL;

CREATE TABLE IF NOT EXISTS acme_accounts (
    id             INTEGER PRIMARY KEY,
    directory_url  TEXT NOT NULL UNIQUE,
    email          TEXT,
    -- instant-acme's AccountCredentials as JSON (holds the account key).
    credentials    TEXT NOT NULL,
    created_at     INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS acme_attempts (
    id              INTEGER PRIMARY KEY,
    domain_id       INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    directory_url   TEXT NOT NULL,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    challenge       TEXT,
    -- 1 once an order may have been created at the CA: these count for the throttle, and are
    -- written before the order is sent, so a crash loop is counted too.
    order_created   INTEGER NOT NULL DEFAULT 0,
    outcome         TEXT NOT NULL CHECK (outcome IN ('running', 'issued', 'failed', 'throttled')),
    error           TEXT,
    certificate_id  INTEGER REFERENCES certificates(id) ON DELETE SET NULL,
    -- Backoff: no automatic attempt before this time.
    retry_after     INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS acme_attempts_domain ON acme_attempts(domain_id, started_at);

CREATE TABLE IF NOT EXISTS events (
    id       INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,
    level    TEXT NOT NULL CHECK (level IN ('info', 'warning', 'error')),
    kind     TEXT NOT NULL,
    subject  TEXT,
    message  TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS events_at ON events(at);
"#;

const TRACKING: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  INTEGER NOT NULL
) STRICT;";

/// Applies the migrations not yet recorded. Returns how many ran.
pub(crate) fn migrate(conn: &mut Connection, now: i64) -> rusqlite::Result<usize> {
    conn.execute_batch(TRACKING)?;
    let mut ran = 0;
    for m in MIGRATIONS {
        let tx = conn.transaction()?;
        let done: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE version = ?1)",
            [m.version],
            |r| r.get(0),
        )?;
        if !done {
            (m.apply)(&tx)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                rusqlite::params![m.version, m.name, now],
            )?;
            ran += 1;
        }
        tx.commit()?;
    }
    Ok(ran)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema as SQLite describes it, in a stable order.
    fn schema(conn: &Connection) -> Vec<(String, String, String)> {
        let mut stmt = conn
            .prepare(
                "SELECT type, name, COALESCE(sql, '') FROM sqlite_schema
                 WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
            )
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn migrations_twice_equal_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let mut fresh = Connection::open(dir.path().join("fresh.db")).unwrap();
        assert_eq!(migrate(&mut fresh, 1).unwrap(), MIGRATIONS.len());
        assert_eq!(
            migrate(&mut fresh, 2).unwrap(),
            0,
            "recorded migrations run again"
        );

        // Every migration's body, forced twice regardless of the tracking table.
        let mut twice = Connection::open(dir.path().join("twice.db")).unwrap();
        twice.execute_batch(TRACKING).unwrap();
        for _ in 0..2 {
            for m in MIGRATIONS {
                let tx = twice.transaction().unwrap();
                (m.apply)(&tx).unwrap_or_else(|e| panic!("migration {} again: {e}", m.version));
                tx.commit().unwrap();
            }
        }
        let fresh_schema = schema(&fresh);
        assert!(
            fresh_schema.iter().any(|(_, n, _)| n == "certificates"),
            "{fresh_schema:?}"
        );
        assert!(
            fresh_schema.iter().any(|(_, n, _)| n == "external_routes"),
            "{fresh_schema:?}"
        );
        assert_eq!(schema(&twice), fresh_schema);
    }

    #[test]
    fn versions_are_increasing() {
        for w in MIGRATIONS.windows(2) {
            assert!(w[0].version < w[1].version);
        }
        assert_eq!(MIGRATIONS[0].version, 1);
    }
}
