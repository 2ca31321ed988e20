//! Token-exchange JWT verification: HS256, RS256 and ES256 tokens checked against the configured
//! auth providers, turned into the subject, expiry and topic patterns the new credentials get.
//!
//! Signatures are checked by `jsonwebtoken`; every claim is checked here against the caller's
//! `now_unix` so that the result never depends on the system clock and every refusal has its own
//! error. Errors never contain the token or any of its claims.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ringmq_router::topic::{validate_filter, TopicError};
use serde_json::{Map, Value};

/// Shortest HS256 secret accepted: RFC 7518 section 3.2 wants a key at least as long as the hash.
const SECRET_BYTES_MIN: usize = 32;
/// Longest `sub` claim accepted; it becomes part of the MQTT username.
const SUBJECT_BYTES_MAX: usize = 128;
/// Most patterns in `mqtt_publish` or `mqtt_subscribe`.
const PATTERNS_MAX: usize = 32;
/// Longest pattern in `mqtt_publish` or `mqtt_subscribe`, in bytes.
const PATTERN_BYTES_MAX: usize = 256;
/// Most levels in a pattern, as for the broker's own filters.
const PATTERN_LEVELS_MAX: usize = 32;
/// Longest token looked at: anything bigger is not a token we issue credentials for, and the
/// limit bounds the base64 and JSON work done before the signature is checked.
const TOKEN_BYTES_MAX: usize = 16 * 1024;
/// RSA modulus sizes `ring` verifies with (`RSA_PKCS1_2048_8192_SHA256`); a key outside this
/// range would parse but refuse every token, so it is refused at start-up instead.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;
/// Longest `jti` claim accepted; it is kept until the token expires.
const JTI_BYTES_MAX: usize = 256;
/// Longest a token may still be valid when exchanged: exchanged token ids are remembered until
/// the token expires, so this bounds how long (and, with the per-org exchange rate, how many).
pub const TOKEN_LIFETIME_MAX: u64 = 24 * 3600;
/// Most patterns in a provider's `topics`.
const PROVIDER_TOPICS_MAX: usize = 64;
/// DER encoding of the OID of P-256 (prime256v1), the only curve ES256 allows.
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// One configured auth provider (`[[auth.providers]]` in the config).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name used to pick the provider in a token-exchange request.
    pub name: String,
    /// The org this provider's tokens buy credentials in (`"default"` for the default org): a
    /// token is exchanged only with a key of this org.
    pub org_id: String,
    /// Refuse tokens without a `jti` claim (the default). With `false`, such a token is
    /// remembered by a digest of its signed part instead, so it is still exchanged only once.
    #[serde(default = "default_true")]
    pub require_jti: bool,
    /// Topic filters the token's `mqtt_publish` / `mqtt_subscribe` patterns must fall within
    /// (empty: no bound beyond the claims).
    #[serde(default)]
    pub topics: Vec<String>,
    /// Required `iss` claim.
    pub issuer: String,
    /// Required `aud` claim, if set.
    #[serde(default)]
    pub audience: Option<String>,
    /// `HS256`, `RS256` or `ES256`.
    pub algorithm: String,
    /// Shared secret for HS256.
    #[serde(default)]
    pub secret: Option<String>,
    /// PEM public key for RS256 / ES256.
    #[serde(default)]
    pub public_key_pem: Option<String>,
}

fn default_true() -> bool {
    true
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Name of the provider that verified the token.
    pub provider: String,
    /// What the token is remembered by once exchanged: `jti:` and its `jti` claim, or (for a
    /// provider with `require_jti = false` and a token without one) `sha256:` and the digest of
    /// the token's signed part (not of the signature, which ES256 lets anyone re-randomize).
    pub token_id: String,
    /// The `sub` claim.
    pub subject: String,
    /// The `exp` claim, unix seconds.
    pub expires_at: u64,
    /// Topic patterns the credentials may publish to.
    pub publish: Vec<String>,
    /// Topic patterns the credentials may subscribe to.
    pub subscribe: Vec<String>,
}

