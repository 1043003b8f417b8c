//! A status message before the end (scheduled, queued, ringing, in-progress, forwarding):
//! `create_inbound_call`, and the event the webhook's `status-update` decodes into. Creates the
//! call if this is its first message; a status older than the call's is merged, not applied.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::calls::CallMessage;
use crate::domain::{defaulted, moment, optional, required, CallStatus, ID_MAX, PHONE_MAX, SHORT_TEXT_MAX};
use crate::error::VoxError;
use crate::jsonb::JsonbOut;
use crate::outcome::Answer;
use crate::routing::{routed, Routed, Routes};

static STATUS: Routed = routed!("call_mark.sql", "status.sql", "call_announce.sql");

pub struct StatusEvent<'a> {
    pub vapi_call_id: &'a str,
    pub routes: Routes<'a>,
    pub status: CallStatus,
    pub customer_number: Option<&'a str>,
    pub phone_number_id: Option<&'a str>,
    /// None: `inboundPhoneCall`, as `create_inbound_call`'s DEFAULT.
    pub call_type: Option<&'a str>,
    /// None: now(), as `create_inbound_call`'s DEFAULT.
    pub occurred_at: Option<TimestampWithTimeZone>,
}

/// A status that is not the end: `ended` goes to `complete_call`.
pub fn before_end(field: &'static str, value: &str) -> Result<CallStatus, VoxError> {
    match CallStatus::parse(field, value)? {
        CallStatus::Ended => Err(VoxError::invalid(field, value, "an ended call goes through complete_call")),
        status => Ok(status),
    }
}

impl<'a> StatusEvent<'a> {
    pub fn apply(self) -> Result<Answer<'a>, VoxError> {
        let message = CallMessage {
            routes: self.routes,
            vapi_call_id: self.vapi_call_id,
            event_id: format!("status:{}:{}", self.vapi_call_id, self.status.as_str()),
            event_type: "status-update",
            topic: "call.status",
        };
        message.apply(
            &STATUS,
            [
                self.customer_number.into(),
                self.phone_number_id.into(),
                self.call_type.into(),
                self.status.as_str().into(),
                self.occurred_at.into(),
            ],
        )
    }
}

