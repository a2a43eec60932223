//! Where a plugin's component comes from: a file, or an OCI registry
//! (through the digest cache), and what vouches for it (a sha256 pin, a
//! pinned manifest digest, cosign signatures by trusted keys).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::oci::{self, Credentials, DigestCache, FetchError, Registry, RegistryConfig};
use super::signature::{self, TrustedKey, Unverified};
use super::{LoadErrorKind, PluginConfig, PluginError};

/// The largest component file Berth reads, bytes. Python components are
/// about 18 MiB; this leaves room without letting a path such as
/// `/dev/zero` take the server's memory.
pub const MAX_COMPONENT_BYTES: u64 = 128 << 20;

/// Which signatures an OCI plugin needs (`plugin_signatures:` for every
/// OCI plugin, `signature:` on one plugin, which replaces it).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SignaturePolicy {
    /// PEM public keys (cosign's `cosign.pub`) trusted to sign plugins;
    /// relative paths are resolved against the config file.
    #[schema(value_type = Vec<String>)]
    pub keys: Vec<PathBuf>,
    /// Refuse an OCI plugin that no trusted key signed. Without it, an
    /// unsigned plugin loads, but one whose signatures all fail still fails
    /// (a signature that does not verify is a warning sign, not a detail).
    pub required: bool,
}

impl SignaturePolicy {
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if self.required && self.keys.is_empty() {
            return Err(format!(
                "{key}.required needs at least one key in {key}.keys"
            ));
        }
        Ok(())
    }
}

/// How a loaded plugin's component was had (in `/v1/plugins`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Origin {
    /// The configured `oci://` reference; absent for a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The manifest digest the reference resolved to (`sha256:…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The trusted key whose signature verified, as configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// `file`, `registry`, or `cache` (a pinned digest found on disk).
    pub fetched_from: String,
}

/// A component's bytes and how they were had.
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub origin: Origin,
}

/// Fetches the components of a plugin list: files from disk, OCI
/// references from the digest cache or the registry.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub registry: RegistryConfig,
    /// The default for every OCI plugin without its own `signature`.
    pub signatures: SignaturePolicy,
    /// Where pulled artifacts are kept (`None`: nowhere, pull every time).
    pub cache: Option<DigestCache>,
}

