//! What the host guards beyond identity, so no plugin can undo the
//! platform's guarantees:
//!
//! - **Guarded fields** (`Rule`): no plugin may change them unless its entry
//!   lifts that rule by name (`allow`). A sandbox's service account and
//!   token, its node, its finalizers and owners, the kinds of volume it
//!   gets (another user's cargo, a Secret, a projected token, a host path),
//!   a claim's data source, and the labels the session isolation policy
//!   trusts as a peer.
//! - **Mutation scope** (`mutation_scope`): when an entry lists JSON pointer
//!   prefixes, every change it makes (read from its JSON Patch) must fall
//!   under one of them: a scheduling plugin changes scheduling fields only.
//! - **Posture** (`pod_security`): the Pod that leaves the chain must meet a
//!   Pod Security Standards level; a violation is blamed on the plugin whose
//!   output first broke it (or on the request, when the Pod broke it before
//!   any plugin ran).
//!
//! All three read the plugin's output as JSON next to its input; the typed
//! parse stays at the end of the chain.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::harness::pss;

/// A guarded field, named as operators lift it in `allow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// `spec.serviceAccountName`, `spec.serviceAccount`, and
    /// `spec.automountServiceAccountToken` (which may only become `false`).
    ServiceAccount,
    /// `spec.nodeName`: placing a Pod by hand skips the scheduler and its
    /// taints.
    NodeName,
    /// `metadata.finalizers`: a finalizer no controller removes keeps the
    /// Pod (and the cargo it holds) forever.
    Finalizers,
    /// `metadata.ownerReferences`: an owner's deletion would take the
    /// session with it.
    OwnerReferences,
    /// Added or changed Pod volumes other than `emptyDir`, `configMap`,
    /// `downwardAPI` and `image`: another user's claim, an ephemeral claim
    /// cloned from one, a Secret (Berth's own tokens live in this
    /// namespace), a projected service account token, a host path.
    VolumeSources,
    /// A Secret a container did not reference before, through
    /// `env[].valueFrom.secretKeyRef` or `envFrom[].secretRef`: the same
    /// credentials a Secret volume would hand over.
    SecretReferences,
    /// A claim's `dataSource`, `dataSourceRef`, `volumeName` and `selector`:
    /// a cargo cloned from, or bound to, someone else's data.
    ClaimSource,
    /// The label pairs the session isolation NetworkPolicy lets in as
    /// peers: on a session Pod they would open every other sandbox to it.
    TrustedPeerLabels,
}

impl Rule {
    pub const ALL: [Rule; 8] = [
        Rule::ServiceAccount,
        Rule::NodeName,
        Rule::Finalizers,
        Rule::OwnerReferences,
        Rule::VolumeSources,
        Rule::SecretReferences,
        Rule::ClaimSource,
        Rule::TrustedPeerLabels,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rule::ServiceAccount => "service-account",
            Rule::NodeName => "node-name",
            Rule::Finalizers => "finalizers",
            Rule::OwnerReferences => "owner-references",
            Rule::VolumeSources => "volume-sources",
            Rule::SecretReferences => "secret-references",
            Rule::ClaimSource => "claim-source",
            Rule::TrustedPeerLabels => "trusted-peer-labels",
        }
    }
}

/// The Pod Security Standards level the chain's output must meet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurity {
    /// No check (the namespace's own admission still applies).
    None,
    /// What Bay's Ship image (root, `sudo`) runs with.
    #[default]
    Baseline,
    Restricted,
}

impl PodSecurity {
    /// The first violation of this level, as `"rule: detail"`.
    pub fn violation(self, pod: &Pod) -> Option<String> {
        self.violations(pod).into_iter().next()
    }

