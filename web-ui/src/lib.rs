//! The browser side of the appliance (not built yet: see the web UI issue).
//!
//! It will own the askama templates and the HTTP handlers of the setup wizard, sign-in, domains,
//! certificates, status, backups and upgrades, all written over `gantry-supervisor`'s API. It must not
//! talk to k3s, SQLite or the proxy directly: every change goes through the supervisor.
