//! The Pod and PVC Berth builds from a request, before any plugin runs.
//! Everything Bay's driver contract puts on them is here: labels, env,
//! resources, the workspace mount, pull policy and secrets.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, LocalObjectReference,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod,
    PodSpec, ResourceRequirements, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::config::Config;
use crate::error::Error;
use crate::labels::{self, LabelKeys};
use crate::model::{Cargo, ContainerSpec, Profile, Session};
use crate::plugin::SessionContext;
use crate::plugin::identity::WORKSPACE_VOLUME;
use crate::quantity;

pub const WORKSPACE_PATH: &str = "/workspace";

/// A validated request to build a session Pod.
pub struct SessionRequest<'a> {
    pub session: &'a Session,
    pub profile: &'a Profile,
    pub cargo: &'a Cargo,
    pub labels: &'a BTreeMap<String, String>,
    /// Bay's GC instance id (`settings.gc.get_instance_id()`), set as the
    /// `<prefix>.instance_id` label Bay's orphan GC lists by.
    pub instance_id: Option<&'a str>,
}

/// The Pod name of a session; Bay's `container_id`.
pub fn pod_name(config: &Config, session_id: &str) -> String {
    format!("{}-session-{session_id}", config.label_prefix)
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidRequest(msg.into())
}

/// Everything a Pod is built from, validated, in one place.
pub struct SessionPlan {
    pub pod_name: String,
    pub labels: BTreeMap<String, String>,
    pub containers: Vec<ContainerSpec>,
    pub context: SessionContext,
}

pub fn plan(config: &Config, req: &SessionRequest) -> Result<SessionPlan, Error> {
    let keys = LabelKeys::new(&config.label_prefix);
    let s = req.session;
    let mut own = vec![
        ("session.id", "session_id", s.id.as_str()),
        ("session.sandbox_id", "sandbox_id", s.sandbox_id.as_str()),
        ("profile.id", "profile_id", req.profile.id.as_str()),
        ("cargo.id", "cargo_id", req.cargo.id.as_str()),
    ];
    if let Some(owner) = &s.owner {
        own.push(("session.owner", "owner", owner.as_str()));
    }
    if let Some(instance) = req.instance_id {
        own.push(("instance_id", "instance_id", instance));
    }
    for (field, _, v) in &own {
        if v.is_empty() {
            return Err(invalid(format!("{field} must not be empty")));
        }
        labels::validate_label_value(v).map_err(|e| invalid(format!("{field}: {e}")))?;
    }
    let pod_name = pod_name(config, &s.id);
    labels::validate_dns_subdomain(&pod_name)
        .map_err(|e| invalid(format!("session.id gives Pod name {e}")))?;
    labels::validate_dns_subdomain(&req.cargo.driver_ref)
        .map_err(|e| invalid(format!("cargo.driver_ref: {e}")))?;
    labels::validate_labels(req.labels).map_err(|e| invalid(format!("labels: {e}")))?;
    // A session Pod with the label the isolation policy admits as a peer
    // could reach every other sandbox's runtime.
    for (k, v) in &config.network_policy.ingress_from_pods {
        if req.labels.get(k) == Some(v) {
            return Err(invalid(format!(
                "labels: {k}={v} is what the session isolation policy trusts as a peer; a session may not carry it"
            )));
        }
    }

    let containers = req.profile.container_specs().map_err(invalid)?;
    let mut seen = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        labels::validate_dns_label(&c.name)
            .map_err(|e| invalid(format!("profile.containers[{i}].name: {e}")))?;
        if seen.contains(&c.name) {
            // Two parts of one request that cannot both hold: a conflict,
            // and one JSON Schema cannot express.
            return Err(Error::Conflict(format!(
                "profile.containers[{i}].name {:?} is used twice",
                c.name
            )));
        }
        seen.push(c.name.clone());
        if c.image.trim().is_empty() {
            return Err(invalid(format!(
                "profile.containers[{i}].image must not be empty"
            )));
        }
        if c.runtime_port == 0 {
            return Err(invalid(format!(
                "profile.containers[{i}].runtime_port must be 1..=65535"
            )));
        }
        if let Some(r) = &c.resources {
            if !(r.cpus > 0.0 && r.cpus.is_finite()) {
                return Err(invalid(format!(
                    "profile.containers[{i}].resources.cpus must be a positive number"
                )));
            }
            quantity::bay_memory_to_k8s(&r.memory)
                .map_err(|e| invalid(format!("profile.containers[{i}].resources: {e}")))?;
        }
    }
    let primary = &containers[0];

    // Bay's labels first, then Berth's, so a caller cannot override Berth's.
    let mut out = req.labels.clone();
    for (_, key, v) in &own {
        out.insert(keys.key(key), v.to_string());
    }
    out.insert(keys.key("runtime_port"), primary.runtime_port.to_string());
    out.insert(keys.managed(), "true".into());

    let context = SessionContext {
        session_id: s.id.clone(),
        sandbox_id: s.sandbox_id.clone(),
        cargo_id: req.cargo.id.clone(),
        profile_id: req.profile.id.clone(),
        namespace: config.namespace.clone(),
        runtime_port: primary.runtime_port,
        containers: serde_json::to_string(&containers).unwrap_or_else(|_| "[]".into()),
        cargo_size_limit_mb: req.cargo.size_limit_mb,
        labels: out.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    Ok(SessionPlan {
        pod_name,
        labels: out,
        containers,
        context,
    })
}

