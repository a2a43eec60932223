//! The plugin runtime and chain against real WebAssembly components: the
//! shipped plugins, and hostile fixtures for every kind of misbehaviour.

mod common;

use std::path::Path;
use std::sync::Arc;

use berth::objects::{self, SessionRequest};
use berth::plugin::runtime::Limits;
use berth::plugin::{Hook, SessionContext};
use berth::plugin::{
    LoadErrorKind, PluginConfig, PluginError, PodSecurity, PolicyEngine, PolicyError, Rule,
    Runtime, RuntimeOptions,
};
use common::*;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};

fn runtime() -> Runtime {
    // The on-disk cache these share is itself tested below.
    test_runtime()
}

fn engine(configs: &[PluginConfig]) -> Result<PolicyEngine, PluginError> {
    PolicyEngine::new(runtime(), configs, Path::new("/"))
}

fn base(profile: &berth::model::Profile) -> (Pod, SessionContext) {
    let config = test_config("berth-plain");
    let (s, c, l) = (session("s1"), cargo("c1"), labels());
    let req = SessionRequest {
        session: &s,
        profile,
        cargo: &c,
        labels: &l,
        instance_id: None,
    };
    let plan = objects::plan(&config, &req).expect("plan");
    (objects::session_pod(&config, &req, &plan), plan.context)
}

fn shape(
    engine: &PolicyEngine,
    profile: &berth::model::Profile,
) -> Result<berth::plugin::Shaped<Pod>, PolicyError> {
    let (pod, ctx) = base(profile);
    engine.shape(&ctx, pod)
}

#[test]
fn shipped_chain_shapes_a_session_pod() {
    let engine = engine(&shipped_chain()).expect("load");
    let shaped = shape(&engine, &profile()).expect("shape");
    let spec = shaped.object.spec.as_ref().unwrap();

    let psc = spec.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(1000));
    assert_eq!(psc.fs_group, Some(1000));
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    let c = &spec.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );

    assert_eq!(
        spec.node_selector.as_ref().unwrap()["berth.test/pool"],
        "sandbox"
    );
    assert_eq!(
        spec.tolerations.as_ref().unwrap()[0].key.as_deref(),
        Some("berth.test/dedicated")
    );

    let res = c.resources.as_ref().unwrap();
    assert_eq!(res.limits.as_ref().unwrap()["ephemeral-storage"].0, "2Gi");
    assert_eq!(res.limits.as_ref().unwrap()["cpu"].0, "1");

    // One diff per plugin, each touching what that plugin owns.
    let names: Vec<_> = shaped.steps.iter().map(|s| s.plugin.as_str()).collect();
    assert_eq!(names, ["restricted", "scheduling", "resources"]);
    let paths = |i: usize| {
        shaped.diffs()[i]
            .patch
            .0
            .iter()
            .map(|op| op.path().to_string())
            .collect::<Vec<_>>()
    };
    assert!(
        paths(0).iter().any(|p| p.contains("securityContext")),
        "{:?}",
        paths(0)
    );
    assert!(
        paths(1).iter().any(|p| p.contains("nodeSelector")),
        "{:?}",
        paths(1)
    );
    assert!(
        paths(2).iter().all(|p| p.contains("resources")),
        "{:?}",
        paths(2)
    );
}

#[test]
fn per_profile_rules_and_clamping() {
    let engine = engine(&shipped_chain()).expect("load");
    let mut p = profile();
    p.id = "gpu".into();
    p.resources = Some(berth::model::Resources {
        cpus: 16.0,
        memory: "64g".into(),
    });
    let shaped = shape(&engine, &p).expect("shape");
    let spec = shaped.object.spec.unwrap();
    assert_eq!(spec.node_selector.unwrap()["berth.test/pool"], "dedicated");
    let res = spec.containers[0].resources.clone().unwrap();
    assert_eq!(res.limits.as_ref().unwrap()["cpu"].0, "4", "clamped to max");
    assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "8Gi");
    assert_eq!(
        res.requests.as_ref().unwrap()["memory"].0,
        "8Gi",
        "request follows the clamped limit"
    );
}

#[test]
fn restricted_denies_privileged_profiles_with_its_message() {
    let engine = engine(&shipped_chain()).expect("load");
    let mut p = profile();
    p.security_context = Some(k8s_openapi::api::core::v1::SecurityContext {
        privileged: Some(true),
        ..Default::default()
    });
    match shape(&engine, &p) {
        Err(PolicyError::Denied { plugin, message }) => {
            assert_eq!(plugin, "restricted");
            assert!(message.contains("privileged"), "{message}");
        }
        other => panic!("expected a denial, got {:?}", other.map(|s| s.steps.len())),
    }
}

