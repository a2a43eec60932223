//! The plugin author's test harness: suites of cases run through the very
//! same object builder, runtime and chain the server uses.

pub mod bench;
pub mod junit;
pub mod project;
pub mod pss;
pub mod registry;
pub mod scaffold;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;
use crate::objects;
use crate::plugin::SessionContext;
use crate::plugin::{
    Hook, PluginConfig, PluginError, PolicyEngine, PolicyError, Runtime, RuntimeOptions,
};

/// A suite file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// The chain, in order (paths relative to the suite file).
    pub plugins: Vec<PluginConfig>,
    /// Namespace and label prefix the objects are built for.
    #[serde(default)]
    pub namespace: Option<String>,
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default = "default_hook")]
    pub hook: Hook,
    /// Bay's request; the harness builds the base Pod (or PVC) from it
    /// exactly as the server would.
    #[serde(default)]
    pub request: Option<Request>,
    /// An explicit input object instead of a request.
    #[serde(default)]
    pub input: Option<Value>,
    /// Per-plugin settings overriding the suite's, by plugin name.
    #[serde(default)]
    pub settings: BTreeMap<String, Value>,
    pub expect: ExpectSpec,
    #[serde(default)]
    pub assert: Assertions,
}

fn default_hook() -> Hook {
    Hook::Pod
}

/// A case's request: the body of `POST /v1/sessions`.
pub type Request = crate::model::CreateSession;

/// Exactly one of the three.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// YAML file with the expected object (relative to the suite file).
    pub golden: Option<PathBuf>,
    /// Regex the denial message must match.
    pub deny: Option<String>,
    /// Regex a load-time settings error must match.
    pub settings_error: Option<String>,
}

#[derive(Debug)]
pub enum Expect {
    Golden(PathBuf),
    Deny(String),
    SettingsError(String),
}

