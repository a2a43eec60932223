//! The manifests in deploy/, rendered by kustomize as `kubectl apply -k
//! deploy/` does, against the real control plane: the API server accepts
//! every object, and Berth running with nothing but the ServiceAccount's
//! token (the Role's verbs) takes its plugins from the ConfigMap and drives
//! a whole session, while SubjectAccessReviews show what it cannot do.

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::PostParams;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn manifests(ns: &str) -> Vec<Value> {
    let kustomize =
        stdout_of(std::process::Command::new("bash").arg(repo_root().join("tests/kustomize.sh")));
    let text = stdout_of(
        std::process::Command::new(kustomize.trim())
            .arg("build")
            .arg(repo_root().join("deploy")),
    );
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let mut v = <Value as serde::Deserialize>::deserialize(d).unwrap();
            if v["metadata"]["namespace"].is_string() {
                v["metadata"]["namespace"] = json!(ns);
            }
            if let Some(subjects) = v["subjects"].as_array_mut() {
                for s in subjects {
                    s["namespace"] = json!(ns);
                }
            }
            v
        })
        .collect()
}

async fn create<K>(client: &kube::Client, ns: &str, v: &Value, dry_run: bool)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let obj: K = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", v["kind"]));
    let pp = PostParams {
        dry_run,
        ..Default::default()
    };
    Api::<K>::namespaced(client.clone(), ns)
        .create(&pp, &obj)
        .await
        .unwrap_or_else(|e| panic!("{} refused: {e}", v["kind"]));
}

async fn allowed(
    client: &kube::Client,
    ns: &str,
    verb: &str,
    resource: &str,
    subresource: Option<&str>,
    group: &str,
) -> bool {
    allowed_named(client, ns, verb, resource, subresource, group, None).await
}

async fn allowed_named(
    client: &kube::Client,
    ns: &str,
    verb: &str,
    resource: &str,
    subresource: Option<&str>,
    group: &str,
    name: Option<&str>,
) -> bool {
    let sar: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": format!("system:serviceaccount:{ns}:berth"),
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
            "resourceAttributes": { "namespace": ns, "verb": verb, "resource": resource, "subresource": subresource, "group": group, "name": name }
        }
    }))
    .unwrap();
    let r = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &sar)
        .await
        .unwrap();
    r.status.unwrap().allowed
}

