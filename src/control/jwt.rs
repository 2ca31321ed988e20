//! Token-exchange JWT verification (to be written).

/// One configured auth provider (`[[auth.providers]]` in the config).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name used to pick the provider in a token-exchange request.
    pub name: String,
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

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
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
    /// Placeholder until the module is written.
    #[error("token exchange is not configured")]
    NotConfigured,
}

/// The configured providers, with their keys parsed.
#[derive(Debug, Default)]
pub struct Providers {}

impl Providers {
    /// Parses the configured providers; errors name the bad provider.
    pub fn new(configs: &[ProviderConfig]) -> Result<Providers, JwtError> {
        let _ = configs;
        Ok(Providers {})
    }

    /// Verifies `token` (against `provider` by name, or the one whose issuer matches).
    pub fn verify(
        &self,
        token: &str,
        provider: Option<&str>,
        now_unix: u64,
    ) -> Result<Verified, JwtError> {
        let _ = (token, provider, now_unix);
        Err(JwtError::NotConfigured)
    }
}