impl ExpectSpec {
    fn resolve(&self) -> Result<Expect, String> {
        match (&self.golden, &self.deny, &self.settings_error) {
            (Some(g), None, None) => Ok(Expect::Golden(g.clone())),
            (None, Some(d), None) => Ok(Expect::Deny(d.clone())),
            (None, None, Some(s)) => Ok(Expect::SettingsError(s.clone())),
            _ => Err("expect must give exactly one of golden, deny and settings_error".into()),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assertions {
    /// The result passes Pod Security Standards restricted.
    #[serde(default)]
    pub restricted: bool,
    /// The result passes Pod Security Standards baseline.
    #[serde(default)]
    pub baseline: bool,
    /// Running the chain again on its own output changes nothing.
    #[serde(default)]
    pub idempotent: bool,
    /// JSON Pointer prefixes; every change must fall under one of them.
    #[serde(default)]
    pub only_paths: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
pub struct CaseResult {
    pub suite: String,
    pub case: String,
    pub passed: bool,
    /// Why it failed, one line per problem.
    pub failures: Vec<String>,
    /// Expected vs actual, as a unified YAML diff, when a golden differs.
    pub diff: Option<String>,
    /// What each plugin changed.
    pub steps: Vec<crate::plugin::StepDiff>,
}

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{path}: {message}")]
    Suite { path: String, message: String },
    #[error("{0}")]
    Plugin(#[from] PluginError),
}

pub struct Options {
    pub update: bool,
    pub filter: Option<String>,
    pub cache_dir: Option<PathBuf>,
}

pub fn load_suite(path: &Path) -> Result<Suite, HarnessError> {
    let err = |message: String| HarnessError::Suite {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    // serde_yaml's error carries the line and column.
    serde_yaml::from_str(&text).map_err(|e| err(e.to_string()))
}

pub fn run_chain(
    engine: &PolicyEngine,
    hook: Hook,
    ctx: &SessionContext,
    object: &Value,
) -> Result<(Value, Vec<crate::plugin::StepDiff>), PolicyError> {
    let to_err = |e: serde_json::Error| {
        PolicyError::Plugin(PluginError::Engine(format!("input object: {e}")))
    };
    match hook {
        Hook::Pod => {
            let pod: k8s_openapi::api::core::v1::Pod =
                serde_json::from_value(object.clone()).map_err(to_err)?;
            let s = engine.shape(ctx, pod)?;
            Ok((serde_json::to_value(&s.object).map_err(to_err)?, s.diffs()))
        }
        Hook::Pvc => {
            let pvc: k8s_openapi::api::core::v1::PersistentVolumeClaim =
                serde_json::from_value(object.clone()).map_err(to_err)?;
            let s = engine.shape(ctx, pvc)?;
            Ok((serde_json::to_value(&s.object).map_err(to_err)?, s.diffs()))
        }
    }
}

/// Runs every case of the suite at `path`.
pub fn run_suite(path: &Path, opts: &Options) -> Result<Vec<CaseResult>, HarnessError> {
    let suite = load_suite(path)?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let config = Config {
        namespace: suite.namespace.clone().unwrap_or_else(|| "bay".into()),
        ..Config::default()
    };
    let max_mem = suite
        .plugins
        .iter()
        .map(|p| (p.memory_mb as usize) << 20)
        .max()
        .unwrap_or(64 << 20)
        .max(64 << 20);
    let mut results = Vec::new();
    for case in &suite.cases {
        if opts
            .filter
            .as_deref()
            .is_some_and(|f| !case.name.contains(f))
        {
            continue;
        }
        let mut r = CaseResult {
            suite: path.display().to_string(),
            case: case.name.clone(),
            passed: false,
            failures: vec![],
            diff: None,
            steps: vec![],
        };
        let expect = match case.expect.resolve() {
            Ok(e) => e,
            Err(e) => {
                r.failures.push(e);
                results.push(r);
                continue;
            }
        };
        let mut plugins = suite.plugins.clone();
        for p in &mut plugins {
            if let Some(s) = case.settings.get(&p.name) {
                p.settings = s.clone();
            }
        }
        let runtime = Runtime::new(RuntimeOptions {
            cache_dir: opts.cache_dir.clone(),
            max_instances: 8,
            max_memory_bytes: max_mem,
            ..RuntimeOptions::default()
        })?;
        let engine = match PolicyEngine::new(runtime, &plugins, &base) {
            Ok(e) => e.with_guards(config.guards()),
            Err(e) => {
                match &expect {
                    Expect::SettingsError(re) if matches!(e, PluginError::Settings { .. }) => {
                        match regex::Regex::new(re) {
                            Ok(re) if re.is_match(&e.to_string()) => r.passed = true,
                            Ok(_) => r.failures.push(format!(
                                "settings error {:?} does not match /{re}/",
                                e.to_string()
                            )),
                            Err(x) => r.failures.push(format!("bad regex: {x}")),
                        }
                    }
                    _ => r.failures.push(format!("load failed: {e}")),
                }
                results.push(r);
                continue;
            }
        };
        let built = match (&case.request, &case.input) {
            (Some(req), None) => build(&config, case.hook, req),
            (None, Some(obj)) => {
                let ctx = objects::cargo_context(&config, "input", &BTreeMap::new(), 1024);
                Ok((obj.clone(), ctx))
            }
            _ => Err("give exactly one of request and input".to_string()),
        };
        let (input, ctx) = match built {
            Ok(b) => b,
            Err(e) => {
                r.failures.push(e);
                results.push(r);
                continue;
            }
        };
        match (run_chain(&engine, case.hook, &ctx, &input), &expect) {
            (Err(PolicyError::Denied { plugin, message }), Expect::Deny(re)) => {
                match regex::Regex::new(re) {
                    Ok(rx) if rx.is_match(&message) => {}
                    Ok(_) => r.failures.push(format!(
                        "denied by {plugin} with {message:?}, which does not match /{re}/"
                    )),
                    Err(x) => r.failures.push(format!("bad regex: {x}")),
                }
            }
            (Err(e), _) => r.failures.push(format!("chain failed: {e}")),
            (Ok(_), Expect::Deny(re)) => r.failures.push(format!(
                "expected a denial matching /{re}/, but the chain accepted"
            )),
            (Ok(_), Expect::SettingsError(re)) => r.failures.push(format!(
                "expected a settings error matching /{re}/, but the plugins loaded"
            )),
            (Ok((out, steps)), Expect::Golden(golden)) => {
                let gpath = base.join(golden);
                let actual = serde_yaml::to_string(&out).unwrap_or_default();
                if opts.update {
                    if let Err(e) = std::fs::write(&gpath, &actual) {
                        r.failures
                            .push(format!("cannot write {}: {e}", gpath.display()));
                    }
                } else {
                    match std::fs::read_to_string(&gpath)
                        .map_err(|e| e.to_string())
                        .and_then(|t| {
                            serde_yaml::from_str::<Value>(&t)
                                .map(|v| (t, v))
                                .map_err(|e| e.to_string())
                        }) {
                        Ok((text, expected)) if expected != out => {
                            r.failures
                                .push(format!("output differs from {}", gpath.display()));
                            r.diff = Some(
                                similar::TextDiff::from_lines(&text, &actual)
                                    .unified_diff()
                                    .header("expected", "actual")
                                    .to_string(),
                            );
                        }
                        Ok(_) => {}
                        Err(e) => r.failures.push(format!(
                            "golden {}: {e} (run with --update to create it)",
                            gpath.display()
                        )),
                    }
                }
                if (case.assert.restricted || case.assert.baseline)
                    && case.hook == Hook::Pod
                    && let Ok(pod) =
                        serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(out.clone())
                {
                    let (level, violations) = if case.assert.restricted {
                        ("restricted", pss::check_restricted(&pod))
                    } else {
                        ("baseline", pss::check_baseline(&pod))
                    };
                    for v in violations {
                        r.failures
                            .push(format!("PSS {level}, rule {:?}: {}", v.rule, v.detail));
                    }
                }
                if case.assert.idempotent {
                    match run_chain(&engine, case.hook, &ctx, &out) {
                        Ok((again, _)) if again != out => {
                            let d = json_patch::diff(&out, &again);
                            r.failures.push(format!(
                                "not idempotent: a second run changes {}",
                                serde_json::to_string(&d).unwrap_or_default()
                            ));
                        }
                        Ok(_) => {}
                        Err(e) => r
                            .failures
                            .push(format!("not idempotent: the second run failed: {e}")),
                    }
                }
                if let Some(allowed) = &case.assert.only_paths {
                    for op in json_patch::diff(&input, &out).0 {
                        let p = op.path().to_string();
                        if !allowed
                            .iter()
                            .any(|a| p == *a || p.starts_with(&format!("{a}/")))
                        {
                            r.failures.push(format!("changed {p}, outside only_paths"));
                        }
                    }
                }
                r.steps = steps;
            }
        }
        r.passed = r.failures.is_empty();
        results.push(r);
    }
    Ok(results)
}

pub fn build(
    config: &Config,
    hook: Hook,
    req: &Request,
) -> Result<(Value, SessionContext), String> {
    match hook {
        Hook::Pod => {
            let sr = req.as_request();
            let plan = objects::plan(config, &sr).map_err(|e| format!("request: {e}"))?;
            let pod = objects::session_pod(config, &sr, &plan);
            Ok((
                serde_json::to_value(pod).map_err(|e| e.to_string())?,
                plan.context,
            ))
        }
        Hook::Pvc => {
            let pvc = objects::cargo_pvc(
                config,
                &req.cargo.driver_ref,
                &req.labels,
                Some(req.cargo.size_limit_mb),
            );
            let ctx = objects::cargo_context(
                config,
                &req.cargo.driver_ref,
                &req.labels,
                req.cargo.size_limit_mb,
            );
            Ok((serde_json::to_value(pvc).map_err(|e| e.to_string())?, ctx))
        }
    }
}
