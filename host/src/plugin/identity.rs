//! What no plugin may change: the fields that make an object Berth's.
//! Name, namespace, kind, Berth's managed labels, and for Pods the cargo
//! workspace volume and every mount of it.

use serde_json::Value;

/// Name of the volume that carries the cargo in every session Pod.
pub const WORKSPACE_VOLUME: &str = "workspace";

/// A snapshot of the identity fields of one object, compared field by field
/// so a violation can name the field.
#[derive(Debug, PartialEq)]
pub struct Identity(Vec<(String, Value)>);

impl Identity {
    pub fn of(object: &Value, label_prefix: &str) -> Identity {
        let mut fields = vec![
            ("apiVersion".to_string(), object["apiVersion"].clone()),
            ("kind".to_string(), object["kind"].clone()),
            (
                "metadata.name".to_string(),
                object["metadata"]["name"].clone(),
            ),
            (
                "metadata.namespace".to_string(),
                object["metadata"]["namespace"].clone(),
            ),
        ];
        let prefix = format!("{label_prefix}.");
        let labels = object["metadata"]["labels"].as_object();
        let mut managed: Vec<(String, Value)> = labels
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, v)| (format!("metadata.labels[{k}]"), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        managed.sort_by(|a, b| a.0.cmp(&b.0));
        fields.push((
            "managed label set".to_string(),
            Value::from(managed.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()),
        ));
        fields.extend(managed);

        if let Some(volumes) = object["spec"]["volumes"].as_array() {
            let ws = volumes
                .iter()
                .find(|v| v["name"] == WORKSPACE_VOLUME)
                .cloned()
                .unwrap_or(Value::Null);
            fields.push((format!("spec.volumes[{WORKSPACE_VOLUME}]"), ws));
        } else if object["kind"] == "Pod" {
            fields.push((format!("spec.volumes[{WORKSPACE_VOLUME}]"), Value::Null));
        }
        for list in ["containers", "initContainers"] {
            for c in object["spec"][list].as_array().into_iter().flatten() {
                let mount = c["volumeMounts"]
                    .as_array()
                    .and_then(|ms| ms.iter().find(|m| m["name"] == WORKSPACE_VOLUME).cloned())
                    .unwrap_or(Value::Null);
                if !mount.is_null() {
                    let name = c["name"].as_str().unwrap_or("?");
                    fields.push((
                        format!("spec.{list}[{name}].volumeMounts[{WORKSPACE_VOLUME}]"),
                        mount,
                    ));
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"n","labels":{"bay.session_id":"s","other":"x"}},
               "spec":{"volumes":[{"name":"workspace","persistentVolumeClaim":{"claimName":"c"}}],
                       "containers":[{"name":"ship","volumeMounts":[{"name":"workspace","mountPath":"/workspace"}]}]}})
    }

    #[test]
    fn unrelated_changes_pass() {
        let before = pod();
        let mut after = before.clone();
        after["metadata"]["labels"]["other"] = json!("y");
        after["spec"]["nodeSelector"] = json!({"a": "b"});
        assert_eq!(
            Identity::of(&before, "bay").violation(&Identity::of(&after, "bay")),
            None
        );
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
            assert_eq!(
                Identity::of(&before, "bay")
                    .violation(&Identity::of(&after, "bay"))
                    .as_deref(),
                Some(field)
            );
        }
    }
}
