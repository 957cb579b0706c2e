//! `gantry certs`: certificates from the command line until the web UI exists. Every command
//! calls the supervisor's API (`gantry_supervisor::certs`), which the web UI will call too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use gantry_proxy::tls::CertStore;
use gantry_proxy::{Proxy, ProxyOptions};
use gantry_supervisor::certs::{
    self, AcmeConfig, CertManager, Directory, Policy, fmt_time, load_stored,
};
use gantry_supervisor::clock::{Clock, SystemClock};
use gantry_supervisor::store::{DB_FILE, Store};

#[derive(Debug, Subcommand)]
pub(crate) enum CertsCommand {
    /// Obtain a certificate for a domain from an ACME CA now. A proxy listens on --http
    /// (HTTP-01) and/or --tls (TLS-ALPN-01) to answer the CA's challenges while it runs.
    Issue {
        /// The appliance's data directory (holds gantry.db).
        #[arg(long)]
        data_dir: PathBuf,
        /// The domain (the certificate's first name).
        #[arg(long)]
        domain: String,
        /// Further names on the same certificate (repeatable).
        #[arg(long = "extra-name")]
        extra_names: Vec<String>,
        /// `letsencrypt`, `letsencrypt-staging` or an ACME directory URL.
        #[arg(long, default_value = "letsencrypt")]
        acme_directory: String,
        /// A PEM file of extra root CAs to trust for the directory's HTTPS.
        #[arg(long)]
        acme_ca_root: Option<PathBuf>,
        /// Plain-HTTP listen address answering HTTP-01 (the CA connects to port 80 of the domain).
        #[arg(long)]
        http: Option<String>,
        /// TLS listen address answering TLS-ALPN-01 (the CA connects to port 443 of the domain).
        #[arg(long)]
        tls: Option<String>,
        /// Contact email for the ACME account.
        #[arg(long)]
        email: Option<String>,
        /// Orders per domain per hour at most (counted across runs).
        #[arg(long, default_value_t = Policy::default().max_orders_per_hour)]
        max_orders_per_hour: u32,
    },
    /// Show the domains, their certificates, the last ACME attempts and expiry warnings.
    List {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Import a PEM certificate chain (leaf first) and its private key for a domain.
    Import {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        domain: String,
        /// PEM chain: the certificate, then its intermediates.
        #[arg(long)]
        cert: PathBuf,
        /// PEM private key.
        #[arg(long)]
        key: PathBuf,
    },
}

pub(crate) fn run(cmd: CertsCommand) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::Issue {
            data_dir,
            domain,
            extra_names,
            acme_directory,
            acme_ca_root,
            http,
            tls,
            email,
            max_orders_per_hour,
        } => {
            let directory = Directory::parse(&acme_directory)?;
            if http.is_none() && tls.is_none() {
                bail!("give --http (HTTP-01) and/or --tls (TLS-ALPN-01) to answer the CA");
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            rt.block_on(issue(IssueArgs {
                data_dir,
                domain,
                extra_names,
                directory,
                acme_ca_root,
                http,
                tls,
                email,
                max_orders_per_hour,
            }))
        }
        CertsCommand::List { data_dir } => list(&data_dir),
        CertsCommand::Import {
            data_dir,
            domain,
            cert,
            key,
        } => import(&data_dir, &domain, &cert, &key),
    }
}

struct IssueArgs {
    data_dir: PathBuf,
    domain: String,
    extra_names: Vec<String>,
    directory: Directory,
    acme_ca_root: Option<PathBuf>,
    http: Option<String>,
    tls: Option<String>,
    email: Option<String>,
    max_orders_per_hour: u32,
}

fn challenge_proxy_config(
    http: Option<&str>,
    tls: Option<&str>,
) -> anyhow::Result<gantry_proxy::config::StaticConfig> {
    let mut yaml = String::from("entryPoints:\n");
    if let Some(a) = http {
        yaml.push_str(&format!("  web:\n    address: {}\n", serde_yaml_quote(a)));
    }
    if let Some(a) = tls {
        yaml.push_str(&format!(
            "  websecure:\n    address: {}\n    http:\n      tls: {{}}\n",
            serde_yaml_quote(a)
        ));
    }
    Ok(gantry_proxy::config::parse_str(
        Path::new("certs-issue.yml"),
        &yaml,
    )?)
}

/// A YAML double-quoted scalar.
fn serde_yaml_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

