use super::*;
use crate::cluster::ChatAdmin;
use crate::kube::status::{NodeStatus, PodStatus};

fn fold(events: &[ClusterEvent]) -> (InstallStage, Vec<(ClusterStep, StepOutcome)>) {
    let mut stage = InstallStage::default();
    let mut out = Vec::new();
    for e in events {
        out.extend(install_outcome(&mut stage, e));
    }
    (stage, out)
}

#[test]
fn a_full_install_reports_every_step_in_order_and_finishes() {
    let (stage, out) = fold(&[
        ClusterEvent::Readiness(Progress::KubeconfigMissing),
        ClusterEvent::Readiness(Progress::NodeNotReady("KubeletNotReady".into())),
        ClusterEvent::Readiness(Progress::Ready),
        ClusterEvent::Install(Step::Applied {
            objects: 14,
            pruned: 0,
        }),
        ClusterEvent::Install(Step::ReplicaSet("rs0 initiated".into())),
        ClusterEvent::Install(Step::MongoRollout("1/1 ready".into())),
        ClusterEvent::Install(Step::ChatRollout("0/1 available".into())),
        ClusterEvent::Install(Step::Done),
    ]);
    assert_eq!(stage, InstallStage::Finished);
    let done: Vec<_> = out
        .iter()
        .filter(|(_, o)| matches!(o, StepOutcome::Done(_)))
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(
        done,
        [
            ClusterStep::ClusterStarted,
            ClusterStep::DatabaseReady,
            ClusterStep::ChatReady
        ]
    );
    assert!(out.contains(&(
        ClusterStep::ClusterStarted,
        StepOutcome::Running("node: KubeletNotReady".into())
    )));
    assert!(out.contains(&(
        ClusterStep::DatabaseReady,
        StepOutcome::Running("14 objects applied, 0 pruned".into())
    )));
}

#[test]
fn errors_fail_the_current_step_and_a_retry_runs_it_again() {
    let (stage, out) = fold(&[
        ClusterEvent::Readiness(Progress::Ready),
        ClusterEvent::Error("timed out waiting for statefulset mongodb".into()),
        ClusterEvent::Install(Step::Applied {
            objects: 14,
            pruned: 0,
        }),
    ]);
    assert_eq!(stage, InstallStage::Database);
    assert!(out.contains(&(
        ClusterStep::DatabaseReady,
        StepOutcome::Failed("timed out waiting for statefulset mongodb (retrying)".into())
    )));
    assert!(matches!(
        out.last(),
        Some((ClusterStep::DatabaseReady, StepOutcome::Running(_)))
    ));
    // After the install finished, later errors (a status poll) are not install failures.
    let mut stage = InstallStage::Finished;
    assert!(install_outcome(&mut stage, &ClusterEvent::Error("x".into())).is_empty());
}

#[test]
fn a_crash_looping_k3s_fails_the_first_step_and_the_dashboard_says_why() {
    let crash = ClusterEvent::K3s(K3sState::CrashLoop {
        last_exit: "exit status 1".into(),
        delay: Duration::from_secs(60),
        restarts: 5,
    });
    let (stage, out) = fold(std::slice::from_ref(&crash));
    assert_eq!(stage, InstallStage::WaitingForK3s);
    assert_eq!(
        out,
        [(
            ClusterStep::ClusterStarted,
            StepOutcome::Failed("k3s is crash-looping: exit status 1".into())
        )]
    );
    let mut v = View::default();
    v.apply(&crash);
    let s = v.status();
    assert_eq!(s.state, ClusterState::Failed);
    assert!(s.message.contains("5 restarts"), "{}", s.message);
    assert!(s.message.contains("exit status 1"), "{}", s.message);
}

#[test]
fn the_dashboard_shows_node_pods_restarts_and_reasons() {
    let mut v = View::default();
    v.apply(&ClusterEvent::K3s(K3sState::Running {
        pid: 42,
        restarts: 0,
    }));
    assert_eq!(v.status().state, ClusterState::Starting);
    v.apply(&ClusterEvent::Readiness(Progress::Ready));
    v.apply(&ClusterEvent::Status(Box::new(KubeStatus {
        node: Some(NodeStatus {
            name: "gantry".into(),
            ready: true,
            kubelet_version: "v1.36.3+k3s1".into(),
            problem: None,
        }),
        pods: vec![
            PodStatus {
                name: "mongodb-0".into(),
                component: "mongodb".into(),
                phase: "Running".into(),
                ready: true,
                restarts: 0,
                ..Default::default()
            },
            PodStatus {
                name: "rocketchat-7d9".into(),
                component: "rocketchat".into(),
                phase: "Running".into(),
                ready: false,
                restarts: 3,
                reason: Some("CrashLoopBackOff".into()),
                message: None,
                last_log: Vec::new(),
            },
        ],
        mongo_primary: true,
        chat_ready: false,
    })));
    let s = v.status();
    assert_eq!(s.state, ClusterState::Running);
    let app = |n: &str| s.apps.iter().find(|a| a.name == n).unwrap().clone();
    assert_eq!(app("MongoDB").state, "primary");
    let chat = app("Rocket.Chat");
    assert_eq!(chat.state, "not ready");
    assert!(chat.detail.contains("3 restarts") && chat.detail.contains("CrashLoopBackOff"));
    assert_eq!(app("Node gantry").state, "ready");
    v.apply(&ClusterEvent::Error("status: connection refused".into()));
    assert!(
        v.status()
            .message
            .contains("last error: status: connection refused")
    );
}

