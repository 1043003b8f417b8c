//! The one rule that finds the tenant of a message: the org of the active agent of its
//! assistant id; for a message with no assistant id (a squad, a transient assistant), the org
//! of the active agent of its phone number id. Never a value the sender states.
//!
//! The order of the ids is here; the lookup is the `agent` CTE every tenant statement starts
//! with: `sql/queries/route.sql` (by assistant) or `route_by_phone_number.sql`. Each statement
//! is kept in both forms (`routed!`), so the common one scans one index and nothing else.

use pgrx::datum::DatumWithOid;

use crate::domain::{optional, required, ID_MAX};
use crate::error::VoxError;
use crate::plans::Statement;

/// A tenant statement in its two forms: each route file followed by the files given, in order.
macro_rules! routed {
    ($($file:literal),+) => {
        $crate::routing::Routed {
            by_assistant: $crate::plans::Statement::new(concat!(
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/queries/route.sql")),
                $(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/queries/", $file))),+
            )),
            by_phone_number: $crate::plans::Statement::new(concat!(
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/queries/route_by_phone_number.sql")),
                $(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/queries/", $file))),+
            )),
        }
    };
}
pub(crate) use routed;

/// A tenant statement, kept once per route.
pub struct Routed {
    pub by_assistant: Statement,
    pub by_phone_number: Statement,
}

/// The id a message is routed by, with the field that carried it.
#[derive(Debug, Clone, Copy)]
pub enum Route<'a> {
    Assistant { field: &'static str, id: &'a str },
    PhoneNumber { field: &'static str, id: &'a str },
}

impl<'a> Route<'a> {
    /// The SQL functions: the caller names the assistant.
    pub fn by_assistant(field: &'static str, id: Option<&'a str>) -> Result<Self, VoxError> {
        Ok(Self::Assistant { field, id: required(field, id, ID_MAX)? })
    }

    /// A webhook: the first assistant id given (an empty one is not given), else the phone
    /// number id. With neither, the first assistant field is what is missing.
    pub fn first_of(
        assistants: [(&'static str, Option<&'a str>); 2],
        phone_number: (&'static str, Option<&'a str>),
    ) -> Result<Self, VoxError> {
        for (field, id) in assistants {
            if let Some(id) = optional(field, id, ID_MAX)? {
                return Ok(Self::Assistant { field, id });
            }
        }
        let (field, id) = phone_number;
        match optional(field, id, ID_MAX)? {
            Some(id) => Ok(Self::PhoneNumber { field, id }),
            None => Err(VoxError::missing(assistants[0].0)),
        }
    }

    /// The form of `statement` for this route.
    pub fn statement(&self, statement: &'static Routed) -> &'static Statement {
        match self {
            Self::Assistant { .. } => &statement.by_assistant,
            Self::PhoneNumber { .. } => &statement.by_phone_number,
        }
    }

    /// `$1` and `$2` of every tenant statement (the one not routed by is NULL).
    pub fn binds(&self) -> [DatumWithOid<'a>; 2] {
        match *self {
            Self::Assistant { id, .. } => [Some(id).into(), None::<&str>.into()],
            Self::PhoneNumber { id, .. } => [None::<&str>.into(), Some(id).into()],
        }
    }

    /// The error when no active agent has this id.
    pub fn unknown(&self) -> VoxError {
        match *self {
            Self::Assistant { field, id } | Self::PhoneNumber { field, id } => VoxError::unknown_agent(field, id),
        }
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{
        calls_of, error_of, fixture, fixture_org, handle, json_of, org_with_agent, outbox_of, rows_of_org,
    };

    const RINGING: &str = "SELECT voxanne.create_inbound_call(p_vapi_call_id => $1, p_assistant_id => $2,
                              p_customer_number => '+15550001111', p_phone_number_id => 'pn_1')";

    #[pg_test]
    fn org_a_assistant_cannot_touch_org_b_call() {
        let org_a = org_with_agent("asst_a");
        let org_b = org_with_agent("asst_b");
        json_of(RINGING, &["b-call".into(), "asst_b".into()]);
        // org A's assistant "completes" org B's call id: it can only create its own row
        json_of(
            "SELECT voxanne.complete_call($1, $2, p_ended_reason => 'hijack')",
            &["b-call".into(), "asst_a".into()],
        );
        let b_row: String = Spi::get_one_with_args(
            "SELECT status || '|' || coalesce(ended_reason, '-') FROM voxanne.calls WHERE org_id = $1::uuid",
            &[org_b.as_str().into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(b_row, "ringing|-");
        assert_eq!(calls_of(&org_a), 1);
        assert_eq!(outbox_of(&org_b), 1);
    }

    #[pg_test]
    fn unknown_or_inactive_assistant_is_rejected_and_writes_nothing() {
        let org = org_with_agent("asst_gone");
        let err = error_of("SELECT voxanne.create_inbound_call('call-1', 'asst_nobody')");
        assert_eq!(err, "42704 no active agent for p_assistant_id 'asst_nobody'");
        Spi::run("SELECT voxanne.upsert_agent(org_id, 'asst_gone', p_active => false) FROM voxanne.agents WHERE vapi_assistant_id = 'asst_gone'").unwrap();
        let err = error_of("SELECT voxanne.complete_call('call-1', 'asst_gone')");
        assert!(err.starts_with("42704"), "{err}");
        assert_eq!(rows_of_org(&org), 0);
    }

    #[pg_test]
    fn squad_call_without_assistant_id_resolves_by_phone_number() {
        let org = fixture_org();
        let out = handle(fixture!("status-update-squad-no-assistant"));
        assert_eq!(out["applied"], true);
        assert_eq!(out["org_id"], org.as_str());
    }
}
