//! `berth plugin new NAME --lang rust|python`: a plugin project that builds
//! and passes its suite as generated (`berth plugin test` in it does both).

use std::path::Path;

const LIB: &str = r#"//! The __PLUGIN__ policy plugin.

use berth_plugin_sdk::{Context, Hooks, Pod, Policy, Rejection, deny, export_policy};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Label added to every session Pod.
    pub team: String,
    /// Profiles this policy refuses.
    pub forbidden_profiles: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { team: "platform".into(), forbidden_profiles: vec![] }
    }
}

pub struct Plugin;

impl Policy for Plugin {
    type Settings = Settings;
    const NAME: &'static str = "__PLUGIN__";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: Hooks = Hooks::POD;

    fn validate(s: &Settings) -> Result<(), String> {
        if s.team.is_empty() {
            return Err("team must not be empty".into());
        }
        Ok(())
    }

    fn shape_pod(s: &Settings, ctx: &Context, pod: &mut Pod) -> Result<(), Rejection> {
        if s.forbidden_profiles.contains(&ctx.profile_id) {
            return Err(deny(format!("profile {} is not allowed here", ctx.profile_id)));
        }
        pod.metadata.labels.get_or_insert_default().insert("example.com/team".into(), s.team.clone());
        Ok(())
    }
}

export_policy!(Plugin);
"#;

const SUITE: &str = r#"# Run: berth plugin test   (builds the plugin when a source changed, then runs every suite in tests/)
plugins:
  - name: __PLUGIN__
    path: ../target/wasm32-wasip2/release/__CRATE__.wasm
    settings: { team: sandbox, forbidden_profiles: [forbidden] }
cases:
  - name: forbidden-profile-is-denied
    request:
      session: { id: s1, sandbox_id: sb1 }
      profile: { id: forbidden, image: "ship:1.0" }
      cargo: { id: c1, driver_ref: cargo-c1 }
    expect: { deny: "profile forbidden is not allowed" }
  - name: empty-team-is-refused
    settings: { __PLUGIN__: { team: "" } }
    request:
      session: { id: s1, sandbox_id: sb1 }
      profile: { id: python, image: "ship:1.0" }
      cargo: { id: c1, driver_ref: cargo-c1 }
    expect: { settings_error: "team must not be empty" }
"#;

const PY_MODULE: &str = r##""""The __PLUGIN__ policy plugin: labels every session Pod with its team and
refuses the profiles it is told to."""

import berth_plugin as berth


class Plugin(berth.Plugin):
    name = "__PLUGIN__"
    version = "0.1.0"
    hooks = {"pod"}

    def validate_settings(self, settings):
        settings = settings or {}
        if not settings.get("team", "platform"):
            raise ValueError("team must not be empty")

    def shape_pod(self, settings, ctx, pod):
        settings = settings or {}
        if ctx.profile_id in settings.get("forbidden_profiles", []):
            raise berth.Deny(f"profile {ctx.profile_id} is not allowed here")
        berth.labels(pod)["example.com/team"] = settings.get("team", "platform")


Policy = berth.export(Plugin)
"##;

/// Which language a scaffold is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
}

/// Writes the project into `dir/NAME`; `sdk` is where the Rust SDK
/// (`plugins/sdk`) or the Python SDK (`plugins/sdk-python`) is.
pub fn new_plugin(
    dir: &Path,
    name: &str,
    lang: Lang,
    sdk: &Path,
) -> Result<std::path::PathBuf, String> {
    crate::labels::validate_dns_label(name).map_err(|e| format!("plugin name: {e}"))?;
    let root = dir.join(name);
    if root.exists() {
        return Err(format!("{} already exists", root.display()));
    }
    let files = match lang {
        Lang::Rust => rust_files(name, sdk),
        Lang::Python => python_files(name, sdk),
    };
    for (rel, text) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("has parent")).map_err(|e| e.to_string())?;
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(root)
}

fn python_files(name: &str, sdk: &Path) -> Vec<(String, String)> {
    let module = name.replace('-', "_");
    let suite = SUITE.replace("__PLUGIN__", name).replace(
        "../target/wasm32-wasip2/release/__CRATE__.wasm",
        &format!("../build/{module}.wasm"),
    );
    vec![
        (
            "pyproject.toml".into(),
            format!(
                "[project]\nname = \"{name}\"\nversion = \"0.1.0\"\nrequires-python = \">=3.11\"\n\
                 dependencies = [\"berth-plugin-sdk\"]\n\n[tool.berth]\nmodule = \"{module}\"\nout = \"build/{module}.wasm\"\n"
            ),
        ),
        (
            format!("{module}.py"),
            PY_MODULE.replace("__PLUGIN__", name),
        ),
        ("tests/suite.yaml".into(), suite),
        (".gitignore".into(), "build/\n__pycache__/\n".into()),
        (
            "README.md".into(),
            format!(
                "# {name}\n\nA Berth policy plugin in Python.\n\n```\nberth plugin test\n```\n\n\
                 builds `build/{module}.wasm` (with `berth-plugin-build`, when a source is newer) and runs every suite in `tests/`.\n\n\
                 The build needs the Python SDK, `berth-plugin-sdk`, which brings componentize-py. It is not on PyPI: install it from a \
                 Berth checkout, in the environment `berth plugin test` runs in (the one whose `berth-plugin-build` is on `PATH`):\n\n\
                 ```\npip install {sdk}\n```\n\nThat path is where the SDK was when this project was generated; on another machine, \
                 use `plugins/sdk-python` of your Berth checkout instead.\n",
                sdk = sdk.display()
            ),
        ),
    ]
}

fn rust_files(name: &str, sdk: &Path) -> Vec<(String, String)> {
    let krate = name.replace('-', "_");
    let files: [(&str, String); 5] = [
        (
            "Cargo.toml",
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\", \"rlib\"]\n\n\
                 [dependencies]\nberth-plugin-sdk = {{ path = {sdk:?} }}\nserde = {{ version = \"1\", features = [\"derive\"] }}\n\n\
                 # A plugin is its own workspace.\n[workspace]\n",
                sdk = sdk.display().to_string()
            ),
        ),
        ("src/lib.rs", LIB.replace("__PLUGIN__", name)),
        ("tests/suite.yaml", SUITE.replace("__PLUGIN__", name).replace("__CRATE__", &krate)),
        (
            ".cargo/config.toml",
            "# Each call gets a fresh instance: a small stack and enough initial memory\n# that a call never grows it keep instances cheap.\n[target.wasm32-wasip2]\nrustflags = [\"-C\", \"link-arg=-zstack-size=131072\", \"-C\", \"link-arg=--initial-memory=524288\"]\n".into(),
        ),
        (
            "README.md",
            format!(
                "# {name}\n\nA Berth policy plugin.\n\n```\nberth plugin test\n```\n\n\
                 builds the component (`cargo build --target wasm32-wasip2 --release`, which rebuilds only what changed) and runs every \
                 suite in `tests/`. The component is `target/wasm32-wasip2/release/{krate}.wasm`. Add cases to `tests/suite.yaml`; the \
                 suite format is in Berth's README.\n\n\
                 `Cargo.toml` finds the SDK, `berth-plugin-sdk`, at `{sdk}`: where it was when this crate was generated. The SDK is not \
                 on crates.io; on another machine, point that `path` at `plugins/sdk` of your Berth checkout (or use \
                 `git = \"<your Berth repository>\"`).\n",
                sdk = sdk.display()
            ),
        ),
    ];
    files
        .into_iter()
        .map(|(rel, text)| (rel.to_string(), text))
        .collect()
}
