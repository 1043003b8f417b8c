//! A PostgREST emulation: what PostgREST (v12) sends to the database for one API request, and the
//! HTTP status it answers with. PostgREST itself is not installable here; this does the same
//! database work over a real connection, so tests see exactly what a Supabase client sees.
//!
//! Per request, like PostgREST:
//! 1. find the function (or table) in the "schema cache" (here: `pg_proc` / `pg_class`); a JSON
//!    body whose keys are not a subset of the function's argument names, or that lacks an
//!    argument without a default, is refused with 404 `PGRST202` before any SQL runs;
//! 2. `BEGIN ISOLATION LEVEL READ COMMITTED` (`READ ONLY` for GET and for stable functions);
//! 3. `select set_config('search_path', ..), set_config('role', <jwt role or anon>, true),
//!    set_config('request.jwt.claims', <claims + role>, true), set_config('request.method', ..),
//!    set_config('request.path', ..), set_config('request.headers', ..),
//!    set_config('request.cookies', ..)` — `set_config('role', r, true)` is `SET LOCAL ROLE r`;
//! 4. the call, with the body passed as ONE json parameter and split into named arguments by
//!    `json_to_record` with the function's argument types, as PostgREST's `callPlanToQuery` does:
//!    `SELECT pgrst_call.pgrst_scalar FROM (SELECT $1 AS json_data) pgrst_payload,
//!     LATERAL (SELECT "p_a", "p_b" FROM json_to_record(pgrst_payload.json_data)
//!              AS _("p_a" text, "p_b" timestamp with time zone) LIMIT 1) pgrst_body,
//!     LATERAL (SELECT "voxanne"."f"("p_a" := pgrst_body."p_a", "p_b" := pgrst_body."p_b")
//!              pgrst_scalar) pgrst_call`
//!    so values are never interpolated, arguments left out take their SQL DEFAULT, and JSON
//!    values convert to SQL types exactly as under PostgREST (a bad timestamp string fails in
//!    `json_to_record` with 22007, before the function runs);
//! 5. `COMMIT` (or `ROLLBACK` after an error), and the SQLSTATE mapped to an HTTP status with
//!    PostgREST's table (`http_status`), the body being `{"code","message","details","hint"}`.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};
use tokio_postgres::error::DbError;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::{connect_as, describe};

/// PostgREST's `db-anon-role` on Supabase.
pub const ANON_ROLE: &str = "anon";
/// The login role PostgREST connects as on Supabase.
pub const AUTHENTICATOR: &str = "authenticator";
/// The schema these tests expose (Supabase: "Exposed schemas" / `PGRST_DB_SCHEMAS`; the client
/// sends `Content-Profile: voxanne` on POST and `Accept-Profile: voxanne` on GET).
pub const SCHEMA: &str = "voxanne";
/// Supabase's default `db-extra-search-path`.
const EXTRA_SEARCH_PATH: &[&str] = &["public", "extensions"];

/// The JWT of a request: none (PostgREST's anonymous role), or verified claims.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No `Authorization` header: PostgREST runs the request as `anon`.
    Anonymous,
    /// A verified JWT's claims. The role is its `role` claim (`anon` when missing).
    Jwt(Value),
}

impl Auth {
    /// Supabase's `service_role` key.
    pub fn service_role() -> Self {
        Self::Jwt(json!({"iss": "supabase", "role": "service_role"}))
    }

    /// Supabase's public `anon` key: a JWT, but with the anonymous role.
    pub fn anon_key() -> Self {
        Self::Jwt(json!({"iss": "supabase", "role": "anon"}))
    }

    /// A signed-in user of `org` (Supabase Auth puts the org in `app_metadata`).
    pub fn user_of(org: Uuid) -> Self {
        Self::Jwt(json!({
            "iss": "supabase", "aud": "authenticated", "role": "authenticated",
            "sub": Uuid::new_v4().to_string(),
            "app_metadata": {"provider": "email", "org_id": org.to_string()},
            "user_metadata": {}
        }))
    }

    /// The role PostgREST switches to.
    pub fn role(&self) -> String {
        match self {
            Self::Anonymous => ANON_ROLE.to_string(),
            Self::Jwt(claims) => claims.get("role").and_then(Value::as_str).unwrap_or(ANON_ROLE).to_string(),
        }
    }

