//! Pod Security Standards, *restricted* profile (which includes *baseline*),
//! checked by the harness itself so a plugin author needs no cluster. Each
//! violation names the rule as the Kubernetes documentation does.
//! [`check_baseline`] keeps only the baseline controls.

use k8s_openapi::api::core::v1::{Capabilities, Pod, SecurityContext};

/// Volume types restricted allows.
const ALLOWED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];
const BASELINE_CAPS: &[&str] = &[
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

/// One failed rule: `rule` is the control's name, `detail` where and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub rule: &'static str,
    pub detail: String,
}

struct C<'a> {
    kind: &'static str,
    name: &'a str,
    sc: Option<&'a SecurityContext>,
    ports: Vec<i32>,
}

/// The controls of the *baseline* level, named as `check_restricted` names
/// them; restricted adds Volume Types, Privilege Escalation, the two
/// Non-root controls and the stricter Seccomp and Capabilities.
const BASELINE_RULES: &[&str] = &[
    "spec",
    "HostProcess",
    "Host Namespaces",
    "Privileged Containers",
    "Capabilities",
    "HostPath Volumes",
    "Host Ports",
    "AppArmor",
    "SELinux",
    "/proc Mount Type",
    "Seccomp",
    "Sysctls",
];

/// Pod Security Standards *baseline*: what Ship (root, `sudo`) can run with.
pub fn check_baseline(pod: &Pod) -> Vec<Violation> {
    check_restricted(pod)
        .into_iter()
        .filter(|v| BASELINE_RULES.contains(&v.rule))
        .collect()
}

