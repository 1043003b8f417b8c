//! Catalog checks on the installed extension: the tenant boundary and the privilege model hold
//! for every object of schema voxanne, including ones added later (everything is read from the
//! catalog, nothing is a hand-kept list except the documented exceptions).
//!
//! - every table with org_id has it NOT NULL and leading its primary key and every unique
//!   index — except voxanne.rejected_events, the one documented exception (sql/schema.sql: a
//!   body whose assistant matches no agent has no tenant; org_id nullable, key id alone);
//! - anon and authenticated cannot write any table, nor read the service-side ones;
//! - every SECURITY DEFINER function pins `search_path = pg_catalog, pg_temp` (the one home of
//!   that fact), and PUBLIC cannot EXECUTE any function;
//! - nothing in the schema (schema, tables, indexes, sequences, functions, types) is owned by a
//!   non-superuser role, no one but its owner may CREATE in it, and every object belongs to the
//!   extension.
//!
//! Two facts have their home elsewhere (tests/README.md), catalog checks included: RLS on every
//! table with own-org SELECT policies (install_privileges.rs
//! `authenticated_sees_only_the_org_in_its_jwt_claims`), and no EXECUTE for anon and
//! authenticated (attacks.rs `anon_and_authenticated_cannot_execute_any_write_function`).

use voxanne_it::figures::Figures;
use voxanne_it::*;

const API_ROLES: [&str; 5] = ["anon", "authenticated", "service_role", "authenticator", "voxanne_relay"];

