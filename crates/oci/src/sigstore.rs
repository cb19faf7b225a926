//! Sigstore signatures attached to an image in its registry, checked against public keys
//! the user trusts (`--verify-key`): the layout cosign and `skopeo copy
//! --sign-by-sigstore-private-key` write, and the identity rule of skopeo's default
//! `sigstoreSigned` policy (`matchRepoDigestOrExact`).
//!
//! Layout: the signatures of manifest `sha256:HEX` are an OCI manifest tagged
//! `sha256-HEX.sig` in the same repository. Each layer of media type
//! [`SIMPLESIGNING`] is one signature: the layer blob is the payload (JSON naming the
//! signed manifest digest and the image's docker reference), the annotation
//! [`SIGNATURE_ANNOTATION`] the base64 signature over the payload's bytes. A signature
//! counts when it verifies with one of the keys, its payload's type is cosign's, its
//! `docker-manifest-digest` is the digest pulled, and its `docker-reference` names the
//! image as pulled: the same repository and tag for a tag reference, the same repository
//! for a digest reference.
//!
//! Keys: PEM `PUBLIC KEY` (SubjectPublicKeyInfo): ECDSA P-256 (what cosign and skopeo
//! generate; SHA-256, ASN.1 DER signatures), Ed25519, and RSA (PKCS#1 v1.5 with SHA-256,
//! 2048 to 8192 bits), as sigstore's verifiers take them. The arithmetic is ring's.

use crate::digest::Digest;
use crate::source::{Reference, RegistryRef};
use crate::spec::{Descriptor, Manifest, parse_json};
use diskcast_block::{Error, Result};
use diskcast_layout::der::{BIT_STRING, OID, SEQUENCE, expect};
use std::path::{Path, PathBuf};

/// The media type of a signature layer.
pub const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The payload's `critical.type`.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";

/// Largest payload blob read (containers/image caps sigstore payloads at 4 MiB too; a
/// real one is ~300 bytes).
pub const MAX_PAYLOAD_BYTES: u64 = 4 << 20;
/// Most signature layers one signature manifest may hold: each costs a blob download
/// and a verification per key; cosign adds one per `sign`, so real images have a few.
pub const MAX_SIGNATURES: usize = 64;
/// Largest public key file read (an 8192-bit RSA key in PEM is ~1.5 KiB).
pub const MAX_KEY_FILE_BYTES: u64 = 64 << 10;

/// What a key verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA over P-256 with SHA-256, DER signatures.
    EcdsaP256,
    /// Ed25519 over the payload itself.
    Ed25519,
    /// RSA PKCS#1 v1.5 with SHA-256.
    Rsa,
}

impl KeyKind {
    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::EcdsaP256 => "ECDSA P-256",
            KeyKind::Ed25519 => "Ed25519",
            KeyKind::Rsa => "RSA",
        }
    }
}

/// A public key the user trusts.
#[derive(Debug, Clone)]
pub struct PublicKey {
    /// Where it came from (the `--verify-key` path), for reports and messages.
    pub label: String,
    /// Its algorithm.
    pub kind: KeyKind,
    /// The key as ring takes it: the EC point, the 32 Ed25519 bytes, or RSAPublicKey DER.
    raw: Vec<u8>,
}

/// 1.2.840.10045.2.1 id-ecPublicKey, 1.2.840.10045.3.1.7 prime256v1, 1.3.101.112
/// Ed25519, 1.2.840.113549.1.1.1 rsaEncryption: the encoded OID contents.
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

impl PublicKey {
    /// Reads a PEM `PUBLIC KEY` file.
    pub fn read(path: &Path) -> Result<PublicKey> {
        use std::io::Read;
        let f = std::fs::File::open(path).map_err(|e| Error::io("cannot open the public key", e).with_file(path))?;
        let mut bytes = Vec::new();
        f.take(MAX_KEY_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("cannot read the public key", e).with_file(path))?;
        if u64::try_from(bytes.len()).map_or(true, |n| n > MAX_KEY_FILE_BYTES) {
            return Err(Error::argument(format!(
                "a public key file is at most {MAX_KEY_FILE_BYTES} bytes (MAX_KEY_FILE_BYTES); this is no key"
            ))
            .with_file(path));
        }
        Self::from_pem(&bytes, &path.display().to_string()).map_err(|e| e.with_file(path))
    }

