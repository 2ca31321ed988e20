use super::key::{ec_key_is_p256, pem_body, rsa_modulus_bits};
use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use jsonwebtoken::{encode, EncodingKey, Header};
use ringmq_router::topic::TopicError;
use serde_json::json;

// Test-only keys generated with the openssl CLI for these tests; never used anywhere else.
const RSA_PRIVATE: &str = include_str!("../testdata/rsa_test_private.pem");
const RSA_PUBLIC: &str = include_str!("../testdata/rsa_test_public.pem");
const RSA_OTHER_PUBLIC: &str = include_str!("../testdata/rsa_other_public.pem");
const RSA_PUBLIC_PKCS1: &str = include_str!("../testdata/rsa_test_public_pkcs1.pem");
const RSA_1024_PUBLIC: &str = include_str!("../testdata/rsa_1024_public.pem");
const EC_PRIVATE: &str = include_str!("../testdata/ec_test_private.pem");
const EC_PUBLIC: &str = include_str!("../testdata/ec_test_public.pem");
const EC_OTHER_PUBLIC: &str = include_str!("../testdata/ec_other_public.pem");
const EC_P384_PUBLIC: &str = include_str!("../testdata/ec_p384_public.pem");

const SECRET: &str = "an-hs256-test-secret-of-32-bytes!";
const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://idp.example";

fn hs_config(name: &str) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        org_id: "default".into(),
        require_jti: true,
        topics: Vec::new(),
        issuer: ISSUER.into(),
        audience: Some("ringmq".into()),
        algorithm: "HS256".into(),
        secret: Some(SECRET.into()),
        public_key_pem: None,
        jwks_url: None,
    }
}

fn pem_config(name: &str, algorithm: &str, pem: &str, issuer: &str) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        org_id: "default".into(),
        require_jti: true,
        topics: Vec::new(),
        issuer: issuer.into(),
        audience: None,
        algorithm: algorithm.into(),
        secret: None,
        public_key_pem: Some(pem.into()),
        jwks_url: None,
    }
}

fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": "ringmq",
        "sub": "device-7",
        "jti": "t-1",
        "exp": NOW + 600,
        "nbf": NOW - 10,
    })
}

