//! Idempotent initiation of the one-member replica set `rs0`, as decisions over `mongosh` output.
//!
//! The supervisor runs [`status_command`] in the MongoDB container (kube exec), feeds the output
//! to [`parse_status`] and acts on [`decide`]: `rs.initiate` with the member's service DNS name
//! when the set is not initiated (error 94 NotYetInitialized), wait while the image's first-start
//! init phase runs (76 NoReplicationEnabled, connection refused), done when the member is the
//! writable primary. [`parse_initiate`] treats 23 AlreadyInitialized as success, so a crash
//! between the two steps is harmless. The scripts print one JSON line, so decisions never depend
//! on mongosh's human-readable formatting; errors mongosh prints itself (it could not connect or
//! authenticate) are recognised by their stable class names.

use serde::Deserialize;

use super::stack::{REPLICA_SET, mongo_member_host};

/// mongosh error codes (MongoDB's `error_codes.yml`).
pub const UNAUTHORIZED: i64 = 13;
pub const AUTHENTICATION_FAILED: i64 = 18;
pub const ALREADY_INITIALIZED: i64 = 23;
pub const NO_REPLICATION_ENABLED: i64 = 76;
pub const NOT_YET_INITIALIZED: i64 = 94;

/// Reports `rs.status()` as one JSON line, errors included.
pub const STATUS_JS: &str = r#"try { const s = rs.status(); const me = s.members.find(m => m.self) || {}; print(JSON.stringify({ok: 1, set: s.set, myState: s.myState, self: me.name || null, primary: me.stateStr === "PRIMARY"})); } catch (e) { print(JSON.stringify({ok: 0, code: e.code === undefined ? null : e.code, codeName: e.codeName || null, errmsg: String(e.message)})); }"#;

/// `rs.initiate` with the member's DNS name, reporting as one JSON line.
pub fn initiate_js(namespace: &str) -> String {
    let config = serde_json::json!({
        "_id": REPLICA_SET,
        "members": [{"_id": 0, "host": mongo_member_host(namespace)}],
    });
    format!(
        r#"try {{ const r = rs.initiate({config}); print(JSON.stringify({{ok: r.ok}})); }} catch (e) {{ print(JSON.stringify({{ok: 0, code: e.code === undefined ? null : e.code, codeName: e.codeName || null, errmsg: String(e.message)}})); }}"#
    )
}

/// The command to exec in the `mongod` container: mongosh against the local member, as root,
/// with the credentials from the container's environment (never on a command line we build).
/// The script is passed as bash's `$0`, so it needs no quoting.
pub fn mongosh_command(script: &str) -> Vec<String> {
    vec![
        "bash".to_owned(),
        "-c".to_owned(),
        "exec mongosh --quiet --norc --host 127.0.0.1 --port 27017 \
         -u \"$MONGO_INITDB_ROOT_USERNAME\" -p \"$MONGO_INITDB_ROOT_PASSWORD\" \
         --authenticationDatabase admin --eval \"$0\""
            .to_owned(),
        script.to_owned(),
    ]
}

/// [`mongosh_command`] for [`STATUS_JS`].
pub fn status_command() -> Vec<String> {
    mongosh_command(STATUS_JS)
}

/// What a status run showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// mongosh could not connect or log in yet (the server is starting, or the image's init
    /// phase has not created the root user yet).
    Unreachable(String),
    /// A mongod without `--replSet`: the official image's first-start init phase.
    NoReplication,
    NotYetInitialized,
    Member {
        set: String,
        state: i64,
        primary: bool,
    },
    /// Anything else, verbatim (for the UI's event log).
    Unexpected(String),
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Initiate,
    /// Initiated; wait for the member to become the writable primary.
    WaitForPrimary,
    Done,
    /// Try the status again later (reason for the progress log).
    Retry(String),
    /// Stop: a human must look (reason for the UI).
    Fail(String),
}

#[derive(Debug, Deserialize)]
struct Report {
    ok: f64,
    code: Option<i64>,
    #[serde(rename = "codeName")]
    code_name: Option<String>,
    errmsg: Option<String>,
    set: Option<String>,
    #[serde(rename = "myState")]
    my_state: Option<i64>,
    primary: Option<bool>,
}

/// The last line of stdout that is one of our JSON reports.
fn report(stdout: &str) -> Option<Report> {
    stdout
        .lines()
        .rev()
        .map(str::trim)
        .filter(|l| l.starts_with('{'))
        .find_map(|l| serde_json::from_str(l).ok())
}

