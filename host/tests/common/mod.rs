//! Shared pieces of Berth's integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth::config::Config;
use berth::model::{Cargo, ContainerSpec, Profile, Resources, Session};
use berth::plugin::PluginConfig;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// A plugin built by `tests/build-plugins.sh`. Missing plugins fail loudly.
pub fn wasm(name: &str) -> PathBuf {
    let p = repo_root().join("target/wasm32-wasip2/plugin").join(format!("{name}.wasm"));
    assert!(p.exists(), "{} is missing: run tests/build-plugins.sh first", p.display());
    p
}

pub fn plugin(name: &str, file: &str, settings: serde_json::Value) -> PluginConfig {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "path": wasm(file),
        "settings": settings,
    }))
    .expect("plugin config")
}

pub fn hostile(mode: &str) -> PluginConfig {
    plugin(&format!("hostile-{mode}"), "berth_fixture_hostile", serde_json::json!({ "mode": mode }))
}

/// The three shipped plugins with settings a platform team would write.
pub fn shipped_chain() -> Vec<PluginConfig> {
    vec![
        plugin("restricted", "berth_plugin_restricted", serde_json::json!({ "run_as_user": 1000, "fs_group": 1000 })),
        plugin(
            "scheduling",
            "berth_plugin_scheduling",
            serde_json::json!({
                "default": {
                    "node_selector": { "berth.test/pool": "sandbox" },
                    "tolerations": [{ "key": "berth.test/dedicated", "operator": "Equal", "value": "sandbox", "effect": "NoSchedule" }]
                },
                "profiles": { "gpu": { "node_selector": { "berth.test/pool": "dedicated" } } }
            }),
        ),
        plugin(
            "resources",
            "berth_plugin_resources",
            serde_json::json!({
                "default_limits": { "ephemeral-storage": "2Gi" },
                "default_requests": { "ephemeral-storage": "1Gi" },
                "max": { "cpu": "4", "memory": "8Gi" },
                "pvc": { "min_size": "1Gi", "max_size": "20Gi" }
            }),
        ),
    ]
}

pub fn test_config(namespace: &str) -> Config {
    Config {
        namespace: namespace.into(),
        tokens: vec!["test-token-0123456789abcdef".into()],
        ..Config::default()
    }
}

pub fn session(id: &str) -> Session {
    Session { id: id.into(), sandbox_id: format!("sandbox-{id}") }
}

pub fn profile() -> Profile {
    serde_json::from_value(serde_json::json!({
        "id": "python",
        "image": "ghcr.io/example/ship:1.0",
        "runtime_port": 8123,
        "resources": { "cpus": 1.0, "memory": "1g" },
        "env": { "LANG": "C.UTF-8" }
    }))
    .expect("profile")
}

pub fn sidecar_profile() -> Profile {
    Profile {
        id: "browser".into(),
        image: None,
        containers: vec![
            ContainerSpec {
                name: "ship".into(),
                image: "ghcr.io/example/ship:1.0".into(),
                runtime_type: "ship".into(),
                runtime_port: 8123,
                resources: Some(Resources { cpus: 1.0, memory: "1g".into() }),
                capabilities: vec!["shell".into()],
                env: BTreeMap::new(),
                health_check_path: Some("/health".into()),
                primary: true,
                security_context: None,
            },
            ContainerSpec {
                name: "browser".into(),
                image: "ghcr.io/example/gull:1.0".into(),
                runtime_type: "browser".into(),
                runtime_port: 8124,
                resources: Some(Resources { cpus: 2.0, memory: "2g".into() }),
                capabilities: vec!["browser".into()],
                env: BTreeMap::new(),
                health_check_path: None,
                primary: false,
                security_context: None,
            },
        ],
        ..profile()
    }
}

pub fn cargo(id: &str) -> Cargo {
    Cargo { id: id.into(), driver_ref: format!("cargo-{id}"), size_limit_mb: 2048 }
}

pub fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("bay.owner".to_string(), "alice".to_string()), ("bay.instance_id".to_string(), "bay-1".to_string())])
}
