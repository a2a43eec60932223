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
    Mount(Box<VolumeMount>),
}

/// A snapshot of the identity fields of one object, compared field by field
/// so a violation can name the field.
#[derive(Debug, PartialEq)]
pub struct Identity(Vec<(String, Field)>);

// The views accept whatever the typed k8s-openapi objects accept (every
// field optional, nulls as absent, unknown keys ignored), so they never
// reject an object the typed parse would take. Strings are borrowed from the
// text where JSON allows it, and only the workspace volume is parsed whole.
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
struct ObjectView<'a> {
    #[serde(borrow)]
    metadata: Option<MetaView<'a>>,
}

#[derive(Deserialize)]
struct PodView<'a> {
    #[serde(borrow)]
    metadata: Option<MetaView<'a>>,
    #[serde(borrow)]
    spec: Option<SpecView<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecView<'a> {
    #[serde(borrow)]
    volumes: Option<Vec<&'a RawValue>>,
    #[serde(borrow)]
    containers: Option<Vec<ContainerView<'a>>>,
    #[serde(borrow)]
    init_containers: Option<Vec<ContainerView<'a>>>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    name: Option<Text<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerView<'a> {
    #[serde(borrow)]
    name: Option<Text<'a>>,
    #[serde(borrow)]
    volume_mounts: Option<Vec<&'a RawValue>>,
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

/// The element of `list` named `name`, parsed as `T`.
fn find_named<T: serde::de::DeserializeOwned>(
    list: Option<Vec<&RawValue>>,
) -> Result<Option<T>, serde_json::Error> {
    for raw in list.into_iter().flatten() {
        let named: Named = serde_json::from_str(raw.get())?;
        if named.name.as_ref().is_some_and(|n| n.0 == WORKSPACE_VOLUME) {
            return serde_json::from_str(raw.get()).map(Some);
        }
    }
    Ok(None)
}

/// The identity-bearing parts of an object as they appear in its text,
/// borrowed: `metadata`, and for Pods the volume list and every container's
/// name and mounts. Identity is a function of these parts alone, so when they
/// are byte-for-byte those of the input, identity is unchanged without
/// reading any of it.
#[derive(Deserialize)]
struct RawObject<'a> {
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawPod<'a> {
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    spec: Option<RawSpec<'a>>,
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

fn raw(v: Option<&RawValue>) -> Option<&str> {
    v.map(RawValue::get)
}

/// The identity-bearing parts of `text`, in a fixed order.
fn fingerprint(text: &str, kind: IdentityKind) -> Result<Vec<Option<&str>>, serde_json::Error> {
    match kind {
        IdentityKind::Metadata => {
            let o: RawObject = serde_json::from_str(text)?;
            Ok(vec![raw(o.metadata)])
        }
        IdentityKind::Pod => {
            let p: RawPod = serde_json::from_str(text)?;
            let mut parts = vec![raw(p.metadata)];
            let (volumes, containers, init) = match p.spec {
                Some(s) => (s.volumes, s.containers, s.init_containers),
                None => (None, None, None),
            };
            parts.push(raw(volumes));
            for list in [containers, init] {
                // The count separates the lists: moving a container from one
                // to the other is a change.
                let list = list.unwrap_or_default();
                parts.push(Some(if list.is_empty() { "0" } else { "n" }));
                for c in list {
                    parts.push(raw(c.name));
                    parts.push(raw(c.volume_mounts));
                }
                parts.push(None);
            }
            Ok(parts)
        }
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
        let parts = fingerprint(input, kind)?
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
        let parts = fingerprint(output, self.kind)?;
        if parts.len() == self.parts.len()
            && parts
                .iter()
                .zip(&self.parts)
                .all(|(a, b)| *a == b.as_deref())
        {
            return Ok(None);
        }
        let after = Identity::read(output, self.kind, &self.label_prefix)?;
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
        match kind {
            IdentityKind::Metadata => {
                let v: ObjectView = serde_json::from_str(text)?;
                Ok(Identity::of_meta(v.metadata, label_prefix))
            }
            IdentityKind::Pod => {
                let v: PodView = serde_json::from_str(text)?;
                let mut id = Identity::of_meta(v.metadata, label_prefix);
                id.add_workspace(v.spec)?;
                Ok(id)
            }
        }
    }

    fn of_meta(meta: Option<MetaView>, label_prefix: &str) -> Identity {
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
        Identity(fields)
    }

    fn add_workspace(&mut self, spec: Option<SpecView>) -> Result<(), serde_json::Error> {
        let (volumes, containers, init) = match spec {
            Some(s) => (s.volumes, s.containers, s.init_containers),
            None => (None, None, None),
        };
        // Compared as typed objects, so key order and explicit nulls do not
        // count as changes.
        let workspace: Option<Volume> = find_named(volumes)?;
        self.0.push((
            format!("spec.volumes[{WORKSPACE_VOLUME}]"),
            Field::Volume(workspace.map(Box::new)),
        ));
        for (list, containers) in [("containers", containers), ("initContainers", init)] {
            for c in containers.into_iter().flatten() {
                if let Some(m) = find_named::<VolumeMount>(c.volume_mounts)? {
                    let name = c.name.as_ref().map(|n| &*n.0).unwrap_or("?");
                    self.0.push((
                        format!("spec.{list}[{name}].volumeMounts[{WORKSPACE_VOLUME}]"),
                        Field::Mount(Box::new(m)),
                    ));
                }
            }
        }
        Ok(())
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
        None
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