    /// Parses a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) block.
    pub fn from_pem(pem: &[u8], label: &str) -> Result<PublicKey> {
        use base64::Engine;
        let bad = |why: &str| {
            Error::argument(format!(
                "not a PEM public key ({why}); --verify-key takes the .pub file cosign or skopeo made \
                 (-----BEGIN PUBLIC KEY-----: ECDSA P-256, Ed25519 or RSA)"
            ))
        };
        let text = std::str::from_utf8(pem).map_err(|_| bad("not text"))?;
        let begin = "-----BEGIN PUBLIC KEY-----";
        let end = "-----END PUBLIC KEY-----";
        let start = text.find(begin).ok_or_else(|| bad("no BEGIN PUBLIC KEY line"))? + begin.len();
        let stop = text[start..].find(end).ok_or_else(|| bad("no END PUBLIC KEY line"))? + start;
        let b64: String = text[start..stop].chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let spki = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| bad("the body is not base64"))?;
        Self::from_spki(&spki, label).map_err(bad)
    }

    /// A SubjectPublicKeyInfo: `SEQUENCE { SEQUENCE { OID, params }, BIT STRING }`.
    fn from_spki(spki: &[u8], label: &str) -> std::result::Result<PublicKey, &'static str> {
        let (body, rest) = expect(spki, SEQUENCE, "not a SubjectPublicKeyInfo")?;
        if !rest.is_empty() {
            return Err("bytes after the key");
        }
        let (alg, rest) = expect(body, SEQUENCE, "no algorithm identifier")?;
        let (bits, tail) = expect(rest, BIT_STRING, "no key bit string")?;
        if !tail.is_empty() {
            return Err("bytes after the key bit string");
        }
        // The first byte of a BIT STRING counts unused bits: 0 for a key.
        let key = match bits.split_first() {
            Some((0, k)) => k,
            _ => return Err("a key bit string with unused bits"),
        };
        let (oid, params) = expect(alg, OID, "no algorithm OID")?;
        let kind = if oid == OID_EC {
            let (curve, _) = expect(params, OID, "an EC key without a named curve")?;
            if curve != OID_P256 {
                return Err("an EC key on a curve other than P-256");
            }
            if key.len() != 65 || key[0] != 4 {
                return Err("a P-256 key that is not an uncompressed point");
            }
            KeyKind::EcdsaP256
        } else if oid == OID_ED25519 {
            if key.len() != 32 {
                return Err("an Ed25519 key that is not 32 bytes");
            }
            KeyKind::Ed25519
        } else if oid == OID_RSA {
            KeyKind::Rsa
        } else {
            return Err("an algorithm other than ECDSA P-256, Ed25519 or RSA");
        };
        Ok(PublicKey { label: label.to_string(), kind, raw: key.to_vec() })
    }

    /// Whether `signature` is this key's over `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature as sig;
        let alg: &dyn sig::VerificationAlgorithm = match self.kind {
            KeyKind::EcdsaP256 => &sig::ECDSA_P256_SHA256_ASN1,
            KeyKind::Ed25519 => &sig::ED25519,
            KeyKind::Rsa => &sig::RSA_PKCS1_2048_8192_SHA256,
        };
        sig::UnparsedPublicKey::new(alg, &self.raw).verify(message, signature).is_ok()
    }
}

/// What was found about one signature, as `inspect` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignatureCheck {
    /// The key it verified with (`--verify-key` path); `None` when none did.
    pub key: Option<String>,
    /// The manifest digest its payload names.
    pub digest: Option<String>,
    /// The docker reference its payload names.
    pub identity: Option<String>,
    /// It verified, names the digest pulled and matches the identity rule.
    pub verified: bool,
    /// Why it does not count (when `verified` is false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How signatures are fetched: the signature manifest by tag (`None`: no such tag) and
/// a blob, at most `cap` bytes, checked against its descriptor.
pub trait Fetch {
    /// The manifest tagged `tag`, or `None` when the repository has no such tag.
    fn tagged_manifest(&self, tag: &str) -> Result<Option<Vec<u8>>>;
    /// The blob `d` describes (size and digest checked), refused past `cap` bytes.
    fn small_blob(&self, d: &Descriptor, cap: u64) -> Result<Vec<u8>>;
}

/// The tag cosign and skopeo attach the signatures of `digest` under.
pub fn signature_tag(digest: &Digest) -> String {
    format!("{}-{}.sig", digest.algorithm_name(), digest.hex())
}

