//! The directory's verbs: which org a phone number, squad, workflow or Vapi org belongs to
//! (`voxanne.directory`; src/routing.rs has the order in which they route). Each sets the row to
//! what it is given; an id another org holds, active or not, is refused (23P01).

use pgrx::datum::Uuid;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::domain::{defaulted, optional, required, ID_MAX};
use crate::error::VoxError;
use crate::plans::Statement;
use crate::routing::Kind;

static UPSERT: Statement = Statement::new(
    "INSERT INTO voxanne.directory AS d (org_id, kind, vapi_id, vapi_assistant_id, vapi_squad_id, active)
          VALUES ($1, $2, $3, $4, $5, $6)
          ON CONFLICT (org_id, kind, vapi_id) DO UPDATE SET
              vapi_assistant_id = EXCLUDED.vapi_assistant_id,
              vapi_squad_id = EXCLUDED.vapi_squad_id,
              active = EXCLUDED.active,
              updated_at = pg_catalog.now()",
);

/// What a phone number's assistant-request is answered with, if anything.
struct Answer<'a> {
    assistant: Option<&'a str>,
    squad: Option<&'a str>,
}

fn upsert(
    org_id: Option<Uuid>,
    kind: Kind,
    (field, id): (&'static str, Option<&str>),
    answer: Answer<'_>,
    active: Option<bool>,
) -> Result<(), VoxError> {
    let org_id = org_id.ok_or(VoxError::missing("p_org_id"))?;
    let id = required(field, id, ID_MAX)?;
    let active = defaulted("p_active", active)?;
    Spi::connect_mut(|client| {
        UPSERT
            .run(
                client,
                &[
                    org_id.into(),
                    kind.as_str().into(),
                    id.into(),
                    answer.assistant.into(),
                    answer.squad.into(),
                    active.into(),
                ],
            )
            .map(drop)
    })?;
    Ok(())
}

/// Register a phone number of the org. Its calls route to the org; its assistant-request is
/// answered with the assistant or the squad given (at most one), or else by the app.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn upsert_phone_number(
    p_org_id: Option<Uuid>,
    p_vapi_phone_number_id: Option<&str>,
    p_vapi_assistant_id: default!(Option<&str>, "NULL"),
    p_active: default!(Option<bool>, "true"),
    p_vapi_squad_id: default!(Option<&str>, "NULL"),
) -> Result<(), ErrorReport> {
    let assistant = optional("p_vapi_assistant_id", p_vapi_assistant_id, ID_MAX)?;
    let squad = optional("p_vapi_squad_id", p_vapi_squad_id, ID_MAX)?;
    if let (Some(_), Some(squad)) = (assistant, squad) {
        return Err(VoxError::invalid(
            "p_vapi_squad_id",
            squad,
            "a number answers with an assistant or a squad, not both",
        )
        .into());
    }
    let id = ("p_vapi_phone_number_id", p_vapi_phone_number_id);
    Ok(upsert(p_org_id, Kind::PhoneNumber, id, Answer { assistant, squad }, p_active)?)
}

/// Register a Vapi org (`call.orgId`) as the org's: for a tenant that brings its own Vapi
/// account, every call of that account routes to the org.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn upsert_vapi_org(
    p_org_id: Option<Uuid>,
    p_vapi_org_id: Option<&str>,
    p_active: default!(Option<bool>, "true"),
) -> Result<(), ErrorReport> {
    let none = Answer { assistant: None, squad: None };
    Ok(upsert(p_org_id, Kind::VapiOrg, ("p_vapi_org_id", p_vapi_org_id), none, p_active)?)
}

/// Register a squad (`call.squadId`) as the org's.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn upsert_squad(
    p_org_id: Option<Uuid>,
    p_vapi_squad_id: Option<&str>,
    p_active: default!(Option<bool>, "true"),
) -> Result<(), ErrorReport> {
    let none = Answer { assistant: None, squad: None };
    Ok(upsert(p_org_id, Kind::Squad, ("p_vapi_squad_id", p_vapi_squad_id), none, p_active)?)
}

/// Register a workflow (`call.workflowId`) as the org's.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn upsert_workflow(
    p_org_id: Option<Uuid>,
    p_vapi_workflow_id: Option<&str>,
    p_active: default!(Option<bool>, "true"),
) -> Result<(), ErrorReport> {
    let none = Answer { assistant: None, squad: None };
    Ok(upsert(p_org_id, Kind::Workflow, ("p_vapi_workflow_id", p_vapi_workflow_id), none, p_active)?)
}
