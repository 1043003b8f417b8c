//! Webhook credentials that belong to one org. A tenant that brings its own Vapi account sends
//! our relay a Bearer token of its own (a Vapi custom credential); whoever holds it may write
//! that org's calls and nobody else's. Only the token's SHA-256 is kept: a leaked table lets no
//! one sign in, and the relay compares digests, never tokens.
//!
//! `handle_vapi_message(p_body, p_credential)`: `p_credential` NULL is a platform-wide
//! credential (the relay verified one of its own, or a service-role caller); otherwise it is
//! the digest of a tenant's token, which must be active, and a message whose tenant is another
//! org is refused (42501) after its statement ran, so that the error undoes every write of it
//! and the org compared is the one the writes really went to.

use std::borrow::Cow;

use pgrx::datum::Uuid;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::domain::optional;
use crate::error::VoxError;
use crate::jsonb::JsonbOut;
use crate::plans::Statement;

/// The shortest token accepted: 32 bytes, a 256-bit random token's hex is 64.
pub const TOKEN_MIN: usize = 32;
const TOKEN_MAX: usize = 1024;
const LABEL_MAX: usize = 255;

/// No row when the token is registered already (the exclusion constraint: any org, revoked or
/// not); the insert decides, so two registrations racing cannot both win.
static ADD: Statement = Statement::new(
    "INSERT INTO voxanne.webhook_credentials (org_id, digest, label) VALUES ($1, $2, $3)
     ON CONFLICT DO NOTHING
     RETURNING id",
);

/// After ADD found the token registered, in a statement of its own so that it sees a racing
/// registration that committed meanwhile: the same org's active row is a re-registration.
static REGISTERED: Statement = Statement::new(
    "SELECT c.id FROM voxanne.webhook_credentials AS c
     WHERE c.org_id = $1 AND c.digest = $2 AND c.revoked_at IS NULL",
);

static REVOKE: Statement = Statement::new(
    "UPDATE voxanne.webhook_credentials SET revoked_at = pg_catalog.now()
     WHERE org_id = $1 AND id = $2 AND revoked_at IS NULL
     RETURNING true",
);

static ORG_OF: Statement = Statement::new(
    "SELECT c.org_id FROM voxanne.webhook_credentials AS c WHERE c.digest = $1 AND c.revoked_at IS NULL",
);

/// Who may write what a message writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// A platform-wide credential: any org.
    Platform,
    /// A tenant's credential: its org only.
    Tenant(Uuid),
}

/// The one field of an answer this module reads.
#[derive(Deserialize)]
struct Tenant<'a> {
    #[serde(borrow)]
    org_id: Option<Cow<'a, str>>,
}

impl Writer {
    /// The writer a `p_credential` names.
    pub fn of(digest: Option<&[u8]>) -> Result<Self, VoxError> {
        let Some(digest) = digest else { return Ok(Self::Platform) };
        if digest.len() != 32 {
            return Err(VoxError::out_of_range("length(p_credential)", digest.len(), 32, 32));
        }
        let org: Option<Uuid> = Spi::connect_mut(|client| ORG_OF.first_value(client, &[digest.into()]))?;
        org.map(Self::Tenant).ok_or(VoxError::UnknownCredential)
    }

