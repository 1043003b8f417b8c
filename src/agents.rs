//! `upsert_agent`: registers which org a Vapi assistant (and optionally phone number) belongs to.

use pgrx::datum::Uuid;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::error::VoxError;
use crate::events::{defaulted, optional, required, ID_MAX, SHORT_TEXT_MAX};
use crate::plans::{Statement, BOOL, TEXT, UUID};


/// Activating an assistant that is active in another org fails on the exclusion constraint
/// (23P01), naming the assistant id in the detail.
static UPSERT: Statement = Statement {
    sql: "INSERT INTO voxanne.agents AS a (org_id, vapi_assistant_id, name, active, vapi_phone_number_id)
          VALUES ($1, $2, $3, $4, $5)
          ON CONFLICT (org_id, vapi_assistant_id) DO UPDATE SET
              name = COALESCE(EXCLUDED.name, a.name),
              active = EXCLUDED.active,
              vapi_phone_number_id = COALESCE(EXCLUDED.vapi_phone_number_id, a.vapi_phone_number_id),
              updated_at = pg_catalog.now()
          RETURNING a.id",
    arg_types: &[UUID, TEXT, TEXT, BOOL, TEXT],
};

/// Create or update the agent for (org, assistant) and return its id.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn upsert_agent(
    p_org_id: Option<Uuid>,
    p_vapi_assistant_id: Option<&str>,
    p_name: default!(Option<&str>, "NULL"),
    p_active: default!(Option<bool>, "true"),
    p_vapi_phone_number_id: default!(Option<&str>, "NULL"),
) -> Result<Uuid, ErrorReport> {
    let org_id = p_org_id.ok_or(VoxError::Missing { field: "p_org_id" })?;
    let assistant_id = required("p_vapi_assistant_id", p_vapi_assistant_id, ID_MAX)?;
    let name = optional("p_name", p_name, SHORT_TEXT_MAX)?;
    let active = defaulted("p_active", p_active)?;
    let phone_number_id = optional("p_vapi_phone_number_id", p_vapi_phone_number_id, ID_MAX)?;
    let id: Option<Uuid> = Spi::connect_mut(|client| {
        UPSERT
            .run(client, &[org_id.into(), assistant_id.into(), name.into(), active.into(), phone_number_id.into()])?
            .first()
            .get_one()
    })
    .map_err(VoxError::from)?;
    Ok(id.ok_or(VoxError::Spi(pgrx::spi::Error::NoTupleTable))?)
}
