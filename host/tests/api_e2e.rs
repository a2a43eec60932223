//! Berth's HTTP API end to end: a real `berth` server (in-process, on
//! loopback) against the real control plane, read back through kube-rs.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams, PostParams};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A cargo volume and a session on it: the session id and its Pod's name.
async fn new_session(b: &TestServer, prefix: &str) -> (String, String) {
    let id = unique(prefix);
    create_volume(b, &format!("cargo-{id}")).await;
    let (s, v) = b
        .post_json("/v1/sessions", &create_body(&id, &profile()))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let name = v["container_id"]
        .as_str()
        .expect("container_id")
        .to_string();
    (id, name)
}

#[tokio::test]
async fn full_session_life() {
    let client = kube_client().await;
    let ns = namespace(&client, "life", &[]).await;
    let b = berth(&ns, shipped_chain()).await;
    let id = unique("s");

    create_volume(&b, &format!("cargo-{id}")).await;
    let (_, v) = b.get_json(&format!("/v1/volumes/cargo-{id}")).await;
    assert_eq!(v["exists"], true);
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
        .get(&format!("cargo-{id}"))
        .await
        .unwrap();
    assert_eq!(pvc.metadata.labels.as_ref().unwrap()["bay.managed"], "true");
    assert_eq!(
        pvc.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0,
        "2Gi",
        "sized from the cargo by the resources plugin"
    );

    let (s, created) = b
        .post_json("/v1/sessions", &create_body(&id, &profile()))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let pod_name = created["container_id"].as_str().unwrap().to_string();
    assert_eq!(pod_name, format!("bay-session-{id}"));
    assert_eq!(created["adopted"], false);

    // Idempotent: the same session again adopts the live Pod.
    let (s, again) = b
        .post_json("/v1/sessions", &create_body(&id, &profile()))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["adopted"], true);

    let (s, started) = b
        .post_json(
            &format!("/v1/sessions/{pod_name}/start"),
            &json!({ "runtime_port": 8123 }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{started}");
    let endpoint = started["endpoint"].as_str().unwrap();
    assert!(
        endpoint.starts_with("http://127.1.") && endpoint.ends_with(":8123"),
        "{endpoint}"
    );

    let (_, st) = b
        .get_json(&format!("/v1/sessions/{pod_name}/status?runtime_port=8123"))
        .await;
    assert_eq!(st["status"], "running");
    assert_eq!(st["endpoint"], endpoint);
    assert_eq!(st["containers"][0]["name"], "ship");
    assert_eq!(st["containers"][0]["state"], "running");

    let (_, logs) = b
        .get_json(&format!("/v1/sessions/{pod_name}/logs?tail=2"))
        .await;
    assert_eq!(
        logs["logs"],
        "berth-test log line 4\nberth-test log line 5\n"
    );

    // What the API server stored: Bay's labels, env, isolation defaults, plugins' work.
    let pod = Api::<Pod>::namespaced(client.clone(), &ns)
        .get(&pod_name)
        .await
        .unwrap();
    let labels = pod.metadata.labels.clone().unwrap();
    for (k, v) in [
        ("bay.session_id", id.as_str()),
        ("bay.owner", "alice"),
        ("bay.instance_id", "bay-1"),
        ("bay.managed", "true"),
        ("bay.runtime_port", "8123"),
        ("bay.profile_id", "python"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "label {k}");
    }
    let spec = pod.spec.clone().unwrap();
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.enable_service_links, Some(false));
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(
        spec.node_name.as_deref(),
        Some("kwok-node-1"),
        "scheduling plugin's node selector"
    );
    let c = &spec.containers[0];
    let env: Vec<_> = c
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect();
    assert!(env.contains(&("BAY_SESSION_ID".into(), id.clone())));
    assert!(env.contains(&("BAY_WORKSPACE_PATH".into(), "/workspace".into())));
    assert!(env.contains(&("LANG".into(), "C.UTF-8".into())));
    let res = c.resources.clone().unwrap();
    assert_eq!(
        res.requests.as_ref().unwrap()["cpu"].0,
        "500m",
        "request cpu = cpus/2"
    );
    assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "1Gi", "Bay's 1g");
    assert_eq!(spec.security_context.unwrap().run_as_non_root, Some(true));

    let (_, list) = b
        .post_json(
            "/v1/runtime-instances/list",
            &json!({ "labels": { "bay.managed": "true", "bay.session_id": id } }),
        )
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], pod_name.as_str());
    assert_eq!(list[0]["state"], "running");

    let r = b
        .delete(&format!("/v1/sessions/{pod_name}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(
        Api::<Pod>::namespaced(client.clone(), &ns)
            .get_opt(&pod_name)
            .await
            .unwrap()
            .is_none(),
        "destroy waits until the Pod is gone"
    );
    let (_, st) = b.get_json(&format!("/v1/sessions/{pod_name}/status")).await;
    assert_eq!(st["status"], "not_found");
    // Missing is success, and missing logs are empty.
    assert_eq!(
        b.delete_status(&format!("/v1/sessions/{pod_name}")).await,
        StatusCode::NO_CONTENT
    );
    let (_, logs) = b.get_json(&format!("/v1/sessions/{pod_name}/logs")).await;
    assert_eq!(logs["logs"], "");

    assert_eq!(
        b.delete_status(&format!("/v1/volumes/cargo-{id}")).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        b.delete_status(&format!("/v1/volumes/cargo-{id}")).await,
        StatusCode::NO_CONTENT
    );
}

