//! Messages Vapi takes the HTTP answer of as its reply (assistant-request, tool-calls, …). The
//! answer carries `reply`, the body Vapi must get, and `upstream`, whether the app should be
//! asked instead: the relay forwards the message to its `--upstream-url` and passes that
//! answer back, or sends `reply` when there is no upstream or it fails (relay/README.md).
//!
//! The database answers what it owns: assistant-request from the phone-number registry. For
//! the rest, `reply` is the well-formed refusal each type documents, so a call never gets a
//! body Vapi cannot read.

use pgrx::datum::Uuid;
use pgrx::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::wire::Call;
use crate::domain::{optional, ID_MAX};
use crate::error::VoxError;
use crate::jsonb::{JsonbOut, Node};
use crate::plans::Statement;

/// What the endpointing reply tells Vapi to wait when the app does not answer: Vapi's own
/// default for a pause after speech (`StartSpeakingPlan`'s wait), in seconds.
const DEFAULT_ENDPOINTING_SECONDS: f64 = 0.4;

/// The answer of a phone number's assistant-request: the directory's entry, else the agent that
/// registered the number (0.2.0). An inactive entry answers nothing.
static NUMBER_ANSWER: Statement = Statement::new(
    "SELECT r.org_id, r.vapi_assistant_id, r.vapi_squad_id FROM (
         SELECT d.org_id, d.vapi_assistant_id, d.vapi_squad_id, 1 AS rank
         FROM voxanne.directory AS d
         WHERE d.active AND d.kind = 'phone_number' AND d.vapi_id = $1
         UNION ALL
         SELECT a.org_id, a.vapi_assistant_id, NULL, 2
         FROM voxanne.agents AS a
         WHERE a.active AND a.vapi_phone_number_id = $1
     ) AS r
     ORDER BY r.rank
     LIMIT 1",
);

#[derive(Serialize)]
struct Reply<'a> {
    applied: bool,
    message_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    org_id: Option<String>,
    reply: Value,
    upstream: bool,
}

#[derive(Deserialize)]
struct AssistantRequest<'a> {
    #[serde(borrow)]
    call: Option<Call<'a>>,
}

/// How a reply-expecting type is answered.
enum Answer {
    /// From the phone-number registry.
    AssistantRequest,
    /// The app's to answer (`upstream`); this reply when it does not.
    Refusal(fn() -> Value),
}

fn no_app(what: &str) -> Value {
    json!({ "error": format!("no {what} is configured for this assistant") })
}

/// Every type Vapi takes the HTTP answer of as its reply, and how it is answered. The relay
/// reads the names (`reply_message_types`): it must never spool these, Vapi waits for them.
const REPLY_TYPES: [(&str, Answer); 8] = [
    ("assistant-request", Answer::AssistantRequest),
    ("tool-calls", Answer::Refusal(|| no_app("tool handler"))),
    ("transfer-destination-request", Answer::Refusal(|| no_app("transfer destination"))),
    // the SDK's response requires a destination: an empty one, with the error
    (
        "handoff-destination-request",
        Answer::Refusal(
            || json!({ "destination": {}, "error": "no handoff destination is configured for this assistant" }),
        ),
    ),
    ("knowledge-base-request", Answer::Refusal(|| json!({ "documents": [] }))),
    ("call.endpointing.request", Answer::Refusal(|| json!({ "timeoutSeconds": DEFAULT_ENDPOINTING_SECONDS }))),
    ("campaign.predial", Answer::Refusal(|| json!({ "eligible": false }))),
    // Vapi wants raw PCM audio here, which only the app can make
    ("voice-request", Answer::Refusal(|| Value::Null)),
];

/// The message types whose HTTP answer Vapi takes as its reply.
#[pg_extern(immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn reply_message_types() -> Vec<String> {
    REPLY_TYPES.iter().map(|(kind, _)| kind.to_string()).collect()
}

/// The reply of a reply-expecting type, or None for a type that expects none.
pub fn handle(message: Node<'_>, kind: &str) -> Option<Result<JsonbOut, VoxError>> {
    let (_, answer) = REPLY_TYPES.iter().find(|(reply_type, _)| *reply_type == kind)?;
    Some(match answer {
        Answer::AssistantRequest => assistant_request(message, kind),
        Answer::Refusal(reply) => Ok(JsonbOut::of(&Reply {
            applied: false,
            message_type: kind,
            org_id: None,
            reply: reply(),
            upstream: true,
        })),
    })
}

