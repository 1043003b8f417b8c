//! Every credential scheme Vapi sends, through the real relay over real HTTP into the real
//! database: the right credential is applied; a wrong, missing, replayed, expired or other-org
//! one is refused with nothing written. Signatures are computed by Python's `hmac` over the
//! payload each plan names, not by the relay's code.

mod common;

use std::process::Command;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;
use voxanne_relay::verify::unix_now;

/// The HMAC of `payload` under `key` with `algorithm` (sha256, sha512, sha1), in `encoding`
/// (hex or base64), as Python's standard library computes it.
fn python_hmac(algorithm: &str, key: &[u8], payload: &[u8], encoding: &str) -> String {
    let script = format!(
        "import sys,hmac,hashlib,base64\n\
         key=bytes.fromhex(sys.argv[1]); payload=bytes.fromhex(sys.argv[2])\n\
         d=hmac.new(key,payload,hashlib.{algorithm}).digest()\n\
         print(d.hex() if '{encoding}'=='hex' else base64.b64encode(d).decode(),end='')"
    );
    let out = Command::new("python3")
        .args(["-c", &script, &hex::encode(key), &hex::encode(payload)])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A status-update of a new call for `t`; its call id.
fn ringing(t: &Tenant) -> (String, String) {
    let call = new_call_id();
    (status_update(&t.assistant, &call, "ringing"), call)
}

async fn post(relay: &Relay, body: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    answer(relay.post(body.to_string(), headers).await).await
}

async fn rejected(db: &tokio_postgres::Client, body: &str, sqlstate: &str) -> i64 {
    count(db, "SELECT count(*) FROM voxanne.rejected_events WHERE body = $1 AND sqlstate = $2", &[&body, &sqlstate])
        .await
}

#[tokio::test]
async fn a_bearer_token_is_accepted_as_vapi_sends_it_and_a_wrong_one_writes_nothing() {
    let db = db().await;
    let t = tenant(&db).await;
    let relay = start_relay(&["--bearer-tokens", "platform-old,platform-new"]).await;
    for token in ["platform-old", "platform-new"] {
        let (body, call) = ringing(&t);
        let bearer = format!("Bearer {token}");
        let (status, json) = post(&relay, &body, &[("authorization", &bearer)]).await;
        assert_eq!((status, &json["outcome"]), (StatusCode::OK, &"applied".into()), "{json}");
        assert_eq!(calls(&db, &call).await, 1);
    }
    for (headers, why) in [
        (vec![("authorization", "Bearer platform-retired")], "invalid token"),
        (vec![("authorization", "platform-new")], "invalid token"),
        (vec![("authorization", "Basic platform-new")], "invalid token"),
        (vec![], "missing credentials: send authorization: Bearer <token>, or x-vapi-secret: <token>"),
    ] {
        let (body, call) = ringing(&t);
        let (status, json) = post(&relay, &body, &headers).await;
        assert_eq!((status, json["message"].as_str()), (StatusCode::UNAUTHORIZED, Some(why)), "{headers:?}");
        assert_eq!(calls(&db, &call).await, 0);
    }
    // the legacy header still works beside it (the harness's shared secret)
    let (body, call) = ringing(&t);
    assert_eq!(post(&relay, &body, &[("x-vapi-secret", SECRET)]).await.0, StatusCode::OK);
    assert_eq!(calls(&db, &call).await, 1);
}

#[tokio::test]
async fn a_bearer_plan_with_its_own_header_and_no_prefix_is_accepted() {
    let db = db().await;
    let t = tenant(&db).await;
    let relay =
        start_relay(&["--bearer-tokens", "tok-1", "--bearer-header", "x-relay-token", "--bearer-prefix", "false"])
            .await;
    let (body, call) = ringing(&t);
    assert_eq!(post(&relay, &body, &[("x-relay-token", "tok-1")]).await.0, StatusCode::OK);
    let (body2, call2) = ringing(&t);
    assert_eq!(post(&relay, &body2, &[("authorization", "Bearer tok-1")]).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!((calls(&db, &call).await, calls(&db, &call2).await), (1, 0));
}

/// Vapi's HMAC plans: the defaults, and every option changed at least once.
#[tokio::test]
async fn every_hmac_plan_is_verified_as_vapi_signs_and_replays_are_refused() {
    let db = db().await;
    let t = tenant(&db).await;
    struct Plan {
        flags: Vec<&'static str>,
        algorithm: &'static str,
        encoding: &'static str,
        key: &'static [u8],
        /// the signed payload, from the timestamp, the message id and the body
        payload: fn(&str, &str, &str) -> String,
        signature_header: &'static str,
        prefix: &'static str,
        timestamp: fn() -> String,
    }
    let plans = [
        Plan {
            flags: vec![],
            algorithm: "sha256",
            encoding: "hex",
            key: b"hmac-key-1",
            payload: |ts, _, body| format!("{ts}.{body}"),
            signature_header: "x-signature",
            prefix: "",
            timestamp: || unix_now().to_string(),
        },
        Plan {
            flags: vec![
                "--hmac-algorithm",
                "sha512",
                "--hmac-signature-encoding",
                "base64",
                "--hmac-signature-prefix",
                "sha512=",
                "--hmac-signature-header",
                "x-vapi-signature",
                "--hmac-include-timestamp",
                "false",
            ],
            algorithm: "sha512",
            encoding: "base64",
            key: b"hmac-key-1",
            payload: |_, _, body| body.to_string(),
            signature_header: "x-vapi-signature",
            prefix: "sha512=",
            timestamp: String::new,
        },
        Plan {
            flags: vec![
                "--hmac-algorithm",
                "sha1",
                "--hmac-secret-is-base64",
                "true",
                "--hmac-payload-format",
                "{svix-id}.{timestamp}.{body}",
                "--hmac-message-id-header",
                "svix-id",
                "--hmac-timestamp-header",
                "svix-timestamp",
                "--hmac-signature-prefix",
                "v1,",
            ],
            algorithm: "sha1",
            encoding: "hex",
            key: b"hmac-key-1",
            payload: |ts, id, body| format!("{id}.{ts}.{body}"),
            signature_header: "x-signature",
            prefix: "v1,",
            // milliseconds
            timestamp: || (unix_now() * 1000).to_string(),
        },
        Plan {
            flags: vec![
                "--hmac-payload-format",
                "{method} {url}|{timestamp}|{body}",
                "--hmac-url",
                "https://relay.example/vapi/webhook",
            ],
            algorithm: "sha256",
            encoding: "hex",
            key: b"hmac-key-1",
            payload: |ts, _, body| format!("POST https://relay.example/vapi/webhook|{ts}|{body}"),
            signature_header: "x-signature",
            prefix: "",
            timestamp: || unix_now().to_string(),
        },
    ];
    for plan in &plans {
        let base64_key = base64_of(plan.key);
        let key_flag = if plan.flags.contains(&"--hmac-secret-is-base64") { base64_key.as_str() } else { "hmac-key-1" };
        let mut flags = vec!["--hmac-secrets", key_flag];
        flags.extend(plan.flags.iter().copied());
        let relay = start_relay(&flags).await;
        let timestamp_header = if plan.flags.contains(&"svix-timestamp") { "svix-timestamp" } else { "x-timestamp" };
        let signed = |body: &str, ts: &str, key: &[u8]| {
            let id = "msg_2Lh9";
            let signature = python_hmac(plan.algorithm, key, (plan.payload)(ts, id, body).as_bytes(), plan.encoding);
            let mut headers =
                vec![(plan.signature_header, format!("{}{signature}", plan.prefix)), ("svix-id", id.into())];
            if !ts.is_empty() {
                headers.push((timestamp_header, ts.to_string()));
            }
            headers
        };
        let send = |headers: Vec<(&'static str, String)>, body: String| {
            let relay = &relay;
            async move {
                let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                post(relay, &body, &pairs).await
            }
        };

        let (body, call) = ringing(&t);
        let (status, json) = send(signed(&body, &(plan.timestamp)(), plan.key), body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{:?}: {json}", plan.flags);
        assert_eq!(calls(&db, &call).await, 1);

        let (body, call) = ringing(&t);
        let (status, _) = send(signed(&body, &(plan.timestamp)(), b"another-key"), body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "wrong key, {:?}", plan.flags);
        // signed for another body
        let (other, _) = ringing(&t);
        let (status, _) = send(signed(&other, &(plan.timestamp)(), plan.key), body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "another body, {:?}", plan.flags);
        if !(plan.timestamp)().is_empty() {
            // a captured request replayed after the window, and one from the future
            for ts in [unix_now() - 301, unix_now() + 400] {
                let ts = if plan.flags.contains(&"sha1") { (ts * 1000).to_string() } else { ts.to_string() };
                let (status, json) = send(signed(&body, &ts, plan.key), body.clone()).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{ts}: {json}");
                assert!(json["message"].as_str().unwrap().starts_with("signature timestamp too"), "{json}");
            }
        }
        assert_eq!(calls(&db, &call).await, 0, "{:?}", plan.flags);
        relay.stop().await;
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Security review #11: with both configured, a valid shared secret used to pass beside any
/// signature; with `--require-hmac` it passes alone no more.
#[tokio::test]
async fn require_hmac_refuses_a_valid_token_without_a_signature() {
    let db = db().await;
    let t = tenant(&db).await;
    let relay = start_relay(&["--hmac-secrets", "hmac-key-1", "--require-hmac"]).await;
    let (body, call) = ringing(&t);
    let (status, json) = post(&relay, &body, &[("x-vapi-secret", SECRET)]).await;
    assert_eq!(
        (status, json["message"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("a signature is required: send x-signature"))
    );
    let ts = unix_now().to_string();
    let bad = [("x-vapi-secret", SECRET), ("x-timestamp", &ts), ("x-signature", "00ff")];
    assert_eq!(post(&relay, &body, &bad).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(calls(&db, &call).await, 0);
    let signature = python_hmac("sha256", b"hmac-key-1", format!("{ts}.{body}").as_bytes(), "hex");
    let (status, _) = post(&relay, &body, &[("x-timestamp", &ts), ("x-signature", &signature)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(calls(&db, &call).await, 1);
}

/// A fresh 256-bit token of a tenant, registered with `voxanne.add_webhook_credential`; its id.
async fn register_token(db: &tokio_postgres::Client, org: &str) -> (String, String) {
    let token = format!("vxk_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let id: String = db
        .query_one("SELECT voxanne.add_webhook_credential($1::text::uuid, $2)::text", &[&org, &token])
        .await
        .expect("add_webhook_credential")
        .get(0);
    (token, id)
}

/// Security review #2: one credential used to cover every tenant, and a body field picked the
/// org. A tenant's own token writes its org only; a forged report for another org's call is
/// refused (403, kept in the dead letter) and does not pre-empt the genuine one.
#[tokio::test]
async fn a_tenant_token_writes_its_own_org_only_and_cannot_forge_another_orgs_report() {
    let db = db().await;
    let a = tenant(&db).await;
    let b = tenant(&db).await;
    let relay = start_relay(&["--answer-tenant-ids", "false"]).await;
    // registered after the relay started: its first request finds it
    let (token_a, _) = register_token(&db, &a.org).await;
    let (token_b, _) = register_token(&db, &b.org).await;
    let as_a = format!("Bearer {token_a}");

    let (body, call) = ringing(&a);
    let (status, json) = post(&relay, &body, &[("authorization", &as_a)]).await;
    assert_eq!((status, &json["outcome"]), (StatusCode::OK, &"applied".into()), "{json}");
    assert_eq!(calls(&db, &call).await, 1);
    assert!(json.get("org_id").is_none() && json.get("call_id").is_none(), "no internal id is echoed: {json}");
    // the same token in the legacy header (a Bearer plan with header x-vapi-secret, no prefix)
    let (body, call) = ringing(&a);
    assert_eq!(post(&relay, &body, &[("x-vapi-secret", &token_a)]).await.0, StatusCode::OK);
    assert_eq!(calls(&db, &call).await, 1);

    // A writes into B: refused, nothing of B's written, the body kept with its SQLSTATE
    let b_call = new_call_id();
    let report = report_of(&b.assistant, &b_call, "Call back +1-900-555-0100", "https://evil.example/x.wav");
    let (status, json) = post(&relay, &report, &[("authorization", &as_a)]).await;
    assert_eq!((status, json["code"].as_str()), (StatusCode::FORBIDDEN, Some("42501")), "{json}");
    assert!(!json.to_string().contains(&b.org), "the refusal names no org: {json}");
    assert_eq!(calls(&db, &b_call).await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM voxanne.outbox WHERE org_id = $1::text::uuid", &[&b.org]).await, 0);
    assert_eq!(rejected(&db, &report, "42501").await, 1);
    let (ringing_b, ringing_call) = ringing(&b);
    assert_eq!(post(&relay, &ringing_b, &[("authorization", &as_a)]).await.0, StatusCode::FORBIDDEN);
    assert_eq!(calls(&db, &ringing_call).await, 0);

    // B's genuine report of that call is applied: the forgery pre-empted nothing
    let genuine =
        report_of(&b.assistant, &b_call, "The caller asked about opening hours.", "https://storage.vapi.ai/r.wav");
    let (status, json) = post(&relay, &genuine, &[("authorization", &format!("Bearer {token_b}"))]).await;
    assert_eq!((status, &json["outcome"]), (StatusCode::OK, &"applied".into()), "{json}");
    let summary: Option<String> =
        db.query_one("SELECT summary FROM voxanne.calls WHERE vapi_call_id = $1", &[&b_call]).await.unwrap().get(0);
    assert_eq!(summary.as_deref(), Some("The caller asked about opening hours."));
}

fn report_of(assistant: &str, call_id: &str, summary: &str, recording: &str) -> String {
    serde_json::json!({ "message": {
        "type": "end-of-call-report",
        "endedReason": "customer-ended-call",
        "analysis": { "summary": summary },
        "artifact": { "recordingUrl": recording },
        "timestamp": 1_732_540_060_000_i64,
        "call": call(assistant, call_id),
    }})
    .to_string()
}

#[tokio::test]
async fn an_unknown_or_revoked_tenant_token_is_refused_and_writes_nothing() {
    let db = db().await;
    let t = tenant(&db).await;
    let relay = start_relay(&[]).await;
    let (body, call) = ringing(&t);
    let unknown = format!("Bearer vxk_{}", Uuid::new_v4().simple());
    let (status, json) = post(&relay, &body, &[("authorization", &unknown)]).await;
    assert_eq!((status, json["message"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid token")));

    let (token, id) = register_token(&db, &t.org).await;
    let bearer = format!("Bearer {token}");
    assert_eq!(post(&relay, &body, &[("authorization", &bearer)]).await.0, StatusCode::OK);
    let revoked: bool = db
        .query_one("SELECT voxanne.revoke_webhook_credential($1::text::uuid, $2::text::uuid)", &[&t.org, &id])
        .await
        .unwrap()
        .get(0);
    assert!(revoked);
    // the relay still holds its digest; the database refuses it, with the same answer
    let (later, later_call) = ringing(&t);
    for _ in 0..2 {
        let (status, json) = post(&relay, &later, &[("authorization", &bearer)]).await;
        assert_eq!((status, json["message"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid token")));
    }
    assert_eq!((calls(&db, &call).await, calls(&db, &later_call).await), (1, 0));
    assert_eq!(count(&db, "SELECT count(*) FROM voxanne.rejected_events WHERE body = $1", &[&later]).await, 0);
}

#[tokio::test]
async fn answers_name_the_org_only_when_configured() {
    let db = db().await;
    let t = tenant(&db).await;
    for (flag, named) in [("false", false), ("true", true)] {
        let relay = start_relay(&["--answer-tenant-ids", flag]).await;
        let (body, _) = ringing(&t);
        let (status, json) = relay.deliver_json(&body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json.get("org_id").is_some(), named, "{json}");
        assert_eq!(json.get("call_id").is_some(), named, "{json}");
        assert!(json["vapi_call_id"].is_string(), "{json}");
        relay.stop().await;
    }
}
