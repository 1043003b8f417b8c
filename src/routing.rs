//! The one rule that finds the tenant of a message; never a value the sender states. A message's
//! ids are tried in this order and the first one registered decides (README "Routing"):
//!
//! 1. the call's assistant: `message.call.assistantId` (`p_assistant_id` in the SQL functions);
//! 2. the assistant speaking in a squad call: the message's own `assistantId`;
//! 3. the squad: `message.call.squadId`;
//! 4. the workflow: `message.call.workflowId`;
//! 5. the phone number: `message.call.phoneNumberId`, in the directory, then on an agent (0.2.0);
//! 6. the Vapi org: `message.call.orgId`, for tenants that bring their own Vapi account;
//! 7. a signed tenant token in `metadata.voxanne_tenant` of the call's transient assistant, its
//!    `assistantOverrides` or `squadOverrides` (a saved assistant or squad shared by tenants),
//!    the message's assistant, or the call itself (src/tenant_token.rs verifies it).
//!
//! Each kind of id is one form of every tenant statement: its `sql/queries/route_by_*.sql`
//! followed by the statement's own files (`routed!`), each kept as its own plan, so the common
//! case (a saved assistant) scans one index and nothing else. A form whose id is not registered
//! writes nothing, and the next id is tried.

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::domain::{optional, required, ID_MAX};
use crate::error::VoxError;
use crate::plans::Statement;

/// A tenant statement in its forms: each route file followed by the files given, in order.
macro_rules! routed {
    ($($file:literal),+) => {
        $crate::routing::Routed {
            by_assistant: $crate::routing::routed!(@form "route_by_assistant.sql", $($file),+),
            by_directory: $crate::routing::routed!(@form "route_by_directory.sql", $($file),+),
            by_agent_phone_number: $crate::routing::routed!(@form "route_by_phone_number.sql", $($file),+),
            by_tenant: $crate::routing::routed!(@form "route_by_tenant.sql", $($file),+),
        }
    };
    (@form $route:literal, $($file:literal),+) => {
        $crate::plans::Statement::new(concat!(
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/queries/", $route)),
            $(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/queries/", $file))),+
        ))
    };
}
pub(crate) use routed;

/// A tenant statement, kept once per kind of route.
pub struct Routed {
    pub by_assistant: Statement,
    pub by_directory: Statement,
    pub by_agent_phone_number: Statement,
    pub by_tenant: Statement,
}

/// What a directory id is (`voxanne.directory.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    PhoneNumber,
    Squad,
    Workflow,
    VapiOrg,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PhoneNumber => "phone_number",
            Self::Squad => "squad",
            Self::Workflow => "workflow",
            Self::VapiOrg => "vapi_org",
        }
    }
}

/// One id a message can be routed by.
#[derive(Debug, Clone, Copy)]
enum Key<'a> {
    /// `member`: a squad member's id, which routes the message but is not the call's agent.
    Assistant {
        id: &'a str,
        member: bool,
    },
    Directory {
        kind: Kind,
        id: &'a str,
    },
    /// 0.2.0's `agents.vapi_phone_number_id`.
    AgentPhoneNumber {
        id: &'a str,
    },
    Token {
        token: &'a str,
    },
}

#[derive(Debug, Clone, Copy)]
struct Candidate<'a> {
    field: &'static str,
    key: Key<'a>,
}

/// The ids a message carries, in the order they are tried.
#[derive(Debug, Clone)]
pub struct Routes<'a> {
    /// Named when no id at all was given.
    first_field: &'static str,
    given: Vec<Candidate<'a>>,
}

impl<'a> Routes<'a> {
    /// The SQL functions: the caller names the assistant, which must be given.
    pub fn by_assistant(field: &'static str, id: Option<&'a str>) -> Result<Self, VoxError> {
        let id = required(field, id, ID_MAX)?;
        Ok(Self { first_field: field, given: vec![Candidate { field, key: Key::Assistant { id, member: false } }] })
    }

