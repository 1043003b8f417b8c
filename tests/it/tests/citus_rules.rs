//! The schema against Citus's rules, read from the catalog of an installed `voxanne_ext`.
//! Citus is not packaged for Debian, so docs/SCALING.md's plan is backed by checking the rules
//! `create_distributed_table` / `create_reference_table` enforce (citusdata/citus,
//! `commands/table.c` `ErrorIfUnsupportedConstraint`, `commands/foreign_constraint.c`
//! `ErrorIfUnsupportedForeignConstraintExists`) against what the extension creates:
//!
//! - a unique index, primary key or exclusion constraint of a distributed table must include
//!   the distribution column (with `=` for EXCLUDE); we require more: `org_id uuid NOT NULL`
//!   first, so every key is also a per-tenant index;
//! - a foreign key between distributed tables must be colocated and carry the distribution
//!   column at the same position on both sides; a distributed table may reference a reference
//!   table; a reference table may not reference a distributed one; nothing may reference a
//!   plain local table from a distributed one;
//! - a foreign key that includes the distribution column may not `ON DELETE SET NULL / SET
//!   DEFAULT` (even PostgreSQL 15's column-list form) nor `ON UPDATE SET NULL / SET DEFAULT /
//!   CASCADE`;
//! - identity columns on distributed tables must be bigint (Citus >= 11.2; inserting into a
//!   GENERATED ALWAYS identity column needs >= 13.0.2).
//!
//! Every table must be placed in the plan below; a new table fails the test until it is.

use std::collections::BTreeSet;

use tokio_postgres::Client;
use voxanne_it::*;

/// Hash-distributed on `org_id`, colocated with `voxanne.calls`.
const DISTRIBUTED: &[&str] =
    &["calls", "call_transcripts", "call_reports", "processed_webhook_events", "outbox", "leads"];
/// Replicated to every node: `agents`, `directory` and `tenant_keys` route a message to its org
/// before the org is known; `webhook_credentials` names the org a credential may write, before
/// the message is read.
const REFERENCE: &[&str] = &["agents", "directory", "tenant_keys", "webhook_credentials"];
/// Left on the coordinator: rows without an org, or global service state.
const LOCAL: &[&str] = &["rejected_events", "outbox_consumers"];

/// What Citus would refuse today, each documented in docs/SCALING.md ("Before distributing").
/// The foreign key tests fail when this list and the schema disagree in either direction, so
/// a fix in the schema must remove its entry here (and in the doc).
const KNOWN_BLOCKERS: &[&str] = &[];

fn placement(table: &str) -> &'static str {
    if DISTRIBUTED.contains(&table) {
        "distributed"
    } else if REFERENCE.contains(&table) {
        "reference"
    } else if LOCAL.contains(&table) {
        "local"
    } else {
        "unplaced"
    }
}

async fn tables(db: &Client) -> BTreeSet<String> {
    db.query(
        "SELECT c.relname::text FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'voxanne' AND c.relkind IN ('r', 'p')",
        &[],
    )
    .await
    .expect("tables")
    .into_iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test]
async fn every_table_is_placed_in_the_scale_out_plan() {
    let db = connect().await;
    let found = tables(&db).await;
    let unplaced: Vec<&String> = found.iter().filter(|t| placement(t) == "unplaced").collect();
    assert!(unplaced.is_empty(), "tables with no Citus placement in docs/SCALING.md and this test: {unplaced:?}");
    for t in DISTRIBUTED.iter().chain(REFERENCE) {
        assert!(found.contains(*t), "the plan places voxanne.{t}, which does not exist");
    }
}

