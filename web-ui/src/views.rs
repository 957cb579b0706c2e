//! Template structs (askama, compiled in) and what they share: the layout, the navigation, the
//! state of a form being shown again with its errors.

use std::borrow::Borrow;
use std::collections::HashMap;

use askama::Template;
use gantry_supervisor::Error;
use gantry_supervisor::appliance::{
    ApiTokenView, CertView, Dashboard, DomainView, EventView, RoutesView, SettingsView,
    SetupSummary,
};
use gantry_supervisor::external::ExternalRouteView;
use gantry_supervisor::setup::{InstallProgress, ProgressStep, StepState};

/// Formats Unix seconds as `2026-11-23 07:15 UTC`.
pub(crate) fn fmt_time(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => format!("@{unix}"),
    }
}

pub(crate) struct NavLink {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

pub(crate) struct Nav {
    pub links: Vec<NavLink>,
    pub username: String,
    pub csrf: String,
}

const PAGES: [(&str, &str); 6] = [
    ("/", "Dashboard"),
    ("/domains", "Domains"),
    ("/certificates", "Certificates"),
    ("/routes", "Routes"),
    ("/events", "Events"),
    ("/settings", "Settings"),
];

impl Nav {
    pub(crate) fn new(active: &str, username: &str, csrf: &str) -> Nav {
        Nav {
            links: PAGES
                .iter()
                .map(|(href, label)| NavLink {
                    href,
                    label,
                    current: *href == active,
                })
                .collect(),
            username: username.to_owned(),
            csrf: csrf.to_owned(),
        }
    }
}

pub(crate) struct Notice {
    /// `ok`, `error`, `warn` or `info`.
    pub kind: &'static str,
    pub text: String,
}

/// What every page's frame needs.
pub(crate) struct Layout {
    pub title: String,
    pub nav: Option<Nav>,
    pub notice: Option<Notice>,
    pub refresh: Option<u32>,
    pub narrow: bool,
    pub version: &'static str,
}

impl Layout {
    pub(crate) fn new(title: impl Into<String>) -> Layout {
        Layout {
            title: title.into(),
            nav: None,
            notice: None,
            refresh: None,
            narrow: false,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    pub(crate) fn narrow(mut self) -> Layout {
        self.narrow = true;
        self
    }

    pub(crate) fn nav(mut self, nav: Nav) -> Layout {
        self.nav = Some(nav);
        self
    }

    pub(crate) fn notice(mut self, n: Option<Notice>) -> Layout {
        self.notice = n;
        self
    }
}

/// A form shown again: the submitted values (never passwords or keys) and the errors by field.
#[derive(Debug, Default)]
pub(crate) struct FormState {
    pub values: HashMap<String, String>,
    pub errors: HashMap<String, String>,
    /// An error that belongs to no field.
    pub general: Option<String>,
}

impl FormState {
    pub(crate) fn with_values<I, K, V>(values: I) -> FormState
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        FormState {
            values: values
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            ..FormState::default()
        }
    }

    /// Puts `err` next to its field (or on top of the form).
    pub(crate) fn error_from(mut self, err: &Error) -> FormState {
        match err {
            Error::Field { field, message } => {
                self.errors.insert((*field).to_owned(), message.clone());
            }
            other => self.general = Some(crate::error::public_message(other)),
        }
        self
    }

    pub(crate) fn value(&self, k: &str) -> &str {
        self.values.get(k).map_or("", String::as_str)
    }

    pub(crate) fn error(&self, k: &str) -> Option<&String> {
        self.errors.get(k)
    }

    pub(crate) fn has(&self, k: &str) -> bool {
        self.errors.contains_key(k)
    }
}

pub(crate) struct StepItem {
    pub name: &'static str,
    pub current: bool,
    pub done: bool,
}

/// The wizard's steps, `current` counted from 1.
pub(crate) fn steps(current: u8) -> Vec<StepItem> {
    [
        "Token",
        "Administrator",
        "Domain",
        "Rocket.Chat",
        "Summary",
        "Install",
    ]
    .iter()
    .zip(1u8..)
    .map(|(name, i)| StepItem {
        name,
        current: i == current,
        done: i < current,
    })
    .collect()
}

#[derive(Template)]
#[template(path = "error.html")]
pub(crate) struct ErrorPage {
    pub l: Layout,
    pub heading: String,
    pub message: String,
    pub back: String,
}

#[derive(Template)]
#[template(path = "setup_token.html")]
pub(crate) struct SetupTokenPage {
    pub l: Layout,
    pub steps: Vec<StepItem>,
    pub csrf: String,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "setup_admin.html")]
pub(crate) struct SetupAdminPage {
    pub l: Layout,
    pub steps: Vec<StepItem>,
    pub csrf: String,
    pub form: FormState,
    pub min_len: usize,
}

#[derive(Template)]
#[template(path = "setup_domain.html")]
pub(crate) struct SetupDomainPage {
    pub l: Layout,
    pub steps: Vec<StepItem>,
    pub csrf: String,
    pub form: FormState,
    /// (value, label, hint)
    pub modes: Vec<(&'static str, &'static str, &'static str)>,
    pub acme_override: Option<String>,
}

#[derive(Template)]
#[template(path = "setup_rocketchat.html")]
pub(crate) struct SetupChatAdminPage {
    pub l: Layout,
    pub steps: Vec<StepItem>,
    pub csrf: String,
    pub form: FormState,
    pub min_len: usize,
}

#[derive(Template)]
#[template(path = "setup_summary.html")]
pub(crate) struct SetupSummaryPage {
    pub l: Layout,
    pub steps: Vec<StepItem>,
    pub csrf: String,
    pub s: SetupSummary,
}

#[derive(Template)]
#[template(path = "setup_progress.html")]
pub(crate) struct ProgressPage {
    pub l: Layout,
    pub p: InstallProgress,
}

impl ProgressPage {
    pub(crate) fn state(&self, s: &ProgressStep) -> &'static str {
        state_name(s.state)
    }

