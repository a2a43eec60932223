//! What no plugin may change: the fields that make an object Berth's.
//! Name, namespace, Berth's managed labels, and for Pods the cargo workspace
//! volume and every mount of it. (Kind and apiVersion are enforced by the
//! typed parse of the object that leaves the chain.)
//!
//! Identity is read straight from a plugin's JSON output through a narrow
//! view that skips everything else: a fraction of the cost of building the
//! whole typed object after every plugin.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Volume, VolumeMount};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Name of the volume that carries the cargo in every session Pod.
pub const WORKSPACE_VOLUME: &str = "workspace";

#[derive(Debug, PartialEq)]
enum Field {
    Text(Option<String>),
    Keys(Vec<String>),
    Volume(Option<Box<Volume>>),
    Mounts(Vec<VolumeMount>),
}

/// A snapshot of the identity fields of one object, compared field by field
/// so a violation can name the field.
#[derive(Debug, PartialEq)]
pub struct Identity(Vec<(String, Field)>);

// The view below accepts whatever the typed k8s-openapi objects accept
// (every field optional, nulls as absent, unknown keys ignored), so it never
// rejects an object the typed parse would take. Strings are borrowed from the
// text where JSON allows it.
#[derive(Deserialize)]
struct MetaView<'a> {
    #[serde(borrow)]
    name: Option<Text<'a>>,
    #[serde(borrow)]
    namespace: Option<Text<'a>>,
    #[serde(borrow)]
    labels: Option<BTreeMap<Text<'a>, Text<'a>>>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    name: Option<Text<'a>>,
}

/// A JSON string, borrowed unless it had escapes to undo.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

fn text(t: Option<Text>) -> Option<String> {
    t.map(|t| t.0.into_owned())
}

/// Every element of the JSON list `list` named like the workspace, as `T`.
fn all_named<T: serde::de::DeserializeOwned>(
    list: Option<&RawValue>,
) -> Result<Vec<T>, serde_json::Error> {
    let list: Option<Vec<&RawValue>> = match list {
        Some(l) => serde_json::from_str(l.get())?,
        None => None,
    };
    let mut out = Vec::new();
    for raw in list.into_iter().flatten() {
        let named: Named = serde_json::from_str(raw.get())?;
        if named.name.as_ref().is_some_and(|n| n.0 == WORKSPACE_VOLUME) {
            out.push(serde_json::from_str(raw.get())?);
        }
    }
    Ok(out)
}

/// The first element of the JSON list `list` named like the workspace.
fn find_named<T: serde::de::DeserializeOwned>(
    list: Option<&RawValue>,
) -> Result<Option<T>, serde_json::Error> {
    Ok(all_named(list)?.into_iter().next())
}

/// The identity-bearing parts of an object as they appear in its text,
/// borrowed: `metadata`, and for Pods the volume list and every container's
/// name and mounts. Identity is a function of these parts alone, so when they
/// are byte-for-byte those of the input, identity is unchanged without
/// reading any of it.
#[derive(Deserialize)]
struct Parts<'a> {
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    spec: Option<RawSpec<'a>>,
}

/// A PVC's spec carries no identity, and keys a Pod spec would have mean
/// nothing there: it is not read.
#[derive(Deserialize)]
struct MetadataOnly<'a> {
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec<'a> {
    #[serde(borrow)]
    volumes: Option<&'a RawValue>,
    #[serde(borrow)]
    containers: Option<Vec<RawContainer<'a>>>,
    #[serde(borrow)]
    init_containers: Option<Vec<RawContainer<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawContainer<'a> {
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    volume_mounts: Option<&'a RawValue>,
}

impl<'a> Parts<'a> {
    fn of(text: &'a str, kind: IdentityKind) -> Result<Parts<'a>, serde_json::Error> {
        match kind {
            IdentityKind::Pod => serde_json::from_str(text),
            IdentityKind::Metadata => {
                let m: MetadataOnly = serde_json::from_str(text)?;
                Ok(Parts {
                    metadata: m.metadata,
                    spec: None,
                })
            }
        }
    }

    /// Container lists by name, an absent list as empty.
    fn lists(&self) -> [(&'static str, &[RawContainer<'a>]); 2] {
        let spec = self.spec.as_ref();
        [
            ("containers", spec.and_then(|s| s.containers.as_deref())),
            (
                "initContainers",
                spec.and_then(|s| s.init_containers.as_deref()),
            ),
        ]
        .map(|(list, c)| (list, c.unwrap_or_default()))
    }