#[tokio::test]
async fn distributed_tables_lead_every_unique_key_with_a_not_null_org_id() {
    let db = connect().await;
    for table in DISTRIBUTED {
        let row = db
            .query_opt(
                "SELECT a.attnotnull, pg_catalog.format_type(a.atttypid, a.atttypmod)
                 FROM pg_catalog.pg_attribute a
                 JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = 'voxanne' AND c.relname = $1 AND a.attname = 'org_id' AND NOT a.attisdropped",
                &[table],
            )
            .await
            .expect("org_id column");
        let (not_null, ty): (bool, String) =
            row.map(|r| (r.get(0), r.get(1))).unwrap_or_else(|| panic!("voxanne.{table} has no org_id"));
        assert!(not_null, "voxanne.{table}.org_id is nullable: Citus rejects NULL distribution values");
        assert_eq!(ty, "uuid", "voxanne.{table}.org_id");
    }

    // Every unique index (primary keys included) and every exclusion constraint, with its key
    // columns in order; an expression column shows as "<expr>".
    let rows = db
        .query(
            "SELECT c.relname::text, i.relname::text, x.oid IS NOT NULL,
                    ARRAY(SELECT COALESCE(a.attname::text, '<expr>')
                          FROM unnest(ix.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                          LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                          WHERE k.n <= ix.indnkeyatts ORDER BY k.n)
             FROM pg_catalog.pg_index ix
             JOIN pg_catalog.pg_class i ON i.oid = ix.indexrelid
             JOIN pg_catalog.pg_class c ON c.oid = ix.indrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_catalog.pg_constraint x ON x.conindid = ix.indexrelid AND x.contype = 'x'
             WHERE n.nspname = 'voxanne' AND (ix.indisunique OR x.oid IS NOT NULL)",
            &[],
        )
        .await
        .expect("unique indexes");
    let mut checked = 0;
    let mut exclusions = BTreeSet::new();
    for r in rows {
        let (table, index, exclusion, columns): (String, String, bool, Vec<String>) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        if exclusion {
            exclusions.insert(format!("{table}.{index}"));
        }
        if placement(&table) != "distributed" {
            continue;
        }
        checked += 1;
        assert_eq!(
            columns.first().map(String::as_str),
            Some("org_id"),
            "voxanne.{table}: unique key {index} {columns:?} must lead with org_id (Citus needs the distribution column in it)"
        );
    }
    assert!(checked >= DISTRIBUTED.len(), "a primary key per distributed table, at least: {checked}");
    // Exclusion constraints span orgs by design (an assistant id is active in ONE org), so they
    // can only live on the reference table, which every node holds whole.
    for e in &exclusions {
        let table = e.split('.').next().unwrap();
        assert_eq!(placement(table), "reference", "exclusion constraint {e} outside the reference table");
    }
    assert!(
        exclusions.contains("agents.agents_one_active_per_assistant"),
        "the assistant -> org routing rule: {exclusions:?}"
    );
}

#[tokio::test]
async fn foreign_keys_follow_citus_rules() {
    let db = connect().await;
    let rows = db
        .query(
            "SELECT con.conname::text, src.relname::text, dst.relname::text,
                    con.confdeltype::text, con.confupdtype::text,
                    ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, n)
                          JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.n),
                    ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, n)
                          JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY k.n)
             FROM pg_catalog.pg_constraint con
             JOIN pg_catalog.pg_class src ON src.oid = con.conrelid
             JOIN pg_catalog.pg_class dst ON dst.oid = con.confrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = src.relnamespace
             WHERE con.contype = 'f' AND (n.nspname = 'voxanne'
                   OR dst.relnamespace = 'voxanne'::regnamespace)",
            &[],
        )
        .await
        .expect("foreign keys");
    assert!(!rows.is_empty());
    let mut violations = BTreeSet::new();
    let mut colocated = 0;
    for r in rows {
        let (name, src, dst, on_delete, on_update, from, to): (
            String,
            String,
            String,
            String,
            String,
            Vec<String>,
            Vec<String>,
        ) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6));
        let (from_kind, to_kind) = (placement(&src), placement(&dst));
        let what = format!("{name} ({src} -> {dst})");
        match (from_kind, to_kind) {
            ("reference", "distributed") => {
                violations.insert(format!("{what}: a reference table may not reference a distributed table"));
            }
            ("distributed", "distributed") => {
                let (i, j) = (from.iter().position(|c| c == "org_id"), to.iter().position(|c| c == "org_id"));
                if i.is_none() || i != j {
                    violations.insert(format!(
                        "{what}: {from:?} -> {to:?} must carry org_id at the same position (colocation)"
                    ));
                } else {
                    colocated += 1;
                }
            }
            ("distributed", "reference") => {}
            ("distributed", _) | ("reference", "local") => {
                violations.insert(format!("{what}: may only reference a distributed or a reference table"));
            }
            ("local", "distributed") => {
                violations.insert(format!("{what}: a coordinator-local table may not reference a distributed table"));
            }
            _ => {}
        }
        if from_kind == "distributed" && from.iter().any(|c| c == "org_id") {
            if matches!(on_delete.as_str(), "n" | "d") {
                violations.insert(format!("{what}: ON DELETE SET NULL on a foreign key that includes org_id"));
            }
            if matches!(on_update.as_str(), "n" | "d" | "c") {
                violations.insert(format!(
                    "{what}: ON UPDATE SET NULL/SET DEFAULT/CASCADE on a foreign key that includes org_id"
                ));
            }
        }
    }
    assert!(colocated >= 1, "call_transcripts -> calls at least");
    let known: BTreeSet<String> = KNOWN_BLOCKERS.iter().map(|s| s.to_string()).collect();
    let new: Vec<&String> = violations.difference(&known).collect();
    let fixed: Vec<&String> = known.difference(&violations).collect();
    assert!(new.is_empty(), "foreign keys Citus would refuse (fix them or document them in docs/SCALING.md): {new:#?}");
    assert!(fixed.is_empty(), "fixed in the schema: remove from KNOWN_BLOCKERS and docs/SCALING.md: {fixed:#?}");
}