/// Why a token or a provider configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// No provider is configured, so no token can be accepted.
    #[error("token exchange is not configured")]
    NotConfigured,

    // Configuration errors, from `Providers::new`.
    /// A provider's `topics` entry is not a valid topic filter, or there are too many.
    #[error("auth provider {provider:?}: invalid topics: {reason}")]
    InvalidTopics {
        /// The provider's name.
        provider: String,
        /// What is wrong.
        reason: String,
    },
    /// A provider has an empty `name`, `issuer` or `org_id`.
    #[error("auth provider {provider:?}: {field} must not be empty")]
    EmptyField {
        /// The provider's name.
        provider: String,
        /// The empty field.
        field: &'static str,
    },
    /// Two providers have the same name.
    #[error("auth provider {provider:?} is configured twice")]
    DuplicateProvider {
        /// The repeated name.
        provider: String,
    },
    /// A provider's algorithm is not `HS256`, `RS256` or `ES256`.
    #[error("auth provider {provider:?}: unknown algorithm {algorithm:?} (HS256, RS256 or ES256)")]
    UnknownAlgorithm {
        /// The provider's name.
        provider: String,
        /// The configured algorithm.
        algorithm: String,
    },
    /// An HS256 provider without `secret`.
    #[error("auth provider {provider:?}: HS256 needs a secret")]
    MissingSecret {
        /// The provider's name.
        provider: String,
    },
    /// An HS256 secret shorter than 32 bytes.
    #[error("auth provider {provider:?}: the HS256 secret must be at least {min} bytes")]
    SecretTooShort {
        /// The provider's name.
        provider: String,
        /// Minimum length in bytes.
        min: usize,
    },
    /// An RS256 or ES256 provider without `public_key_pem`.
    #[error("auth provider {provider:?}: {algorithm} needs public_key_pem")]
    MissingPublicKey {
        /// The provider's name.
        provider: String,
        /// The provider's algorithm.
        algorithm: &'static str,
    },
    /// A key field the provider's algorithm does not use (`secret` with RS/ES, a PEM with HS256).
    #[error("auth provider {provider:?}: {field} is not used with {algorithm}")]
    UnusedKey {
        /// The provider's name.
        provider: String,
        /// The field that should not be set.
        field: &'static str,
        /// The provider's algorithm.
        algorithm: &'static str,
    },
    /// `public_key_pem` is not a usable public key for the provider's algorithm.
    #[error("auth provider {provider:?}: invalid public_key_pem: {reason}")]
    InvalidPublicKey {
        /// The provider's name.
        provider: String,
        /// What is wrong with the key.
        reason: &'static str,
    },

    // Token errors, from `Providers::verify`.
    /// The request names a provider that is not configured.
    #[error("unknown auth provider")]
    UnknownProvider,
    /// The provider (named, or every one of the token's issuer) serves another org than the
    /// key's.
    #[error("auth provider {provider:?} does not serve this org")]
    WrongOrg {
        /// The provider named or found by issuer.
        provider: String,
    },
    /// The token is valid for longer than token exchange takes.
    #[error("token expires more than {max} seconds from now; exchange short-lived tokens")]
    LifetimeTooLong {
        /// Longest lifetime left, in seconds.
        max: u64,
    },
    /// A topic claim reaches outside the provider's `topics`.
    #[error("{claim}[{index}] is outside the topics auth provider {provider:?} may grant")]
    TopicNotAllowed {
        /// The topic claim.
        claim: &'static str,
        /// Position of the pattern in the claim.
        index: usize,
        /// The provider's name.
        provider: String,
    },
    /// No provider is configured for the token's `iss` claim.
    #[error("no auth provider for the token's issuer")]
    UnknownIssuer,
    /// The token is not a well-formed JWT.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The token is unsigned (`alg: none`).
    #[error("unsigned tokens (alg none) are refused")]
    Unsigned,
    /// The token's `alg` is not the provider's algorithm.
    #[error("token algorithm does not match auth provider {provider:?} ({expected})")]
    AlgorithmMismatch {
        /// The provider's name.
        provider: String,
        /// The provider's algorithm.
        expected: &'static str,
    },
    /// The signature does not verify with the provider's key.
    #[error("bad token signature")]
    BadSignature,
    /// The `exp` claim is not after now.
    #[error("token expired")]
    Expired,
    /// The `nbf` claim is after now.
    #[error("token not valid yet (nbf is in the future)")]
    NotYetValid,
    /// A required claim is absent.
    #[error("token has no {0} claim")]
    MissingClaim(&'static str),
    /// A claim has the wrong type or an unacceptable value.
    #[error("invalid {claim} claim: {reason}")]
    InvalidClaim {
        /// The claim's name.
        claim: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The `iss` claim is not the provider's issuer.
    #[error("token issuer does not match the auth provider")]
    WrongIssuer,
    /// The `aud` claim does not contain the provider's audience.
    #[error("token audience does not match the auth provider")]
    WrongAudience,
    /// A topic claim is absent and `sub` cannot stand in for a topic level.
    #[error(
        "the sub claim contains '+', '#', '/' or NUL so it cannot be a topic level: \
         the token needs an explicit {claim} claim"
    )]
    SubjectNotTopicLevel {
        /// The absent topic claim.
        claim: &'static str,
    },
    /// A topic claim has more than 32 patterns.
    #[error("{claim} has more than {max} patterns")]
    TooManyPatterns {
        /// The topic claim.
        claim: &'static str,
        /// Maximum number of patterns.
        max: usize,
    },
    /// A pattern in a topic claim is longer than 256 bytes.
    #[error("{claim}[{index}] is longer than {max} bytes")]
    PatternTooLong {
        /// The topic claim.
        claim: &'static str,
        /// Position of the pattern in the claim.
        index: usize,
        /// Maximum length in bytes.
        max: usize,
    },
    /// A pattern in a topic claim is not a valid MQTT topic filter.
    #[error("{claim}[{index}] is not a valid topic filter: {error}")]
    InvalidPattern {
        /// The topic claim.
        claim: &'static str,
        /// Position of the pattern in the claim.
        index: usize,
        /// Why the filter was refused.
        error: TopicError,
    },
}