#[test]
fn secrets_are_made_once_private_and_read_back_the_same() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster/secrets.json");
    let a = load_or_create_secrets(&path).unwrap();
    let b = load_or_create_secrets(&path).unwrap();
    assert_eq!(a.mongo_keyfile, b.mongo_keyfile);
    assert_eq!(a.mongo_root_password, b.mongo_root_password);
    assert!(!a.mongo_root_password.is_empty());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    std::fs::write(&path, "{not json").unwrap();
    let e = load_or_create_secrets(&path).unwrap_err();
    assert!(
        e.contains("secrets.json") && e.contains("not a Gantry secrets file"),
        "{e}"
    );
}

#[tokio::test]
async fn without_a_k3s_binary_install_fails_plainly_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = K3sCluster::new(K3sClusterOptions {
        k3s: StartOptions::new(dir.path().join("no-such-k3s"), dir.path()),
        timeouts: Timeouts::default(),
        status_interval: Duration::from_secs(5),
        retry: Duration::from_secs(1),
        secrets_file: dir.path().join("secrets.json"),
    });
    struct NoRoutes;
    impl RouteTarget for NoRoutes {
        fn context(&self) -> crate::ingress::ProxyContext {
            crate::ingress::ProxyContext::default()
        }
        fn set(&self, _: gantry_proxy::config::DynamicConfig) -> Result<u64, String> {
            Err("unused".into())
        }
    }
    assert!(
        cluster
            .spawn(Arc::new(NoRoutes), CancellationToken::new())
            .is_none()
    );
    let s = cluster.status();
    assert_eq!(s.state, ClusterState::Failed);
    assert!(s.message.contains("no k3s binary at"), "{}", s.message);
    let plan = InstallPlan {
        domain: "chat.example.com".into(),
        chat_admin: ChatAdmin {
            name: "A".into(),
            username: "a".into(),
            email: "a@example.com".into(),
            password: "secret-secret".into(),
        },
    };
    let seen = Mutex::new(Vec::new());
    cluster
        .install(&plan, &|s, o| seen.lock().unwrap().push((s, o)))
        .await;
    let seen = seen.into_inner().unwrap();
    assert!(matches!(
        &seen[0],
        (ClusterStep::ClusterStarted, StepOutcome::Failed(m)) if m.contains("no k3s binary")
    ));
    assert_eq!(seen.len(), 3);
    // Nothing was written: no credentials for a cluster that cannot run.
    assert!(!dir.path().join("secrets.json").exists());
}

#[test]
fn the_event_log_gets_state_changes_and_each_error_once() {
    let mut last = NotableState::default();
    let err = ClusterEvent::Error("apply: connection refused".into());
    let first = notable(&err, &mut last).unwrap();
    assert_eq!((first.0, first.1), (EventLevel::Warning, "cluster.error"));
    assert!(
        notable(&err, &mut last).is_none(),
        "a retried error is logged once"
    );
    let crash = ClusterEvent::K3s(K3sState::CrashLoop {
        last_exit: "exit code 1".into(),
        delay: Duration::from_secs(60),
        restarts: 5,
    });
    let (level, kind, msg) = notable(&crash, &mut last).unwrap();
    assert_eq!((level, kind), (EventLevel::Error, "cluster.k3s_crash_loop"));
    assert!(
        msg.contains("5 restarts") && msg.contains("exit code 1"),
        "{msg}"
    );
    assert!(
        notable(
            &ClusterEvent::Readiness(Progress::NodeNotReady("x".into())),
            &mut last
        )
        .is_none()
    );
    assert!(notable(&ClusterEvent::Install(Step::Done), &mut last).is_some());
    assert!(
        notable(&err, &mut last).is_some(),
        "after a success the error is news again"
    );
}
