//! Certificate parsing, validation of imported certificates, and generation (self-signed
//! bootstrap, TLS-ALPN-01 challenge certificates, CSRs) with rcgen.

use std::fmt;
use std::io::BufReader;
use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

use crate::Error;

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names and IP addresses from the SAN (or the CN when there is no SAN), lowercase.
    pub names: Vec<String>,
    pub issuer: String,
    /// Hex serial number.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    /// The leaf's Authority Key Identifier, for ACME Renewal Information.
    pub(crate) authority_key_id: Option<Vec<u8>>,
    pub(crate) raw_serial: Vec<u8>,
}

/// The check an imported certificate failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportCheck {
    /// The chain PEM holds at least one parseable certificate.
    ChainParses,
    /// The key PEM holds a supported private key.
    KeyParses,
    /// The key belongs to the first (leaf) certificate.
    KeyMatches,
    /// Each certificate is issued by the next one in the chain.
    ChainOrder,
    /// The leaf's validity has started.
    AlreadyValid,
    /// The leaf has not expired.
    NotExpired,
    /// The leaf covers the domain.
    CoversDomain,
}

impl fmt::Display for ImportCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImportCheck::ChainParses => "chain parses",
            ImportCheck::KeyParses => "key parses",
            ImportCheck::KeyMatches => "key matches the certificate",
            ImportCheck::ChainOrder => "chain order",
            ImportCheck::AlreadyValid => "already valid",
            ImportCheck::NotExpired => "not expired",
            ImportCheck::CoversDomain => "covers the domain",
        })
    }
}

/// An imported certificate failed a check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("check `{check}` failed: {detail}")]
pub struct ImportError {
    pub check: ImportCheck,
    pub detail: String,
}

fn fail(check: ImportCheck, detail: impl Into<String>) -> ImportError {
    ImportError {
        check,
        detail: detail.into(),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Parses every certificate of a PEM chain.
pub(crate) fn parse_chain(chain_pem: &str) -> Result<Vec<CertificateDer<'static>>, ImportError> {
    let chain: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut BufReader::new(chain_pem.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|e| fail(ImportCheck::ChainParses, format!("PEM does not parse: {e}")))?;
    if chain.is_empty() {
        return Err(fail(
            ImportCheck::ChainParses,
            "no `BEGIN CERTIFICATE` block found",
        ));
    }
    Ok(chain)
}

/// Describes one DER certificate.
pub(crate) fn describe(der: &[u8]) -> Result<CertInfo, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    let mut aki = None;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for n in &san.general_names {
                    match n {
                        GeneralName::DNSName(d) => names.push(d.to_ascii_lowercase()),
                        GeneralName::IPAddress(b) => {
                            if let Ok(a) = <[u8; 4]>::try_from(*b) {
                                names.push(IpAddr::from(a).to_string());
                            } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                                names.push(IpAddr::from(a).to_string());
                            }
                        }
                        _ => {}
                    }
                }
            }
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                aki = a.key_identifier.as_ref().map(|k| k.0.to_vec());
            }
            _ => {}
        }
    }
    if names.is_empty()
        && let Some(cn) = cert.subject().iter_common_name().next()
        && let Ok(cn) = cn.as_str()
    {
        names.push(cn.to_ascii_lowercase());
    }
    Ok(CertInfo {
        names,
        issuer: cert.issuer().to_string(),
        serial: hex(cert.tbs_certificate.raw_serial()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        authority_key_id: aki,
        raw_serial: cert.tbs_certificate.raw_serial().to_vec(),
    })
}

/// Describes the leaf of a PEM chain.
pub(crate) fn describe_chain(chain_pem: &str) -> Result<CertInfo, Error> {
    let chain = parse_chain(chain_pem).map_err(|e| Error::Cert(e.to_string()))?;
    describe(&chain[0]).map_err(|e| Error::Cert(format!("certificate does not parse: {e}")))
}

