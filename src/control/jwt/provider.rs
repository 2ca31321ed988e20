//! One configured auth provider: its configuration checked and its key parsed at start-up, then
//! a token's signature and claims verified against it.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ringmq_router::topic::validate_filter;
use serde_json::{Map, Value};

use super::claims::{
    check_audience, filter_within, numeric_date, topic_patterns, Rounding, PATTERN_LEVELS_MAX,
};
use super::jwks::{check_url, Fetcher, Jwks};
use super::key::public_key;
use super::{JwtError, ProviderConfig, Verified, TOKEN_LIFETIME_MAX};

/// Shortest HS256 secret accepted: RFC 7518 section 3.2 wants a key at least as long as the hash.
const SECRET_BYTES_MIN: usize = 32;
/// Longest `sub` claim accepted; it becomes part of the MQTT username.
const SUBJECT_BYTES_MAX: usize = 128;
/// Longest `jti` claim accepted; it is kept until the token expires.
const JTI_BYTES_MAX: usize = 256;
/// Most patterns in a provider's `topics`.
const PROVIDER_TOPICS_MAX: usize = 64;

/// One provider with its key parsed.
pub(super) struct Provider {
    pub(super) name: String,
    pub(super) org_id: String,
    require_jti: bool,
    topics: Vec<String>,
    pub(super) issuer: String,
    audience: Option<String>,
    pub(super) algorithm: Algorithm,
    key: KeySource,
}