    /// What PostgREST stores in `request.jwt.claims`: the claims with `role` set.
    pub fn claims(&self) -> Value {
        let mut claims = match self {
            Self::Anonymous => Map::new(),
            Self::Jwt(Value::Object(m)) => m.clone(),
            Self::Jwt(other) => panic!("JWT claims must be an object: {other}"),
        };
        claims.insert("role".into(), Value::String(self.role()));
        Value::Object(claims)
    }

    /// PostgREST's "anonymous" for error statuses: the role is the anon role (even with the
    /// anon key's JWT), so 42501 answers 401 rather than 403.
    pub fn is_anonymous(&self) -> bool {
        self.role() == ANON_ROLE
    }
}

/// An HTTP answer: status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

impl Response {
    fn error(status: u16, code: &str, message: String, details: Option<String>, hint: Option<String>) -> Self {
        Self { status, body: json!({"code": code, "message": message, "details": details, "hint": hint}) }
    }

    fn from_db(e: &tokio_postgres::Error, anonymous: bool) -> Self {
        let Some(db) = e.as_db_error() else {
            // the connection broke: PostgREST answers 503 (its pool's usage error)
            return Self::error(503, "PGRST000", describe(e), None, None);
        };
        Self::error(
            error_status(db, anonymous),
            db.code().code(),
            db.message().to_string(),
            db.detail().map(str::to_string),
            db.hint().map(str::to_string),
        )
    }

    /// The `code` of an error body (a SQLSTATE or a PGRSTnnn).
    pub fn code(&self) -> Option<&str> {
        self.body.get("code").and_then(Value::as_str)
    }

    pub fn message(&self) -> &str {
        self.body.get("message").and_then(Value::as_str).unwrap_or("")
    }
}

/// PostgREST's SQLSTATE → HTTP status table (`PostgREST.Error`, `pgErrorStatus`), for the
/// codes that do not depend on the message. `anonymous`: the request ran as the anon role.
pub fn http_status(sqlstate: &str, anonymous: bool) -> u16 {
    let p = |prefix: &str| sqlstate.starts_with(prefix);
    match sqlstate {
        _ if p("08") => 503, // connection exception
        _ if p("09") => 500, // triggered action exception
        _ if p("0L") => 403, // invalid grantor
        _ if p("0P") => 403, // invalid role specification
        "23503" => 409,      // foreign_key_violation
        "23505" => 409,      // unique_violation
        "25006" => 405,      // read_only_sql_transaction
        "21000" => 500,      // cardinality_violation (400 only for pg-safeupdate's message)
        _ if p("25") => 500, // invalid transaction state
        _ if p("28") => 403, // invalid authorization specification
        _ if p("2D") => 500, // invalid transaction termination
        _ if p("38") => 500, // external routine exception
        _ if p("39") => 500, // external routine invocation exception
        _ if p("3B") => 500, // savepoint exception
        _ if p("40") => 500, // transaction rollback
        "53400" => 500,      // configuration limit exceeded
        _ if p("53") => 503, // insufficient resources
        _ if p("54") => 500, // program limit exceeded
        _ if p("55") => 500, // object not in prerequisite state
        "57P01" => 503,      // admin shutdown
        _ if p("57") => 500, // operator intervention
        _ if p("58") => 500, // system error
        _ if p("F0") => 500, // configuration file error
        _ if p("HV") => 500, // foreign data wrapper error
        "P0001" => 400,      // raise_exception (plain RAISE)
        _ if p("P0") => 500, // other PL/pgSQL errors
        _ if p("XX") => 500, // internal error
        "42883" => 404,      // undefined_function
        "42P01" => 404,      // undefined_table
        "42P17" => 500,      // infinite recursion
        "42501" => {
            if anonymous {
                401
            } else {
                403
            }
        }
        _ if p("PT") => sqlstate[2..].parse().unwrap_or(500), // RAISE SQLSTATE 'PTnnn'
        _ => 400,
    }
}

