//! Plugins from OCI registries: pushed, signed and pulled with the `berth`
//! binary, loaded by the engine with signatures checked, from a real
//! registry (Debian's `docker-registry`) on loopback; the digest cache with
//! the registry gone; and every bad artifact a clear load error that leaves
//! the serving generation in place.

mod common;

use std::path::Path;

use berth::plugin::oci::{DigestCache, Registry, RegistryConfig};
use berth::plugin::signature::SigningKey;
use berth::plugin::{PluginConfig, PolicyEngine, SignaturePolicy, Sources};
use common::*;

fn registry_config(reg: &TestRegistry) -> RegistryConfig {
    RegistryConfig {
        auth_file: Some(reg.auth_file.clone()),
        plain_http: vec![reg.addr.clone()],
        ..RegistryConfig::default()
    }
}

fn sources(reg: &TestRegistry, cache: &Path, keys: &[&Path]) -> Sources {
    Sources {
        registry: registry_config(reg),
        signatures: SignaturePolicy {
            keys: keys.iter().map(|k| k.to_path_buf()).collect(),
            required: !keys.is_empty(),
        },
        cache: Some(DigestCache::new(cache)),
    }
}

fn engine(sources: Sources) -> PolicyEngine {
    PolicyEngine::pending(test_runtime()).with_sources(sources)
}

/// `entry` (a shipped plugin's config) taken from `reference` instead.
fn from(entry: &PluginConfig, reference: &str) -> PluginConfig {
    let mut p = entry.clone();
    p.path = None;
    p.reference = Some(reference.to_string());
    p
}

fn restricted() -> PluginConfig {
    shipped_chain()[0].clone()
}

fn digest_of(pinned: &str) -> &str {
    pinned.split_once('@').expect("a pinned reference").1
}