#[tokio::test]
async fn identity_columns_of_distributed_tables_are_bigint() {
    let db = connect().await;
    let rows = db
        .query(
            "SELECT c.relname::text, a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod),
                    a.attidentity::text, COALESCE(pg_catalog.pg_get_expr(d.adbin, d.adrelid), '')
             FROM pg_catalog.pg_attribute a
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE n.nspname = 'voxanne' AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
               AND (a.attidentity <> '' OR pg_catalog.pg_get_expr(d.adbin, d.adrelid) LIKE '%nextval(%')",
            &[],
        )
        .await
        .expect("identity columns");
    let mut seen = BTreeSet::new();
    for r in rows {
        let (table, column, ty, identity, default): (String, String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        if placement(&table) != "distributed" {
            continue;
        }
        assert!(
            identity == "a" || identity == "d",
            "voxanne.{table}.{column}: sequence default {default:?}; use an identity"
        );
        assert_eq!(
            ty, "bigint",
            "voxanne.{table}.{column}: Citus allows only bigint identity columns on distributed tables"
        );
        seen.insert(format!("{table}.{column}"));
    }
    assert_eq!(
        seen,
        BTreeSet::from(["calls.id".to_string(), "outbox.id".to_string()]),
        "identity columns of distributed tables"
    );
}

/// Citus moves shards with logical replication, which needs a primary key (or replica
/// identity) on every distributed and reference table.
#[tokio::test]
async fn distributed_and_reference_tables_have_primary_keys() {
    let db = connect().await;
    for table in DISTRIBUTED.iter().chain(REFERENCE) {
        let n = count(
            &db,
            "SELECT count(*) FROM pg_catalog.pg_constraint con
             JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
             WHERE c.relnamespace = 'voxanne'::regnamespace AND c.relname = $1 AND con.contype = 'p'",
            &[table],
        )
        .await;
        assert_eq!(n, 1, "voxanne.{table} primary key");
    }
}

/// docs/SCALING.md: `create_distributed_function` routes a call by one argument that must BE
/// the distribution value. The public call functions take no org at all (the org is derived
/// from the assistant inside), so they cannot be routed by argument as they are; only
/// `upsert_agent` takes the org, and it writes the reference table.
#[tokio::test]
async fn public_call_functions_derive_the_org_instead_of_taking_it() {
    let db = connect().await;
    let rows = db
        .query(
            "SELECT p.proname::text, COALESCE(p.proargnames, '{}')::text[],
                    ARRAY(SELECT pg_catalog.format_type(t, NULL) FROM unnest(p.proargtypes::oid[]) AS t)
             FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'voxanne'::regnamespace
               AND p.proname IN ('create_inbound_call', 'complete_call', 'record_transcript', 'handle_vapi_message', 'upsert_agent')",
            &[],
        )
        .await
        .expect("functions");
    assert_eq!(rows.len(), 5);
    for r in rows {
        let (name, args, types): (String, Vec<String>, Vec<String>) = (r.get(0), r.get(1), r.get(2));
        let takes_org = args.iter().zip(&types).any(|(a, t)| a == "p_org_id" && t == "uuid");
        assert_eq!(takes_org, name == "upsert_agent", "voxanne.{name}({args:?})");
        assert!(
            !types.iter().any(|t| t == "uuid") || name == "upsert_agent",
            "voxanne.{name} takes a uuid: update docs/SCALING.md"
        );
    }
}
