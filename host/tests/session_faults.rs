//! How sessions behave where production clusters differ from a quiet test
//! cluster: capacity that arrives late, registries that fail for a while,
//! containers that break, names still being deleted, requests that only
//! look like an earlier one. Against the real control plane; where kwok
//! cannot produce a state, the test writes the Pod's status as a kubelet
//! would.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn container(name: &str, state: Value) -> Value {
    json!({ "name": name, "image": "x", "imageID": "", "ready": false, "restartCount": 0, "state": state })
}

#[tokio::test]
async fn capacity_that_arrives_within_the_grace_is_waited_for() {
    let client = kube_client().await;
    let ns = namespace(&client, "scaleup", &[]).await;
    let pool = unique("pool");
    // Only a node that does not exist yet fits: the autoscaler's case. Its
    // taint keeps the other tests' Pods off it.
    let b = berth_with(
        &ns,
        vec![plugin(
            "scheduling",
            "berth_plugin_scheduling",
            json!({ "default": {
                "node_selector": { "berth.test/pool": pool },
                "tolerations": [{ "key": "berth.test/pool", "operator": "Equal", "value": pool, "effect": "NoSchedule" }]
            } }),
        )],
        |c| {
            c.startup_timeout_s = 90;
            c.unschedulable_grace_s = 60;
        },
    )
    .await;
    let (_, name) = {
        let id = unique("s");
        create_volume(&b, &format!("cargo-{id}")).await;
        let (s, v) = b
            .post_json("/v1/sessions", &create_body(&id, &profile()))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        (id.clone(), format!("bay-session-{id}"))
    };
    let start = start_later(&b, &name);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!start.is_finished(), "start gave up before capacity came");
    let (_, st) = b.get_json(&format!("/v1/sessions/{name}/status")).await;
    assert_eq!(st["reason"], "Unschedulable", "{st}");

    let node_name = format!("kwok-{pool}");
    let node: Node = serde_json::from_value(json!({
        "metadata": { "name": node_name,
            "annotations": { "node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake" },
            "labels": { "type": "kwok", "kubernetes.io/hostname": node_name, "berth.test/pool": pool } },
        "spec": { "taints": [{ "key": "berth.test/pool", "value": pool, "effect": "NoSchedule" }] },
        "status": {
            "addresses": [{ "type": "InternalIP", "address": "127.0.0.1" }, { "type": "Hostname", "address": "localhost" }],
            "allocatable": { "cpu": "32", "memory": "256Gi", "pods": "110" },
            "capacity": { "cpu": "32", "memory": "256Gi", "pods": "110" } }
    }))
    .unwrap();
    let nodes = Api::<Node>::all(client.clone());
    nodes.create(&PostParams::default(), &node).await.unwrap();

    let (s, body) = status_and_json(start.await.unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(
        body["endpoint"].as_str().unwrap().ends_with(":8123"),
        "{body}"
    );
    assert_eq!(
        b.delete_status(&format!("/v1/sessions/{name}")).await,
        StatusCode::NO_CONTENT
    );
    nodes
        .delete(&node_name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn registry_errors_the_kubelet_retries_are_waited_out() {
    let client = kube_client().await;
    let ns = namespace(&client, "pull", &[]).await;
    let b = berth_with(&ns, nowhere(), |c| {
        c.startup_timeout_s = 4;
        c.unschedulable_grace_s = 600;
    })
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let too_many =
        "failed to pull \"ghcr.io/example/ship:1.0\": unexpected status: 429 Too Many Requests";
    let pulling = |message: &str| {
        json!({ "phase": "Pending",
            "conditions": [{ "type": "PodScheduled", "status": "True" }],
            "containerStatuses": [container("ship", json!({ "waiting": { "reason": "ErrImagePull", "message": message } }))] })
    };

    // A registry that keeps answering 429: `start` waits, and its timeout
    // carries the last reason.
    let name = unschedulable_session(&b, &ns).await;
    let start = start_later(&b, &name);
    tokio::time::sleep(Duration::from_millis(300)).await;
    kubelet_reports(&pods, &name, pulling(too_many)).await;
    let body = problem(start.await.unwrap(), StatusCode::GATEWAY_TIMEOUT, "timeout").await;
    assert_detail(&body, "ErrImagePull: container ship: ");
    assert_detail(&body, "429 Too Many Requests");

    // One that recovers: the same start returns the endpoint.
    let b = berth_with(&ns, nowhere(), |c| {
        c.startup_timeout_s = 60;
        c.unschedulable_grace_s = 600;
    })
    .await;
    let name = unschedulable_session(&b, &ns).await;
    let start = start_later(&b, &name);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for status in [
        pulling(too_many),
        pulling("dial tcp 10.0.0.9:443: i/o timeout"),
        running_status("127.1.250.1"),
    ] {
        assert!(!start.is_finished(), "start ended before the Pod ran");
        kubelet_reports(&pods, &name, status).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (s, body) = status_and_json(start.await.unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["endpoint"], "http://127.1.250.1:8123");
}

#[tokio::test]
async fn a_sidecar_that_terminated_breaks_the_session() {
    let client = kube_client().await;
    let ns = namespace(&client, "broken", &[]).await;
    let b = berth(&ns, vec![]).await;
    let id = unique("m");
    create_volume(&b, &format!("cargo-{id}")).await;
    let (s, infos) = b
        .post_json("/v1/multi-sessions", &create_body(&id, &sidecar_profile()))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{infos}");
    let (s, started) = b
        .post_json("/v1/multi-sessions/start", &json!({ "containers": infos }))
        .await;
    assert_eq!(s, StatusCode::OK, "{started}");
    let name = format!("bay-session-{id}");
    let (_, st) = b.get_json(&format!("/v1/sessions/{name}/status")).await;
    assert_eq!(st["status"], "running", "{st}");

    // The kubelet lists container statuses by name: browser before ship.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    pods.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": { "containerStatuses": [
            container("browser", json!({ "terminated": { "exitCode": 139, "reason": "Error", "message": "segfault" } })),
            container("ship", json!({ "running": {} })),
        ] } })),
    )
    .await
    .unwrap();
    let (_, st) = b.get_json(&format!("/v1/sessions/{name}/status")).await;
    assert_eq!(st["status"], "exited", "{st}");
    assert_eq!(st["exit_code"], 139, "{st}");
    assert_eq!(st["reason"], "Error", "{st}");
    assert_detail(
        &json!({ "detail": st["message"] }),
        "container browser exited with code 139 (Error): segfault",
    );
    assert_eq!(st["containers"][0]["name"], "ship");
    assert_eq!(st["containers"][0]["state"], "running");
    assert_eq!(st["containers"][1]["state"], "terminated");

    let (s, list) = b
        .post_json(
            "/v1/runtime-instances/list",
            &json!({ "labels": { "bay.session_id": id } }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list[0]["state"], "failed", "{list}");

    // `start` does not hand out an endpoint into a broken group.
    let body = problem(
        b.post("/v1/multi-sessions/start")
            .json(&json!({ "containers": started }))
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "start_failed",
    )
    .await;
    assert_detail(&body, "container browser exited with code 139");
}