    /// The parts as text, in a fixed order.
    fn fingerprint(&self, kind: IdentityKind) -> Vec<Option<&'a str>> {
        let raw = |v: Option<&'a RawValue>| v.map(RawValue::get);
        let mut parts = vec![raw(self.metadata)];
        if kind == IdentityKind::Pod {
            parts.push(raw(self.spec.as_ref().and_then(|s| s.volumes)));
            for (_, list) in self.lists() {
                // The count separates the lists: moving a container from one
                // to the other is a change.
                parts.push(Some(if list.is_empty() { "0" } else { "n" }));
                for c in list {
                    parts.push(raw(c.name));
                    parts.push(raw(c.volume_mounts));
                }
                parts.push(None);
            }
        }
        parts
    }
}

/// Guards one object's identity through a chain: checks each plugin's
/// output against the input, cheaply when the identity-bearing text is
/// unchanged (the usual case), field by field when it is not.
pub struct Guard {
    kind: IdentityKind,
    label_prefix: String,
    input: String,
    parts: Vec<Option<String>>,
    identity: std::sync::OnceLock<Identity>,
}

impl Guard {
    pub fn new(
        input: &str,
        kind: IdentityKind,
        label_prefix: &str,
    ) -> Result<Guard, serde_json::Error> {
        let parts = Parts::of(input, kind)?
            .fingerprint(kind)
            .into_iter()
            .map(|p| p.map(str::to_string))
            .collect();
        Ok(Guard {
            kind,
            label_prefix: label_prefix.to_string(),
            input: input.to_string(),
            parts,
            identity: std::sync::OnceLock::new(),
        })
    }

    /// The first identity field `output` changed, if any. Fails only on
    /// text the typed parse would refuse too.
    pub fn check(&self, output: &str) -> Result<Option<String>, serde_json::Error> {
        let raw = Parts::of(output, self.kind)?;
        let parts = raw.fingerprint(self.kind);
        if parts.len() == self.parts.len()
            && parts
                .iter()
                .zip(&self.parts)
                .all(|(a, b)| *a == b.as_deref())
        {
            return Ok(None);
        }
        let after = Identity::of(&raw, self.kind, &self.label_prefix)?;
        let before = match self.identity.get() {
            Some(before) => before,
            None => {
                let before = Identity::read(&self.input, self.kind, &self.label_prefix)?;
                self.identity.get_or_init(|| before)
            }
        };
        Ok(before.violation(&after))
    }
}

/// Which identity an object has: Pods also carry the workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityKind {
    Pod,
    Metadata,
}

impl Identity {
    /// Reads the identity of the object in `text`. Fails only on text the
    /// typed parse would refuse too.
    pub fn read(
        text: &str,
        kind: IdentityKind,
        label_prefix: &str,
    ) -> Result<Identity, serde_json::Error> {
        Identity::of(&Parts::of(text, kind)?, kind, label_prefix)
    }