fn mongosh_failure(exit: i32, stdout: &str, stderr: &str) -> Observed {
    let text = format!("{} {}", stderr.trim(), stdout.trim());
    let text = text.trim();
    if text.contains("ECONNREFUSED")
        || text.contains("MongoNetworkError")
        || text.contains("MongoServerSelectionError")
        || text.contains("ECONNRESET")
    {
        return Observed::Unreachable(format!("mongod is not accepting connections yet ({text})"));
    }
    if text.contains("Authentication failed") {
        return Observed::Unreachable(
            "authentication failed (the root user is created during the first start)".to_owned(),
        );
    }
    Observed::Unexpected(format!("mongosh exited with {exit}: {text}"))
}

/// Interprets a run of [`status_command`].
pub fn parse_status(exit: i32, stdout: &str, stderr: &str) -> Observed {
    let Some(r) = report(stdout) else {
        return mongosh_failure(exit, stdout, stderr);
    };
    if r.ok >= 1.0 {
        return Observed::Member {
            set: r.set.unwrap_or_default(),
            state: r.my_state.unwrap_or(-1),
            primary: r.primary.unwrap_or(false),
        };
    }
    match r.code {
        Some(NOT_YET_INITIALIZED) => Observed::NotYetInitialized,
        Some(NO_REPLICATION_ENABLED) => Observed::NoReplication,
        Some(AUTHENTICATION_FAILED | UNAUTHORIZED) => Observed::Unreachable(format!(
            "not authorized yet: {}",
            r.errmsg.unwrap_or_default()
        )),
        code => Observed::Unexpected(format!(
            "rs.status() failed: {} (code {}, {})",
            r.errmsg.unwrap_or_default(),
            code.map_or("none".to_owned(), |c| c.to_string()),
            r.code_name.unwrap_or_default()
        )),
    }
}

/// The decision for an observation.
pub fn decide(o: &Observed) -> Next {
    match o {
        Observed::NotYetInitialized => Next::Initiate,
        Observed::Member { set, .. } if set != REPLICA_SET => Next::Fail(format!(
            "the member belongs to replica set `{set}`, not `{REPLICA_SET}`: the data volume is from another installation"
        )),
        Observed::Member { primary: true, .. } => Next::Done,
        Observed::Member { .. } => Next::WaitForPrimary,
        Observed::NoReplication => {
            Next::Retry("MongoDB is in its first-start initialisation (creating users)".to_owned())
        }
        Observed::Unreachable(why) => Next::Retry(why.clone()),
        Observed::Unexpected(why) => Next::Retry(why.clone()),
    }
}

/// The result of `rs.initiate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Initiated {
    Now,
    /// Error 23: someone (an earlier run) already did. Success.
    Already,
}

