//! Keys of a provider configured with `jwks_url`: the identity provider's JSON Web Key Set,
//! fetched over HTTP(S) by the control thread (token exchange runs there; shards never fetch),
//! kept, and fetched again when a token names a `kid` the set lacks or the set is old. Both
//! refreshes are rate-limited per provider, so a stream of tokens with made-up `kid`s cannot make
//! the broker hammer the identity provider, and the broker starts without the set: it is fetched
//! on the first token.

use std::io::Read as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::key::RSA_BITS;
use super::provider::alg_name;
use super::JwtError;

/// Largest key-set response read: real sets are a few KiB (a 4096-bit RSA key is under 1 KiB of
/// JSON), and anything bigger is refused instead of being buffered on the control thread.
pub(super) const JWKS_BYTES_MAX: usize = 64 * 1024;
/// Most keys kept per provider: identity providers publish a handful (current, next, previous);
/// the bound caps memory and the linear `kid` lookup. Keys past it are dropped with a warning.
pub(super) const JWKS_KEYS_MAX: usize = 32;
/// Fewest seconds between two fetches of one provider's set, whatever asks for them (an unknown
/// `kid`, the set's age, a failed fetch): every token with a made-up `kid` could otherwise make
/// the control thread wait on the identity provider.
pub(super) const REFRESH_INTERVAL_MIN: u64 = 30;
/// Age in seconds after which the set is fetched again before it is used: a key the identity
/// provider withdrew (rotated out, compromised) stops being accepted within this time.
pub(super) const KEYS_AGE_MAX: u64 = 600;
/// How long, in seconds, the keys of the last good fetch are still used while fetches fail: rides
/// out an identity-provider outage without trusting a possibly withdrawn key forever.
pub(super) const KEYS_STALE_MAX: u64 = 24 * 3600;
/// Longest `jwks_url` accepted; real ones are well under 200 bytes.
const URL_BYTES_MAX: usize = 2048;
/// Time to open the TCP connection: an identity provider that does not answer the SYN in 2 s is
/// down, and the control thread (which serves the whole management API) waits meanwhile.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for the whole fetch (connect, TLS, request, response body): the longest a token exchange
/// (and the control thread) waits on the identity provider. Name resolution is not interruptible
/// and may add to it.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a key set could not be fetched or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum JwksError {
    /// No HTTP response: DNS, connect, TLS or a timeout.
    #[error("{0}")]
    Transport(String),
    /// An HTTP response other than 200 (redirects are not followed).
    #[error("HTTP status {0} (want 200; redirects are not followed)")]
    Status(u16),
    /// The response is longer than [`JWKS_BYTES_MAX`].
    #[error("the response is larger than {max} bytes")]
    TooLarge {
        /// The bound in bytes.
        max: usize,
    },
    /// The response is not a JSON object with a `keys` array.
    #[error("the response is not a JSON key set (an object with a \"keys\" array)")]
    NotJwks,
}

/// Fetches the body of a key-set URL: HTTP(S) in the broker, canned sets in tests.
pub(super) type Fetcher = Arc<dyn Fn(&str) -> Result<Vec<u8>, JwksError> + Send + Sync>;

/// The fetcher the broker uses: `ureq` with the timeouts above, at most [`JWKS_BYTES_MAX`] bytes.
pub(super) fn http_fetcher() -> Fetcher {
    Arc::new(http_get)
}

fn http_get(url: &str) -> Result<Vec<u8>, JwksError> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(CONNECT_TIMEOUT)
        .timeout(FETCH_TIMEOUT)
        // The configured URL is the one trusted; a redirect elsewhere is the operator's to follow.
        .redirects(0)
        .build();
    let response = match agent.get(url).set("Accept", "application/json").call() {
        Ok(response) => response,
        Err(ureq::Error::Status(status, _)) => return Err(JwksError::Status(status)),
        Err(ureq::Error::Transport(error)) => return Err(JwksError::Transport(error.to_string())),
    };
    if response.status() != 200 {
        return Err(JwksError::Status(response.status()));
    }
    let mut body = Vec::new();
    // One byte past the bound tells a response at the bound from a longer one.
    response
        .into_reader()
        .take(JWKS_BYTES_MAX as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|error| JwksError::Transport(format!("reading the response: {error}")))?;
    if body.len() > JWKS_BYTES_MAX {
        return Err(JwksError::TooLarge {
            max: JWKS_BYTES_MAX,
        });
    }
    Ok(body)
}