/// `http_status` plus the cases where PostgREST also looks at the message.
pub fn error_status(db: &DbError, anonymous: bool) -> u16 {
    let (code, m) = (db.code().code(), db.message());
    match code {
        // a JWT role that does not exist: "role \"x\" does not exist"
        "22023" if m.starts_with("role") && m.ends_with("does not exist") => 401,
        "21000" if m.ends_with("requires a WHERE clause") => 400,
        "42883" if m.starts_with("function xmlagg(") => 406,
        _ => http_status(code, anonymous),
    }
}

/// A function's entry in the schema cache.
#[derive(Debug, Clone)]
struct Routine {
    /// (name, SQL type) of each input argument, in declaration order.
    args: Vec<(String, String)>,
    /// How many trailing arguments have defaults.
    defaults: usize,
    volatile: bool,
    returns_set: bool,
    returns_composite: bool,
    returns_void: bool,
}

impl Routine {
    fn required(&self) -> impl Iterator<Item = &str> {
        self.args[..self.args.len() - self.defaults].iter().map(|(n, _)| n.as_str())
    }

    fn accepts(&self, keys: &BTreeSet<String>) -> bool {
        keys.iter().all(|k| self.args.iter().any(|(n, _)| n == k)) && self.required().all(|r| keys.contains(r))
    }
}

/// `"ident"` with embedded quotes doubled, as PostgREST's `pgFmtIdent`.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One connection as `authenticator`, serving requests one at a time (one transaction each).
pub struct PostgRest {
    client: Client,
}

impl PostgRest {
    pub async fn connect() -> Self {
        Self { client: connect_as(AUTHENTICATOR).await }
    }

    async fn routines(&self, function: &str) -> Vec<Routine> {
        let rows = self
            .client
            .query(
                "SELECT p.pronargs::int4, p.pronargdefaults::int4, p.provolatile = 'v', p.proretset,
                        t.typtype = 'c' OR p.prorettype = 'pg_catalog.record'::pg_catalog.regtype,
                        p.prorettype = 'pg_catalog.void'::pg_catalog.regtype,
                        COALESCE(p.proargnames, '{}')::text[],
                        COALESCE(p.proargmodes::text[], '{}'),
                        ARRAY(SELECT pg_catalog.format_type(a.t, NULL)
                              FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(t, n) ORDER BY a.n)
                 FROM pg_catalog.pg_proc AS p
                 JOIN pg_catalog.pg_namespace AS s ON s.oid = p.pronamespace
                 JOIN pg_catalog.pg_type AS t ON t.oid = p.prorettype
                 WHERE s.nspname = $1 AND p.proname = $2 AND p.prokind = 'f'",
                &[&SCHEMA, &function],
            )
            .await
            .unwrap_or_else(|e| panic!("schema cache: {}", describe(&e)));
        rows.into_iter()
            .map(|r| {
                let nargs = r.get::<_, i32>(0) as usize;
                let names: Vec<String> = r.get(6);
                let modes: Vec<String> = r.get(7);
                let types: Vec<String> = r.get(8);
                // proargnames covers OUT arguments too when there are modes; keep the inputs
                let input_names: Vec<String> = if modes.is_empty() {
                    names.into_iter().take(nargs).collect()
                } else {
                    names
                        .into_iter()
                        .zip(modes)
                        .filter(|(_, m)| matches!(m.as_str(), "i" | "b" | "v"))
                        .map(|(n, _)| n)
                        .collect()
                };
                assert_eq!(input_names.len(), types.len(), "{function}: unnamed arguments are not supported here");
                Routine {
                    args: input_names.into_iter().zip(types).collect(),
                    defaults: r.get::<_, i32>(1) as usize,
                    volatile: r.get(2),
                    returns_set: r.get(3),
                    returns_composite: r.get(4),
                    returns_void: r.get(5),
                }
            })
            .collect()
    }

    /// `POST /rest/v1/rpc/<function>` with a JSON object body.
    pub async fn rpc(&self, auth: &Auth, function: &str, body: &Value) -> Response {
        self.call(auth, "POST", function, body).await
    }

    /// `GET /rest/v1/rpc/<function>?k=v&…`: the same call in a READ ONLY transaction, every
    /// value a string (as in a query string).
    pub async fn rpc_get(&self, auth: &Auth, function: &str, params: &[(&str, &str)]) -> Response {
        let body = Value::Object(params.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect());
        self.call(auth, "GET", function, &body).await
    }