/// Interprets a run of [`initiate_js`]. `Err` carries a reason worth retrying or showing.
pub fn parse_initiate(exit: i32, stdout: &str, stderr: &str) -> Result<Initiated, String> {
    let Some(r) = report(stdout) else {
        return Err(match mongosh_failure(exit, stdout, stderr) {
            Observed::Unreachable(why) | Observed::Unexpected(why) => why,
            other => format!("{other:?}"),
        });
    };
    if r.ok >= 1.0 {
        return Ok(Initiated::Now);
    }
    match r.code {
        Some(ALREADY_INITIALIZED) => Ok(Initiated::Already),
        code => Err(format!(
            "rs.initiate failed: {} (code {}, {})",
            r.errmsg.unwrap_or_default(),
            code.map_or("none".to_owned(), |c| c.to_string()),
            r.code_name.unwrap_or_default()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Outputs as mongosh 2.x prints them: our scripts' JSON lines, and mongosh's own errors
    // on stderr when it cannot connect or log in (exit code 1).
    const REFUSED: &str = "MongoNetworkError: connect ECONNREFUSED 127.0.0.1:27017\n";
    const AUTH_FAILED: &str = "MongoServerError: Authentication failed.\n";
    const NOT_INITIALIZED: &str = "{\"ok\":0,\"code\":94,\"codeName\":\"NotYetInitialized\",\"errmsg\":\"no replset config has been received\"}\n";
    const NO_REPLSET: &str = "{\"ok\":0,\"code\":76,\"codeName\":\"NoReplicationEnabled\",\"errmsg\":\"not running with --replSet\"}\n";
    const SECONDARY: &str = "{\"ok\":1,\"set\":\"rs0\",\"myState\":2,\"self\":\"mongodb-0.mongodb.chat.svc.cluster.local:27017\",\"primary\":false}\n";
    const PRIMARY: &str = "{\"ok\":1,\"set\":\"rs0\",\"myState\":1,\"self\":\"mongodb-0.mongodb.chat.svc.cluster.local:27017\",\"primary\":true}\n";
    const OTHER_SET: &str =
        "{\"ok\":1,\"set\":\"rs1\",\"myState\":1,\"self\":\"old-host:27017\",\"primary\":true}\n";
    const INITIATED: &str = "{\"ok\":1}\n";
    const ALREADY: &str = "{\"ok\":0,\"code\":23,\"codeName\":\"AlreadyInitialized\",\"errmsg\":\"already initialized\"}\n";
    const BAD_CONFIG: &str = "{\"ok\":0,\"code\":93,\"codeName\":\"InvalidReplicaSetConfig\",\"errmsg\":\"No host described in new configuration with {version: 1, term: 0} for replica set rs0 maps to this node\"}\n";

    #[test]
    fn first_start_sequence() {
        // mongod still starting, then the image's init phase, then our replica set.
        let steps = [
            (1, "", REFUSED),
            (1, "", AUTH_FAILED),
            (0, NO_REPLSET, ""),
            (0, NOT_INITIALIZED, ""),
        ];
        let decisions: Vec<Next> = steps
            .iter()
            .map(|(code, out, err)| decide(&parse_status(*code, out, err)))
            .collect();
        assert!(
            matches!(decisions[0], Next::Retry(ref w) if w.contains("not accepting connections"))
        );
        assert!(matches!(decisions[1], Next::Retry(ref w) if w.contains("authentication failed")));
        assert!(matches!(decisions[2], Next::Retry(ref w) if w.contains("first-start")));
        assert_eq!(decisions[3], Next::Initiate);
    }

    #[test]
    fn initiated_member_states() {
        assert_eq!(
            decide(&parse_status(0, SECONDARY, "")),
            Next::WaitForPrimary
        );
        assert_eq!(decide(&parse_status(0, PRIMARY, "")), Next::Done);
        assert!(
            matches!(decide(&parse_status(0, OTHER_SET, "")), Next::Fail(ref w) if w.contains("rs1"))
        );
    }

    #[test]
    fn initiate_is_idempotent() {
        assert_eq!(parse_initiate(0, INITIATED, ""), Ok(Initiated::Now));
        assert_eq!(parse_initiate(0, ALREADY, ""), Ok(Initiated::Already));
        let e = parse_initiate(0, BAD_CONFIG, "").unwrap_err();
        assert!(
            e.contains("InvalidReplicaSetConfig") && e.contains("93"),
            "{e}"
        );
        let e = parse_initiate(1, "", REFUSED).unwrap_err();
        assert!(e.contains("ECONNREFUSED"), "{e}");
    }

    #[test]
    fn noise_before_the_report_is_ignored() {
        let out = format!("Warning: some deprecation notice\n{PRIMARY}");
        assert_eq!(decide(&parse_status(0, &out, "")), Next::Done);
        let garbage = parse_status(139, "Segmentation fault", "");
        assert!(matches!(garbage, Observed::Unexpected(ref w) if w.contains("139")));
    }

    #[test]
    fn initiate_uses_the_service_dns_name() {
        let js = initiate_js("chat");
        assert!(
            js.contains(r#""host":"mongodb-0.mongodb.chat.svc.cluster.local:27017""#),
            "{js}"
        );
        assert!(js.contains(r#""_id":"rs0""#), "{js}");
        let cmd = mongosh_command(&js);
        assert_eq!(cmd[0], "bash");
        assert_eq!(cmd[3], js);
        assert!(!cmd[2].contains("password ") && cmd[2].contains("$MONGO_INITDB_ROOT_PASSWORD"));
    }

    /// The status script really prints what `parse_status` reads, when node is available to
    /// evaluate it with stand-ins for mongosh's `rs` and `print` (mongosh is node-based).
    #[test]
    fn status_script_is_valid_javascript_when_node_is_installed() {
        if std::env::var_os("GANTRY_SKIP_NODEJS").is_some() {
            return;
        }
        let node = which("node").expect(
            "node is missing: `apt-get install nodejs` (or set GANTRY_SKIP_NODEJS=1 to skip)",
        );
        let cases = [
            (
                "const rs = {status() { const e = new Error('no replset config has been received'); e.code = 94; e.codeName = 'NotYetInitialized'; throw e; }};",
                Observed::NotYetInitialized,
            ),
            (
                "const rs = {status() { return {set: 'rs0', myState: 1, members: [{self: true, name: 'm:27017', stateStr: 'PRIMARY'}]}; }};",
                Observed::Member {
                    set: "rs0".to_owned(),
                    state: 1,
                    primary: true,
                },
            ),
        ];
        for (stub, want) in cases {
            let src = format!("const print = console.log; {stub} {STATUS_JS}");
            let out = std::process::Command::new(&node)
                .arg("-e")
                .arg(&src)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(parse_status(0, &stdout, ""), want, "{stdout}");
        }
    }

    fn which(cmd: &str) -> Result<std::path::PathBuf, ()> {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
            .ok_or(())
    }
}
