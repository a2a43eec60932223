//! The manifests in deploy/ against the real control plane: the API server
//! accepts every object, and Berth running with nothing but the
//! ServiceAccount's token (the Role's verbs) can drive a whole session,
//! while a SubjectAccessReview shows what it cannot do.

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
    let text = std::fs::read_to_string(repo_root().join("deploy/berth.yaml")).unwrap();
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
    let sar: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": format!("system:serviceaccount:{ns}:berth"),
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
            "resourceAttributes": { "namespace": ns, "verb": verb, "resource": resource, "subresource": subresource, "group": group }
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
            other => panic!("unexpected kind {other} in deploy/berth.yaml"),
        }
    }

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

    let b = berth_with(&ns, shipped_chain(), |c| c.kubeconfig = Some(kc.clone())).await;
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
}