#[tokio::test]
async fn names_still_being_deleted_are_conflicts() {
    let client = kube_client().await;
    let ns = namespace(&client, "dying", &[]).await;
    let b = berth(&ns, vec![]).await;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    let name = unique("cargo");
    create_volume(&b, &name).await;
    claims
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "finalizers": ["berth.test/hold"] } })),
        )
        .await
        .unwrap();
    claims
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let body = problem(
        b.post("/v1/volumes")
            .json(&json!({ "name": name, "size_limit_mb": 1024 }))
            .send()
            .await
            .unwrap(),
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert_detail(&body, "is still being deleted");
    claims
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn only_the_same_session_is_adopted() {
    let client = kube_client().await;
    let ns = namespace(&client, "adopt", &[]).await;
    let b = berth(&ns, vec![]).await;
    let id = unique("a");
    create_volume(&b, &format!("cargo-{id}")).await;
    let body = create_body(&id, &profile());
    let (s, v) = b.post_json("/v1/sessions", &body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // The same request again (a retry, another replica) adopts the Pod.
    let (s, v) = b.post_json("/v1/sessions", &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["adopted"], true);

    // The same session id for another sandbox, cargo or profile does not.
    let other_cargo = format!("cargo-{}", unique("o"));
    create_volume(&b, &other_cargo).await;
    let mut sandbox = body.clone();
    sandbox["session"]["sandbox_id"] = json!("sandbox-other");
    let mut cargo = body.clone();
    cargo["cargo"]["id"] = json!(other_cargo);
    cargo["cargo"]["driver_ref"] = json!(other_cargo);
    let mut profile = body.clone();
    profile["profile"]["id"] = json!("another-profile");
    for (what, request) in [
        ("sandbox_id", sandbox),
        ("cargo_id", cargo),
        ("profile_id", profile),
    ] {
        let body = problem(
            b.post("/v1/sessions").json(&request).send().await.unwrap(),
            StatusCode::CONFLICT,
            "conflict",
        )
        .await;
        assert_detail(&body, &format!("exists with {what}"));
    }
}

#[tokio::test]
async fn a_pod_deleted_while_starting_is_not_found() {
    let client = kube_client().await;
    let ns = namespace(&client, "gone", &[]).await;
    let b = berth_with(&ns, nowhere(), |c| c.unschedulable_grace_s = 600).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    // Deleted outright, and deleted but held by a finalizer: the same answer.
    for hold in [false, true] {
        let name = unschedulable_session(&b, &ns).await;
        if hold {
            pods.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "finalizers": ["berth.test/hold"] } })),
            )
            .await
            .unwrap();
        }
        let start = start_later(&b, &name);
        tokio::time::sleep(Duration::from_millis(300)).await;
        pods.delete(&name, &DeleteParams::default()).await.unwrap();
        let body = problem(start.await.unwrap(), StatusCode::NOT_FOUND, "not_found").await;
        assert_detail(&body, "was deleted while starting");
        if hold {
            pods.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
            )
            .await
            .unwrap();
        }
    }
}