pub fn check_restricted(pod: &Pod) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut v = |rule: &'static str, detail: String| out.push(Violation { rule, detail });
    let Some(spec) = &pod.spec else {
        v("spec", "the Pod has no spec".into());
        return out;
    };
    let psc = spec.security_context.as_ref();

    // Baseline.
    if spec.host_network == Some(true) || spec.host_pid == Some(true) || spec.host_ipc == Some(true)
    {
        v(
            "Host Namespaces",
            "hostNetwork, hostPID and hostIPC must be unset or false".into(),
        );
    }
    for vol in spec.volumes.iter().flatten() {
        let value = serde_json::to_value(vol).unwrap_or_default();
        let types: Vec<String> = value
            .as_object()
            .map(|m| m.keys().filter(|k| *k != "name").cloned().collect())
            .unwrap_or_default();
        for t in types {
            if t == "hostPath" {
                v(
                    "HostPath Volumes",
                    format!("volume {:?} is a hostPath", vol.name),
                );
            } else if !ALLOWED_VOLUMES.contains(&t.as_str()) {
                v(
                    "Volume Types",
                    format!(
                        "volume {:?} has type {t}, not allowed under restricted",
                        vol.name
                    ),
                );
            }
        }
    }
    for s in psc.and_then(|p| p.sysctls.as_ref()).into_iter().flatten() {
        if !SAFE_SYSCTLS.contains(&s.name.as_str()) {
            v(
                "Sysctls",
                format!("sysctl {} is not in the safe set", s.name),
            );
        }
    }
    if let Some(t) = psc.and_then(|p| p.seccomp_profile.as_ref())
        && t.type_ == "Unconfined"
    {
        v(
            "Seccomp",
            "pod seccompProfile.type must not be Unconfined".into(),
        );
    }
    if let Some(p) = psc.and_then(|p| p.app_armor_profile.as_ref())
        && p.type_ == "Unconfined"
    {
        v(
            "AppArmor",
            "pod appArmorProfile.type must not be Unconfined".into(),
        );
    }
    if psc
        .and_then(|p| p.se_linux_options.as_ref())
        .is_some_and(|se| !selinux_allowed(se))
    {
        v(
            "SELinux",
            "pod seLinuxOptions may set only an allowed type".into(),
        );
    }
    if psc
        .and_then(|p| p.windows_options.as_ref())
        .and_then(|w| w.host_process)
        == Some(true)
    {
        v(
            "HostProcess",
            "pod windowsOptions.hostProcess must not be true".into(),
        );
    }
    // The AppArmor annotations older clusters read, one per container.
    for (key, value) in pod.metadata.annotations.iter().flatten() {
        if let Some(container) = key.strip_prefix("container.apparmor.security.beta.kubernetes.io/")
            && value != "runtime/default"
            && !value.starts_with("localhost/")
        {
            v(
                "AppArmor",
                format!("container {container:?} has AppArmor annotation {value:?}"),
            );
        }
    }
    if psc.and_then(|p| p.run_as_user) == Some(0) {
        v(
            "Running as Non-root user",
            "pod runAsUser must not be 0".into(),
        );
    }

    // Containers, init containers and ephemeral containers are different
    // types with the same fields the rules read.
    macro_rules! view {
        ($kind:expr, $c:expr) => {
            C {
                kind: $kind,
                name: &$c.name,
                sc: $c.security_context.as_ref(),
                ports: $c
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| p.host_port)
                    .collect(),
            }
        };
    }
    let containers: Vec<C> = spec
        .containers
        .iter()
        .map(|c| view!("container", c))
        .chain(
            spec.init_containers
                .iter()
                .flatten()
                .map(|c| view!("init container", c)),
        )
        .chain(
            spec.ephemeral_containers
                .iter()
                .flatten()
                .map(|c| view!("ephemeral container", c)),
        )
        .collect();

    let pod_non_root = psc.and_then(|p| p.run_as_non_root) == Some(true);
    let pod_seccomp_ok = psc
        .and_then(|p| p.seccomp_profile.as_ref())
        .is_some_and(|s| s.type_ == "RuntimeDefault" || s.type_ == "Localhost");
    for c in &containers {
        let who = format!("{} {:?}", c.kind, c.name);
        let sc = c.sc;
        if sc.and_then(|s| s.privileged) == Some(true) {
            v("Privileged Containers", format!("{who} is privileged"));
        }
        let caps: Option<&Capabilities> = sc.and_then(|s| s.capabilities.as_ref());
        for add in caps.and_then(|c| c.add.as_ref()).into_iter().flatten() {
            if !BASELINE_CAPS.contains(&add.as_str()) {
                v(
                    "Capabilities",
                    format!("{who} adds {add}, beyond the baseline set"),
                );
            }
            if add != "NET_BIND_SERVICE" {
                v(
                    "Capabilities (restricted)",
                    format!("{who} adds {add}; only NET_BIND_SERVICE may be added"),
                );
            }
        }
        if !caps
            .and_then(|c| c.drop.as_ref())
            .is_some_and(|d| d.iter().any(|x| x == "ALL"))
        {
            v(
                "Capabilities (restricted)",
                format!("{who} must drop ALL capabilities"),
            );
        }
        if c.ports.iter().any(|p| *p != 0) {
            v("Host Ports", format!("{who} uses a hostPort"));
        }
        if sc
            .and_then(|s| s.app_armor_profile.as_ref())
            .is_some_and(|p| p.type_ == "Unconfined")
        {
            v(
                "AppArmor",
                format!("{who} appArmorProfile.type must not be Unconfined"),
            );
        }
        if sc
            .and_then(|s| s.se_linux_options.as_ref())
            .is_some_and(|se| !selinux_allowed(se))
        {
            v(
                "SELinux",
                format!("{who} seLinuxOptions may set only an allowed type"),
            );
        }
        if sc
            .and_then(|s| s.windows_options.as_ref())
            .and_then(|w| w.host_process)
            == Some(true)
        {
            v(
                "HostProcess",
                format!("{who} windowsOptions.hostProcess must not be true"),
            );
        }
        if sc
            .and_then(|s| s.seccomp_profile.as_ref())
            .is_some_and(|p| p.type_ == "Unconfined")
        {
            v(
                "Seccomp",
                format!("{who} seccompProfile.type must not be Unconfined"),
            );
        }
        if sc
            .and_then(|s| s.proc_mount.as_deref())
            .is_some_and(|m| m != "Default")
        {
            v(
                "/proc Mount Type",
                format!("{who} sets procMount other than Default"),
            );
        }
        if sc.and_then(|s| s.allow_privilege_escalation) != Some(false) {
            v(
                "Privilege Escalation",
                format!("{who} must set allowPrivilegeEscalation: false"),
            );
        }
        let non_root = match sc.and_then(|s| s.run_as_non_root) {
            Some(b) => b,
            None => pod_non_root,
        };
        if !non_root {
            v(
                "Running as Non-root",
                format!("{who} must run with runAsNonRoot: true (container or pod)"),
            );
        }
        if sc.and_then(|s| s.run_as_user) == Some(0) {
            v(
                "Running as Non-root user",
                format!("{who} sets runAsUser 0"),
            );
        }
        match sc.and_then(|s| s.seccomp_profile.as_ref()) {
            Some(p) if p.type_ == "RuntimeDefault" || p.type_ == "Localhost" => {}
            Some(p) => v(
                "Seccomp (restricted)",
                format!("{who} has seccompProfile {}", p.type_),
            ),
            None if pod_seccomp_ok => {}
            None => v(
                "Seccomp (restricted)",
                format!(
                    "{who} needs seccompProfile RuntimeDefault or Localhost (container or pod)"
                ),
            ),
        }
    }
    out
}