    /// Every violation of this level, each as `"rule: detail"`.
    pub fn violations(self, pod: &Pod) -> Vec<String> {
        let found = match self {
            PodSecurity::None => return Vec::new(),
            PodSecurity::Baseline => pss::check_baseline(pod),
            PodSecurity::Restricted => pss::check_restricted(pod),
        };
        found
            .into_iter()
            .map(|v| format!("{}: {}", v.rule, v.detail))
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            PodSecurity::None => "none",
            PodSecurity::Baseline => "baseline",
            PodSecurity::Restricted => "restricted",
        }
    }
}

/// What the host holds every chain to, from Berth's config.
#[derive(Clone, Debug)]
pub struct Guards {
    /// Prefix of Berth's managed labels (identity).
    pub label_prefix: String,
    /// Label pairs the isolation NetworkPolicy admits as peers.
    pub trusted_peer_labels: BTreeMap<String, String>,
    pub pod_security: PodSecurity,
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            label_prefix: "bay".into(),
            trusted_peer_labels: BTreeMap::new(),
            pod_security: PodSecurity::Baseline,
        }
    }
}

/// What one chain entry may change.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Rules lifted for this entry.
    pub allow: Vec<Rule>,
    /// JSON pointer prefixes every change must fall under (a `*` segment
    /// matches any one segment); `None`: anywhere the rules allow.
    pub mutation_scope: Option<Vec<String>>,
}

impl Scope {
    /// Checks `mutation_scope` syntax (RFC 6901 pointers, not the root).
    pub fn validate(scope: &[String]) -> Result<(), String> {
        for p in scope {
            if !p.starts_with('/') || p.len() < 2 {
                return Err(format!(
                    "mutation_scope entry {p:?} must be a JSON pointer below the root, like /spec/affinity"
                ));
            }
        }
        Ok(())
    }
}

/// A change the host does not allow, by whom is up to the caller.
#[derive(Debug, PartialEq)]
pub enum Breach {
    Rule { rule: Rule, path: String },
    OutOfScope { path: String },
}