    /// Refuses an answer whose org this writer may not write. An answer without an org (an
    /// ignored type, a refusal) wrote nothing.
    pub fn permit(self, answer: &JsonbOut) -> Result<(), VoxError> {
        let Self::Tenant(own) = self else { return Ok(()) };
        let tenant: Tenant<'_> = serde_json::from_str(answer.as_str())
            .map_err(|_| VoxError::Internal("an answer is not the JSON its serializer wrote"))?;
        match tenant.org_id {
            Some(org) if org != own.to_string() => Err(VoxError::Forbidden),
            _ => Ok(()),
        }
    }
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Registers `p_token` (at least 32 bytes) as a webhook credential of `p_org_id`; returns its
/// id. Registering the same token again for the same org returns the same id (and keeps the
/// first label).
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn add_webhook_credential(
    p_org_id: Option<Uuid>,
    p_token: Option<&str>,
    p_label: default!(Option<&str>, "NULL"),
) -> Result<Uuid, ErrorReport> {
    let org = p_org_id.ok_or_else(|| VoxError::missing("p_org_id"))?;
    let token = p_token.ok_or_else(|| VoxError::missing("p_token"))?;
    if !(TOKEN_MIN..=TOKEN_MAX).contains(&token.len()) {
        // never echoed: it is a credential
        Err(VoxError::out_of_range("length(p_token)", token.len(), TOKEN_MIN as i64, TOKEN_MAX as i64))?;
    }
    let label = optional("p_label", p_label, LABEL_MAX)?;
    let digest = digest(token);
    let id: Option<Uuid> = Spi::connect_mut(|client| {
        match ADD.first_value(client, &[org.into(), digest.as_slice().into(), label.into()])? {
            Some(id) => Ok(Some(id)),
            None => REGISTERED.first_value(client, &[org.into(), digest.as_slice().into()]),
        }
    })
    .map_err(VoxError::from)?;
    Ok(id.ok_or_else(|| VoxError::invalid("p_token", "…", "it is another org's credential, or was revoked"))?)
}

/// Revokes a credential: the relay and the database refuse it from now on. False when the org
/// has no such active credential.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn revoke_webhook_credential(p_org_id: Option<Uuid>, p_id: Option<Uuid>) -> Result<bool, ErrorReport> {
    let org = p_org_id.ok_or_else(|| VoxError::missing("p_org_id"))?;
    let id = p_id.ok_or_else(|| VoxError::missing("p_id"))?;
    let revoked: Option<bool> =
        Spi::connect_mut(|client| REVOKE.first_value(client, &[org.into(), id.into()])).map_err(VoxError::from)?;
    Ok(revoked.unwrap_or(false))
}

