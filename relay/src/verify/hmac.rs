//! Vapi's HMAC plan (`HmacAuthenticationPlan` in its server SDK), every option of it: the
//! algorithm (sha256, sha512, sha1), the signature's and the timestamp's header names, a
//! signature prefix (`sha256=` as GitHub signs, `v1,` as Svix does), hex or base64, the signed
//! payload as a template of `{timestamp}`, `{body}`, `{method}`, `{url}` and `{svix-id}`
//! (default `{timestamp}.{body}`, `{body}` when the plan includes no timestamp), a message id
//! header for `{svix-id}`, and a secret given in base64. The SDK does not say whether the
//! timestamp is in seconds or milliseconds; by default both are read (a value past 10^11 is
//! milliseconds: as seconds it would be the year 5138).
//!
//! A signed timestamp must be within the tolerance of the relay's clock, either way: that bounds
//! replays. A template without `{timestamp}` signs none, so nothing bounds a replay but the
//! database's deduplication; the relay says so when it starts.

use std::fmt;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName};
use base64::Engine;
use clap::ValueEnum;
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

use super::{Secret, VerifyError, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Replay window for signed requests, as svix uses.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// The widest window accepted: beyond it a captured request stays replayable for long.
pub const MAX_TOLERANCE: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Algorithm {
    #[default]
    Sha256,
    Sha512,
    Sha1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Encoding {
    #[default]
    Hex,
    Base64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum TimestampUnit {
    /// Seconds below 10^11, milliseconds above.
    #[default]
    Auto,
    Seconds,
    Milliseconds,
}

/// One piece of a payload template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Body,
    Timestamp,
    Method,
    Url,
    MessageId,
}

/// The signed payload's template, e.g. `{timestamp}.{body}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFormat(Vec<Part>);

impl PayloadFormat {
    fn uses(&self, part: &Part) -> bool {
        self.0.contains(part)
    }
}

impl std::str::FromStr for PayloadFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let close = rest[open..].find('}').ok_or_else(|| format!("unclosed '{{' in {s:?}"))? + open;
            parts.push(match &rest[open + 1..close] {
                "body" => Part::Body,
                "timestamp" => Part::Timestamp,
                "method" => Part::Method,
                "url" => Part::Url,
                "svix-id" => Part::MessageId,
                other => {
                    return Err(format!(
                        "unknown placeholder {{{other}}} in {s:?}: use {{body}}, {{timestamp}}, {{method}}, {{url}}, {{svix-id}}"
                    ))
                }
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        if !parts.contains(&Part::Body) {
            return Err(format!("{s:?} does not sign {{body}}"));
        }
        Ok(Self(parts))
    }
}

/// Why a plan cannot be built from its options.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("--hmac-secrets: a key is not valid base64 (--hmac-secret-is-base64)")]
    Base64Key,
    #[error("--hmac-payload-format: {0}")]
    Format(String),
    #[error("--hmac-payload-format has {{timestamp}}, but --hmac-include-timestamp is false")]
    TimestampExcluded,
    #[error("--hmac-payload-format has {{url}}: set --hmac-url to the server URL configured in Vapi")]
    NoUrl,
    #[error("--hmac-payload-format has {{svix-id}}: set --hmac-message-id-header")]
    NoMessageIdHeader,
    #[error("--hmac-tolerance must be between 1s and 15m")]
    Tolerance,
    #[error("the HMAC plan's headers must differ from each other")]
    SameHeader,
}

/// The options of a plan, as configured; [`build`](Self::build) checks them.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub keys: Vec<Secret>,
    pub algorithm: Algorithm,
    pub signature_header: HeaderName,
    pub timestamp_header: HeaderName,
    pub signature_prefix: String,
    pub include_timestamp: bool,
    pub payload_format: Option<String>,
    pub message_id_header: Option<HeaderName>,
    pub encoding: Encoding,
    pub key_is_base64: bool,
    pub url: Option<String>,
    pub tolerance: Duration,
    pub timestamp_unit: TimestampUnit,
}

