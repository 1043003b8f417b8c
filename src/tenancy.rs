//! `current_org_id()`: the caller's org as Supabase passes it, for RLS policies.
//!
//! PostgREST puts the verified JWT's claims in `request.jwt.claims`; the org lives in
//! `app_metadata` (which users cannot edit, unlike `user_metadata`).

use std::ffi::CStr;

use pgrx::datum::Uuid;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use serde::Deserialize;

use crate::error::VoxError;

#[derive(Deserialize)]
struct Claims {
    app_metadata: Option<AppMetadata>,
}

#[derive(Deserialize)]
struct AppMetadata {
    org_id: Option<String>,
}

/// The org id in `claims` (the JSON text of `request.jwt.claims`), if any.
pub fn org_id_from_claims(claims: &str) -> Result<Option<Uuid>, VoxError> {
    if claims.trim().is_empty() {
        return Ok(None);
    }
    let claims: Claims = serde_json::from_str(claims).map_err(|e| VoxError::BadClaims { reason: e.to_string() })?;
    let Some(org_id) = claims.app_metadata.and_then(|m| m.org_id) else {
        return Ok(None);
    };
    let parsed = uuid::Uuid::parse_str(&org_id)
        .map_err(|_| VoxError::BadClaims { reason: format!("app_metadata.org_id '{org_id}' is not a uuid") })?;
    Ok(Some(Uuid::from_bytes(parsed.into_bytes())))
}

/// NULL when there are no claims or no org in them: such a caller sees no tenant rows.
/// Malformed claims are an error rather than NULL, so a broken gateway fails loudly.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn current_org_id() -> Result<Option<Uuid>, ErrorReport> {
    // SAFETY: GetConfigOption returns NULL or a NUL-terminated string owned by the GUC system,
    // valid until the setting changes; it is copied before anything else runs.
    let claims = unsafe {
        let raw = pg_sys::GetConfigOption(c"request.jwt.claims".as_ptr(), true, false);
        if raw.is_null() {
            return Ok(None);
        }
        CStr::from_ptr(raw).to_string_lossy().into_owned()
    };
    Ok(org_id_from_claims(&claims)?)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::error_of;

    fn claims(json: &str) {
        Spi::run_with_args("SELECT set_config('request.jwt.claims', $1, true)", &[json.into()]).unwrap();
    }

    #[pg_test]
    fn current_org_id_reads_app_metadata_org_id() {
        claims(r#"{"sub":"u1","app_metadata":{"org_id":"6f1c2a8e-3b4d-4c5e-8f60-718293a4b5c6"}}"#);
        let org: Option<String> = Spi::get_one("SELECT voxanne.current_org_id()::text").unwrap();
        assert_eq!(org.as_deref(), Some("6f1c2a8e-3b4d-4c5e-8f60-718293a4b5c6"));
    }

    #[pg_test]
    fn missing_claims_or_org_give_null_and_user_metadata_is_ignored() {
        for c in ["", r#"{"sub":"u1"}"#, r#"{"user_metadata":{"org_id":"6f1c2a8e-3b4d-4c5e-8f60-718293a4b5c6"}}"#] {
            claims(c);
            let org: Option<String> = Spi::get_one("SELECT voxanne.current_org_id()::text").unwrap();
            assert_eq!(org, None, "claims {c:?}");
        }
    }

    #[pg_test]
    fn malformed_claims_fail_loudly() {
        claims(r#"{"app_metadata":{"org_id":"not-a-uuid"}}"#);
        let err = error_of("SELECT voxanne.current_org_id()");
        assert!(err.starts_with("28000") && err.contains("not-a-uuid"), "{err}");
        claims("{not json");
        assert!(error_of("SELECT voxanne.current_org_id()").starts_with("28000"));
    }
}
