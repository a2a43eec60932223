//! Makes every session Pod pass a Pod Security Standards level, or denies it
//! when the profile asks for something that level forbids.
//!
//! - `restricted` (the default): non-root, no privilege escalation, all
//!   capabilities dropped, RuntimeDefault seccomp. The Ship image starts as
//!   root and chowns `/workspace`; here it runs as `run_as_user`, so
//!   `fs_group` keeps the workspace writable. Ship's shell runs every command
//!   through `sudo -u shipyard`, which this level makes impossible: use it for
//!   runtimes that need no sudo.
//! - `baseline`: no privileged containers, host namespaces, host paths, host
//!   ports or capabilities beyond the container runtime's default set, and
//!   RuntimeDefault seccomp. Root and `sudo` keep working, so this is the
//!   level Ship runs with. For untrusted code, pair it with a sandboxed
//!   `runtime_class_name` (e.g. gVisor's `gvisor`): the kernel boundary is
//!   then the runtime's, not the node's.
//!
//! `profiles` overrides the level and runtime class per Bay profile id.

use berth_plugin_sdk::k8s_openapi::api::core::v1::{
    AppArmorProfile, Capabilities, PodSecurityContext, SELinuxOptions, SeccompProfile,
    SecurityContext, WindowsSecurityContextOptions,
};
use berth_plugin_sdk::{Container, Context, Hooks, Pod, Policy, Rejection, deny, export_policy};
use serde::Deserialize;
use std::collections::BTreeMap;

/// A Pod Security Standards level.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Baseline,
    #[default]
    Restricted,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// What one Bay profile gets instead of the defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSettings {
    pub level: Option<Level>,
    /// `""` clears a default runtime class for this profile.
    pub runtime_class_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The level every profile gets unless `profiles` says otherwise.
    pub level: Level,
    /// A RuntimeClass for session Pods (e.g. `gvisor`); unset by default.
    pub runtime_class_name: Option<String>,
    /// Per Bay profile id.
    pub profiles: BTreeMap<String, ProfileSettings>,
    pub run_as_user: i64,
    pub run_as_group: i64,
    /// Group that owns the workspace volume; `null` leaves it unset.
    pub fs_group: Option<i64>,
    /// `fsGroupChangePolicy` set with `fs_group`: `OnRootMismatch` (the
    /// default) re-owns the cargo only when its root is not the group's
    /// already; `Always` re-owns every file on every start, which makes
    /// large workspaces miss the start timeout. `null` leaves it unset.
    pub fs_group_change_policy: Option<String>,
    pub read_only_root_filesystem: bool,
    /// When true, a Pod that explicitly asks for something restricted forbids
    /// is denied; when false the ask is overwritten with the compliant value.
    pub deny_violations: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            level: Level::Restricted,
            runtime_class_name: None,
            profiles: BTreeMap::new(),
            run_as_user: 1000,
            run_as_group: 1000,
            fs_group: Some(1000),
            fs_group_change_policy: Some("OnRootMismatch".into()),
            read_only_root_filesystem: false,
            deny_violations: true,
        }
    }
}

pub struct Restricted;

/// The only capability restricted allows to be added.
const ALLOWED_ADD: &str = "NET_BIND_SERVICE";
/// What baseline allows to be added: the container runtime's default set.
const BASELINE_ADD: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
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

/// The sysctls every level allows (Pod Security Standards' safe set).
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// Baseline's SELinux control: no user or role, only the container types.
fn selinux_allowed(se: &SELinuxOptions) -> bool {
    se.user.is_none()
        && se.role.is_none()
        && matches!(
            se.type_.as_deref(),
            None | Some("")
                | Some("container_t")
                | Some("container_init_t")
                | Some("container_kvm_t")
                | Some("container_engine_t")
        )
}

/// The controls every level shares, on a Pod's or a container's security
/// context fields: AppArmor, SELinux, Windows host processes.
fn check_common(
    who: &str,
    name: &str,
    app_armor: Option<&AppArmorProfile>,
    se_linux: Option<&SELinuxOptions>,
    windows: Option<&WindowsSecurityContextOptions>,
) -> Result<(), Rejection> {
    if app_armor.is_some_and(|p| p.type_ == "Unconfined") {
        return Err(deny(format!(
            "{who} asks for an Unconfined AppArmor profile, which the {name} policy forbids"
        )));
    }
    if se_linux.is_some_and(|se| !selinux_allowed(se)) {
        return Err(deny(format!(
            "{who} asks for SELinux options (a user, a role or type outside container_t and its kin) the {name} policy forbids"
        )));
    }
    if windows.and_then(|w| w.host_process) == Some(true) {
        return Err(deny(format!(
            "{who} asks to run as a Windows host process, which the {name} policy forbids"
        )));
    }
    Ok(())
}

fn check_container(c: &Container, s: &Settings, level: Level, kind: &str) -> Result<(), Rejection> {
    let ports: Vec<i32> = c
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.host_port)
        .collect();
    check_context(&c.name, c.security_context.as_ref(), &ports, s, level, kind)
}