/// One provider with its key parsed.
struct Provider {
    name: String,
    org_id: String,
    require_jti: bool,
    topics: Vec<String>,
    issuer: String,
    audience: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
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
            .finish_non_exhaustive()
    }
}

/// The configured providers, with their keys parsed.
#[derive(Debug, Default)]
pub struct Providers {
    providers: Vec<Provider>,
}

impl Providers {
    /// Parses the configured providers; errors name the bad provider.
    pub fn new(configs: &[ProviderConfig]) -> Result<Providers, JwtError> {
        let mut providers: Vec<Provider> = Vec::with_capacity(configs.len());
        for config in configs {
            if providers.iter().any(|p| p.name == config.name) {
                return Err(JwtError::DuplicateProvider {
                    provider: config.name.clone(),
                });
            }
            providers.push(Provider::new(config)?);
        }
        Ok(Providers { providers })
    }

    /// The configured providers' names and the org each serves.
    pub fn orgs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.providers
            .iter()
            .map(|p| (p.name.as_str(), p.org_id.as_str()))
    }

    /// Verifies `token` for a key of org `org_id` (against `provider` by name, or those whose
    /// issuer matches): only a provider serving `org_id` may vouch for it.
    pub fn verify(
        &self,
        token: &str,
        provider: Option<&str>,
        org_id: &str,
        now_unix: u64,
    ) -> Result<Verified, JwtError> {
        if self.providers.is_empty() {
            return Err(JwtError::NotConfigured);
        }
        if token.len() > TOKEN_BYTES_MAX {
            return Err(JwtError::Malformed("token is too long"));
        }
        let (header, payload) = split_token(token)?;
        let header = decode_part(header, "header")?;
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg.as_str(),
            _ => return Err(JwtError::Malformed("header has no alg")),
        };
        // Refused before any provider is looked at so that an unsigned token can never reach a
        // code path that might skip the signature.
        if alg.eq_ignore_ascii_case("none") {
            return Err(JwtError::Unsigned);
        }
        // RFC 7515 section 4.1.11: extensions marked critical must be understood; we know none.
        if header.contains_key("crit") {
            return Err(JwtError::Malformed(
                "critical header extensions are not supported",
            ));
        }

        let candidates: Vec<&Provider> = match provider {
            Some(name) => vec![self
                .providers
                .iter()
                .find(|p| p.name == name)
                .ok_or(JwtError::UnknownProvider)?],
            None => {
                // Unverified: only used to choose the key. The claims are read again from the
                // verified token before anything is trusted.
                let claims = decode_part(payload, "payload")?;
                let iss = match claims.get("iss") {
                    Some(Value::String(iss)) => iss,
                    Some(_) => {
                        return Err(JwtError::InvalidClaim {
                            claim: "iss",
                            reason: "must be a string",
                        })
                    }
                    None => return Err(JwtError::MissingClaim("iss")),
                };
                let found: Vec<&Provider> =
                    self.providers.iter().filter(|p| &p.issuer == iss).collect();
                if found.is_empty() {
                    return Err(JwtError::UnknownIssuer);
                }
                found
            }
        };
        // Checked before any signature work: a provider vouches for its own org's keys only, so
        // a token of one tenant's identity provider never buys credentials in another org.
        let first = candidates[0];
        let candidates: Vec<&Provider> = candidates
            .into_iter()
            .filter(|p| p.org_id == org_id)
            .collect();
        if candidates.is_empty() {
            return Err(JwtError::WrongOrg {
                provider: first.name.clone(),
            });
        }

        // Several providers may share an issuer (key rotation, or HS and RS side by side): only
        // those of the token's algorithm can verify it, and the first that does wins.
        let mut first_error = None;
        for candidate in candidates.iter().filter(|p| alg_name(p.algorithm) == alg) {
            match candidate.verify(token, now_unix) {
                Ok(verified) => return Ok(verified),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| {
            // `candidates` is never empty: a missing name or issuer returned above.
            let provider = candidates[0];
            JwtError::AlgorithmMismatch {
                provider: provider.name.clone(),
                expected: alg_name(provider.algorithm),
            }
        }))
    }
}