    pub(crate) fn icon(&self, s: &ProgressStep) -> &'static str {
        match s.state {
            StepState::Pending => "·",
            StepState::Running => "…",
            StepState::Done => "✓",
            StepState::Skipped => "–",
            StepState::Failed => "✗",
        }
    }
}

pub(crate) fn state_name(s: StepState) -> &'static str {
    match s {
        StepState::Pending => "pending",
        StepState::Running => "running",
        StepState::Done => "done",
        StepState::Skipped => "skipped",
        StepState::Failed => "failed",
    }
}

#[derive(Template)]
#[template(path = "sign_in.html")]
pub(crate) struct SignInPage {
    pub l: Layout,
    pub csrf: String,
    pub username: String,
    pub error: Option<String>,
}

/// A Unix time, however many references the template put around it.
pub(crate) trait Unix {
    fn unix(&self) -> i64;
}

impl Unix for i64 {
    fn unix(&self) -> i64 {
        *self
    }
}

impl<T: Unix + ?Sized> Unix for &T {
    fn unix(&self) -> i64 {
        (**self).unix()
    }
}

/// Helpers shared by pages with times and certificates.
pub(crate) trait PageHelpers {
    fn time(&self, t: impl Unix) -> String {
        fmt_time(t.unix())
    }

    fn expiry_class(&self, c: &CertView) -> &'static str {
        if c.expired || c.days_left < 7 {
            "bad"
        } else if c.days_left < 21 {
            "warn"
        } else {
            "ok"
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard.html")]
pub(crate) struct DashboardPage {
    pub l: Layout,
    pub dash: Dashboard,
}

impl PageHelpers for DashboardPage {}

impl DashboardPage {
    pub(crate) fn cluster_state(&self) -> String {
        serde_json::to_value(self.dash.cluster.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
            .replace('-', " ")
    }

    pub(crate) fn cluster_class(&self) -> &'static str {
        use gantry_supervisor::cluster::ClusterState::*;
        match self.dash.cluster.state {
            Running => "ok",
            Failed => "bad",
            Disabled | NotBuilt | Starting => "warn",
        }
    }

    pub(crate) fn bytes(&self, n: impl Borrow<u64>) -> String {
        let n = *n.borrow() as f64;
        let units = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = n;
        let mut u = 0;
        while v >= 1024.0 && u < units.len() - 1 {
            v /= 1024.0;
            u += 1;
        }
        if u == 0 {
            format!("{n} B")
        } else {
            format!("{v:.1} {}", units[u])
        }
    }

    pub(crate) fn fs_used_pct(&self) -> u64 {
        match &self.dash.disk {
            Some(d) if d.fs_total_bytes > 0 => {
                (d.fs_total_bytes.saturating_sub(d.fs_free_bytes)) * 100 / d.fs_total_bytes
            }
            _ => 0,
        }
    }
}

#[derive(Template)]
#[template(path = "domains.html")]
pub(crate) struct DomainsPage {
    pub l: Layout,
    pub csrf: String,
    pub domains: Vec<DomainView>,
    pub form: FormState,
}

impl PageHelpers for DomainsPage {}

#[derive(Template)]
#[template(path = "certificates.html")]
pub(crate) struct CertificatesPage {
    pub l: Layout,
    pub csrf: String,
    pub certs: Vec<CertView>,
    pub form: FormState,
}

impl PageHelpers for CertificatesPage {}

#[derive(Template)]
#[template(path = "routes.html")]
pub(crate) struct RoutesPage {
    pub l: Layout,
    pub csrf: String,
    pub r: RoutesView,
    /// The operator's routes to services outside the cluster.
    pub external: Vec<ExternalRouteView>,
    pub form: FormState,
}

#[derive(Template)]
#[template(path = "events.html")]
pub(crate) struct EventsPage {
    pub l: Layout,
    pub events: Vec<EventView>,
}

impl PageHelpers for EventsPage {}

#[derive(Template)]
#[template(path = "settings.html")]
pub(crate) struct SettingsPage {
    pub l: Layout,
    pub csrf: String,
    pub s: SettingsView,
    pub pw: FormState,
    pub acme: FormState,
    pub tok: FormState,
    pub tokens: Vec<ApiTokenView>,
    pub new_token: Option<String>,
    pub min_len: usize,
}

impl PageHelpers for SettingsPage {}

#[derive(Template)]
#[template(path = "app_placeholder.html")]
pub(crate) struct AppPlaceholderPage {
    pub l: Layout,
    pub domain: String,
    pub reason: String,
}