    async fn call(&self, auth: &Auth, method: &str, function: &str, body: &Value) -> Response {
        let Value::Object(fields) = body else {
            panic!("the harness sends JSON objects only, not {body}");
        };
        let keys: BTreeSet<String> = fields.keys().cloned().collect();
        let candidates = self.routines(function).await;
        let matching: Vec<&Routine> = candidates.iter().filter(|r| r.accepts(&keys)).collect();
        let routine = match matching.as_slice() {
            [one] => *one,
            [] => {
                let listed = keys.iter().cloned().collect::<Vec<_>>().join(", ");
                let qualified = format!("{SCHEMA}.{function}");
                let details = if keys.is_empty() {
                    format!("Searched for the function {qualified} without parameters, but no matches were found in the schema cache.")
                } else {
                    format!("Searched for the function {qualified} with parameters {listed} or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache.")
                };
                return Response::error(
                    404,
                    "PGRST202",
                    format!("Could not find the function {qualified}({listed}) in the schema cache"),
                    Some(details),
                    None,
                );
            }
            _ => {
                return Response::error(
                    300,
                    "PGRST203",
                    format!("Could not choose the best candidate function between several {SCHEMA}.{function}"),
                    None,
                    None,
                )
            }
        };

        // Only the arguments present in the body, in declaration order: the rest take their
        // DEFAULT.
        let present: Vec<&(String, String)> = routine.args.iter().filter(|(n, _)| keys.contains(n)).collect();
        let callee = format!("{}.{}", ident(SCHEMA), ident(function));
        let (from, arguments) = if present.is_empty() {
            (String::new(), String::new())
        } else {
            let names = present.iter().map(|(n, _)| ident(n)).collect::<Vec<_>>().join(", ");
            let typed = present.iter().map(|(n, t)| format!("{} {t}", ident(n))).collect::<Vec<_>>().join(", ");
            (
                format!(
                    "(SELECT $1::pg_catalog.json AS json_data) pgrst_payload, \
                     LATERAL (SELECT {names} FROM pg_catalog.json_to_record(pgrst_payload.json_data) AS _({typed}) LIMIT 1) pgrst_body, "
                ),
                present
                    .iter()
                    .map(|(n, _)| format!("{} := pgrst_body.{}", ident(n), ident(n)))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        };
        let (source, aggregate) = if routine.returns_composite {
            let agg = if routine.returns_set {
                "coalesce(json_agg(_postgrest_t), '[]')::text"
            } else {
                "coalesce((json_agg(_postgrest_t)->0)::text, 'null')"
            };
            (format!("SELECT pgrst_call.* FROM {from}LATERAL {callee}({arguments}) pgrst_call"), agg)
        } else {
            let agg = if routine.returns_void {
                "'null'::text"
            } else if routine.returns_set {
                "coalesce(json_agg(_postgrest_t.pgrst_scalar), '[]')::text"
            } else {
                "coalesce((json_agg(_postgrest_t.pgrst_scalar)->0)::text, 'null')"
            };
            (
                format!("SELECT pgrst_call.pgrst_scalar FROM {from}LATERAL (SELECT {callee}({arguments}) pgrst_scalar) pgrst_call"),
                agg,
            )
        };
        let sql = format!(
            "WITH pgrst_source AS ({source}) \
             SELECT pg_catalog.count(_postgrest_t)::int8 AS page_total, {aggregate} AS body \
             FROM (SELECT * FROM pgrst_source) _postgrest_t"
        );
        let read_only = method == "GET" || !routine.volatile;
        let params: Vec<&(dyn ToSql + Sync)> = if present.is_empty() { vec![] } else { vec![body] };
        self.transaction(auth, method, &format!("/rpc/{function}"), read_only, &sql, &params).await
    }

    /// `GET /rest/v1/<table>?col=eq.value&…` (`Accept-Profile: voxanne`): the rows the role may
    /// see, as a JSON array. Only `eq.` filters.
    pub async fn get(&self, auth: &Auth, table: &str, filters: &[(&str, &str)]) -> Response {
        let exists: bool = self
            .client
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace s ON s.oid = c.relnamespace
                                WHERE s.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f'))",
                &[&SCHEMA, &table],
            )
            .await
            .expect("schema cache")
            .get(0);
        if !exists {
            return Response::error(
                404,
                "PGRST205",
                format!("Could not find the table '{SCHEMA}.{table}' in the schema cache"),
                None,
                None,
            );
        }
        let qualified = format!("{}.{}", ident(SCHEMA), ident(table));
        let mut conditions = Vec::new();
        let mut values: Vec<String> = Vec::new();
        for (column, filter) in filters {
            let Some(value) = filter.strip_prefix("eq.") else {
                panic!("only eq. filters are emulated, not {column}={filter}");
            };
            let column_type: Option<String> = self
                .client
                .query_opt(
                    "SELECT pg_catalog.format_type(a.atttypid, a.atttypmod)
                     FROM pg_catalog.pg_attribute a
                     JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
                     JOIN pg_catalog.pg_namespace s ON s.oid = c.relnamespace
                     WHERE s.nspname = $1 AND c.relname = $2 AND a.attname = $3 AND a.attnum > 0 AND NOT a.attisdropped",
                    &[&SCHEMA, &table, column],
                )
                .await
                .expect("column lookup")
                .map(|r| r.get(0));
            let Some(column_type) = column_type else {
                return Response::error(400, "42703", format!("column {table}.{column} does not exist"), None, None);
            };
            values.push(value.to_string());
            // PostgREST sends the value as an untyped literal; the cast is what the server
            // infers for it
            conditions.push(format!("{qualified}.{} = CAST(${}::text AS {column_type})", ident(column), values.len()));
        }
        let filter = if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
        let sql = format!(
            "WITH pgrst_source AS (SELECT {qualified}.* FROM {qualified}{filter}) \
             SELECT pg_catalog.count(_postgrest_t)::int8 AS page_total, coalesce(json_agg(_postgrest_t), '[]')::text AS body \
             FROM (SELECT * FROM pgrst_source) _postgrest_t"
        );
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        self.transaction(auth, "GET", &format!("/{table}"), true, &sql, &params).await
    }

