//! RS256 and ES256 public keys read from PEM; keys that would parse but could never verify a
//! token are refused here, at start-up.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use simple_asn1::{from_der, oid, ASN1Block};

/// RSA modulus sizes `ring` verifies with (`RSA_PKCS1_2048_8192_SHA256`); a key outside this
/// range would parse but refuse every token, so it is refused at start-up instead.
pub(super) const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;
/// Longest DER key read: an RSA-8192 SubjectPublicKeyInfo is 1,062 bytes. The bound also keeps
/// `simple_asn1`, which recurses once per nesting level, to at most 1,024 levels.
const KEY_DER_BYTES_MAX: usize = 2048;

/// Parses an RS256 or ES256 public key, refusing keys that would parse but never verify.
pub(super) fn public_key(algorithm: Algorithm, pem: &str) -> Result<DecodingKey, &'static str> {
    let (label, der) = pem_body(pem)?;
    match (algorithm, label) {
        (Algorithm::RS256, "PUBLIC KEY" | "RSA PUBLIC KEY") => {
            let key =
                DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| "not an RSA public key")?;
            let bits =
                rsa_modulus_bits(&der, label == "PUBLIC KEY").ok_or("not an RSA public key")?;
            if !RSA_BITS.contains(&bits) {
                return Err("the RSA key must have 2048 to 8192 bits");
            }
            Ok(key)
        }
        (Algorithm::ES256, "PUBLIC KEY") => {
            let key =
                DecodingKey::from_ec_pem(pem.as_bytes()).map_err(|_| "not an EC public key")?;
            // jsonwebtoken takes any EC curve here; ES256 is defined on P-256 only.
            if !ec_key_is_p256(&der) {
                return Err("ES256 needs a P-256 (prime256v1) key");
            }
            Ok(key)
        }
        (_, label) if label.contains("PRIVATE") => {
            Err("a private key: configure the public key only")
        }
        (Algorithm::RS256, _) => Err("expected a BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY block"),
        _ => Err("expected a BEGIN PUBLIC KEY block"),
    }
}

/// The label and DER content of the first PEM block in `pem`.
pub(super) fn pem_body(pem: &str) -> Result<(&str, Vec<u8>), &'static str> {
    const MISSING: &str = "no PEM block";
    let start = pem.find("-----BEGIN ").ok_or(MISSING)?;
    let rest = &pem[start + "-----BEGIN ".len()..];
    let label_end = rest.find("-----").ok_or(MISSING)?;
    let label = &rest[..label_end];
    let body = &rest[label_end + "-----".len()..];
    let end = body.find("-----END ").ok_or(MISSING)?;
    let base64: String = body[..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = STANDARD
        .decode(base64)
        .map_err(|_| "the PEM body is not base64")?;
    Ok((label, der))
}

/// Size in bits of the modulus of a DER RSA public key (SubjectPublicKeyInfo or PKCS#1).
pub(super) fn rsa_modulus_bits(der: &[u8], spki: bool) -> Option<usize> {
    let outer = parse_der(der)?;
    let [ASN1Block::Sequence(_, fields)] = outer.as_slice() else {
        return None;
    };
    let inner;
    let fields = if spki {
        // SubjectPublicKeyInfo ::= SEQUENCE { AlgorithmIdentifier, BIT STRING { RSAPublicKey } }
        let [ASN1Block::Sequence(..), ASN1Block::BitString(_, bits, key)] = fields.as_slice()
        else {
            return None;
        };
        // A key is whole bytes: a BIT STRING with unused bits holds something else.
        if *bits != key.len() * 8 {
            return None;
        }
        inner = parse_der(key)?;
        let [ASN1Block::Sequence(_, fields)] = inner.as_slice() else {
            return None;
        };
        fields
    } else {
        fields
    };
    // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
    let [ASN1Block::Integer(_, modulus), ASN1Block::Integer(..)] = fields.as_slice() else {
        return None;
    };
    // A negative modulus is no key (`to_biguint` is `None` for it).
    let bits = modulus.to_biguint()?.bits();
    if bits == 0 {
        return None;
    }
    usize::try_from(bits).ok()
}

/// True when `der` is a SubjectPublicKeyInfo of an EC key on P-256.
pub(super) fn ec_key_is_p256(der: &[u8]) -> bool {
    let Some(outer) = parse_der(der) else {
        return false;
    };
    // SubjectPublicKeyInfo ::= SEQUENCE { SEQUENCE { id-ecPublicKey, namedCurve }, BIT STRING }
    let [ASN1Block::Sequence(_, fields)] = outer.as_slice() else {
        return false;
    };
    let [ASN1Block::Sequence(_, algorithm), ASN1Block::BitString(..)] = fields.as_slice() else {
        return false;
    };
    matches!(
        algorithm.as_slice(),
        [ASN1Block::ObjectIdentifier(_, key_type), ASN1Block::ObjectIdentifier(_, curve)]
            if key_type == oid!(1, 2, 840, 10045, 2, 1) && curve == oid!(1, 2, 840, 10045, 3, 1, 7)
    )
}

/// The DER elements of `der`, or `None` when it is too long to be a key or not DER.
fn parse_der(der: &[u8]) -> Option<Vec<ASN1Block>> {
    if der.len() > KEY_DER_BYTES_MAX {
        return None;
    }
    from_der(der).ok()
}