async fn rows(db: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    db.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

/// Each query lists offending objects; each must list none.
async fn expect_none(db: &tokio_postgres::Client, what: &str, sql: &str, figures: &mut Figures) {
    figures.checks += 1;
    for offender in rows(db, sql).await {
        figures.violation("leaks", format!("{what}: {offender}"));
    }
}

#[tokio::test]
async fn every_tenant_table_keys_on_org_id_and_api_roles_cannot_write_tables() {
    let mut figures = Figures::new("catalog/tenant tables: org_id keys and table grants");
    let db = connect().await;
    let tenant_tables = rows(
        &db,
        "SELECT c.relname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'voxanne' AND c.relkind IN ('r', 'p')
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'org_id' AND NOT a.attisdropped)
         ORDER BY 1",
    )
    .await;
    for t in ["agents", "calls", "call_transcripts", "processed_webhook_events", "outbox", "rejected_events", "leads"] {
        assert!(tenant_tables.iter().any(|x| x == t), "tenant table {t} not found: {tenant_tables:?}");
    }
    figures.note("tenant tables", tenant_tables.join(", "));

    expect_none(
        &db,
        "org_id nullable",
        "SELECT c.relname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = 'org_id'
         WHERE n.nspname = 'voxanne' AND c.relkind IN ('r', 'p') AND NOT a.attnotnull
           AND c.relname <> 'rejected_events'",
        &mut figures,
    )
    .await;
    expect_none(
        &db,
        "primary key or unique index not led by org_id",
        "SELECT c.relname || ': ' || i.relname || ' ' || pg_catalog.pg_get_indexdef(x.indexrelid)
         FROM pg_catalog.pg_index x
         JOIN pg_catalog.pg_class c ON c.oid = x.indrelid
         JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'voxanne' AND (x.indisunique OR x.indisprimary)
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'org_id' AND NOT a.attisdropped)
           AND c.relname <> 'rejected_events'
           AND (x.indkey[0] = 0 OR (SELECT a.attname FROM pg_catalog.pg_attribute a
                                    WHERE a.attrelid = c.oid AND a.attnum = x.indkey[0]) <> 'org_id')",
        &mut figures,
    )
    .await;
    expect_none(
        &db,
        "tenant table without a primary key",
        "SELECT c.relname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'voxanne' AND c.relkind IN ('r', 'p')
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index x WHERE x.indrelid = c.oid AND x.indisprimary)",
        &mut figures,
    )
    .await;
    // the documented exception is exactly what sql/schema.sql says: org_id nullable, key id alone
    let exception = rows(
        &db,
        "SELECT pg_catalog.pg_get_indexdef(x.indexrelid) || ' / org_id nullable: ' ||
                (SELECT (NOT a.attnotnull)::text FROM pg_catalog.pg_attribute a WHERE a.attrelid = x.indrelid AND a.attname = 'org_id')
         FROM pg_catalog.pg_index x WHERE x.indrelid = 'voxanne.rejected_events'::pg_catalog.regclass AND (x.indisunique OR x.indisprimary)
         ORDER BY 1",
    )
    .await;
    assert_eq!(
        exception,
        vec![
            "CREATE UNIQUE INDEX rejected_events_body_key ON voxanne.rejected_events USING btree (body_sha256) / org_id nullable: true".to_string(),
            "CREATE UNIQUE INDEX rejected_events_pkey ON voxanne.rejected_events USING btree (id) / org_id nullable: true".to_string(),
        ],
        "voxanne.rejected_events is the documented exception"
    );
    let schema_sql = std::fs::read_to_string(voxanne_it::figures::workspace_root().join("sql/schema.sql")).unwrap();
    assert!(
        schema_sql.contains("org_id is the one nullable org_id in the schema"),
        "sql/schema.sql documents the rejected_events exception"
    );

    expect_none(
        &db,
        "table whose rows anon or authenticated may write",
        "SELECT c.relname || ': ' || r.rolname || ' ' || pr.p
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         CROSS JOIN pg_catalog.pg_roles r
         CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS pr(p)
         WHERE n.nspname = 'voxanne' AND c.relkind IN ('r', 'p', 'v', 'm')
           AND r.rolname IN ('anon', 'authenticated') AND pg_catalog.has_table_privilege(r.oid, c.oid, pr.p)",
        &mut figures,
    )
    .await;
    expect_none(
        &db,
        "service-side table readable by anon or authenticated",
        "SELECT c.relname || ': ' || r.rolname
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         CROSS JOIN pg_catalog.pg_roles r
         WHERE n.nspname = 'voxanne' AND c.relkind IN ('r', 'p')
           AND (c.relname IN ('processed_webhook_events', 'rejected_events')
                OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'org_id'))
           AND r.rolname IN ('anon', 'authenticated') AND pg_catalog.has_table_privilege(r.oid, c.oid, 'SELECT')",
        &mut figures,
    )
    .await;
    figures.finish();
}

#[tokio::test]
async fn every_function_pins_search_path_and_none_is_executable_by_public() {
    let mut figures = Figures::new("catalog/functions: search_path and EXECUTE");
    let db = connect().await;
    expect_none(
        &db,
        "SECURITY DEFINER function without search_path = pg_catalog, pg_temp",
        "SELECT p.oid::pg_catalog.regprocedure::text || ' ' || coalesce(p.proconfig::text, '<no SET>')
         FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'voxanne' AND p.prosecdef
           AND NOT coalesce(p.proconfig, '{}') @> ARRAY['search_path=pg_catalog, pg_temp']",
        &mut figures,
    )
    .await;
    // Functions without a pinned search_path must be harmless: not SECURITY DEFINER, plain SQL
    // (inlined into the pinned caller), callable by no API role. Today: voxanne._status_rank and
    // voxanne._heard_during.
    let unpinned = rows(
        &db,
        "SELECT p.oid::pg_catalog.regprocedure::text
         FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'voxanne'
           AND NOT coalesce(p.proconfig, '{}') @> ARRAY['search_path=pg_catalog, pg_temp']",
    )
    .await;
    figures.note("functions without a pinned search_path", unpinned.join(", "));
    expect_none(
        &db,
        "function without a pinned search_path that is not a private plain-SQL helper",
        "SELECT p.oid::pg_catalog.regprocedure::text
         FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         JOIN pg_catalog.pg_language l ON l.oid = p.prolang
         WHERE n.nspname = 'voxanne'
           AND NOT coalesce(p.proconfig, '{}') @> ARRAY['search_path=pg_catalog, pg_temp']
           AND (p.prosecdef OR l.lanname <> 'sql'
                OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname IN ('anon', 'authenticated', 'service_role')
                           AND pg_catalog.has_function_privilege(r.oid, p.oid, 'EXECUTE')))",
        &mut figures,
    )
    .await;
    expect_none(
        &db,
        "function executable by PUBLIC",
        "SELECT p.oid::pg_catalog.regprocedure::text
         FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'voxanne'
           AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM pg_catalog.aclexplode(p.proacl) e
                                             WHERE e.grantee = 0 AND e.privilege_type = 'EXECUTE'))",
        &mut figures,
    )
    .await;
    figures.finish();
}

