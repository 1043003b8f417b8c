//! `record_rejected_event`: the dead letter. A body `handle_vapi_message` refused is kept raw,
//! whatever it is (not JSON, not UTF-8-clean JSON that jsonb refuses, any size), so nothing a
//! sender posted is lost. It clips what it must and never refuses a body: a refusal here would
//! leave the relay nothing to answer but 500, and the sender would retry forever.

use std::borrow::Cow;

use pgrx::datum::Uuid;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use serde::Deserialize;

use crate::domain::SUMMARY_MAX;
use crate::error::{clip_to, VoxError};
use crate::plans::Statement;
use crate::routing::{routed, unset_binds, Routed};
use crate::vapi::wire::{routes, Assistant, Call};

static ORG_OF: Routed = routed!("org_of.sql");
static INSERT_REJECTED: Statement = Statement::new(include_str!("../sql/queries/rejected.sql"));

/// A SQLSTATE is five characters.
const SQLSTATE_LEN: usize = 5;

/// What labels a rejected body, read leniently: anything missing or malformed is just absent.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Envelope<'a> {
    #[serde(borrow)]
    message: Option<Labels<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Labels<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    call: Option<Call<'a>>,
    #[serde(borrow)]
    assistant: Option<Assistant<'a>>,
    #[serde(borrow, rename = "assistantId")]
    assistant_id: Option<Cow<'a, str>>,
}

/// Store a webhook that `handle_vapi_message` rejected, raw. The relay calls this after the
/// failed statement (whose transaction rolled back).
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn record_rejected_event(
    p_body: Option<&str>,
    p_sqlstate: Option<&str>,
    p_message: default!(Option<&str>, "NULL"),
) -> Result<i64, ErrorReport> {
    let body = p_body.ok_or_else(|| VoxError::missing("p_body"))?;
    let sqlstate = clip_to(p_sqlstate.ok_or_else(|| VoxError::missing("p_sqlstate"))?, SQLSTATE_LEN);
    let message = p_message.map(|m| clip_to(m, SUMMARY_MAX));
    let labels = serde_json::from_str::<Envelope>(body).ok().and_then(|e| e.message).unwrap_or_default();
    let call = labels.call.as_ref().and_then(|c| c.id.as_deref());
    let id: Option<i64> = Spi::connect_mut(|client| {
        // the org of the rule that would have routed it; none when the rule finds nothing (or
        // refuses a token)
        let org = routes(labels.call.as_ref(), labels.assistant_id.as_deref(), labels.assistant.as_ref())
            .and_then(|routes| {
                routes.first(client, &ORG_OF, &mut unset_binds(), |client, form, args| {
                    Ok(form.first_value::<Uuid>(client, args)?)
                })
            })
            .ok();
        INSERT_REJECTED.first_value(
            client,
            &[org.into(), body.into(), sqlstate.into(), message.into(), labels.kind.as_deref().into(), call.into()],
        )
    })
    .map_err(VoxError::from)?;
    Ok(id.ok_or(VoxError::Spi(pgrx::spi::Error::NoTupleTable))?)
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{count, fixture_org};

    #[pg_test]
    fn rejected_events_keep_the_raw_body_with_its_org_when_known() {
        let org = fixture_org();
        let body = r#"{"message":{"type":"status-update","status":"dialing","call":{"id":"c9","assistantId":"asst_fixture"}}}"#;
        let id: i64 = Spi::get_one_with_args(
            "SELECT voxanne.record_rejected_event($1, '22023', 'message.status has invalid value')",
            &[body.into()],
        )
        .unwrap()
        .unwrap();
        let row: String = Spi::get_one_with_args(
            "SELECT concat_ws('|', org_id, sqlstate, message_type, vapi_call_id, body = $2)
             FROM voxanne.rejected_events WHERE id = $1",
            &[id.into(), body.into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(row, format!("{org}|22023|status-update|c9|t"));
        // a body that is not even JSON (or holds \u0000, which jsonb refuses) is kept too, with no org
        let junk = r#"{"message": "\u0000 not json"#;
        Spi::run_with_args("SELECT voxanne.record_rejected_event($1, '22P02')", &[junk.into()]).unwrap();
        assert_eq!(
            count("SELECT count(*) FROM voxanne.rejected_events WHERE org_id IS NULL AND body = $1", &[junk.into()]),
            1
        );
    }

    #[pg_test]
    fn a_body_refused_again_is_counted_on_its_row_with_the_latest_refusal() {
        let body = r#"{"message":{"type":"status-update","status":"dialing","call":{"id":"c-again"}}}"#;
        let record = |sqlstate: &str| -> i64 {
            Spi::get_one_with_args(
                "SELECT voxanne.record_rejected_event($1, $2, 'why')",
                &[body.into(), sqlstate.into()],
            )
            .unwrap()
            .unwrap()
        };
        let first = record("22023");
        assert_eq!(record("22023"), first);
        assert_eq!(record("42704"), first, "the same row");
        let row: String = Spi::get_one_with_args(
            "SELECT concat_ws('|', count(*), max(times_seen), max(sqlstate), bool_and(last_seen_at >= received_at))
             FROM voxanne.rejected_events WHERE body = $1",
            &[body.into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(row, "1|3|42704|t");
        // a body that differs by a byte is another row
        assert_ne!(
            Spi::get_one_with_args::<i64>("SELECT voxanne.record_rejected_event($1 || ' ', '22023')", &[body.into()])
                .unwrap()
                .unwrap(),
            first
        );
    }

    /// A refusal here would leave the relay only a 500 to answer, and the sender would retry
    /// forever: whatever its size, a body is kept, and what labels it is clipped.
    #[pg_test]
    fn the_dead_letter_clips_and_never_refuses_a_body() {
        let big = format!(r#"{{"message":{{"type":"hang","pad":"{}"}}}}"#, "x".repeat(3 * 1024 * 1024));
        let long_message = "m".repeat(100_000);
        let id: i64 = Spi::get_one_with_args(
            "SELECT voxanne.record_rejected_event($1, '22023-and-more', $2)",
            &[big.as_str().into(), long_message.as_str().into()],
        )
        .unwrap()
        .unwrap();
        let row: String = Spi::get_one_with_args(
            "SELECT concat_ws('|', length(body), sqlstate, length(message)) FROM voxanne.rejected_events WHERE id = $1",
            &[id.into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(row, format!("{}|22023|65536", big.len()));
        let empty: i64 = Spi::get_one("SELECT voxanne.record_rejected_event('', '22P02')").unwrap().unwrap();
        assert_eq!(
            count("SELECT count(*) FROM voxanne.rejected_events WHERE id = $1 AND body = ''", &[empty.into()]),
            1
        );
    }
}