/// The digests of every active credential, for the relay: it authenticates a tenant's token
/// against them before it reads a body. A digest is no secret (the token has 256 bits).
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn webhook_credential_digests() -> Result<SetOfIterator<'static, Vec<u8>>, ErrorReport> {
    let digests = Spi::connect(|client| {
        client
            .select("SELECT c.digest FROM voxanne.webhook_credentials AS c WHERE c.revoked_at IS NULL", None, &[])?
            .map(|row| row.get::<Vec<u8>>(1).map(Option::unwrap_or_default))
            .collect::<Result<Vec<_>, _>>()
    })
    .map_err(VoxError::from)?;
    Ok(SetOfIterator::new(digests))
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{count, error_of, json_of, org_with_agent, rows_of_org};

    const TOKEN_A: &str = "tenant-a-token-0123456789abcdef0123456789abcdef";
    const TOKEN_B: &str = "tenant-b-token-0123456789abcdef0123456789abcdef";

    fn add(org: &str, token: &str) -> String {
        Spi::get_one_with_args("SELECT voxanne.add_webhook_credential($1::uuid, $2)::text", &[org.into(), token.into()])
            .unwrap()
            .unwrap()
    }

    /// handle_vapi_message with the digest of `token`, as the relay calls it.
    fn handle_as(token: &str, body: &str) -> serde_json::Value {
        json_of(
            "SELECT voxanne.handle_vapi_message($1::jsonb, pg_catalog.sha256(convert_to($2, 'UTF8')))",
            &[body.into(), token.into()],
        )
    }

    fn error_as(token: &str, body: &str) -> String {
        error_of(&format!(
            "SELECT voxanne.handle_vapi_message('{}'::jsonb, pg_catalog.sha256(convert_to('{token}', 'UTF8')))",
            body.replace('\'', "''")
        ))
    }

    fn report(call: &str, assistant: &str) -> String {
        format!(
            r#"{{"message":{{"type":"end-of-call-report","endedReason":"customer-ended-call","call":{{"id":"{call}","assistantId":"{assistant}"}},"analysis":{{"summary":"genuine"}},"artifact":{{}}}}}}"#
        )
    }

    #[pg_test]
    fn a_tenant_credential_writes_its_own_org_and_nothing_of_another() {
        let org_a = org_with_agent("asst_cred_a");
        let org_b = org_with_agent("asst_cred_b");
        add(&org_a, TOKEN_A);
        add(&org_b, TOKEN_B);
        let own = handle_as(TOKEN_A, &report("call-a", "asst_cred_a"));
        assert_eq!((own["applied"].clone(), own["org_id"].clone()), (true.into(), org_a.as_str().into()), "{own}");

        // a forged report for B's call with A's credential: refused, nothing of it kept
        let before = rows_of_org(&org_b);
        let err = error_as(TOKEN_A, &report("call-b", "asst_cred_b"));
        assert!(err.starts_with("42501 "), "{err}");
        assert!(!err.contains(&org_b), "the error names no org: {err}");
        assert_eq!(rows_of_org(&org_b), before);

        // so B's genuine report is applied, not a duplicate of the forgery
        let genuine = handle_as(TOKEN_B, &report("call-b", "asst_cred_b"));
        assert_eq!(genuine["outcome"], "applied", "{genuine}");
        // and a platform-wide caller (no credential) still writes any org
        let platform = json_of(
            "SELECT voxanne.handle_vapi_message($1::jsonb)",
            &[report("call-b2", "asst_cred_b").as_str().into()],
        );
        assert_eq!(platform["org_id"], org_b.as_str());
    }

    #[pg_test]
    fn unknown_revoked_and_malformed_credentials_are_refused() {
        let org = org_with_agent("asst_cred_r");
        let id = add(&org, TOKEN_A);
        let body = report("call-r", "asst_cred_r");
        assert!(error_as(TOKEN_B, &body).starts_with("28000 "), "a token never registered");
        let revoked: bool = Spi::get_one_with_args(
            "SELECT voxanne.revoke_webhook_credential($1::uuid, $2::uuid)",
            &[org.as_str().into(), id.as_str().into()],
        )
        .unwrap()
        .unwrap();
        assert!(revoked);
        let err = error_as(TOKEN_A, &body);
        assert!(err.starts_with("28000 ") && !err.contains(TOKEN_A), "{err}");
        assert_eq!(rows_of_org(&org), 0);
        let err = error_of("SELECT voxanne.handle_vapi_message('{}'::jsonb, '\\x0102'::bytea)");
        assert!(err.starts_with("22003 ") && err.contains("p_credential"), "{err}");
        // a revoked token cannot come back, for its org or another
        let again = error_of(&format!("SELECT voxanne.add_webhook_credential('{org}'::uuid, '{TOKEN_A}')"));
        assert!(again.starts_with("22023 ") && !again.contains(TOKEN_A), "{again}");
        let digests = count("SELECT count(*) FROM voxanne.webhook_credential_digests()", &[]);
        assert_eq!(digests, 0, "a revoked credential is no longer handed to the relay");
    }

    #[pg_test]
    fn a_token_belongs_to_one_org_and_is_kept_only_as_its_digest() {
        let org_a = org_with_agent("asst_cred_x");
        let org_b = org_with_agent("asst_cred_y");
        let id = add(&org_a, TOKEN_A);
        assert_eq!(add(&org_a, TOKEN_A), id, "registering it again is harmless");
        let err = error_of(&format!("SELECT voxanne.add_webhook_credential('{org_b}'::uuid, '{TOKEN_A}')"));
        assert!(err.starts_with("22023 "), "{err}");
        let short = error_of(&format!("SELECT voxanne.add_webhook_credential('{org_b}'::uuid, 'short')"));
        assert!(
            short.starts_with("22003 ") && short.contains("length(p_token)") && !short.contains("'short'"),
            "{short}"
        );
        let kept = count(
            "SELECT count(*) FROM voxanne.webhook_credentials
             WHERE digest = pg_catalog.sha256(convert_to($1, 'UTF8')) AND org_id = $2::uuid",
            &[TOKEN_A.into(), org_a.as_str().into()],
        );
        assert_eq!(kept, 1);
        let plain = count(
            "SELECT count(*) FROM voxanne.webhook_credentials AS c WHERE strpos(c::text, $1) > 0",
            &[TOKEN_A.into()],
        );
        assert_eq!(plain, 0, "the token itself is stored nowhere");
        assert_eq!(count("SELECT count(*) FROM voxanne.webhook_credential_digests()", &[]), 1);
    }
}