#[test]
fn sidecar_pods_are_shaped_container_by_container() {
    let engine = engine(&shipped_chain()).expect("load");
    let shaped = shape(&engine, &sidecar_profile()).expect("shape");
    let spec = shaped.object.spec.unwrap();
    assert_eq!(spec.containers.len(), 2);
    for c in &spec.containers {
        assert_eq!(
            c.security_context
                .as_ref()
                .unwrap()
                .allow_privilege_escalation,
            Some(false),
            "{}",
            c.name
        );
        assert!(
            c.volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.mount_path == "/workspace")
        );
    }
    let browser = &spec.containers[1];
    assert!(
        browser
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.mount_path == "/dev/shm")
    );
}

#[test]
fn pvc_is_sized_from_the_cargo_and_bounded() {
    let engine = engine(&shipped_chain()).expect("load");
    let config = test_config("berth-plain");
    let labels = labels();
    let pvc = objects::cargo_pvc(&config, "cargo-c1", &labels, None);
    let ctx = objects::cargo_context(&config, "cargo-c1", &labels, 4096);
    let shaped = engine.shape(&ctx, pvc.clone()).expect("shape");
    let size = &shaped
        .object
        .spec
        .unwrap()
        .resources
        .unwrap()
        .requests
        .unwrap()["storage"];
    assert_eq!(size.0, "4Gi");
    assert_eq!(
        shaped.steps.len(),
        1,
        "only resources declares the pvc hook"
    );

    let mut deny = shipped_chain();
    deny[2].settings["on_exceed"] = "deny".into();
    let engine = self::engine(&deny).expect("load");
    let ctx = objects::cargo_context(&config, "cargo-c1", &labels, 100 * 1024);
    match engine.shape(&ctx, pvc) {
        Err(PolicyError::Denied { plugin, message }) => {
            assert_eq!(plugin, "resources");
            assert!(
                message.contains("above the maximum claim size 20Gi"),
                "{message}"
            );
        }
        other => panic!("expected a denial, got {:?}", other.map(|s| s.steps.len())),
    }
}

fn hostile_error(mode: &str) -> PluginError {
    hostile_error_within(mode, hostile(mode).deadline_ms)
}

/// As [`hostile_error`], with the plugin's deadline set: a mode whose work is
/// slow by nature (8 MiB of output through a debug build on a busy CI
/// machine) must fail for what it returns, not for its pace.
fn hostile_error_within(mode: &str, deadline_ms: u64) -> PluginError {
    let mut plugin = hostile(mode);
    plugin.deadline_ms = deadline_ms;
    let engine = engine(&[plugin]).expect("load");
    match shape(&engine, &profile()) {
        Err(PolicyError::Plugin(e)) => {
            assert_eq!(e.plugin(), Some(format!("hostile-{mode}").as_str()), "{e}");
            // The host keeps serving: the same engine runs a good call next.
            e
        }
        other => panic!(
            "mode {mode}: expected a plugin error, got {:?}",
            other.map(|s| s.steps.len())
        ),
    }
}

#[test]
fn traps_and_panics_are_contained() {
    assert!(matches!(hostile_error("trap"), PluginError::Trap { .. }));
    let e = hostile_error("panic");
    assert!(matches!(e, PluginError::Trap { .. }), "{e}");
}

#[test]
fn endless_loops_hit_the_deadline() {
    let mut cfg = hostile("loop");
    cfg.deadline_ms = 50;
    let engine = engine(&[cfg, hostile("pass")]).expect("load");
    let started = std::time::Instant::now();
    match shape(&engine, &profile()) {
        Err(PolicyError::Plugin(PluginError::Timeout { plugin, deadline })) => {
            assert_eq!(plugin, "hostile-loop");
            assert_eq!(deadline.as_millis(), 50);
            // Ticks are a tenth of the deadline: the plugin gets its time
            // (give or take one tick), not a premature cut.
            assert!(started.elapsed() >= std::time::Duration::from_millis(45));
        }
        other => panic!("expected a timeout, got {:?}", other.map(|s| s.steps.len())),
    }
    // Other plugins on the same engine still run.
    let ok = self::engine(&[hostile("pass")]).unwrap();
    assert!(shape(&ok, &profile()).is_ok());
}

#[test]
fn a_sleeping_plugin_ends_at_its_deadline_not_when_it_wakes() {
    // The fixture sleeps 5 s in wasi:io/poll, host code that epoch
    // interruption cannot reach.
    let mut cfg = hostile("sleep");
    cfg.deadline_ms = 100;
    let engine = engine(&[cfg]).expect("load");
    let started = std::time::Instant::now();
    match shape(&engine, &profile()) {
        Err(PolicyError::Plugin(PluginError::Timeout { plugin, deadline })) => {
            assert_eq!(plugin, "hostile-sleep");
            assert_eq!(deadline.as_millis(), 100);
        }
        other => panic!("expected a timeout, got {:?}", other.map(|s| s.steps.len())),
    }
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(2), "took {took:?}");

    // The same holds at load, for validate-settings.
    let mut at_load = hostile("sleep-at-load");
    at_load.deadline_ms = 100;
    let started = std::time::Instant::now();
    let e = self::engine(&[at_load])
        .err()
        .expect("a load that sleeps fails");
    assert!(matches!(e, PluginError::Timeout { .. }), "{e}");
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
}

