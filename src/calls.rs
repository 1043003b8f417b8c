//! What every call message (a status, the end of a call) shares: its statement is
//! `route.sql` + `call_mark.sql` + the message's own effect + `call_announce.sql`, so the mark,
//! the outbox row and the answer are written once for all of them.

use pgrx::datum::{DatumWithOid, Uuid};

use crate::error::VoxError;
use crate::outcome::{Answer, Detail, Effect};
use crate::plans::Statement;
use crate::routing::{unset_binds, Routed, Routes};

/// The part of a call message that is not its values: who, which call, which event.
pub struct CallMessage<'a> {
    pub routes: Routes<'a>,
    pub vapi_call_id: &'a str,
    /// The idempotency key, unique per org.
    pub event_id: String,
    /// The ledger's event type, and the outbox payload's `source` of an end.
    pub event_type: &'static str,
    pub topic: &'static str,
}

/// A duplicate's statement wrote nothing and may not see the call (a concurrent duplicate's can
/// have been committed after the statement's snapshot); a fresh statement does. Answering it
/// from the main statement instead costs every applied message more executor set-up than it
/// saves on duplicates (docs/ARCHITECTURE.md).
static CALL_OF_DUPLICATE: Statement =
    Statement::new("SELECT c.id, c.status FROM voxanne.calls AS c WHERE c.org_id = $1 AND c.vapi_call_id = $2");

impl<'a> CallMessage<'a> {
    /// Run `statement` with this message's binds ($1 to $7) followed by `values` ($8 on).
    pub fn apply<const N: usize>(
        self,
        statement: &'static Routed,
        values: [DatumWithOid<'a>; N],
    ) -> Result<Answer<'a>, VoxError> {
        let mut args = Vec::from(unset_binds());
        args.extend([
            self.vapi_call_id.into(),
            self.event_id.as_str().into(),
            self.event_type.into(),
            self.topic.into(),
            crate::notify::notify().into(),
        ]);
        args.extend(values);
        let (effect, org_id, call_id, status) =
            self.routes.first_connected(statement, args, |client, form, args| {
                let table = form.run(client, args)?;
                // org_id, marked, call_id, status, outbox_id; no row: this route has no org
                let Some(row) = table.into_iter().next() else { return Ok(None) };
                let Some(org_id) = row.get::<Uuid>(1)? else { return Ok(None) };
                let marked: bool = row.get(2)?.unwrap_or(false);
                let (mut call_id, mut status): (Option<i64>, Option<String>) = (row.get(3)?, row.get(4)?);
                let outbox_id: Option<i64> = row.get(5)?;
                let effect = match (marked, outbox_id) {
                    (false, _) => Effect::Duplicate,
                    (true, Some(_)) => Effect::Applied,
                    (true, None) => Effect::Stale,
                };
                if effect == Effect::Duplicate {
                    if let Some(row) = CALL_OF_DUPLICATE.run(client, &[org_id.into(), self.vapi_call_id.into()])?.next()
                    {
                        (call_id, status) = (row.get(1)?, row.get(2)?);
                    }
                }
                Ok(Some((effect, org_id, call_id, status)))
            })?;
        let detail = Detail::Status { status };
        Ok(Answer::new(effect, org_id.to_string(), call_id, self.vapi_call_id, self.event_id, detail))
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{json_of, org_with_agent};

    /// Every order of a call's messages gives the same final row and transcript set.
    #[pg_test]
    fn every_permutation_of_a_calls_messages_gives_the_same_final_row() {
        let org = org_with_agent("asst_perm");
        let messages = [
            "SELECT voxanne.create_inbound_call($1, $2, p_customer_number => '+15550001111',
                 p_phone_number_id => 'pn_1', p_status => 'ringing', p_occurred_at => '2026-01-01 10:00:00+00')",
            "SELECT voxanne.create_inbound_call($1, $2, p_customer_number => '+15550001111',
                 p_phone_number_id => 'pn_1', p_status => 'in-progress', p_occurred_at => '2026-01-01 10:00:05+00')",
            "SELECT voxanne.record_transcript($1, $2, 'user', 'hello', '2026-01-01 10:00:06+00')",
            "SELECT voxanne.record_transcript($1, $2, 'assistant', 'hello', '2026-01-01 10:00:07+00')",
            "SELECT voxanne.complete_call($1, $2, p_ended_reason => 'customer-ended-call',
                 p_started_at => '2026-01-01 10:00:04+00', p_ended_at => '2026-01-01 10:01:00+00',
                 p_duration_seconds => 56, p_cost => 0.2, p_summary => 'booked', p_transcript => 'full',
                 p_recording_url => 'https://example.com/r.wav')",
            "SELECT voxanne.complete_call($1, $2, p_ended_reason => 'hangup',
                 p_ended_at => '2026-01-01 10:01:01+00', p_source => 'status-update')",
        ];
        let final_state = |vapi_call_id: &str| -> String {
            Spi::get_one_with_args(
                "SELECT row(c.agent_id, c.lead_id, c.call_type, c.customer_number, c.phone_number_id,
                            c.status, c.status_event_id, c.ended_reason, c.started_at, c.ended_at,
                            c.duration_seconds, c.cost, c.summary, c.transcript, c.recording_url)::text
                        || (SELECT string_agg(t.role || '@' || t.spoken_at || ':' || t.text, ',' ORDER BY t.spoken_at)
                            FROM voxanne.call_transcripts t WHERE t.org_id = c.org_id AND t.call_id = c.id)
                 FROM voxanne.calls c WHERE c.org_id = $1::uuid AND c.vapi_call_id = $2",
                &[org.as_str().into(), vapi_call_id.into()],
            )
            .unwrap()
            .unwrap()
        };
        // replace each call id in the row text so rows of different calls compare
        let mut expected: Option<String> = None;
        let mut order: Vec<usize> = (0..messages.len()).collect();
        let mut n = 0;
        permute(&mut order, 0, &mut |order| {
            n += 1;
            let id = format!("perm-{n}");
            for &m in order.iter() {
                json_of(messages[m], &[id.as_str().into(), "asst_perm".into()]);
            }
            let state = final_state(&id).replace(&id, "ID");
            match &expected {
                None => expected = Some(state),
                Some(e) => assert_eq!(&state, e, "order {order:?} diverged"),
            }
        });
        assert_eq!(n, 720);
        let e = expected.unwrap();
        assert!(e.contains("ended,report:ID,customer-ended-call,\"2026-01-01 10:00:04+00\""), "{e}");
    }

    fn permute(v: &mut Vec<usize>, k: usize, f: &mut dyn FnMut(&[usize])) {
        if k == v.len() {
            f(v);
            return;
        }
        for i in k..v.len() {
            v.swap(k, i);
            permute(v, k + 1, f);
            v.swap(k, i);
        }
    }
}