#[tokio::test]
async fn berth_runs_a_session_with_only_its_role() {
    let client = kube_client().await;
    let ns = restricted_namespace(&client, "deploy").await;
    for v in manifests(&ns) {
        match v["kind"].as_str().unwrap() {
            "Namespace" => {}
            "ServiceAccount" => create::<ServiceAccount>(&client, &ns, &v, false).await,
            "Role" => create::<Role>(&client, &ns, &v, false).await,
            "RoleBinding" => create::<RoleBinding>(&client, &ns, &v, false).await,
            "ConfigMap" => create::<ConfigMap>(&client, &ns, &v, false).await,
            // No image can run here; the API server still validates them fully.
            "Deployment" => create::<Deployment>(&client, &ns, &v, true).await,
            "Service" => create::<Service>(&client, &ns, &v, true).await,
            other => panic!("unexpected kind {other} in deploy/"),
        }
    }

    // The plugin ConfigMap, and nothing else of its kind.
    for verb in ["get", "list", "watch"] {
        assert!(
            allowed_named(
                &client,
                &ns,
                verb,
                "configmaps",
                None,
                "",
                Some("berth-plugins")
            )
            .await,
            "{verb}"
        );
        assert!(
            !allowed_named(&client, &ns, verb, "configmaps", None, "", Some("berth")).await,
            "{verb}"
        );
    }
    assert!(!allowed(&client, &ns, "list", "configmaps", None, "").await);
    assert!(
        !allowed_named(
            &client,
            &ns,
            "update",
            "configmaps",
            None,
            "",
            Some("berth-plugins")
        )
        .await
    );
    assert!(allowed(&client, &ns, "create", "events", None, "events.k8s.io").await);
    assert!(!allowed(&client, &ns, "delete", "events", None, "events.k8s.io").await);

    // What the Role does not grant.
    assert!(!allowed(&client, &ns, "get", "secrets", None, "").await);
    assert!(!allowed(&client, &ns, "create", "pods", Some("exec"), "").await);
    assert!(!allowed(&client, &ns, "update", "pods", None, "").await);
    assert!(
        !allowed(
            &client,
            &ns,
            "delete",
            "networkpolicies",
            None,
            "networking.k8s.io"
        )
        .await
    );
    assert!(allowed(&client, &ns, "watch", "pods", None, "").await);

    // A token for the ServiceAccount, and a kubeconfig with nothing else.
    let tr: Value = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create_subresource("token", "berth", &PostParams::default(), &json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": { "expirationSeconds": 600 }
        }))
        .await
        .unwrap();
    let token = tr["status"]["token"].as_str().unwrap();
    let admin = std::fs::read_to_string(kubeconfig()).unwrap();
    let server = admin
        .split("server: \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let ca = admin
        .split("certificate-authority: ")
        .nth(1)
        .unwrap()
        .split('}')
        .next()
        .unwrap()
        .trim();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("berth.kubeconfig");
    std::fs::write(&kc, format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"{server}\", certificate-authority: {ca}}}}}]\n\
         users: [{{name: berth, user: {{token: {token}}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: berth}}}}]\ncurrent-context: c\n"
    ))
    .unwrap();

    // The plugin list as a platform team keeps it: in berth-plugins. (The
    // base's OCI references name a registry that is not here; the shipped
    // plugins are the same components, from files.)
    let configmaps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let mut plugins = configmaps.get("berth-plugins").await.unwrap();
    plugins.data = Some(
        [(
            "plugins.yaml".to_string(),
            serde_yaml::to_string(&shipped_chain()).unwrap(),
        )]
        .into(),
    );
    configmaps
        .replace("berth-plugins", &PostParams::default(), &plugins)
        .await
        .unwrap();
    let b = berth_with(&ns, Vec::new(), |c| {
        c.kubeconfig = Some(kc.clone());
        c.plugins_configmap = serde_json::from_value(json!({ "name": "berth-plugins" })).unwrap();
    })
    .await;
    let (_, listed) = b.get_json("/v1/plugins").await;
    assert_eq!(listed["plugins"].as_array().unwrap().len(), 3, "{listed}");
    assert_eq!(listed["configmap"]["generation"], 1, "{listed}");
    let id = unique("rbac");
    let r = b
        .post("/v1/volumes")
        .json(&json!({ "name": format!("cargo-{id}") }))
        .send()
        .await
        .unwrap();
    let s = r.status();
    let v = r.text().await.unwrap();
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let r = b
        .post("/v1/sessions")
        .json(&create_body(&id, &profile()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    // The claim was made at the default 1Gi; the cargo asks for 2048 MiB.
    let claim =
        Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(client.clone(), &ns)
            .get(&format!("cargo-{id}"))
            .await
            .unwrap();
    assert_eq!(
        claim.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0,
        "2Gi"
    );
    let pod = format!("bay-session-{id}");
    let r = b
        .post(&format!("/v1/sessions/{pod}/start"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    for path in [
        format!("/v1/sessions/{pod}/status"),
        format!("/v1/sessions/{pod}/logs"),
    ] {
        let r = b.get(&path).send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{path}: {}",
            r.text().await.unwrap()
        );
    }
    let r = b
        .post("/v1/runtime-instances/list")
        .json(&json!({ "labels": { "bay.session_id": id } }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap().as_array().unwrap().len(),
        1
    );
    assert_eq!(
        b.delete(&format!("/v1/sessions/{pod}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        b.delete(&format!("/v1/volumes/cargo-{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    // The load was recorded on the ConfigMap with nothing but the Role.
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("PluginsLoaded")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("berth-plugins")),
        "{:?}",
        events.items.iter().map(|e| &e.reason).collect::<Vec<_>>()
    );
}
