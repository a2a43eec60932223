//! Cosign-compatible signatures of plugin artifacts, key-based and offline.
//!
//! cosign stores the signatures of `HOST/REPO@sha256:H` as an OCI manifest
//! tagged `sha256-H.sig` in the same repository. Each of its layers is a
//! "simple signing" payload (media type [`PAYLOAD_MEDIA_TYPE`]): a small JSON
//! document naming the signed manifest digest, with the base64 signature of
//! the layer's exact bytes in the annotation [`SIGNATURE_ANNOTATION`]. That is
//! the layout `cosign sign --key` writes and `cosign verify --key` reads, so
//! either tool can sign what the other verifies. There is no transparency
//! log here: a signature is trusted when one of the configured public keys
//! verifies it and its payload names the digest being loaded.
//!
//! The cryptography (key formats, including cosign's encrypted private keys,
//! and ECDSA / Ed25519 / RSA verification) is the `sigstore` crate's.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::crypto::{CosignVerificationKey, Signature, SigningScheme};

/// Media type of a cosign simple-signing payload layer.
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Annotation holding the base64 signature of a payload layer.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The `critical.type` of every cosign image signature.
const SIGNATURE_TYPE: &str = "cosign container image signature";

/// The tag cosign keeps the signatures of `digest` (`sha256:H`) under.
pub fn signature_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1) + ".sig"
}

/// One signature as stored in the registry: the payload bytes and the
/// base64 signature over them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Signed {
    /// The payload layer's bytes, base64 (standard alphabet).
    pub payload: String,
    /// The signature annotation, as found.
    pub signature: String,
}

/// A public key trusted to sign plugins, with the name it is reported by.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    /// The key file as configured, shown in `/v1/plugins` and errors.
    pub name: String,
    key: CosignVerificationKey,
}

impl TrustedKey {
    /// Reads a PEM public key (as `cosign generate-key-pair` writes
    /// `cosign.pub`; ECDSA P-256/P-384, Ed25519 or RSA).
    pub fn from_file(path: &Path) -> Result<TrustedKey, String> {
        let pem = super::source::read_limited(path, super::source::MAX_SMALL_FILE_BYTES)?;
        let key = CosignVerificationKey::try_from_pem(&pem)
            .map_err(|e| format!("{}: not a public key Berth can use: {e}", path.display()))?;
        Ok(TrustedKey {
            name: path.display().to_string(),
            key,
        })
    }
}

/// Why no signature vouches for an artifact.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum Unverified {
    #[error("it is not signed (no {0} signature manifest)")]
    Unsigned(String),
    /// Signatures exist; none verifies with a trusted key.
    #[error("none of its {count} signature(s) verifies with the trusted keys ({keys})")]
    WrongKey { count: usize, keys: String },
    /// A signature verifies, but its payload names another manifest.
    #[error("its signature is for another digest ({signed}), not {digest}")]
    OtherDigest { signed: String, digest: String },
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}
#[derive(Deserialize)]
struct Critical {
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}
#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

/// Which trusted key vouches for `digest` among `signatures`: the first
/// signature that a key verifies and whose payload names `digest`.
pub fn verify(
    digest: &str,
    signatures: &[Signed],
    keys: &[TrustedKey],
    tag: &str,
) -> Result<String, Unverified> {
    use base64::Engine as _;
    if signatures.is_empty() {
        return Err(Unverified::Unsigned(tag.to_string()));
    }
    let mut other_digest = None;
    for s in signatures {
        let Ok(payload) = base64::engine::general_purpose::STANDARD.decode(&s.payload) else {
            continue;
        };
        let Some(key) = keys.iter().find(|k| {
            k.key
                .verify_signature(Signature::Base64Encoded(s.signature.as_bytes()), &payload)
                .is_ok()
        }) else {
            continue;
        };
        // Only a verified payload is read: its claims mean nothing before.
        match serde_json::from_slice::<Payload>(&payload) {
            Ok(p) if p.critical.kind == SIGNATURE_TYPE && p.critical.image.digest == digest => {
                return Ok(key.name.clone());
            }
            Ok(p) => other_digest = Some(p.critical.image.digest),
            Err(_) => continue,
        }
    }
    Err(match other_digest {
        Some(signed) => Unverified::OtherDigest {
            signed,
            digest: digest.to_string(),
        },
        None => Unverified::WrongKey {
            count: signatures.len(),
            keys: keys
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        },
    })
}

/// The simple-signing payload for `digest` of `repository` (`HOST/REPO`),
/// as cosign writes it.
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": { "docker-reference": repository },
            "image": { "docker-manifest-digest": digest },
            "type": SIGNATURE_TYPE,
        },
        "optional": null,
    }))
    .unwrap_or_default()
}

/// A private key that signs: PKCS#8 PEM, or cosign's encrypted
/// `cosign.key` with its password.
pub struct SigningKey {
    signer: sigstore::crypto::SigStoreSigner,
}

