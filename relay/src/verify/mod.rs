//! Webhook authentication, on the raw request before anything is parsed or written, with the
//! credentials Vapi sends (its server SDK's credential plans):
//!
//! - **Bearer** (`BearerAuthenticationPlan`, Vapi's recommended credential): `Authorization:
//!   Bearer <token>`; the header name and the prefix are configurable, as in the plan;
//! - **legacy** `x-vapi-secret: <token>` (Vapi's inline `server.secret`, "for backward
//!   compatibility");
//! - **HMAC** (`HmacAuthenticationPlan`): a signature over a payload template of the body and a
//!   timestamp, every option of the plan (hmac.rs).
//!
//! A token is platform-wide (configured here) or a tenant's: one whose SHA-256 the database holds
//! for one org (tenants.rs). The [`Credential`] that verified a request goes to the database with
//! it, which refuses a tenant's credential writing another org. Every comparison is in constant
//! time; a secret never shows in `Debug` output or an error.
//!
//! Which scheme judges a request follows from its headers: a request that carries the HMAC
//! signature header is judged by its signature alone (a valid token beside a bad signature
//! does not pass, so a token cannot skip the replay window), and with `--require-hmac` nothing
//! else passes. In two steps, so that a body is not read before it can be:
//! [`Verifier::check_headers`] settles everything the headers alone can, and only a signature
//! needs [`Verifier::verify_body`] once its body is in.

mod hmac;
mod tenants;
mod token;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName};

pub use self::hmac::{
    sign, Algorithm, Encoding, HmacPlan, PayloadFormat, PlanError, PlanOptions, Signature, TimestampUnit,
    DEFAULT_TOLERANCE, MAX_TOLERANCE,
};
pub use self::tenants::TenantCredentials;
pub use self::token::{TokenScheme, BEARER_PREFIX};

/// The legacy credential's header.
pub const SECRET_HEADER: &str = "x-vapi-secret";
/// The defaults of Vapi's HMAC plan.
pub const SIGNATURE_HEADER: &str = "x-signature";
pub const TIMESTAMP_HEADER: &str = "x-timestamp";

/// Why a request was not authenticated. The message goes back to the client in the 401 body, so
/// it names what was wrong but never echoes a secret or the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing credentials: send {0}")]
    MissingCredentials(Arc<str>),

    #[error("a signature is required: send {0}")]
    SignatureRequired(HeaderName),

    #[error("missing header {0}")]
    MissingHeader(HeaderName),

    #[error("invalid header {0}")]
    InvalidHeader(HeaderName),

    #[error("invalid token")]
    InvalidToken,

    #[error("invalid signature")]
    InvalidSignature,

    #[error("signature timestamp too old")]
    TimestampTooOld,

    #[error("signature timestamp too far in the future")]
    TimestampInFuture,
}

/// A configured secret. Cloning is cheap; `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    pub fn new(value: impl AsRef<[u8]>) -> Self {
        Self(Arc::from(value.as_ref()))
    }

    /// The raw secret, for signing in tests and clients. Do not log it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl FromStr for Secret {
    type Err = String;

    /// Surrounding whitespace is dropped (a list is often written `a, b`); an empty secret would
    /// authenticate an empty header, so it is refused.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("a secret must not be empty".into());
        }
        Ok(Self::new(s))
    }
}

/// What verified a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A configured token or HMAC key: it may write any org.
    Platform,
    /// A tenant's token, by its SHA-256: it may write its own org only (the database checks).
    Tenant([u8; 32]),
}

impl Credential {
    /// `p_credential` of `voxanne.handle_vapi_message`.
    pub fn digest(&self) -> Option<&[u8]> {
        match self {
            Self::Platform => None,
            Self::Tenant(digest) => Some(digest),
        }
    }
}

/// What the headers of a request settle ([`Verifier::check_headers`]).
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderCheck {
    /// Authenticated by the headers alone (a token): the body is not needed.
    Passed(Credential),
    /// An HMAC signature, to verify over the body once it is read.
    NeedsBody(Signature),
}

/// Checks requests against the configured schemes.
#[derive(Debug)]
pub struct Verifier {
    bearer: TokenScheme,
    legacy: TokenScheme,
    hmac: Option<HmacPlan>,
    require_hmac: bool,
    tenants: Option<Arc<TenantCredentials>>,
    /// What a request without credentials is told to send.
    expected: Arc<str>,
}