fn hs_token(claims: &Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn hs_providers() -> Providers {
    Providers::new(&[hs_config("idp")]).unwrap()
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

fn verify_claims(claims: Value) -> Result<Verified, JwtError> {
    hs_providers().verify(&hs_token(&claims, SECRET), None, "default", NOW)
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

#[test]
fn hs256_valid_defaults_to_subject_tree() {
    let verified = verify_claims(claims()).unwrap();
    assert_eq!(
        verified,
        Verified {
            provider: "idp".into(),
            token_id: "jti:t-1".into(),
            subject: "device-7".into(),
            expires_at: NOW + 600,
            publish: vec!["device-7/#".into()],
            subscribe: vec!["device-7/#".into()],
        }
    );
    // Picked by name as well as by issuer.
    let token = hs_token(&claims(), SECRET);
    assert!(hs_providers()
        .verify(&token, Some("idp"), "default", NOW)
        .is_ok());
}

#[test]
fn hs256_expired() {
    assert_eq!(
        verify_claims(with(claims(), "exp", json!(NOW - 1))),
        Err(JwtError::Expired)
    );
    // exp must be strictly after now.
    assert_eq!(
        verify_claims(with(claims(), "exp", json!(NOW))),
        Err(JwtError::Expired)
    );
    assert_eq!(
        verify_claims(without(claims(), "exp")),
        Err(JwtError::MissingClaim("exp"))
    );
    assert!(matches!(
        verify_claims(with(claims(), "exp", json!("tomorrow"))),
        Err(JwtError::InvalidClaim { claim: "exp", .. })
    ));
}

#[test]
fn hs256_nbf_in_future() {
    assert_eq!(
        verify_claims(with(claims(), "nbf", json!(NOW + 1))),
        Err(JwtError::NotYetValid)
    );
    assert!(verify_claims(with(claims(), "nbf", json!(NOW))).is_ok());
    assert!(verify_claims(without(claims(), "nbf")).is_ok());
}

#[test]
fn hs256_wrong_secret() {
    let token = hs_token(&claims(), "another-hs256-secret-of-32-bytes!!");
    assert_eq!(
        hs_providers().verify(&token, None, "default", NOW),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn hs256_wrong_issuer() {
    let token = hs_token(
        &with(claims(), "iss", json!("https://evil.example")),
        SECRET,
    );
    // By issuer no provider is found; by name the issuer does not match.
    assert_eq!(
        hs_providers().verify(&token, None, "default", NOW),
        Err(JwtError::UnknownIssuer)
    );
    assert_eq!(
        hs_providers().verify(&token, Some("idp"), "default", NOW),
        Err(JwtError::WrongIssuer)
    );
    let token = hs_token(&without(claims(), "iss"), SECRET);
    assert_eq!(
        hs_providers().verify(&token, Some("idp"), "default", NOW),
        Err(JwtError::MissingClaim("iss"))
    );
}

#[test]
fn hs256_audience() {
    assert_eq!(
        verify_claims(with(claims(), "aud", json!("someone-else"))),
        Err(JwtError::WrongAudience)
    );
    assert_eq!(
        verify_claims(with(claims(), "aud", json!(["a", "b"]))),
        Err(JwtError::WrongAudience)
    );
    assert!(verify_claims(with(claims(), "aud", json!(["a", "ringmq"]))).is_ok());
    assert_eq!(
        verify_claims(without(claims(), "aud")),
        Err(JwtError::MissingClaim("aud"))
    );
    // Without a configured audience the claim is not looked at.
    let mut config = hs_config("idp");
    config.audience = None;
    let providers = Providers::new(&[config]).unwrap();
    let token = hs_token(&with(claims(), "aud", json!("someone-else")), SECRET);
    assert!(providers.verify(&token, None, "default", NOW).is_ok());
}

#[test]
fn hs256_subject() {
    assert_eq!(
        verify_claims(without(claims(), "sub")),
        Err(JwtError::MissingClaim("sub"))
    );
    assert!(matches!(
        verify_claims(with(claims(), "sub", json!(""))),
        Err(JwtError::InvalidClaim { claim: "sub", .. })
    ));
    assert!(matches!(
        verify_claims(with(claims(), "sub", json!("x".repeat(129)))),
        Err(JwtError::InvalidClaim { claim: "sub", .. })
    ));
    assert!(verify_claims(with(claims(), "sub", json!("x".repeat(128)))).is_ok());
    assert!(matches!(
        verify_claims(with(claims(), "sub", json!(7))),
        Err(JwtError::InvalidClaim { claim: "sub", .. })
    ));
}

#[test]
fn alg_none_is_refused() {
    let header = b64(&json!({"alg": "none", "typ": "JWT"}));
    let token = format!("{header}.{}.", b64(&claims()));
    assert_eq!(
        hs_providers().verify(&token, None, "default", NOW),
        Err(JwtError::Unsigned)
    );
    let header = b64(&json!({"alg": "None"}));
    let token = format!("{header}.{}.", b64(&claims()));
    assert_eq!(
        hs_providers().verify(&token, Some("idp"), "default", NOW),
        Err(JwtError::Unsigned)
    );
}

#[test]
fn tampered_payload() {
    let token = hs_token(&claims(), SECRET);
    let parts: Vec<&str> = token.split('.').collect();
    let forged = b64(&with(claims(), "sub", json!("admin")));
    let token = format!("{}.{forged}.{}", parts[0], parts[2]);
    assert_eq!(
        hs_providers().verify(&token, None, "default", NOW),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn malformed_tokens() {
    let providers = hs_providers();
    for token in ["", "abc", "a.b", "a.b.c.d", "!!!.e30.sig"] {
        assert!(
            matches!(
                providers.verify(token, None, "default", NOW),
                Err(JwtError::Malformed(_))
            ),
            "{token:?}"
        );
    }
    let token = "x".repeat(TOKEN_BYTES_MAX + 1);
    assert_eq!(
        providers.verify(&token, None, "default", NOW),
        Err(JwtError::Malformed("token is too long"))
    );
    // A `crit` header we cannot honour.
    let header = b64(&json!({"alg": "HS256", "crit": ["exp"]}));
    let token = format!("{header}.{}.c2ln", b64(&claims()));
    assert!(matches!(
        providers.verify(&token, None, "default", NOW),
        Err(JwtError::Malformed(_))
    ));
    // Errors never echo the token.
    let token = hs_token(&with(claims(), "sub", json!("secret-subject")), "wrong");
    let error = providers.verify(&token, None, "default", NOW).unwrap_err();
    assert!(!error.to_string().contains("secret-subject"));
}

#[test]
fn provider_selection() {
    let token = hs_token(&claims(), SECRET);
    assert_eq!(
        hs_providers().verify(&token, Some("nope"), "default", NOW),
        Err(JwtError::UnknownProvider)
    );
    assert_eq!(
        Providers::new(&[])
            .unwrap()
            .verify(&token, None, "default", NOW),
        Err(JwtError::NotConfigured)
    );
    // Two providers for one issuer: the one of the token's algorithm verifies it.
    let providers = Providers::new(&[
        pem_config("rsa", "RS256", RSA_PUBLIC, ISSUER),
        hs_config("hs"),
    ])
    .unwrap();
    assert!(providers.verify(&token, None, "default", NOW).is_ok());
}

#[test]
fn topic_claims() {
    let verified = verify_claims(
        claims()
            .with_topics("mqtt_publish", json!(["a/b", "c/*", "d/+/e"]))
            .with_topics("mqtt_subscribe", json!([])),
    )
    .unwrap();
    assert_eq!(verified.publish, ["a/b", "c/#", "d/+/e"]);
    assert!(verified.subscribe.is_empty());

    // A subject that is not a single topic level needs explicit claims.
    let odd = with(claims(), "sub", json!("user/1"));
    assert_eq!(
        verify_claims(odd.clone()),
        Err(JwtError::SubjectNotTopicLevel {
            claim: "mqtt_publish"
        })
    );
    assert_eq!(
        verify_claims(odd.clone().with_topics("mqtt_publish", json!(["x"]))),
        Err(JwtError::SubjectNotTopicLevel {
            claim: "mqtt_subscribe"
        })
    );
    let verified = verify_claims(
        odd.with_topics("mqtt_publish", json!(["x"]))
            .with_topics("mqtt_subscribe", json!(["y/#"])),
    )
    .unwrap();
    assert_eq!(verified.subject, "user/1");
    for sub in ["a+b", "#", "a\0b"] {
        assert!(matches!(
            verify_claims(with(claims(), "sub", json!(sub))),
            Err(JwtError::SubjectNotTopicLevel { .. })
        ));
    }

    assert!(matches!(
        verify_claims(claims().with_topics("mqtt_publish", json!(["a/#/b"]))),
        Err(JwtError::InvalidPattern {
            claim: "mqtt_publish",
            index: 0,
            error: TopicError::InvalidWildcard
        })
    ));
    assert!(matches!(
        verify_claims(claims().with_topics("mqtt_subscribe", json!(["ok", ""]))),
        Err(JwtError::InvalidPattern {
            claim: "mqtt_subscribe",
            index: 1,
            error: TopicError::Empty
        })
    ));
    assert!(matches!(
        verify_claims(claims().with_topics("mqtt_publish", json!(["a/".repeat(32)]))),
        Err(JwtError::InvalidPattern {
            error: TopicError::TooManyLevels { .. },
            ..
        })
    ));
    assert!(matches!(
        verify_claims(claims().with_topics("mqtt_publish", json!(["a".repeat(257)]))),
        Err(JwtError::PatternTooLong { index: 0, .. })
    ));
    assert!(verify_claims(claims().with_topics("mqtt_publish", json!(["a".repeat(256)]))).is_ok());
    let many: Vec<String> = (0..33).map(|i| format!("t/{i}")).collect();
    assert!(matches!(
        verify_claims(claims().with_topics("mqtt_publish", json!(many))),
        Err(JwtError::TooManyPatterns { .. })
    ));
    assert!(verify_claims(claims().with_topics("mqtt_publish", json!(many[..32]))).is_ok());
    assert!(matches!(
        verify_claims(claims().with_topics("mqtt_publish", json!("a/b"))),
        Err(JwtError::InvalidClaim { .. })
    ));
    assert!(matches!(
        verify_claims(claims().with_topics("mqtt_publish", json!(["a", 1]))),
        Err(JwtError::InvalidClaim { .. })
    ));
}

trait WithTopics {
    fn with_topics(self, claim: &str, value: Value) -> Value;
}

impl WithTopics for Value {
    fn with_topics(self, claim: &str, value: Value) -> Value {
        with(self, claim, value)
    }
}

#[test]
fn rs256_valid_and_wrong_key() {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    let token = encode(&Header::new(Algorithm::RS256), &claims(), &key).unwrap();
    let providers = Providers::new(&[pem_config("rsa", "RS256", RSA_PUBLIC, ISSUER)]).unwrap();
    let verified = providers.verify(&token, None, "default", NOW).unwrap();
    assert_eq!(verified.subject, "device-7");
    assert_eq!(verified.expires_at, NOW + 600);

    let other = Providers::new(&[pem_config("rsa", "RS256", RSA_OTHER_PUBLIC, ISSUER)]).unwrap();
    assert_eq!(
        other.verify(&token, None, "default", NOW),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn es256_valid_and_wrong_key() {
    let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
    let token = encode(&Header::new(Algorithm::ES256), &claims(), &key).unwrap();
    let providers = Providers::new(&[pem_config("ec", "ES256", EC_PUBLIC, ISSUER)]).unwrap();
    let verified = providers
        .verify(&token, Some("ec"), "default", NOW)
        .unwrap();
    assert_eq!(verified.publish, ["device-7/#"]);

    let other = Providers::new(&[pem_config("ec", "ES256", EC_OTHER_PUBLIC, ISSUER)]).unwrap();
    assert_eq!(
        other.verify(&token, None, "default", NOW),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn algorithm_confusion() {
    // The classic attack: HS256 signed with the provider's public key as the secret.
    let token = hs_token(&claims(), RSA_PUBLIC);
    let providers = Providers::new(&[pem_config("rsa", "RS256", RSA_PUBLIC, ISSUER)]).unwrap();
    assert_eq!(
        providers.verify(&token, Some("rsa"), "default", NOW),
        Err(JwtError::AlgorithmMismatch {
            provider: "rsa".into(),
            expected: "RS256"
        })
    );
    assert!(matches!(
        providers.verify(&token, None, "default", NOW),
        Err(JwtError::AlgorithmMismatch { .. })
    ));
    // An ES256 token against an RS256 provider.
    let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
    let token = encode(&Header::new(Algorithm::ES256), &claims(), &key).unwrap();
    assert!(matches!(
        providers.verify(&token, None, "default", NOW),
        Err(JwtError::AlgorithmMismatch { .. })
    ));
}

#[test]
fn config_errors_name_the_provider() {
    let check = |config: ProviderConfig, expected: JwtError| {
        let error = Providers::new(&[config]).unwrap_err();
        assert!(error.to_string().contains("\"bad\""), "{error}");
        assert_eq!(error, expected);
    };
    let provider = || "bad".to_string();

    let mut config = hs_config("bad");
    config.algorithm = "HS512".into();
    check(
        config,
        JwtError::UnknownAlgorithm {
            provider: provider(),
            algorithm: "HS512".into(),
        },
    );
    let mut config = hs_config("bad");
    config.secret = None;
    check(
        config,
        JwtError::MissingSecret {
            provider: provider(),
        },
    );
    let mut config = hs_config("bad");
    config.secret = Some("x".repeat(31));
    check(
        config,
        JwtError::SecretTooShort {
            provider: provider(),
            min: 32,
        },
    );
    let mut config = hs_config("bad");
    config.public_key_pem = Some(RSA_PUBLIC.into());
    check(
        config,
        JwtError::UnusedKey {
            provider: provider(),
            field: "public_key_pem",
            algorithm: "HS256",
        },
    );
    let mut config = pem_config("bad", "RS256", RSA_PUBLIC, ISSUER);
    config.public_key_pem = None;
    check(
        config,
        JwtError::MissingPublicKey {
            provider: provider(),
            algorithm: "RS256",
        },
    );
    let mut config = pem_config("bad", "ES256", EC_PUBLIC, ISSUER);
    config.secret = Some(SECRET.into());
    check(
        config,
        JwtError::UnusedKey {
            provider: provider(),
            field: "secret",
            algorithm: "ES256",
        },
    );
    let mut config = hs_config("bad");
    config.issuer = String::new();
    check(
        config,
        JwtError::EmptyField {
            provider: provider(),
            field: "issuer",
        },
    );

    let garbage = "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n";
    let unparsable = [
        ("RS256", "not a pem"),
        ("RS256", garbage),
        ("RS256", EC_PUBLIC),
        ("RS256", RSA_PRIVATE),
        ("RS256", RSA_1024_PUBLIC),
        ("ES256", garbage),
        ("ES256", RSA_PUBLIC),
        ("ES256", EC_PRIVATE),
        ("ES256", EC_P384_PUBLIC),
    ];
    for (algorithm, pem) in unparsable {
        let error = Providers::new(&[pem_config("bad", algorithm, pem, ISSUER)]).unwrap_err();
        assert!(
            matches!(&error, JwtError::InvalidPublicKey { provider, .. } if provider == "bad"),
            "{algorithm}: {error}"
        );
    }

    assert_eq!(
        Providers::new(&[hs_config("idp"), hs_config("idp")]).unwrap_err(),
        JwtError::DuplicateProvider {
            provider: "idp".into()
        }
    );
    assert!(Providers::new(&[
        hs_config("a"),
        pem_config("b", "RS256", RSA_PUBLIC, "other"),
        pem_config("c", "ES256", EC_PUBLIC, "other"),
    ])
    .is_ok());
}

#[test]
fn debug_hides_the_secret() {
    let debug = format!("{:?}", hs_providers());
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(debug.contains("idp"));
}

#[test]
fn rsa_key_size_and_pkcs1() {
    let (_, der) = pem_body(RSA_PUBLIC).unwrap();
    assert_eq!(rsa_modulus_bits(&der, true), Some(2048));
    assert_eq!(rsa_modulus_bits(&der[..10], true), None);
    let (_, der) = pem_body(RSA_PUBLIC_PKCS1).unwrap();
    assert_eq!(rsa_modulus_bits(&der, false), Some(2048));
    let (_, der) = pem_body(RSA_1024_PUBLIC).unwrap();
    assert_eq!(rsa_modulus_bits(&der, true), Some(1024));

    // A `BEGIN RSA PUBLIC KEY` block verifies like the SubjectPublicKeyInfo one.
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    let token = encode(&Header::new(Algorithm::RS256), &claims(), &key).unwrap();
    let providers =
        Providers::new(&[pem_config("rsa", "RS256", RSA_PUBLIC_PKCS1, ISSUER)]).unwrap();
    assert!(providers.verify(&token, None, "default", NOW).is_ok());
}

#[test]
fn hostile_der_keys_give_none() {
    let (_, spki) = pem_body(RSA_PUBLIC).unwrap();
    let (_, pkcs1) = pem_body(RSA_PUBLIC_PKCS1).unwrap();
    let (_, ec) = pem_body(EC_PUBLIC).unwrap();
    let (_, p384) = pem_body(EC_P384_PUBLIC).unwrap();
    assert!(ec_key_is_p256(&ec));
    assert!(!ec_key_is_p256(&p384));
    assert!(!ec_key_is_p256(&spki));
    // Every truncation, empty included.
    for end in 0..spki.len() {
        assert_eq!(rsa_modulus_bits(&spki[..end], true), None, "{end}");
    }
    for end in 0..pkcs1.len() {
        assert_eq!(rsa_modulus_bits(&pkcs1[..end], false), None, "{end}");
    }
    for end in 0..ec.len() {
        assert!(!ec_key_is_p256(&ec[..end]), "{end}");
    }
    // The wrong form: a PKCS#1 key read as SubjectPublicKeyInfo and the other way round.
    assert_eq!(rsa_modulus_bits(&pkcs1, true), None);
    assert_eq!(rsa_modulus_bits(&spki, false), None);
    assert_eq!(rsa_modulus_bits(&ec, true), None);
    // Wrong tags where the SEQUENCE, the BIT STRING and the INTEGER belong.
    let mut wrong = spki.clone();
    wrong[0] = 0x31;
    assert_eq!(rsa_modulus_bits(&wrong, true), None);
    let bit_string = spki.iter().position(|&b| b == 0x03).unwrap();
    let mut wrong = spki.clone();
    wrong[bit_string] = 0x04;
    assert_eq!(rsa_modulus_bits(&wrong, true), None);
    let mut wrong = pkcs1.clone();
    wrong[4] = 0x04;
    assert_eq!(rsa_modulus_bits(&wrong, false), None);
    // Lengths past the end or beyond any buffer.
    for der in [
        &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x02, 0x01, 0x01][..],
        &[0x30, 0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        &[0x30, 0x89, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        &[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x05, 0x01],
        &[0x30, 0x80],
        &[0x02],
    ] {
        assert_eq!(rsa_modulus_bits(der, false), None, "{der:02x?}");
        assert_eq!(rsa_modulus_bits(der, true), None, "{der:02x?}");
        assert!(!ec_key_is_p256(der));
    }
    // A negative or zero modulus is no key.
    assert_eq!(
        rsa_modulus_bits(&[0x30, 0x06, 0x02, 0x01, 0x80, 0x02, 0x01, 0x03], false),
        None
    );
    assert_eq!(
        rsa_modulus_bits(&[0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x03], false),
        None
    );
    assert_eq!(
        rsa_modulus_bits(&[0x30, 0x06, 0x02, 0x01, 0x7f, 0x02, 0x01, 0x03], false),
        Some(7)
    );
    // Nesting about as deep as the length bound allows (500 levels) does not overflow the stack
    // (simple_asn1 recurses once per level); a longer input is not read at all.
    let mut deep = vec![0x05, 0x00];
    while deep.len() + 4 <= 2048 {
        let len = deep.len();
        deep.splice(0..0, [0x30, 0x82, (len >> 8) as u8, len as u8]);
    }
    assert_eq!(rsa_modulus_bits(&deep, false), None);
    let mut long = pkcs1.clone();
    long.resize(4096, 0);
    assert_eq!(rsa_modulus_bits(&long, false), None);
    // Random bytes and random corruptions: never a panic.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..3_000 {
        let len = (next() % 300) as usize;
        let random: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = rsa_modulus_bits(&random, round % 2 == 0);
        let _ = ec_key_is_p256(&random);
        let mut flipped = spki.clone();
        let at = (next() as usize) % flipped.len();
        flipped[at] = next() as u8;
        let _ = rsa_modulus_bits(&flipped, true);
    }
}

#[test]
fn a_provider_vouches_for_its_own_org_only() {
    let token = hs_token(&claims(), SECRET);
    let wrong = Err(JwtError::WrongOrg {
        provider: "idp".into(),
    });
    assert_eq!(hs_providers().verify(&token, None, "org_b", NOW), wrong);
    assert_eq!(
        hs_providers().verify(&token, Some("idp"), "org_b", NOW),
        wrong
    );
    // Two providers of one issuer, each for its own org: each org gets only its own.
    let mut b = hs_config("idp-b");
    b.org_id = "org_b".into();
    let providers = Providers::new(&[hs_config("idp"), b]).unwrap();
    assert_eq!(
        providers
            .verify(&token, None, "org_b", NOW)
            .unwrap()
            .provider,
        "idp-b"
    );
    assert_eq!(
        providers
            .verify(&token, None, "default", NOW)
            .unwrap()
            .provider,
        "idp"
    );
    assert_eq!(
        providers.verify(&token, Some("idp"), "org_b", NOW),
        Err(JwtError::WrongOrg {
            provider: "idp".into()
        })
    );
    let mut empty = hs_config("x");
    empty.org_id = String::new();
    assert!(matches!(
        Providers::new(&[empty]),
        Err(JwtError::EmptyField {
            field: "org_id",
            ..
        })
    ));
}

#[test]
fn jti_is_required_unless_the_provider_says_otherwise() {
    assert_eq!(
        verify_claims(without(claims(), "jti")),
        Err(JwtError::MissingClaim("jti"))
    );
    assert!(matches!(
        verify_claims(with(claims(), "jti", json!(7))),
        Err(JwtError::InvalidClaim { claim: "jti", .. })
    ));
    assert!(matches!(
        verify_claims(with(claims(), "jti", json!(""))),
        Err(JwtError::InvalidClaim { claim: "jti", .. })
    ));
    let mut lax = hs_config("idp");
    lax.require_jti = false;
    let providers = Providers::new(&[lax]).unwrap();
    let token = hs_token(&without(claims(), "jti"), SECRET);
    let id = providers
        .verify(&token, None, "default", NOW)
        .unwrap()
        .token_id;
    assert!(id.starts_with("sha256:") && id.len() == 7 + 64, "{id}");
    // The id covers the signed part only: the same claims give the same id, other claims
    // another one.
    let again = providers
        .verify(&token, None, "default", NOW)
        .unwrap()
        .token_id;
    assert_eq!(id, again);
    let other = hs_token(&with(without(claims(), "jti"), "sub", json!("x")), SECRET);
    assert_ne!(
        providers
            .verify(&other, None, "default", NOW)
            .unwrap()
            .token_id,
        id
    );
}

#[test]
fn long_lived_tokens_are_refused() {
    assert!(verify_claims(with(claims(), "exp", json!(NOW + TOKEN_LIFETIME_MAX))).is_ok());
    assert_eq!(
        verify_claims(with(claims(), "exp", json!(NOW + TOKEN_LIFETIME_MAX + 1))),
        Err(JwtError::LifetimeTooLong {
            max: TOKEN_LIFETIME_MAX
        })
    );
}

#[test]
fn claims_must_fall_within_the_provider_topics() {
    let mut bounded = hs_config("idp");
    bounded.topics = vec!["devices/+/#".into()];
    let providers = Providers::new(&[bounded]).unwrap();
    let verify = |claims: Value| providers.verify(&hs_token(&claims, SECRET), None, "default", NOW);
    let inside = claims()
        .with_topics("mqtt_publish", json!(["devices/d1/up"]))
        .with_topics("mqtt_subscribe", json!(["devices/d1/#", "devices/+/cmd"]));
    assert!(verify(inside).is_ok());
    let outside = claims()
        .with_topics("mqtt_publish", json!(["devices/d1/up"]))
        .with_topics("mqtt_subscribe", json!(["#"]));
    assert_eq!(
        verify(outside),
        Err(JwtError::TopicNotAllowed {
            claim: "mqtt_subscribe",
            index: 0,
            provider: "idp".into()
        })
    );
    // Without claims the subject's own tree is granted, and it is outside too.
    assert!(matches!(
        verify(claims()),
        Err(JwtError::TopicNotAllowed { .. })
    ));
    let mut bad = hs_config("idp");
    bad.topics = vec!["a/#/b".into()];
    assert!(matches!(
        Providers::new(&[bad]),
        Err(JwtError::InvalidTopics { .. })
    ));
}

#[test]
fn filter_within_is_topic_set_inclusion() {
    for (inner, outer) in [
        ("a", "a"),
        ("a", "a/#"),
        ("a/b/c", "a/#"),
        ("a/+", "a/#"),
        ("a/+/c", "a/+/c"),
        ("a/b/c", "a/+/c"),
        ("a/#", "a/#"),
        ("a/#", "#"),
        ("+/x", "+/+"),
        ("$SYS/x", "$SYS/#"),
    ] {
        assert!(filter_within(inner, outer), "{inner} within {outer}");
    }
    for (inner, outer) in [
        ("a", "b"),
        ("a/b", "a"),
        ("a", "a/+"),
        ("a/#", "a/+"),
        ("a/+", "a/b"),
        ("+", "a"),
        ("#", "a/#"),
        ("$SYS/x", "#"),
        ("$SYS/x", "+/x"),
        ("a/b", "a/b/c"),
    ] {
        assert!(!filter_within(inner, outer), "{inner} not within {outer}");
    }
}