/// A number registered with an assistant or a squad is answered here; any other is the app's.
fn assistant_request(message: Node<'_>, kind: &str) -> Result<JsonbOut, VoxError> {
    let msg: AssistantRequest = super::decode(message)?;
    let number = msg.call.as_ref().and_then(|c| c.phone_number_id.as_deref());
    let number = optional("message.call.phoneNumberId", number, ID_MAX)?;
    let found = match number {
        Some(number) => Spi::connect_mut(|client| -> Result<_, VoxError> {
            let row = NUMBER_ANSWER.run(client, &[number.into()])?.next();
            Ok(match row {
                Some(row) => Some((row.get::<Uuid>(1)?, row.get::<String>(2)?, row.get::<String>(3)?)),
                None => None,
            })
        })?,
        None => None,
    };
    let (org_id, reply, upstream) = match found {
        Some((org, Some(assistant), _)) => (org, json!({ "assistantId": assistant }), false),
        Some((org, None, Some(squad))) => (org, json!({ "squadId": squad }), false),
        Some((org, None, None)) => (org, json!({ "error": "no assistant is configured for this phone number" }), true),
        None => (None, json!({ "error": "this phone number is not registered" }), true),
    };
    let org_id = org_id.map(|o| o.to_string());
    Ok(JsonbOut::of(&Reply { applied: false, message_type: kind, org_id, reply, upstream }))
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;
    use serde_json::json;

    use crate::testing::{fixture, fixture_org, handle, rows_of_org};

    const REQUEST: &str =
        r#"{"message":{"type":"assistant-request","call":{"id":"c1","orgId":"v","phoneNumberId":"pn_reg"}}}"#;

    #[pg_test]
    fn assistant_request_is_answered_from_the_phone_number_registry() {
        let org: String = Spi::get_one("SELECT gen_random_uuid()::text").unwrap().unwrap();
        let register = |args: &str| {
            Spi::run_with_args(
                &format!("SELECT voxanne.upsert_phone_number($1::uuid, 'pn_reg'{args})"),
                &[org.as_str().into()],
            )
            .unwrap()
        };
        let unregistered = handle(REQUEST);
        assert_eq!(unregistered["upstream"], true);
        assert!(unregistered["reply"]["error"].is_string(), "{unregistered}");
        register(", 'asst_front'");
        let out = handle(REQUEST);
        assert_eq!(
            (out["reply"].clone(), out["upstream"].clone()),
            (json!({"assistantId": "asst_front"}), json!(false))
        );
        assert_eq!(out["org_id"], org.as_str());
        register(", p_vapi_squad_id => 'squad_night'");
        assert_eq!(handle(REQUEST)["reply"], json!({"squadId": "squad_night"}));
        // a number of the org with no assistant: the app picks one (assistant-request's purpose)
        register("");
        let app = handle(REQUEST);
        assert_eq!((app["upstream"].clone(), app["org_id"].clone()), (json!(true), json!(org)));
        assert!(app["reply"]["error"].is_string());
        // 0.2.0: a number registered on an agent answers that agent's assistant
        let legacy = fixture_org();
        let out = handle(fixture!("assistant-request"));
        assert_eq!(
            (out["reply"].clone(), out["org_id"].clone()),
            (json!({"assistantId": "asst_fixture"}), json!(legacy))
        );
        assert_eq!(rows_of_org(&legacy), 0, "a reply writes nothing");
    }

    #[pg_test]
    fn every_reply_expecting_type_gets_a_body_vapi_can_read() {
        for (kind, reply) in [
            ("tool-calls", json!({"error": "no tool handler is configured for this assistant"})),
            (
                "transfer-destination-request",
                json!({"error": "no transfer destination is configured for this assistant"}),
            ),
            (
                "handoff-destination-request",
                json!({"destination": {}, "error": "no handoff destination is configured for this assistant"}),
            ),
            ("knowledge-base-request", json!({"documents": []})),
            ("call.endpointing.request", json!({"timeoutSeconds": super::DEFAULT_ENDPOINTING_SECONDS})),
            ("campaign.predial", json!({"eligible": false})),
            ("voice-request", json!(null)),
        ] {
            let out = handle(&format!(r#"{{"message":{{"type":"{kind}","call":{{"id":"c"}}}}}}"#));
            assert_eq!(out, json!({"applied": false, "message_type": kind, "reply": reply, "upstream": true}));
        }
        // tool-calls is the one message whose `type` the SDK makes optional
        let untyped = handle(
            r#"{"message":{"toolCallList":[{"id":"t","type":"function","function":{"name":"f","arguments":"{}"}}]}}"#,
        );
        assert_eq!(untyped["message_type"], "tool-calls");
    }
}
