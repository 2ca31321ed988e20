//! The `jwks_url` key source: configuration, the cache policy (lazy fetch, refresh on an unknown
//! `kid` at most every 30 s, refresh with age, stale keys through an outage) and the bounds on
//! what a key set may hold, with a canned fetcher (no network).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use simple_asn1::{from_der, ASN1Block};

use super::jwks::{
    parse_set, Fetcher, JwksError, JWKS_BYTES_MAX, JWKS_KEYS_MAX, KEYS_AGE_MAX, KEYS_STALE_MAX,
    REFRESH_INTERVAL_MIN,
};
use super::key::pem_body;
use super::{JwtError, ProviderConfig, Providers};

// The test keys of `tests.rs` (see testdata/README.md).
const RSA_PRIVATE: &str = include_str!("../testdata/rsa_test_private.pem");
const RSA_PUBLIC: &str = include_str!("../testdata/rsa_test_public.pem");
const RSA_OTHER_PUBLIC: &str = include_str!("../testdata/rsa_other_public.pem");
const RSA_1024_PUBLIC: &str = include_str!("../testdata/rsa_1024_public.pem");
const EC_PRIVATE: &str = include_str!("../testdata/ec_test_private.pem");
const EC_PUBLIC: &str = include_str!("../testdata/ec_test_public.pem");

const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://idp.example";
const URL: &str = "https://idp.example/.well-known/jwks.json";

/// A key set served by the canned fetcher, and how often it was fetched.
#[derive(Clone)]
struct Idp {
    body: Arc<Mutex<Result<Vec<u8>, JwksError>>>,
    fetches: Arc<AtomicUsize>,
}

impl Idp {
    fn new(keys: Vec<Value>) -> Idp {
        let idp = Idp {
            body: Arc::new(Mutex::new(Ok(Vec::new()))),
            fetches: Arc::default(),
        };
        idp.serve(keys);
        idp
    }

    fn serve(&self, keys: Vec<Value>) {
        self.serve_body(serde_json::to_vec(&json!({ "keys": keys })).unwrap());
    }

    fn serve_body(&self, body: Vec<u8>) {
        *self.body.lock().unwrap() = Ok(body);
    }

    fn fail(&self, error: &str) {
        *self.body.lock().unwrap() = Err(JwksError::Transport(error.into()));
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn fetcher(&self) -> Fetcher {
        let idp = self.clone();
        Arc::new(move |url: &str| {
            assert_eq!(url, URL);
            idp.fetches.fetch_add(1, Ordering::SeqCst);
            idp.body.lock().unwrap().clone()
        })
    }

    fn providers(&self, algorithm: &str) -> Providers {
        Providers::with_fetcher(&[jwks_config("idp", algorithm)], self.fetcher()).unwrap()
    }
}

fn jwks_config(name: &str, algorithm: &str) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        org_id: "default".into(),
        require_jti: false,
        topics: Vec::new(),
        issuer: ISSUER.into(),
        audience: None,
        algorithm: algorithm.into(),
        secret: None,
        public_key_pem: None,
        jwks_url: Some(URL.into()),
    }
}

/// The JWK of an RSA public key in PEM (SubjectPublicKeyInfo).
fn rsa_jwk(pem: &str, kid: &str) -> Value {
    let (_, der) = pem_body(pem).unwrap();
    let blocks = from_der(&der).unwrap();
    let [ASN1Block::Sequence(_, spki)] = blocks.as_slice() else {
        panic!("not a SubjectPublicKeyInfo")
    };
    let [_, ASN1Block::BitString(_, _, key)] = spki.as_slice() else {
        panic!("no key")
    };
    let blocks = from_der(key).unwrap();
    let [ASN1Block::Sequence(_, fields)] = blocks.as_slice() else {
        panic!("not an RSAPublicKey")
    };
    let [ASN1Block::Integer(_, n), ASN1Block::Integer(_, e)] = fields.as_slice() else {
        panic!("no modulus")
    };
    let b64 =
        |i: &simple_asn1::BigInt| URL_SAFE_NO_PAD.encode(i.to_biguint().unwrap().to_bytes_be());
    json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(n), "e": b64(e)})
}

