//! Proves the test control plane is a real Kubernetes: PVC binding by the PV
//! controller, scheduling by kube-scheduler onto the labelled fake node,
//! Running with an IP from kwok, deletion, logs through the kubelet API,
//! and PodSecurity admission in a restricted namespace. kube-rs only.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn pvc_binds_pod_schedules_runs_and_is_deleted() {
    let client = kube_client().await;
    let ns = namespace(&client, "smoke", &[]).await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "work" },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } }
    }))
    .unwrap();
    pvcs.create(&PostParams::default(), &pvc).await.unwrap();
    let bound = tokio::time::timeout(
        WAIT,
        await_condition(pvcs.clone(), "work", |p: Option<&PersistentVolumeClaim>| {
            p.and_then(|p| p.status.as_ref())
                .and_then(|s| s.phase.as_deref())
                == Some("Bound")
        }),
    )
    .await
    .expect("PVC bound in time")
    .unwrap()
    .unwrap();
    assert!(
        bound.spec.unwrap().volume_name.unwrap().starts_with("pvc-"),
        "bound to a pre-created PV"
    );

    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "smoke" },
        "spec": {
            "nodeSelector": { "berth.test/pool": "sandbox" },
            "containers": [{ "name": "ship", "image": "ship:test", "volumeMounts": [{ "name": "w", "mountPath": "/workspace" }] }],
            "volumes": [{ "name": "w", "persistentVolumeClaim": { "claimName": "work" } }]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let running = tokio::time::timeout(
        WAIT,
        await_condition(pods.clone(), "smoke", conditions::is_pod_running()),
    )
    .await
    .expect("pod running in time")
    .unwrap()
    .unwrap();
    assert_eq!(
        running.spec.as_ref().unwrap().node_name.as_deref(),
        Some("kwok-node-1"),
        "scheduled onto the labelled node"
    );
    let ip = running
        .status
        .as_ref()
        .unwrap()
        .pod_ip
        .clone()
        .expect("pod IP");
    assert!(
        ip.starts_with("127.1."),
        "pod IP {ip} from kwok's loopback CIDR"
    );

    // Logs travel apiserver -> kwok's kubelet API on loopback.
    let logs = pods
        .logs(
            "smoke",
            &LogParams {
                tail_lines: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        logs.lines().collect::<Vec<_>>(),
        ["berth-test log line 4", "berth-test log line 5"]
    );

    let uid = running.metadata.uid.clone().unwrap();
    pods.delete("smoke", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::timeout(
        WAIT,
        await_condition(pods.clone(), "smoke", conditions::is_deleted(&uid)),
    )
    .await
    .expect("pod deleted in time")
    .unwrap();
    assert!(pods.get_opt("smoke").await.unwrap().is_none());
}

#[tokio::test]
async fn tainted_node_is_avoided_and_nodes_are_fake_but_real_objects() {
    let client = kube_client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&Default::default()).await.unwrap();
    assert!(list.items.len() >= 3);
    let tainted = list
        .items
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some("kwok-node-2"))
        .unwrap();
    let taints = tainted.spec.as_ref().unwrap().taints.clone().unwrap();
    assert!(
        taints
            .iter()
            .any(|t| t.key == "berth.test/dedicated" && t.effect == "NoSchedule")
    );

    // Without a toleration, a Pod that selects only the tainted node stays
    // unschedulable, and the scheduler says why.
    let ns = namespace(&client, "taint", &[]).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "picky" },
        "spec": { "nodeSelector": { "berth.test/pool": "dedicated" }, "containers": [{ "name": "c", "image": "x" }] }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let p = tokio::time::timeout(
        WAIT,
        await_condition(pods.clone(), "picky", |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable")
                    })
                })
        }),
    )
    .await
    .expect("scheduler reports unschedulable")
    .unwrap()
    .unwrap();
    let msg = p
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap()
        .message
        .unwrap();
    assert!(msg.contains("untolerated taint"), "{msg}");
}

#[tokio::test]
async fn podsecurity_rejects_privileged_pods_in_restricted_namespaces() {
    let client = kube_client().await;
    let ns = restricted_namespace(&client, "psa").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let privileged: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "bad" },
        "spec": { "containers": [{ "name": "c", "image": "x", "securityContext": { "privileged": true } }] }
    }))
    .unwrap();
    match pods.create(&PostParams::default(), &privileged).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert!(
                s.message
                    .contains("violates PodSecurity \"restricted:latest\""),
                "{}",
                s.message
            );
            assert!(s.message.contains("privileged"), "{}", s.message);
        }
        other => panic!("expected PodSecurity to refuse, got {other:?}"),
    }
    let compliant: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "good" },
        "spec": {
            "securityContext": { "runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{ "name": "c", "image": "x",
                "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } } }]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &compliant)
        .await
        .expect("compliant pod admitted");
}