impl Sources {
    /// Fetches every entry's component, in order. OCI references are all
    /// resolved and verified before any plugin compiles, so a bad reference
    /// fails the load before it costs a compile.
    pub fn fetch_all(
        &self,
        configs: &[&PluginConfig],
        base_dir: &Path,
    ) -> Result<Vec<Fetched>, PluginError> {
        let needs_registry = configs.iter().any(|c| c.reference.is_some());
        // The registry client is async; a load may run on a runtime's
        // blocking thread, a plain thread or the CLI, so it gets a thread
        // and a runtime of its own that live as long as this load.
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| PluginError::Engine(format!("cannot start a runtime: {e}")))?;
                rt.block_on(async {
                    let registry = if needs_registry {
                        Some(self.client().map_err(PluginError::Config)?)
                    } else {
                        None
                    };
                    let mut out = Vec::with_capacity(configs.len());
                    for c in configs {
                        let fail = |kind| PluginError::Load {
                            plugin: c.name.clone(),
                            kind,
                        };
                        let fetched = match (&c.reference, &c.path, &registry) {
                            (Some(reference), _, Some(registry)) => {
                                let policy =
                                    self.policy_for(c, base_dir).map_err(PluginError::Config)?;
                                self.fetch_oci(registry, reference, &policy).await.map_err(
                                    |error| {
                                        fail(LoadErrorKind::Fetch {
                                            reference: reference.clone(),
                                            error,
                                        })
                                    },
                                )?
                            }
                            (_, Some(path), _) => {
                                let path = if path.is_absolute() {
                                    path.clone()
                                } else {
                                    base_dir.join(path)
                                };
                                Fetched {
                                    bytes: read_component(&path)
                                        .map_err(|m| fail(LoadErrorKind::Read(m)))?,
                                    origin: Origin {
                                        fetched_from: "file".into(),
                                        ..Origin::default()
                                    },
                                }
                            }
                            _ => {
                                return Err(PluginError::Config(format!(
                                    "plugins[{}] names neither a path nor a reference",
                                    c.name
                                )));
                            }
                        };
                        out.push(fetched);
                    }
                    Ok(out)
                })
            })
            .join()
            .unwrap_or_else(|_| Err(PluginError::Engine("the fetching thread panicked".into())))
        })
    }

    /// A registry client for this configuration.
    pub fn client(&self) -> Result<Registry, String> {
        let credentials = match &self.registry.auth_file {
            Some(f) => Credentials::from_file(f).map_err(|e| format!("registry.auth_file: {e}"))?,
            None => Credentials::default(),
        };
        Registry::new(&self.registry, credentials)
    }

    /// The entry's signature policy: its own keys if it names any, else
    /// the global ones; required if either requires it (an entry, which may
    /// come from a ConfigMap, cannot lift what the server requires).
    fn policy_for(&self, c: &PluginConfig, base_dir: &Path) -> Result<Trust, String> {
        let own = c.signature.as_ref();
        let key_files = match own {
            Some(p) if !p.keys.is_empty() => &p.keys,
            _ => &self.signatures.keys,
        };
        let required = self.signatures.required || own.is_some_and(|p| p.required);
        if required && key_files.is_empty() {
            return Err(format!(
                "plugins[{}]: a signature is required but no key is configured",
                c.name
            ));
        }
        let keys = key_files
            .iter()
            .map(|k| {
                let path = if k.is_absolute() {
                    k.clone()
                } else {
                    base_dir.join(k)
                };
                TrustedKey::from_file(&path)
                    .map_err(|e| format!("plugins[{}] signature key {e}", c.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Trust { keys, required })
    }

    /// Resolves, verifies and pulls one reference; a digest-pinned one that
    /// the cache holds (and whose cached signatures still verify) needs no
    /// registry.
    pub async fn fetch_oci(
        &self,
        registry: &Registry,
        reference: &str,
        trust: &Trust,
    ) -> Result<Fetched, FetchError> {
        // The client's timeouts bound each pause; this bounds the whole, so
        // a registry that drips bytes cannot hold a load for ever.
        let limit = Duration::from_secs(self.registry.fetch_timeout_s);
        tokio::time::timeout(limit, self.fetch_oci_unbounded(registry, reference, trust))
            .await
            .unwrap_or(Err(FetchError::TimedOut(self.registry.fetch_timeout_s)))
    }

    async fn fetch_oci_unbounded(
        &self,
        registry: &Registry,
        reference: &str,
        trust: &Trust,
    ) -> Result<Fetched, FetchError> {
        let r = oci::parse_reference(reference)?;
        if let (Some(digest), Some(cache)) = (r.digest(), &self.cache)
            && let Some(m) = cache.manifest(digest)
            && let Some(bytes) = cache.blob(&m.layer.digest)
        {
            // With keys configured, only an artifact whose signatures were
            // fetched with it has a verdict here: the same as a pull's.
            let cached = cache.signatures(digest);
            if (trust.keys.is_empty() || cached.is_some())
                && let Ok(signed_by) = trust.check(digest, &cached.unwrap_or_default(), "(cached)")
            {
                return Ok(Fetched {
                    bytes,
                    origin: Origin {
                        reference: Some(reference.to_string()),
                        digest: Some(m.digest),
                        signed_by,
                        fetched_from: "cache".into(),
                    },
                });
            }
        }
        let m = registry.manifest(&r).await?;
        let signatures = if trust.keys.is_empty() {
            None
        } else {
            Some(registry.signatures(&r, &m.digest).await?)
        };
        let tag = oci::show(&oci::signature_reference(&r, &m.digest));
        let signed_by = trust.check(&m.digest, signatures.as_deref().unwrap_or_default(), &tag)?;
        let cached = self.cache.as_ref().and_then(|c| c.blob(&m.layer.digest));
        let bytes = match cached {
            Some(b) => b,
            None => registry.component(&r, &m).await?,
        };
        if let Some(cache) = &self.cache
            && let Err(e) = cache.put(&m, &bytes, signatures.as_deref())
        {
            // A cache that cannot be written costs the next start a pull.
            tracing::warn!(reference, error = %e, "cannot cache the pulled plugin");
        }
        Ok(Fetched {
            bytes,
            origin: Origin {
                reference: Some(reference.to_string()),
                digest: Some(m.digest),
                signed_by,
                fetched_from: "registry".into(),
            },
        })
    }
}

/// One plugin's signature policy, keys read.
pub struct Trust {
    pub keys: Vec<TrustedKey>,
    pub required: bool,
}

impl Trust {
    /// The key that vouches for `digest`; `None` when nothing is asked of
    /// it (no keys, or unsigned and not required).
    fn check(
        &self,
        digest: &str,
        signatures: &[signature::Signed],
        tag: &str,
    ) -> Result<Option<String>, Unverified> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        match signature::verify(digest, signatures, &self.keys, tag) {
            Ok(key) => Ok(Some(key)),
            Err(Unverified::Unsigned(_)) if !self.required => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Reads a component file: a regular file, at most `MAX_COMPONENT_BYTES`.
pub fn read_component(path: &Path) -> Result<Vec<u8>, String> {
    read_limited(path, MAX_COMPONENT_BYTES)
}

/// The largest key, certificate or credentials file read, bytes.
pub const MAX_SMALL_FILE_BYTES: u64 = 1 << 20;

/// Reads a regular file of at most `limit` bytes: a FIFO or a device named
/// by mistake (or on purpose) fails at once instead of blocking a load or
/// filling memory.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let shown = path.display();
    let too_big = |size: u64| {
        format!(
            "{shown} is {} KiB, over the {} KiB such a file may be",
            size >> 10,
            limit >> 10
        )
    };
    // Looked at before it is opened: opening a FIFO waits for a writer.
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    if meta.len() > limit {
        return Err(too_big(meta.len()));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{shown}: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}
