//! The first-run setup: the wizard's inputs, their validation, the answers kept between steps,
//! and the install progress shown afterwards.
//!
//! Every step validates its own inputs and names the field at fault ([`Error::Field`]), so the
//! web UI can show the error next to it and keep the other inputs. The answers live in the setup
//! session (server side, in the store) as a [`SetupDraft`]; the administrator's password is
//! hashed as soon as it is accepted. [`crate::appliance::Appliance::finish_setup`] writes
//! everything in one transaction and starts the install.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::Error;
use crate::auth::Secret;
use crate::auth::password;
use crate::certs::{normalize_domain, validate_import};
use crate::cluster::{ChatAdmin, ClusterStep, StepOutcome};

/// How the chat domain gets its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertMode {
    /// Let's Encrypt (production).
    Letsencrypt,
    /// Let's Encrypt's staging CA: untrusted certificates, generous limits, for trying out.
    LetsencryptStaging,
    /// A self-signed certificate made by Gantry.
    SelfSigned,
    /// A certificate and key the operator uploads.
    Upload,
}

impl CertMode {
    pub const ALL: [CertMode; 4] = [
        CertMode::Letsencrypt,
        CertMode::LetsencryptStaging,
        CertMode::SelfSigned,
        CertMode::Upload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CertMode::Letsencrypt => "letsencrypt",
            CertMode::LetsencryptStaging => "letsencrypt-staging",
            CertMode::SelfSigned => "self-signed",
            CertMode::Upload => "upload",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            CertMode::Letsencrypt => "Let's Encrypt",
            CertMode::LetsencryptStaging => "Let's Encrypt staging (untrusted, for testing)",
            CertMode::SelfSigned => "Self-signed certificate",
            CertMode::Upload => "Upload a certificate and key",
        }
    }

    pub fn parse(s: &str) -> Option<CertMode> {
        CertMode::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Whether the mode orders from an ACME CA.
    pub fn is_acme(self) -> bool {
        matches!(self, CertMode::Letsencrypt | CertMode::LetsencryptStaging)
    }
}

/// An HTML checkbox (`on` when ticked, absent otherwise) or a JSON boolean.
fn checkbox<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Text(String),
    }
    Ok(match Option::<B>::deserialize(d)? {
        Some(B::Bool(b)) => b,
        Some(B::Text(s)) => matches!(s.as_str(), "on" | "true" | "yes" | "1"),
        None => false,
    })
}

/// Step 2: the administrator account.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AdminInput {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: Secret,
    /// The form's second copy; the API may leave it out.
    #[serde(default)]
    pub password_confirm: Option<Secret>,
}

/// Step 3: the chat domain and its certificate.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChatInput {
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub cert_mode: String,
    /// Contact address for Let's Encrypt.
    #[serde(default)]
    pub email: String,
    #[serde(default, deserialize_with = "checkbox")]
    pub accept_terms: bool,
    /// Upload mode: the PEM chain (leaf first) and key.
    #[serde(default)]
    pub chain_pem: String,
    #[serde(default)]
    pub key_pem: Secret,
}

/// Step 4: Rocket.Chat's first administrator.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChatAdminInput {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub password: Secret,
    #[serde(default)]
    pub password_confirm: Option<Secret>,
}

/// The whole setup in one request (the API's `POST /api/v1/setup`).
#[derive(Debug, Clone, Deserialize)]
pub struct SetupRequest {
    pub token: Secret,
    pub admin: AdminInput,
    pub chat: ChatInput,
    pub rocketchat: ChatAdminInput,
}

/// The administrator, validated (password already hashed).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdminDraft {
    pub username: String,
    pub password_hash: String,
}

impl fmt::Debug for AdminDraft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminDraft")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The chat domain, validated.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChatDraft {
    pub domain: String,
    pub cert_mode: CertMode,
    pub email: Option<String>,
    /// Upload mode only: checked with [`validate_import`] already.
    pub chain_pem: Option<String>,
    pub key_pem: Option<String>,
}

impl fmt::Debug for ChatDraft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatDraft")
            .field("domain", &self.domain)
            .field("cert_mode", &self.cert_mode)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// The wizard's answers so far (kept in the setup session).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SetupDraft {
    pub admin: Option<AdminDraft>,
    pub chat: Option<ChatDraft>,
    pub rocketchat: Option<ChatAdmin>,
}

impl SetupDraft {
    pub fn from_json(s: Option<&str>) -> SetupDraft {
        s.and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// The first step still missing (`admin`, `domain`, `rocketchat`), or `None` when complete.
    pub fn missing_step(&self) -> Option<&'static str> {
        if self.admin.is_none() {
            Some("admin")
        } else if self.chat.is_none() {
            Some("domain")
        } else if self.rocketchat.is_none() {
            Some("rocketchat")
        } else {
            None
        }
    }
}

fn field(field: &'static str, message: impl Into<String>) -> Error {
    Error::Field {
        field,
        message: message.into(),
    }
}