/// Baseline's SELinux control: no user or role, and only the container
/// types.
fn selinux_allowed(se: &k8s_openapi::api::core::v1::SELinuxOptions) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_baseline_rule_holds_at_container_level_too() {
        let cases = [
            (
                "AppArmor",
                serde_json::json!({"appArmorProfile": {"type": "Unconfined"}}),
            ),
            (
                "SELinux",
                serde_json::json!({"seLinuxOptions": {"type": "spc_t"}}),
            ),
            (
                "SELinux",
                serde_json::json!({"seLinuxOptions": {"user": "root"}}),
            ),
            (
                "HostProcess",
                serde_json::json!({"windowsOptions": {"hostProcess": true}}),
            ),
            (
                "Seccomp",
                serde_json::json!({"seccompProfile": {"type": "Unconfined"}}),
            ),
            (
                "/proc Mount Type",
                serde_json::json!({"procMount": "Unmasked"}),
            ),
        ];
        for (rule, sc) in cases {
            for list in ["containers", "initContainers", "ephemeralContainers"] {
                let mut spec = serde_json::json!({"containers": [{"name": "ship"}]});
                spec[list] = serde_json::json!([{"name": "x", "securityContext": sc}]);
                if list != "containers" {
                    spec["containers"] = serde_json::json!([{"name": "ship"}]);
                }
                let rules: Vec<_> = check_baseline(&pod(serde_json::json!({"spec": spec})))
                    .into_iter()
                    .map(|v| v.rule)
                    .collect();
                assert!(rules.contains(&rule), "{rule} in {list}: {rules:?}");
            }
        }
        let annotated = pod(serde_json::json!({
            "metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/ship": "unconfined"}},
            "spec": {"containers": [{"name": "ship"}]}}));
        assert_eq!(check_baseline(&annotated)[0].rule, "AppArmor");
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn compliant_pod_passes() {
        let p = pod(serde_json::json!({"spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [{"name": "w", "persistentVolumeClaim": {"claimName": "c"}}],
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}));
        assert_eq!(check_restricted(&p), vec![]);
    }

    #[test]
    fn a_root_pod_that_can_escalate_is_baseline_not_restricted() {
        let p = pod(serde_json::json!({"spec": {
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "ship", "securityContext": {"runAsUser": 0, "privileged": false}}]}}));
        assert_eq!(check_baseline(&p), vec![]);
        let rules: Vec<_> = check_restricted(&p).into_iter().map(|v| v.rule).collect();
        assert!(rules.contains(&"Privilege Escalation"), "{rules:?}");
        let privileged = pod(serde_json::json!({"spec": {
            "containers": [{"name": "ship", "securityContext": {"privileged": true}}]}}));
        assert_eq!(check_baseline(&privileged)[0].rule, "Privileged Containers");
    }

    #[test]
    fn each_rule_is_named() {
        let p = pod(serde_json::json!({"spec": {
            "hostNetwork": true,
            "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
            "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80}],
                "securityContext": {"privileged": true, "capabilities": {"add": ["SYS_ADMIN"]}, "runAsUser": 0}}]}}));
        let rules: Vec<_> = check_restricted(&p).into_iter().map(|v| v.rule).collect();
        for r in [
            "Host Namespaces",
            "HostPath Volumes",
            "Privileged Containers",
            "Capabilities",
            "Capabilities (restricted)",
            "Host Ports",
            "Privilege Escalation",
            "Running as Non-root",
            "Running as Non-root user",
            "Seccomp (restricted)",
        ] {
            assert!(rules.contains(&r), "{r} missing from {rules:?}");
        }
    }
}