/// Checks a configured `jwks_url`: an `http://` or `https://` URL with a host.
pub(super) fn check_url(url: &str) -> Result<(), &'static str> {
    if url.len() > URL_BYTES_MAX {
        return Err("longer than 2048 bytes");
    }
    let lower = url.to_ascii_lowercase();
    if !lower.starts_with("https://") && !lower.starts_with("http://") {
        return Err("must be an http:// or https:// URL");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters");
    }
    let parsed = ureq::get(url)
        .request_url()
        .map_err(|_| "not a valid URL")?;
    if parsed.host().is_empty() {
        return Err("has no host");
    }
    Ok(())
}

/// One provider's key set: where it comes from and what was last fetched.
pub(super) struct Jwks {
    url: String,
    algorithm: Algorithm,
    fetch: Fetcher,
    // A Mutex only for interior mutability: `Providers::verify` takes `&self` and runs on the
    // control thread alone, so it is never contended.
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// What the last fetches left. Times are the caller's unix seconds.
#[derive(Default)]
struct Cache {
    /// The usable keys of the last good fetch, with their `kid`s.
    keys: Vec<(Option<String>, DecodingKey)>,
    /// When the last good fetch was.
    fetched_at: Option<u64>,
    /// When the last fetch was tried, good or not: the rate limit counts from it.
    tried_at: Option<u64>,
    /// Why the last fetch failed, if it did.
    error: Option<String>,
}

/// Seconds from `then` to `now`; a clock that went back counts as long ago, so that a clock
/// step never holds a refresh back for the size of the step.
fn since(now: u64, then: u64) -> u64 {
    now.checked_sub(then).unwrap_or(u64::MAX)
}

impl Cache {
    /// The rate limit: no fetch within [`REFRESH_INTERVAL_MIN`] of the last one.
    fn may_fetch(&self, now: u64) -> bool {
        self.tried_at
            .is_none_or(|tried| since(now, tried) >= REFRESH_INTERVAL_MIN)
    }

    /// True when the set was never fetched or is older than [`KEYS_AGE_MAX`].
    fn old(&self, now: u64) -> bool {
        self.fetched_at
            .is_none_or(|fetched| since(now, fetched) >= KEYS_AGE_MAX)
    }

    /// Forgets keys older than [`KEYS_STALE_MAX`] (only kept while fetches fail).
    fn drop_stale(&mut self, now: u64) {
        if self
            .fetched_at
            .is_some_and(|fetched| now.saturating_sub(fetched) > KEYS_STALE_MAX)
        {
            self.keys.clear();
        }
    }
}

/// What a lookup in the cached keys found.
enum Found<'a> {
    Key(&'a DecodingKey),
    /// No key for the token (its `kid` is not in the set, or the set is empty).
    Missing,
    /// The token has no `kid` and the set has several keys.
    Ambiguous,
}

impl Jwks {
    /// A key set fetched from `url` with `fetch`, holding keys for `algorithm` only.
    pub(super) fn new(url: &str, algorithm: Algorithm, fetch: Fetcher) -> Jwks {
        Jwks {
            url: url.to_owned(),
            algorithm,
            fetch,
            cache: Mutex::default(),
        }
    }

