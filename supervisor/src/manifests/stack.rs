//! The chat stack as typed Kubernetes objects: MongoDB 8.0 as a one-member replica set and
//! Rocket.Chat behind an Ingress of class `gantry`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment, StatefulSet,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, ExecAction, HTTPGetAction, Namespace, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, SecretVolumeSource,
    SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressClass, IngressClassSpec,
    IngressRule, IngressServiceBackend, IngressSpec, ServiceBackendPort,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::images::Pins;
use super::{ManifestError, Object, Stack};
use crate::ingress::{CLASS_NAME, CONTROLLER};

/// Label on every object Gantry renders; pruning deletes labelled objects it no longer renders.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "gantry");
/// Which rendering an object belongs to (pruning only touches this stack's objects).
pub const STACK_LABEL: &str = "gantry.io/stack";
pub const STACK_NAME: &str = "chat";
/// The stack's namespace unless settings say otherwise.
pub const DEFAULT_NAMESPACE: &str = "chat";

pub const MONGO_NAME: &str = "mongodb";
pub const MONGO_SECRET: &str = "mongodb";
pub const MONGO_PORT: i32 = 27017;
pub const REPLICA_SET: &str = "rs0";
pub const ROCKETCHAT_NAME: &str = "rocketchat";
pub const STORAGE_CLASS: &str = "gantry-retain";
/// The MongoDB image's `mongodb` user and group.
const MONGO_UID: i64 = 999;
/// The Rocket.Chat image's user (helm chart 7.x `runAsUser`/`fsGroup`).
const ROCKETCHAT_UID: i64 = 65533;

/// What an operator chooses (from the store's settings).
#[derive(Debug, Clone)]
pub struct StackSettings {
    /// The chat's public host name (`ROOT_URL=https://<domain>`, the Ingress host).
    pub domain: String,
    pub namespace: String,
    pub rocketchat_replicas: i32,
    pub admin_username: String,
    pub admin_email: String,
    pub mongo_storage: String,
    pub rocketchat_resources: Resources,
    pub mongo_resources: Resources,
}

#[derive(Debug, Clone)]
pub struct Resources {
    pub cpu_request: String,
    pub memory_request: String,
    pub memory_limit: String,
}

impl StackSettings {
    /// Defaults for a domain: one Rocket.Chat replica, 10 GiB for MongoDB, admin `admin`.
    pub fn new(domain: &str) -> StackSettings {
        StackSettings {
            domain: domain.to_ascii_lowercase(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            rocketchat_replicas: 1,
            admin_username: "admin".to_owned(),
            admin_email: format!("admin@{}", domain.to_ascii_lowercase()),
            mongo_storage: "10Gi".to_owned(),
            // The chart's commented example (300m / 512Mi); measured Rocket.Chat 8 heaps exceed
            // 1 GiB with a few hundred users, hence the limit.
            rocketchat_resources: Resources {
                cpu_request: "300m".to_owned(),
                memory_request: "512Mi".to_owned(),
                memory_limit: "2Gi".to_owned(),
            },
            mongo_resources: Resources {
                cpu_request: "250m".to_owned(),
                memory_request: "512Mi".to_owned(),
                memory_limit: "1Gi".to_owned(),
            },
        }
    }

    /// Checks what would otherwise produce an invalid object.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let bad = |m: String| Err(ManifestError::Settings(m));
        let d = &self.domain;
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if d.len() > 253 || !d.contains('.') || !d.split('.').all(label_ok) {
            return bad(format!("domain `{d}` is not a DNS name"));
        }
        if !self.namespace.split('.').all(label_ok) || self.namespace.contains('.') {
            return bad(format!("namespace `{}` is not a DNS label", self.namespace));
        }
        if !(0..=20).contains(&self.rocketchat_replicas) {
            return bad(format!(
                "Rocket.Chat replicas {} out of range 0..=20",
                self.rocketchat_replicas
            ));
        }
        if self.admin_username.is_empty() || !self.admin_email.contains('@') {
            return bad("the admin user needs a name and an e-mail address".to_owned());
        }
        Ok(())
    }
}