    fn of(
        parts: &Parts,
        kind: IdentityKind,
        label_prefix: &str,
    ) -> Result<Identity, serde_json::Error> {
        let meta: Option<MetaView> = match parts.metadata {
            Some(m) => serde_json::from_str(m.get())?,
            None => None,
        };
        let (name, namespace, labels) = match meta {
            Some(m) => (m.name, m.namespace, m.labels.unwrap_or_default()),
            None => (None, None, BTreeMap::new()),
        };
        let mut fields = vec![
            ("metadata.name".to_string(), Field::Text(text(name))),
            (
                "metadata.namespace".to_string(),
                Field::Text(text(namespace)),
            ),
        ];
        let prefix = format!("{label_prefix}.");
        // BTreeMap iteration is sorted, so the key list compares as a set.
        let managed: Vec<(Text, Text)> = labels
            .into_iter()
            .filter(|(k, _)| k.0.starts_with(&prefix))
            .collect();
        fields.push((
            "managed label set".to_string(),
            Field::Keys(managed.iter().map(|(k, _)| k.0.to_string()).collect()),
        ));
        fields.extend(managed.into_iter().map(|(k, v)| {
            (
                format!("metadata.labels[{}]", k.0),
                Field::Text(Some(v.0.into_owned())),
            )
        }));
        if kind == IdentityKind::Metadata {
            return Ok(Identity(fields));
        }
        // Compared as typed objects, so key order and explicit nulls do not
        // count as changes.
        let workspace: Option<Volume> = find_named(parts.spec.as_ref().and_then(|s| s.volumes))?;
        fields.push((
            format!("spec.volumes[{WORKSPACE_VOLUME}]"),
            Field::Volume(workspace.map(Box::new)),
        ));
        for (list, containers) in parts.lists() {
            for c in containers {
                // Every mount of the workspace, not just the first: a second
                // mount elsewhere in the container is a change too.
                let mounts = all_named::<VolumeMount>(c.volume_mounts)?;
                if !mounts.is_empty() {
                    let name: Option<Text> = match c.name {
                        Some(n) => serde_json::from_str(n.get())?,
                        None => None,
                    };
                    let name = name.as_ref().map(|n| &*n.0).unwrap_or("?");
                    fields.push((
                        format!("spec.{list}[{name}].volumeMounts[{WORKSPACE_VOLUME}]"),
                        Field::Mounts(mounts),
                    ));
                }
            }
        }
        Ok(Identity(fields))
    }

