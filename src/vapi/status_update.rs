//! `status-update`: a status before the end is a `StatusEvent`, `ended` is an `EndEvent`.

use std::borrow::Cow;

use super::wire::{call_and_routes, message};
use crate::domain::{optional, required, CallStatus, ID_MAX, PHONE_MAX, SHORT_TEXT_MAX};
use crate::ending::{ended_reason, EndEvent};
use crate::error::VoxError;
use crate::jsonb::{JsonbOut, Node};
use crate::status::StatusEvent;

message! {
    struct StatusUpdate {
        #[serde(borrow)]
        status: Option<Cow<'a, str>>,
        #[serde(borrow)]
        ended_reason: Option<Cow<'a, str>>,
    }
}

pub fn handle(message: Node<'_>, kind: &str) -> Result<JsonbOut, VoxError> {
    let msg: StatusUpdate = super::decode(message)?;
    let (call, vapi_call_id, routes) = call_and_routes(&msg.call, msg.assistant_id.as_deref(), &msg.assistant)?;
    let at = msg.timestamp.as_ref().map(|t| t.resolve("message.timestamp")).transpose()?;
    let status = required("message.status", msg.status.as_deref(), SHORT_TEXT_MAX)?;
    let status = match CallStatus::parse("message.status", status) {
        Ok(status) => status,
        // not-found, deletion-failed and values Vapi adds later are no step of a call's life:
        // acknowledged, so they never move a call and are never refused
        Err(_) => return Ok(super::acknowledge(&format!("status-update[{status}]"), kind)),
    };
    let answer = if status == CallStatus::Ended {
        let reason = ended_reason("message.endedReason", msg.ended_reason.as_deref())?;
        EndEvent::by_status(vapi_call_id, routes, reason, at).apply()?
    } else {
        StatusEvent {
            vapi_call_id,
            routes,
            status,
            customer_number: optional(
                "message.call.customer.number",
                call.customer.as_ref().and_then(|c| c.number.as_deref()),
                PHONE_MAX,
            )?,
            phone_number_id: optional("message.call.phoneNumberId", call.phone_number_id.as_deref(), ID_MAX)?,
            call_type: call
                .call_type
                .as_deref()
                .map(|t| required("message.call.type", Some(t), SHORT_TEXT_MAX))
                .transpose()?,
            occurred_at: at,
        }
        .apply()?
    };
    Ok(answer.of_message(kind).jsonb())
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{call_row, fixture, fixture_org, handle, FIXTURE_CALL_ID as CALL_ID};

    #[pg_test]
    fn status_update_with_millisecond_timestamp_creates_the_call() {
        let org = fixture_org();
        let out = handle(fixture!("status-update-ringing"));
        assert_eq!(out["applied"], true);
        assert_eq!(out["message_type"], "status-update");
        assert_eq!(out["org_id"], org.as_str());
        assert_eq!(call_row(&org, CALL_ID), "ringing|inboundPhoneCall|+15551230001|pn_fixture");
        let at: String = Spi::get_one("SELECT payload->>'occurred_at' FROM voxanne.outbox ORDER BY id DESC LIMIT 1")
            .unwrap()
            .unwrap();
        assert_eq!(at, "2026-11-25T10:00:00+00:00");
    }

    #[pg_test]
    fn status_update_with_iso_timestamp_sets_started_at() {
        let org = fixture_org();
        handle(fixture!("status-update-in-progress-iso-timestamp"));
        assert_eq!(
            call_row(&org, CALL_ID),
            "in-progress|inboundPhoneCall|+15551230001|pn_fixture|2026-11-25 10:00:05.25+00"
        );
    }

    #[pg_test]
    fn status_ended_in_exponent_notation_completes_the_call() {
        let org = fixture_org();
        let out = handle(fixture!("status-update-ended"));
        assert_eq!(out["applied"], true);
        assert_eq!(out["event_id"], format!("status:{CALL_ID}:ended"));
        assert_eq!(call_row(&org, CALL_ID), "ended|customer-ended-call|2026-11-25 10:01:01.5+00");
    }
}