fn env(req: &SessionRequest, spec: &ContainerSpec, multi: bool) -> Vec<EnvVar> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    vars.extend(req.profile.env.clone());
    vars.extend(spec.env.clone());
    // Bay resolves container > profile (> global, which its caller sends as
    // the profile's) and uses the winner whole.
    if let Some(p) = spec.proxy.as_ref().or(req.profile.proxy.as_ref()) {
        vars.extend(p.env());
    }
    vars.insert("BAY_SESSION_ID".into(), req.session.id.clone());
    vars.insert("BAY_SANDBOX_ID".into(), req.session.sandbox_id.clone());
    vars.insert("BAY_WORKSPACE_PATH".into(), WORKSPACE_PATH.into());
    if multi {
        vars.insert("BAY_CONTAINER_NAME".into(), spec.name.clone());
    }
    vars.into_iter()
        .map(|(name, value)| EnvVar {
            name,
            value: Some(value),
            value_from: None,
        })
        .collect()
}

fn resources(spec: &ContainerSpec, profile: &Profile) -> ResourceRequirements {
    let r = spec
        .resources
        .clone()
        .or_else(|| profile.resources.clone())
        .unwrap_or_default();
    // Contract: limit cpu = cpus, request cpu = cpus/2, memory request = limit.
    let memory = quantity::bay_memory_to_k8s(&r.memory).unwrap_or_else(|_| "1Gi".into());
    ResourceRequirements {
        limits: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(quantity::cpu(r.cpus))),
            ("memory".to_string(), Quantity(memory.clone())),
        ])),
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(quantity::cpu(r.cpus / 2.0))),
            ("memory".to_string(), Quantity(memory)),
        ])),
        ..Default::default()
    }
}

/// The session Pod as Berth builds it, before plugins.
pub fn session_pod(config: &Config, req: &SessionRequest, plan: &SessionPlan) -> Pod {
    let multi = plan.containers.len() > 1;
    let mut volumes = vec![Volume {
        name: WORKSPACE_VOLUME.into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: req.cargo.driver_ref.clone(),
            read_only: None,
        }),
        ..Default::default()
    }];
    let needs_shm = plan.containers.iter().any(|c| c.runtime_type == "browser");
    if needs_shm {
        // Browsers crash on the container runtime's 64 MiB /dev/shm.
        volumes.push(Volume {
            name: "dshm".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity("1Gi".into())),
            }),
            ..Default::default()
        });
    }
    let containers = plan
        .containers
        .iter()
        .map(|spec| {
            let mut mounts = vec![VolumeMount {
                name: WORKSPACE_VOLUME.into(),
                mount_path: WORKSPACE_PATH.into(),
                ..Default::default()
            }];
            if spec.runtime_type == "browser" {
                mounts.push(VolumeMount {
                    name: "dshm".into(),
                    mount_path: "/dev/shm".into(),
                    ..Default::default()
                });
            }
            Container {
                name: spec.name.clone(),
                image: Some(spec.image.clone()),
                image_pull_policy: Some(config.image_pull_policy.as_k8s().into()),
                env: Some(env(req, spec, multi)),
                ports: Some(vec![ContainerPort {
                    container_port: spec.runtime_port.into(),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                resources: Some(resources(spec, req.profile)),
                volume_mounts: Some(mounts),
                security_context: spec.security_context.clone(),
                ..Default::default()
            }
        })
        .collect();
    Pod {
        metadata: ObjectMeta {
            name: Some(plan.pod_name.clone()),
            namespace: Some(config.namespace.clone()),
            labels: Some(plan.labels.clone()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            volumes: Some(volumes),
            restart_policy: Some("Never".into()),
            // The Ship runtime has no use for Kubernetes credentials or the
            // cluster's service environment; both would leak to the sandbox.
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            image_pull_secrets: (!config.image_pull_secrets.is_empty()).then(|| {
                config
                    .image_pull_secrets
                    .iter()
                    .map(|n| LocalObjectReference { name: n.clone() })
                    .collect()
            }),
            termination_grace_period_seconds: Some(10),
            ..Default::default()
        }),
        status: None,
    }
}

/// The cargo PVC as Berth builds it, before plugins: `size_mb` MiB when the
/// caller gives a size, else the configured `default_storage_size`.
pub fn cargo_pvc(
    config: &Config,
    name: &str,
    labels: &BTreeMap<String, String>,
    size_mb: Option<u64>,
) -> PersistentVolumeClaim {
    let keys = LabelKeys::new(&config.label_prefix);
    let mut all = labels.clone();
    all.insert(keys.managed(), "true".into());
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(config.namespace.clone()),
            labels: Some(all),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(
                        size_mb
                            .map(|mb| format!("{mb}Mi"))
                            .unwrap_or_else(|| config.default_storage_size.clone()),
                    ),
                )])),
                limits: None,
            }),
            storage_class_name: config.storage_class.clone(),
            ..Default::default()
        }),
        status: None,
    }
}

/// The cargo size plugins see when the caller gave none: the configured
/// default size, in MiB.
pub fn default_size_mb(config: &Config) -> u64 {
    quantity::parse_bytes(&config.default_storage_size)
        .map(|b| b.div_ceil(1 << 20))
        .unwrap_or(1024)
}

/// The context plugins see for a cargo PVC.
pub fn cargo_context(
    config: &Config,
    name: &str,
    labels: &BTreeMap<String, String>,
    size_limit_mb: u64,
) -> SessionContext {
    let keys = LabelKeys::new(&config.label_prefix);
    let get = |k: &str| labels.get(&keys.key(k)).cloned().unwrap_or_default();
    SessionContext {
        session_id: get("session_id"),
        sandbox_id: get("sandbox_id"),
        cargo_id: labels
            .get(&keys.key("cargo_id"))
            .cloned()
            .unwrap_or_else(|| name.to_string()),
        profile_id: get("profile_id"),
        namespace: config.namespace.clone(),
        runtime_port: 0,
        containers: "[]".into(),
        cargo_size_limit_mb: size_limit_mb,
        labels: labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}