/// A login name: 1 to 64 letters, digits, `.`, `_` or `-`, starting with a letter or digit.
pub fn validate_username(name: &str, which: &'static str) -> Result<String, Error> {
    let n = name.trim();
    if n.is_empty() {
        return Err(field(which, "enter a username"));
    }
    if n.len() > 64
        || !n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        || !n.as_bytes()[0].is_ascii_alphanumeric()
    {
        return Err(field(
            which,
            "a username is 1 to 64 letters, digits, dots, dashes or underscores, starting with a letter or digit",
        ));
    }
    Ok(n.to_owned())
}

/// A plausible email address (the CA or Rocket.Chat checks the rest).
pub fn validate_email(email: &str, which: &'static str) -> Result<String, Error> {
    let e = email.trim();
    let bad = || {
        field(
            which,
            format!("`{e}` is not an email address (like you@example.com)"),
        )
    };
    if e.is_empty() {
        return Err(field(which, "enter an email address"));
    }
    if e.len() > 254 || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = e.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
    {
        return Err(bad());
    }
    Ok(e.to_owned())
}

fn check_new_password(
    password: &Secret,
    confirm: Option<&Secret>,
    username: &str,
    which: &'static str,
) -> Result<(), Error> {
    if let Some(why) = password::weakness(password.expose(), Some(username)) {
        return Err(field(which, why));
    }
    if let Some(c) = confirm
        && c != password
    {
        return Err(field("password_confirm", "the two passwords differ"));
    }
    Ok(())
}

/// Validates the administrator step and hashes the password.
pub fn validate_admin(input: &AdminInput) -> Result<AdminDraft, Error> {
    let username = validate_username(&input.username, "username")?;
    check_new_password(
        &input.password,
        input.password_confirm.as_ref(),
        &username,
        "password",
    )?;
    Ok(AdminDraft {
        username,
        password_hash: password::hash(input.password.expose())?,
    })
}

/// Validates the domain step. An upload is checked completely here (key, chain, names, dates).
pub fn validate_chat(input: &ChatInput, now: i64) -> Result<ChatDraft, Error> {
    let domain = normalize_domain(&input.domain).map_err(|e| field("domain", e.to_string()))?;
    let cert_mode = CertMode::parse(input.cert_mode.trim())
        .ok_or_else(|| field("cert_mode", "choose how the domain gets its certificate"))?;
    let mut draft = ChatDraft {
        domain,
        cert_mode,
        email: None,
        chain_pem: None,
        key_pem: None,
    };
    match cert_mode {
        CertMode::Letsencrypt | CertMode::LetsencryptStaging => {
            draft.email = Some(validate_email(&input.email, "email")?);
            if !input.accept_terms {
                return Err(field(
                    "accept_terms",
                    "Let's Encrypt requires accepting its subscriber agreement",
                ));
            }
        }
        CertMode::SelfSigned => {}
        CertMode::Upload => {
            if input.chain_pem.trim().is_empty() {
                return Err(field(
                    "chain_pem",
                    "paste or choose the certificate chain (PEM)",
                ));
            }
            if input.key_pem.expose().trim().is_empty() {
                return Err(field("key_pem", "paste or choose the private key (PEM)"));
            }
            validate_import(&draft.domain, &input.chain_pem, input.key_pem.expose(), now)
                .map_err(|e| field("chain_pem", format!("certificate rejected: {e}")))?;
            draft.chain_pem = Some(input.chain_pem.clone());
            draft.key_pem = Some(input.key_pem.expose().to_owned());
        }
    }
    Ok(draft)
}

/// Validates Rocket.Chat's first administrator.
pub fn validate_chat_admin(input: &ChatAdminInput) -> Result<ChatAdmin, Error> {
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(field("name", "enter a display name of 1 to 100 characters"));
    }
    let username = validate_username(&input.username, "username")?;
    let email = validate_email(&input.email, "email")?;
    check_new_password(
        &input.password,
        input.password_confirm.as_ref(),
        &username,
        "password",
    )?;
    Ok(ChatAdmin {
        name: name.to_owned(),
        username,
        email,
        password: input.password.expose().to_owned(),
    })
}

/// The state of one install step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Pending,
    Running,
    Done,
    Skipped,
    Failed,
}

/// One step of the install, as the progress page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgressStep {
    pub key: &'static str,
    pub label: &'static str,
    pub state: StepState,
    pub detail: String,
}

/// The install's progress (server-sent to the progress page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstallProgress {
    /// False until setup completes.
    pub started: bool,
    /// True when every step has an outcome.
    pub finished: bool,
    pub steps: Vec<ProgressStep>,
}

impl Default for InstallProgress {
    fn default() -> InstallProgress {
        let step = |key, label| ProgressStep {
            key,
            label,
            state: StepState::Pending,
            detail: String::new(),
        };
        InstallProgress {
            started: false,
            finished: false,
            steps: vec![
                step("certificate", "Certificate issued"),
                step("cluster-started", "Cluster started"),
                step("database-ready", "Database ready"),
                step("chat-ready", "Chat ready"),
            ],
        }
    }
}