// The guarded fields of an object, read through a narrow view: serde skips
// everything else without building it, several times cheaper than reading
// the whole object as a `Value` after every plugin. An explicit `null` reads
// as absent, as it does in the typed objects.
#[derive(Deserialize)]
struct View {
    metadata: Option<MetaView>,
    spec: Option<SpecView>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct MetaView {
    #[serde(skip_serializing_if = "Option::is_none")]
    finalizers: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_references: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<Value>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct SpecView {
    #[serde(skip_serializing_if = "Option::is_none")]
    service_account_name: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_account: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    automount_service_account_token: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_name: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volumes: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    containers: Option<Vec<ContainerView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    init_containers: Option<Vec<ContainerView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ephemeral_containers: Option<Vec<ContainerView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_source: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_source_ref: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_name: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    selector: Option<Value>,
}

/// What a container's environment takes from elsewhere.
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerView {
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    env_from: Option<Value>,
}

/// The guarded fields of the object in `text`, as a small JSON value for
/// [`check_step`]. Fails only on text that is not a JSON object.
pub fn guarded_fields(text: &str) -> Result<Value, serde_json::Error> {
    let v: View = serde_json::from_str(text)?;
    Ok(serde_json::json!({ "metadata": v.metadata, "spec": v.spec }))
}

/// Checks one plugin's change of the guarded fields, from `before` to
/// `after` (both as [`guarded_fields`] reads them, or whole objects).
pub fn check_step(
    kind: &str,
    before: &Value,
    after: &Value,
    scope: &Scope,
    guards: &Guards,
) -> Option<Breach> {
    let guarded = |rule: Rule| !scope.allow.contains(&rule);
    let at = |v: &Value, p: &str| v.pointer(p).cloned();
    let changed = |p: &str| at(before, p) != at(after, p);
    let rule = |rule: Rule, path: &str| {
        Some(Breach::Rule {
            rule,
            path: path.to_string(),
        })
    };
    if guarded(Rule::Finalizers) && changed("/metadata/finalizers") {
        return rule(Rule::Finalizers, "/metadata/finalizers");
    }
    if guarded(Rule::OwnerReferences) && changed("/metadata/ownerReferences") {
        return rule(Rule::OwnerReferences, "/metadata/ownerReferences");
    }
    if kind == "Pod" {
        if guarded(Rule::ServiceAccount) {
            for p in ["/spec/serviceAccountName", "/spec/serviceAccount"] {
                if changed(p) {
                    return rule(Rule::ServiceAccount, p);
                }
            }
            let p = "/spec/automountServiceAccountToken";
            if changed(p) && at(after, p) != Some(Value::Bool(false)) {
                return rule(Rule::ServiceAccount, p);
            }
        }
        if guarded(Rule::NodeName) && changed("/spec/nodeName") {
            return rule(Rule::NodeName, "/spec/nodeName");
        }
        if guarded(Rule::VolumeSources)
            && let Some(path) = new_volume_source(before, after)
        {
            return rule(Rule::VolumeSources, &path);
        }
        if guarded(Rule::SecretReferences) {
            let was = secret_refs(before);
            if let Some(secret) = secret_refs(after).into_iter().find(|s| !was.contains(s)) {
                return rule(
                    Rule::SecretReferences,
                    &format!("/spec/containers (env or envFrom of Secret {secret:?})"),
                );
            }
        }
        if guarded(Rule::TrustedPeerLabels) {
            let labels = |v: &Value| at(v, "/metadata/labels").unwrap_or(Value::Null);
            let (was, now) = (labels(before), labels(after));
            for (k, v) in &guards.trusted_peer_labels {
                let has = |l: &Value| l.get(k).and_then(Value::as_str) == Some(v.as_str());
                if has(&now) && !has(&was) {
                    return rule(
                        Rule::TrustedPeerLabels,
                        &format!("/metadata/labels/{}", escape(k)),
                    );
                }
            }
        }
    } else if guarded(Rule::ClaimSource) {
        for p in [
            "/spec/dataSource",
            "/spec/dataSourceRef",
            "/spec/volumeName",
            "/spec/selector",
        ] {
            if changed(p) {
                return rule(Rule::ClaimSource, p);
            }
        }
    }
    None
}

/// Checks every change from `before` to `after` (whole objects) against
/// the entry's `mutation_scope`, if it has one.
pub fn check_scope(before: &Value, after: &Value, scope: &Scope) -> Option<Breach> {
    let allowed = scope.mutation_scope.as_ref()?;
    json_patch::diff(before, after)
        .iter()
        .map(op_path)
        .find(|path| !allowed.iter().any(|a| under(path, a)))
        .map(|path| Breach::OutOfScope { path })
}

/// Volume kinds a plugin may add without `volume-sources`: they carry no
/// one else's data and no credentials.
const PLAIN_VOLUMES: &[&str] = &["name", "emptyDir", "configMap", "downwardAPI", "image"];

/// Every Secret the Pod's containers (of all kinds) read into their
/// environment.
fn secret_refs(v: &Value) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in v
            .pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let env = c.get("env").and_then(Value::as_array).into_iter().flatten();
            out.extend(env.filter_map(|e| {
                Some(
                    e.pointer("/valueFrom/secretKeyRef/name")?
                        .as_str()?
                        .to_string(),
                )
            }));
            let from = c
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten();
            out.extend(
                from.filter_map(|e| Some(e.pointer("/secretRef/name")?.as_str()?.to_string())),
            );
        }
    }
    out
}

