//! A token in a header: Vapi's Bearer plan (`Authorization: Bearer <token>` by default) and the
//! legacy `x-vapi-secret: <token>`, which is a Bearer plan with that header and no prefix.

use std::fmt;

use axum::http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::{Credential, Secret, TenantCredentials, VerifyError, SECRET_HEADER};

/// What a Bearer plan with `bearerPrefixEnabled` puts before the token.
pub const BEARER_PREFIX: &str = "Bearer ";

/// One header's tokens.
pub struct TokenScheme {
    header: HeaderName,
    prefixed: bool,
    /// SHA-256 of each platform token: comparing fixed-length digests means the time taken
    /// depends on neither a token's length nor its content.
    digests: Vec<[u8; 32]>,
}

impl fmt::Debug for TokenScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenScheme")
            .field("header", &self.header)
            .field("prefixed", &self.prefixed)
            .field("tokens", &self.digests.len())
            .finish()
    }
}

impl TokenScheme {
    pub fn bearer(tokens: &[Secret], header: HeaderName, prefixed: bool) -> Self {
        Self { header, prefixed, digests: tokens.iter().map(|t| digest(t.expose())).collect() }
    }

    pub fn legacy(secrets: &[Secret]) -> Self {
        Self::bearer(secrets, HeaderName::from_static(SECRET_HEADER), false)
    }

    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    pub fn has_tokens(&self) -> bool {
        !self.digests.is_empty()
    }

    /// How a sender presents it, for the "missing credentials" answer.
    pub fn describe(&self) -> String {
        let prefix = if self.prefixed { BEARER_PREFIX } else { "" };
        format!("{}: {prefix}<token>", self.header)
    }

    /// None when the request has no such header; else whether its token is a platform token or
    /// a tenant's (`tenants`, when tenants' tokens are accepted).
    pub fn check(
        &self,
        headers: &HeaderMap,
        tenants: Option<&TenantCredentials>,
    ) -> Option<Result<Credential, VerifyError>> {
        let value = headers.get(&self.header)?;
        Some(self.token_of(value.as_bytes()).ok_or(VerifyError::InvalidToken).and_then(|token| {
            let presented = digest(token);
            // no early exit: every configured token is compared
            let platform = self.digests.iter().fold(Choice::from(0), |acc, expected| acc | expected.ct_eq(&presented));
            if bool::from(platform) {
                Ok(Credential::Platform)
            } else if tenants.is_some_and(|t| t.contains(&presented)) {
                Ok(Credential::Tenant(presented))
            } else {
                Err(VerifyError::InvalidToken)
            }
        }))
    }

    /// The token in a header value: after `Bearer ` (the scheme's name in any case, RFC 6750)
    /// when prefixed; never empty.
    fn token_of<'v>(&self, value: &'v [u8]) -> Option<&'v [u8]> {
        let token = if self.prefixed {
            let (scheme, token) = value.split_at_checked(BEARER_PREFIX.len())?;
            scheme.eq_ignore_ascii_case(BEARER_PREFIX.as_bytes()).then_some(token)?
        } else {
            value
        };
        (!token.is_empty()).then_some(token)
    }
}

pub fn digest(value: &[u8]) -> [u8; 32] {
    Sha256::digest(value).into()
}