    /// The configured URL of the set.
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// The key to check a token of `provider` with `kid` against, fetching the set first when it
    /// is missing, old, or lacks `kid` (each at most once per [`REFRESH_INTERVAL_MIN`]).
    pub(super) fn key(
        &self,
        provider: &str,
        kid: Option<&str>,
        now: u64,
    ) -> Result<DecodingKey, JwtError> {
        let mut cache = self.lock();
        let mut fetched = false;
        if cache.old(now) && cache.may_fetch(now) {
            self.refresh(&mut cache, provider, now);
            fetched = true;
        }
        cache.drop_stale(now);
        loop {
            match find(&cache.keys, kid) {
                Found::Key(key) => return Ok(key.clone()),
                // Fetching again cannot make a kid-less token choose between keys.
                Found::Ambiguous => {
                    return Err(JwtError::KeyIdRequired {
                        provider: provider.to_owned(),
                    })
                }
                Found::Missing if !fetched && cache.may_fetch(now) => {
                    // A kid we do not know may be a key the provider just rotated in.
                    self.refresh(&mut cache, provider, now);
                    fetched = true;
                    cache.drop_stale(now);
                }
                Found::Missing => return Err(self.missing(&cache, provider, kid)),
            }
        }
    }

    /// The error for a token no cached key fits.
    fn missing(&self, cache: &Cache, provider: &str, kid: Option<&str>) -> JwtError {
        let provider = provider.to_owned();
        if cache.keys.is_empty() {
            let reason = match &cache.error {
                Some(error) => format!("the key set could not be fetched: {error}"),
                None => format!(
                    "the fetched key set has no usable {} key",
                    alg_name(self.algorithm)
                ),
            };
            return JwtError::KeySetUnavailable { provider, reason };
        }
        match kid {
            Some(_) => JwtError::UnknownKeyId { provider },
            None => JwtError::KeyIdRequired { provider },
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        // A panic while holding the lock leaves a cache that is still consistent (each field is
        // written whole), so a poisoned lock is taken over rather than panicking again.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fetches the set once; on failure the keys of the last good fetch stay.
    fn refresh(&self, cache: &mut Cache, provider: &str, now: u64) {
        cache.tried_at = Some(now);
        let result = (self.fetch)(&self.url).and_then(|body| parse_set(&body, self.algorithm));
        match result {
            Ok(set) => {
                let kids = |keys: &[(Option<String>, DecodingKey)]| -> Vec<Option<String>> {
                    keys.iter().map(|(kid, _)| kid.clone()).collect()
                };
                if set.keys.is_empty() || set.dropped > 0 {
                    tracing::warn!(
                        provider,
                        url = %self.url,
                        kept = set.keys.len(),
                        skipped = set.skipped,
                        dropped_past_max = set.dropped,
                        "auth provider key set: few usable keys (others are of another \
                         algorithm or use, unusable, repeat a kid, or exceed the maximum)"
                    );
                } else if cache.fetched_at.is_none() || kids(&cache.keys) != kids(&set.keys) {
                    // Logged when the keys change, not at every periodic refresh.
                    tracing::info!(
                        provider,
                        url = %self.url,
                        keys = set.keys.len(),
                        skipped = set.skipped,
                        "auth provider key set fetched"
                    );
                }
                cache.keys = set.keys;
                cache.fetched_at = Some(now);
                cache.error = None;
            }
            Err(error) => {
                tracing::warn!(
                    provider,
                    url = %self.url,
                    %error,
                    retry_after_secs = REFRESH_INTERVAL_MIN,
                    "auth provider key set could not be fetched"
                );
                cache.error = Some(error.to_string());
            }
        }
    }

    /// The number of cached keys (tests).
    #[cfg(test)]
    pub(super) fn cached_keys(&self) -> usize {
        self.lock().keys.len()
    }
}

/// The key for `kid`, or the only key for a token without one.
fn find<'a>(keys: &'a [(Option<String>, DecodingKey)], kid: Option<&str>) -> Found<'a> {
    match kid {
        Some(kid) => keys
            .iter()
            .find(|(id, _)| id.as_deref() == Some(kid))
            .map_or(Found::Missing, |(_, key)| Found::Key(key)),
        None => match keys {
            [] => Found::Missing,
            [(_, key)] => Found::Key(key),
            _ => Found::Ambiguous,
        },
    }
}

/// A parsed key set: the usable keys and how many were left out.
pub(super) struct KeySet {
    pub(super) keys: Vec<(Option<String>, DecodingKey)>,
    /// Keys not usable with the provider's algorithm, or repeating a `kid`.
    pub(super) skipped: usize,
    /// Usable keys past [`JWKS_KEYS_MAX`].
    pub(super) dropped: usize,
}

/// Reads a JWKS response: the keys usable with `algorithm`, at most [`JWKS_KEYS_MAX`].
pub(super) fn parse_set(body: &[u8], algorithm: Algorithm) -> Result<KeySet, JwksError> {
    /// Each key is read on its own: one key `jsonwebtoken` does not know (another key type or
    /// algorithm) must not make the whole set unreadable.
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    if body.len() > JWKS_BYTES_MAX {
        return Err(JwksError::TooLarge {
            max: JWKS_BYTES_MAX,
        });
    }
    let raw: RawSet = serde_json::from_slice(body).map_err(|_| JwksError::NotJwks)?;
    let mut set = KeySet {
        keys: Vec::new(),
        skipped: 0,
        dropped: 0,
    };
    for value in raw.keys {
        let usable = serde_json::from_value::<Jwk>(value)
            .ok()
            .and_then(|jwk| usable_key(&jwk, algorithm).map(|key| (jwk.common.key_id, key)));
        let Some((kid, key)) = usable else {
            set.skipped += 1;
            continue;
        };
        // Two keys under one kid: the first is kept, as a token could only name one.
        if kid.is_some() && set.keys.iter().any(|(id, _)| *id == kid) {
            set.skipped += 1;
            continue;
        }
        if set.keys.len() == JWKS_KEYS_MAX {
            set.dropped += 1;
            continue;
        }
        set.keys.push((kid, key));
    }
    Ok(set)
}

/// The key of `jwk` when it can verify `algorithm` signatures: a signing key (`use`, `key_ops`)
/// of the algorithm (`alg` when given), and of a type and size `ring` verifies with.
fn usable_key(jwk: &Jwk, algorithm: Algorithm) -> Option<DecodingKey> {
    let common = &jwk.common;
    if common
        .public_key_use
        .as_ref()
        .is_some_and(|key_use| *key_use != PublicKeyUse::Signature)
    {
        return None;
    }
    if common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let wanted = match algorithm {
        Algorithm::RS256 => KeyAlgorithm::RS256,
        Algorithm::ES256 => KeyAlgorithm::ES256,
        _ => return None,
    };
    if common.key_algorithm.is_some_and(|alg| alg != wanted) {
        return None;
    }
    match (&jwk.algorithm, algorithm) {
        (AlgorithmParameters::RSA(rsa), Algorithm::RS256) => {
            let modulus = URL_SAFE_NO_PAD.decode(&rsa.n).ok()?;
            let exponent = URL_SAFE_NO_PAD.decode(&rsa.e).ok()?;
            // Leading zero bytes carry no bits; ring verifies 2048 to 8192-bit moduli only, so
            // another size would refuse every token.
            let first = modulus.iter().position(|&b| b != 0)?;
            let bits = (modulus.len() - first) * 8 - modulus[first].leading_zeros() as usize;
            if !RSA_BITS.contains(&bits) || exponent.is_empty() {
                return None;
            }
        }
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            // ES256 is defined on P-256 alone: coordinates of 32 bytes each.
            if ec.curve != EllipticCurve::P256 {
                return None;
            }
            let x = URL_SAFE_NO_PAD.decode(&ec.x).ok()?;
            let y = URL_SAFE_NO_PAD.decode(&ec.y).ok()?;
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
        }
        _ => return None,
    }
    DecodingKey::from_jwk(jwk).ok()
}