/// The path of the first volume added or changed with a source outside
/// `PLAIN_VOLUMES`. Volumes are compared whole, not by name: a second
/// volume under a name already there is a new volume too.
fn new_volume_source(before: &Value, after: &Value) -> Option<String> {
    let list = |v: &Value| -> Vec<Value> {
        v.pointer("/spec/volumes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let was = list(before);
    for vol in list(after) {
        if was.contains(&vol) {
            continue;
        }
        let name = vol
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        if let Some(obj) = vol.as_object()
            && let Some(source) = obj
                .iter()
                .find(|(k, v)| !PLAIN_VOLUMES.contains(&k.as_str()) && !v.is_null())
                .map(|(k, _)| k)
        {
            return Some(format!("/spec/volumes[{name}]/{source}"));
        }
    }
    None
}

fn op_path(op: &json_patch::PatchOperation) -> String {
    use json_patch::PatchOperation as O;
    match op {
        O::Add(o) => o.path.to_string(),
        O::Remove(o) => o.path.to_string(),
        O::Replace(o) => o.path.to_string(),
        O::Move(o) => o.path.to_string(),
        O::Copy(o) => o.path.to_string(),
        O::Test(o) => o.path.to_string(),
    }
}

/// `path` is `prefix` or below it, segment by segment; a `*` segment in
/// the prefix matches any one segment (`/spec/containers/*/resources`).
fn under(path: &str, prefix: &str) -> bool {
    let mut path = path.split('/');
    prefix
        .split('/')
        .all(|want| path.next().is_some_and(|got| want == "*" || want == got))
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "metadata": { "name": "p", "labels": { "bay.managed": "true" } },
            "spec": {
                "automountServiceAccountToken": false,
                "containers": [{ "name": "ship", "image": "i" }],
                "volumes": [{ "name": "workspace", "persistentVolumeClaim": { "claimName": "cargo-a" } }]
            }
        })
    }

    fn guards() -> Guards {
        Guards {
            trusted_peer_labels: BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                "bay".to_string(),
            )]),
            ..Guards::default()
        }
    }

    fn breach(after: Value) -> Option<Breach> {
        // Through the narrow view, as the chain reads them.
        let read = |v: &Value| guarded_fields(&v.to_string()).unwrap();
        check_step(
            "Pod",
            &read(&pod()),
            &read(&after),
            &Scope::default(),
            &guards(),
        )
    }

    fn with(f: impl FnOnce(&mut Value)) -> Value {
        let mut p = pod();
        f(&mut p);
        p
    }

    #[test]
    fn each_guarded_field_is_caught() {
        let cases: Vec<(Rule, Value)> = vec![
            (
                Rule::ServiceAccount,
                with(|p| p["spec"]["serviceAccountName"] = json!("berth")),
            ),
            (
                Rule::ServiceAccount,
                with(|p| p["spec"]["automountServiceAccountToken"] = json!(true)),
            ),
            (
                Rule::ServiceAccount,
                with(|p| {
                    p["spec"]
                        .as_object_mut()
                        .unwrap()
                        .remove("automountServiceAccountToken");
                }),
            ),
            (
                Rule::NodeName,
                with(|p| p["spec"]["nodeName"] = json!("n1")),
            ),
            (
                Rule::Finalizers,
                with(|p| p["metadata"]["finalizers"] = json!(["x/hold"])),
            ),
            (
                Rule::OwnerReferences,
                with(|p| p["metadata"]["ownerReferences"] = json!([{ "name": "o" }])),
            ),
            (
                Rule::VolumeSources,
                with(|p| {
                    p["spec"]["volumes"].as_array_mut().unwrap().push(
                        json!({ "name": "theirs", "persistentVolumeClaim": { "claimName": "cargo-b" } }),
                    )
                }),
            ),
            (
                Rule::VolumeSources,
                with(|p| {
                    p["spec"]["volumes"].as_array_mut().unwrap().push(
                        json!({ "name": "tokens", "secret": { "secretName": "berth-tokens" } }),
                    )
                }),
            ),
            (
                Rule::VolumeSources,
                with(|p| {
                    p["spec"]["volumes"].as_array_mut().unwrap().push(
                        json!({ "name": "sa", "projected": { "sources": [{ "serviceAccountToken": { "path": "t" } }] } }),
                    )
                }),
            ),
            (
                Rule::SecretReferences,
                with(|p| {
                    p["spec"]["containers"][0]["envFrom"] =
                        json!([{ "secretRef": { "name": "berth-tokens" } }])
                }),
            ),
            (
                Rule::SecretReferences,
                with(|p| {
                    p["spec"]["containers"][0]["env"] = json!([{ "name": "T",
                        "valueFrom": { "secretKeyRef": { "name": "berth-tokens", "key": "tokens" } } }])
                }),
            ),
            (
                Rule::VolumeSources,
                with(|p| {
                    // A second volume under the workspace's own name.
                    p["spec"]["volumes"].as_array_mut().unwrap().insert(
                        0,
                        json!({ "name": "workspace", "secret": { "secretName": "berth-tokens" } }),
                    )
                }),
            ),
            (
                Rule::TrustedPeerLabels,
                with(|p| p["metadata"]["labels"]["app.kubernetes.io/name"] = json!("bay")),
            ),
        ];
        for (rule, after) in cases {
            match breach(after.clone()) {
                Some(Breach::Rule { rule: got, .. }) => assert_eq!(got, rule, "{after}"),
                other => panic!("{rule:?}: {other:?} for {after}"),
            }
        }
    }

    #[test]
    fn harmless_changes_pass_and_rules_can_be_lifted() {
        let ok = with(|p| {
            p["spec"]["automountServiceAccountToken"] = json!(false);
            p["spec"]["volumes"]
                .as_array_mut()
                .unwrap()
                .push(json!({ "name": "shm", "emptyDir": { "medium": "Memory" } }));
            p["spec"]["nodeSelector"] = json!({ "pool": "sandbox" });
            p["metadata"]["labels"]["app.kubernetes.io/name"] = json!("sandbox");
        });
        assert_eq!(breach(ok), None);
        let node = with(|p| p["spec"]["nodeName"] = json!("n1"));
        let lifted = Scope {
            allow: vec![Rule::NodeName],
            mutation_scope: None,
        };
        assert_eq!(check_step("Pod", &pod(), &node, &lifted, &guards()), None);
    }

    #[test]
    fn claims_keep_their_source() {
        let claim = json!({ "metadata": { "name": "cargo-a" }, "spec": { "resources": {} } });
        let mut cloned = claim.clone();
        cloned["spec"]["dataSource"] =
            json!({ "kind": "PersistentVolumeClaim", "name": "cargo-b" });
        assert_eq!(
            check_step(
                "PersistentVolumeClaim",
                &claim,
                &cloned,
                &Scope::default(),
                &guards()
            ),
            Some(Breach::Rule {
                rule: Rule::ClaimSource,
                path: "/spec/dataSource".into()
            })
        );
    }

    #[test]
    fn a_mutation_scope_holds_a_plugin_to_its_fields() {
        let scope = Scope {
            allow: vec![],
            mutation_scope: Some(vec!["/spec/affinity".into(), "/spec/tolerations".into()]),
        };
        let placed =
            with(|p| p["spec"]["tolerations"] = json!([{ "key": "k", "operator": "Exists" }]));
        assert_eq!(check_scope(&pod(), &placed, &scope), None);
        let strayed = with(|p| p["spec"]["hostNetwork"] = json!(false));
        assert_eq!(
            check_scope(&pod(), &strayed, &scope),
            Some(Breach::OutOfScope {
                path: "/spec/hostNetwork".into()
            })
        );
        // A prefix matches whole segments only; `*` matches any one.
        assert!(!under("/spec/affinityX", "/spec/affinity"));
        assert!(under("/spec/affinity/nodeAffinity", "/spec/affinity"));
        assert!(under(
            "/spec/containers/1/resources/limits",
            "/spec/containers/*/resources"
        ));
        assert!(!under(
            "/spec/containers/1/image",
            "/spec/containers/*/resources"
        ));
        assert!(!under("/spec", "/spec/containers/*/resources"));
    }
}