#[test]
fn the_chain_has_one_budget_for_all_its_plugins() {
    // Three plugins that each run to their own 400 ms deadline would take
    // 1.2 s; the chain may take 500 ms.
    let runtime = Runtime::new(RuntimeOptions {
        chain_budget: std::time::Duration::from_millis(500),
        ..RuntimeOptions::default()
    })
    .expect("runtime");
    let slow = |n: u32| {
        let mut c = hostile("loop");
        c.name = format!("loop-{n}");
        c.deadline_ms = 400;
        c
    };
    let engine = PolicyEngine::new(runtime, &[slow(1), slow(2), slow(3)], Path::new("/")).unwrap();
    let started = std::time::Instant::now();
    match shape(&engine, &profile()) {
        // The first plugin uses its own 400 ms and fails on its own deadline.
        Err(PolicyError::Plugin(PluginError::Timeout { plugin, .. })) => {
            assert_eq!(plugin, "loop-1")
        }
        other => panic!("expected a timeout, got {:?}", other.map(|s| s.steps.len())),
    }
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_millis(900),
        "took {took:?}"
    );

    // A chain whose first plugin passes runs its second into the budget.
    let runtime = Runtime::new(RuntimeOptions {
        chain_budget: std::time::Duration::from_millis(300),
        ..RuntimeOptions::default()
    })
    .expect("runtime");
    let engine = PolicyEngine::new(runtime, &[hostile("pass"), slow(2)], Path::new("/")).unwrap();
    match shape(&engine, &profile()) {
        Err(PolicyError::Plugin(PluginError::ChainBudget { plugin, budget })) => {
            assert_eq!(plugin, "loop-2");
            assert_eq!(budget.as_millis(), 300);
        }
        other => panic!(
            "expected the chain budget, got {:?}",
            other.map(|s| s.steps.len())
        ),
    }
}

#[test]
fn what_a_plugin_says_is_bounded() {
    // 10,000 log lines of 1 KB each: the call succeeds; the first 64 KiB
    // are logged and the rest dropped.
    let rt = runtime();
    let flood = rt
        .load(
            "flood",
            std::fs::read(wasm("berth_fixture_hostile")).expect("component"),
            None,
            r#"{"mode":"log-flood"}"#.into(),
            Limits {
                deadline: std::time::Duration::from_secs(5),
                ..Limits::default()
            },
        )
        .expect("load");
    let (pod, ctx) = base(&profile());
    let text = serde_json::to_string(&pod).unwrap();
    let (result, stats) = rt.shape(&flood, Hook::Pod, &ctx, &text).expect("call");
    assert!(result.is_ok());
    // 64 KiB of ~1 KB lines: 65 logged.
    assert_eq!(stats.log_lines_dropped, 10_000 - 65);
    // A 1 MiB denial reaches the caller as one bounded line.
    let engine = engine_or_panic("huge-deny");
    match shape(&engine, &profile()) {
        Err(PolicyError::Denied { message, .. }) => {
            assert!(message.len() < 5000, "{} bytes", message.len());
            assert!(message.starts_with("no\\n"), "{}", &message[..20]);
            assert!(message.ends_with("… (cut)"));
        }
        other => panic!("expected a denial, got {:?}", other.map(|s| s.steps.len())),
    }
    // A trap is one line, without the WebAssembly backtrace.
    let e = hostile_error("trap");
    assert!(!e.to_string().contains('\n'), "{e}");
}

fn engine_or_panic(mode: &str) -> PolicyEngine {
    engine(&[hostile(mode)]).expect("load")
}

#[test]
fn overlapping_reloads_end_on_the_newest_plugin_list() {
    let engine = Arc::new(engine(&[hostile("pass")]).expect("load"));
    // A reload whose plugin takes 2 s to validate its settings...
    let mut slow = hostile("sleep-at-load");
    slow.deadline_ms = 10_000;
    let first = {
        let engine = engine.clone();
        std::thread::spawn(move || engine.reload(&[slow], Path::new("/")))
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    // ...and a newer one asked while it loads.
    let newest = engine
        .reload(&[hostile("deny")], Path::new("/"))
        .expect("reload");
    let older = first.join().unwrap().expect("slow reload");
    assert!(older < newest, "{older} {newest}");
    let live = engine.chain();
    assert_eq!(live.generation, newest);
    let names: Vec<String> = live.summaries().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["hostile-deny"]);
}

#[test]
fn a_plugin_that_prints_runs_and_its_output_goes_nowhere() {
    let engine = engine(&[hostile("print")]).expect("load");
    assert!(shape(&engine, &profile()).is_ok());
}

