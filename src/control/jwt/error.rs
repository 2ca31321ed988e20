//! Why a token or a provider configuration was refused: one variant per refusal, so callers and
//! logs can tell them apart without ever seeing the token.

use ringmq_router::topic::TopicError;

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
    /// An RS256 or ES256 provider with neither `public_key_pem` nor `jwks_url`.
    #[error("auth provider {provider:?}: {algorithm} needs public_key_pem or jwks_url")]
    MissingPublicKey {
        /// The provider's name.
        provider: String,
        /// The provider's algorithm.
        algorithm: &'static str,
    },
    /// An RS256 or ES256 provider with both `public_key_pem` and `jwks_url`.
    #[error("auth provider {provider:?}: set public_key_pem or jwks_url, not both")]
    TwoKeySources {
        /// The provider's name.
        provider: String,
    },
    /// `jwks_url` is not an `http://` or `https://` URL.
    #[error("auth provider {provider:?}: invalid jwks_url: {reason}")]
    InvalidJwksUrl {
        /// The provider's name.
        provider: String,
        /// What is wrong with the URL.
        reason: &'static str,
    },
    /// A key field the provider's algorithm does not use (`secret` with RS/ES, a PEM or a
    /// `jwks_url` with HS256).
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
    /// The provider's key set (`jwks_url`) could not be fetched or has no usable key, so no
    /// token of it can be checked now.
    #[error("auth provider {provider:?}: no key set to check the token with: {reason}")]
    KeySetUnavailable {
        /// The provider's name.
        provider: String,
        /// Why: the last fetch's error ("the key set could not be fetched: …"), or that the set
        /// has no usable key.
        reason: String,
    },
    /// The token's `kid` is not in the provider's key set (fetched again at most every 30 s).
    #[error("the token's kid is not in the key set of auth provider {provider:?}")]
    UnknownKeyId {
        /// The provider's name.
        provider: String,
    },
    /// The token has no `kid` and the provider's key set has several keys.
    #[error("the token has no kid and auth provider {provider:?} has several keys")]
    KeyIdRequired {
        /// The provider's name.
        provider: String,
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