impl SigningKey {
    /// Reads `path`; an encrypted key (`ENCRYPTED SIGSTORE PRIVATE KEY` or
    /// `ENCRYPTED COSIGN PRIVATE KEY`) needs `password`.
    pub fn from_file(path: &Path, password: Option<&str>) -> Result<SigningKey, String> {
        let pem = super::source::read_limited(path, super::source::MAX_SMALL_FILE_BYTES)?;
        let encrypted = String::from_utf8_lossy(&pem).contains("ENCRYPTED");
        let pair = if encrypted {
            let password = password.ok_or_else(|| {
                format!(
                    "{} is encrypted: set COSIGN_PASSWORD to its password",
                    path.display()
                )
            })?;
            SigStoreKeyPair::from_encrypted_pem(&pem, password.as_bytes())
        } else {
            SigStoreKeyPair::from_pem(&pem)
        }
        .map_err(|e| format!("{}: not a private key Berth can use: {e}", path.display()))?;
        let scheme = match &pair {
            SigStoreKeyPair::ED25519(_) => SigningScheme::ED25519,
            SigStoreKeyPair::RSA(_) => SigningScheme::RSA_PKCS1_SHA256(0),
            SigStoreKeyPair::ECDSA(k) => match k {
                sigstore::crypto::signing_key::ecdsa::ECDSAKeys::P256(_) => {
                    SigningScheme::ECDSA_P256_SHA256_ASN1
                }
                sigstore::crypto::signing_key::ecdsa::ECDSAKeys::P384(_) => {
                    SigningScheme::ECDSA_P384_SHA384_ASN1
                }
                sigstore::crypto::signing_key::ecdsa::ECDSAKeys::P521(_) => {
                    SigningScheme::ECDSA_P521_SHA512_ASN1
                }
            },
        };
        let signer = pair
            .to_sigstore_signer(&scheme)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(SigningKey { signer })
    }

    /// The base64 signature of `payload`, as the annotation holds it.
    pub fn sign(&self, payload: &[u8]) -> Result<String, String> {
        use base64::Engine as _;
        let raw = self.signer.sign(payload).map_err(|e| e.to_string())?;
        Ok(base64::engine::general_purpose::STANDARD.encode(raw))
    }

    /// A cosign signature of `digest` in `repository` (`HOST/REPO`), as
    /// it is pushed beside the artifact.
    pub fn sign_digest(&self, repository: &str, digest: &str) -> Result<Signed, String> {
        use base64::Engine as _;
        let payload = payload(repository, digest);
        Ok(Signed {
            signature: self.sign(&payload)?,
            payload: base64::engine::general_purpose::STANDARD.encode(payload),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn keypair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let pair = SigStoreKeyPair::ECDSA(
            sigstore::crypto::signing_key::ecdsa::ECDSAKeys::new(
                sigstore::crypto::signing_key::ecdsa::EllipticCurve::P256,
            )
            .unwrap(),
        );
        let (private, public) = (
            dir.join(format!("{name}.key")),
            dir.join(format!("{name}.pub")),
        );
        std::fs::write(&private, pair.private_key_to_pem().unwrap().as_bytes()).unwrap();
        std::fs::write(&public, pair.public_key_to_pem().unwrap()).unwrap();
        (private, public)
    }

    fn signed(key: &SigningKey, digest: &str) -> Signed {
        key.sign_digest("127.0.0.1:5000/p", digest).unwrap()
    }

    #[test]
    fn a_trusted_key_vouches_only_for_the_digest_it_signed() {
        let dir = tempfile::tempdir().unwrap();
        let (a_key, a_pub) = keypair(dir.path(), "a");
        let (b_key, _) = keypair(dir.path(), "b");
        let a = SigningKey::from_file(&a_key, None).unwrap();
        let b = SigningKey::from_file(&b_key, None).unwrap();
        let trusted = [TrustedKey::from_file(&a_pub).unwrap()];
        let d = "sha256:".to_string() + &"1".repeat(64);
        let other = "sha256:".to_string() + &"2".repeat(64);

        assert_eq!(
            verify(&d, &[signed(&a, &d)], &trusted, "t").unwrap(),
            a_pub.display().to_string()
        );
        // A second, bad signature beside a good one does not matter.
        assert!(verify(&d, &[signed(&b, &d), signed(&a, &d)], &trusted, "t").is_ok());
        assert!(matches!(
            verify(&d, &[signed(&b, &d)], &trusted, "t"),
            Err(Unverified::WrongKey { count: 1, .. })
        ));
        assert!(matches!(
            verify(&d, &[signed(&a, &other)], &trusted, "t"),
            Err(Unverified::OtherDigest { .. })
        ));
        assert!(matches!(
            verify(&d, &[], &trusted, "t"),
            Err(Unverified::Unsigned(_))
        ));
        // A payload changed after signing no longer verifies.
        let mut tampered = signed(&a, &d);
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(&tampered.payload)
            .unwrap();
        bytes.push(b' ');
        tampered.payload = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert!(matches!(
            verify(&d, &[tampered], &trusted, "t"),
            Err(Unverified::WrongKey { .. })
        ));
    }

    #[test]
    fn an_encrypted_key_needs_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let pair = SigStoreKeyPair::ECDSA(
            sigstore::crypto::signing_key::ecdsa::ECDSAKeys::new(
                sigstore::crypto::signing_key::ecdsa::EllipticCurve::P256,
            )
            .unwrap(),
        );
        let path = dir.path().join("cosign.key");
        std::fs::write(
            &path,
            pair.private_key_to_encrypted_pem(b"hunter2")
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        let err = SigningKey::from_file(&path, None).err().unwrap();
        assert!(err.contains("COSIGN_PASSWORD"), "{err}");
        assert!(SigningKey::from_file(&path, Some("wrong")).is_err());
        assert!(SigningKey::from_file(&path, Some("hunter2")).is_ok());
    }
}