/// Where a provider's verification key comes from.
pub(super) enum KeySource {
    /// `secret` or `public_key_pem`, parsed at start-up.
    Static(DecodingKey),
    /// `jwks_url`: the identity provider's key set, fetched when needed.
    Jwks(Jwks),
}
// By hand because the key (an HS256 secret) must never reach a log.
impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("org_id", &self.org_id)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("algorithm", &self.algorithm)
            .field(
                "jwks_url",
                &match &self.key {
                    KeySource::Static(_) => None,
                    KeySource::Jwks(jwks) => Some(jwks.url()),
                },
            )
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Checks one provider's configuration and parses its key (a `jwks_url` provider's keys are
    /// fetched with `fetch` on its first token).
    pub(super) fn new(config: &ProviderConfig, fetch: &Fetcher) -> Result<Provider, JwtError> {
        let provider = || config.name.clone();
        if config.name.is_empty() {
            return Err(JwtError::EmptyField {
                provider: provider(),
                field: "name",
            });
        }
        if config.issuer.is_empty() {
            return Err(JwtError::EmptyField {
                provider: provider(),
                field: "issuer",
            });
        }
        if config.org_id.is_empty() {
            return Err(JwtError::EmptyField {
                provider: provider(),
                field: "org_id",
            });
        }
        let topics_error = |reason: String| JwtError::InvalidTopics {
            provider: provider(),
            reason,
        };
        if config.topics.len() > PROVIDER_TOPICS_MAX {
            return Err(topics_error(format!(
                "at most {PROVIDER_TOPICS_MAX} filters"
            )));
        }
        for topic in &config.topics {
            validate_filter(topic, PATTERN_LEVELS_MAX)
                .map_err(|error| topics_error(format!("{topic:?}: {error}")))?;
        }
        let algorithm = match config.algorithm.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            _ => {
                return Err(JwtError::UnknownAlgorithm {
                    provider: provider(),
                    algorithm: config.algorithm.clone(),
                })
            }
        };
        let name = alg_name(algorithm);
        let unused = |field| JwtError::UnusedKey {
            provider: provider(),
            field,
            algorithm: name,
        };
        let key = if algorithm == Algorithm::HS256 {
            // A PEM next to a secret means the operator believes another key is in use.
            if config.public_key_pem.is_some() {
                return Err(unused("public_key_pem"));
            }
            if config.jwks_url.is_some() {
                return Err(unused("jwks_url"));
            }
            let secret = config
                .secret
                .as_deref()
                .ok_or_else(|| JwtError::MissingSecret {
                    provider: provider(),
                })?;
            if secret.len() < SECRET_BYTES_MIN {
                return Err(JwtError::SecretTooShort {
                    provider: provider(),
                    min: SECRET_BYTES_MIN,
                });
            }
            KeySource::Static(DecodingKey::from_secret(secret.as_bytes()))
        } else {
            if config.secret.is_some() {
                return Err(unused("secret"));
            }
            match (config.public_key_pem.as_deref(), config.jwks_url.as_deref()) {
                (Some(_), Some(_)) => {
                    return Err(JwtError::TwoKeySources {
                        provider: provider(),
                    })
                }
                (None, None) => {
                    return Err(JwtError::MissingPublicKey {
                        provider: provider(),
                        algorithm: name,
                    })
                }
                (Some(pem), None) => {
                    KeySource::Static(public_key(algorithm, pem).map_err(|reason| {
                        JwtError::InvalidPublicKey {
                            provider: provider(),
                            reason,
                        }
                    })?)
                }
                (None, Some(url)) => {
                    check_url(url).map_err(|reason| JwtError::InvalidJwksUrl {
                        provider: provider(),
                        reason,
                    })?;
                    if url
                        .get(..7)
                        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
                    {
                        // Whoever can alter the response can mint tokens: fine on loopback or
                        // a trusted network only.
                        tracing::warn!(
                            provider = %config.name,
                            url,
                            "auth provider key set over plain http: use https outside a trusted network"
                        );
                    }
                    KeySource::Jwks(Jwks::new(url, algorithm, fetch.clone()))
                }
            }
        };
        Ok(Provider {
            name: config.name.clone(),
            org_id: config.org_id.clone(),
            require_jti: config.require_jti,
            topics: config.topics.clone(),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            algorithm,
            key,
        })
    }

    /// Checks the signature and the claims of `token` (whose header names `kid`, if any) with
    /// this provider.
    pub(super) fn verify(
        &self,
        token: &str,
        kid: Option<&str>,
        now_unix: u64,
    ) -> Result<Verified, JwtError> {
        let fetched;
        let key = match &self.key {
            // A static key is the provider's only key, whatever kid the token names.
            KeySource::Static(key) => key,
            KeySource::Jwks(jwks) => {
                fetched = jwks.key(&self.name, kid, now_unix)?;
                &fetched
            }
        };
        let mut validation = Validation::new(self.algorithm);
        // jsonwebtoken only checks the signature and the algorithm: its time checks read the
        // system clock and its claim errors are coarser than ours, so the claims are checked below.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            .map_err(|error| self.signature_error(error.kind()))?
            .claims;

        let expires_at = match claims.get("exp") {
            Some(exp) => numeric_date(exp, "exp", Rounding::Down)?,
            None => return Err(JwtError::MissingClaim("exp")),
        };
        if expires_at <= now_unix {
            return Err(JwtError::Expired);
        }
        if expires_at - now_unix > TOKEN_LIFETIME_MAX {
            return Err(JwtError::LifetimeTooLong {
                max: TOKEN_LIFETIME_MAX,
            });
        }
        if let Some(nbf) = claims.get("nbf") {
            if numeric_date(nbf, "nbf", Rounding::Up)? > now_unix {
                return Err(JwtError::NotYetValid);
            }
        }
        match claims.get("iss") {
            Some(Value::String(iss)) if *iss == self.issuer => {}
            Some(Value::String(_)) => return Err(JwtError::WrongIssuer),
            Some(_) => {
                return Err(JwtError::InvalidClaim {
                    claim: "iss",
                    reason: "must be a string",
                })
            }
            None => return Err(JwtError::MissingClaim("iss")),
        }
        if let Some(audience) = &self.audience {
            check_audience(claims.get("aud"), audience)?;
        }
        let subject = match claims.get("sub") {
            Some(Value::String(sub)) if sub.is_empty() => {
                return Err(JwtError::InvalidClaim {
                    claim: "sub",
                    reason: "must not be empty",
                })
            }
            Some(Value::String(sub)) if sub.len() > SUBJECT_BYTES_MAX => {
                return Err(JwtError::InvalidClaim {
                    claim: "sub",
                    reason: "must be at most 128 bytes",
                })
            }
            Some(Value::String(sub)) => sub.clone(),
            Some(_) => {
                return Err(JwtError::InvalidClaim {
                    claim: "sub",
                    reason: "must be a string",
                })
            }
            None => return Err(JwtError::MissingClaim("sub")),
        };
        let token_id = match claims.get("jti") {
            Some(Value::String(jti)) if !jti.is_empty() && jti.len() <= JTI_BYTES_MAX => {
                format!("jti:{jti}")
            }
            Some(Value::String(_)) => {
                return Err(JwtError::InvalidClaim {
                    claim: "jti",
                    reason: "must be 1 to 256 bytes",
                })
            }
            Some(_) => {
                return Err(JwtError::InvalidClaim {
                    claim: "jti",
                    reason: "must be a string",
                })
            }
            None if self.require_jti => return Err(JwtError::MissingClaim("jti")),
            None => signed_part_digest(token)?,
        };
        let publish = topic_patterns(&claims, "mqtt_publish", &subject)?;
        let subscribe = topic_patterns(&claims, "mqtt_subscribe", &subject)?;
        self.check_within_topics("mqtt_publish", &publish)?;
        self.check_within_topics("mqtt_subscribe", &subscribe)?;
        Ok(Verified {
            provider: self.name.clone(),
            token_id,
            subject,
            expires_at,
            publish,
            subscribe,
        })
    }

    /// Refuses a pattern that reaches outside the provider's `topics` (when it has any).
    fn check_within_topics(
        &self,
        claim: &'static str,
        patterns: &[String],
    ) -> Result<(), JwtError> {
        if self.topics.is_empty() {
            return Ok(());
        }
        for (index, pattern) in patterns.iter().enumerate() {
            if !self
                .topics
                .iter()
                .any(|outer| filter_within(pattern, outer))
            {
                return Err(JwtError::TopicNotAllowed {
                    claim,
                    index,
                    provider: self.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Maps a failure of `jsonwebtoken::decode` (which only checked the signature) to our error.
    fn signature_error(&self, kind: &ErrorKind) -> JwtError {
        match kind {
            ErrorKind::InvalidSignature => JwtError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                JwtError::AlgorithmMismatch {
                    provider: self.name.clone(),
                    expected: alg_name(self.algorithm),
                }
            }
            ErrorKind::InvalidToken => JwtError::Malformed("not three dot-separated parts"),
            ErrorKind::Base64(_) => JwtError::Malformed("a part is not base64url"),
            ErrorKind::Json(_) => JwtError::Malformed("header or claims are not valid JSON"),
            ErrorKind::Utf8(_) => JwtError::Malformed("header or claims are not UTF-8"),
            // Anything else went wrong inside the signature check: the token is not proven to
            // come from the provider, which is all the caller needs to know.
            _ => JwtError::BadSignature,
        }
    }
}

/// The key set of a `jwks_url` provider (tests).
#[cfg(test)]
impl Provider {
    pub(super) fn jwks(&self) -> Option<&Jwks> {
        match &self.key {
            KeySource::Jwks(jwks) => Some(jwks),
            KeySource::Static(_) => None,
        }
    }
}

/// The name of one of the three supported algorithms, as in the config and the JWT header.
pub(super) fn alg_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        // `Provider::new` only builds the three above.
        _ => "unsupported",
    }
}

/// `sha256:` and the hex digest of a token's signed part (`header.payload`).
fn signed_part_digest(token: &str) -> Result<String, JwtError> {
    use sha2::{Digest, Sha256};
    let end = token
        .rfind('.')
        .ok_or(JwtError::Malformed("not three dot-separated parts"))?;
    let digest = Sha256::digest(&token.as_bytes()[..end]);
    let mut id = String::with_capacity(7 + 64);
    id.push_str("sha256:");
    for byte in digest {
        id.push_str(&format!("{byte:02x}"));
    }
    Ok(id)
}
