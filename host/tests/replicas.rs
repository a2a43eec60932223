//! What was measured to hold, kept as tests: two replicas racing the same
//! session, `berth serve` killed (SIGKILL) in the middle of creates and the
//! creates repeated, and the API server frozen (SIGSTOP) while a `start`
//! waits. The last one stops the whole control plane for a few seconds,
//! which is why these tests live in their own test binary and run one at a
//! time.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use reqwest::StatusCode;
use serde_json::json;

/// The tests here disturb what other tests rely on; one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn two_replicas_racing_one_session_make_one_pod() {
    let _one = ONE_AT_A_TIME.lock().await;
    let client = kube_client().await;
    let ns = namespace(&client, "race", &[]).await;
    let (a, b) = (berth(&ns, vec![]).await, berth(&ns, vec![]).await);
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    for round in 0..10 {
        let id = unique("r");
        create_volume(&a, &format!("cargo-{id}")).await;
        let body = create_body(&id, &profile());
        let (ra, rb) = tokio::join!(
            a.post("/v1/sessions").json(&body).send(),
            b.post("/v1/sessions").json(&body).send(),
        );
        let mut codes = [ra.unwrap().status(), rb.unwrap().status()];
        codes.sort();
        assert_eq!(
            codes,
            [StatusCode::OK, StatusCode::CREATED],
            "round {round}: one creates, the other adopts"
        );
        let name = format!("bay-session-{id}");
        // Started through one replica, destroyed through the other.
        let (s, v) = a
            .post_json(&format!("/v1/sessions/{name}/start"), &json!({}))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            b.delete_status(&format!("/v1/sessions/{name}")).await,
            StatusCode::NO_CONTENT
        );
        assert!(pods.get_opt(&name).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn creates_cut_by_sigkill_complete_when_repeated() {
    let _one = ONE_AT_A_TIME.lock().await;
    let client = kube_client().await;
    let ns = namespace(&client, "crash", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, base) = serve_config(dir.path(), &ns, json!({ "plugins": shipped_chain() }));
    let ids: Vec<String> = (0..16).map(|_| unique("k")).collect();
    // Each kill lands at another moment of the creates in flight.
    for (round, kill_after_ms) in [40u64, 150, 400].into_iter().enumerate() {
        let mut child = serve(&config);
        let b = TestServer::at(&base, &ns).await;
        let calls: Vec<_> = ids
            .iter()
            .map(|id| {
                let (vol, sess) = (
                    b.post("/v1/volumes").json(
                        &json!({ "name": format!("cargo-{id}"), "labels": { "bay.cargo_id": id } }),
                    ),
                    b.post("/v1/sessions").json(&create_body(id, &profile())),
                );
                tokio::spawn(async move {
                    let _ = vol.send().await;
                    let _ = sess.send().await;
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        for c in calls {
            let _ = c.await;
        }
        println!("round {round}: killed after {kill_after_ms} ms");
    }
    // Repeated against a fresh process, every create completes.
    let _child = serve(&config);
    let b = TestServer::at(&base, &ns).await;
    for id in &ids {
        create_cargo(&b, id).await;
        let (s, v) = b
            .post_json("/v1/sessions", &create_body(id, &profile()))
            .await;
        assert!(s == StatusCode::CREATED || s == StatusCode::OK, "{s} {v}");
    }
    // One Pod per session, none without what Bay's GC selects on.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(pods.items.len(), ids.len());
    for p in &pods.items {
        let labels: BTreeMap<String, String> = p.metadata.labels.clone().unwrap_or_default();
        for key in [
            "bay.managed",
            "bay.instance_id",
            "bay.session_id",
            "bay.owner",
        ] {
            assert!(
                labels.contains_key(key),
                "{key} missing on {:?}",
                p.metadata.name
            );
        }
    }
    let claims = Api::<PersistentVolumeClaim>::namespaced(client, &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(claims.items.len(), ids.len());
}

/// The test cluster's kube-apiserver process.
fn apiserver_pid() -> i32 {
    let dir = std::env::var("BERTH_TEST_CLUSTER_DIR")
        .expect("BERTH_TEST_CLUSTER_DIR: the test cluster's state dir (tests/run.sh sets it)");
    let pids = std::fs::read_to_string(format!("{dir}/pids")).expect("pids file");
    pids.lines()
        .find_map(|l| l.strip_prefix("kube-apiserver ")?.trim().parse().ok())
        .expect("kube-apiserver in the pids file")
}

fn signal(pid: i32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test]
async fn a_start_outlives_a_frozen_api_server() {
    let _one = ONE_AT_A_TIME.lock().await;
    let client = kube_client().await;
    let ns = namespace(&client, "frozen", &[]).await;
    let b = berth_with(&ns, nowhere(), |c| {
        c.startup_timeout_s = 120;
        c.unschedulable_grace_s = 600;
    })
    .await;
    let name = unschedulable_session(&b, &ns).await;
    let start = start_later(&b, &name);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = apiserver_pid();
    signal(pid, "-STOP");
    tokio::time::sleep(Duration::from_secs(8)).await;
    signal(pid, "-CONT");
    assert!(
        !start.is_finished(),
        "start ended while the API server was frozen"
    );
    kubelet_reports(
        &Api::<Pod>::namespaced(client.clone(), &ns),
        &name,
        running_status("127.1.252.1"),
    )
    .await;
    let (s, body) = status_and_json(start.await.unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["endpoint"], "http://127.1.252.1:8123");
}