/// Does the certificate name `pattern` (maybe `*.example.com`) cover `name`?
pub fn name_matches(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.to_ascii_lowercase(), name.to_ascii_lowercase());
    if pattern == name {
        return true;
    }
    match (pattern.strip_prefix("*."), name.split_once('.')) {
        (Some(suffix), Some((label, parent))) => !label.is_empty() && parent == suffix,
        _ => false,
    }
}

/// Checks an operator's certificate for `domain` before anything is stored: the chain parses,
/// the key parses and matches, the chain is in order, the leaf is valid at `now` and covers
/// `domain`. The error names the failed check.
pub fn validate_import(
    domain: &str,
    chain_pem: &str,
    key_pem: &str,
    now: i64,
) -> Result<CertInfo, ImportError> {
    let chain = parse_chain(chain_pem)?;
    let mut parsed = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| {
            fail(
                ImportCheck::ChainParses,
                format!("certificate #{} of the chain does not parse: {e}", i + 1),
            )
        })?;
        parsed.push(cert);
    }

    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut BufReader::new(key_pem.as_bytes()))
            .map_err(|e| fail(ImportCheck::KeyParses, format!("PEM does not parse: {e}")))?
            .ok_or_else(|| fail(ImportCheck::KeyParses, "no private key block found"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        fail(
            ImportCheck::KeyParses,
            format!("unsupported private key (ECDSA P-256/P-384, Ed25519 or RSA): {e}"),
        )
    })?;
    CertifiedKey::new(chain.clone(), signing)
        .keys_match()
        .map_err(|e| {
            fail(
                ImportCheck::KeyMatches,
                format!("the private key does not belong to the first certificate ({e})"),
            )
        })?;

    for (i, pair) in parsed.windows(2).enumerate() {
        if pair[0].issuer() != pair[1].subject() {
            return Err(fail(
                ImportCheck::ChainOrder,
                format!(
                    "certificate #{} (issuer `{}`) is followed by `{}`, which did not issue it; \
                     put the leaf first, then each issuer",
                    i + 1,
                    pair[0].issuer(),
                    pair[1].subject()
                ),
            ));
        }
    }

    let info = describe(&chain[0]).map_err(|e| fail(ImportCheck::ChainParses, e))?;
    if now < info.not_before {
        return Err(fail(
            ImportCheck::AlreadyValid,
            format!(
                "the certificate is valid only from {}",
                crate::certs::fmt_time(info.not_before)
            ),
        ));
    }
    if now >= info.not_after {
        return Err(fail(
            ImportCheck::NotExpired,
            format!(
                "the certificate expired on {}",
                crate::certs::fmt_time(info.not_after)
            ),
        ));
    }
    if !info.names.iter().any(|n| name_matches(n, domain)) {
        return Err(fail(
            ImportCheck::CoversDomain,
            format!(
                "the certificate does not cover `{domain}` (it covers: {})",
                info.names.join(", ")
            ),
        ));
    }
    Ok(info)
}

fn offset_time(unix: i64) -> Result<time::OffsetDateTime, Error> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| Error::Cert(format!("time out of range: {e}")))
}

/// A self-signed ECDSA P-256 certificate for `hostname` and `ips`, valid from an hour before
/// `now` for `days`. Returns (certificate PEM, key PEM).
pub(crate) fn self_signed(
    hostname: &str,
    ips: &[IpAddr],
    now: i64,
    days: u32,
) -> Result<(String, String), Error> {
    let mut params = CertificateParams::default();
    let mut sans = Vec::new();
    if !hostname.is_empty() {
        sans.push(SanType::DnsName(hostname.try_into()?));
    }
    sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.subject_alt_names = sans;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        if hostname.is_empty() {
            "gantry"
        } else {
            hostname
        },
    );
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Gantry self-signed");
    params.not_before = offset_time(now - 3600)?;
    params.not_after = offset_time(now + i64::from(days) * 86_400)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The RFC 8737 challenge certificate for `domain`: self-signed, the domain as its only SAN,