impl Provider {
    /// Checks one provider's configuration and parses its key.
    fn new(config: &ProviderConfig) -> Result<Provider, JwtError> {
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
            DecodingKey::from_secret(secret.as_bytes())
        } else {
            if config.secret.is_some() {
                return Err(unused("secret"));
            }
            let pem =
                config
                    .public_key_pem
                    .as_deref()
                    .ok_or_else(|| JwtError::MissingPublicKey {
                        provider: provider(),
                        algorithm: name,
                    })?;
            public_key(algorithm, pem).map_err(|reason| JwtError::InvalidPublicKey {
                provider: provider(),
                reason,
            })?
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

    /// Checks the signature and the claims of `token` with this provider.
    fn verify(&self, token: &str, now_unix: u64) -> Result<Verified, JwtError> {
        let mut validation = Validation::new(self.algorithm);
        // jsonwebtoken only checks the signature and the algorithm: its time checks read the
        // system clock and its claim errors are coarser than ours, so the claims are checked below.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &validation)
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

/// The name of one of the three supported algorithms, as in the config and the JWT header.
fn alg_name(algorithm: Algorithm) -> &'static str {
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

/// True when every topic `inner` matches is matched by `outer` too (both valid filters), so a
/// token's pattern granted within a provider's `topics` cannot reach beyond them.
pub fn filter_within(inner: &str, outer: &str) -> bool {
    let mut inner_levels = inner.split('/');
    let mut outer_levels = outer.split('/');
    let mut first = true;
    loop {
        match (inner_levels.next(), outer_levels.next()) {
            (_, Some("#")) => {
                // A wildcard first level never matches `$` topics (MQTT 4.7.2), and `#` also
                // matches the parent level, which `inner` may end on.
                return !(first && inner.starts_with('$'));
            }
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
            (Some("#"), Some(_)) => return false,
            (Some(level), Some("+")) => {
                if first && level.starts_with('$') {
                    return false;
                }
            }
            (Some(level), Some(other)) => {
                if level != other {
                    return false;
                }
            }
        }
        first = false;
    }
}

/// Splits a compact JWS into its encoded header and payload (the signature is jsonwebtoken's).
fn split_token(token: &str) -> Result<(&str, &str), JwtError> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(payload), Some(_signature), None) => Ok((header, payload)),
        _ => Err(JwtError::Malformed("not three dot-separated parts")),
    }
}

/// Decodes a base64url JSON object: the header, or the payload before verification.
fn decode_part(part: &str, what: &'static str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| {
        JwtError::Malformed(if what == "header" {
            "header is not base64url"
        } else {
            "payload is not base64url"
        })
    })?;
    serde_json::from_slice(&bytes).map_err(|_| {
        JwtError::Malformed(if what == "header" {
            "header is not a JSON object"
        } else {
            "payload is not a JSON object"
        })
    })
}

/// Which way a fractional NumericDate is rounded: always towards refusing the token.
#[derive(Clone, Copy)]
enum Rounding {
    Down,
    Up,
}