/// `start` and `destroy` wait on one shared Pod watch. The first waiters on
/// a fresh server arrive before that watch has listed anything; every one of
/// them must still be woken. (A readiness future that woke only the last of
/// several waiters left the others hanging until their timeout: this test
/// then fails with 504s.) Destroying a Pod right after creating it must still
/// wait until the Pod is really gone, whatever the watch has seen so far.
#[tokio::test]
async fn concurrent_first_waiters_all_return_and_destroy_waits_for_uncached_pods() {
    let client = kube_client().await;
    let ns = namespace(&client, "waiters", &[]).await;
    let b = berth(&ns, vec![]).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let mut names = Vec::new();
    for _ in 0..6 {
        names.push(new_session(&b, "w").await.1);
    }
    // No request has waited on this server yet: all six start together.
    let body = json!({ "runtime_port": 8123 });
    let paths: Vec<String> = names
        .iter()
        .map(|n| format!("/v1/sessions/{n}/start"))
        .collect();
    let starts = paths.iter().map(|p| b.post_json(p, &body));
    for (name, (s, v)) in names.iter().zip(futures::future::join_all(starts).await) {
        assert_eq!(s, StatusCode::OK, "{name}: {v}");
        assert!(v["endpoint"].as_str().unwrap().ends_with(":8123"), "{v}");
    }
    let paths: Vec<String> = names.iter().map(|n| format!("/v1/sessions/{n}")).collect();
    let destroys = paths.iter().map(|p| b.delete_status(p));
    for status in futures::future::join_all(destroys).await {
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    for name in &names {
        assert!(pods.get_opt(name).await.unwrap().is_none(), "{name}");
    }
    let metrics = b.metrics().await;
    let applied = metrics
        .lines()
        .find_map(|l| l.strip_prefix("berth_pod_watch_events_total{outcome=\"applied\"} "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        applied.is_some_and(|n| n > 0),
        "the shared watch counts the events it applied: {metrics}"
    );

    // Created and destroyed at once, while the watch may not have seen it.
    for _ in 0..3 {
        let (_, name) = new_session(&b, "u").await;
        assert_eq!(
            b.delete_status(&format!("/v1/sessions/{name}")).await,
            StatusCode::NO_CONTENT
        );
        assert!(
            pods.get_opt(&name).await.unwrap().is_none(),
            "destroy returned while {name} still existed"
        );
    }
}

#[tokio::test]
async fn stop_and_gc_force_removal() {
    let client = kube_client().await;
    let ns = namespace(&client, "gc", &[]).await;
    let b = berth(&ns, vec![]).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(new_session(&b, "g").await.0);
    }
    let (s, list) = b
        .post_json(
            "/v1/runtime-instances/list",
            &json!({ "labels": { "bay.managed": "true", "bay.instance_id": "bay-1" } }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 3);
    let (_, none) = b
        .post_json(
            "/v1/runtime-instances/list",
            &json!({ "labels": { "bay.instance_id": "bay-2" } }),
        )
        .await;
    assert_eq!(none.as_array().unwrap().len(), 0);

    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let victim = format!("bay-session-{}", ids[0]);
    assert_eq!(
        b.delete_status(&format!("/v1/runtime-instances/{victim}"))
            .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        b.delete_status(&format!("/v1/runtime-instances/{victim}"))
            .await,
        StatusCode::NO_CONTENT,
        "missing is success"
    );
    let stopped = format!("bay-session-{}", ids[1]);
    assert_eq!(
        b.post(&format!("/v1/sessions/{stopped}/stop"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    // Stop waits like destroy: the Pod is gone when it returns. The forced
    // removal does not wait, but its Pod is on its way out.
    assert!(pods.get_opt(&stopped).await.unwrap().is_none(), "{stopped}");
    let p = pods.get_opt(&victim).await.unwrap();
    assert!(
        p.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
        "{victim}"
    );
    assert!(
        pods.get_opt(&format!("bay-session-{}", ids[2]))
            .await
            .unwrap()
            .is_some()
    );

    let body = problem(
        b.post("/v1/runtime-instances/list")
            .json(&json!({ "labels": {} }))
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert_detail(&body, "labels must not be empty");
    let body = problem(
        b.post("/v1/runtime-instances/list")
            .json(&json!({ "labels": { "bay.owner": "alice@example.com" } }))
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert_detail(&body, "alice@example.com");
}

#[tokio::test]
async fn sidecar_sessions() {
    let client = kube_client().await;
    let ns = namespace(&client, "multi", &[]).await;
    let b = berth(&ns, shipped_chain()).await;
    let id = unique("m");
    create_volume(&b, &format!("cargo-{id}")).await;
    let mut body = create_body(&id, &sidecar_profile());
    body["network_name"] = json!("ignored");
    let (s, infos) = b.post_json("/v1/multi-sessions", &body).await;
    assert_eq!(s, StatusCode::CREATED, "{infos}");
    let infos = infos.as_array().unwrap().clone();
    assert_eq!(infos.len(), 2);
    assert!(
        infos
            .iter()
            .all(|i| i["container_id"] == format!("bay-session-{id}"))
    );
    assert_eq!(infos[1]["runtime_type"], "browser");

    let (s, started) = b
        .post_json("/v1/multi-sessions/start", &json!({ "containers": infos }))
        .await;
    assert_eq!(s, StatusCode::OK, "{started}");
    let e0 = started[0]["endpoint"].as_str().unwrap();
    let e1 = started[1]["endpoint"].as_str().unwrap();
    assert!(e0.ends_with(":8123") && e1.ends_with(":8124"), "{e0} {e1}");
    assert_eq!(
        e0.rsplit_once(':').unwrap().0,
        e1.rsplit_once(':').unwrap().0,
        "one Pod IP"
    );
    assert_eq!(started[1]["status"], "running");

    let pod = Api::<Pod>::namespaced(client.clone(), &ns)
        .get(&format!("bay-session-{id}"))
        .await
        .unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(spec.containers.len(), 2);
    for c in &spec.containers {
        let env = c.env.clone().unwrap();
        assert!(
            env.iter()
                .any(|e| e.name == "BAY_CONTAINER_NAME"
                    && e.value.as_deref() == Some(c.name.as_str()))
        );
        assert!(
            c.volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.mount_path == "/workspace")
        );
    }
    let (_, st) = b
        .get_json(&format!("/v1/sessions/bay-session-{id}/status"))
        .await;
    assert_eq!(st["containers"].as_array().unwrap().len(), 2);
    let (_, logs) = b
        .get_json(&format!(
            "/v1/sessions/bay-session-{id}/logs?tail=1&container=browser"
        ))
        .await;
    assert_eq!(logs["logs"], "berth-test log line 5\n");
    let body = problem(
        b.get(&format!(
            "/v1/sessions/bay-session-{id}/logs?tail=1&container=nope"
        ))
        .send()
        .await
        .unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_detail(
        &body,
        "has no container \"nope\"; its containers: ship, browser",
    );

    // Bay hands back its own records: name, container_id, runtime_type and
    // capabilities; no port, no status. Start reads the ports from the Pod.
    let bays: Vec<Value> = started
        .as_array()
        .unwrap()
        .iter()
        .map(|c| json!({ "name": c["name"], "container_id": c["container_id"], "runtime_type": c["runtime_type"], "capabilities": c["capabilities"] }))
        .collect();
    let (s, again) = b
        .post_json("/v1/multi-sessions/start", &json!({ "containers": bays }))
        .await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again[1]["endpoint"], started[1]["endpoint"]);
    assert_eq!(again[1]["runtime_port"], 8124);
    let r = b
        .post("/v1/multi-sessions/destroy")
        .json(&json!({ "containers": bays }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(
        Api::<Pod>::namespaced(client, &ns)
            .get_opt(&format!("bay-session-{id}"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn create_conflicts_instead_of_adopting_foreign_or_dying_pods() {
    let client = kube_client().await;
    let ns = namespace(&client, "conflict", &[]).await;
    let b = berth(&ns, vec![]).await;
    let id = unique("c");
    create_volume(&b, &format!("cargo-{id}")).await;
    let foreign: Pod = serde_json::from_value(json!({
        "metadata": { "name": format!("bay-session-{id}"), "labels": { "bay.session_id": "someone-else" } },
        "spec": { "containers": [{ "name": "ship", "image": "x" }] }
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let body = problem(
        b.post("/v1/sessions")
            .json(&create_body(&id, &profile()))
            .send()
            .await
            .unwrap(),
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert_detail(&body, "belongs to session \"someone-else\"");

    // An earlier incarnation of the same session that is still terminating
    // (held by a finalizer) is not adopted either.
    let dying_id = unique("c");
    create_volume(&b, &format!("cargo-{dying_id}")).await;
    let dying_name = format!("bay-session-{dying_id}");
    let dying: Pod = serde_json::from_value(json!({
        "metadata": { "name": dying_name, "labels": { "bay.managed": "true", "bay.session_id": dying_id }, "finalizers": ["berth.test/hold"] },
        "spec": { "containers": [{ "name": "ship", "image": "x" }] }
    }))
    .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    pods.create(&PostParams::default(), &dying).await.unwrap();
    pods.delete(&dying_name, &Default::default()).await.unwrap();
    let body = problem(
        b.post("/v1/sessions")
            .json(&create_body(&dying_id, &profile()))
            .send()
            .await
            .unwrap(),
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert_detail(&body, "still terminating");
    let (_, st) = b
        .get_json(&format!("/v1/sessions/{dying_name}/status"))
        .await;
    assert_eq!(st["status"], "removing");
    pods.patch(
        &dying_name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
    )
    .await
    .unwrap();

    // A missing cargo is reported at create, not after the start timeout.
    let other = unique("nocargo");
    let body = problem(
        b.post("/v1/sessions")
            .json(&create_body(&other, &profile()))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_detail(&body, "does not exist; create it first");
    assert!(
        Api::<Pod>::namespaced(client, &ns)
            .get_opt(&format!("bay-session-{other}"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn start_fails_fast_with_the_kubernetes_reason() {
    let client = kube_client().await;
    let ns = namespace(&client, "fail", &[]).await;
    // A long timeout: these must fail on the reason, not the clock. A short
    // grace for unschedulable Pods: the first case fails on the scheduler's
    // message once the transient one about the new claim has passed.
    let b = berth_with(&ns, nowhere(), |c| {
        c.startup_timeout_s = 300;
        c.unschedulable_grace_s = 5;
    })
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);

    let name = unschedulable_session(&b, &ns).await;
    let started = std::time::Instant::now();
    let body = problem(
        b.post(&format!("/v1/sessions/{name}/start"))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "start_failed",
    )
    .await;
    assert_eq!(body["reason"], "Unschedulable", "{body}");
    assert_detail(&body, "didn't match Pod's node affinity/selector");
    assert!(started.elapsed() < Duration::from_secs(300));

    // (reason, what the message must say, the status a kubelet reports)
    let cs = |name: &str, state: Value| json!({ "name": name, "image": "x", "imageID": "", "ready": false, "restartCount": 0, "state": state });
    for (reason, says, status) in [
        (
            "ErrImagePull",
            "container ship: pull access denied",
            json!({ "phase": "Pending", "containerStatuses": [cs("ship", json!({ "waiting": { "reason": "ErrImagePull", "message": "pull access denied" } }))] }),
        ),
        (
            "CrashLoopBackOff",
            "container ship: back-off restarting; last exit code 2 (Error)",
            json!({ "phase": "Pending", "containerStatuses": [{ "name": "ship", "image": "x", "imageID": "", "ready": false, "restartCount": 3,
            "state": { "waiting": { "reason": "CrashLoopBackOff", "message": "back-off restarting" } },
            "lastState": { "terminated": { "reason": "Error", "exitCode": 2 } } }] }),
        ),
        (
            "CreateContainerConfigError",
            "container ship: couldn't find key token in Secret creds",
            json!({ "phase": "Pending", "containerStatuses": [cs("ship", json!({ "waiting": { "reason": "CreateContainerConfigError", "message": "couldn't find key token in Secret creds" } }))] }),
        ),
        (
            "Error",
            "container ship exited with code 3 (Error)",
            json!({ "phase": "Failed", "containerStatuses": [cs("ship", json!({ "terminated": { "reason": "Error", "exitCode": 3 } }))] }),
        ),
        (
            "OOMKilled",
            "container ship exited with code 137 (OOMKilled",
            json!({ "phase": "Failed", "containerStatuses": [cs("ship", json!({ "terminated": { "reason": "OOMKilled", "exitCode": 137 } }))] }),
        ),
        (
            "Evicted",
            "The node was low on resource: memory.",
            json!({ "phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory.",
                    "containerStatuses": [cs("ship", json!({ "terminated": { "reason": "ContainerStatusUnknown", "exitCode": 137 } }))] }),
        ),
    ] {
        let name = unschedulable_session(&b, &ns).await;
        // Play kubelet: report the container state through the status subresource.
        let start = start_later(&b, &name);
        // Let the start call reach its watch before the failure shows up.
        tokio::time::sleep(Duration::from_millis(300)).await;
        kubelet_reports(&pods, &name, status.clone()).await;
        let resp = start.await.unwrap();
        let (s, body) = status_and_json(resp).await;
        // Unschedulable may win the race when the scheduler reports first;
        // either way the call fails fast with a Kubernetes reason.
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "start_failed");
        let got = body["reason"].as_str().unwrap();
        assert!(
            got == reason || got == "Unschedulable",
            "expected {reason}, got {got}: {body}"
        );
        if got == reason {
            assert_detail(&body, says);
        }
        // `status` says the same, whoever won the race above.
        let (_, st) = b.get_json(&format!("/v1/sessions/{name}/status")).await;
        assert_eq!(st["reason"], reason, "{st}");
        assert!(st["message"].as_str().unwrap().contains(says), "{st}");
        assert!(!st["message"].as_str().unwrap().contains("Failed: Failed"));
        if status["phase"] == "Failed" {
            assert_eq!(st["status"], "exited");
            assert!(st["exit_code"].as_i64().is_some(), "{st}");
        }
    }

    let body = problem(
        b.post("/v1/sessions/bay-session-missing/start")
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_detail(&body, "does not exist");
}

#[tokio::test]
async fn an_unschedulable_pod_is_waited_for_during_the_grace_and_status_says_why() {
    let client = kube_client().await;
    let ns = namespace(&client, "slow", &[]).await;
    // No node has the pool, and no autoscaler will add one: within the
    // grace `start` waits, and its timeout names the scheduler's message.
    let b = berth_with(&ns, nowhere(), |c| {
        c.startup_timeout_s = 3;
        c.unschedulable_grace_s = 600;
    })
    .await;
    let name = unschedulable_session(&b, &ns).await;
    let started = std::time::Instant::now();
    let start = start_later(&b, &name);
    // While it waits, `status` reports what the scheduler said.
    // (Its first message may be the transient one about the claim.)
    let mut seen = Value::Null;
    for _ in 0..30 {
        let (_, st) = b.get_json(&format!("/v1/sessions/{name}/status")).await;
        seen = st;
        if seen["message"]
            .as_str()
            .is_some_and(|m| m.contains("node affinity/selector"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen["reason"], "Unschedulable", "{seen}");
    assert_eq!(seen["status"], "created", "{seen}");
    assert!(
        seen["message"]
            .as_str()
            .unwrap()
            .contains("didn't match Pod's node affinity/selector"),
        "{seen}"
    );
    let body = problem(start.await.unwrap(), StatusCode::GATEWAY_TIMEOUT, "timeout").await;
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_detail(&body, "not running after 3s");
    assert_detail(&body, "phase Pending; Unschedulable: ");
    assert_detail(&body, "didn't match Pod's node affinity/selector");

    // Past the grace, with no autoscaler Events, it fails with the message.
    let b = berth_with(&ns, nowhere(), |c| {
        c.startup_timeout_s = 300;
        c.unschedulable_grace_s = 2;
    })
    .await;
    let name = unschedulable_session(&b, &ns).await;
    let started = std::time::Instant::now();
    let body = problem(
        b.post(&format!("/v1/sessions/{name}/start"))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "start_failed",
    )
    .await;
    assert!(started.elapsed() >= Duration::from_secs(2), "{body}");
    assert!(started.elapsed() < Duration::from_secs(60), "{body}");
    assert_eq!(body["reason"], "Unschedulable");
    assert_detail(&body, "didn't match Pod's node affinity/selector");
}

#[tokio::test]
async fn policy_denials_create_nothing() {
    let client = kube_client().await;
    let ns = namespace(&client, "deny", &[]).await;
    let b = berth(&ns, shipped_chain()).await;
    let id = unique("d");
    create_volume(&b, &format!("cargo-{id}")).await;
    let mut p = profile();
    p.security_context = Some(k8s_openapi::api::core::v1::SecurityContext {
        privileged: Some(true),
        ..Default::default()
    });
    let body = problem(
        b.post("/v1/sessions")
            .json(&create_body(&id, &p))
            .send()
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
        "denied_by_policy",
    )
    .await;
    assert_eq!(body["plugin"], "restricted");
    assert_detail(&body, "privileged");
    assert!(
        Api::<Pod>::namespaced(client.clone(), &ns)
            .get_opt(&format!("bay-session-{id}"))
            .await
            .unwrap()
            .is_none()
    );

    // A plugin failure is a plugin_failed problem naming it; nothing created.
    let b2 = berth(&ns, vec![hostile("trap")]).await;
    let body = problem(
        b2.post("/v1/sessions")
            .json(&create_body(&id, &profile()))
            .send()
            .await
            .unwrap(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "plugin_failed",
    )
    .await;
    assert_eq!(body["plugin"], "hostile-trap");
    assert!(
        Api::<Pod>::namespaced(client, &ns)
            .get_opt(&format!("bay-session-{id}"))
            .await
            .unwrap()
            .is_none()
    );
    let metrics = b2.metrics().await;
    assert!(
        metrics.contains("berth_plugin_failures_total{plugin=\"hostile-trap\",reason=\"trap\"} 1"),
        "{metrics}"
    );
}

/// Creates the session's cargo and the session, and starts it: each must
/// succeed.
async fn create_and_start(b: &TestServer, id: &str, profile: &berth::model::Profile) {
    create_volume(b, &format!("cargo-{id}")).await;
    let (s, v) = b.post_json("/v1/sessions", &create_body(id, profile)).await;
    assert_eq!(s, StatusCode::CREATED, "admitted: {v}");
    let (s, v) = b
        .post_json(&format!("/v1/sessions/bay-session-{id}/start"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// A create that policy (a plugin, or Kubernetes admission) refuses.
async fn create_denied(b: &TestServer, id: &str, profile: &berth::model::Profile) -> Value {
    problem(
        b.post("/v1/sessions")
            .json(&create_body(id, profile))
            .send()
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
        "denied_by_policy",
    )
    .await
}

#[tokio::test]
async fn restricted_namespace_with_and_without_the_restricted_plugin() {
    let client = kube_client().await;
    let ns = restricted_namespace(&client, "psa").await;
    let with = berth(&ns, shipped_chain()).await;
    create_and_start(&with, &unique("r"), &profile()).await;

    let without = berth(&ns, vec![]).await;
    let id2 = unique("r");
    create_volume(&without, &format!("cargo-{id2}")).await;
    let body = create_denied(&without, &id2, &profile()).await;
    assert_eq!(body["plugin"], "kubernetes-admission");
    assert_detail(&body, "violates PodSecurity \"restricted:latest\"");
}

#[tokio::test]
async fn baseline_namespace_admits_ship_as_it_runs() {
    let client = kube_client().await;
    let ns = pss_namespace(&client, "base", "baseline").await;
    let baseline = plugin(
        "restricted",
        "berth_plugin_restricted",
        json!({ "level": "baseline" }),
    );
    let b = berth(&ns, vec![baseline]).await;
    // Ship starts as root and runs its shell through sudo.
    let mut ship = profile();
    ship.security_context = Some(serde_json::from_value(json!({ "runAsUser": 0 })).unwrap());
    let id = unique("b");
    create_and_start(&b, &id, &ship).await;
    let pod = Api::<Pod>::namespaced(client.clone(), &ns)
        .get(&format!("bay-session-{id}"))
        .await
        .unwrap();
    let spec = pod.spec.unwrap();
    let psc = spec.security_context.unwrap();
    assert_eq!(psc.run_as_non_root, None, "sudo needs root");
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let sc = spec.containers[0].security_context.clone().unwrap();
    assert_eq!(sc.allow_privilege_escalation, None);
    assert_eq!(sc.privileged, Some(false));

    // What baseline forbids, the plugin denies by name before admission...
    let mut privileged = profile();
    privileged.security_context =
        Some(serde_json::from_value(json!({ "privileged": true })).unwrap());
    let id2 = unique("b");
    create_volume(&b, &format!("cargo-{id2}")).await;
    assert_eq!(
        create_denied(&b, &id2, &privileged).await["plugin"],
        "restricted"
    );
    // ...without the plugin, Berth's own posture check refuses it...
    let bare = berth(&ns, vec![]).await;
    let body = create_denied(&bare, &id2, &privileged).await;
    assert_eq!(body["plugin"], "pod-security");
    assert_detail(&body, "violates Pod Security baseline");
    // ...and with that off too, PodSecurity admission refuses the same Pod.
    let unchecked = berth_with(&ns, vec![], |c| {
        c.pod_security = berth::plugin::PodSecurity::None
    })
    .await;
    let body = create_denied(&unchecked, &id2, &privileged).await;
    assert_eq!(body["plugin"], "kubernetes-admission");
    assert_detail(&body, "violates PodSecurity \"baseline:latest\"");
}

#[tokio::test]
async fn an_idle_pod_watch_stays_healthy_and_a_timeout_says_what_the_pod_waits_for() {
    let client = kube_client().await;
    let ns = namespace(&client, "idle", &[]).await;
    let b = berth_with(&ns, vec![], |c| c.startup_timeout_s = 40).await;
    let id = unique("i");
    // A claim that never binds: its StorageClass does not exist.
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": { "name": format!("cargo-{id}") },
        "spec": { "accessModes": ["ReadWriteOnce"], "storageClassName": "berth-test-none",
                  "resources": { "requests": { "storage": "1Gi" } } }
    }))
    .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
        .create(&Default::default(), &pvc)
        .await
        .unwrap();
    let (s, v) = b
        .post_json("/v1/sessions", &create_body(&id, &profile()))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // The wait outlives the client's 30 s read timeout in a namespace where
    // nothing else happens: the watch must stay quiet and healthy.
    let body = problem(
        b.post(&format!("/v1/sessions/bay-session-{id}/start"))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
    )
    .await;
    assert_detail(&body, "not running after 40s");
    assert_detail(&body, "unbound immediate PersistentVolumeClaims");
    let metrics = b.metrics().await;
    assert!(
        !metrics.contains("berth_pod_watch_events_total{outcome=\"error\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_full_chain_queue_is_backpressure_not_a_plugin_failure() {
    let client = kube_client().await;
    let ns = namespace(&client, "busy", &[]).await;
    let mut slow = hostile("loop");
    slow.deadline_ms = 1500;
    let b = berth_with(&ns, vec![slow], |c| {
        c.plugin_concurrency = Some(1);
        c.plugin_queue_timeout_ms = 200;
    })
    .await;
    let render = || async {
        b.post("/v1/render/pod")
            .json(&create_body(&unique("q"), &profile()))
            .send()
            .await
            .unwrap()
    };
    let (first, second) = tokio::join!(render(), async {
        // The first request takes the only slot.
        tokio::time::sleep(Duration::from_millis(300)).await;
        render().await
    });
    assert_eq!(
        second
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    let body = problem(second, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    assert_detail(&body, "policy chain slots stayed busy for 200 ms");
    assert!(body.get("plugin").is_none(), "no plugin is blamed: {body}");
    // The plugin that held the slot got its whole deadline and failed alone.
    let body = problem(first, StatusCode::INTERNAL_SERVER_ERROR, "plugin_failed").await;
    assert_eq!(body["plugin"], "hostile-loop");
    let metrics = b.metrics().await;
    assert!(
        metrics.contains("berth_plugin_queue_rejections_total 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("berth_plugin_failures_total{plugin=\"hostile-loop\",reason=\"timeout\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("berth_plugin_queue_waiting 0"),
        "{metrics}"
    );
    // A reload compiles: CPU work that waits for a slot like a chain, so it
    // cannot take the CPU from the requests being served.
    let (_busy, reload) = tokio::join!(render(), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.post("/v1/plugins/reload").send().await.unwrap()
    });
    problem(reload, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
}

#[tokio::test]
async fn a_caller_that_hangs_up_gives_its_chain_slot_back() {
    let client = kube_client().await;
    let ns = namespace(&client, "hangup", &[]).await;
    // A plugin that would hold the only slot for 8 s, on one profile only.
    let mut slow = hostile("loop");
    slow.deadline_ms = 8_000;
    slow.profiles = vec!["slow".into()];
    let b = berth_with(&ns, vec![slow], |c| {
        c.plugin_concurrency = Some(1);
        c.plugin_queue_timeout_ms = 2_000;
        c.plugin_chain_budget_ms = 10_000;
    })
    .await;
    let mut slow_profile = profile();
    slow_profile.id = "slow".into();
    let gave_up = b
        .post("/v1/render/pod")
        .json(&create_body(&unique("h"), &slow_profile))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()));
    // The next request needs the same slot. Had the abandoned chain kept
    // it, this would wait out the 2 s queue and be answered `overloaded`.
    let (s, r) = b
        .post_json("/v1/render/pod", &create_body(&unique("h"), &profile()))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let metrics = b.metrics().await;
    assert!(
        metrics.contains(
            "berth_plugin_failures_total{plugin=\"hostile-loop\",reason=\"cancelled\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("berth_plugin_queue_rejections_total 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_longest_session_id_bay_can_store_makes_a_pod() {
    let client = kube_client().await;
    let ns = namespace(&client, "longid", &[]).await;
    let b = berth(&ns, vec![]).await;
    // 63 characters, the most a label value holds: the Pod is named with 75,
    // which Kubernetes accepts (no 63-character limit per name segment).
    let id = format!("{:a<63}", unique("l"));
    create_cargo(&b, &id).await;
    let mut body = create_body(&id, &profile());
    body["session"]["sandbox_id"] = json!("sb-long");
    let (s, r) = b.post_json("/v1/sessions", &body).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    Api::<Pod>::namespaced(client, &ns)
        .get(&format!("bay-session-{id}"))
        .await
        .expect("the Pod exists");
    // One more character is not a valid label value: refused, saying so.
    body["session"]["id"] = json!(format!("{id}a"));
    let (s, r) = b.post_json("/v1/sessions", &body).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{r}");
    assert!(r["detail"].as_str().unwrap().contains("64"), "{r}");
}

#[tokio::test]
async fn render_shows_the_exact_objects_and_touches_nothing() {
    let client = kube_client().await;
    let ns = namespace(&client, "render", &[]).await;
    let b = berth(&ns, shipped_chain()).await;
    let id = unique("v");
    let (s, r) = b
        .post_json("/v1/render/pod", &create_body(&id, &profile()))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["object"]["metadata"]["name"], format!("bay-session-{id}"));
    assert_eq!(r["object"]["spec"]["securityContext"]["runAsNonRoot"], true);
    let plugins: Vec<_> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["plugin"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(plugins, ["restricted", "scheduling", "resources"]);
    assert!(
        r["steps"][1]["patch"]
            .as_array()
            .unwrap()
            .iter()
            .any(|op| op["path"] == "/spec/nodeSelector"),
        "{}",
        r["steps"][1]
    );
    assert_eq!(r["generation"], 1);
    let (s, r) = b
        .post_json(
            "/v1/render/pvc",
            &json!({ "name": "cargo-x", "size_limit_mb": 5120 }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        r["object"]["spec"]["resources"]["requests"]["storage"],
        "5Gi"
    );
    assert!(
        Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        Api::<PersistentVolumeClaim>::namespaced(client, &ns)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn auth_bad_requests_and_documents() {
    let client = kube_client().await;
    let ns = namespace(&client, "http", &[]).await;
    let b = berth_with(&ns, vec![], |c| c.max_body_bytes = 16 * 1024).await;

    assert_eq!(
        b.http.get(b.url("/healthz")).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        b.http.get(b.url("/readyz")).send().await.unwrap().status(),
        StatusCode::OK
    );
    // Every route but the probes needs a valid token.
    for unauthenticated in [
        b.http.get(b.url("/v1/plugins")),
        b.http
            .get(b.url("/v1/plugins"))
            .bearer_auth("wrong-token-0123456789"),
        b.http.get(b.url("/metrics")),
        b.http.get(b.url("/openapi.json")),
    ] {
        problem(
            unauthenticated.send().await.unwrap(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
    }

    // Missing field, wrong type, malformed JSON, oversized body; invalid
    // names and label values, each named in the detail.
    let mut wrong = create_body("x", &profile());
    wrong["profile"]["runtime_port"] = json!("eighty");
    let mut huge = create_body("x", &profile());
    huge["profile"]["env"]["PAD"] = json!("x".repeat(64 * 1024));
    let mut owner = create_body("ok1", &profile());
    owner["labels"]["bay.owner"] = json!("alice@example.com");
    let mut long = create_body(&"a".repeat(70), &profile());
    long["cargo"]["driver_ref"] = json!("cargo-long");
    let create = || b.post("/v1/sessions");
    let invalid = [
        (
            create().json(&json!({ "session": { "id": "x", "sandbox_id": "y" } })),
            StatusCode::BAD_REQUEST,
            Some("missing field `profile`"),
        ),
        (
            create().json(&wrong),
            StatusCode::BAD_REQUEST,
            Some("runtime_port"),
        ),
        (
            create()
                .header("content-type", "application/json")
                .body("{not json"),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (create().json(&huge), StatusCode::PAYLOAD_TOO_LARGE, None),
        (
            create().json(&create_body("Bad_ID!", &profile())),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("session.id"),
        ),
        (
            create().json(&owner),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("alice@example.com"),
        ),
        (
            create().json(&long),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("at most 63"),
        ),
        (
            b.get("/v1/sessions/Not_A_Pod/status"),
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
    ];
    for (request, status, detail) in invalid {
        let body = problem(request.send().await.unwrap(), status, "invalid_request").await;
        if let Some(detail) = detail {
            assert_detail(&body, detail);
        }
    }
    problem(
        b.get("/v1/nope").send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    let (s, doc) = b.get_json("/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/v1/sessions",
        "/v1/sessions/{id}/start",
        "/v1/multi-sessions",
        "/v1/volumes",
        "/v1/runtime-instances/list",
        "/v1/render/pod",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    let metrics = b.metrics().await;
    assert!(
        metrics.contains(
            "berth_http_requests_total{method=\"POST\",route=\"/v1/sessions\",status=\"422\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("berth_kubernetes_call_duration_seconds"),
        "{metrics}"
    );
}

#[tokio::test]
async fn session_isolation_policy_is_in_force() {
    let client = kube_client().await;
    let ns = namespace(&client, "netpol", &[]).await;
    let b = berth(&ns, vec![]).await;
    // Ready means isolated: the policy is in place once /readyz says so.
    let mut ready = false;
    for _ in 0..100 {
        if b.get("/readyz").send().await.unwrap().status() == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "never ready");
    let np = Api::<NetworkPolicy>::namespaced(client, &ns)
        .get("bay-session-isolation")
        .await
        .expect("policy applied before ready");
    let spec = np.spec.unwrap();
    assert_eq!(
        spec.pod_selector.unwrap().match_labels.unwrap()["bay.managed"],
        "true"
    );
    let from = &spec.ingress.unwrap()[0].from.clone().unwrap()[0];
    assert_eq!(
        from.pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["app.kubernetes.io/name"],
        "bay"
    );
    let egress = spec.egress.unwrap();
    assert!(egress[0].ports.as_ref().unwrap().iter().any(
        |p| p.port == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(53))
    ));
    let block = egress[1].to.as_ref().unwrap()[0].ip_block.clone().unwrap();
    assert_eq!(block.cidr, "0.0.0.0/0");
    let except = block.except.unwrap();
    assert!(
        except.contains(&"10.0.0.0/8".to_string()),
        "no other session Pods"
    );
    assert!(
        except.contains(&"169.254.0.0/16".to_string()),
        "no cloud instance metadata"
    );
    assert_eq!(spec.policy_types.unwrap(), ["Ingress", "Egress"]);
}

#[tokio::test]
async fn unreachable_api_server_is_kubernetes_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = kubeconfig_via("https://127.0.0.1:1", dir.path());
    let mut config = test_config("bay");
    config.kubeconfig = Some(path);
    config.network_policy.enabled = false;
    config.plugin_cache_dir = Some(repo_root().join("target/berth-test-plugin-cache"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut running = berth::server::start(config, None, listener)
        .await
        .expect("starts without touching the API server");
    running.plugins_loaded().await.expect("no plugins to load");
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{base}/v1/volumes"))
        .bearer_auth(TOKEN)
        .json(&json!({ "name": "cargo-x" }))
        .send()
        .await
        .unwrap();
    problem(
        resp,
        StatusCode::SERVICE_UNAVAILABLE,
        "kubernetes_unavailable",
    )
    .await;
    let resp = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
}