impl PlanOptions {
    pub fn build(self) -> Result<HmacPlan, PlanError> {
        let format: PayloadFormat = match &self.payload_format {
            Some(format) => format.parse().map_err(PlanError::Format)?,
            None if self.include_timestamp => "{timestamp}.{body}".parse().map_err(PlanError::Format)?,
            None => "{body}".parse().map_err(PlanError::Format)?,
        };
        if format.uses(&Part::Timestamp) && !self.include_timestamp {
            return Err(PlanError::TimestampExcluded);
        }
        if format.uses(&Part::Url) && self.url.is_none() {
            return Err(PlanError::NoUrl);
        }
        let message_id_header = match (&self.message_id_header, format.uses(&Part::MessageId)) {
            (Some(header), true) => Some(header.clone()),
            (None, true) => return Err(PlanError::NoMessageIdHeader),
            (_, false) => None,
        };
        if self.tolerance < Duration::from_secs(1) || self.tolerance > MAX_TOLERANCE {
            return Err(PlanError::Tolerance);
        }
        let timestamp_header = format.uses(&Part::Timestamp).then_some(self.timestamp_header);
        let mut headers = vec![&self.signature_header];
        headers.extend(timestamp_header.iter());
        headers.extend(message_id_header.iter());
        if (1..headers.len()).any(|i| headers[..i].contains(&headers[i])) {
            return Err(PlanError::SameHeader);
        }
        let keys = if self.key_is_base64 {
            self.keys
                .iter()
                .map(|k| base64::engine::general_purpose::STANDARD.decode(k.expose()).map(Secret::new))
                .collect::<Result<_, _>>()
                .map_err(|_| PlanError::Base64Key)?
        } else {
            self.keys
        };
        Ok(HmacPlan {
            keys,
            algorithm: self.algorithm,
            signature_header: self.signature_header,
            timestamp_header,
            message_id_header,
            prefix: self.signature_prefix,
            encoding: self.encoding,
            format,
            url: self.url,
            tolerance_ms: self.tolerance.as_millis() as u64,
            unit: self.timestamp_unit,
        })
    }
}

/// A checked plan.
pub struct HmacPlan {
    keys: Vec<Secret>,
    algorithm: Algorithm,
    signature_header: HeaderName,
    /// None when the template signs no timestamp.
    timestamp_header: Option<HeaderName>,
    message_id_header: Option<HeaderName>,
    prefix: String,
    encoding: Encoding,
    format: PayloadFormat,
    url: Option<String>,
    tolerance_ms: u64,
    unit: TimestampUnit,
}

impl fmt::Debug for HmacPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacPlan")
            .field("keys", &self.keys.len())
            .field("algorithm", &self.algorithm)
            .field("signature_header", &self.signature_header)
            .field("timestamp_header", &self.timestamp_header)
            .field("message_id_header", &self.message_id_header)
            .field("prefix", &self.prefix)
            .field("encoding", &self.encoding)
            .field("format", &self.format)
            .field("tolerance_ms", &self.tolerance_ms)
            .field("unit", &self.unit)
            .finish()
    }
}

/// A request's signature, its timestamp in the window; not yet checked against a body.
#[derive(Debug, PartialEq, Eq)]
pub struct Signature {
    timestamp: Option<String>,
    message_id: Option<String>,
    /// Each signature the header lists (Svix sends several, space-separated), decoded.
    candidates: Vec<Vec<u8>>,
}

impl HmacPlan {
    /// The default plan (Vapi's defaults: sha256, hex, `x-signature`, `x-timestamp`,
    /// `{timestamp}.{body}`) with these keys.
    pub fn builder(keys: Vec<Secret>) -> PlanOptions {
        PlanOptions {
            keys,
            algorithm: Algorithm::Sha256,
            signature_header: HeaderName::from_static(SIGNATURE_HEADER),
            timestamp_header: HeaderName::from_static(TIMESTAMP_HEADER),
            signature_prefix: String::new(),
            include_timestamp: true,
            payload_format: None,
            message_id_header: None,
            encoding: Encoding::Hex,
            key_is_base64: false,
            url: None,
            tolerance: DEFAULT_TOLERANCE,
            timestamp_unit: TimestampUnit::Auto,
        }
    }

    pub fn signature_header(&self) -> &HeaderName {
        &self.signature_header
    }

    pub fn signs_timestamp(&self) -> bool {
        self.timestamp_header.is_some()
    }