#[test]
fn memory_bombs_hit_the_cap() {
    // Growing to 64 MiB faults in every page; on a busy machine that takes
    // longer than the default 100 ms deadline. Only the cap may end it here.
    let mut bomb = hostile("memory-bomb");
    bomb.deadline_ms = 10_000;
    let e = match shape(&engine(&[bomb]).expect("load"), &profile()) {
        Err(PolicyError::Plugin(e)) => e,
        other => panic!(
            "expected a plugin error, got {:?}",
            other.map(|s| s.steps.len())
        ),
    };
    assert!(
        matches!(e, PluginError::MemoryExceeded { limit, .. } if limit == 64 << 20),
        "{e}"
    );
}

#[test]
fn invalid_output_is_rejected_with_the_reason() {
    let e = hostile_error("garbage");
    assert!(
        matches!(&e, PluginError::InvalidOutput { message, .. } if message.starts_with("not JSON")),
        "{e}"
    );
    let e = hostile_error("not-object");
    assert!(
        matches!(&e, PluginError::InvalidOutput { message, .. } if message == "not a JSON object"),
        "{e}"
    );
    let e = hostile_error("invalid-pod");
    assert!(
        matches!(&e, PluginError::InvalidOutput { kind: "Pod", message, .. } if message.contains("invalid type")),
        "{e}"
    );
    let e = hostile_error_within("huge", 10_000);
    assert!(
        matches!(e, PluginError::OutputTooLarge { limit, size, .. } if limit == 1 << 20 && size > 8 << 20),
        "{e}"
    );
    let e = hostile_error("error");
    assert!(
        matches!(&e, PluginError::Reported { message, .. } if message == "hostile plugin could not cope"),
        "{e}"
    );
}

#[test]
fn an_invalid_object_is_blamed_on_the_plugin_that_produced_it() {
    // Between plugins the host reads only JSON and identity; the typed parse
    // comes at the end of the chain, or when anything fails. Either way the
    // plugin that broke the object is named, not the one that tripped on it.
    let alone = hostile_error("wrong-type");
    assert!(
        matches!(&alone, PluginError::InvalidOutput { kind: "Pod", message, .. } if message.contains("invalid type: integer `5`")),
        "{alone}"
    );
    for next in ["pass", "deny", "error", "trap"] {
        let engine = engine(&[hostile("wrong-type"), hostile(next)]).expect("load");
        match shape(&engine, &profile()) {
            Err(PolicyError::Plugin(PluginError::InvalidOutput {
                plugin, message, ..
            })) => {
                assert_eq!(plugin, "hostile-wrong-type", "then {next}");
                assert!(message.contains("invalid type: integer `5`"), "{message}");
            }
            other => panic!(
                "then {next}: expected the first plugin's invalid output, got {:?}",
                other.map(|s| s.steps.len())
            ),
        }
    }
    // A valid object before a failing plugin leaves the blame where it is.
    let engine = engine(&[hostile("pass"), hostile("error")]).expect("load");
    let e = shape(&engine, &profile())
        .map(|s| s.steps.len())
        .unwrap_err();
    assert!(
        matches!(&e, PolicyError::Plugin(PluginError::Reported { plugin, .. }) if plugin == "hostile-error"),
        "{e}"
    );
}

#[test]
fn identity_fields_are_protected() {
    for (mode, field) in [
        ("rename", "metadata.name"),
        ("drop-managed-label", "managed label set"),
        (
            "unmount-workspace",
            "spec.containers[ship].volumeMounts[workspace]",
        ),
    ] {
        match hostile_error(mode) {
            PluginError::IdentityViolation { field: f, .. } => assert_eq!(f, field, "mode {mode}"),
            e => panic!("mode {mode}: expected an identity violation, got {e}"),
        }
    }
}

#[test]
fn plugins_have_no_ambient_authority() {
    let engine = engine(&[hostile("probe-ambient")]).unwrap();
    match shape(&engine, &profile()) {
        Err(PolicyError::Denied { message, .. }) => {
            assert_eq!(message, "ambient fs=false env=false net=false")
        }
        other => panic!(
            "expected the probe's report, got {:?}",
            other.map(|s| s.steps.len())
        ),
    }
}

#[test]
fn every_call_gets_a_fresh_instance() {
    let engine = engine(&[hostile("counter")]).unwrap();
    for _ in 0..3 {
        match shape(&engine, &profile()) {
            Err(PolicyError::Denied { message, .. }) => assert_eq!(message, "call 1"),
            other => panic!("expected a denial, got {:?}", other.map(|s| s.steps.len())),
        }
    }
}

