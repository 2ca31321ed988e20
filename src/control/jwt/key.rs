//! RS256 and ES256 public keys read from PEM; keys that would parse but could never verify a
//! token are refused here, at start-up.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};

/// RSA modulus sizes `ring` verifies with (`RSA_PKCS1_2048_8192_SHA256`); a key outside this
/// range would parse but refuse every token, so it is refused at start-up instead.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;
/// DER encoding of the OID of P-256 (prime256v1), the only curve ES256 allows.
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

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
            if !der.windows(P256_OID.len()).any(|w| w == P256_OID) {
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
    let rsa_key = if spki {
        // SubjectPublicKeyInfo ::= SEQUENCE { AlgorithmIdentifier, BIT STRING { RSAPublicKey } }
        let (spki, _) = der_read(der, 0x30)?;
        let (_algorithm, rest) = der_read(spki, 0x30)?;
        let (bits, _) = der_read(rest, 0x03)?;
        // The first byte of a BIT STRING counts unused bits; a key has none.
        match bits.split_first()? {
            (0, key) => key,
            _ => return None,
        }
    } else {
        der
    };
    // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
    let (fields, _) = der_read(rsa_key, 0x30)?;
    let (modulus, _) = der_read(fields, 0x02)?;
    // Leading zero bytes only keep a DER INTEGER positive.
    let first = modulus.iter().position(|&b| b != 0)?;
    let modulus = &modulus[first..];
    Some(modulus.len() * 8 - modulus[0].leading_zeros() as usize)
}

/// Reads one DER element with tag `tag`: its content and what follows it.
fn der_read(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}