#[test]
fn the_command_line_pushes_signs_and_pulls_with_credentials() {
    let reg = TestRegistry::start(true);
    let dir = tempfile::tempdir().unwrap();
    let (a_key, a_pub) = key_pair(dir.path(), "a");
    let (_, b_pub) = key_pair(dir.path(), "b");
    let file = wasm("berth_plugin_restricted");
    let target = reg.reference("platform/restricted:1.0");

    // Without credentials the registry refuses, and the error says so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "plugin",
            "push",
            file.to_str().unwrap(),
            &target,
            "--plain-http",
        ])
        .env("DOCKER_CONFIG", dir.path())
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("refused access"), "{err}");

    let pinned = reg.push("berth_plugin_restricted", "platform/restricted:1.0");
    assert!(
        pinned.starts_with(&format!("oci://{}/platform/restricted@sha256:", reg.addr)),
        "{pinned}"
    );

    // Only components are pushed.
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x01\0\0\0").unwrap();
    let (ok, _, err) = reg.berth(&["push", junk.to_str().unwrap(), &target]);
    assert!(!ok && err.contains("not a WebAssembly component"), "{err}");

    let (ok, out, err) = reg.berth(&["sign", &target, "--key", a_key.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains(&pinned), "{out}");

    // A key that cannot sign stops the push before the tag moves.
    let other = reg.reference("platform/restricted:2.0");
    let missing = dir.path().join("no-such.key");
    let (ok, _, err) = reg.berth(&[
        "push",
        file.to_str().unwrap(),
        &other,
        "--key",
        missing.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("no-such.key"), "{err}");
    let (ok, _, err) = reg.berth(&["pull", &other, "-o", dir.path().join("x").to_str().unwrap()]);
    assert!(!ok && err.contains("no such artifact"), "{err}");

    let got = dir.path().join("got.wasm");
    let (ok, out, err) = reg.berth(&[
        "pull",
        &target,
        "-o",
        got.to_str().unwrap(),
        "--key",
        a_pub.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("signed by") && out.contains(&pinned), "{out}");
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&file).unwrap());

    let (ok, _, err) = reg.berth(&[
        "pull",
        &target,
        "-o",
        got.to_str().unwrap(),
        "--key",
        b_pub.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("none of its 1 signature(s) verifies with the trusted keys"),
        "{err}"
    );
}

#[test]
fn signed_oci_plugins_load_and_a_pinned_digest_starts_from_the_cache_without_the_registry() {
    let mut reg = TestRegistry::start(true);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (key, public) = key_pair(dir.path(), "platform");
    let mut tagged = Vec::new();
    let mut pinned = Vec::new();
    for (entry, file) in shipped_chain().iter().zip([
        "berth_plugin_restricted",
        "berth_plugin_scheduling",
        "berth_plugin_resources",
    ]) {
        let repo = format!("platform/{}", entry.name);
        let p = reg.push(file, &format!("{repo}:0.1"));
        let (ok, _, err) = reg.berth(&["sign", &p, "--key", key.to_str().unwrap()]);
        assert!(ok, "{err}");
        tagged.push(from(entry, &reg.reference(&format!("{repo}:0.1"))));
        pinned.push((from(entry, &p), p));
    }

    // Tags resolve at load; /v1/plugins' summary shows the digest and key.
    let e = engine(sources(&reg, &cache, &[&public]));
    assert_eq!(e.reload(&tagged, Path::new("/")).unwrap(), 1);
    let summaries = e.chain().summaries();
    for (s, (_, p)) in summaries.iter().zip(&pinned) {
        assert_eq!(s.origin.digest.as_deref(), Some(digest_of(p)));
        assert_eq!(s.origin.fetched_from, "registry");
        assert_eq!(s.origin.signed_by.as_deref(), public.to_str());
    }

    // The wrong password is refused with the registry's word for it.
    let mut anonymous = sources(&reg, &dir.path().join("other-cache"), &[]);
    anonymous.registry.auth_file = None;
    let err = engine(anonymous)
        .reload(&tagged[..1], Path::new("/"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("plugin \"restricted\" failed to load")
            && err.contains(&tagged[0].reference.clone().unwrap())
            && err.contains("refused access"),
        "{err}"
    );

    reg.stop();
    // Digest-pinned: everything is on disk, signatures included.
    let list: Vec<PluginConfig> = pinned.iter().map(|(c, _)| c.clone()).collect();
    let e = engine(sources(&reg, &cache, &[&public]));
    e.reload(&list, Path::new("/"))
        .expect("loads from the cache");
    for s in e.chain().summaries() {
        assert_eq!(s.origin.fetched_from, "cache", "{}", s.name);
        assert_eq!(s.origin.signed_by.as_deref(), public.to_str());
    }
    // A tag cannot be resolved with the registry away.
    let err = engine(sources(&reg, &cache, &[&public]))
        .reload(&tagged[..1], Path::new("/"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("the registry {} is unreachable", reg.addr)),
        "{err}"
    );
    // Nor a pinned digest the cache does not hold.
    let err = engine(sources(&reg, &dir.path().join("empty"), &[&public]))
        .reload(&list[..1], Path::new("/"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("is unreachable"), "{err}");
}

/// Pushes a manifest whose config is an ordinary image config.
async fn push_image(reg: &TestRegistry, repo_tag: &str) {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    let r: oci_client::Reference = format!("{}/{repo_tag}", reg.addr).parse().unwrap();
    let layer = ImageLayer::new(
        b"not a component".to_vec(),
        "application/vnd.oci.image.layer.v1.tar".into(),
        None,
    );
    let config = Config::new(
        b"{}".to_vec(),
        "application/vnd.oci.image.config.v1+json".into(),
        None,
    );
    client
        .push(
            &r,
            &[layer],
            config,
            &oci_client::secrets::RegistryAuth::Anonymous,
            None,
        )
        .await
        .expect("push an image");
}

#[test]
fn a_bad_artifact_fails_its_load_clearly_and_the_last_good_generation_serves() {
    let reg = TestRegistry::start(false);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (a_key, a_pub) = key_pair(dir.path(), "a");
    let (b_key, _) = key_pair(dir.path(), "b");
    let sign = |reference: &str, key: &Path| {
        let (ok, _, err) = reg.berth(&["sign", reference, "--key", key.to_str().unwrap()]);
        assert!(ok, "{err}");
    };

    let good = reg.push("berth_plugin_restricted", "p/restricted:1");
    sign(&good, &a_key);
    let e = engine(sources(&reg, &cache, &[&a_pub]));
    assert_eq!(
        e.reload(&[from(&restricted(), &good)], Path::new("/"))
            .unwrap(),
        1
    );

    // Other bytes than `good`'s: the same bytes are the same digest, which
    // a trusted key signed (the cache holds its signature).
    let unsigned = reg.push("berth_fixture_image_policy_rs", "p/unsigned:1");
    let wrong_key = reg.push("berth_plugin_scheduling", "p/wrong-key:1");
    sign(&wrong_key, &b_key);

    // A signature that verifies, but for another digest, stored as if it
    // were the signature of `other`.
    let other = reg.push("berth_plugin_resources", "p/other:1");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = Registry::new(&registry_config(&reg), Default::default()).unwrap();
    let other_ref = berth::plugin::oci::parse_reference(&other).unwrap();
    let signed = SigningKey::from_file(&a_key, None)
        .unwrap()
        .sign_digest("p/restricted", digest_of(&good))
        .unwrap();
    rt.block_on(registry.push_signature(&other_ref, digest_of(&other), signed))
        .unwrap();

    // Retagged after signing: the tag now names bytes no one signed.
    let tampered = reg.push("berth_plugin_restricted", "p/tampered:1");
    sign(&tampered, &a_key);
    let tampered = reg.reference("p/tampered:1");
    reg.push("berth_fixture_image_policy_rs", "p/tampered:1");

    rt.block_on(push_image(&reg, "p/image:1"));
    let big = reg.push("berth_fixture_hostile_python", "p/big:1");
    sign(&big, &a_key);
    let absent = format!("oci://{}/p/restricted@sha256:{}", reg.addr, "0".repeat(64));

    let cases: Vec<(String, Sources, &str)> = vec![
        (
            unsigned.clone(),
            sources(&reg, &cache, &[&a_pub]),
            "it is not signed (no oci://",
        ),
        (
            wrong_key.clone(),
            sources(&reg, &cache, &[&a_pub]),
            "none of its 1 signature(s) verifies with the trusted keys",
        ),
        (
            other.clone(),
            sources(&reg, &cache, &[&a_pub]),
            "its signature is for another digest",
        ),
        (
            tampered.clone(),
            sources(&reg, &cache, &[&a_pub]),
            "it is not signed",
        ),
        (
            reg.reference("p/image:1"),
            sources(&reg, &cache, &[]),
            "not a Wasm component artifact: its config media type is \"application/vnd.oci.image.config.v1+json\"",
        ),
        (
            big.clone(),
            Sources {
                registry: RegistryConfig {
                    max_component_mb: 4,
                    ..registry_config(&reg)
                },
                ..sources(&reg, &cache, &[&a_pub])
            },
            "over registry.max_component_mb (4194304 bytes)",
        ),
        (
            absent.clone(),
            sources(&reg, &cache, &[]),
            "the registry has no such artifact",
        ),
        (
            "oci://127.0.0.1:1/p/restricted:1".into(),
            sources(&reg, &cache, &[]),
            "the registry 127.0.0.1:1 is unreachable",
        ),
    ];
    for (reference, sources, why) in cases {
        // The serving engine is asked to move to a list with one bad entry
        // after a good one; its sources are this case's.
        let e2 = engine(sources);
        e2.reload(&[from(&restricted(), &good)], Path::new("/"))
            .expect("the good plugin loads");
        let mut bad = from(&shipped_chain()[1], &reference);
        bad.name = "candidate".into();
        let err = e2
            .reload(&[from(&restricted(), &good), bad], Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "plugin \"candidate\" failed to load: {reference}: "
            )) && err.contains(why),
            "{reference}: {err}"
        );
        let chain = e2.chain();
        assert_eq!(
            chain.generation, 1,
            "{reference}: the good generation serves"
        );
        assert_eq!(chain.summaries().len(), 1);
        assert!(e2.last_error().is_some_and(|l| l == err));
    }
    // Nothing of a refused artifact was kept.
    let manifests = cache.join("oci/manifests");
    let kept: Vec<_> = std::fs::read_dir(&manifests)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(kept, vec![digest_of(&good).trim_start_matches("sha256:")]);
    assert_eq!(e.chain().generation, 1);

    // An entry (say, from a ConfigMap) cannot lift a required signature.
    let mut lax = from(&restricted(), &unsigned);
    lax.signature = Some(SignaturePolicy::default());
    let err = engine(sources(&reg, &cache, &[&a_pub]))
        .reload(&[lax], Path::new("/"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("it is not signed"), "{err}");

    // The verdict does not depend on what the cache holds: pulled with no
    // keys configured, then loaded with keys (not required), an artifact
    // whose only signature is by an untrusted key fails as a pull does.
    let pinned_wrong = from(&shipped_chain()[1], &wrong_key);
    let no_keys = engine(sources(&reg, &cache, &[]));
    no_keys
        .reload(std::slice::from_ref(&pinned_wrong), Path::new("/"))
        .unwrap();
    let mut optional = sources(&reg, &cache, &[&a_pub]);
    optional.signatures.required = false;
    let err = engine(optional)
        .reload(&[pinned_wrong], Path::new("/"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("none of its 1 signature(s) verifies"), "{err}");
}

#[test]
fn a_registry_that_drips_its_bytes_is_given_up_on() {
    use std::io::{Read, Write};
    // Answers every connection with a header and then a byte every 300 ms:
    // no pause is long enough to trip the read timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n");
                while conn.write_all(b" ").is_ok() {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let sources = Sources {
        registry: RegistryConfig {
            plain_http: vec![addr.clone()],
            timeout_s: 2,
            fetch_timeout_s: 3,
            ..RegistryConfig::default()
        },
        signatures: SignaturePolicy::default(),
        cache: Some(DigestCache::new(dir.path())),
    };
    let reference = format!("oci://{addr}/p/slow:1");
    let err = engine(sources)
        .reload(&[from(&restricted(), &reference)], Path::new("/"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gave up after 3 s (registry.fetch_timeout_s)"),
        "{err}"
    );
}

#[test]
fn key_and_credential_files_must_be_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.pub");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // Opening a FIFO would wait for a writer for ever.
    let err = berth::plugin::signature::TrustedKey::from_file(&fifo).unwrap_err();
    assert!(err.contains("not a regular file"), "{err}");
    let err = berth::plugin::oci::Credentials::from_file(Path::new("/dev/zero")).unwrap_err();
    assert!(err.contains("not a regular file"), "{err}");
}

/// Waits (up to 60 s) until `/v1/plugins` satisfies `done`; the body and
/// how long it took from `since`.
async fn plugins_until(
    b: &TestServer,
    since: std::time::Instant,
    done: impl Fn(&serde_json::Value) -> bool,
) -> (serde_json::Value, std::time::Duration) {
    loop {
        let (_, body) = b.get_json("/v1/plugins").await;
        if done(&body) {
            return (body, since.elapsed());
        }
        assert!(
            since.elapsed() < std::time::Duration::from_secs(60),
            "gave up waiting; /v1/plugins says {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn the_plugin_list_follows_a_configmap_and_keeps_the_last_good_one() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::api::events::v1::Event;
    use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
    use serde_json::json;

    let reg = TestRegistry::start(false);
    let client = kube_client().await;
    let ns = namespace(&client, "cm", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let restricted_ref = reg.push("berth_plugin_restricted", "p/restricted:1");
    let scheduling_ref = reg.push("berth_plugin_scheduling", "p/scheduling:1");
    let entries = |with_scheduling: Option<&str>| {
        let mut list = vec![from(&restricted(), &restricted_ref)];
        if let Some(r) = with_scheduling {
            list.push(from(&shipped_chain()[1], r));
        }
        serde_yaml::to_string(&list).unwrap()
    };
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let mut cm: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "berth-plugins" },
        "data": { "plugins.yaml": entries(None) },
    }))
    .unwrap();
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();

    let (config, base) = serve_config(
        dir.path(),
        &ns,
        json!({
            "plugins_configmap": { "name": "berth-plugins" },
            "registry": { "plain_http": [reg.addr] },
        }),
    );
    let mut child = serve(&config);
    let b = TestServer::at(&base, &ns).await;
    let (s, r) = b
        .post_json("/v1/render/pod", &create_body("cm1", &profile()))
        .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{r}");
    assert_eq!(r["steps"].as_array().unwrap().len(), 1, "{r}");
    let (body, _) = plugins_until(&b, std::time::Instant::now(), |p| p["generation"] == 1).await;
    assert_eq!(
        body["configmap"]["configmap"],
        format!("{ns}/berth-plugins")
    );
    assert_eq!(
        body["plugins"][0]["origin"]["digest"],
        digest_of(&restricted_ref)
    );

    // Add a plugin by OCI reference: the next generation has it.
    let set_list = |text: String| {
        let configmaps = configmaps.clone();
        async move {
            configmaps
                .patch(
                    "berth-plugins",
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "data": { "plugins.yaml": text } })),
                )
                .await
                .unwrap();
        }
    };
    let updated = std::time::Instant::now();
    set_list(entries(Some(&scheduling_ref))).await;
    let (body, took) = plugins_until(&b, updated, |p| p["generation"] == 2).await;
    println!("ConfigMap update to generation 2 serving: {took:?}");
    assert_eq!(body["plugins"][1]["name"], "scheduling");
    assert_eq!(
        body["plugins"][1]["origin"]["digest"],
        digest_of(&scheduling_ref)
    );
    assert!(body["configmap"]["error"].is_null(), "{body}");
    let (_, r) = b
        .post_json("/v1/render/pod", &create_body("cm2", &profile()))
        .await;
    let steps: Vec<_> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["plugin"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(steps, ["restricted", "scheduling"], "{r}");

    // A broken reference: reported everywhere, and the chain stays.
    let broken = reg.reference("p/scheduling:no-such-tag");
    set_list(entries(Some(&broken))).await;
    let (body, _) = plugins_until(&b, std::time::Instant::now(), |p| {
        !p["configmap"]["error"].is_null()
    })
    .await;
    let error = body["configmap"]["error"].as_str().unwrap();
    assert!(
        error.contains(&broken) && error.contains("no such artifact"),
        "{body}"
    );
    assert_eq!(body["generation"], 2);
    let (_, r) = b
        .post_json("/v1/render/pod", &create_body("cm3", &profile()))
        .await;
    assert_eq!(r["generation"], 2, "{r}");
    assert_eq!(r["steps"].as_array().unwrap().len(), 2, "{r}");
    let metrics = b.metrics().await;
    assert!(
        metrics.contains("berth_plugin_reload_failing 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"berth_plugin_reloads_total{trigger="configmap",outcome="failed"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            r#"berth_plugin_info{{plugin="scheduling",version="0.1.0",digest="{}"}} 1"#,
            digest_of(&scheduling_ref)
        )),
        "{metrics}"
    );

    // Both outcomes are Events on the ConfigMap.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let mut reasons = Vec::new();
    for _ in 0..100 {
        reasons = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("berth-plugins")
            })
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect::<Vec<_>>();
        if reasons.iter().any(|(r, _)| r == "PluginsRejected") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        reasons
            .iter()
            .any(|(r, n)| r == "PluginsLoaded" && n.contains(digest_of(&scheduling_ref))),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|(r, n)| r == "PluginsRejected"
            && n.contains(&broken)
            && n.contains("generation 2 keeps serving")),
        "{reasons:?}"
    );

    // A list that does not parse is refused the same way.
    cm = configmaps.get("berth-plugins").await.unwrap();
    cm.data = Some(
        [(
            "plugins.yaml".to_string(),
            "- name: x\n  pth: a.wasm\n".to_string(),
        )]
        .into(),
    );
    configmaps
        .replace("berth-plugins", &PostParams::default(), &cm)
        .await
        .unwrap();
    let (body, _) = plugins_until(&b, std::time::Instant::now(), |p| {
        p["configmap"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("pth"))
    })
    .await;
    assert_eq!(body["generation"], 2);

    // A list that failed to load is tried again without a change: a tag
    // pushed after the update is picked up.
    let late = reg.reference("p/late:1");
    set_list(entries(Some(&late))).await;
    plugins_until(&b, std::time::Instant::now(), |p| {
        p["configmap"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("p/late:1"))
    })
    .await;
    let late_pinned = reg.push("berth_plugin_scheduling", "p/late:1");
    let (body, _) = plugins_until(&b, std::time::Instant::now(), |p| {
        p["plugins"][1]["origin"]["reference"] == late.as_str()
    })
    .await;
    assert_eq!(
        body["plugins"][1]["origin"]["digest"],
        digest_of(&late_pinned)
    );
    assert!(body["configmap"]["error"].is_null(), "{body}");
    child.kill().await.unwrap();
}
