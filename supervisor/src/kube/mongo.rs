//! Initiates the replica set by running mongosh in the MongoDB container (the API server's exec
//! subresource) and acting on `manifests::replica_set`'s decisions.

use std::time::{Duration, Instant};

use ::kube::Api;
use ::kube::api::AttachParams;
use k8s_openapi::api::core::v1::Pod;
use tokio::io::AsyncReadExt;

use super::KubeError;
use crate::manifests::replica_set::{self, Initiated, Next};
use crate::manifests::{MONGO_NAME, REPLICA_SET};

/// Output of one command run in a container.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub exit: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` in `container` of `pod` and collects its output and exit code.
pub async fn exec(
    client: &::kube::Client,
    ns: &str,
    pod: &str,
    container: &str,
    command: Vec<String>,
) -> Result<ExecOutput, KubeError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let ap = AttachParams::default()
        .container(container)
        .stdin(false)
        .stdout(true)
        .stderr(true);
    let mut proc = pods.exec(pod, command, &ap).await?;
    let mut out = ExecOutput::default();
    let status = proc.take_status();
    if let Some(mut s) = proc.stdout() {
        let _ = s.read_to_string(&mut out.stdout).await;
    }
    if let Some(mut s) = proc.stderr() {
        let _ = s.read_to_string(&mut out.stderr).await;
    }
    if let Some(status) = status
        && let Some(st) = status.await
    {
        out.exit = exit_code(&st);
    }
    Ok(out)
}

/// The exit code in an exec's final Status (`Success`, or `NonZeroExitCode` with an
/// `ExitCode` cause).
pub fn exit_code(st: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Status) -> i32 {
    if st.status.as_deref() == Some("Success") {
        return 0;
    }
    st.details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
        .and_then(|c| c.message.as_deref())
        .and_then(|m| m.parse().ok())
        .unwrap_or(1)
}

/// Makes sure `rs0` is initiated and its member is the writable primary; idempotent.
pub async fn ensure_replica_set(
    client: &::kube::Client,
    ns: &str,
    timeout: Duration,
    mut progress: impl FnMut(&str),
) -> Result<(), KubeError> {
    let pod = format!("{MONGO_NAME}-0");
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    let mut report = |msg: String, last: &mut String| {
        if *last != msg {
            progress(&msg);
            *last = msg;
        }
    };
    loop {
        let next = match exec(client, ns, &pod, "mongod", replica_set::status_command()).await {
            Ok(o) => replica_set::decide(&replica_set::parse_status(o.exit, &o.stdout, &o.stderr)),
            // The pod or container is not running yet.
            Err(e) => Next::Retry(format!("cannot exec in {pod} yet: {e}")),
        };
        match next {
            Next::Done => {
                progress(&format!(
                    "replica set {REPLICA_SET} ready: {pod} is primary"
                ));
                return Ok(());
            }
            Next::Initiate => {
                report(format!("initiating replica set {REPLICA_SET}"), &mut last);
                let o = exec(
                    client,
                    ns,
                    &pod,
                    "mongod",
                    replica_set::mongosh_command(&replica_set::initiate_js(ns)),
                )
                .await?;
                match replica_set::parse_initiate(o.exit, &o.stdout, &o.stderr) {
                    Ok(Initiated::Now) => report("replica set initiated".into(), &mut last),
                    Ok(Initiated::Already) => {
                        report("replica set was already initiated".into(), &mut last);
                    }
                    Err(why) => report(format!("rs.initiate: {why}"), &mut last),
                }
            }
            Next::WaitForPrimary => {
                report("waiting for the member to become primary".into(), &mut last);
            }
            Next::Retry(why) => report(why, &mut last),
            Next::Fail(reason) => {
                return Err(KubeError::Failed {
                    what: format!("replica set {REPLICA_SET}"),
                    reason,
                });
            }
        }
        if Instant::now() >= deadline {
            return Err(KubeError::Timeout {
                what: format!("replica set {REPLICA_SET}"),
                after: timeout,
                last,
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_status_exit_codes() {
        let ok: k8s_openapi::apimachinery::pkg::apis::meta::v1::Status =
            serde_json::from_str(r#"{"metadata":{},"status":"Success"}"#).unwrap();
        assert_eq!(exit_code(&ok), 0);
        let failed = serde_json::from_str(
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [bash -c ...], exit code 1","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"1"}]}}"#,
        )
        .unwrap();
        assert_eq!(exit_code(&failed), 1);
    }
}
