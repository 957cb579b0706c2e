//! Golden file of the rendered stack (`supervisor/tests/fixtures/manifests/stack.yaml`; set
//! `GANTRY_UPDATE_GOLDEN=1` to rewrite it and review the diff) and checks of what matters in it.

use std::path::Path;

use super::*;
use crate::ingress::{ClusterObjects, Options, translate};

fn fixed_secrets() -> StackSecrets {
    StackSecrets {
        mongo_root_password: "root-password-for-tests".to_owned(),
        mongo_keyfile: "a".repeat(756),
        rocketchat_db_password: "rocketchat-db-password".to_owned(),
        admin_password: "admin-password".to_owned(),
    }
}

fn stack() -> Stack {
    render(
        &StackSettings::new("chat.example.com"),
        &fixed_secrets(),
        &Pins::embedded().unwrap(),
    )
    .unwrap()
}

#[test]
fn golden_stack() {
    let got = stack().to_yaml().unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifests/stack.yaml");
    if std::env::var_os("GANTRY_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "rendered stack differs from {} (rerun with GANTRY_UPDATE_GOLDEN=1 and review):\n{got}",
        path.display()
    );
}

fn find<'a>(s: &'a Stack, kind: &str, name: &str) -> &'a Object {
    s.objects
        .iter()
        .find(|o| o.kind() == kind && o.name() == name)
        .unwrap_or_else(|| panic!("{kind} {name} not rendered"))
}

#[test]
fn mongodb_is_a_one_member_replica_set_with_keyfile_and_retained_storage() {
    let s = stack();
    let Object::StatefulSet(sts) = find(&s, "StatefulSet", "mongodb") else {
        unreachable!()
    };
    let spec = sts.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.service_name.as_deref(), Some("mongodb"));
    let pod = spec.template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    let args = c.args.as_ref().unwrap().join(" ");
    assert!(
        args.contains("--replSet rs0") && args.contains("--bind_ip_all"),
        "{args}"
    );
    assert!(args.contains("--keyFile /keyfile/keyfile"), "{args}");
    assert!(
        c.image
            .as_ref()
            .unwrap()
            .starts_with("docker.io/library/mongo:8.0.")
    );
    let ready = c.readiness_probe.as_ref().unwrap().exec.as_ref().unwrap();
    assert!(ready.command.as_ref().unwrap()[2].contains("db.hello().isWritablePrimary"));
    let mounts: Vec<&str> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert!(mounts.contains(&"/data/db"));
    let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
    assert_eq!(
        claim.spec.as_ref().unwrap().storage_class_name.as_deref(),
        Some(STORAGE_CLASS)
    );
    let Object::StorageClass(sc) = find(&s, "StorageClass", STORAGE_CLASS) else {
        unreachable!()
    };
    assert_eq!(sc.reclaim_policy.as_deref(), Some("Retain"));
    assert_eq!(sc.provisioner, "rancher.io/local-path");
    let Object::Service(svc) = find(&s, "Service", "mongodb") else {
        unreachable!()
    };
    let svc = svc.spec.as_ref().unwrap();
    assert_eq!(svc.cluster_ip.as_deref(), Some("None"));
    assert_eq!(svc.publish_not_ready_addresses, Some(true));
}

#[test]
fn rocketchat_environment_probes_and_security() {
    let s = stack();
    let Object::Deployment(d) = find(&s, "Deployment", "rocketchat") else {
        unreachable!()
    };
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let sec = pod.security_context.as_ref().unwrap();
    assert_eq!((sec.run_as_user, sec.fs_group), (Some(65533), Some(65533)));
    let c = &pod.containers[0];
    let env: std::collections::BTreeMap<&str, Option<&str>> = c
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert_eq!(env["ROOT_URL"], Some("https://chat.example.com"));
    assert_eq!(env["PORT"], Some("3000"));
    assert_eq!(env["HTTP_FORWARDED_COUNT"], Some("1"));
    assert_eq!(
        env["OVERWRITE_SETTING_Show_Setup_Wizard"],
        Some("completed")
    );
    assert_eq!(env["ADMIN_USERNAME"], Some("admin"));
    assert!(env.contains_key("DEPLOY_METHOD") && env.contains_key("ADMIN_PASS"));
    assert_eq!(env["MONGO_URL"], None, "MONGO_URL comes from the Secret");
    let Object::Secret(secret) = find(&s, "Secret", "rocketchat") else {
        unreachable!()
    };
    let url = String::from_utf8(secret.data.as_ref().unwrap()["mongo-url"].0.clone()).unwrap();
    assert_eq!(
        url,
        "mongodb://rocketchat:rocketchat-db-password@mongodb-0.mongodb.chat.svc.cluster.local:27017/rocketchat?replicaSet=rs0&authSource=admin"
    );
    let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .clone()
            .unwrap()
    };
    // Pinned Rocket.Chat is 8.x: the /livez and /readyz endpoints exist.
    assert_eq!(path(&c.liveness_probe), "/livez");
    assert_eq!(path(&c.readiness_probe), "/readyz");
    assert!(c.resources.as_ref().unwrap().limits.is_some());
}