#[test]
fn load_errors_are_precise() {
    let load_kind = |cfg: PluginConfig| match engine(&[cfg]) {
        Err(PluginError::Load { kind, .. }) => kind,
        Err(e) => panic!("expected a load error, got {e}"),
        Ok(_) => panic!("expected a load error"),
    };
    let future = plugin(
        "future",
        "berth_fixture_future_wit",
        serde_json::Value::Null,
    );
    assert_eq!(
        load_kind(future),
        LoadErrorKind::WitVersion {
            found: "9.0.0".into(),
            supported: "0.1.0".into()
        }
    );

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"definitely not wasm").unwrap();
    let mut cfg = hostile("pass");
    cfg.path = Some(junk);
    assert!(matches!(load_kind(cfg), LoadErrorKind::Invalid(_)));

    // A core module (not a component) exporting nothing.
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]).unwrap();
    let mut cfg = hostile("pass");
    cfg.path = Some(core);
    assert!(matches!(load_kind(cfg), LoadErrorKind::Invalid(_)));

    // The right names, the wrong types: refused at load, naming the
    // function, not a "trap" at the first session.
    let wrong = plugin(
        "wrong",
        "berth_fixture_wrong_signature",
        serde_json::Value::Null,
    );
    match load_kind(wrong) {
        LoadErrorKind::Signature(m) => {
            assert!(m.starts_with("shape-pod does not have the type"), "{m}");
            assert!(m.contains("expected 3-tuple, found 1-tuple"), "{m}");
        }
        other => panic!("expected a signature error, got {other}"),
    }
    // 316 MiB of memory before the first instruction: refused at load with
    // both sizes in MiB, whether over the engine's maximum or the entry's own.
    let big = || plugin("big", "berth_fixture_big_memory", serde_json::Value::Null);
    assert_eq!(
        load_kind(big()),
        LoadErrorKind::InitialMemory {
            needs_mib: 316,
            limit_mib: 64
        }
    );
    let mut roomy = big();
    roomy.memory_mb = 200;
    assert_eq!(
        load_kind(roomy.clone()),
        LoadErrorKind::InitialMemory {
            needs_mib: 316,
            limit_mib: 200
        }
    );
    roomy.memory_mb = 320;
    let spacious = Runtime::new(RuntimeOptions {
        max_memory_bytes: 320 << 20,
        max_instances: 2,
        ..RuntimeOptions::default()
    })
    .unwrap();
    let loaded = PolicyEngine::new(spacious, &[roomy], Path::new("/")).expect("fits in 320 MiB");
    assert_eq!(loaded.chain().summaries()[0].plugin_version, "0.0.0");

    let mut cfg = hostile("pass");
    cfg.sha256 = Some("0".repeat(64));
    assert!(matches!(load_kind(cfg), LoadErrorKind::HashMismatch { .. }));

    let mut cfg = hostile("pass");
    cfg.path = Some(dir.path().join("missing.wasm"));
    assert!(matches!(load_kind(cfg), LoadErrorKind::Read(_)));
    // Not a file to read whole: refused before a byte is read.
    let mut cfg = hostile("pass");
    cfg.path = Some("/dev/zero".into());
    assert_eq!(
        load_kind(cfg),
        LoadErrorKind::Read("/dev/zero is not a regular file".into())
    );

    match engine(&[hostile("bad-settings")]) {
        Err(PluginError::Settings { plugin, message }) => {
            assert_eq!(plugin, "hostile-bad-settings");
            assert_eq!(message, "mode bad-settings is refused at load, as asked");
        }
        Err(e) => panic!("expected a settings error, got {e}"),
        Ok(_) => panic!("expected a settings error"),
    }
    let mut bad = shipped_chain();
    bad[0].settings = serde_json::json!({ "run_as_user": 0 });
    match engine(&bad) {
        Err(PluginError::Settings { plugin, message }) => {
            assert_eq!(plugin, "restricted");
            assert!(
                message.contains("run_as_user must be a non-root uid"),
                "{message}"
            );
        }
        Err(e) => panic!("expected a settings error, got {e}"),
        Ok(_) => panic!("expected a settings error"),
    }
    bad[0].settings = serde_json::json!({ "run_as_usr": 5 });
    assert!(
        matches!(engine(&bad), Err(PluginError::Settings { message, .. }) if message.contains("unknown field `run_as_usr`"))
    );
}

#[test]
fn compiled_plugins_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let opts = RuntimeOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        max_instances: 8,
        max_memory_bytes: 256 << 20,
        ..RuntimeOptions::default()
    };
    let first = PolicyEngine::new(
        Runtime::new(opts.clone()).unwrap(),
        &shipped_chain(),
        Path::new("/"),
    )
    .unwrap();
    assert!(first.chain().summaries().iter().all(|s| !s.from_cache));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    let second = PolicyEngine::new(
        Runtime::new(opts.clone()).unwrap(),
        &shipped_chain(),
        Path::new("/"),
    )
    .unwrap();
    assert!(second.chain().summaries().iter().all(|s| s.from_cache));

    // A corrupt artifact is discarded and rebuilt, not trusted.
    for f in std::fs::read_dir(dir.path()).unwrap() {
        std::fs::write(f.unwrap().path(), b"corrupt").unwrap();
    }
    let third = PolicyEngine::new(
        Runtime::new(opts).unwrap(),
        &shipped_chain(),
        Path::new("/"),
    )
    .unwrap();
    assert!(third.chain().summaries().iter().all(|s| !s.from_cache));
    assert!(shape(&third, &profile()).is_ok());
}