    /// A webhook's routes are added in the documented order; `first_field` is what is missing
    /// when none is given.
    pub fn new(first_field: &'static str) -> Self {
        Self { first_field, given: Vec::new() }
    }

    /// An empty id is not given; a too long one is refused.
    fn add(
        &mut self,
        field: &'static str,
        id: Option<&'a str>,
        key: impl FnOnce(&'a str) -> Key<'a>,
    ) -> Result<(), VoxError> {
        if let Some(id) = optional(field, id, ID_MAX)? {
            self.given.push(Candidate { field, key: key(id) });
        }
        Ok(())
    }

    pub fn assistant(mut self, field: &'static str, id: Option<&'a str>, member: bool) -> Result<Self, VoxError> {
        self.add(field, id, |id| Key::Assistant { id, member })?;
        Ok(self)
    }

    /// A phone number is looked up in the directory, then on an agent.
    pub fn directory(mut self, field: &'static str, kind: Kind, id: Option<&'a str>) -> Result<Self, VoxError> {
        self.add(field, id, |id| Key::Directory { kind, id })?;
        if kind == Kind::PhoneNumber {
            self.add(field, id, |id| Key::AgentPhoneNumber { id })?;
        }
        Ok(self)
    }

    /// A token is verified only when its turn comes, so a bad one refuses only a message that
    /// nothing else routes.
    pub fn token(mut self, field: &'static str, token: Option<&'a str>) -> Self {
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            self.given.push(Candidate { field, key: Key::Token { token } });
        }
        self
    }

