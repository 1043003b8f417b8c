//! `upsert_agent`: registers which org a Vapi assistant (and optionally phone number) belongs to.

use pgrx::datum::Uuid;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::domain::{defaulted, optional, required, ID_MAX, SHORT_TEXT_MAX};
use crate::error::VoxError;
use crate::plans::Statement;

/// Activating an assistant that is active in another org fails on the exclusion constraint
/// (23P01), naming the assistant id in the detail.
static UPSERT: Statement = Statement::new(
    "INSERT INTO voxanne.agents AS a (org_id, vapi_assistant_id, name, active, vapi_phone_number_id)
          VALUES ($1, $2, $3, $4, $5)
          ON CONFLICT (org_id, vapi_assistant_id) DO UPDATE SET
              name = COALESCE(EXCLUDED.name, a.name),
              active = EXCLUDED.active,
              vapi_phone_number_id = COALESCE(EXCLUDED.vapi_phone_number_id, a.vapi_phone_number_id),
              updated_at = pg_catalog.now()
          RETURNING a.id",
);

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
    let org_id = p_org_id.ok_or(VoxError::missing("p_org_id"))?;
    let assistant_id = required("p_vapi_assistant_id", p_vapi_assistant_id, ID_MAX)?;
    let name = optional("p_name", p_name, SHORT_TEXT_MAX)?;
    let active = defaulted("p_active", p_active)?;
    let phone_number_id = optional("p_vapi_phone_number_id", p_vapi_phone_number_id, ID_MAX)?;
    let id: Option<Uuid> = Spi::connect_mut(|client| {
        UPSERT.first_value(
            client,
            &[org_id.into(), assistant_id.into(), name.into(), active.into(), phone_number_id.into()],
        )
    })
    .map_err(VoxError::from)?;
    Ok(id.ok_or(VoxError::Spi(pgrx::spi::Error::NoTupleTable))?)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{assert_refused, count, error_of, json_of, org_with_agent};

    #[pg_test]
    fn upsert_agent_is_idempotent_and_keeps_one_row() {
        let org = org_with_agent("asst_1");
        let again: String = Spi::get_one_with_args(
            "SELECT voxanne.upsert_agent($1::uuid, 'asst_1', 'Front desk')::text",
            &[org.as_str().into()],
        )
        .unwrap()
        .unwrap();
        let row: String =
            Spi::get_one("SELECT id::text || '|' || name FROM voxanne.agents WHERE vapi_assistant_id = 'asst_1'")
                .unwrap()
                .unwrap();
        assert_eq!(row, format!("{again}|Front desk"));
        assert_eq!(count("SELECT count(*) FROM voxanne.agents WHERE vapi_assistant_id = 'asst_1'", &[]), 1);
    }

    #[pg_test]
    fn an_assistant_is_active_in_only_one_org() {
        org_with_agent("asst_1");
        let err = error_of("SELECT voxanne.upsert_agent(gen_random_uuid(), 'asst_1')");
        assert!(err.starts_with("23P01"), "{err}");
        assert!(err.contains("agents_one_active_per_assistant"), "{err}");
        // inactive elsewhere is fine
        assert_eq!(error_of("SELECT voxanne.upsert_agent(gen_random_uuid(), 'asst_1', p_active => false)"), "ok");
    }

    #[pg_test]
    fn moving_an_assistant_to_another_org_reroutes_new_calls() {
        let old = org_with_agent("asst_1");
        Spi::run_with_args(
            "SELECT voxanne.upsert_agent($1::uuid, 'asst_1', p_active => false)",
            &[old.as_str().into()],
        )
        .unwrap();
        let new: String = Spi::get_one("SELECT gen_random_uuid()::text").unwrap().unwrap();
        Spi::run_with_args("SELECT voxanne.upsert_agent($1::uuid, 'asst_1')", &[new.as_str().into()]).unwrap();
        let out = json_of("SELECT voxanne.create_inbound_call('c1', 'asst_1')", &[]);
        assert_eq!(out["org_id"], new.as_str());
    }

    #[pg_test]
    fn bad_upsert_agent_input_gets_its_sqlstate_and_names_the_argument() {
        assert_refused(&[
            ("SELECT voxanne.upsert_agent(NULL, 'x')", "22004", "p_org_id"),
            ("SELECT voxanne.upsert_agent(gen_random_uuid(), 'x', p_active => NULL)", "22004", "p_active"),
        ]);
    }
}
