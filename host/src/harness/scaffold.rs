//! `berth plugin new NAME`: a plugin crate that builds and passes its suite
//! as generated.

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

const SUITE: &str = r#"# Run: berth plugin test tests/suite.yaml   (after cargo build --target wasm32-wasip2 --release)
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

/// Writes the crate into `dir/NAME`; `sdk` is the path of berth-plugin-sdk.
pub fn new_plugin(dir: &Path, name: &str, sdk: &Path) -> Result<std::path::PathBuf, String> {
    crate::labels::validate_dns_label(name).map_err(|e| format!("plugin name: {e}"))?;
    let root = dir.join(name);
    if root.exists() {
        return Err(format!("{} already exists", root.display()));
    }
    let krate = name.replace('-', "_");
    let files = [
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
                "# {name}\n\nA Berth policy plugin.\n\n```\ncargo build --target wasm32-wasip2 --release\nberth plugin test tests/suite.yaml\n```\n\n\
                 The component is `target/wasm32-wasip2/release/{krate}.wasm`. Add cases to `tests/suite.yaml`; the suite format is in Berth's README.\n"
            ),
        ),
    ];
    for (rel, text) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("has parent")).map_err(|e| e.to_string())?;
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(root)
}