impl Verifier {
    /// `tenants`: tenants' tokens are accepted too (their digests, as the database last gave
    /// them). With `require_hmac`, only a signature passes.
    pub fn new(
        bearer: TokenScheme,
        legacy: TokenScheme,
        hmac: Option<HmacPlan>,
        require_hmac: bool,
        tenants: Option<Arc<TenantCredentials>>,
    ) -> Self {
        let mut expected: Vec<String> = Vec::new();
        if let Some(plan) = &hmac {
            expected.push(plan.describe());
        }
        if !require_hmac {
            for scheme in [&bearer, &legacy] {
                if scheme.has_tokens() || tenants.is_some() {
                    expected.push(scheme.describe());
                }
            }
        }
        let expected =
            if expected.is_empty() { "nothing: no credential is configured".into() } else { expected.join(", or ") };
        Self { bearer, legacy, hmac, require_hmac, tenants, expected: expected.into() }
    }

    /// The tenants' credentials this verifier reads, for refreshing them.
    pub fn tenants(&self) -> Option<&Arc<TenantCredentials>> {
        self.tenants.as_ref()
    }

    /// Every header a credential can be in: what an upstream gets as it came (upstream.rs), so
    /// the app can check Vapi's credential itself.
    pub fn credential_headers(&self) -> Vec<HeaderName> {
        let mut names = vec![self.bearer.header().clone(), self.legacy.header().clone()];
        if let Some(plan) = &self.hmac {
            names.extend(plan.headers());
        }
        names
    }

    /// Both steps at once, for a body already read.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Credential, VerifyError> {
        self.verify_at(headers, body, unix_now_ms())
    }

    pub fn verify_at(&self, headers: &HeaderMap, body: &[u8], now_ms: u64) -> Result<Credential, VerifyError> {
        match self.check_headers_at(headers, now_ms)? {
            HeaderCheck::Passed(credential) => Ok(credential),
            HeaderCheck::NeedsBody(signature) => self.verify_body(&signature, body),
        }
    }

    /// The first step, before the body is read: what the headers alone settle.
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<HeaderCheck, VerifyError> {
        self.check_headers_at(headers, unix_now_ms())
    }

    /// A signature whose timestamp is in the window still needs the body; a valid token passes
    /// here; anything else is refused without the body.
    pub fn check_headers_at(&self, headers: &HeaderMap, now_ms: u64) -> Result<HeaderCheck, VerifyError> {
        if let Some(plan) = &self.hmac {
            if headers.contains_key(plan.signature_header()) {
                return plan.signature_of(headers, now_ms).map(HeaderCheck::NeedsBody);
            }
            if self.require_hmac {
                return Err(VerifyError::SignatureRequired(plan.signature_header().clone()));
            }
        }
        let tenants = self.tenants.as_deref();
        let mut outcome = Err(VerifyError::MissingCredentials(self.expected.clone()));
        for scheme in [&self.bearer, &self.legacy] {
            // every present token header is tried: the first that verifies decides
            match scheme.check(headers, tenants) {
                None => {}
                Some(Ok(credential)) => return Ok(HeaderCheck::Passed(credential)),
                Some(Err(e)) => outcome = Err(e),
            }
        }
        outcome
    }

    /// The second step, for a request [`check_headers`](Self::check_headers) left to its body.
    pub fn verify_body(&self, signature: &Signature, body: &[u8]) -> Result<Credential, VerifyError> {
        match &self.hmac {
            Some(plan) => plan.verify(signature, body).map(|()| Credential::Platform),
            None => Err(VerifyError::InvalidSignature),
        }
    }
}