/// Reads a NumericDate claim (RFC 7519: seconds, possibly fractional) as whole unix seconds.
fn numeric_date(value: &Value, claim: &'static str, rounding: Rounding) -> Result<u64, JwtError> {
    let invalid = JwtError::InvalidClaim {
        claim,
        reason: "must be a non-negative number of seconds",
    };
    let Value::Number(number) = value else {
        return Err(invalid);
    };
    if let Some(seconds) = number.as_u64() {
        return Ok(seconds);
    }
    match number.as_f64() {
        // `as` saturates, so a huge value stays huge instead of wrapping.
        Some(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(match rounding {
            Rounding::Down => seconds.floor() as u64,
            Rounding::Up => seconds.ceil() as u64,
        }),
        _ => Err(invalid),
    }
}

/// Checks that `aud` (a string or an array of strings) contains the provider's audience.
fn check_audience(aud: Option<&Value>, audience: &str) -> Result<(), JwtError> {
    let invalid = JwtError::InvalidClaim {
        claim: "aud",
        reason: "must be a string or an array of strings",
    };
    match aud {
        None => Err(JwtError::MissingClaim("aud")),
        Some(Value::String(aud)) if aud == audience => Ok(()),
        Some(Value::String(_)) => Err(JwtError::WrongAudience),
        Some(Value::Array(items)) => {
            let mut found = false;
            for item in items {
                match item {
                    Value::String(aud) => found |= aud == audience,
                    _ => return Err(invalid),
                }
            }
            if found {
                Ok(())
            } else {
                Err(JwtError::WrongAudience)
            }
        }
        Some(_) => Err(invalid),
    }
}

/// Reads `mqtt_publish` or `mqtt_subscribe`; when absent the subject's own tree `{sub}/#`.
fn topic_patterns(
    claims: &Map<String, Value>,
    claim: &'static str,
    subject: &str,
) -> Result<Vec<String>, JwtError> {
    let items = match claims.get(claim) {
        None => {
            // The subject becomes the first topic level: a wildcard or separator in it would
            // grant far more (or other) topics than the subject's own.
            if subject.contains(['+', '#', '/', '\0']) {
                return Err(JwtError::SubjectNotTopicLevel { claim });
            }
            let pattern = format!("{subject}/#");
            validate_filter(&pattern, PATTERN_LEVELS_MAX).map_err(|error| {
                JwtError::InvalidPattern {
                    claim,
                    index: 0,
                    error,
                }
            })?;
            return Ok(vec![pattern]);
        }
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(JwtError::InvalidClaim {
                claim,
                reason: "must be an array of strings",
            })
        }
    };
    if items.len() > PATTERNS_MAX {
        return Err(JwtError::TooManyPatterns {
            claim,
            max: PATTERNS_MAX,
        });
    }
    let mut patterns = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let Value::String(pattern) = item else {
            return Err(JwtError::InvalidClaim {
                claim,
                reason: "must be an array of strings",
            });
        };
        if pattern.len() > PATTERN_BYTES_MAX {
            return Err(JwtError::PatternTooLong {
                claim,
                index,
                max: PATTERN_BYTES_MAX,
            });
        }
        // Identity providers often write the glob `x/*`; it means the MQTT `x/#`.
        let pattern = match pattern.strip_suffix("/*") {
            Some(prefix) => format!("{prefix}/#"),
            None => pattern.clone(),
        };
        validate_filter(&pattern, PATTERN_LEVELS_MAX).map_err(|error| {
            JwtError::InvalidPattern {
                claim,
                index,
                error,
            }
        })?;
        patterns.push(pattern);
    }
    Ok(patterns)
}

/// Parses an RS256 or ES256 public key, refusing keys that would parse but never verify.
fn public_key(algorithm: Algorithm, pem: &str) -> Result<DecodingKey, &'static str> {
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
fn pem_body(pem: &str) -> Result<(&str, Vec<u8>), &'static str> {
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
fn rsa_modulus_bits(der: &[u8], spki: bool) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    // Test-only keys generated with the openssl CLI for these tests; never used anywhere else.
    const RSA_PRIVATE: &str = include_str!("testdata/rsa_test_private.pem");
    const RSA_PUBLIC: &str = include_str!("testdata/rsa_test_public.pem");
    const RSA_OTHER_PUBLIC: &str = include_str!("testdata/rsa_other_public.pem");
    const RSA_PUBLIC_PKCS1: &str = include_str!("testdata/rsa_test_public_pkcs1.pem");
    const RSA_1024_PUBLIC: &str = include_str!("testdata/rsa_1024_public.pem");
    const EC_PRIVATE: &str = include_str!("testdata/ec_test_private.pem");
    const EC_PUBLIC: &str = include_str!("testdata/ec_test_public.pem");
    const EC_OTHER_PUBLIC: &str = include_str!("testdata/ec_other_public.pem");
    const EC_P384_PUBLIC: &str = include_str!("testdata/ec_p384_public.pem");

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
        assert!(
            verify_claims(claims().with_topics("mqtt_publish", json!(["a".repeat(256)]))).is_ok()
        );
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

        let other =
            Providers::new(&[pem_config("rsa", "RS256", RSA_OTHER_PUBLIC, ISSUER)]).unwrap();
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
        let verify =
            |claims: Value| providers.verify(&hs_token(&claims, SECRET), None, "default", NOW);
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
}