    /// One request's transaction: BEGIN, the request settings, the statement, COMMIT.
    async fn transaction(
        &self,
        auth: &Auth,
        method: &str,
        path: &str,
        read_only: bool,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Response {
        let anonymous = auth.is_anonymous();
        let mode = if read_only { "READ ONLY" } else { "READ WRITE" };
        self.client
            .batch_execute(&format!("BEGIN ISOLATION LEVEL READ COMMITTED {mode}"))
            .await
            .unwrap_or_else(|e| panic!("BEGIN: {}", describe(&e)));
        let search_path =
            std::iter::once(SCHEMA).chain(EXTRA_SEARCH_PATH.iter().copied()).map(ident).collect::<Vec<_>>().join(", ");
        let claims = auth.claims().to_string();
        let headers = json!({"content-type": "application/json", "accept": "application/json"}).to_string();
        let settings = self
            .client
            .execute(
                "SELECT pg_catalog.set_config('search_path', $1, true), pg_catalog.set_config('role', $2, true),
                        pg_catalog.set_config('request.jwt.claims', $3, true),
                        pg_catalog.set_config('request.method', $4, true), pg_catalog.set_config('request.path', $5, true),
                        pg_catalog.set_config('request.headers', $6, true), pg_catalog.set_config('request.cookies', '{}', true)",
                &[&search_path, &auth.role(), &claims, &method, &path, &headers],
            )
            .await;
        let result = match settings {
            Err(e) => Err(e),
            Ok(_) => self.client.query_one(sql, params).await,
        };
        match result {
            Ok(row) => match self.client.batch_execute("COMMIT").await {
                Ok(()) => {
                    let body: String = row.get(1);
                    Response {
                        status: 200,
                        body: serde_json::from_str(&body).unwrap_or_else(|e| panic!("response body {body:?}: {e}")),
                    }
                }
                Err(e) => Response::from_db(&e, anonymous),
            },
            Err(e) => {
                self.client.batch_execute("ROLLBACK").await.unwrap_or_else(|e| panic!("ROLLBACK: {}", describe(&e)));
                Response::from_db(&e, anonymous)
            }
        }
    }
}