/// The JWK of a P-256 public key in PEM.
fn ec_jwk(pem: &str, kid: &str) -> Value {
    let (_, der) = pem_body(pem).unwrap();
    let blocks = from_der(&der).unwrap();
    let [ASN1Block::Sequence(_, spki)] = blocks.as_slice() else {
        panic!("not a SubjectPublicKeyInfo")
    };
    let [_, ASN1Block::BitString(_, _, point)] = spki.as_slice() else {
        panic!("no key")
    };
    assert_eq!(point.len(), 65);
    json!({"kty": "EC", "kid": kid, "crv": "P-256",
           "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])})
}

fn token(algorithm: Algorithm, private_pem: &str, kid: Option<&str>, now: u64) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    let key = match algorithm {
        Algorithm::ES256 => EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(),
    };
    let claims = json!({"iss": ISSUER, "sub": "device-7", "exp": now + 600});
    encode(&header, &claims, &key).unwrap()
}

fn rs_token(kid: Option<&str>, now: u64) -> String {
    token(Algorithm::RS256, RSA_PRIVATE, kid, now)
}

fn verify(providers: &Providers, token: &str, now: u64) -> Result<String, JwtError> {
    providers
        .verify(token, None, "default", now)
        .map(|verified| verified.subject)
}

fn unknown_kid() -> Result<String, JwtError> {
    Err(JwtError::UnknownKeyId {
        provider: "idp".into(),
    })
}

#[test]
fn the_set_is_fetched_on_the_first_token_not_at_start() {
    let idp = Idp::new(vec![rsa_jwk(RSA_PUBLIC, "k1")]);
    let providers = idp.providers("RS256");
    assert_eq!(idp.fetches(), 0);
    assert_eq!(
        verify(&providers, &rs_token(Some("k1"), NOW), NOW).as_deref(),
        Ok("device-7")
    );
    assert_eq!(idp.fetches(), 1);
    // Kept: the next tokens do not fetch.
    for later in 1..100 {
        assert!(verify(&providers, &rs_token(Some("k1"), NOW), NOW + later).is_ok());
    }
    assert_eq!(idp.fetches(), 1);
}

#[test]
fn an_unknown_kid_refreshes_once_per_window() {
    let idp = Idp::new(vec![rsa_jwk(RSA_PUBLIC, "k1")]);
    let providers = idp.providers("RS256");
    assert!(verify(&providers, &rs_token(Some("k1"), NOW), NOW).is_ok());
    // The provider rotates in k2: a token naming it is the first news of it. The refresh is due
    // only once the window since the first fetch has passed.
    idp.serve(vec![rsa_jwk(RSA_PUBLIC, "k1"), rsa_jwk(RSA_PUBLIC, "k2")]);
    let rotated = NOW + REFRESH_INTERVAL_MIN;
    assert_eq!(
        verify(&providers, &rs_token(Some("k2"), rotated), rotated).as_deref(),
        Ok("device-7")
    );
    assert_eq!(idp.fetches(), 2);

    // A stream of made-up kids within the window: no fetch at all.
    for (i, now) in (rotated..rotated + REFRESH_INTERVAL_MIN).enumerate() {
        let bogus = format!("bogus-{i}");
        assert_eq!(
            verify(&providers, &rs_token(Some(&bogus), now), now),
            unknown_kid()
        );
    }
    assert_eq!(idp.fetches(), 2);
    // Past the window one more fetch, then quiet again.
    let later = rotated + REFRESH_INTERVAL_MIN;
    assert_eq!(
        verify(&providers, &rs_token(Some("bogus"), later), later),
        unknown_kid()
    );
    assert_eq!(
        verify(&providers, &rs_token(Some("bogus-2"), later + 1), later + 1),
        unknown_kid()
    );
    assert_eq!(idp.fetches(), 3);
    // Known kids still verify meanwhile, without fetching.
    assert!(verify(&providers, &rs_token(Some("k1"), later + 2), later + 2).is_ok());
    assert_eq!(idp.fetches(), 3);
}

#[test]
fn an_old_set_is_fetched_again_and_withdrawn_keys_stop_working() {
    let idp = Idp::new(vec![rsa_jwk(RSA_PUBLIC, "k1")]);
    let providers = idp.providers("RS256");
    assert!(verify(&providers, &rs_token(Some("k1"), NOW), NOW).is_ok());
    idp.serve(vec![rsa_jwk(RSA_PUBLIC, "k2")]);
    let before = NOW + KEYS_AGE_MAX - 1;
    assert!(verify(&providers, &rs_token(Some("k1"), before), before).is_ok());
    assert_eq!(idp.fetches(), 1);
    let aged = NOW + KEYS_AGE_MAX;
    assert_eq!(
        verify(&providers, &rs_token(Some("k1"), aged), aged),
        unknown_kid()
    );
    assert_eq!(idp.fetches(), 2);
    assert!(verify(&providers, &rs_token(Some("k2"), aged), aged).is_ok());
    assert_eq!(idp.fetches(), 2);
}

#[test]
fn a_provider_that_is_down_is_a_clear_refusal_and_asked_again_later() {
    let idp = Idp::new(Vec::new());
    idp.fail("connection refused");
    let providers = idp.providers("RS256");
    let refused = verify(&providers, &rs_token(Some("k1"), NOW), NOW);
    let Err(JwtError::KeySetUnavailable { provider, reason }) = &refused else {
        panic!("{refused:?}")
    };
    assert_eq!(provider, "idp");
    assert_eq!(
        reason,
        "the key set could not be fetched: connection refused"
    );
    assert!(refused.unwrap_err().to_string().contains("\"idp\""));
    // Asked again only after the window, whatever the tokens.
    for now in NOW..NOW + REFRESH_INTERVAL_MIN {
        assert!(matches!(
            verify(&providers, &rs_token(None, now), now),
            Err(JwtError::KeySetUnavailable { .. })
        ));
    }
    assert_eq!(idp.fetches(), 1);
    idp.serve(vec![rsa_jwk(RSA_PUBLIC, "k1")]);
    let back = NOW + REFRESH_INTERVAL_MIN;
    assert!(verify(&providers, &rs_token(Some("k1"), back), back).is_ok());
    assert_eq!(idp.fetches(), 2);
}

#[test]
fn keys_outlive_an_outage_for_a_bounded_time() {
    let idp = Idp::new(vec![rsa_jwk(RSA_PUBLIC, "k1")]);
    let providers = idp.providers("RS256");
    assert!(verify(&providers, &rs_token(Some("k1"), NOW), NOW).is_ok());
    idp.fail("timed out");
    let aged = NOW + KEYS_AGE_MAX;
    assert!(verify(&providers, &rs_token(Some("k1"), aged), aged).is_ok());
    assert_eq!(idp.fetches(), 2);
    let stale = NOW + KEYS_STALE_MAX + 1;
    let refused = verify(&providers, &rs_token(Some("k1"), stale), stale);
    assert!(
        matches!(&refused, Err(JwtError::KeySetUnavailable { reason, .. }) if reason.contains("timed out")),
        "{refused:?}"
    );
}

#[test]
fn tokens_without_kid_need_a_single_key() {
    let idp = Idp::new(vec![rsa_jwk(RSA_PUBLIC, "k1")]);
    let providers = idp.providers("RS256");
    assert!(verify(&providers, &rs_token(None, NOW), NOW).is_ok());
    idp.serve(vec![
        rsa_jwk(RSA_PUBLIC, "k1"),
        rsa_jwk(RSA_OTHER_PUBLIC, "k2"),
    ]);
    let two = NOW + KEYS_AGE_MAX;
    assert_eq!(
        verify(&providers, &rs_token(None, two), two),
        Err(JwtError::KeyIdRequired {
            provider: "idp".into()
        })
    );
    assert!(verify(&providers, &rs_token(Some("k1"), two), two).is_ok());
    // An empty set says so.
    idp.serve(Vec::new());
    let empty = two + KEYS_AGE_MAX;
    let refused = verify(&providers, &rs_token(None, empty), empty);
    assert!(
        matches!(&refused, Err(JwtError::KeySetUnavailable { reason, .. }) if reason.contains("no usable RS256 key")),
        "{refused:?}"
    );
}

#[test]
fn a_stranger_key_under_a_known_kid_is_a_bad_signature() {
    let idp = Idp::new(vec![rsa_jwk(RSA_OTHER_PUBLIC, "k1")]);
    let providers = idp.providers("RS256");
    assert_eq!(
        verify(&providers, &rs_token(Some("k1"), NOW), NOW),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn es256_key_sets() {
    let idp = Idp::new(vec![rsa_jwk(RSA_PUBLIC, "rsa"), ec_jwk(EC_PUBLIC, "ec")]);
    let providers = idp.providers("ES256");
    let es = token(Algorithm::ES256, EC_PRIVATE, Some("ec"), NOW);
    assert!(verify(&providers, &es, NOW).is_ok());
    // The RSA key was skipped, and an RS256 token is refused before any key is looked at.
    assert!(matches!(
        verify(&providers, &rs_token(Some("rsa"), NOW), NOW),
        Err(JwtError::AlgorithmMismatch { .. })
    ));
    let es = token(Algorithm::ES256, EC_PRIVATE, Some("rsa"), NOW + 1);
    assert_eq!(verify(&providers, &es, NOW + 1), unknown_kid());
}

#[test]
fn keys_of_another_algorithm_or_use_are_skipped() {
    let good = rsa_jwk(RSA_PUBLIC, "good");
    let with = |kid: &str, field: &str, value: Value| {
        let mut jwk = rsa_jwk(RSA_PUBLIC, kid);
        jwk[field] = value;
        jwk
    };
    let keys = vec![
        with("rs384", "alg", json!("RS384")),
        with("enc", "use", json!("enc")),
        with("ops", "key_ops", json!(["encrypt"])),
        with("weird-alg", "alg", json!("no-such-alg")),
        rsa_jwk(RSA_1024_PUBLIC, "short"),
        ec_jwk(EC_PUBLIC, "ec"),
        json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
        json!({"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"}),
        json!("not an object"),
        good.clone(),
        // The same kid again: the first is kept.
        rsa_jwk(RSA_OTHER_PUBLIC, "good"),
        with("verify-ops", "key_ops", json!(["verify"])),
    ];
    let set = parse_set(
        &serde_json::to_vec(&json!({ "keys": keys })).unwrap(),
        Algorithm::RS256,
    )
    .unwrap();
    let kids: Vec<_> = set.keys.iter().map(|(kid, _)| kid.as_deref()).collect();
    assert_eq!(kids, [Some("good"), Some("verify-ops")]);
    assert_eq!(set.skipped, 10);

    let idp = Idp::new(keys);
    let providers = idp.providers("RS256");
    assert!(verify(&providers, &rs_token(Some("good"), NOW), NOW).is_ok());
    for kid in ["rs384", "enc", "ops", "short", "ec", "hmac"] {
        assert_eq!(
            verify(&providers, &rs_token(Some(kid), NOW), NOW),
            unknown_kid()
        );
    }
}

#[test]
fn size_and_count_bounds() {
    let set = |count: usize| {
        let keys: Vec<Value> = (0..count)
            .map(|i| rsa_jwk(RSA_PUBLIC, &format!("k{i}")))
            .collect();
        serde_json::to_vec(&json!({ "keys": keys })).unwrap()
    };
    let parsed = parse_set(&set(JWKS_KEYS_MAX + 8), Algorithm::RS256).unwrap();
    assert_eq!(parsed.keys.len(), JWKS_KEYS_MAX);
    assert_eq!(parsed.dropped, 8);
    let idp = Idp::new(Vec::new());
    idp.serve_body(set(JWKS_KEYS_MAX + 8));
    let providers = idp.providers("RS256");
    let last = format!("k{}", JWKS_KEYS_MAX - 1);
    assert!(verify(&providers, &rs_token(Some(&last), NOW), NOW).is_ok());
    let past = format!("k{JWKS_KEYS_MAX}");
    assert_eq!(
        verify(&providers, &rs_token(Some(&past), NOW), NOW),
        unknown_kid()
    );
    let jwks = providers.providers[0].jwks().unwrap();
    assert_eq!(jwks.cached_keys(), JWKS_KEYS_MAX);

    // A response at the byte bound is read; one byte more is refused.
    let mut body = set(1);
    body.resize(JWKS_BYTES_MAX, b' ');
    assert_eq!(parse_set(&body, Algorithm::RS256).unwrap().keys.len(), 1);
    body.push(b' ');
    assert_eq!(
        parse_set(&body, Algorithm::RS256).err(),
        Some(JwksError::TooLarge {
            max: JWKS_BYTES_MAX
        })
    );
    let idp = Idp::new(Vec::new());
    idp.serve_body(body);
    let refused = verify(&idp.providers("RS256"), &rs_token(Some("k0"), NOW), NOW);
    assert!(
        matches!(&refused, Err(JwtError::KeySetUnavailable { reason, .. }) if reason.contains("larger than 65536 bytes")),
        "{refused:?}"
    );
}

#[test]
fn responses_that_are_not_key_sets() {
    for body in [
        &b""[..],
        b"not json",
        b"[]",
        b"{}",
        b"{\"keys\": 5}",
        b"{\"keys\": [",
        &[0xff, 0xfe, 0x00, 0x7b],
    ] {
        assert_eq!(
            parse_set(body, Algorithm::RS256).err(),
            Some(JwksError::NotJwks),
            "{body:?}"
        );
    }
    let idp = Idp::new(Vec::new());
    idp.serve_body(b"<html>login</html>".to_vec());
    let refused = verify(&idp.providers("RS256"), &rs_token(Some("k"), NOW), NOW);
    assert!(
        matches!(&refused, Err(JwtError::KeySetUnavailable { reason, .. }) if reason.contains("not a JSON key set")),
        "{refused:?}"
    );
}

#[test]
fn jwks_url_configuration() {
    let check = |config: ProviderConfig| Providers::new(&[config]).map(|_| ()).unwrap_err();
    let mut hs = jwks_config("bad", "HS256");
    hs.secret = Some("an-hs256-test-secret-of-32-bytes!".into());
    assert_eq!(
        check(hs),
        JwtError::UnusedKey {
            provider: "bad".into(),
            field: "jwks_url",
            algorithm: "HS256"
        }
    );
    let mut both = jwks_config("bad", "RS256");
    both.public_key_pem = Some(RSA_PUBLIC.into());
    assert_eq!(
        check(both),
        JwtError::TwoKeySources {
            provider: "bad".into()
        }
    );
    let mut neither = jwks_config("bad", "ES256");
    neither.jwks_url = None;
    let error = check(neither);
    assert!(
        error.to_string().contains("public_key_pem or jwks_url"),
        "{error}"
    );
    for url in [
        "",
        "idp.example/jwks",
        "ftp://idp.example/jwks",
        "file:///etc/jwks.json",
        "https://",
        "https://idp.example/a b",
        "https://idp.example/\n",
    ] {
        let mut config = jwks_config("bad", "RS256");
        config.jwks_url = Some(url.into());
        let error = check(config);
        assert!(
            matches!(&error, JwtError::InvalidJwksUrl { provider, .. } if provider == "bad"),
            "{url:?}: {error}"
        );
        assert!(error.to_string().contains("\"bad\""), "{error}");
    }
    for url in [
        URL,
        "http://127.0.0.1:8080/jwks",
        "HTTPS://idp.example:8443/keys?tenant=a",
    ] {
        let mut config = jwks_config("ok", "RS256");
        config.jwks_url = Some(url.into());
        assert!(Providers::new(&[config]).is_ok(), "{url}");
    }
}

#[test]
fn the_config_table_reads_jwks_url() {
    let table: ProviderConfig = toml::from_str(
        r#"
        name = "idp"
        org_id = "default"
        issuer = "https://idp.example"
        algorithm = "RS256"
        jwks_url = "https://idp.example/jwks.json"
        "#,
    )
    .unwrap();
    assert_eq!(
        table.jwks_url.as_deref(),
        Some("https://idp.example/jwks.json")
    );
    assert!(table.require_jti);
    assert!(toml::from_str::<ProviderConfig>(
        "name = \"idp\"\norg_id = \"default\"\nissuer = \"i\"\nalgorithm = \"RS256\"\njwks = \"x\"\n"
    )
    .is_err());
}
