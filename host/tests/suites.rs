//! The plugin author's harness: every shipped plugin's suite passes, and
//! the harness itself reports failures precisely.

mod common;

use std::path::Path;

use berth::harness::{Options, run_suite};
use common::*;

fn opts() -> Options {
    Options {
        update: false,
        filter: None,
        cache_dir: Some(repo_root().join("target/berth-test-plugin-cache")),
    }
}

#[test]
fn shipped_plugin_suites_pass() {
    for plugin in ["restricted", "scheduling", "resources", "image-policy"] {
        wasm(&format!("berth_plugin_{}", plugin.replace('-', "_")));
        let suite = repo_root().join(format!("plugins/{plugin}/tests/suite.yaml"));
        let results = run_suite(&suite, &opts()).expect("suite loads");
        assert!(results.len() >= 3, "{plugin}: {} cases", results.len());
        for r in &results {
            assert!(
                r.passed,
                "{plugin} :: {}: {:?}\n{}",
                r.case,
                r.failures,
                r.diff.clone().unwrap_or_default()
            );
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn failures_are_reported_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let restricted = wasm("berth_plugin_restricted");
    write(
        dir.path(),
        "wrong.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: { name: nope }\n",
    );
    let suite = write(
        dir.path(),
        "suite.yaml",
        &format!(
            r#"
plugins:
  - {{ name: restricted, path: {p} }}
cases:
  - name: wrong-golden
    request: {{ session: {{ id: s1, sandbox_id: b }}, profile: {{ id: p, image: i }}, cargo: {{ id: c, driver_ref: cargo-c }} }}
    expect: {{ golden: wrong.yaml }}
  - name: not-restricted-without-the-plugin-effect
    input: {{ apiVersion: v1, kind: Pod, metadata: {{ name: x, namespace: bay }}, spec: {{ containers: [{{ name: c, image: i, securityContext: {{ privileged: true }} }}] }} }}
    expect: {{ deny: "this will not match" }}
  - name: only-paths-violated
    request: {{ session: {{ id: s1, sandbox_id: b }}, profile: {{ id: p, image: i }}, cargo: {{ id: c, driver_ref: cargo-c }} }}
    expect: {{ golden: missing.yaml }}
    assert: {{ only_paths: [/metadata] }}
"#,
            p = restricted.display()
        ),
    );
    let results = run_suite(&suite, &opts()).unwrap();
    assert!(results.iter().all(|r| !r.passed));
    let wrong = &results[0];
    assert!(
        wrong.failures[0].contains("output differs from"),
        "{:?}",
        wrong.failures
    );
    let diff = wrong.diff.as_ref().unwrap();
    assert!(
        diff.contains("-metadata: { name: nope }")
            || diff.contains("-  name: nope")
            || diff.contains("-metadata"),
        "{diff}"
    );
    assert!(
        diff.contains("+  securityContext:") || diff.contains("+spec:"),
        "{diff}"
    );
    assert!(!wrong.steps.is_empty(), "per-plugin diffs are reported");
    assert!(
        results[1].failures[0].contains("does not match /this will not match/"),
        "{:?}",
        results[1].failures
    );
    assert!(
        results[2]
            .failures
            .iter()
            .any(|f| f.contains("outside only_paths")),
        "{:?}",
        results[2].failures
    );
    assert!(
        results[2]
            .failures
            .iter()
            .any(|f| f.contains("run with --update")),
        "{:?}",
        results[2].failures
    );

    // A malformed suite names the file, line and column.
    let bad = write(
        dir.path(),
        "bad.yaml",
        "plugins: []\ncases:\n  - name: x\n    expect: { golden: a.yaml }\n    bogus: 1\n",
    );
    let e = run_suite(&bad, &opts()).unwrap_err().to_string();
    assert!(
        e.contains("bad.yaml") && e.contains("unknown field `bogus`") && e.contains("line 5"),
        "{e}"
    );

    // The harness's own restricted check names the rule.
    let lax = write(
        dir.path(),
        "lax.yaml",
        r#"
plugins: []
cases:
  - name: lax
    input: { apiVersion: v1, kind: Pod, metadata: { name: x, namespace: bay }, spec: { containers: [{ name: c, image: i }] } }
    expect: { golden: lax-golden.yaml }
    assert: { restricted: true }
"#,
    );
    let results = run_suite(
        &lax,
        &Options {
            update: true,
            ..opts()
        },
    )
    .unwrap();
    assert!(
        results[0]
            .failures
            .iter()
            .any(|f| f.contains("rule \"Privilege Escalation\"")),
        "{:?}",
        results[0].failures
    );
    assert!(
        results[0]
            .failures
            .iter()
            .any(|f| f.contains("rule \"Capabilities (restricted)\"")),
        "{:?}",
        results[0].failures
    );
}

/// `berth plugin new NAME --lang LANG && cd NAME && berth plugin test`,
/// exactly as an author types it; the second `test` builds nothing.
fn scaffold_passes_as_generated(lang: &str, path: &std::ffi::OsStr) -> String {
    let dir = tempfile::tempdir().unwrap();
    let berth = env!("CARGO_BIN_EXE_berth");
    let out = std::process::Command::new(berth)
        .args(["plugin", "new", "team-label", "--lang", lang, "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = dir.path().join("team-label");
    let test = || {
        std::process::Command::new(berth)
            .args(["plugin", "test"])
            .current_dir(&root)
            .env("PATH", path)
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .unwrap()
    };
    let first = test();
    let stdout = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(
        first.status.success(),
        "{lang}: {stdout}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(stdout.contains("2 passed, 0 failed"), "{stdout}");
    let second = test();
    assert!(second.status.success());
    // A second `new` into the same place refuses to overwrite.
    let again = std::process::Command::new(berth)
        .args(["plugin", "new", "team-label", "--lang", lang, "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    String::from_utf8_lossy(&second.stdout).to_string()
}

#[test]
fn scaffolded_rust_plugin_passes_with_one_command() {
    scaffold_passes_as_generated("rust", &std::env::var_os("PATH").unwrap_or_default());
}

#[test]
fn scaffolded_python_plugin_passes_with_one_command() {
    // The Python SDK as tests/build-plugins.sh installs it.
    let venv = repo_root().join("target/py-plugin-venv/bin");
    assert!(
        venv.join("berth-plugin-build").exists(),
        "{} has no berth-plugin-build: run tests/build-plugins.sh",
        venv.display()
    );
    let path = std::env::join_paths(std::iter::once(venv).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let second = scaffold_passes_as_generated("python", &path);
    assert!(second.contains("is up to date"), "{second}");
}

#[test]
fn a_directory_that_is_no_plugin_project_is_told_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["plugin", "test"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a plugin project (no Cargo.toml or pyproject.toml)"),
        "{stderr}"
    );
}

#[test]
fn plugin_bench_reports_every_figure() {
    wasm("berth_plugin_resources");
    let suite = repo_root().join("plugins/resources/tests/suite.yaml");
    let r = berth::harness::bench::bench_case(&suite, Some("defaults-added"), 50).unwrap();
    assert_eq!(r.case, "defaults-added");
    assert_eq!(r.calls, 50);
    assert!(
        r.calls_per_second > 0.0 && r.p99_us >= r.p50_us && r.p50_us > 0.0,
        "{r:?}"
    );
    assert_eq!(r.plugins.len(), 1);
    let p = &r.plugins[0];
    assert!(p.peak_memory_kib > 0, "{p:?}");
    // Every phase was measured, and none alone exceeds a whole call by more
    // than noise between separate medians could explain.
    for phase in [p.instantiate_p50_us, p.run_p50_us, p.teardown_p50_us] {
        assert!(phase > 0.0 && phase < p.call_p50_us * 1.5, "{p:?}");
    }
    assert!(
        p.cached_load_ms < p.compile_ms,
        "a cached load skips Cranelift: {p:?}"
    );
    let e = berth::harness::bench::bench_case(&suite, Some("no-such-case"), 1).unwrap_err();
    assert!(
        e.to_string().contains("no case named \"no-such-case\""),
        "{e}"
    );
}

#[test]
fn render_prints_what_the_server_would_create() {
    wasm("berth_plugin_restricted");
    let dir = tempfile::tempdir().unwrap();
    let req = write(
        dir.path(),
        "req.yaml",
        "session: { id: s1, sandbox_id: sb1 }\nprofile: { id: python, image: \"ship:1.0\" }\ncargo: { id: c1, driver_ref: cargo-c1, size_limit_mb: 4096 }\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["render", "--config"])
        .arg(repo_root().join("deploy/berth.example.yaml"))
        .arg("--request")
        .arg(&req)
        .env("BERTH_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("# Pod after 3 plugin(s)"), "{stdout}");
    assert!(stdout.contains("name: bay-session-s1"), "{stdout}");
    assert!(stdout.contains("# restricted changed: "), "{stdout}");
    assert!(
        stdout.contains("# Pvc after 1 plugin(s)") && stdout.contains("storage: 4Gi"),
        "{stdout}"
    );
}

#[test]
fn filter_and_report_on_the_command_line() {
    wasm("berth_plugin_scheduling");
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let junit = dir.path().join("junit.xml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["plugin", "test"])
        .arg(repo_root().join("plugins/scheduling/tests/suite.yaml"))
        .args(["--filter", "default-rule", "--report"])
        .arg(&report)
        .arg("--junit")
        .arg(&junit)
        .env("BERTH_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("PASS")
            && stdout.contains(":: default-rule")
            && stdout.contains("1 passed, 0 failed"),
        "{stdout}"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r.as_array().unwrap().len(), 1);
    assert_eq!(r[0]["case"], "default-rule");
    assert_eq!(r[0]["passed"], true);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("tests=\"1\" failures=\"0\"") && xml.contains("name=\"default-rule\"/>"),
        "{xml}"
    );
}

/// The offline tools as a user runs them, with plugins that print and sleep:
/// no panic, the plugin named, and an exit status that says what happened.
#[test]
fn offline_tools_survive_plugins_that_print_or_sleep() {
    let hostile = wasm("berth_fixture_hostile");
    let dir = tempfile::tempdir().unwrap();
    let config = |mode: &str| {
        write(
            dir.path(),
            &format!("{mode}.yaml"),
            &format!(
                "tokens: [unused-token-0123456789]\nplugins:\n  - {{ name: {mode}, path: {}, deadline_ms: 100, settings: {{ mode: {mode} }} }}\n",
                hostile.display()
            ),
        )
    };
    let req = write(
        dir.path(),
        "req.yaml",
        "session: { id: s1, sandbox_id: sb1 }\nprofile: { id: python, image: \"ship:1.0\" }\ncargo: { id: c1, driver_ref: cargo-c1 }\n",
    );
    let run = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .env("BERTH_LOG", "warn")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains("panicked"), "{text}");
        (out.status.code(), text)
    };
    let print = config("print");
    let (code, text) = run(&[
        "render".as_ref(),
        "--config".as_ref(),
        print.as_os_str(),
        "--request".as_ref(),
        req.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("# Pod after 1 plugin(s)"), "{text}");
    let (code, text) = run(&["check".as_ref(), "--config".as_ref(), print.as_os_str()]);
    assert_eq!(code, Some(0), "{text}");

    let started = std::time::Instant::now();
    let sleep = config("sleep");
    let (code, text) = run(&[
        "render".as_ref(),
        "--config".as_ref(),
        sleep.as_os_str(),
        "--request".as_ref(),
        req.as_os_str(),
    ]);
    assert_eq!(code, Some(1), "a failed chain is a failed render: {text}");
    assert!(text.contains("sleep") && text.contains("100ms"), "{text}");
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(4),
        "took {took:?}: the 5 s sleep was waited out"
    );

    let suite = write(
        dir.path(),
        "suite.yaml",
        &format!(
            "plugins:\n  - {{ name: print, path: {}, settings: {{ mode: print }} }}\ncases:\n  - name: prints\n    input: {{ apiVersion: v1, kind: Pod, metadata: {{ name: p }}, spec: {{ containers: [] }} }}\n    expect: {{ golden: golden.yaml }}\n",
            hostile.display()
        ),
    );
    let (code, text) = run(&[
        "plugin".as_ref(),
        "test".as_ref(),
        suite.as_os_str(),
        "--update".as_ref(),
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("1 passed, 0 failed"), "{text}");
}
