//! Webhook authentication, svix-style: verification runs on the raw body bytes before anything
//! is parsed or written, every comparison is constant-time, signed requests carry a timestamp that
//! must fall inside a tolerance window (replays), and secrets never show up in `Debug` output.
//!
//! Two modes, either or both configured:
//! - shared secret: header `x-vapi-secret` must equal one of the configured secrets (a list, so a
//!   secret can be rotated without downtime);
//! - HMAC: header `x-signature` is the hex HMAC-SHA256 of `"{x-timestamp}.{raw body}"` under one of
//!   the configured HMAC secrets, and `x-timestamp` (unix seconds) is within the tolerance.
//!
//! In two steps, so that a request is not read before it can be: [`Verifier::check_headers`] settles
//! everything the headers alone can (the shared secret, the signature's timestamp window), and
//! only a request carrying an HMAC signature needs [`Verifier::verify_body`] once its body is in.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

pub const SECRET_HEADER: &str = "x-vapi-secret";
pub const SIGNATURE_HEADER: &str = "x-signature";
pub const TIMESTAMP_HEADER: &str = "x-timestamp";

/// Every header the verifier reads: the request's credential. The upstream gets them as they
/// came (upstream.rs), so the app can check Vapi's credential itself.
pub const CREDENTIAL_HEADERS: [&str; 3] = [SECRET_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER];

/// Replay window for signed requests, as svix uses.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

type HmacSha256 = Hmac<Sha256>;

