//! Makes every session Pod pass the Pod Security Standards *restricted*
//! profile, or denies it when the profile asks for something restricted
//! forbids (privileged containers, host namespaces, host paths, root, extra
//! capabilities).
//!
//! The Ship image starts as root and chowns `/workspace`; under this policy it
//! runs as `run_as_user`, so `fs_group` keeps the workspace writable.

use berth_plugin_sdk::k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, SeccompProfile, SecurityContext,
};
use berth_plugin_sdk::{Container, Context, Hooks, Pod, Policy, Rejection, deny, export_policy};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub run_as_user: i64,
    pub run_as_group: i64,
    /// Group that owns the workspace volume; `null` leaves it unset.
    pub fs_group: Option<i64>,
    pub read_only_root_filesystem: bool,
    /// When true, a Pod that explicitly asks for something restricted forbids
    /// is denied; when false the ask is overwritten with the compliant value.
    pub deny_violations: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            run_as_user: 1000,
            run_as_group: 1000,
            fs_group: Some(1000),
            read_only_root_filesystem: false,
            deny_violations: true,
        }
    }
}

pub struct Restricted;

/// The only capability restricted allows to be added.
const ALLOWED_ADD: &str = "NET_BIND_SERVICE";
/// Volume types restricted allows.
fn volume_allowed(v: &berth_plugin_sdk::k8s_openapi::api::core::v1::Volume) -> bool {
    v.host_path.is_none()
        && v.gce_persistent_disk.is_none()
        && v.aws_elastic_block_store.is_none()
        && v.git_repo.is_none()
        && v.nfs.is_none()
        && v.iscsi.is_none()
        && v.glusterfs.is_none()
        && v.rbd.is_none()
        && v.flex_volume.is_none()
        && v.cinder.is_none()
        && v.cephfs.is_none()
        && v.flocker.is_none()
        && v.fc.is_none()
        && v.azure_file.is_none()
        && v.azure_disk.is_none()
        && v.vsphere_volume.is_none()
        && v.quobyte.is_none()
        && v.photon_persistent_disk.is_none()
        && v.portworx_volume.is_none()
        && v.scale_io.is_none()
        && v.storageos.is_none()
}

fn check_container(c: &Container, s: &Settings, kind: &str) -> Result<(), Rejection> {
    let who = format!("{kind} {:?}", c.name);
    if let Some(sc) = &c.security_context {
        if sc.privileged == Some(true) {
            return Err(deny(format!(
                "{who} asks to run privileged, which the restricted policy forbids"
            )));
        }
        if sc.run_as_user == Some(0) {
            return Err(deny(format!(
                "{who} asks to run as root (runAsUser 0), which the restricted policy forbids"
            )));
        }
        if sc.run_as_non_root == Some(false) && s.deny_violations {
            return Err(deny(format!(
                "{who} sets runAsNonRoot=false, which the restricted policy forbids"
            )));
        }
        if sc.allow_privilege_escalation == Some(true) && s.deny_violations {
            return Err(deny(format!(
                "{who} asks for allowPrivilegeEscalation, which the restricted policy forbids"
            )));
        }
        if let Some(add) = sc.capabilities.as_ref().and_then(|c| c.add.as_ref())
            && let Some(bad) = add.iter().find(|a| a.as_str() != ALLOWED_ADD)
        {
            return Err(deny(format!(
                "{who} asks for capability {bad}; the restricted policy allows adding only {ALLOWED_ADD}"
            )));
        }
        if let Some(p) = &sc.seccomp_profile
            && p.type_ == "Unconfined"
        {
            return Err(deny(format!(
                "{who} asks for an Unconfined seccomp profile"
            )));
        }
    }
    if c.ports
        .iter()
        .flatten()
        .any(|p| p.host_port.unwrap_or(0) != 0)
    {
        return Err(deny(format!(
            "{who} asks for a host port, which the restricted policy forbids"
        )));
    }
    Ok(())
}

fn harden(c: &mut Container, s: &Settings) {
    let sc = c
        .security_context
        .get_or_insert_with(SecurityContext::default);
    sc.privileged = Some(false);
    sc.allow_privilege_escalation = Some(false);
    sc.run_as_non_root = Some(true);
    let caps = sc.capabilities.get_or_insert_with(Capabilities::default);
    caps.drop = Some(vec!["ALL".to_string()]);
    caps.add = caps
        .add
        .take()
        .map(|a| {
            a.into_iter()
                .filter(|x| x == ALLOWED_ADD)
                .collect::<Vec<_>>()
        })
        .filter(|a| !a.is_empty());
    if sc
        .seccomp_profile
        .as_ref()
        .is_some_and(|p| p.type_ == "Unconfined")
    {
        sc.seccomp_profile = None;
    }
    if s.read_only_root_filesystem {
        sc.read_only_root_filesystem = Some(true);
    }
}

impl Policy for Restricted {
    type Settings = Settings;
    const NAME: &'static str = "restricted";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: Hooks = Hooks::POD;

    fn validate(s: &Settings) -> Result<(), String> {
        if s.run_as_user <= 0 {
            return Err(format!(
                "run_as_user must be a non-root uid (> 0), got {}",
                s.run_as_user
            ));
        }
        if s.run_as_group < 0 {
            return Err(format!("run_as_group must be >= 0, got {}", s.run_as_group));
        }
        if let Some(g) = s.fs_group
            && g < 0
        {
            return Err(format!("fs_group must be >= 0, got {g}"));
        }
        Ok(())
    }

    fn shape_pod(s: &Settings, _ctx: &Context, pod: &mut Pod) -> Result<(), Rejection> {
        let spec = pod
            .spec
            .as_mut()
            .ok_or_else(|| Rejection::Error("Pod has no spec".into()))?;
        if spec.host_network == Some(true)
            || spec.host_pid == Some(true)
            || spec.host_ipc == Some(true)
        {
            return Err(deny(
                "the Pod asks for host namespaces (hostNetwork/hostPID/hostIPC), which the restricted policy forbids",
            ));
        }
        if let Some(v) = spec.volumes.iter().flatten().find(|v| !volume_allowed(v)) {
            return Err(deny(format!(
                "volume {:?} is of a type the restricted policy forbids (e.g. hostPath)",
                v.name
            )));
        }
        for c in &spec.containers {
            check_container(c, s, "container")?;
        }
        for c in spec.init_containers.iter().flatten() {
            check_container(c, s, "init container")?;
        }
        if let Some(psc) = &spec.security_context
            && psc.run_as_user == Some(0)
        {
            return Err(deny(
                "the Pod asks to run as root (runAsUser 0), which the restricted policy forbids",
            ));
        }

        let psc = spec
            .security_context
            .get_or_insert_with(PodSecurityContext::default);
        psc.run_as_non_root = Some(true);
        psc.run_as_user = Some(s.run_as_user);
        psc.run_as_group = Some(s.run_as_group);
        if let Some(g) = s.fs_group {
            psc.fs_group = Some(g);
        }
        psc.seccomp_profile = Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        });
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            harden(c, s);
        }
        for c in spec.ephemeral_containers.iter_mut().flatten() {
            let sc = c
                .security_context
                .get_or_insert_with(SecurityContext::default);
            sc.allow_privilege_escalation = Some(false);
            sc.capabilities = Some(Capabilities {
                add: None,
                drop: Some(vec!["ALL".into()]),
            });
        }
        Ok(())
    }
}

export_policy!(Restricted);