/// Generated credentials (kept in the store; rendered into Secrets).
#[derive(Clone)]
pub struct StackSecrets {
    pub mongo_root_password: String,
    /// Replica-set keyFile content (base64 alphabet, 6..=1024 characters).
    pub mongo_keyfile: String,
    pub rocketchat_db_password: String,
    pub admin_password: String,
}

impl std::fmt::Debug for StackSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StackSecrets(<redacted>)")
    }
}

impl StackSecrets {
    /// Fresh random credentials.
    pub fn generate() -> StackSecrets {
        use rand::Rng;
        use rand::distr::Alphanumeric;
        let word = |n: usize| -> String {
            rand::rng()
                .sample_iter(&Alphanumeric)
                .take(n)
                .map(char::from)
                .collect()
        };
        StackSecrets {
            mongo_root_password: word(32),
            mongo_keyfile: word(756),
            rocketchat_db_password: word(32),
            admin_password: word(20),
        }
    }
}

fn labels(component: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", component),
        ("app.kubernetes.io/part-of", "gantry"),
        (MANAGED_BY.0, MANAGED_BY.1),
        (STACK_LABEL, STACK_NAME),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn selector(component: &str) -> BTreeMap<String, String> {
    [("app.kubernetes.io/name".to_owned(), component.to_owned())].into()
}

fn meta(name: &str, ns: Option<&str>, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: ns.map(str::to_owned),
        labels: Some(labels(component)),
        ..Default::default()
    }
}

fn q(s: &str) -> Quantity {
    Quantity(s.to_owned())
}

fn resources(r: &super::stack::Resources) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(
            [
                ("cpu".to_owned(), q(&r.cpu_request)),
                ("memory".to_owned(), q(&r.memory_request)),
            ]
            .into(),
        ),
        limits: Some([("memory".to_owned(), q(&r.memory_limit))].into()),
        ..Default::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..Default::default()
    }
}