#[tokio::test]
async fn nothing_in_schema_voxanne_is_owned_or_creatable_by_a_non_superuser() {
    let mut figures = Figures::new("catalog/ownership and CREATE on schema voxanne");
    let db = connect().await;
    let owned = "JOIN pg_catalog.pg_roles o ON o.oid = x.owner WHERE NOT o.rolsuper";
    let objects = [
        (
            "schema",
            "SELECT 'schema voxanne' AS what, nspowner AS owner FROM pg_catalog.pg_namespace WHERE nspname = 'voxanne'",
        ),
        (
            "relation",
            "SELECT c.relkind::text || ' ' || c.relname, c.relowner FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'voxanne'",
        ),
        (
            "function",
            "SELECT p.oid::pg_catalog.regprocedure::text, p.proowner FROM pg_catalog.pg_proc p
             JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'voxanne'",
        ),
        (
            "type",
            "SELECT t.typname::text, t.typowner FROM pg_catalog.pg_type t
             JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'voxanne'",
        ),
        (
            "operator",
            "SELECT o.oprname::text, o.oprowner FROM pg_catalog.pg_operator o
             JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace WHERE n.nspname = 'voxanne'",
        ),
    ];
    for (kind, sql) in objects {
        let q = format!("SELECT x.what || ' owned by ' || o.rolname FROM ({sql}) AS x(what, owner) {owned}");
        expect_none(&db, &format!("{kind} owned by a non-superuser"), &q, &mut figures).await;
    }
    for role in API_ROLES {
        figures.checks += 1;
        let exists = count(&db, "SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname = $1", &[&role]).await;
        if exists == 0 {
            continue;
        }
        let can_create: bool = db
            .query_one("SELECT pg_catalog.has_schema_privilege($1, 'voxanne', 'CREATE')", &[&role])
            .await
            .unwrap()
            .get(0);
        if can_create {
            figures.violation("leaks", format!("{role} may CREATE in schema voxanne (it could plant shadow objects)"));
        }
        let superuser: bool = db
            .query_one(
                "SELECT rolsuper OR rolbypassrls AND $1 <> 'service_role' FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[&role],
            )
            .await
            .unwrap()
            .get(0);
        if superuser {
            figures.violation("leaks", format!("API role {role} is a superuser or bypasses RLS"));
        }
    }
    expect_none(
        &db,
        "PUBLIC may CREATE in or use schema voxanne",
        "SELECT 'PUBLIC ' || e.privilege_type FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) e
         WHERE n.nspname = 'voxanne' AND e.grantee = 0",
        &mut figures,
    )
    .await;
    expect_none(
        &db,
        "object in schema voxanne that does not belong to the extension",
        "SELECT c.relkind::text || ' ' || c.relname FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'voxanne' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                           AND d.objid = c.oid AND d.deptype = 'e')
         UNION ALL
         SELECT p.oid::pg_catalog.regprocedure::text FROM pg_catalog.pg_proc p
         JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'voxanne'
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                           AND d.objid = p.oid AND d.deptype = 'e')",
        &mut figures,
    )
    .await;
    figures.finish();
}
