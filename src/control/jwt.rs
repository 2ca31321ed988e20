//! Token-exchange JWT verification: HS256, RS256 and ES256 tokens checked against the configured
//! auth providers, turned into the subject, expiry and topic patterns the new credentials get.
//!
//! Signatures are checked by `jsonwebtoken`; every claim is checked here against the caller's
//! `now_unix` so that the result never depends on the system clock and every refusal has its own
//! error. Errors never contain the token or any of its claims.
//!
//! - `provider`: one provider's configuration checked and a token verified against it.
//! - `claims`: reading the token's parts and claims (dates, audience, topic patterns).
//! - `key`: RS256 / ES256 public keys from PEM, refusing keys that could never verify.
//! - `jwks`: the key sets of `jwks_url` providers, fetched, cached and refreshed.
//! - `error`: [`JwtError`], one variant per refusal.

mod claims;
mod error;
mod jwks;
mod key;
mod provider;

use serde_json::Value;

use claims::{decode_part, split_token};
use provider::{alg_name, Provider};

pub use claims::filter_within;
pub use error::JwtError;

/// Longest token looked at: anything bigger is not a token we issue credentials for, and the
/// limit bounds the base64 and JSON work done before the signature is checked.
const TOKEN_BYTES_MAX: usize = 16 * 1024;
/// Longest a token may still be valid when exchanged: exchanged token ids are remembered until
/// the token expires, so this bounds how long (and, with the per-org exchange rate, how many).
pub const TOKEN_LIFETIME_MAX: u64 = 24 * 3600;

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
    /// URL (`http://` or `https://`) of the provider's JSON Web Key Set, for RS256 / ES256
    /// instead of `public_key_pem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
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

/// The configured providers, with their keys parsed.
#[derive(Debug, Default)]
pub struct Providers {
    providers: Vec<Provider>,
}

impl Providers {
    /// Parses the configured providers; errors name the bad provider. Key sets of `jwks_url` providers are fetched on their first token, so
    /// an identity provider that is down does not stop the broker from starting.
    pub fn new(configs: &[ProviderConfig]) -> Result<Providers, JwtError> {
        Providers::with_fetcher(configs, jwks::http_fetcher())
    }

    /// As [`Providers::new`], fetching key sets with `fetch`.
    fn with_fetcher(
        configs: &[ProviderConfig],
        fetch: jwks::Fetcher,
    ) -> Result<Providers, JwtError> {
        let mut providers: Vec<Provider> = Vec::with_capacity(configs.len());
        for config in configs {
            if providers.iter().any(|p| p.name == config.name) {
                return Err(JwtError::DuplicateProvider {
                    provider: config.name.clone(),
                });
            }
            providers.push(Provider::new(config, &fetch)?);
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
        // Picks the key of a `jwks_url` provider; a static key ignores it.
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(JwtError::Malformed("header kid is not a string")),
        };

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
            match candidate.verify(token, kid, now_unix) {
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

#[cfg(test)]
mod jwks_tests;
#[cfg(test)]
mod tests;