/// Checks the signatures of manifest `digest` of the image `image` (as pulled) against
/// `keys`: `Ok` with every signature's report when at least one counts, an
/// [`diskcast_block::ErrorKind::Untrusted`] error naming the image, the digest, the tag
/// looked at and why each signature does not count otherwise.
pub fn verify(
    fetch: &dyn Fetch,
    image: &RegistryRef,
    digest: &Digest,
    keys: &[PublicKey],
) -> Result<Vec<SignatureCheck>> {
    let tag = signature_tag(digest);
    let label = match &image.reference {
        Reference::Tag(t) => format!("docker://{}/{}:{t}", image.registry_name, image.repository),
        Reference::Digest(d) => format!("docker://{}/{}@{d}", image.registry_name, image.repository),
    };
    let refuse = |why: String| {
        Error::untrusted(format!(
            "{label} (manifest {digest}) is not trusted: {why} (signature tag {}/{}:{tag}; keys: {})",
            image.registry_name,
            image.repository,
            keys.iter().map(|k| k.label.as_str()).collect::<Vec<_>>().join(", ")
        ))
    };
    let Some(bytes) = fetch.tagged_manifest(&tag)? else {
        return Err(refuse("no signature: the registry has no signature tag".into()));
    };
    let manifest: Manifest =
        parse_json(&bytes, "signature manifest").map_err(|e| refuse(format!("signature manifest: {}", e.message())))?;
    let layers: Vec<&Descriptor> = manifest.layers.iter().filter(|l| l.media_type == SIMPLESIGNING).collect();
    if layers.is_empty() {
        return Err(refuse(format!("no signature: the signature manifest has no {SIMPLESIGNING} layer")));
    }
    if layers.len() > MAX_SIGNATURES {
        return Err(refuse(format!(
            "the signature manifest lists {} signatures, more than the {MAX_SIGNATURES} tried (MAX_SIGNATURES)",
            layers.len()
        )));
    }
    let mut checks = Vec::new();
    for layer in layers {
        checks.push(check_one(fetch, layer, image, digest, keys)?);
    }
    if checks.iter().any(|c| c.verified) {
        return Ok(checks);
    }
    let why: Vec<String> = checks
        .iter()
        .enumerate()
        .map(|(i, c)| format!("signature {}: {}", i + 1, c.reason.as_deref().unwrap_or("?")))
        .collect();
    Err(refuse(format!("no signature counts: {}", why.join("; "))))
}

/// Checks one signature layer. Errors only for transport failures; a bad signature is a
/// report with a reason.
fn check_one(
    fetch: &dyn Fetch,
    layer: &Descriptor,
    image: &RegistryRef,
    digest: &Digest,
    keys: &[PublicKey],
) -> Result<SignatureCheck> {
    use base64::Engine;
    let mut check = SignatureCheck { key: None, digest: None, identity: None, verified: false, reason: None };
    let fail = |mut c: SignatureCheck, why: String| {
        c.reason = Some(why);
        Ok(c)
    };
    let Some(b64) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
        return fail(check, format!("layer {} has no {SIGNATURE_ANNOTATION} annotation", layer.digest));
    };
    let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
        return fail(check, format!("the signature of layer {} is not base64", layer.digest));
    };
    if layer.size > MAX_PAYLOAD_BYTES {
        return fail(
            check,
            format!("payload {} is {} bytes, over MAX_PAYLOAD_BYTES ({MAX_PAYLOAD_BYTES})", layer.digest, layer.size),
        );
    }
    let payload = match fetch.small_blob(layer, MAX_PAYLOAD_BYTES) {
        Ok(p) => p,
        // A payload whose bytes do not match its descriptor was tampered with.
        Err(e) if e.kind() == diskcast_block::ErrorKind::Corrupt => {
            return fail(check, format!("payload {}: {}", layer.digest, e.message()));
        }
        Err(e) => return Err(e),
    };
    let Some(key) = keys.iter().find(|k| k.verifies(&payload, &signature)) else {
        return fail(check, "made by none of the keys given (or the payload was changed)".into());
    };
    check.key = Some(key.label.clone());
    let Ok(p) = serde_json::from_slice::<serde_json::Value>(&payload) else {
        return fail(check, "the signed payload is not JSON".into());
    };
    let critical = &p["critical"];
    check.digest = critical["image"]["docker-manifest-digest"].as_str().map(str::to_string);
    check.identity = critical["identity"]["docker-reference"].as_str().map(str::to_string);
    if critical["type"].as_str() != Some(PAYLOAD_TYPE) {
        return fail(check, format!("the payload's critical.type is not {PAYLOAD_TYPE:?}"));
    }
    if check.digest.as_deref() != Some(digest.as_str()) {
        let named = check.digest.clone().unwrap_or_else(|| "no digest".into());
        return fail(check, format!("it signs manifest {named}, not {digest}"));
    }
    let Some(identity) = check.identity.clone() else {
        return fail(check, "the payload names no docker-reference".into());
    };
    if let Err(why) = identity_matches(&identity, image) {
        return fail(check, why);
    }
    check.verified = true;
    Ok(check)
}