    pub fn headers(&self) -> impl Iterator<Item = HeaderName> + '_ {
        [Some(&self.signature_header), self.timestamp_header.as_ref(), self.message_id_header.as_ref()]
            .into_iter()
            .flatten()
            .cloned()
    }

    pub fn describe(&self) -> String {
        match &self.timestamp_header {
            Some(ts) => format!("{} with {ts}", self.signature_header),
            None => self.signature_header.to_string(),
        }
    }

    /// The parts of a signature that need no body: its timestamp in the window, its message id,
    /// its decoding.
    pub fn signature_of(&self, headers: &HeaderMap, now_ms: u64) -> Result<Signature, VerifyError> {
        let timestamp = match &self.timestamp_header {
            Some(name) => {
                let value = header_str(headers, name)?;
                let ts: i64 = value.trim().parse().map_err(|_| VerifyError::InvalidHeader(name.clone()))?;
                self.check_timestamp(ts, now_ms)?;
                Some(value.to_string())
            }
            None => None,
        };
        let message_id = match &self.message_id_header {
            Some(name) => Some(header_str(headers, name)?.to_string()),
            None => None,
        };
        let value = header_str(headers, &self.signature_header)?;
        let candidates: Vec<Vec<u8>> = value
            .split(' ')
            .filter_map(|part| part.strip_prefix(self.prefix.as_str()))
            .filter_map(|sig| match self.encoding {
                Encoding::Hex => hex::decode(sig).ok(),
                Encoding::Base64 => base64::engine::general_purpose::STANDARD.decode(sig).ok(),
            })
            .filter(|sig| !sig.is_empty())
            .collect();
        if candidates.is_empty() {
            return Err(VerifyError::InvalidSignature);
        }
        Ok(Signature { timestamp, message_id, candidates })
    }

    /// Any key's MAC of the payload equals any of the signature's candidates.
    pub fn verify(&self, signature: &Signature, body: &[u8]) -> Result<(), VerifyError> {
        let mut valid = subtle::Choice::from(0);
        for key in &self.keys {
            let expected = self.mac(key.expose(), signature, body);
            for candidate in &signature.candidates {
                // a length mismatch is public; equal lengths compare in constant time
                valid |= expected.as_slice().ct_eq(candidate.as_slice());
            }
        }
        if bool::from(valid) {
            Ok(())
        } else {
            Err(VerifyError::InvalidSignature)
        }
    }

    fn mac(&self, key: &[u8], signature: &Signature, body: &[u8]) -> Vec<u8> {
        let pieces = self.format.0.iter().map(|part| match part {
            Part::Literal(text) => text.as_bytes(),
            Part::Body => body,
            Part::Timestamp => signature.timestamp.as_deref().unwrap_or_default().as_bytes(),
            // the webhook route takes POST only
            Part::Method => b"POST",
            Part::Url => self.url.as_deref().unwrap_or_default().as_bytes(),
            Part::MessageId => signature.message_id.as_deref().unwrap_or_default().as_bytes(),
        });
        match self.algorithm {
            Algorithm::Sha256 => mac_of::<Hmac<sha2::Sha256>>(key, pieces),
            Algorithm::Sha512 => mac_of::<Hmac<sha2::Sha512>>(key, pieces),
            Algorithm::Sha1 => mac_of::<Hmac<sha1::Sha1>>(key, pieces),
        }
    }

    fn check_timestamp(&self, ts: i64, now_ms: u64) -> Result<(), VerifyError> {
        // timestamps before 1970 are not honoured
        let ts = u64::try_from(ts).map_err(|_| VerifyError::TimestampTooOld)?;
        let ts_ms = match self.unit {
            TimestampUnit::Milliseconds => ts,
            TimestampUnit::Auto if ts >= 100_000_000_000 => ts,
            TimestampUnit::Auto | TimestampUnit::Seconds => ts.saturating_mul(1000),
        };
        if ts_ms.saturating_add(self.tolerance_ms) < now_ms {
            Err(VerifyError::TimestampTooOld)
        } else if ts_ms > now_ms.saturating_add(self.tolerance_ms) {
            Err(VerifyError::TimestampInFuture)
        } else {
            Ok(())
        }
    }
}

fn mac_of<'a, M: Mac + hmac::digest::KeyInit>(key: &[u8], pieces: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut mac = <M as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for piece in pieces {
        mac.update(piece);
    }
    mac.finalize().into_bytes().to_vec()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<&'a str, VerifyError> {
    headers
        .get(name)
        .ok_or_else(|| VerifyError::MissingHeader(name.clone()))?
        .to_str()
        .map_err(|_| VerifyError::InvalidHeader(name.clone()))
}