impl InstallProgress {
    /// Sets a step's state; `finished` follows.
    pub fn set(&mut self, key: &str, state: StepState, detail: impl Into<String>) {
        if let Some(s) = self.steps.iter_mut().find(|s| s.key == key) {
            s.state = state;
            s.detail = detail.into();
        }
        self.finished = self
            .steps
            .iter()
            .all(|s| !matches!(s.state, StepState::Pending | StepState::Running));
    }

    /// Applies a cluster report.
    pub fn apply(&mut self, step: ClusterStep, outcome: StepOutcome) {
        let key = match step {
            ClusterStep::ClusterStarted => "cluster-started",
            ClusterStep::DatabaseReady => "database-ready",
            ClusterStep::ChatReady => "chat-ready",
        };
        let (state, detail) = match outcome {
            StepOutcome::Running(d) => (StepState::Running, d),
            StepOutcome::Done(d) => (StepState::Done, d),
            StepOutcome::Skipped(d) => (StepState::Skipped, d),
            StepOutcome::Failed(d) => (StepState::Failed, d),
        };
        self.set(key, state, detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(u: &str, p: &str) -> AdminInput {
        AdminInput {
            username: u.into(),
            password: Secret::new(p),
            password_confirm: None,
        }
    }

    #[test]
    fn admin_step() {
        let d = validate_admin(&admin(" admin ", "violet-otter-carries-lamps")).unwrap();
        assert_eq!(d.username, "admin");
        assert!(password::verify(
            "violet-otter-carries-lamps",
            &d.password_hash
        ));
        assert!(!format!("{d:?}").contains("argon2"));
        let e = validate_admin(&admin("admin", "password1234")).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Field {
                    field: "password",
                    ..
                }
            ),
            "{e}"
        );
        let e = validate_admin(&admin("-x", "violet-otter-carries-lamps")).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Field {
                    field: "username",
                    ..
                }
            ),
            "{e}"
        );
        let mut i = admin("admin", "violet-otter-carries-lamps");
        i.password_confirm = Some(Secret::new("other"));
        let e = validate_admin(&i).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Field {
                    field: "password_confirm",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn chat_step() {
        let mut i = ChatInput {
            domain: "Chat.Example.COM.".into(),
            cert_mode: "letsencrypt".into(),
            email: "ops@example.com".into(),
            accept_terms: true,
            ..Default::default()
        };
        let d = validate_chat(&i, 0).unwrap();
        assert_eq!(d.domain, "chat.example.com");
        assert_eq!(d.email.as_deref(), Some("ops@example.com"));
        i.accept_terms = false;
        assert!(matches!(
            validate_chat(&i, 0).unwrap_err(),
            Error::Field {
                field: "accept_terms",
                ..
            }
        ));
        i.domain = "not a domain".into();
        assert!(matches!(
            validate_chat(&i, 0).unwrap_err(),
            Error::Field {
                field: "domain",
                ..
            }
        ));
        i.domain = "chat.example.com".into();
        i.cert_mode = "self-signed".into();
        i.email.clear();
        assert_eq!(validate_chat(&i, 0).unwrap().email, None);
        i.cert_mode = "upload".into();
        assert!(matches!(
            validate_chat(&i, 0).unwrap_err(),
            Error::Field {
                field: "chain_pem",
                ..
            }
        ));
        i.cert_mode = "bogus".into();
        assert!(matches!(
            validate_chat(&i, 0).unwrap_err(),
            Error::Field {
                field: "cert_mode",
                ..
            }
        ));
    }

    #[test]
    fn checkbox_forms() {
        let f: ChatInput = serde_json::from_str(r#"{"accept_terms": "on"}"#).unwrap();
        assert!(f.accept_terms);
        let f: ChatInput = serde_json::from_str(r#"{"accept_terms": true}"#).unwrap();
        assert!(f.accept_terms);
        let f: ChatInput = serde_json::from_str(r#"{}"#).unwrap();
        assert!(!f.accept_terms);
    }

    #[test]
    fn progress_finishes_when_every_step_has_an_outcome() {
        let mut p = InstallProgress::default();
        p.set("certificate", StepState::Done, "issued");
        assert!(!p.finished);
        for s in [
            ClusterStep::ClusterStarted,
            ClusterStep::DatabaseReady,
            ClusterStep::ChatReady,
        ] {
            p.apply(s, StepOutcome::Skipped("skipped: no cluster".into()));
        }
        assert!(p.finished);
    }

    #[test]
    fn email_and_usernames() {
        assert!(validate_email("a@b.co", "email").is_ok());
        for bad in ["", "a", "a@b", "a b@c.d", "@b.co", "a@b.co."] {
            assert!(validate_email(bad, "email").is_err(), "{bad}");
        }
        assert!(validate_username("rc.admin_1", "username").is_ok());
        assert!(validate_username("a/b", "username").is_err());
    }
}