#[test]
fn older_rocketchat_tags_fall_back_to_health() {
    let mut pins = Pins::embedded().unwrap();
    pins.images.get_mut("rocketchat").unwrap().tag = "7.10.15".to_owned();
    let s = render(
        &StackSettings::new("chat.example.com"),
        &fixed_secrets(),
        &pins,
    )
    .unwrap();
    let Object::Deployment(d) = find(&s, "Deployment", "rocketchat") else {
        unreachable!()
    };
    let c = &d
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    let p = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(p.path.as_deref(), Some("/health"));
}

#[test]
fn every_object_is_labelled_for_pruning() {
    for o in &stack().objects {
        let l = o.metadata().labels.as_ref().unwrap();
        assert_eq!(
            l.get(MANAGED_BY.0).map(String::as_str),
            Some(MANAGED_BY.1),
            "{}",
            o.describe()
        );
        assert_eq!(
            l.get(STACK_LABEL).map(String::as_str),
            Some(STACK_NAME),
            "{}",
            o.describe()
        );
    }
}

/// The rendered Ingress and Service route through Gantry's own Ingress translation.
#[test]
fn the_stack_routes_through_the_ingress_provider() {
    let s = stack();
    let mut objs = ClusterObjects::default();
    let yaml = s.to_yaml().unwrap();
    let skipped = objs.add_yaml("stack.yaml", &yaml);
    // Namespace, StorageClass, ConfigMap, StatefulSet and Deployment do not matter to routing.
    assert_eq!(skipped.len(), 5, "{skipped:?}");
    let t = translate(&objs, &Options::default());
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let r = &t.config.http.routers["chat-rocketchat-chat-example-com"];
    assert_eq!(r.rule, "Host(`chat.example.com`) && PathPrefix(`/`)");
    let lb = &t.config.http.services["chat-rocketchat-http"].load_balancer;
    assert!(
        lb.servers.is_empty(),
        "no EndpointSlice yet: 503 until Rocket.Chat is ready"
    );
    assert_eq!(
        lb.sticky.as_ref().unwrap().cookie.name.as_deref(),
        Some("gantry_rc")
    );
}

#[test]
fn invalid_settings_are_refused() {
    let pins = Pins::embedded().unwrap();
    for domain in [
        "",
        "localhost",
        "chat..example.com",
        "chat.example.com\nkind: Pod",
        "-a.example.com",
    ] {
        let e = render(&StackSettings::new(domain), &fixed_secrets(), &pins).unwrap_err();
        assert!(
            e.to_string().contains("is not a DNS name"),
            "{domain:?}: {e}"
        );
    }
    let mut s = StackSettings::new("chat.example.com");
    s.rocketchat_replicas = 99;
    assert!(render(&s, &fixed_secrets(), &pins).is_err());
}

#[test]
fn generated_secrets_are_random_and_valid_keyfiles() {
    let a = StackSecrets::generate();
    let b = StackSecrets::generate();
    assert_ne!(a.mongo_root_password, b.mongo_root_password);
    assert!((6..=1024).contains(&a.mongo_keyfile.len()));
    assert!(a.mongo_keyfile.bytes().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(format!("{a:?}"), "StackSecrets(<redacted>)");
}

#[test]
fn write_dir_writes_one_file_per_object() {
    let dir = tempfile::tempdir().unwrap();
    let files = stack().write_dir(dir.path()).unwrap();
    assert_eq!(files.len(), stack().objects.len());
    assert!(files[0].ends_with("01-namespace-chat.yaml"), "{files:?}");
}