#[test]
fn reload_swaps_generations_atomically_and_keeps_the_last_good_one() {
    let engine = Arc::new(engine(&[hostile("pass")]).unwrap());
    let before = engine.chain();
    assert_eq!(before.generation, 1);

    let generation = engine
        .reload(&shipped_chain(), Path::new("/"))
        .expect("reload");
    assert_eq!(generation, 2);
    assert_eq!(engine.chain().summaries().len(), 3);
    // A caller holding the old generation finishes on it.
    assert_eq!(before.summaries()[0].name, "hostile-pass");

    let broken = vec![shipped_chain()[0].clone(), hostile("bad-settings")];
    let err = engine.reload(&broken, Path::new("/")).unwrap_err();
    assert!(matches!(err, PluginError::Settings { .. }));
    assert_eq!(
        engine.chain().generation,
        2,
        "the last good generation keeps serving"
    );
    assert!(engine.last_error().unwrap().contains("bad-settings"));
    assert!(shape(&engine, &profile()).is_ok());
}

#[test]
fn plugins_apply_only_to_their_profiles_and_namespaces() {
    let mut only_gpu = hostile("deny");
    only_gpu.profiles = vec!["gpu".into()];
    let mut other_ns = hostile("error");
    other_ns.namespaces = vec!["elsewhere".into()];
    let engine = engine(&[only_gpu, other_ns]).unwrap();
    assert!(shape(&engine, &profile()).unwrap().steps.is_empty());
    let mut gpu = profile();
    gpu.id = "gpu".into();
    assert!(matches!(
        shape(&engine, &gpu),
        Err(PolicyError::Denied { .. })
    ));
}

#[test]
fn pvc_hook_identity_is_protected_too() {
    let engine = engine(&[hostile("drop-managed-label")]).unwrap();
    let config = test_config("berth-plain");
    let mut l = labels();
    l.insert("bay.session_id".into(), "s1".into());
    let pvc: PersistentVolumeClaim = objects::cargo_pvc(&config, "cargo-c1", &l, None);
    let ctx = objects::cargo_context(&config, "cargo-c1", &l, 1024);
    let r = engine.shape(&ctx, pvc);
    assert!(matches!(
        r,
        Err(PolicyError::Plugin(PluginError::IdentityViolation { .. }))
    ));
}

/// An engine over `plugins` with the guards the server derives from a
/// default config (Bay's pods are the trusted peers).
fn guarded(plugins: &[PluginConfig], pod_security: PodSecurity) -> PolicyEngine {
    let config = berth::config::Config {
        pod_security,
        ..test_config("berth-plain")
    };
    engine(plugins).expect("load").with_guards(config.guards())
}

#[test]
fn plugins_cannot_undo_the_platforms_guarantees() {
    for (mode, rule) in [
        ("service-account", "service-account"),
        ("node-name", "node-name"),
        ("finalizer", "finalizers"),
        ("mount-theirs", "volume-sources"),
        ("secret-volume", "volume-sources"),
        ("trusted-label", "trusted-peer-labels"),
    ] {
        let engine = guarded(&[hostile(mode)], PodSecurity::Baseline);
        match shape(&engine, &profile()) {
            Err(PolicyError::Plugin(PluginError::Guarded {
                plugin,
                rule: r,
                path,
            })) => {
                assert_eq!(plugin, format!("hostile-{mode}"));
                assert_eq!(r, rule, "{mode}: {path}");
            }
            other => panic!(
                "{mode}: expected a guard, got {:?}",
                other.map(|s| s.object)
            ),
        }
    }
    // Mounting the cargo twice, or in a container of the plugin's own, is
    // an identity change.
    match shape(
        &guarded(&[hostile("second-mount")], PodSecurity::Baseline),
        &profile(),
    ) {
        Err(PolicyError::Plugin(PluginError::IdentityViolation { field, .. })) => {
            assert!(field.contains("volumeMounts[workspace]"), "{field}")
        }
        other => panic!(
            "expected an identity violation, got {:?}",
            other.map(|s| s.object)
        ),
    }
    // An operator can lift one rule for one plugin, by name.
    let mut placed = hostile("node-name");
    placed.allow = vec![Rule::NodeName];
    let shaped = shape(&guarded(&[placed], PodSecurity::Baseline), &profile()).expect("allowed");
    assert_eq!(
        shaped.object.spec.unwrap().node_name.as_deref(),
        Some("kwok-node-0")
    );
}