/// and the critical acmeIdentifier extension holding the SHA-256 of the key authorization.
pub(crate) fn alpn_challenge_cert(
    domain: &str,
    key_authorization_sha256: &[u8],
) -> Result<Arc<CertifiedKey>, Error> {
    if key_authorization_sha256.len() != 32 {
        return Err(Error::Cert("a TLS-ALPN-01 digest is 32 bytes".into()));
    }
    let mut params = CertificateParams::new(vec![domain.to_owned()])?;
    params.distinguished_name = DistinguishedName::new();
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(
        key_authorization_sha256,
    )];
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    // Not through `load_pem`: its key check parses the certificate with webpki, which rejects
    // the unknown critical acmeIdentifier extension (as a validating client should).
    let signing = rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
        key.serialize_der().into(),
    ))
    .map_err(|e| Error::Cert(format!("challenge key: {e}")))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

/// A CSR for `names` with a fresh ECDSA P-256 key. Returns (CSR DER, key PEM).
pub(crate) fn csr(names: &[String]) -> Result<(Vec<u8>, String), Error> {
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let csr = params.serialize_request(&key)?;
    Ok((csr.der().to_vec(), key.serialize_pem()))
}

/// Checks a DNS name an operator typed and returns it lowercase.
pub fn normalize_domain(name: &str) -> Result<String, Error> {
    let n = name.trim().trim_end_matches('.').to_ascii_lowercase();
    let bad = |why: &str| Error::Invalid(format!("`{name}` is not a valid domain name: {why}"));
    if n.is_empty() {
        return Err(bad("empty"));
    }
    if n.starts_with("*.") {
        return Err(bad(
            "wildcards need the DNS-01 challenge, which Gantry does not answer; list the names",
        ));
    }
    if n.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    if n.parse::<IpAddr>().is_ok() {
        return Err(bad("an IP address, not a name"));
    }
    let labels: Vec<&str> = n.split('.').collect();
    if labels.len() < 2 {
        return Err(bad("it needs at least two labels (like example.com)"));
    }
    for l in labels {
        if l.is_empty() || l.len() > 63 {
            return Err(bad("each label is 1 to 63 characters"));
        }
        if !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || l.starts_with('-')
            || l.ends_with('-')
        {
            return Err(bad(
                "labels hold letters, digits and inner hyphens (IDNs in punycode)",
            ));
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matching() {
        assert!(name_matches("a.example.com", "A.example.com"));
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
    }

    #[test]
    fn domain_names() {
        assert_eq!(
            normalize_domain("Test.Example.com.").unwrap(),
            "test.example.com"
        );
        for bad in [
            "",
            "*.example.com",
            "localhost",
            "a..b",
            "-a.com",
            "a_b.com",
            "1.2.3.4",
        ] {
            assert!(normalize_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn alpn_certificate_has_critical_acme_identifier() {
        let digest = [7u8; 32];
        let ck = alpn_challenge_cert("test.example.com", &digest).unwrap();
        let (_, cert) = X509Certificate::from_der(ck.cert[0].as_ref()).unwrap();
        let oid = x509_parser::der_parser::oid!(1.3.6.1.5.5.7.1.31);
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid == oid)
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // OCTET STRING (0x04), length 32, then the digest.
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &digest);
        let info = describe(ck.cert[0].as_ref()).unwrap();
        assert_eq!(info.names, vec!["test.example.com"]);
    }

    #[test]
    fn self_signed_covers_host_and_ips() {
        let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        let (chain, key) = self_signed("box.lan", &ips, 1_800_000_000, 365).unwrap();
        let info = validate_import("box.lan", &chain, &key, 1_800_000_000).unwrap();
        assert_eq!(info.names, vec!["box.lan", "127.0.0.1", "::1"]);
        assert_eq!(info.not_after - info.not_before, 365 * 86_400 + 3600);
    }
}
