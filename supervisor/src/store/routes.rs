//! External routes (migration 3): hosts and path prefixes the proxy sends to services outside the
//! cluster (a NAS, a legacy server). Inputs are validated by [`crate::external`] before they reach
//! this file, which only reads and writes rows.

use rusqlite::{ErrorCode, OptionalExtension, Row, params};

use super::Store;
use crate::Error;

pub(super) const V3: &str = r#"
CREATE TABLE IF NOT EXISTS external_routes (
    id           INTEGER PRIMARY KEY,
    -- Lowercase DNS name (certs::normalize_domain).
    host         TEXT NOT NULL,
    path_prefix  TEXT NOT NULL DEFAULT '/' CHECK (substr(path_prefix, 1, 1) = '/'),
    -- http:// or https://, host and optional port, nothing else.
    target_url   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    UNIQUE (host, path_prefix)
) STRICT;
"#;

/// A stored external route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRouteRecord {
    pub id: i64,
    pub host: String,
    pub path_prefix: String,
    pub target_url: String,
    pub created_at: i64,
}

const COLS: &str = "id, host, path_prefix, target_url, created_at";

fn row(r: &Row<'_>) -> rusqlite::Result<ExternalRouteRecord> {
    Ok(ExternalRouteRecord {
        id: r.get(0)?,
        host: r.get(1)?,
        path_prefix: r.get(2)?,
        target_url: r.get(3)?,
        created_at: r.get(4)?,
    })
}

impl Store {
    /// Every external route, by host then path prefix.
    pub fn external_routes(&self) -> Result<Vec<ExternalRouteRecord>, Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLS} FROM external_routes ORDER BY host, path_prefix, id"
        ))?;
        let rows = stmt.query_map([], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds a route (inputs already validated). `None` when the host and path prefix are taken.
    pub fn insert_external_route(
        &self,
        host: &str,
        path_prefix: &str,
        target_url: &str,
        now: i64,
    ) -> Result<Option<ExternalRouteRecord>, Error> {
        let conn = self.conn();
        let res = conn.query_row(
            &format!(
                "INSERT INTO external_routes (host, path_prefix, target_url, created_at)
                 VALUES (?1, ?2, ?3, ?4) RETURNING {COLS}"
            ),
            params![host, path_prefix, target_url, now],
            row,
        );
        match res {
            Ok(r) => Ok(Some(r)),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::ConstraintViolation
                    && e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a route; returns it, or `None` when there was none with that id.
    pub fn remove_external_route(&self, id: i64) -> Result<Option<ExternalRouteRecord>, Error> {
        Ok(self
            .conn()
            .query_row(
                &format!("DELETE FROM external_routes WHERE id = ?1 RETURNING {COLS}"),
                [id],
                row,
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_remove_and_unique() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1).unwrap();
        assert!(store.external_routes().unwrap().is_empty());
        let a = store
            .insert_external_route("nas.example.com", "/", "http://192.168.1.20:5000", 5)
            .unwrap()
            .unwrap();
        assert_eq!(a.host, "nas.example.com");
        assert_eq!(a.path_prefix, "/");
        assert_eq!(a.created_at, 5);
        // Same host, other path: fine; same host and path: refused, not an error.
        store
            .insert_external_route("nas.example.com", "/photos", "http://192.168.1.21", 6)
            .unwrap()
            .unwrap();
        assert_eq!(
            store
                .insert_external_route("nas.example.com", "/", "http://10.0.0.1", 7)
                .unwrap(),
            None
        );
        let all = store.external_routes().unwrap();
        assert_eq!(
            all.iter()
                .map(|r| r.path_prefix.as_str())
                .collect::<Vec<_>>(),
            vec!["/", "/photos"]
        );
        assert_eq!(store.remove_external_route(a.id).unwrap(), Some(a.clone()));
        assert_eq!(store.remove_external_route(a.id).unwrap(), None);
        assert_eq!(store.external_routes().unwrap().len(), 1);
        // The table refuses a path without its leading slash, whatever the caller checked.
        assert!(
            store
                .insert_external_route("x.example.com", "api", "http://10.0.0.1", 8)
                .is_err()
        );
        drop(store);
        let store = Store::open(dir.path(), 9).unwrap();
        assert_eq!(store.external_routes().unwrap().len(), 1);
    }
}