/// skopeo's default identity rule for `sigstoreSigned` (`matchRepoDigestOrExact`): the
/// signed docker reference must name the same registry and repository as the image
/// pulled and, when it was pulled by tag, the same tag. Names are compared normalized
/// as Docker does (`busybox` is `docker.io/library/busybox:latest`).
pub fn identity_matches(identity: &str, image: &RegistryRef) -> std::result::Result<(), String> {
    let signed = RegistryRef::parse(identity).map_err(|e| format!("its docker-reference {identity:?}: {e}"))?;
    let host = |r: &RegistryRef| {
        if r.registry_name == "index.docker.io" { "docker.io".to_string() } else { r.registry_name.clone() }
    };
    let pulled = format!("{}/{}", host(image), image.repository);
    if format!("{}/{}", host(&signed), signed.repository) != pulled {
        return Err(format!("it names {identity}, another repository than {pulled}"));
    }
    match &image.reference {
        Reference::Digest(_) => Ok(()),
        Reference::Tag(t) => match &signed.reference {
            Reference::Tag(s) if s == t => Ok(()),
            _ => Err(format!("it names {identity}, not {pulled}:{t} (a tag must match exactly)")),
        },
    }
}

/// Reads every `--verify-key` file.
pub fn read_keys(paths: &[PathBuf]) -> Result<Vec<PublicKey>> {
    paths.iter().map(|p| PublicKey::read(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_follow_match_repo_digest_or_exact() {
        let tag = RegistryRef::parse("127.0.0.1:5000/app:v1").unwrap();
        assert!(identity_matches("127.0.0.1:5000/app:v1", &tag).is_ok());
        assert!(identity_matches("127.0.0.1:5000/app:v2", &tag).unwrap_err().contains("tag must match"));
        assert!(identity_matches("127.0.0.1:5000/other:v1", &tag).unwrap_err().contains("another repository"));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let by_digest = RegistryRef::parse(&format!("127.0.0.1:5000/app@{d}")).unwrap();
        assert!(identity_matches("127.0.0.1:5000/app:v9", &by_digest).is_ok());
        let hub = RegistryRef::parse("busybox").unwrap();
        assert!(identity_matches("docker.io/library/busybox:latest", &hub).is_ok());
        assert!(identity_matches("index.docker.io/library/busybox", &hub).is_ok());
    }

    /// A registry in memory: one signature manifest and its payload blobs.
    struct Memory {
        manifest: Option<Vec<u8>>,
        blobs: std::collections::HashMap<String, Vec<u8>>,
    }

    impl Fetch for Memory {
        fn tagged_manifest(&self, _tag: &str) -> Result<Option<Vec<u8>>> {
            Ok(self.manifest.clone())
        }
        fn small_blob(&self, d: &Descriptor, _cap: u64) -> Result<Vec<u8>> {
            let b = self.blobs.get(d.digest.as_str()).cloned().unwrap_or_default();
            d.digest.verify(&b, "blob")?;
            Ok(b)
        }
    }

    const IMAGE: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// An Ed25519 key (ring-generated) as a PEM public key and a signer.
    fn ed25519() -> (PublicKey, ring::signature::Ed25519KeyPair) {
        use base64::Engine;
        use ring::signature::KeyPair;
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let mut spki = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
        spki.extend_from_slice(pair.public_key().as_ref());
        let b64 = base64::engine::general_purpose::STANDARD.encode(spki);
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n");
        (PublicKey::from_pem(pem.as_bytes(), "ed.pub").unwrap(), pair)
    }

    /// A signature manifest with one layer per (payload, signature, annotation?) given.
    fn registry(layers: &[(Vec<u8>, Option<String>)]) -> Memory {
        let mut blobs = std::collections::HashMap::new();
        let mut descs = Vec::new();
        for (payload, sig) in layers {
            let d = Digest::sha256(payload);
            blobs.insert(d.to_string(), payload.clone());
            let mut layer = serde_json::json!({"mediaType": SIMPLESIGNING, "digest": d, "size": payload.len()});
            if let Some(sig) = sig {
                layer["annotations"] = serde_json::json!({ SIGNATURE_ANNOTATION: sig });
            }
            descs.push(layer);
        }
        let config = serde_json::json!({"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": IMAGE, "size": 0});
        let m = serde_json::json!({"schemaVersion": 2, "config": config, "layers": descs});
        Memory { manifest: Some(m.to_string().into_bytes()), blobs }
    }

    fn payload(digest: &str, identity: &str) -> Vec<u8> {
        serde_json::json!({"critical": {"identity": {"docker-reference": identity},
            "image": {"docker-manifest-digest": digest}, "type": PAYLOAD_TYPE}, "optional": null})
        .to_string()
        .into_bytes()
    }

    fn signed(pair: &ring::signature::Ed25519KeyPair, p: Vec<u8>) -> (Vec<u8>, Option<String>) {
        use base64::Engine;
        let sig = base64::engine::general_purpose::STANDARD.encode(pair.sign(&p).as_ref());
        (p, Some(sig))
    }

    #[test]
    fn verify_counts_only_signatures_of_this_digest_and_identity() {
        let (key, pair) = ed25519();
        let image = RegistryRef::parse("127.0.0.1:5000/app:v1").unwrap();
        let digest = Digest::parse(IMAGE).unwrap();
        let good = signed(&pair, payload(IMAGE, "127.0.0.1:5000/app:v1"));
        let checks =
            verify(&registry(std::slice::from_ref(&good)), &image, &digest, std::slice::from_ref(&key)).unwrap();
        assert!(checks[0].verified && checks[0].key.as_deref() == Some("ed.pub"), "{checks:?}");
        let other = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        for (layers, why) in [
            (vec![signed(&pair, payload(other, "127.0.0.1:5000/app:v1"))], "it signs manifest"),
            (vec![signed(&pair, payload(IMAGE, "127.0.0.1:5000/app:v2"))], "a tag must match"),
            (vec![signed(&pair, payload(IMAGE, "127.0.0.1:5000/other:v1"))], "another repository"),
            (vec![signed(&pair, b"not json".to_vec())], "not JSON"),
            (vec![(good.0.clone(), None)], "has no dev.cosignproject.cosign/signature"),
            (vec![(good.0.clone(), Some("!!".into()))], "not base64"),
            (vec![(payload(IMAGE, "127.0.0.1:5000/app:v1x"), good.1.clone())], "made by none of the keys"),
            (vec![], "no signature"),
            (vec![good.clone(); MAX_SIGNATURES + 1], "MAX_SIGNATURES"),
        ] {
            let e = verify(&registry(&layers), &image, &digest, std::slice::from_ref(&key)).unwrap_err();
            assert_eq!(e.kind(), diskcast_block::ErrorKind::Untrusted, "{e}");
            assert!(e.to_string().contains(why) && e.to_string().contains(IMAGE), "{why}: {e}");
        }
        // No signature tag at all; a manifest that is not JSON; a payload whose bytes do
        // not match its descriptor.
        let none = Memory { manifest: None, blobs: Default::default() };
        let e = verify(&none, &image, &digest, std::slice::from_ref(&key)).unwrap_err();
        assert!(e.to_string().contains("no signature tag") && e.to_string().contains(".sig"), "{e}");
        let junk = Memory { manifest: Some(b"{".to_vec()), blobs: Default::default() };
        let e = verify(&junk, &image, &digest, std::slice::from_ref(&key)).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::Untrusted, "{e}");
        let mut swapped = registry(std::slice::from_ref(&good));
        for b in swapped.blobs.values_mut() {
            b.push(b' ');
        }
        let e = verify(&swapped, &image, &digest, &[key]).unwrap_err();
        assert!(e.to_string().contains("digest mismatch") || e.to_string().contains("payload"), "{e}");
    }

    #[test]
    fn keys_that_are_not_public_keys_are_refused_by_name() {
        for (pem, why) in [
            (&b"hello"[..], "no BEGIN PUBLIC KEY"),
            (b"-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----\n", "not base64"),
            (b"-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n", "truncated"),
            (
                b"-----BEGIN PUBLIC KEY-----\nMAswBQYDKgMEAwIAAA==\n-----END PUBLIC KEY-----\n",
                "an algorithm other than",
            ),
        ] {
            let e = PublicKey::from_pem(pem, "k.pub").unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        }
    }
}
