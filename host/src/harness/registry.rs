//! `berth plugin push | pull | sign`: plugins to and from OCI registries,
//! for authors and CI. Each prints the digest-pinned reference to put in a
//! config.

use std::path::{Path, PathBuf};

use crate::plugin::oci::{self, Credentials, FetchError, Registry, RegistryConfig};
use crate::plugin::signature::{SigningKey, TrustedKey};
use crate::plugin::source::{Sources, Trust, read_component};

/// How the command line reaches a registry.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct RegistryArgs {
    /// Docker config file with the registry's credentials (default:
    /// $DOCKER_CONFIG/config.json or ~/.docker/config.json, if present).
    #[arg(long)]
    pub auth_file: Option<PathBuf>,
    /// Speak plain HTTP to this reference's registry (a registry on
    /// loopback).
    #[arg(long)]
    pub plain_http: bool,
    /// PEM CA certificates to trust for the registry.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

impl RegistryArgs {
    fn registry(&self, reference: &str) -> Result<Registry, String> {
        let r = oci::parse_reference(reference).map_err(|e| e.to_string())?;
        let config = RegistryConfig {
            plain_http: if self.plain_http {
                vec![r.registry().to_string()]
            } else {
                Vec::new()
            },
            ca_file: self.ca_file.clone(),
            ..RegistryConfig::default()
        };
        let credentials = match &self.auth_file {
            Some(f) => Credentials::from_file(f)?,
            None => Credentials::from_environment()?,
        };
        Registry::new(&config, credentials)
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> Result<T, String> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?
        .block_on(f))
}

fn pinned(reference: &str, digest: &str) -> Result<String, String> {
    let r = oci::parse_reference(reference).map_err(|e| e.to_string())?;
    Ok(format!(
        "{}{}/{}@{digest}",
        oci::SCHEME,
        r.registry(),
        r.repository()
    ))
}

/// Pushes the component `file` to `reference`; the pinned reference.
pub fn push(file: &Path, reference: &str, args: &RegistryArgs) -> Result<String, String> {
    let bytes = read_component(file)?;
    if !wasmparser::Parser::is_component(&bytes) {
        return Err(format!(
            "{} is not a WebAssembly component (a core module? build for wasm32-wasip2)",
            file.display()
        ));
    }
    let registry = args.registry(reference)?;
    let r = oci::parse_reference(reference).map_err(|e| e.to_string())?;
    if r.digest().is_some() {
        return Err("push to a tag (HOST/REPO:TAG), not a digest".into());
    }
    let digest = block_on(registry.push(&r, bytes))?.map_err(|e| e.to_string())?;
    pinned(reference, &digest)
}

/// What `pull` fetched.
pub struct Pulled {
    pub pinned: String,
    pub bytes: usize,
    pub signed_by: Option<String>,
}

/// Pulls `reference` into `out`, checking it is a component artifact and,
/// with `keys`, that one of them signed it.
pub fn pull(
    reference: &str,
    out: &Path,
    keys: &[PathBuf],
    args: &RegistryArgs,
) -> Result<Pulled, String> {
    let registry = args.registry(reference)?;
    let keys = keys
        .iter()
        .map(|k| TrustedKey::from_file(k))
        .collect::<Result<Vec<_>, _>>()?;
    let trust = Trust {
        required: !keys.is_empty(),
        keys,
    };
    let sources = Sources::default();
    let fetched = block_on(sources.fetch_oci(&registry, reference, &trust))?
        .map_err(|e| format!("{reference}: {e}"))?;
    std::fs::write(out, &fetched.bytes).map_err(|e| format!("{}: {e}", out.display()))?;
    let digest = fetched.origin.digest.unwrap_or_default();
    Ok(Pulled {
        pinned: pinned(reference, &digest)?,
        bytes: fetched.bytes.len(),
        signed_by: fetched.origin.signed_by,
    })
}

/// Reads a private key to sign with (cosign's encrypted keys take their
/// password from `COSIGN_PASSWORD`).
pub fn signing_key(key: &Path) -> Result<SigningKey, String> {
    let password = std::env::var("COSIGN_PASSWORD").ok();
    SigningKey::from_file(key, password.as_deref())
}

/// Signs the component artifact `reference` names with `key`, cosign's
/// way; the pinned reference signed.
pub fn sign(reference: &str, key: &SigningKey, args: &RegistryArgs) -> Result<String, String> {
    let registry = args.registry(reference)?;
    let r = oci::parse_reference(reference).map_err(|e| e.to_string())?;
    let signed = block_on(async {
        let m = registry.manifest(&r).await?;
        let signed = key
            .sign_digest(&format!("{}/{}", r.registry(), r.repository()), &m.digest)
            .map_err(FetchError::Local)?;
        registry.push_signature(&r, &m.digest, signed).await?;
        Ok::<_, FetchError>(m.digest)
    })?
    .map_err(|e| format!("{reference}: {e}"))?;
    pinned(reference, &signed)
}
