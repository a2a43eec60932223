//! What no plugin may change: the fields that make an object Berth's.
//! Name, namespace, Berth's managed labels, and for Pods the cargo workspace
//! volume and every mount of it. (Kind and apiVersion are enforced by the
//! typed parse of every plugin's output.)
//!
//! Identity is read from the typed object the host parses anyway after each
//! plugin, so checking it costs a few clones rather than another pass over
//! the JSON.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Name of the volume that carries the cargo in every session Pod.
pub const WORKSPACE_VOLUME: &str = "workspace";

#[derive(Debug, PartialEq)]
enum Field {
    Text(Option<String>),
    Keys(Vec<String>),
    Volume(Option<Box<Volume>>),
    Mount(VolumeMount),
}

/// A snapshot of the identity fields of one object, compared field by field
/// so a violation can name the field.
#[derive(Debug, PartialEq)]
pub struct Identity(Vec<(String, Field)>);

/// An object whose identity the chain protects.
pub trait Identified {
    fn identity(&self, label_prefix: &str) -> Identity;
}

impl Identity {
    fn of_meta(meta: &ObjectMeta, label_prefix: &str) -> Identity {
        let mut fields = vec![
            ("metadata.name".to_string(), Field::Text(meta.name.clone())),
            (
                "metadata.namespace".to_string(),
                Field::Text(meta.namespace.clone()),
            ),
        ];
        let prefix = format!("{label_prefix}.");
        // BTreeMap iteration is sorted, so the key list compares as a set.
        let managed: Vec<(&String, &String)> = meta
            .labels
            .iter()
            .flatten()
            .filter(|(k, _)| k.starts_with(&prefix))
            .collect();
        fields.push((
            "managed label set".to_string(),
            Field::Keys(managed.iter().map(|(k, _)| (*k).clone()).collect()),
        ));
        fields.extend(managed.into_iter().map(|(k, v)| {
            (
                format!("metadata.labels[{k}]"),
                Field::Text(Some(v.clone())),
            )
        }));
        Identity(fields)
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

impl Identified for Pod {
    fn identity(&self, label_prefix: &str) -> Identity {
        let mut id = Identity::of_meta(&self.metadata, label_prefix);
        let spec = self.spec.as_ref();
        let workspace = spec
            .and_then(|s| s.volumes.as_ref())
            .and_then(|vs| vs.iter().find(|v| v.name == WORKSPACE_VOLUME))
            .map(|v| Box::new(v.clone()));
        id.0.push((
            format!("spec.volumes[{WORKSPACE_VOLUME}]"),
            Field::Volume(workspace),
        ));
        let lists = [
            ("containers", spec.map(|s| s.containers.as_slice())),
            (
                "initContainers",
                spec.and_then(|s| s.init_containers.as_deref()),
            ),
        ];
        for (list, containers) in lists {
            for c in containers.into_iter().flatten() {
                let mount = c
                    .volume_mounts
                    .iter()
                    .flatten()
                    .find(|m| m.name == WORKSPACE_VOLUME);
                if let Some(m) = mount {
                    id.0.push((
                        format!("spec.{list}[{}].volumeMounts[{WORKSPACE_VOLUME}]", c.name),
                        Field::Mount(m.clone()),
                    ));
                }
            }
        }
        id
    }
}

impl Identified for PersistentVolumeClaim {
    fn identity(&self, label_prefix: &str) -> Identity {
        Identity::of_meta(&self.metadata, label_prefix)
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
        serde_json::from_value::<Pod>(v.clone())
            .unwrap()
            .identity("bay")
    }

    #[test]
    fn unrelated_changes_pass() {
        let before = pod();
        let mut after = before.clone();
        after["metadata"]["labels"]["other"] = json!("y");
        after["spec"]["nodeSelector"] = json!({"a": "b"});
        after["spec"]["containers"][0]["volumeMounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "shm", "mountPath": "/dev/shm"}));
        assert_eq!(id(&before).violation(&id(&after)), None);
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
    fn pvc_identity_is_its_metadata() {
        let pvc = |name: &str| -> PersistentVolumeClaim {
            serde_json::from_value(
                json!({"metadata": {"name": name, "labels": {"bay.cargo_id": "c"}}}),
            )
            .unwrap()
        };
        assert_eq!(
            pvc("a")
                .identity("bay")
                .violation(&pvc("a").identity("bay")),
            None
        );
        assert_eq!(
            pvc("a")
                .identity("bay")
                .violation(&pvc("b").identity("bay"))
                .as_deref(),
            Some("metadata.name")
        );
    }
}