/// Milliseconds since the epoch: HMAC timestamps come in seconds or milliseconds.
pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Seconds since the epoch, as a sender signs with by default.
pub fn unix_now() -> u64 {
    unix_now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"message":{"type":"status-update","status":"ringing"}}"#;
    const NOW: u64 = 1_732_540_000;
    const NOW_MS: u64 = NOW * 1000;

    fn secrets(values: &[&str]) -> Vec<Secret> {
        values.iter().map(|v| v.parse().unwrap()).collect()
    }

    fn plan(keys: &[&str]) -> HmacPlan {
        HmacPlan::builder(secrets(keys)).build().unwrap()
    }

    fn verifier(bearer: &[&str], legacy: &[&str], hmac: Option<HmacPlan>, require_hmac: bool) -> Verifier {
        Verifier::new(
            TokenScheme::bearer(&secrets(bearer), "authorization".parse().unwrap(), true),
            TokenScheme::legacy(&secrets(legacy)),
            hmac,
            require_hmac,
            None,
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn signed(key: &str, ts: u64, body: &[u8]) -> HeaderMap {
        let ts = ts.to_string();
        let sig = hmac::sign(key.as_bytes(), &ts, body);
        headers(&[(TIMESTAMP_HEADER, &ts), (SIGNATURE_HEADER, &sig)])
    }

    #[test]
    fn a_bearer_token_passes_as_vapi_sends_it() {
        let v = verifier(&["tok-1"], &[], None, false);
        let check = |value: &str| v.verify_at(&headers(&[("authorization", value)]), BODY, NOW_MS);
        assert_eq!(check("Bearer tok-1"), Ok(Credential::Platform));
        // RFC 6750: the scheme name is case-insensitive
        assert_eq!(check("bearer tok-1"), Ok(Credential::Platform));
        for wrong in ["Bearer tok-2", "tok-1", "Bearer  tok-1", "Basic tok-1", "Bearer tok-1 "] {
            assert_eq!(check(wrong), Err(VerifyError::InvalidToken), "{wrong:?}");
        }
    }

    #[test]
    fn a_bearer_plan_without_prefix_and_with_its_own_header_passes() {
        let v = Verifier::new(
            TokenScheme::bearer(&secrets(&["tok-1"]), "x-relay-token".parse().unwrap(), false),
            TokenScheme::legacy(&[]),
            None,
            false,
            None,
        );
        assert_eq!(v.verify_at(&headers(&[("x-relay-token", "tok-1")]), BODY, NOW_MS), Ok(Credential::Platform));
        assert_eq!(
            v.verify_at(&headers(&[("x-relay-token", "Bearer tok-1")]), BODY, NOW_MS),
            Err(VerifyError::InvalidToken)
        );
        let missing = v.verify_at(&headers(&[("authorization", "Bearer tok-1")]), BODY, NOW_MS).unwrap_err();
        assert_eq!(missing.to_string(), "missing credentials: send x-relay-token: <token>");
    }

    #[test]
    fn the_legacy_secret_passes_and_wrong_ones_fail() {
        let v = verifier(&[], &["s3cret"], None, false);
        assert_eq!(v.verify_at(&headers(&[(SECRET_HEADER, "s3cret")]), BODY, NOW_MS), Ok(Credential::Platform));
        for wrong in ["s3cre", "s3cret ", "S3CRET", "s3cret-and-more", "x"] {
            assert_eq!(
                v.verify_at(&headers(&[(SECRET_HEADER, wrong)]), BODY, NOW_MS),
                Err(VerifyError::InvalidToken),
                "{wrong}"
            );
        }
    }

    #[test]
    fn missing_credentials_name_what_to_send() {
        let v = verifier(&["t"], &["s"], Some(plan(&["k"])), false);
        let err = v.verify_at(&HeaderMap::new(), BODY, NOW_MS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing credentials: send x-signature with x-timestamp, or authorization: Bearer <token>, or x-vapi-secret: <token>"
        );
        // a token is no credential when only HMAC is configured
        let v = verifier(&[], &[], Some(plan(&["k"])), false);
        assert!(matches!(v.verify_at(&headers(&[(SECRET_HEADER, "k")]), BODY, NOW_MS), Err(VerifyError::InvalidToken)));
        let none = verifier(&[], &[], None, false);
        assert!(matches!(
            none.verify_at(&headers(&[(SECRET_HEADER, "")]), BODY, NOW_MS),
            Err(VerifyError::InvalidToken)
        ));
        assert!(matches!(none.verify_at(&HeaderMap::new(), BODY, NOW_MS), Err(VerifyError::MissingCredentials(_))));
    }

    #[test]
    fn rotation_accepts_every_listed_token_and_key() {
        let v = verifier(
            &["old-tok", "new-tok"],
            &["old-secret", "new-secret"],
            Some(plan(&["old-key", "new-key"])),
            false,
        );
        for t in ["old-tok", "new-tok"] {
            let bearer = format!("Bearer {t}");
            assert_eq!(v.verify_at(&headers(&[("authorization", &bearer)]), BODY, NOW_MS), Ok(Credential::Platform));
        }
        for s in ["old-secret", "new-secret"] {
            assert_eq!(v.verify_at(&headers(&[(SECRET_HEADER, s)]), BODY, NOW_MS), Ok(Credential::Platform));
        }
        for k in ["old-key", "new-key"] {
            assert_eq!(v.verify_at(&signed(k, NOW, BODY), BODY, NOW_MS), Ok(Credential::Platform));
        }
        assert_eq!(v.verify_at(&signed("retired-key", NOW, BODY), BODY, NOW_MS), Err(VerifyError::InvalidSignature));
    }

    /// Security review #11: a valid token used to pass beside any signature, so whoever knew the
    /// token skipped the signature's replay window.
    #[test]
    fn a_signature_is_judged_alone_and_require_hmac_refuses_tokens() {
        let v = verifier(&[], &["s"], Some(plan(&["k"])), false);
        let mut bad = signed("wrong", NOW, BODY);
        bad.insert(SECRET_HEADER, "s".parse().unwrap());
        assert_eq!(v.verify_at(&bad, BODY, NOW_MS), Err(VerifyError::InvalidSignature));
        let mut stale = signed("k", NOW - 301, BODY);
        stale.insert(SECRET_HEADER, "s".parse().unwrap());
        assert_eq!(v.verify_at(&stale, BODY, NOW_MS), Err(VerifyError::TimestampTooOld));
        assert_eq!(v.verify_at(&headers(&[(SECRET_HEADER, "s")]), BODY, NOW_MS), Ok(Credential::Platform));

        let strict = verifier(&[], &["s"], Some(plan(&["k"])), true);
        assert_eq!(
            strict.verify_at(&headers(&[(SECRET_HEADER, "s")]), BODY, NOW_MS),
            Err(VerifyError::SignatureRequired(SIGNATURE_HEADER.parse().unwrap()))
        );
        assert_eq!(strict.verify_at(&signed("k", NOW, BODY), BODY, NOW_MS), Ok(Credential::Platform));
    }

    #[test]
    fn headers_alone_settle_everything_but_a_signature() {
        let v = verifier(&[], &["s"], Some(plan(&["k"])), false);
        let check = |h: &HeaderMap| v.check_headers_at(h, NOW_MS);
        assert_eq!(check(&headers(&[(SECRET_HEADER, "s")])), Ok(HeaderCheck::Passed(Credential::Platform)));
        assert_eq!(check(&headers(&[(SECRET_HEADER, "x")])), Err(VerifyError::InvalidToken));
        let stale = signed("k", NOW - 301, BODY);
        assert_eq!(check(&stale), Err(VerifyError::TimestampTooOld));
        let ts = NOW.to_string();
        let not_hex = headers(&[(TIMESTAMP_HEADER, &ts), (SIGNATURE_HEADER, "zz")]);
        assert_eq!(check(&not_hex), Err(VerifyError::InvalidSignature));
        let Ok(HeaderCheck::NeedsBody(signature)) = check(&signed("k", NOW, BODY)) else {
            panic!("a signature needs its body")
        };
        assert_eq!(v.verify_body(&signature, BODY), Ok(Credential::Platform));
        assert_eq!(v.verify_body(&signature, b"{}"), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn a_tenant_token_passes_as_its_digest_and_an_unknown_one_fails() {
        let tenants = Arc::new(TenantCredentials::new());
        let token = "tenant-token-0123456789abcdef0123456789";
        let digest = token::digest(token.as_bytes());
        tenants.replace([digest.to_vec()]);
        let v = Verifier::new(
            TokenScheme::bearer(&secrets(&["platform"]), "authorization".parse().unwrap(), true),
            TokenScheme::legacy(&[]),
            None,
            false,
            Some(tenants),
        );
        let bearer = format!("Bearer {token}");
        assert_eq!(v.verify_at(&headers(&[("authorization", &bearer)]), BODY, NOW_MS), Ok(Credential::Tenant(digest)));
        // the legacy header carries a tenant's token as well (a Bearer plan with that header)
        assert_eq!(v.verify_at(&headers(&[(SECRET_HEADER, token)]), BODY, NOW_MS), Ok(Credential::Tenant(digest)));
        assert_eq!(
            v.verify_at(&headers(&[("authorization", "Bearer platform")]), BODY, NOW_MS),
            Ok(Credential::Platform)
        );
        assert_eq!(
            v.verify_at(&headers(&[("authorization", "Bearer someone-else")]), BODY, NOW_MS),
            Err(VerifyError::InvalidToken)
        );
    }

    #[test]
    fn secrets_are_redacted_and_never_empty() {
        let s: Secret = "  hunter2 ".parse().unwrap();
        assert_eq!(s.expose(), b"hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        let v = verifier(&["hunter2"], &["hunter2"], Some(plan(&["hunter2"])), false);
        assert!(!format!("{v:?}").contains("hunter2"));
        assert!("".parse::<Secret>().is_err());
        assert!("   ".parse::<Secret>().is_err());
    }
}