/// The hex signature a sender of the default plan puts in `x-signature` for this timestamp
/// header value and body.
pub fn sign(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    let pieces = [timestamp.as_bytes(), b".", body].into_iter();
    hex::encode(mac_of::<Hmac<sha2::Sha256>>(key, pieces))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"message":{"type":"status-update","status":"ringing"}}"#;
    const NOW: u64 = 1_732_540_000;
    const NOW_MS: u64 = NOW * 1000;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn options(key: &str) -> PlanOptions {
        HmacPlan::builder(vec![Secret::new(key)])
    }

    fn check(plan: &HmacPlan, h: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
        plan.verify(&plan.signature_of(h, NOW_MS)?, body)
    }

    /// Vectors computed independently: python3 -c 'import hmac,hashlib,base64; ...' over the
    /// payload each plan names.
    #[test]
    fn signatures_are_computed_as_each_plan_describes() {
        // sha256, hex, "{timestamp}.{body}": Vapi's defaults
        assert_eq!(
            sign(b"whsec_test", "1732540000", BODY),
            "c39354258dd0f0ffb504cc733702fab9776bbd4bcb81b1ecdbada030c0cd162b"
        );
        let plan = options("whsec_test").build().unwrap();
        let h = headers(&[
            ("x-timestamp", "1732540000"),
            ("x-signature", "c39354258dd0f0ffb504cc733702fab9776bbd4bcb81b1ecdbada030c0cd162b"),
        ]);
        assert_eq!(check(&plan, &h, BODY), Ok(()));

        // sha512, base64, prefix "sha512=", "{body}" only, custom header, no timestamp
        let plan = PlanOptions {
            algorithm: Algorithm::Sha512,
            encoding: Encoding::Base64,
            signature_prefix: "sha512=".into(),
            include_timestamp: false,
            signature_header: HeaderName::from_static("x-vapi-signature"),
            ..options("whsec_test")
        }
        .build()
        .unwrap();
        let sig = "sha512=6Dsl0GI3+nIFj7enfhW2GPZZFqeAfXL4UxycV/79LrSG5IZqEozQgI0XheahXsALqUcNNvTEnTlxkisAgqgjLQ==";
        assert_eq!(check(&plan, &headers(&[("x-vapi-signature", sig)]), BODY), Ok(()));
        assert!(!plan.signs_timestamp());

        // sha1, hex, a base64 secret, "{svix-id}.{timestamp}.{body}" in milliseconds, and several
        // signatures in the header (rotation on the sender's side)
        let plan = PlanOptions {
            algorithm: Algorithm::Sha1,
            key_is_base64: true,
            payload_format: Some("{svix-id}.{timestamp}.{body}".into()),
            message_id_header: Some(HeaderName::from_static("svix-id")),
            signature_prefix: "v1,".into(),
            ..options("c2VjcmV0LWtleQ==")
        }
        .build()
        .unwrap();
        let h = headers(&[
            ("svix-id", "msg_1"),
            ("x-timestamp", "1732540000123"),
            ("x-signature", &format!("v1,deadbeef v1,{SHA1_SVIX_VECTOR}")),
        ]);
        assert_eq!(plan.signature_of(&h, NOW_MS).unwrap().candidates.len(), 2);
        assert_eq!(check(&plan, &h, BODY), Ok(()));

        // {method} and {url}
        let plan = PlanOptions {
            payload_format: Some("{method} {url}\n{timestamp}\n{body}".into()),
            url: Some("https://relay.example.com/vapi/webhook".into()),
            ..options("whsec_test")
        }
        .build()
        .unwrap();
        let h = headers(&[("x-timestamp", "1732540000"), ("x-signature", METHOD_URL_VECTOR)]);
        assert_eq!(check(&plan, &h, BODY), Ok(()));
    }

    const SHA1_SVIX_VECTOR: &str = "c5f360c0671934efda575d0c16233a3f69a67c1e";
    const METHOD_URL_VECTOR: &str = "fc414db110c6c6d5d5a8a35d37922bae54c578908e1b9263ce7a01c26e896bba";

    #[test]
    fn a_wrong_key_body_timestamp_prefix_or_encoding_fails() {
        let plan = options("k").build().unwrap();
        let ts = NOW.to_string();
        let good = sign(b"k", &ts, BODY);
        let h = |sig: &str| headers(&[("x-timestamp", &ts), ("x-signature", sig)]);
        assert_eq!(check(&plan, &h(&good), BODY), Ok(()));
        assert_eq!(check(&plan, &h(&sign(b"other", &ts, BODY)), BODY), Err(VerifyError::InvalidSignature));
        assert_eq!(check(&plan, &h(&good), b"{\"message\":{}}"), Err(VerifyError::InvalidSignature));
        let later = headers(&[("x-timestamp", &(NOW + 1).to_string()), ("x-signature", &good)]);
        assert_eq!(check(&plan, &later, BODY), Err(VerifyError::InvalidSignature));
        for sig in ["zz", "", &good[..16]] {
            assert_eq!(check(&plan, &h(sig), BODY), Err(VerifyError::InvalidSignature), "{sig:?}");
        }
        let prefixed = PlanOptions { signature_prefix: "sha256=".into(), ..options("k") }.build().unwrap();
        assert_eq!(check(&prefixed, &h(&good), BODY), Err(VerifyError::InvalidSignature), "prefix missing");
        assert_eq!(check(&prefixed, &h(&format!("sha256={good}")), BODY), Ok(()));
        let base64 = PlanOptions { encoding: Encoding::Base64, ..options("k") }.build().unwrap();
        assert_eq!(check(&base64, &h(&good), BODY), Err(VerifyError::InvalidSignature), "hex where base64 is due");
    }

    #[test]
    fn timestamps_in_seconds_or_milliseconds_must_be_in_the_window() {
        let plan = options("k").build().unwrap();
        let at = |ts: String| {
            let sig = sign(b"k", &ts, BODY);
            check(&plan, &headers(&[("x-timestamp", &ts), ("x-signature", &sig)]), BODY)
        };
        let tolerance = DEFAULT_TOLERANCE.as_secs();
        assert_eq!(at(NOW.to_string()), Ok(()));
        assert_eq!(at((NOW_MS + 999).to_string()), Ok(()), "milliseconds");
        assert_eq!(at((NOW - tolerance).to_string()), Ok(()), "the edge of the window");
        assert_eq!(at((NOW + tolerance).to_string()), Ok(()));
        assert_eq!(at((NOW - tolerance - 1).to_string()), Err(VerifyError::TimestampTooOld));
        assert_eq!(at((NOW_MS - tolerance * 1000 - 1).to_string()), Err(VerifyError::TimestampTooOld));
        assert_eq!(at((NOW + tolerance + 1).to_string()), Err(VerifyError::TimestampInFuture));
        assert_eq!(at("-1".into()), Err(VerifyError::TimestampTooOld));
        let seconds = PlanOptions { timestamp_unit: TimestampUnit::Seconds, ..options("k") }.build().unwrap();
        let ts = NOW_MS.to_string();
        let sig = sign(b"k", &ts, BODY);
        assert_eq!(
            check(&seconds, &headers(&[("x-timestamp", &ts), ("x-signature", &sig)]), BODY),
            Err(VerifyError::TimestampInFuture),
            "milliseconds read as seconds"
        );
        let mut h = headers(&[("x-signature", &sig)]);
        assert_eq!(check(&plan, &h, BODY), Err(VerifyError::MissingHeader(HeaderName::from_static("x-timestamp"))));
        h.insert("x-timestamp", "yesterday".parse().unwrap());
        assert_eq!(check(&plan, &h, BODY), Err(VerifyError::InvalidHeader(HeaderName::from_static("x-timestamp"))));
    }

    #[test]
    fn plans_that_cannot_work_are_refused() {
        let bad = |o: PlanOptions| o.build().unwrap_err();
        assert!(matches!(
            bad(PlanOptions { payload_format: Some("{timestamp}".into()), ..options("k") }),
            PlanError::Format(_)
        ));
        assert!(matches!(
            bad(PlanOptions { payload_format: Some("{nope}.{body}".into()), ..options("k") }),
            PlanError::Format(_)
        ));
        assert!(matches!(
            bad(PlanOptions { payload_format: Some("{body".into()), ..options("k") }),
            PlanError::Format(_)
        ));
        assert_eq!(
            bad(PlanOptions {
                include_timestamp: false,
                payload_format: Some("{timestamp}.{body}".into()),
                ..options("k")
            }),
            PlanError::TimestampExcluded
        );
        assert_eq!(bad(PlanOptions { payload_format: Some("{url}{body}".into()), ..options("k") }), PlanError::NoUrl);
        assert_eq!(
            bad(PlanOptions { payload_format: Some("{svix-id}{body}".into()), ..options("k") }),
            PlanError::NoMessageIdHeader
        );
        assert_eq!(bad(PlanOptions { key_is_base64: true, ..options("not base64!") }), PlanError::Base64Key);
        assert_eq!(bad(PlanOptions { tolerance: Duration::from_secs(3600), ..options("k") }), PlanError::Tolerance);
        assert_eq!(
            bad(PlanOptions { timestamp_header: HeaderName::from_static("x-signature"), ..options("k") }),
            PlanError::SameHeader
        );
    }

    #[test]
    fn keys_are_redacted() {
        let plan = options("hunter2").build().unwrap();
        assert!(!format!("{plan:?}").contains("hunter2"));
    }
}