    /// The first field that differs in `after`, by name. Containers that
    /// disappear take their workspace mount with them, which counts.
    pub fn violation(&self, after: &Identity) -> Option<String> {
        for (key, before) in &self.0 {
            let now = after.0.iter().find(|(k, _)| k == key).map(|(_, v)| v);
            if now != Some(before) {
                return Some(key.clone());
            }
        }
        // And nothing new: a container that now mounts the workspace.
        after
            .0
            .iter()
            .find(|(k, _)| !self.0.iter().any(|(b, _)| b == k))
            .map(|(k, _)| k.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn pod() -> Value {
        json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"n","labels":{"bay.session_id":"s","other":"x"}},
               "spec":{"volumes":[{"name":"workspace","persistentVolumeClaim":{"claimName":"c"}}],
                       "containers":[{"name":"ship","volumeMounts":[{"name":"workspace","mountPath":"/workspace"}]}]}})
    }

    fn id(v: &Value) -> Identity {
        Identity::read(&v.to_string(), IdentityKind::Pod, "bay").unwrap()
    }

    #[test]
    fn new_mounts_of_the_workspace_are_caught() {
        let before = pod();
        let mut second = before.clone();
        second["spec"]["containers"][0]["volumeMounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "workspace", "mountPath": "/elsewhere"}));
        assert_eq!(
            id(&before).violation(&id(&second)).as_deref(),
            Some("spec.containers[ship].volumeMounts[workspace]")
        );
        let mut sidecar = before.clone();
        sidecar["spec"]["containers"].as_array_mut().unwrap().push(
            json!({"name": "spy", "volumeMounts": [{"name": "workspace", "mountPath": "/w"}]}),
        );
        assert_eq!(
            id(&before).violation(&id(&sidecar)).as_deref(),
            Some("spec.containers[spy].volumeMounts[workspace]")
        );
    }

    #[test]
    fn unrelated_changes_pass() {
        let before = pod();
        let mut after = before.clone();
        after["metadata"]["labels"]["other"] = json!("y");
        after["spec"]["nodeSelector"] = json!({"a": "b"});
        // Same workspace volume, other key order and an explicit null.
        after["spec"]["volumes"][0] =
            json!({"persistentVolumeClaim":{"claimName":"c"},"emptyDir":null,"name":"workspace"});
        after["spec"]["containers"][0]["volumeMounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "shm", "mountPath": "/dev/shm"}));
        assert_eq!(id(&before).violation(&id(&after)), None);
    }

    #[test]
    fn escaped_strings_read_as_what_they_encode() {
        let plain = pod().to_string();
        let escaped = plain
            .replace("\"bay.session_id\"", "\"\\u0062ay.session_id\"")
            .replace("\"name\":\"p\"", "\"name\":\"\\u0070\"");
        assert_ne!(plain, escaped);
        let read = |t: &str| Identity::read(t, IdentityKind::Pod, "bay").unwrap();
        assert_eq!(read(&plain).violation(&read(&escaped)), None);
    }

    #[test]
    fn each_identity_field_is_caught() {
        type Mutation = fn(&mut Value);
        let cases: Vec<(Mutation, &str)> = vec![
            (|p| p["metadata"]["name"] = json!("q"), "metadata.name"),
            (
                |p| p["metadata"]["namespace"] = json!("q"),
                "metadata.namespace",
            ),
            (
                |p| p["metadata"]["labels"]["bay.session_id"] = json!("t"),
                "metadata.labels[bay.session_id]",
            ),
            (
                |p| {
                    p["metadata"]["labels"]
                        .as_object_mut()
                        .unwrap()
                        .remove("bay.session_id");
                },
                "managed label set",
            ),
            (
                |p| p["metadata"]["labels"]["bay.extra"] = json!("t"),
                "managed label set",
            ),
            (
                |p| p["spec"]["volumes"] = json!([]),
                "spec.volumes[workspace]",
            ),
            (
                |p| p["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] = json!("other"),
                "spec.volumes[workspace]",
            ),
            (
                |p| p["spec"]["containers"][0]["volumeMounts"][0]["mountPath"] = json!("/tmp"),
                "spec.containers[ship].volumeMounts[workspace]",
            ),
            (
                |p| p["spec"]["containers"] = json!([]),
                "spec.containers[ship].volumeMounts[workspace]",
            ),
        ];
        for (mutate, field) in cases {
            let before = pod();
            let mut after = before.clone();
            mutate(&mut after);
            assert_eq!(id(&before).violation(&id(&after)).as_deref(), Some(field));
        }
    }

    #[test]
    fn the_guard_agrees_with_the_field_by_field_check() {
        let input = pod().to_string();
        let guard = Guard::new(&input, IdentityKind::Pod, "bay").unwrap();
        assert_eq!(guard.check(&input).unwrap(), None);
        // Text that differs but means the same: the slow path says so.
        let reordered = input.replace(
            "{\"name\":\"workspace\",\"persistentVolumeClaim\":{\"claimName\":\"c\"}}",
            "{\"persistentVolumeClaim\":{\"claimName\":\"c\"},\"name\":\"workspace\"}",
        );
        assert_ne!(reordered, input);
        assert_eq!(guard.check(&reordered).unwrap(), None);
        let mut renamed = pod();
        renamed["metadata"]["name"] = json!("q");
        assert_eq!(
            guard.check(&renamed.to_string()).unwrap().as_deref(),
            Some("metadata.name")
        );
        let mut moved = pod();
        let ship = moved["spec"]["containers"][0].take();
        moved["spec"]["containers"] = json!([]);
        moved["spec"]["initContainers"] = json!([ship]);
        assert_eq!(
            guard.check(&moved.to_string()).unwrap().as_deref(),
            Some("spec.containers[ship].volumeMounts[workspace]")
        );
        assert!(guard.check("[1]").is_err());
    }

    #[test]
    fn pvc_identity_is_its_metadata() {
        // A PVC's spec is not read: keys a Pod would have mean nothing there.
        let pvc = |name: &str| {
            let text = json!({"metadata": {"name": name, "labels": {"bay.cargo_id": "c"}}, "spec": {"containers": 5}});
            Identity::read(&text.to_string(), IdentityKind::Metadata, "bay").unwrap()
        };
        assert_eq!(pvc("a").violation(&pvc("a")), None);
        assert_eq!(
            pvc("a").violation(&pvc("b")).as_deref(),
            Some("metadata.name")
        );
    }
}