fn env_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_security(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn exec_probe(script: &str, period: i32, timeout: i32, failures: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["bash".to_owned(), "-c".to_owned(), script.to_owned()]),
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

fn http_probe(path: &str, period: i32, timeout: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// The DNS name clients (and the replica-set config) use for the one MongoDB member.
pub fn mongo_member_host(namespace: &str) -> String {
    format!("{MONGO_NAME}-0.{MONGO_NAME}.{namespace}.svc.cluster.local:{MONGO_PORT}")
}

/// Run inside the MongoDB container by its readiness probe.
pub const MONGO_READY_SCRIPT: &str =
    "mongosh --quiet --norc --eval 'db.hello().isWritablePrimary' | grep -qx true";

/// The init script of the official image (`/docker-entrypoint-initdb.d`, first start only, run
/// against a temporary local mongod by the root user): Rocket.Chat's own database user.
const CREATE_USER_JS: &str = r#"// Rendered by Gantry. Runs once, when /data/db is empty.
const pwd = process.env.ROCKETCHAT_DB_PASSWORD;
if (!pwd) { throw new Error("ROCKETCHAT_DB_PASSWORD is not set"); }
db.getSiblingDB("admin").createUser({
  user: "rocketchat",
  pwd: pwd,
  roles: [{ role: "readWrite", db: "rocketchat" }],
});
"#;

/// Renders the stack. Errors only on invalid settings or pins.
pub fn render(
    settings: &StackSettings,
    secrets: &StackSecrets,
    pins: &Pins,
) -> Result<Stack, ManifestError> {
    settings.validate()?;
    let ns = settings.namespace.as_str();
    let nsr = Some(ns);
    let mongo_image = pins.image("mongodb")?;
    let rc_image = pins.image("rocketchat")?;
    let mut objects = Vec::new();

    objects.push(Object::Namespace(Namespace {
        metadata: meta(ns, None, "gantry"),
        ..Default::default()
    }));

    // local-path, but Retain: deleting the claim must not delete the chat's database.
    objects.push(Object::StorageClass(StorageClass {
        metadata: meta(STORAGE_CLASS, None, "storage"),
        provisioner: "rancher.io/local-path".to_owned(),
        reclaim_policy: Some("Retain".to_owned()),
        volume_binding_mode: Some("WaitForFirstConsumer".to_owned()),
        allow_volume_expansion: Some(false),
        ..Default::default()
    }));

    // Gantry's proxy is the cluster's only ingress controller, hence the default class.
    let mut class_meta = meta(CLASS_NAME, None, "ingress");
    class_meta.annotations = Some(
        [(
            "ingressclass.kubernetes.io/is-default-class".to_owned(),
            "true".to_owned(),
        )]
        .into(),
    );
    objects.push(Object::IngressClass(IngressClass {
        metadata: class_meta,
        spec: Some(IngressClassSpec {
            controller: Some(CONTROLLER.to_owned()),
            ..Default::default()
        }),
    }));

    // ---- MongoDB ----
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    objects.push(Object::Secret(Secret {
        metadata: meta(MONGO_SECRET, nsr, MONGO_NAME),
        type_: Some("Opaque".to_owned()),
        data: Some(
            [
                ("root-username".to_owned(), bytes("root")),
                (
                    "root-password".to_owned(),
                    bytes(&secrets.mongo_root_password),
                ),
                ("keyfile".to_owned(), bytes(&secrets.mongo_keyfile)),
                (
                    "rocketchat-password".to_owned(),
                    bytes(&secrets.rocketchat_db_password),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    }));
    objects.push(Object::ConfigMap(ConfigMap {
        metadata: meta("mongodb-init", nsr, MONGO_NAME),
        data: Some(
            [(
                "10-rocketchat-user.js".to_owned(),
                CREATE_USER_JS.to_owned(),
            )]
            .into(),
        ),
        ..Default::default()
    }));
    objects.push(Object::Service(Service {
        metadata: meta(MONGO_NAME, nsr, MONGO_NAME),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            // The member must resolve its own DNS name before it is ready: readiness needs the
            // replica set, and the replica set is initiated with that name.
            publish_not_ready_addresses: Some(true),
            selector: Some(selector(MONGO_NAME)),
            ports: Some(vec![ServicePort {
                name: Some("mongodb".to_owned()),
                port: MONGO_PORT,
                target_port: Some(IntOrString::String("mongodb".to_owned())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }));
    let mongo_args: Vec<String> = [
        "mongod",
        "--replSet",
        REPLICA_SET,
        "--bind_ip_all",
        "--keyFile",
        "/keyfile/keyfile",
        // Bounded cache: WiredTiger's default is half of the memory minus 1 GiB of the node.
        "--wiredTigerCacheSizeGB",
        "0.25",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mongo_pod = PodSpec {
        security_context: Some(pod_security(MONGO_UID)),
        // mongod flushes and closes cleanly on SIGTERM; give it time (k3s' graceful node
        // shutdown gives pods the same budget on power-off).
        termination_grace_period_seconds: Some(60),
        init_containers: Some(vec![Container {
            name: "keyfile".to_owned(),
            image: Some(mongo_image.reference()),
            image_pull_policy: Some("IfNotPresent".to_owned()),
            // mongod refuses a keyFile readable by group or others; Secret volumes are
            // group-readable under fsGroup, so it is copied with mode 0400.
            command: Some(vec![
                "bash".to_owned(),
                "-c".to_owned(),
                "install -m 0400 /secret/keyfile /keyfile/keyfile".to_owned(),
            ]),
            volume_mounts: Some(vec![
                VolumeMount {
                    name: "keyfile-secret".to_owned(),
                    mount_path: "/secret".to_owned(),
                    read_only: Some(true),
                    ..Default::default()
                },
                VolumeMount {
                    name: "keyfile".to_owned(),
                    mount_path: "/keyfile".to_owned(),
                    ..Default::default()
                },
            ]),
            security_context: Some(restricted_container()),
            ..Default::default()
        }]),
        containers: vec![Container {
            name: "mongod".to_owned(),
            image: Some(mongo_image.reference()),
            image_pull_policy: Some("IfNotPresent".to_owned()),
            args: Some(mongo_args),
            env: Some(vec![
                env_secret("MONGO_INITDB_ROOT_USERNAME", MONGO_SECRET, "root-username"),
                env_secret("MONGO_INITDB_ROOT_PASSWORD", MONGO_SECRET, "root-password"),
                env_secret(
                    "ROCKETCHAT_DB_PASSWORD",
                    MONGO_SECRET,
                    "rocketchat-password",
                ),
            ]),
            ports: Some(vec![ContainerPort {
                name: Some("mongodb".to_owned()),
                container_port: MONGO_PORT,
                ..Default::default()
            }]),
            readiness_probe: Some(exec_probe(MONGO_READY_SCRIPT, 10, 10, 3)),
            liveness_probe: Some(Probe {
                initial_delay_seconds: Some(60),
                ..exec_probe(
                    "mongosh --quiet --norc --eval 'db.adminCommand({ping: 1}).ok' | grep -qx 1",
                    20,
                    10,
                    6,
                )
            }),
            resources: Some(resources(&settings.mongo_resources)),
            security_context: Some(restricted_container()),
            volume_mounts: Some(vec![
                VolumeMount {
                    name: "data".to_owned(),
                    mount_path: "/data/db".to_owned(),
                    ..Default::default()
                },
                VolumeMount {
                    name: "keyfile".to_owned(),
                    mount_path: "/keyfile".to_owned(),
                    read_only: Some(true),
                    ..Default::default()
                },
                VolumeMount {
                    name: "init".to_owned(),
                    mount_path: "/docker-entrypoint-initdb.d".to_owned(),
                    read_only: Some(true),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }],
        volumes: Some(vec![
            Volume {
                name: "keyfile-secret".to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(MONGO_SECRET.to_owned()),
                    default_mode: Some(0o440),
                    items: Some(vec![k8s_openapi::api::core::v1::KeyToPath {
                        key: "keyfile".to_owned(),
                        path: "keyfile".to_owned(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "keyfile".to_owned(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "init".to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: "mongodb-init".to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    objects.push(Object::StatefulSet(StatefulSet {
        metadata: meta(MONGO_NAME, nsr, MONGO_NAME),
        spec: Some(StatefulSetSpec {
            service_name: Some(MONGO_NAME.to_owned()),
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector(MONGO_NAME)),
                ..Default::default()
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(MONGO_NAME)),
                    ..Default::default()
                }),
                spec: Some(mongo_pod),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".to_owned()),
                    labels: Some(labels(MONGO_NAME)),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                    storage_class_name: Some(STORAGE_CLASS.to_owned()),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some([("storage".to_owned(), q(&settings.mongo_storage))].into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }));

    // ---- Rocket.Chat ----
    let mongo_url = format!(
        "mongodb://rocketchat:{}@{}/rocketchat?replicaSet={REPLICA_SET}&authSource=admin",
        secrets.rocketchat_db_password,
        mongo_member_host(ns)
    );
    objects.push(Object::Secret(Secret {
        metadata: meta(ROCKETCHAT_NAME, nsr, ROCKETCHAT_NAME),
        type_: Some("Opaque".to_owned()),
        data: Some(
            [
                ("mongo-url".to_owned(), bytes(&mongo_url)),
                ("admin-password".to_owned(), bytes(&secrets.admin_password)),
            ]
            .into(),
        ),
        ..Default::default()
    }));
    // Rocket.Chat 7.11 added /livez and /readyz; older tags only have /health.
    let (live, ready) = match rc_image.version() {
        Some(v) if v >= (7, 11) => ("/livez", "/readyz"),
        _ => ("/health", "/health"),
    };
    let rc_pod = PodSpec {
        security_context: Some(pod_security(ROCKETCHAT_UID)),
        termination_grace_period_seconds: Some(30),
        containers: vec![Container {
            name: "rocketchat".to_owned(),
            image: Some(rc_image.reference()),
            image_pull_policy: Some("IfNotPresent".to_owned()),
            env: Some(vec![
                env_secret("MONGO_URL", ROCKETCHAT_NAME, "mongo-url"),
                env("ROOT_URL", &format!("https://{}", settings.domain)),
                env("PORT", "3000"),
                env("DEPLOY_METHOD", "gantry"),
                env("DEPLOY_PLATFORM", "k3s"),
                EnvVar {
                    name: "INSTANCE_IP".to_owned(),
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "status.podIP".to_owned(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                env("ADMIN_USERNAME", &settings.admin_username),
                env("ADMIN_EMAIL", &settings.admin_email),
                env_secret("ADMIN_PASS", ROCKETCHAT_NAME, "admin-password"),
                env("OVERWRITE_SETTING_Show_Setup_Wizard", "completed"),
                // One proxy (Gantry's) in front: X-Forwarded-For has one hop to trust.
                env("HTTP_FORWARDED_COUNT", "1"),
            ]),
            ports: Some(vec![ContainerPort {
                name: Some("http".to_owned()),
                container_port: 3000,
                ..Default::default()
            }]),
            // Migrations on first start and after upgrades take minutes: up to 10 before the
            // liveness probe may restart it.
            startup_probe: Some(http_probe(live, 10, 5, 60)),
            liveness_probe: Some(http_probe(live, 15, 5, 3)),
            readiness_probe: Some(http_probe(ready, 10, 5, 3)),
            resources: Some(resources(&settings.rocketchat_resources)),
            security_context: Some(restricted_container()),
            ..Default::default()
        }],
        ..Default::default()
    };
    objects.push(Object::Deployment(Deployment {
        metadata: meta(ROCKETCHAT_NAME, nsr, ROCKETCHAT_NAME),
        spec: Some(DeploymentSpec {
            replicas: Some(settings.rocketchat_replicas),
            selector: LabelSelector {
                match_labels: Some(selector(ROCKETCHAT_NAME)),
                ..Default::default()
            },
            // The helm chart's strategy.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(ROCKETCHAT_NAME)),
                    ..Default::default()
                }),
                spec: Some(rc_pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }));
    let mut svc_meta = meta(ROCKETCHAT_NAME, nsr, ROCKETCHAT_NAME);
    // Sticky sessions: SockJS's XHR fallback must reach the instance holding the session when
    // there are several replicas (Rocket.Chat #27256); harmless with one.
    let sticky = "traefik.ingress.kubernetes.io/service.sticky.cookie";
    svc_meta.annotations = Some(
        [
            (sticky.to_owned(), "true".to_owned()),
            (format!("{sticky}.name"), "gantry_rc".to_owned()),
            (format!("{sticky}.secure"), "true".to_owned()),
            (format!("{sticky}.httponly"), "true".to_owned()),
            (format!("{sticky}.samesite"), "lax".to_owned()),
        ]
        .into(),
    );
    objects.push(Object::Service(Service {
        metadata: svc_meta,
        spec: Some(ServiceSpec {
            selector: Some(selector(ROCKETCHAT_NAME)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: 80,
                target_port: Some(IntOrString::String("http".to_owned())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }));
    objects.push(Object::Ingress(Ingress {
        metadata: ObjectMeta {
            // HTTPS only (plain HTTP falls through to Gantry's redirect), never on the admin
            // entrypoint: Traefik's own annotations, so the Ingress reads the same under Traefik.
            annotations: Some(
                [
                    (
                        "traefik.ingress.kubernetes.io/router.entrypoints".to_owned(),
                        "websecure".to_owned(),
                    ),
                    (
                        "traefik.ingress.kubernetes.io/router.tls".to_owned(),
                        "true".to_owned(),
                    ),
                ]
                .into(),
            ),
            ..meta(ROCKETCHAT_NAME, nsr, ROCKETCHAT_NAME)
        },
        spec: Some(IngressSpec {
            ingress_class_name: Some(CLASS_NAME.to_owned()),
            rules: Some(vec![IngressRule {
                host: Some(settings.domain.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".to_owned()),
                        path_type: "Prefix".to_owned(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: ROCKETCHAT_NAME.to_owned(),
                                port: Some(ServiceBackendPort {
                                    name: Some("http".to_owned()),
                                    ..Default::default()
                                }),
                            }),
                            ..Default::default()
                        },
                    }],
                }),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }));
    Ok(Stack { objects })
}
