//! k3s's own certificates last one year and k3s renews them only at start, when fewer than 90
//! days remain (k3s #770, #10865). An air-gapped appliance that never restarts k3s would lose its
//! API server on its first birthday: this check finds the earliest expiry and asks for a restart
//! when it is within the threshold.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::supervise::Request;

/// k3s renews at start when a certificate expires within 90 days.
pub const RENEW_WITHIN: Duration = Duration::from_secs(90 * 24 * 3600);

/// The leaf certificate that expires first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Earliest {
    pub file: PathBuf,
    pub subject: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// Scans `*.crt` files (PEM, possibly several certificates each) in `dirs` and returns the
/// earliest-expiring certificate that is not a CA (k3s's CAs last ten years and are not renewed
/// this way). Unreadable files are skipped: k3s may be rewriting them.
pub fn earliest_expiry(dirs: &[PathBuf]) -> Option<Earliest> {
    let mut best: Option<Earliest> = None;
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("crt") {
                continue;
            }
            let Ok(pem) = std::fs::read(&path) else {
                continue;
            };
            for (subject, not_after) in leaf_expiries(&pem) {
                if best.as_ref().is_none_or(|b| not_after < b.not_after) {
                    best = Some(Earliest {
                        file: path.clone(),
                        subject,
                        not_after,
                    });
                }
            }
        }
    }
    best
}

fn leaf_expiries(pem: &[u8]) -> Vec<(String, i64)> {
    use x509_parser::prelude::*;
    let mut out = Vec::new();
    for p in Pem::iter_from_buffer(pem).flatten() {
        let Ok(cert) = p.parse_x509() else { continue };
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            out.push((
                cert.subject().to_string(),
                cert.validity().not_after.timestamp(),
            ));
        }
    }
    out
}

/// Whether k3s should be restarted now so it renews its certificates.
pub fn rotation_due(earliest: &Earliest, now_unix: i64, within: Duration) -> bool {
    let within = i64::try_from(within.as_secs()).unwrap_or(i64::MAX);
    earliest.not_after.saturating_sub(now_unix) < within
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Checks every `interval` (and at once); sends [`Request::Restart`] when rotation is due, at
/// most once per `interval` (k3s renews during that restart, so the next check sees new dates).
pub fn spawn_rotation_check(
    dirs: Vec<PathBuf>,
    interval: Duration,
    restart: mpsc::Sender<Request>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Some(e) = earliest_expiry(&dirs) {
                let days = (e.not_after - now_unix()) / 86_400;
                if rotation_due(&e, now_unix(), RENEW_WITHIN) {
                    tracing::warn!(
                        file = %e.file.display(), subject = e.subject, days,
                        "k3s certificate expires within 90 days: restarting k3s to renew it"
                    );
                    if restart.send(Request::Restart).await.is_err() {
                        return;
                    }
                } else {
                    tracing::debug!(days, "k3s certificates valid");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    })
}

/// The directories k3s keeps certificates in.
pub fn cert_dirs(data_dir: &Path) -> Vec<PathBuf> {
    vec![data_dir.join("server/tls"), data_dir.join("agent")]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, days_left: i64, ca: bool) -> String {
        let mut p = rcgen::CertificateParams::new(vec![cn.to_owned()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(300);
        p.not_after = now + time::Duration::days(days_left);
        if ca {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn finds_the_earliest_leaf_and_ignores_cas() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("server/tls");
        std::fs::create_dir_all(&tls).unwrap();
        std::fs::write(tls.join("server-ca.crt"), cert("k3s-server-ca", 10, true)).unwrap();
        std::fs::write(
            tls.join("serving-kube-apiserver.crt"),
            cert("kube-apiserver", 200, false),
        )
        .unwrap();
        // A bundle: leaf first, then its CA.
        let bundle = format!(
            "{}{}",
            cert("system:admin", 80, false),
            cert("client-ca", 5, true)
        );
        std::fs::write(tls.join("client-admin.crt"), bundle).unwrap();
        std::fs::write(tls.join("notes.txt"), "not a certificate").unwrap();
        let e = earliest_expiry(&cert_dirs(dir.path())).unwrap();
        assert!(e.file.ends_with("client-admin.crt"), "{e:?}");
        assert!(e.subject.contains("rcgen") || !e.subject.is_empty());
        assert!(
            rotation_due(&e, now_unix(), RENEW_WITHIN),
            "80 days left: due"
        );
        let fresh = Earliest {
            not_after: now_unix() + 200 * 86_400,
            ..e
        };
        assert!(!rotation_due(&fresh, now_unix(), RENEW_WITHIN));
        assert!(earliest_expiry(&[dir.path().join("missing")]).is_none());
    }

    #[tokio::test]
    async fn a_due_rotation_requests_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("server/tls");
        std::fs::create_dir_all(&tls).unwrap();
        std::fs::write(
            tls.join("kube-apiserver.crt"),
            cert("kube-apiserver", 30, false),
        )
        .unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let stop = CancellationToken::new();
        let h = spawn_rotation_check(
            cert_dirs(dir.path()),
            Duration::from_secs(3600),
            tx,
            stop.clone(),
        );
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap();
        assert_eq!(got, Some(Request::Restart));
        stop.cancel();
        h.await.unwrap();
    }
}
