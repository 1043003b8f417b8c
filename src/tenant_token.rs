//! Signed tenant tokens: how a call of a transient assistant (an inline config with no saved
//! assistant id) finds its org. The platform's backend asks `tenant_token(org)` and puts the
//! value in `metadata.voxanne_tenant` of the assistant (or the call) it starts; a browser that
//! starts the call can read the token but not forge another org's, since each org's key stays
//! in the database. A bare org id in metadata would be forgeable by anyone.
//!
//! A token is `vxt1.<org uuid>.<hex HMAC-SHA256(org key, "voxanne.tenant.v1:" || org uuid)>`.

use hmac::{Hmac, Mac};
use pgrx::datum::Uuid;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use sha2::Sha256;

use crate::error::VoxError;
use crate::plans::Statement;

const PREFIX: &str = "vxt1.";
const CONTEXT: &[u8] = b"voxanne.tenant.v1:";
const KEY_LEN: usize = 32;

/// The org's key, created on first use. DO UPDATE rather than DO NOTHING: a concurrent first
/// call waits for the other's row and returns its key instead of none.
static KEY_OF: Statement = Statement::new(
    "INSERT INTO voxanne.tenant_keys AS k (org_id, key) VALUES ($1, $2)
     ON CONFLICT (org_id) DO UPDATE SET key = k.key
     RETURNING k.key",
);

static ROTATE: Statement = Statement::new(
    "INSERT INTO voxanne.tenant_keys AS k (org_id, key) VALUES ($1, $2)
     ON CONFLICT (org_id) DO UPDATE SET key = EXCLUDED.key, created_at = pg_catalog.now()
     RETURNING k.key",
);

static LOOKUP: Statement = Statement::new("SELECT k.key FROM voxanne.tenant_keys AS k WHERE k.org_id = $1");

fn random_key() -> Result<Vec<u8>, VoxError> {
    let mut key = vec![0u8; KEY_LEN];
    // SAFETY: the buffer is KEY_LEN bytes long, as passed.
    if unsafe { pg_sys::pg_strong_random(key.as_mut_ptr().cast(), KEY_LEN) } {
        Ok(key)
    } else {
        Err(VoxError::Internal("the server has no strong random source"))
    }
}

fn mac(key: &[u8], org: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(CONTEXT);
    mac.update(org.as_bytes());
    mac
}

fn token_of(statement: &'static Statement, org: Uuid) -> Result<String, VoxError> {
    let fresh = random_key()?;
    let key: Option<Vec<u8>> =
        Spi::connect_mut(|client| statement.first_value(client, &[org.into(), fresh.as_slice().into()]))?;
    let key = key.ok_or(VoxError::Internal("the key statement returned no row"))?;
    let org = org.to_string();
    Ok(format!("{PREFIX}{org}.{}", hex::encode(mac(&key, &org).finalize().into_bytes())))
}

/// The org a token names, if its signature is that org's; `field` is where it was found.
pub fn verify(client: &mut SpiClient<'_>, field: &'static str, token: &str) -> Result<Uuid, VoxError> {
    let bad = || VoxError::BadToken { field: field.into() };
    let (org, signature) = token.strip_prefix(PREFIX).and_then(|rest| rest.split_once('.')).ok_or_else(bad)?;
    let parsed = uuid::Uuid::try_parse(org).map_err(|_| bad())?;
    // the canonical spelling is what was signed
    if parsed.hyphenated().to_string() != org {
        return Err(bad());
    }
    let signature = hex::decode(signature).map_err(|_| bad())?;
    let org_id = Uuid::from_bytes(parsed.into_bytes());
    let key: Option<Vec<u8>> = LOOKUP.first_value(client, &[org_id.into()])?;
    let key = key.ok_or_else(bad)?;
    // verify_slice compares in constant time
    mac(&key, org).verify_slice(&signature).map_err(|_| bad())?;
    Ok(org_id)
}

/// The org's tenant token (the same value each time, until `rotate_tenant_key`). For the
/// platform's backend only: it goes in `metadata.voxanne_tenant` of a transient assistant.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn tenant_token(p_org_id: Option<Uuid>) -> Result<String, ErrorReport> {
    Ok(token_of(&KEY_OF, p_org_id.ok_or_else(|| VoxError::missing("p_org_id"))?)?)
}

/// A new key for the org: every token issued before stops routing. Returns the new token.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn rotate_tenant_key(p_org_id: Option<Uuid>) -> Result<String, ErrorReport> {
    Ok(token_of(&ROTATE, p_org_id.ok_or_else(|| VoxError::missing("p_org_id"))?)?)
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::error_of;

    fn token(org: &str) -> String {
        Spi::get_one_with_args("SELECT voxanne.tenant_token($1::uuid)", &[org.into()]).unwrap().unwrap()
    }

    #[pg_test]
    fn a_token_is_stable_until_its_key_is_rotated() {
        let org = "7a1c0f3e-5b2d-4e8f-9a6b-1c2d3e4f5a6b";
        let first = token(org);
        assert!(first.starts_with(&format!("vxt1.{org}.")), "{first}");
        assert_eq!(token(org), first);
        let rotated: String =
            Spi::get_one_with_args("SELECT voxanne.rotate_tenant_key($1::uuid)", &[org.into()]).unwrap().unwrap();
        assert_ne!(rotated, first);
        assert_eq!(token(org), rotated);
        assert!(error_of("SELECT voxanne.tenant_token(NULL)").starts_with("22004"));
    }
}