/// Why a request was not authenticated. The message goes back to the client in the 401 body, so
/// it names what was wrong but never echoes a secret or the expected signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing credentials: send {SECRET_HEADER}, or {SIGNATURE_HEADER} with {TIMESTAMP_HEADER}")]
    MissingCredentials,

    #[error("missing header {0}")]
    MissingHeader(&'static str),

    #[error("invalid header {0}")]
    InvalidHeader(&'static str),

    #[error("invalid secret")]
    InvalidSecret,

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

/// What the headers of a request settle ([`Verifier::check_headers`]).
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderCheck {
    /// Authenticated by the headers alone (a valid shared secret): the body is not needed.
    Passed,
    /// An HMAC signature, to verify over the body once it is read.
    NeedsBody(Signature),
}

/// A request's signature whose timestamp is inside the window; not yet checked against a body.
#[derive(Debug, PartialEq, Eq)]
pub struct Signature {
    timestamp: String,
    bytes: Vec<u8>,
}

/// Checks requests against the configured secrets.
pub struct Verifier {
    /// SHA-256 of each shared secret: comparing fixed-length digests means the comparison time
    /// depends on neither the secret's length nor its content.
    secret_digests: Vec<[u8; 32]>,
    hmac_secrets: Vec<Secret>,
    tolerance: Duration,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.secret_digests.len())
            .field("hmac_secrets", &self.hmac_secrets.len())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl Verifier {
    pub fn new(secrets: &[Secret], hmac_secrets: &[Secret], tolerance: Duration) -> Self {
        Self {
            secret_digests: secrets.iter().map(|s| digest(s.expose())).collect(),
            hmac_secrets: hmac_secrets.to_vec(),
            tolerance,
        }
    }

    /// Both steps at once, for a body already read.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
        self.verify_at(headers, body, unix_now())
    }

    /// A request passes when any configured mode whose header it carries verifies. When it
    /// carries several and all fail, the first mode's error (HMAC) is reported.
    pub fn verify_at(&self, headers: &HeaderMap, body: &[u8], now: u64) -> Result<(), VerifyError> {
        match self.check_headers_at(headers, now)? {
            HeaderCheck::Passed => Ok(()),
            HeaderCheck::NeedsBody(signature) => self.verify_body(&signature, body),
        }
    }

    /// The first step, before the body is read: what the headers alone settle.
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<HeaderCheck, VerifyError> {
        self.check_headers_at(headers, unix_now())
    }

    /// A valid shared secret passes here. A signature whose timestamp is in the window, whose
    /// hex decodes, still needs the body; anything else is refused without it.
    pub fn check_headers_at(&self, headers: &HeaderMap, now: u64) -> Result<HeaderCheck, VerifyError> {
        let signed = !self.hmac_secrets.is_empty() && headers.contains_key(SIGNATURE_HEADER);
        let shared = !self.secret_digests.is_empty() && headers.contains_key(SECRET_HEADER);
        if !signed && !shared {
            return Err(VerifyError::MissingCredentials);
        }
        let signature = signed.then(|| self.signature_of(headers, now));
        if shared {
            match (self.verify_secret(headers), &signature) {
                (Ok(()), _) => return Ok(HeaderCheck::Passed),
                (Err(e), None) => return Err(e),
                // the signature's error is the one reported
                (Err(_), Some(_)) => {}
            }
        }
        signature.expect("signed, or returned above").map(HeaderCheck::NeedsBody)
    }

    /// The second step, for a request [`check_headers`](Self::check_headers) left to its body.
    pub fn verify_body(&self, signature: &Signature, body: &[u8]) -> Result<(), VerifyError> {
        let valid = self.hmac_secrets.iter().any(|secret| {
            // verify_slice compares in constant time
            mac(secret.expose(), &signature.timestamp, body).verify_slice(&signature.bytes).is_ok()
        });
        if valid {
            Ok(())
        } else {
            Err(VerifyError::InvalidSignature)
        }
    }

    fn verify_secret(&self, headers: &HeaderMap) -> Result<(), VerifyError> {
        let presented = headers.get(SECRET_HEADER).ok_or(VerifyError::MissingHeader(SECRET_HEADER))?;
        let presented = digest(presented.as_bytes());
        // No early exit: every configured secret is compared.
        let matched =
            self.secret_digests.iter().fold(Choice::from(0), |acc, expected| acc | expected.ct_eq(&presented));
        if bool::from(matched) {
            Ok(())
        } else {
            Err(VerifyError::InvalidSecret)
        }
    }

    /// The signature's parts that need no body: its timestamp in the window, its hex.
    fn signature_of(&self, headers: &HeaderMap, now: u64) -> Result<Signature, VerifyError> {
        let timestamp = header_str(headers, TIMESTAMP_HEADER)?;
        let ts: i64 = timestamp.parse().map_err(|_| VerifyError::InvalidHeader(TIMESTAMP_HEADER))?;
        self.check_timestamp(ts, now)?;

        let signature = header_str(headers, SIGNATURE_HEADER)?;
        let bytes = hex::decode(signature.trim()).map_err(|_| VerifyError::InvalidSignature)?;
        Ok(Signature { timestamp: timestamp.to_string(), bytes })
    }

    fn check_timestamp(&self, ts: i64, now: u64) -> Result<(), VerifyError> {
        // Timestamps before 1970 are not honoured.
        let ts = u64::try_from(ts).map_err(|_| VerifyError::TimestampTooOld)?;
        let tolerance = self.tolerance.as_secs();
        if ts.saturating_add(tolerance) < now {
            Err(VerifyError::TimestampTooOld)
        } else if ts > now.saturating_add(tolerance) {
            Err(VerifyError::TimestampInFuture)
        } else {
            Ok(())
        }
    }
}

/// The hex signature a sender puts in `x-signature` for this timestamp header value and body.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn digest(value: &[u8]) -> [u8; 32] {
    Sha256::digest(value).into()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, VerifyError> {
    headers.get(name).ok_or(VerifyError::MissingHeader(name))?.to_str().map_err(|_| VerifyError::InvalidHeader(name))
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"message":{"type":"status-update","status":"ringing"}}"#;
    const NOW: u64 = 1_732_540_000;

    fn secrets(values: &[&str]) -> Vec<Secret> {
        values.iter().map(|v| v.parse().unwrap()).collect()
    }

    fn shared(values: &[&str]) -> Verifier {
        Verifier::new(&secrets(values), &[], DEFAULT_TOLERANCE)
    }

    fn hmac_only(values: &[&str]) -> Verifier {
        Verifier::new(&[], &secrets(values), DEFAULT_TOLERANCE)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn signed(secret: &str, ts: u64, body: &[u8]) -> HeaderMap {
        let ts = ts.to_string();
        let sig = sign(secret.as_bytes(), &ts, body);
        headers(&[(TIMESTAMP_HEADER, &ts), (SIGNATURE_HEADER, &sig)])
    }

    #[test]
    fn valid_shared_secret_passes() {
        let v = shared(&["s3cret"]);
        assert_eq!(v.verify_at(&headers(&[(SECRET_HEADER, "s3cret")]), BODY, NOW), Ok(()));
    }

    #[test]
    fn wrong_shared_secret_fails() {
        let v = shared(&["s3cret"]);
        for wrong in ["s3cre", "s3cret ", "S3CRET", "s3cret-and-more", "x"] {
            assert_eq!(
                v.verify_at(&headers(&[(SECRET_HEADER, wrong)]), BODY, NOW),
                Err(VerifyError::InvalidSecret),
                "{wrong}"
            );
        }
    }

    #[test]
    fn missing_credentials_fail() {
        assert_eq!(shared(&["s3cret"]).verify_at(&HeaderMap::new(), BODY, NOW), Err(VerifyError::MissingCredentials));
        assert_eq!(hmac_only(&["k"]).verify_at(&HeaderMap::new(), BODY, NOW), Err(VerifyError::MissingCredentials));
        // a shared secret is no credential when only HMAC is configured
        assert_eq!(
            hmac_only(&["k"]).verify_at(&headers(&[(SECRET_HEADER, "k")]), BODY, NOW),
            Err(VerifyError::MissingCredentials)
        );
    }

    #[test]
    fn no_configured_mode_rejects_everything() {
        let v = Verifier::new(&[], &[], DEFAULT_TOLERANCE);
        assert_eq!(v.verify_at(&headers(&[(SECRET_HEADER, "")]), BODY, NOW), Err(VerifyError::MissingCredentials));
    }

    #[test]
    fn rotation_accepts_every_listed_secret() {
        let v = shared(&["old-secret", "new-secret"]);
        for s in ["old-secret", "new-secret"] {
            assert_eq!(v.verify_at(&headers(&[(SECRET_HEADER, s)]), BODY, NOW), Ok(()));
        }
        let v = hmac_only(&["old-key", "new-key"]);
        for k in ["old-key", "new-key"] {
            assert_eq!(v.verify_at(&signed(k, NOW, BODY), BODY, NOW), Ok(()));
        }
        assert_eq!(v.verify_at(&signed("retired-key", NOW, BODY), BODY, NOW), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn valid_signature_passes() {
        assert_eq!(hmac_only(&["k"]).verify_at(&signed("k", NOW, BODY), BODY, NOW), Ok(()));
    }

    #[test]
    fn signature_is_hex_hmac_sha256_of_timestamp_dot_body() {
        // computed independently: python3 hmac.new(b"whsec_test", b"1732540000." + BODY, sha256)
        assert_eq!(
            sign(b"whsec_test", "1732540000", BODY),
            "c39354258dd0f0ffb504cc733702fab9776bbd4bcb81b1ecdbada030c0cd162b"
        );
    }

    #[test]
    fn wrong_signature_fails() {
        let v = hmac_only(&["k"]);
        // signed with another key
        assert_eq!(v.verify_at(&signed("other", NOW, BODY), BODY, NOW), Err(VerifyError::InvalidSignature));
        // body changed after signing
        assert_eq!(v.verify_at(&signed("k", NOW, BODY), b"{\"message\":{}}", NOW), Err(VerifyError::InvalidSignature));
        // timestamp changed after signing
        let mut h = signed("k", NOW, BODY);
        h.insert(TIMESTAMP_HEADER, (NOW + 1).to_string().parse().unwrap());
        assert_eq!(v.verify_at(&h, BODY, NOW), Err(VerifyError::InvalidSignature));
        // not hex, truncated
        let ts = NOW.to_string();
        for sig in ["zz", "", &sign(b"k", &ts, BODY)[..16]] {
            let h = headers(&[(TIMESTAMP_HEADER, &ts), (SIGNATURE_HEADER, sig)]);
            assert_eq!(v.verify_at(&h, BODY, NOW), Err(VerifyError::InvalidSignature), "{sig:?}");
        }
    }

    #[test]
    fn signature_without_timestamp_fails() {
        let v = hmac_only(&["k"]);
        let mut h = signed("k", NOW, BODY);
        h.remove(TIMESTAMP_HEADER);
        assert_eq!(v.verify_at(&h, BODY, NOW), Err(VerifyError::MissingHeader(TIMESTAMP_HEADER)));
        h.insert(TIMESTAMP_HEADER, "yesterday".parse().unwrap());
        assert_eq!(v.verify_at(&h, BODY, NOW), Err(VerifyError::InvalidHeader(TIMESTAMP_HEADER)));
    }

    #[test]
    fn stale_timestamp_fails() {
        let v = hmac_only(&["k"]);
        let ts = NOW - DEFAULT_TOLERANCE.as_secs() - 1;
        assert_eq!(v.verify_at(&signed("k", ts, BODY), BODY, NOW), Err(VerifyError::TimestampTooOld));
        // the edge of the window is still accepted
        let ts = NOW - DEFAULT_TOLERANCE.as_secs();
        assert_eq!(v.verify_at(&signed("k", ts, BODY), BODY, NOW), Ok(()));
        // negative timestamps are never honoured
        let h = headers(&[(TIMESTAMP_HEADER, "-1"), (SIGNATURE_HEADER, &sign(b"k", "-1", BODY))]);
        assert_eq!(v.verify_at(&h, BODY, NOW), Err(VerifyError::TimestampTooOld));
    }

    #[test]
    fn future_timestamp_fails() {
        let v = hmac_only(&["k"]);
        let ts = NOW + DEFAULT_TOLERANCE.as_secs() + 1;
        assert_eq!(v.verify_at(&signed("k", ts, BODY), BODY, NOW), Err(VerifyError::TimestampInFuture));
        let ts = NOW + DEFAULT_TOLERANCE.as_secs();
        assert_eq!(v.verify_at(&signed("k", ts, BODY), BODY, NOW), Ok(()));
    }

    #[test]
    fn either_mode_passes_when_both_are_configured() {
        let v = Verifier::new(&secrets(&["s"]), &secrets(&["k"]), DEFAULT_TOLERANCE);
        assert_eq!(v.verify_at(&headers(&[(SECRET_HEADER, "s")]), BODY, NOW), Ok(()));
        assert_eq!(v.verify_at(&signed("k", NOW, BODY), BODY, NOW), Ok(()));
        let mut bad = signed("wrong", NOW, BODY);
        assert_eq!(v.verify_at(&bad, BODY, NOW), Err(VerifyError::InvalidSignature));
        bad.insert(SECRET_HEADER, "s".parse().unwrap());
        assert_eq!(v.verify_at(&bad, BODY, NOW), Ok(()));
    }

    #[test]
    fn headers_alone_settle_everything_but_a_signature() {
        let v = Verifier::new(&secrets(&["s"]), &secrets(&["k"]), DEFAULT_TOLERANCE);
        let check = |h: &HeaderMap| v.check_headers_at(h, NOW);
        // no body is needed to pass a shared secret, or to refuse what carries no valid one
        assert_eq!(check(&headers(&[(SECRET_HEADER, "s")])), Ok(HeaderCheck::Passed));
        assert_eq!(check(&headers(&[(SECRET_HEADER, "x")])), Err(VerifyError::InvalidSecret));
        assert_eq!(check(&HeaderMap::new()), Err(VerifyError::MissingCredentials));
        // nor to refuse a signature out of its window, or not hex
        let stale = signed("k", NOW - DEFAULT_TOLERANCE.as_secs() - 1, BODY);
        assert_eq!(check(&stale), Err(VerifyError::TimestampTooOld));
        let ts = NOW.to_string();
        let not_hex = headers(&[(TIMESTAMP_HEADER, &ts), (SIGNATURE_HEADER, "zz")]);
        assert_eq!(check(&not_hex), Err(VerifyError::InvalidSignature));
        // a signature in its window needs the body
        let good = signed("k", NOW, BODY);
        let Ok(HeaderCheck::NeedsBody(signature)) = check(&good) else { panic!("a signature needs its body") };
        assert_eq!(v.verify_body(&signature, BODY), Ok(()));
        assert_eq!(v.verify_body(&signature, b"{}"), Err(VerifyError::InvalidSignature));
        // a valid secret passes beside any signature; a wrong one leaves the signature to decide
        let mut both = signed("wrong", NOW, BODY);
        both.insert(SECRET_HEADER, "s".parse().unwrap());
        assert_eq!(check(&both), Ok(HeaderCheck::Passed));
        let mut both = good.clone();
        both.insert(SECRET_HEADER, "x".parse().unwrap());
        assert!(matches!(check(&both), Ok(HeaderCheck::NeedsBody(_))));
        let mut both = stale.clone();
        both.insert(SECRET_HEADER, "x".parse().unwrap());
        assert_eq!(check(&both), Err(VerifyError::TimestampTooOld), "the signature's error is reported");
    }

    #[test]
    fn secrets_are_redacted_and_never_empty() {
        let s: Secret = "  hunter2 ".parse().unwrap();
        assert_eq!(s.expose(), b"hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        let v = Verifier::new(std::slice::from_ref(&s), std::slice::from_ref(&s), DEFAULT_TOLERANCE);
        assert!(!format!("{v:?}").contains("hunter2"));
        assert!("".parse::<Secret>().is_err());
        assert!("   ".parse::<Secret>().is_err());
    }
}