async fn issue(a: IssueArgs) -> anyhow::Result<()> {
    let clock = Arc::new(SystemClock);
    let store = Arc::new(Store::open(&a.data_dir, clock.now())?);
    // Stored certificates are served from the first connection, as by the appliance.
    let cert_store = CertStore::new()?;
    load_stored(&store, &cert_store, clock.now())?;
    let cfg = challenge_proxy_config(a.http.as_deref(), a.tls.as_deref())?;
    let proxy = Proxy::start(
        cfg,
        ProxyOptions {
            workers: Some(1),
            certs: Some(cert_store),
        },
    )
    .context("starting the proxy that answers the challenges")?;
    for ep in ["web", "websecure"] {
        if let Some(addr) = proxy.local_addr(ep) {
            tracing::info!(entrypoint = ep, %addr, "answering ACME challenges");
        }
    }
    let mgr = CertManager::new(
        store.clone(),
        clock,
        proxy.certs().clone(),
        AcmeConfig {
            directory: a.directory,
            extra_root: a.acme_ca_root,
            email: a.email,
            http01: a.http.is_some(),
            tls_alpn01: a.tls.is_some(),
        },
        Policy {
            max_orders_per_hour: a.max_orders_per_hour,
            ..Policy::default()
        },
    )
    .with_http01(proxy.acme().clone());
    let result = async {
        let domain = mgr.add_domain(&a.domain, &a.extra_names)?;
        tokio::select! {
            r = mgr.issue(&domain.name) => Ok(r?),
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    }
    .await;
    drop(mgr);
    proxy.shutdown().await;
    let rec = result?;
    println!(
        "issued a certificate for {}\n  issuer:    {}\n  serial:    {}\n  valid:     {} to {}\n  stored in: {}",
        rec.names.join(", "),
        rec.issuer,
        rec.serial,
        fmt_time(rec.not_before),
        fmt_time(rec.not_after),
        store.path().display()
    );
    Ok(())
}

fn open_existing(data_dir: &Path) -> anyhow::Result<Store> {
    if !data_dir.join(DB_FILE).exists() {
        bail!(
            "no {DB_FILE} in {}: not a Gantry data directory",
            data_dir.display()
        );
    }
    Ok(Store::open(data_dir, SystemClock.now())?)
}

fn days(secs: i64) -> String {
    let d = secs / 86_400;
    if secs < 0 {
        format!("{} days ago", -d)
    } else {
        format!("in {d} days")
    }
}

fn list(data_dir: &Path) -> anyhow::Result<()> {
    let store = open_existing(data_dir)?;
    let now = SystemClock.now();
    let domains = certs::status(&store, now)?;
    if domains.is_empty() {
        println!("no domains");
    }
    for s in &domains {
        print!("{}", s.domain.name);
        if !s.domain.extra_names.is_empty() {
            print!(" (also {})", s.domain.extra_names.join(", "));
        }
        println!();
        match &s.certificate {
            Some(c) => {
                println!(
                    "  certificate: {} from {}, serial {}",
                    c.source, c.issuer, c.serial
                );
                println!("  names:       {}", c.names.join(", "));
                println!(
                    "  valid until: {} ({})",
                    fmt_time(c.not_after),
                    days(c.not_after - now)
                );
            }
            None => println!("  certificate: none"),
        }
        match s.renewal_due {
            Some(reason) => println!("  renewal:     due ({reason})"),
            None => println!("  renewal:     not due"),
        }
        if let Some(a) = &s.last_attempt {
            let ch = a.challenge.map(|c| c.to_string()).unwrap_or_default();
            println!(
                "  last ACME attempt: {} at {} {ch}",
                a.outcome,
                fmt_time(a.started_at)
            );
            if let Some(e) = &a.error {
                println!("    error: {e}");
            }
            if let Some(t) = a.retry_after
                && t > now
            {
                println!("    next automatic attempt after {}", fmt_time(t));
            }
        }
    }
    if let Some(c) = store.current_self_signed()? {
        println!(
            "default (self-signed): {}, valid until {}",
            c.names.join(", "),
            fmt_time(c.not_after)
        );
    }
    let warnings = certs::warnings(&store, now, Policy::default().warn_before)?;
    for w in &warnings {
        println!(
            "WARNING {}: {}",
            w.domain.as_deref().unwrap_or("-"),
            w.message
        );
    }
    Ok(())
}

fn import(data_dir: &Path, domain: &str, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let read = |p: &Path, what: &str| {
        std::fs::read_to_string(p)
            .with_context(|| format!("cannot read the {what} {}", p.display()))
    };
    let chain = read(cert, "certificate file")?;
    let key = read(key, "key file")?;
    let store = Store::open(data_dir, SystemClock.now())?;
    let rec = certs::import(&store, SystemClock.now(), domain, &chain, &key)?;
    println!(
        "imported a certificate for {} (names: {}), valid until {}",
        rec.domain.as_deref().unwrap_or(domain),
        rec.names.join(", "),
        fmt_time(rec.not_after)
    );
    Ok(())
}