/// A status message before the end (queued, ringing, in-progress, forwarding). Creates the call
/// if this is its first message; a status older than the call's is merged but not applied.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn create_inbound_call(
    p_vapi_call_id: Option<&str>,
    p_assistant_id: Option<&str>,
    p_customer_number: default!(Option<&str>, "NULL"),
    p_phone_number_id: default!(Option<&str>, "NULL"),
    p_call_type: default!(Option<&str>, "'inboundPhoneCall'"),
    p_status: default!(Option<&str>, "'ringing'"),
    p_occurred_at: default!(Option<TimestampWithTimeZone>, "now()"),
) -> Result<JsonbOut, ErrorReport> {
    let event = StatusEvent {
        vapi_call_id: required("p_vapi_call_id", p_vapi_call_id, ID_MAX)?,
        routes: Routes::by_assistant("p_assistant_id", p_assistant_id)?,
        status: before_end("p_status", required("p_status", p_status, SHORT_TEXT_MAX)?)?,
        customer_number: optional("p_customer_number", p_customer_number, PHONE_MAX)?,
        phone_number_id: optional("p_phone_number_id", p_phone_number_id, ID_MAX)?,
        call_type: Some(required("p_call_type", p_call_type, SHORT_TEXT_MAX)?),
        occurred_at: Some(moment("p_occurred_at", defaulted("p_occurred_at", p_occurred_at)?)?),
    };
    Ok(event.apply()?.jsonb())
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{assert_refused, calls_of, count, json_of, org_with_agent, outbox_of, rows_of_org};

    const RINGING: &str = "SELECT voxanne.create_inbound_call(p_vapi_call_id => $1, p_assistant_id => $2,
                              p_customer_number => '+15550001111', p_phone_number_id => 'pn_1')";

    #[pg_test]
    fn first_status_creates_one_call_one_ledger_row_and_one_outbox_row() {
        let org = org_with_agent("asst_first");
        let out = json_of(RINGING, &["call-1".into(), "asst_first".into()]);
        assert_eq!(out["applied"], true);
        assert_eq!(out["outcome"], "applied");
        assert_eq!(out["org_id"], org.as_str());
        assert_eq!(out["status"], "ringing");
        assert!(out["call_id"].as_i64().is_some());
        assert_eq!(calls_of(&org), 1);
        assert_eq!(outbox_of(&org), 1);
        let topic: String = Spi::get_one_with_args(
            "SELECT topic || ':' || (payload->>'status') FROM voxanne.outbox WHERE org_id = $1::uuid",
            &[org.as_str().into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(topic, "call.status:ringing");
        let ledger = count(
            "SELECT count(*) FROM voxanne.processed_webhook_events
             WHERE org_id = $1::uuid AND event_id = 'status:call-1:ringing'",
            &[org.as_str().into()],
        );
        assert_eq!(ledger, 1);
    }

    #[pg_test]
    fn duplicate_status_is_not_applied_and_writes_nothing() {
        let org = org_with_agent("asst_dup");
        let first = json_of(RINGING, &["call-1".into(), "asst_dup".into()]);
        let before = rows_of_org(&org);
        let again = json_of(RINGING, &["call-1".into(), "asst_dup".into()]);
        assert_eq!(again["applied"], false);
        assert_eq!(again["outcome"], "duplicate");
        assert_eq!(again["call_id"], first["call_id"]);
        assert_eq!(rows_of_org(&org), before);
    }

    #[pg_test]
    fn status_moves_forward_and_a_late_ringing_is_stale() {
        let org = org_with_agent("asst_fwd");
        let args = || vec!["call-1".into(), "asst_fwd".into()];
        json_of("SELECT voxanne.create_inbound_call($1, $2, p_status => 'in-progress')", &args());
        let late = json_of("SELECT voxanne.create_inbound_call($1, $2, p_status => 'ringing')", &args());
        assert_eq!(late["applied"], false);
        assert_eq!(late["outcome"], "stale");
        assert_eq!(late["status"], "in-progress");
        json_of("SELECT voxanne.complete_call($1, $2)", &args());
        let reopen = json_of("SELECT voxanne.create_inbound_call($1, $2, p_status => 'forwarding')", &args());
        assert_eq!(reopen["outcome"], "stale");
        assert_eq!(reopen["status"], "ended");
        // stale messages announce nothing: in-progress and the report only
        assert_eq!(outbox_of(&org), 2);
    }

    #[pg_test]
    fn same_vapi_call_id_in_two_orgs_stays_two_calls() {
        let org_a = org_with_agent("asst_a");
        let org_b = org_with_agent("asst_b");
        let a = json_of(RINGING, &["shared-call".into(), "asst_a".into()]);
        let b = json_of(RINGING, &["shared-call".into(), "asst_b".into()]);
        assert_eq!(a["applied"], true);
        assert_eq!(b["applied"], true, "org B's first status is not a duplicate of org A's");
        assert_ne!(a["call_id"], b["call_id"]);
        assert_eq!((calls_of(&org_a), calls_of(&org_b)), (1, 1));
    }

    #[pg_test]
    fn lead_is_linked_by_org_and_customer_number() {
        let org_a = org_with_agent("asst_a");
        let org_b = org_with_agent("asst_b");
        Spi::run_with_args(
            "INSERT INTO voxanne.leads (org_id, phone, name) VALUES ($1::uuid, '+15550001111', 'B lead')",
            &[org_b.as_str().into()],
        )
        .unwrap();
        json_of(RINGING, &["call-a".into(), "asst_a".into()]);
        json_of(RINGING, &["call-b".into(), "asst_b".into()]);
        let linked = |org: &str| {
            count(
                "SELECT count(*) FROM voxanne.calls c JOIN voxanne.leads l ON l.org_id = c.org_id AND l.id = c.lead_id
                 WHERE c.org_id = $1::uuid",
                &[org.into()],
            )
        };
        assert_eq!(linked(&org_a), 0, "org B's lead must not attach to org A's call");
        assert_eq!(linked(&org_b), 1);
    }

    #[pg_test]
    fn bad_create_inbound_call_input_gets_its_sqlstate_names_the_argument_and_writes_nothing() {
        let org = org_with_agent("asst_bad");
        let long_id = "x".repeat(300);
        assert_refused(&[
            ("SELECT voxanne.create_inbound_call(NULL, 'asst_bad')".into(), "22004", "p_vapi_call_id"),
            ("SELECT voxanne.create_inbound_call('c', NULL)".into(), "22004", "p_assistant_id"),
            ("SELECT voxanne.create_inbound_call('', 'asst_bad')".into(), "22023", "p_vapi_call_id"),
            (format!("SELECT voxanne.create_inbound_call('{long_id}', 'asst_bad')"), "22001", "p_vapi_call_id"),
            ("SELECT voxanne.create_inbound_call('c', 'asst_bad', p_status => 'dialing')".into(), "22023", "'dialing'"),
            (
                "SELECT voxanne.create_inbound_call('c', 'asst_bad', p_status => 'ended')".into(),
                "22023",
                "complete_call",
            ),
            ("SELECT voxanne.create_inbound_call('c', 'asst_bad', p_status => NULL)".into(), "22004", "p_status"),
            (
                "SELECT voxanne.create_inbound_call('c', 'asst_bad', p_occurred_at => NULL)".into(),
                "22004",
                "p_occurred_at",
            ),
            (
                "SELECT voxanne.create_inbound_call('c', 'asst_bad', p_occurred_at => 'infinity')".into(),
                "22023",
                "p_occurred_at",
            ),
        ] as &[(String, &str, &str)]);
        assert_eq!(rows_of_org(&org), 0);
    }
}