#[test]
fn a_mutation_scope_holds_a_plugin_to_its_fields() {
    let mut scoped = hostile("node-selector");
    scoped.mutation_scope = Some(vec!["/spec/affinity".into(), "/spec/tolerations".into()]);
    match shape(
        &guarded(&[scoped.clone()], PodSecurity::Baseline),
        &profile(),
    ) {
        Err(PolicyError::Plugin(PluginError::OutOfScope { plugin, path })) => {
            assert_eq!(plugin, "hostile-node-selector");
            assert_eq!(path, "/spec/nodeSelector");
        }
        other => panic!("expected out of scope, got {:?}", other.map(|s| s.object)),
    }
    scoped.mutation_scope = Some(vec!["/spec/nodeSelector".into()]);
    shape(
        &guarded(&[scoped.clone()], PodSecurity::Baseline),
        &profile(),
    )
    .expect("in scope");
    scoped.mutation_scope = Some(vec!["spec".into()]);
    match engine(&[scoped]) {
        Err(PluginError::Config(m)) => assert!(m.contains("JSON pointer"), "{m}"),
        other => panic!("expected a config error, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn the_pod_security_level_is_checked_and_blamed() {
    // The plugin that made the Pod privileged is named, whatever ran after.
    let chain = [hostile("pass"), hostile("privileged"), hostile("log")];
    match shape(&guarded(&chain, PodSecurity::Baseline), &profile()) {
        Err(PolicyError::Plugin(PluginError::Posture {
            plugin,
            level,
            message,
        })) => {
            assert_eq!(plugin, "hostile-privileged");
            assert_eq!(level, "baseline");
            assert!(message.contains("Privileged"), "{message}");
        }
        other => panic!(
            "expected a posture violation, got {:?}",
            other.map(|s| s.object)
        ),
    }
    // `none` leaves it to the namespace's admission.
    shape(&guarded(&chain, PodSecurity::None), &profile()).expect("no posture check");
    // Under restricted, a request always falls short (Bay never drops ALL
    // capabilities); the plugin that fixes that is not blamed for a
    // violation a later plugin brings in.
    let restricted = plugin(
        "restricted",
        "berth_plugin_restricted",
        serde_json::json!({}),
    );
    match shape(
        &guarded(
            &[restricted, hostile("host-network")],
            PodSecurity::Restricted,
        ),
        &profile(),
    ) {
        Err(PolicyError::Plugin(PluginError::Posture {
            plugin, message, ..
        })) => {
            assert_eq!(plugin, "hostile-host-network");
            assert!(message.contains("Host Namespaces"), "{message}");
        }
        other => panic!(
            "expected a posture violation, got {:?}",
            other.map(|s| s.object)
        ),
    }
    // A request that is privileged before any plugin is denied as such.
    let mut asks: berth::model::Profile = profile();
    asks.security_context =
        Some(serde_json::from_value(serde_json::json!({ "privileged": true })).unwrap());
    match shape(&guarded(&[hostile("pass")], PodSecurity::Baseline), &asks) {
        Err(PolicyError::Denied { plugin, message }) => {
            assert_eq!(plugin, "pod-security");
            assert!(message.contains("as requested"), "{message}");
        }
        other => panic!("expected a denial, got {:?}", other.map(|s| s.object)),
    }
}

#[test]
fn claims_keep_their_source() {
    let engine = guarded(&[hostile("data-source")], PodSecurity::Baseline);
    let config = test_config("berth-plain");
    let pvc = objects::cargo_pvc(&config, "cargo-c1", &labels(), None);
    let ctx = objects::cargo_context(&config, "cargo-c1", &labels(), 1024);
    match engine.shape(&ctx, pvc) {
        Err(PolicyError::Plugin(PluginError::Guarded { rule, path, .. })) => {
            assert_eq!(rule, "claim-source");
            assert_eq!(path, "/spec/dataSource");
        }
        other => panic!("expected a guard, got {:?}", other.map(|s| s.object)),
    }
}

#[test]
fn host_resources_a_plugin_holds_are_bounded() {
    // Pollables never dropped: host memory outside memory_mb, ~15 MB a call
    // before the cap. Now the call fails at the cap, long before its deadline.
    let e = hostile_error_within("handles", 5_000);
    assert!(matches!(e, PluginError::TooManyHandles { .. }), "{e}");
    assert_eq!(e.reason(), "handles");
}

/// Runs `mode` with a long deadline on a thread, cancels it after 200 ms;
/// the error and how long the whole run took.
fn cancelled_run(mode: &str) -> (PolicyError, std::time::Duration) {
    let mut p = hostile(mode);
    p.deadline_ms = 8_000;
    let rt = Runtime::new(RuntimeOptions {
        cache_dir: Some(repo_root().join("target/berth-test-plugin-cache")),
        max_instances: 4,
        chain_budget: std::time::Duration::from_secs(10),
        ..RuntimeOptions::default()
    })
    .unwrap();
    let engine = Arc::new(PolicyEngine::new(rt, &[p], Path::new("/")).expect("load"));
    let cancel = tokio_util::sync::CancellationToken::new();
    let started = std::time::Instant::now();
    let run = {
        let (engine, cancel) = (engine.clone(), cancel.clone());
        std::thread::spawn(move || {
            let (pod, ctx) = base(&profile());
            engine
                .shape_cancellable(&ctx, pod, cancel)
                .map(|s| s.steps.len())
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    cancel.cancel();
    let result = run.join().unwrap();
    (result.expect_err("cancelled"), started.elapsed())
}

#[test]
fn a_cancelled_chain_stops_its_plugin_running_or_waiting() {
    for mode in ["loop", "sleep"] {
        let (e, took) = cancelled_run(mode);
        match e {
            PolicyError::Plugin(PluginError::Cancelled { plugin }) => {
                assert_eq!(plugin, format!("hostile-{mode}"))
            }
            other => panic!("{mode}: expected cancelled, got {other}"),
        }
        // Stopped at the next tick, not at the 8 s deadline (nor the 5 s
        // the sleeping plugin asks for).
        assert!(took < std::time::Duration::from_secs(3), "{mode}: {took:?}");
    }
}

/// The Python fixture in `mode`, with a deadline Python's per-call cost
/// (about 2 ms) leaves far behind.
fn hostile_python(mode: &str) -> PluginConfig {
    let mut p = plugin(
        &format!("py-{mode}"),
        "berth_fixture_hostile_python",
        serde_json::json!({ "mode": mode }),
    );
    p.deadline_ms = 1_000;
    p
}

#[test]
fn python_plugins_are_contained_like_rust_ones() {
    let chain = engine(&[
        hostile_python("pass"),
        plugin(
            "image-policy",
            "berth_plugin_image_policy",
            serde_json::json!({ "allowed_registries": ["ghcr.io/example"], "pull_policy": "Always" }),
        ),
    ])
    .expect("Python plugins load through the same runtime");
    let shaped = shape(&chain, &profile()).expect("shape");
    assert_eq!(
        shaped.object.spec.unwrap().containers[0]
            .image_pull_policy
            .as_deref(),
        Some("Always")
    );

    let failure = |mode: &str| {
        let engine = engine(&[hostile_python(mode)]).expect("load");
        match shape(&engine, &profile()) {
            Err(e) => e,
            Ok(_) => panic!("mode {mode}: expected a failure"),
        }
    };
    match failure("raise") {
        PolicyError::Plugin(PluginError::Reported { plugin, message }) => {
            assert_eq!(plugin, "py-raise");
            assert_eq!(
                message,
                "RuntimeError: hostile python plugin raised on purpose"
            );
        }
        other => panic!("raise: {other}"),
    }
    match failure("deny") {
        PolicyError::Denied { plugin, message } => {
            assert_eq!(plugin, "py-deny");
            assert_eq!(message, "hostile python plugin says no");
        }
        other => panic!("deny: {other}"),
    }
    assert!(
        matches!(failure("recursion"), PolicyError::Plugin(PluginError::Reported { message, .. }) if message.starts_with("RecursionError"))
    );
    assert!(matches!(
        failure("loop"),
        PolicyError::Plugin(PluginError::Timeout { .. })
    ));
    assert!(matches!(
        failure("memory-bomb"),
        PolicyError::Plugin(PluginError::MemoryExceeded { .. })
    ));
    assert!(matches!(
        failure("rename"),
        PolicyError::Plugin(PluginError::IdentityViolation { .. })
    ));
    let e = failure("exit");
    assert!(
        matches!(e, PolicyError::Plugin(PluginError::Trap { .. })),
        "{e}"
    );
}

#[test]
fn compiling_in_a_child_blames_the_component_or_the_compiler_rightly() {
    let load = |compiler: &str, path: std::path::PathBuf| {
        let cache = tempfile::tempdir().unwrap();
        let rt = Runtime::new(RuntimeOptions {
            cache_dir: Some(cache.path().to_path_buf()),
            max_instances: 4,
            compiler: Some(compiler.into()),
            ..RuntimeOptions::default()
        })
        .unwrap();
        let mut cfg = shipped_chain().remove(0);
        cfg.path = Some(path);
        let loaded = PolicyEngine::new(rt, &[cfg], Path::new("/"));
        // The artifact the child handed back is in the cache.
        let cached = std::fs::read_dir(cache.path()).unwrap().count();
        (loaded, cached)
    };
    let berth = env!("CARGO_BIN_EXE_berth");
    let (loaded, cached) = load(berth, wasm("berth_plugin_restricted"));
    assert!(loaded.is_ok(), "{:?}", loaded.err());
    assert_eq!(cached, 1);

    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]).unwrap();
    match load(berth, core).0 {
        Err(PluginError::Load {
            kind: LoadErrorKind::Invalid(m),
            ..
        }) => {
            assert!(m.contains("component"), "{m}")
        }
        other => panic!("expected the component's fault, got {:?}", other.err()),
    }
    match load("/nonexistent/berth", wasm("berth_plugin_restricted")).0 {
        Err(PluginError::Load {
            kind: LoadErrorKind::Compiler(m),
            ..
        }) => {
            assert!(
                m.starts_with("cannot start the compiler /nonexistent/berth"),
                "{m}"
            )
        }
        other => panic!("expected the compiler's fault, got {:?}", other.err()),
    }
}