#[tokio::test]
async fn a_wait_for_first_consumer_cargo_binds_with_its_session() {
    let client = kube_client().await;
    let ns = namespace(&client, "wffc", &[]).await;
    // The claim stays unbound until its first Pod is scheduled; the start
    // must not mistake that for a lack of nodes or give up on it.
    let b = berth_with(&ns, vec![], |c| {
        c.storage_class = Some("standard-wffc".into());
        c.unschedulable_grace_s = 15;
    })
    .await;
    let id = unique("w");
    create_volume(&b, &format!("cargo-{id}")).await;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    let claim = claims.get(&format!("cargo-{id}")).await.unwrap();
    assert_eq!(
        claim.spec.unwrap().storage_class_name.as_deref(),
        Some("standard-wffc")
    );
    assert_ne!(
        claim.status.and_then(|s| s.phase).as_deref(),
        Some("Bound"),
        "no consumer yet"
    );
    let (s, v) = b
        .post_json("/v1/sessions", &create_body(&id, &profile()))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let name = format!("bay-session-{id}");
    let (s, v) = b
        .post_json(&format!("/v1/sessions/{name}/start"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let bound = claims.get(&format!("cargo-{id}")).await.unwrap();
    assert_eq!(bound.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
}

#[tokio::test]
async fn berth_leaves_objects_it_does_not_manage_alone() {
    let client = kube_client().await;
    let ns = namespace(&client, "foreign", &[]).await;
    let b = berth(&ns, vec![]).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "bay-session-foreign", "labels": { "app": "x" } },
        "spec": { "containers": [{ "name": "c", "image": "x" }] }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": { "name": "their-data" },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } }
    }))
    .unwrap();
    claims.create(&PostParams::default(), &claim).await.unwrap();

    let (_, st) = b.get_json("/v1/sessions/bay-session-foreign/status").await;
    assert_eq!(st["status"], "not_found", "{st}");
    for req in [
        b.post("/v1/sessions/bay-session-foreign/start")
            .json(&json!({})),
        b.delete("/v1/sessions/bay-session-foreign"),
        b.delete("/v1/runtime-instances/bay-session-foreign"),
        b.delete("/v1/volumes/their-data"),
    ] {
        let body = problem(
            req.send().await.unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        assert_detail(&body, "Berth does not manage it");
    }
    let body = problem(
        b.post("/v1/volumes")
            .json(&json!({ "name": "their-data" }))
            .send()
            .await
            .unwrap(),
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert_detail(&body, "does not manage");
    assert!(pods.get_opt("bay-session-foreign").await.unwrap().is_some());
    assert!(claims.get_opt("their-data").await.unwrap().is_some());
}

#[tokio::test]
async fn a_session_cannot_ask_for_the_trusted_peer_label() {
    let client = kube_client().await;
    let ns = namespace(&client, "peer", &[]).await;
    let b = berth(&ns, vec![]).await;
    let id = unique("p");
    create_volume(&b, &format!("cargo-{id}")).await;
    let mut body = create_body(&id, &profile());
    body["labels"]["app.kubernetes.io/name"] = json!("bay");
    let body = problem(
        b.post("/v1/sessions").json(&body).send().await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert_detail(&body, "trusts as a peer");
}