    /// Runs `attempt` with the form of `statement` for each id in order, `$1` and `$2` of
    /// `args` set to that id's binds, until an attempt finds its org (returns Some).
    pub fn first<T>(
        &self,
        client: &mut SpiClient<'_>,
        statement: &'static Routed,
        args: &mut [DatumWithOid<'_>],
        mut attempt: impl FnMut(&mut SpiClient<'_>, &'static Statement, &[DatumWithOid<'_>]) -> Result<Option<T>, VoxError>,
    ) -> Result<T, VoxError> {
        for candidate in &self.given {
            let (form, id, qualifier): (_, DatumWithOid, Option<&str>) = match candidate.key {
                Key::Assistant { id, member } => (&statement.by_assistant, id.into(), member.then_some("member")),
                Key::Directory { kind, id } => (&statement.by_directory, id.into(), Some(kind.as_str())),
                Key::AgentPhoneNumber { id } => (&statement.by_agent_phone_number, id.into(), None),
                Key::Token { token } => {
                    let org = crate::tenant_token::verify(client, candidate.field, token)?;
                    (&statement.by_tenant, org.to_string().into(), None)
                }
            };
            args[0] = id;
            args[1] = qualifier.into();
            if let Some(found) = attempt(client, form, args)? {
                return Ok(found);
            }
        }
        Err(self.unknown())
    }

    /// `first` in a connection of its own.
    pub fn first_connected<T>(
        &self,
        statement: &'static Routed,
        mut args: Vec<DatumWithOid<'_>>,
        attempt: impl FnMut(&mut SpiClient<'_>, &'static Statement, &[DatumWithOid<'_>]) -> Result<Option<T>, VoxError>,
    ) -> Result<T, VoxError> {
        Spi::connect_mut(|client| self.first(client, statement, &mut args, attempt))
    }

    /// The error when no id given is registered: each id as the sender gave it, or the first
    /// field when there was none.
    fn unknown(&self) -> VoxError {
        let mut shown = Vec::new();
        for c in &self.given {
            let id = match c.key {
                Key::Assistant { id, .. } | Key::Directory { id, .. } => id,
                // the phone number was shown with its directory lookup; a token is a secret
                Key::AgentPhoneNumber { .. } => continue,
                Key::Token { .. } => "…",
            };
            shown.push((c.field, id));
        }
        if shown.is_empty() {
            VoxError::missing(self.first_field)
        } else {
            VoxError::unknown_agent(&shown)
        }
    }
}

/// `$1` and `$2` of every tenant statement, before `first` sets them.
pub fn unset_binds<'a>() -> [DatumWithOid<'a>; 2] {
    [None::<&str>.into(), None::<&str>.into()]
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

    fn new_org() -> String {
        Spi::get_one("SELECT gen_random_uuid()::text").unwrap().unwrap()
    }

    fn register(org: &str, verb: &str, id: &str) {
        Spi::run_with_args(&format!("SELECT voxanne.{verb}($1::uuid, $2)"), &[org.into(), id.into()]).unwrap();
    }

    fn token_of(org: &str) -> String {
        Spi::get_one_with_args("SELECT voxanne.tenant_token($1::uuid)", &[org.into()]).unwrap().unwrap()
    }

    /// A ringing status-update of call `id` whose `call` has the given fields besides its id.
    fn ringing(id: &str, call_fields: &str) -> String {
        format!(r#"{{"message":{{"type":"status-update","status":"ringing","call":{{"id":"{id}"{call_fields}}}}}}}"#)
    }

    fn transient(token: &str) -> String {
        format!(r#","orgId":"vapi-shared","assistant":{{"name":"inline","metadata":{{"voxanne_tenant":"{token}"}}}}"#)
    }

    #[pg_test]
    fn every_call_shape_routes_to_its_org_without_an_agent() {
        let org = new_org();
        register(&org, "upsert_squad", "squad_a");
        register(&org, "upsert_workflow", "wf_a");
        register(&org, "upsert_phone_number", "pn_a");
        register(&org, "upsert_vapi_org", "vapi_org_a");
        let token = token_of(&org);
        for (id, fields) in [
            ("squad", r#","orgId":"vapi-shared","squadId":"squad_a""#.to_string()),
            ("workflow", r#","orgId":"vapi-shared","workflowId":"wf_a""#.to_string()),
            ("phone", r#","orgId":"vapi-shared","phoneNumberId":"pn_a""#.to_string()),
            ("own-vapi-account", r#","orgId":"vapi_org_a""#.to_string()),
            ("transient", transient(&token)),
            // a saved assistant shared by tenants (registered to none): the tenant per call
            (
                "shared-assistant",
                format!(
                    r#","assistantId":"asst_shared","assistantOverrides":{{"metadata":{{"voxanne_tenant":"{token}"}}}}"#
                ),
            ),
            (
                "shared-squad",
                format!(r#","squadId":"squad_shared","squadOverrides":{{"metadata":{{"voxanne_tenant":"{token}"}}}}"#),
            ),
            ("token-on-call", format!(r#","metadata":{{"voxanne_tenant":"{token}"}}"#)),
        ] {
            let out = handle(&ringing(id, &fields));
            assert_eq!(
                (out["applied"].clone(), out["org_id"].clone()),
                (true.into(), org.as_str().into()),
                "{id}: {out}"
            );
        }
        let agents: String = Spi::get_one_with_args(
            "SELECT string_agg(DISTINCT (agent_id IS NULL)::text, ',') FROM voxanne.calls WHERE org_id = $1::uuid",
            &[org.as_str().into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(agents, "true", "no assistant routed these calls");
    }

    #[pg_test]
    fn the_first_registered_id_decides_and_an_orgs_ids_never_route_another_orgs_call() {
        let org_a = new_org();
        register(&org_a, "upsert_phone_number", "pn_shared_line");
        let org_b = org_with_agent("asst_b");
        // B's assistant on A's number: the assistant comes first
        let out = handle(&ringing("c1", r#","assistantId":"asst_b","phoneNumberId":"pn_shared_line""#));
        assert_eq!(out["org_id"], org_b.as_str());
        // an unregistered assistant: the number decides
        let out = handle(&ringing("c2", r#","assistantId":"asst_unknown","phoneNumberId":"pn_shared_line""#));
        assert_eq!(out["org_id"], org_a.as_str());
        // no org takes another's id, even an inactive one
        register(&org_a, "upsert_squad", "squad_a");
        Spi::run_with_args(
            "SELECT voxanne.upsert_workflow($1::uuid, 'wf_a', p_active => false)",
            &[org_a.as_str().into()],
        )
        .unwrap();
        for (verb, id) in
            [("upsert_phone_number", "pn_shared_line"), ("upsert_squad", "squad_a"), ("upsert_workflow", "wf_a")]
        {
            let err = error_of(&format!("SELECT voxanne.{verb}('{org_b}'::uuid, '{id}')"));
            assert!(err.starts_with("23P01") && err.contains("directory_one_org_per_id"), "{verb}: {err}");
        }
        // an inactive entry routes nothing
        let out =
            error_of(&format!("SELECT voxanne.handle_vapi_message('{}')", ringing("c3", r#","workflowId":"wf_a""#)));
        assert!(out.starts_with("42704") && out.contains("message.call.workflowId 'wf_a'"), "{out}");
    }

    #[pg_test]
    fn tenant_tokens_route_only_when_signed_with_their_orgs_key() {
        let org_a = new_org();
        let org_b = new_org();
        let token_a = token_of(&org_a);
        token_of(&org_b);
        let (prefix, mac) = token_a.rsplit_once('.').unwrap();
        let flipped = format!("{prefix}.{}{}", if mac.starts_with('0') { '1' } else { '0' }, &mac[1..]);
        let other_org = token_a.replace(&org_a, &org_b);
        for (name, token) in [
            ("forged", flipped.as_str()),
            ("another org's id under A's signature", other_org.as_str()),
            ("not a token", "org_a"),
            ("a bare org id", org_a.as_str()),
        ] {
            let err = error_of(&format!("SELECT voxanne.handle_vapi_message('{}')", ringing("c", &transient(token))));
            assert_eq!(
                err, "22023 message.call.assistant.metadata.voxanne_tenant is not a valid voxanne tenant token",
                "{name}"
            );
        }
        let missing =
            error_of(&format!("SELECT voxanne.handle_vapi_message('{}')", ringing("c", r#","orgId":"vapi-shared""#)));
        assert_eq!(missing, "42704 no active agent for message.call.orgId 'vapi-shared'");
        // a rotated key retires the old token
        Spi::run_with_args("SELECT voxanne.rotate_tenant_key($1::uuid)", &[org_a.as_str().into()]).unwrap();
        let err = error_of(&format!("SELECT voxanne.handle_vapi_message('{}')", ringing("c", &transient(&token_a))));
        assert!(err.starts_with("22023"), "{err}");
        // a registered assistant comes first: a bad token then refuses nothing
        let org_c = org_with_agent("asst_c");
        let out = handle(&ringing("c", &format!(r#","assistantId":"asst_c"{}"#, transient("junk"))));
        assert_eq!(out["org_id"], org_c.as_str());
        assert_eq!(rows_of_org(&org_a) + rows_of_org(&org_b), 0);
    }

    #[pg_test]
    fn the_dead_letter_labels_a_body_with_the_org_its_ids_route_to_never_a_claimed_one() {
        let org = new_org();
        register(&org, "upsert_squad", "squad_dl");
        let forged = format!("vxt1.{org}.{}", "0".repeat(64));
        let label = |body: &str| -> Option<String> {
            let id: i64 = Spi::get_one_with_args("SELECT voxanne.record_rejected_event($1, '22023')", &[body.into()])
                .unwrap()
                .unwrap();
            Spi::get_one_with_args("SELECT org_id::text FROM voxanne.rejected_events WHERE id = $1", &[id.into()])
                .unwrap()
        };
        assert_eq!(label(&ringing("c", r#","squadId":"squad_dl""#)).as_deref(), Some(org.as_str()));
        assert_eq!(label(&ringing("c", &transient(&forged))), None);
    }

    #[pg_test]
    fn squad_call_without_assistant_id_resolves_by_phone_number() {
        let org = fixture_org();
        let out = handle(fixture!("status-update-squad-no-assistant"));
        assert_eq!(out["applied"], true);
        assert_eq!(out["org_id"], org.as_str());
    }
}