fn check_context(
    container: &str,
    context: Option<&SecurityContext>,
    host_ports: &[i32],
    s: &Settings,
    level: Level,
    kind: &str,
) -> Result<(), Rejection> {
    let who = format!("{kind} {container:?}");
    let name = level.name();
    if let Some(sc) = context {
        check_common(
            &who,
            name,
            sc.app_armor_profile.as_ref(),
            sc.se_linux_options.as_ref(),
            sc.windows_options.as_ref(),
        )?;
        if sc.privileged == Some(true) {
            return Err(deny(format!(
                "{who} asks to run privileged, which the {name} policy forbids"
            )));
        }
        if let Some(add) = sc.capabilities.as_ref().and_then(|c| c.add.as_ref()) {
            let allowed = |a: &String| match level {
                Level::Restricted => a.as_str() == ALLOWED_ADD,
                Level::Baseline => BASELINE_ADD.contains(&a.as_str()),
            };
            if let Some(bad) = add.iter().find(|a| !allowed(a)) {
                let only = match level {
                    Level::Restricted => ALLOWED_ADD.to_string(),
                    Level::Baseline => format!("the default set ({})", BASELINE_ADD.join(", ")),
                };
                return Err(deny(format!(
                    "{who} asks for capability {bad}; the {name} policy allows adding only {only}"
                )));
            }
        }
        if let Some(p) = &sc.seccomp_profile
            && p.type_ == "Unconfined"
        {
            return Err(deny(format!(
                "{who} asks for an Unconfined seccomp profile"
            )));
        }
        if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
            return Err(deny(format!(
                "{who} asks for procMount {:?}, which the {name} policy forbids",
                sc.proc_mount.as_deref().unwrap_or_default()
            )));
        }
        if level == Level::Restricted {
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
        }
    }
    if host_ports.iter().any(|p| *p != 0) {
        return Err(deny(format!(
            "{who} asks for a host port, which the {name} policy forbids"
        )));
    }
    Ok(())
}

/// Baseline keeps root, sudo and the runtime's default capabilities; it
/// only makes the settings it checks explicit.
fn harden_baseline(c: &mut Container) {
    let sc = c
        .security_context
        .get_or_insert_with(SecurityContext::default);
    sc.privileged = Some(false);
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
        if let Some(p) = &s.fs_group_change_policy
            && p != "OnRootMismatch"
            && p != "Always"
        {
            return Err(format!(
                "fs_group_change_policy must be OnRootMismatch or Always, got {p:?}"
            ));
        }
        Ok(())
    }

    fn shape_pod(s: &Settings, ctx: &Context, pod: &mut Pod) -> Result<(), Rejection> {
        let profile = s.profiles.get(&ctx.profile_id);
        let level = profile.and_then(|p| p.level).unwrap_or(s.level);
        let runtime_class = profile
            .and_then(|p| p.runtime_class_name.clone())
            .or_else(|| s.runtime_class_name.clone())
            .filter(|r| !r.is_empty());
        let name = level.name();
        let spec = pod
            .spec
            .as_mut()
            .ok_or_else(|| Rejection::Error("Pod has no spec".into()))?;
        if spec.host_network == Some(true)
            || spec.host_pid == Some(true)
            || spec.host_ipc == Some(true)
        {
            return Err(deny(format!(
                "the Pod asks for host namespaces (hostNetwork/hostPID/hostIPC), which the {name} policy forbids"
            )));
        }
        if let Some(v) = spec.volumes.iter().flatten().find(|v| match level {
            Level::Restricted => !volume_allowed(v),
            Level::Baseline => v.host_path.is_some(),
        }) {
            return Err(deny(format!(
                "volume {:?} is of a type the {name} policy forbids (e.g. hostPath)",
                v.name
            )));
        }
        for c in &spec.containers {
            check_container(c, s, level, "container")?;
        }
        for c in spec.init_containers.iter().flatten() {
            check_container(c, s, level, "init container")?;
        }
        for c in spec.ephemeral_containers.iter().flatten() {
            let ports: Vec<i32> = c
                .ports
                .iter()
                .flatten()
                .filter_map(|p| p.host_port)
                .collect();
            check_context(
                &c.name,
                c.security_context.as_ref(),
                &ports,
                s,
                level,
                "ephemeral container",
            )?;
        }
        for (key, value) in pod.metadata.annotations.iter().flatten() {
            if let Some(container) =
                key.strip_prefix("container.apparmor.security.beta.kubernetes.io/")
                && value != "runtime/default"
                && !value.starts_with("localhost/")
            {
                return Err(deny(format!(
                    "container {container:?} asks for AppArmor profile {value:?} (annotation), which the {name} policy forbids"
                )));
            }
        }
        if let Some(psc) = &spec.security_context {
            check_common(
                "the Pod",
                name,
                psc.app_armor_profile.as_ref(),
                psc.se_linux_options.as_ref(),
                psc.windows_options.as_ref(),
            )?;
            if let Some(bad) = psc
                .sysctls
                .iter()
                .flatten()
                .find(|x| !SAFE_SYSCTLS.contains(&x.name.as_str()))
            {
                return Err(deny(format!(
                    "the Pod asks for sysctl {}, outside the safe set the {name} policy allows",
                    bad.name
                )));
            }
            if level == Level::Restricted && psc.run_as_user == Some(0) {
                return Err(deny(
                    "the Pod asks to run as root (runAsUser 0), which the restricted policy forbids",
                ));
            }
            if psc
                .seccomp_profile
                .as_ref()
                .is_some_and(|p| p.type_ == "Unconfined")
            {
                return Err(deny(format!(
                    "the Pod asks for an Unconfined seccomp profile, which the {name} policy forbids"
                )));
            }
        }
        if let Some(rc) = runtime_class {
            spec.runtime_class_name = Some(rc);
        }

        let psc = spec
            .security_context
            .get_or_insert_with(PodSecurityContext::default);
        psc.seccomp_profile = Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        });
        if level == Level::Baseline {
            for c in spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten())
            {
                harden_baseline(c);
            }
            return Ok(());
        }
        psc.run_as_non_root = Some(true);
        psc.run_as_user = Some(s.run_as_user);
        psc.run_as_group = Some(s.run_as_group);
        if let Some(g) = s.fs_group {
            psc.fs_group = Some(g);
            if let Some(p) = &s.fs_group_change_policy {
                psc.fs_group_change_policy = Some(p.clone());
            }
        }
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
