//! `conversation-update`: the call's conversation so far, sent after every turn. With Vapi's
//! default `serverMessages` (which do not include `transcript`) it is how the lines arrive
//! while the call runs: each spoken entry is a `Line`, keyed like the same entry of the report's
//! `artifact.messages`, so each utterance is stored once whichever comes first.

use super::wire::{call_and_routes, message, spoken_lines, ListMessage};
use crate::error::VoxError;
use crate::jsonb::{JsonbOut, Node};
use crate::transcript::{Heard, LineEvent};

message! {
    struct ConversationUpdate {
        #[serde(borrow)]
        messages: Option<Vec<ListMessage<'a>>>,
    }
}

pub fn handle(message: Node<'_>, kind: &str) -> Result<JsonbOut, VoxError> {
    let msg: ConversationUpdate = super::decode(message)?;
    let lines = spoken_lines("message.messages", msg.messages.as_deref().unwrap_or_default())?;
    if lines.is_empty() {
        return Ok(super::acknowledge("conversation-update[no lines]", kind));
    }
    let (_, vapi_call_id, routes) = call_and_routes(&msg.call, msg.assistant_id.as_deref(), &msg.assistant)?;
    Ok(LineEvent { vapi_call_id, routes, heard: Heard::Listed, lines }.apply()?.of_message(kind).jsonb())
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{count, fixture_org, handle};

    const T0: i64 = 1_795_600_800_000;

    /// A call's message list as Vapi sends it: a system prompt, then user and bot turns
    /// (`[role, words, ms after T0]`), a tool call in between.
    fn list(turns: &[(&str, &str, i64)]) -> String {
        let mut entries =
            vec![r#"{"role":"system","message":"You are a receptionist.","time":1795600800000,"secondsFromStart":0}"#
                .to_string()];
        for (role, words, after) in turns {
            entries.push(format!(
                r#"{{"role":"{role}","message":"{words}","time":{},"endTime":{},"secondsFromStart":{}}}"#,
                T0 + after,
                T0 + after + 900,
                *after as f64 / 1000.0
            ));
        }
        entries.push(r#"{"role":"tool_calls","toolCalls":[{"id":"t1","type":"function","function":{"name":"book","arguments":"{}"}}],"time":1795600830000,"secondsFromStart":30}"#.to_string());
        format!("[{}]", entries.join(","))
    }

    fn update(turns: &[(&str, &str, i64)]) -> serde_json::Value {
        handle(&format!(
            r#"{{"message":{{"type":"conversation-update","messages":{},"call":{{"id":"conv-1","assistantId":"asst_fixture"}}}}}}"#,
            list(turns)
        ))
    }

    fn lines(org: &str) -> String {
        Spi::get_one_with_args(
            "SELECT string_agg(role || '@' || to_char(spoken_at AT TIME ZONE 'UTC', 'SS.MS') || ':' || text, ' | ' ORDER BY spoken_at, role)
             FROM voxanne.call_transcripts WHERE org_id = $1::uuid",
            &[org.into()],
        )
        .unwrap()
        .unwrap_or_default()
    }

    #[pg_test]
    fn each_spoken_line_is_stored_once_whichever_list_brings_it_first() {
        let org = fixture_org();
        let hello = ("bot", "Hello, Riverside Dental.", 1_000);
        let yes = ("user", "Yes.", 4_000);
        let first = update(&[hello, yes]);
        assert_eq!(
            (first["outcome"].clone(), first["lines"].clone(), first["stored"].clone()),
            ("applied".into(), 2.into(), 2.into())
        );
        // the next update repeats the conversation so far, and says "Yes." again, later
        let again = update(&[hello, yes, ("bot", "Tuesday at 3?", 6_000), ("user", "Yes.", 9_000)]);
        assert_eq!(again["stored"], 2);
        assert_eq!(update(&[hello, yes])["outcome"], "duplicate");
        // the report lists the whole call: only what no update brought is new
        let report = handle(&format!(
            r#"{{"message":{{"type":"end-of-call-report","endedReason":"customer-ended-call","analysis":{{"summary":"booked"}},"artifact":{{"messages":{}}},"call":{{"id":"conv-1","assistantId":"asst_fixture"}}}}}}"#,
            list(&[hello, yes, ("bot", "Tuesday at 3?", 6_000), ("user", "Yes.", 9_000), ("bot", "Booked.", 11_000)])
        ));
        assert_eq!(report["applied"], true);
        assert_eq!(
            lines(&org),
            "assistant@01.000:Hello, Riverside Dental. | user@04.000:Yes. | assistant@06.000:Tuesday at 3? | \
             user@09.000:Yes. | assistant@11.000:Booked."
        );
        let announced = count(
            "SELECT count(*) FROM voxanne.outbox WHERE org_id = $1::uuid AND topic = 'call.transcript'",
            &[org.as_str().into()],
        );
        assert_eq!(announced, 5, "one announcement per line");
    }

    #[pg_test]
    fn an_update_without_spoken_lines_is_acknowledged_and_a_bad_line_is_named() {
        let org = fixture_org();
        let out = handle(crate::testing::fixture!("conversation-update"));
        assert_eq!(out["ignored"], "conversation-update[no lines]");
        let err = crate::testing::error_of(&format!(
            "SELECT voxanne.handle_vapi_message('{}')",
            r#"{"message":{"type":"conversation-update","messages":[{"role":"user","message":"hi","time":"soon"}],"call":{"id":"c","assistantId":"asst_fixture"}}}"#
        ));
        assert!(err.starts_with("22023") && err.contains("message.messages[0].time"), "{err}");
        let err = crate::testing::error_of(&format!(
            "SELECT voxanne.handle_vapi_message('{}')",
            r#"{"message":{"type":"conversation-update","messages":[{"role":"user","message":"hi","time":1795600810500,"endTime":1795600810400}],"call":{"id":"c","assistantId":"asst_fixture"}}}"#
        ));
        assert!(err.starts_with("22023") && err.contains("message.messages[0].endTime"), "{err}");
        assert!(err.contains("is before message.messages[0].time"), "{err}");
        assert_eq!(crate::testing::rows_of_org(&org), 0);
    }
}
