//! The report of the reliability and security suite: run it after the suite, explicitly, by
//! name (bin/test does):
//!
//! ```sh
//! rm -f target/voxanne-reliability/figures.jsonl       # before the suite
//! cargo test -p voxanne-it -- --test-threads=1          # the suite appends its figures
//! cargo test -p voxanne-it --test reliability_report -- --ignored --nocapture
//! ```
//!
//! It takes the latest record of every test of the suite from
//! target/voxanne-reliability/figures.jsonl, fails if one is missing, prints the summary, writes
//! target/voxanne-reliability/RELIABILITY.md (date, machine, figures), and fails if any "must be
//! zero" figure — rows lost, rows doubled, partial rows, leaks, panics, backend crashes, contract
//! errors — is not 0. It never writes a tracked file: `bin/reliability-doc` runs the suite and
//! copies the report to docs/RELIABILITY.md when someone means to refresh it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;
use voxanne_it::figures::{figures_file, report_file, ZERO_FIGURES};
use voxanne_it::*;

/// Every test of the suite, by its figures name. A missing one fails the report.
const EXPECTED: &[&str] = &[
    "storms/sql: 64 connections x same message",
    "storms/relay: 64 HTTP connections x same message",
    "races/sql: random order vs serial",
    "races/relay: random order vs serial",
    "crashes/backend kill -9 mid-transaction",
    "crashes/relay SIGKILL under load",
    "crashes/postmaster immediate shutdown",
    "spool/database stopped under load",
    "spool/relay SIGKILL spooling and draining",
    "fuzz/proptest messages -> handle_vapi_message",
    "fuzz/mutated fixtures -> handle_vapi_message",
    "fuzz/proptest + mutated messages -> relay",
    "fuzz/regressions: big numbers, deep nesting",
    "fuzz/regressions: arrays where objects belong",
    "fuzz/relay regressions: huge error message, 413, deep nesting",
    "attacks/same vapi_call_id under two orgs",
    "attacks/org A's assistant vs org B's call",
    "attacks/authenticated with forged or missing claims",
    "attacks/anon and authenticated executing functions",
    "attacks/search_path hijack",
    "attacks/SQL injection strings stored verbatim",
    "attacks/replayed and forged signed webhooks",
    "attacks/deactivated or moved assistant",
    "attacks/errors without a Rust backtrace",
    "catalog/tenant tables: org_id keys and table grants",
    "catalog/functions: search_path and EXECUTE",
    "catalog/ownership and CREATE on schema voxanne",
];

/// Tests whose figures must be positive: what they delivered, applied and checked.
const POSITIVE: &[(&str, &[&str])] = &[
    (
        "storms/sql: 64 connections x same message",
        &["delivered", "reached", "duplicates", "applied", "overlap", "checks"],
    ),
    (
        "storms/relay: 64 HTTP connections x same message",
        &["delivered", "reached", "duplicates", "applied", "overlap", "checks"],
    ),
    ("races/sql: random order vs serial", &["delivered", "reached", "duplicates", "applied", "overlap", "checks"]),
    ("races/relay: random order vs serial", &["delivered", "reached", "duplicates", "applied", "overlap", "checks"]),
    ("crashes/backend kill -9 mid-transaction", &["delivered", "reached", "applied", "retries", "checks"]),
    ("crashes/relay SIGKILL under load", &["delivered", "reached", "applied", "retries", "checks"]),
    ("crashes/postmaster immediate shutdown", &["delivered", "reached", "applied", "retries", "checks"]),
    // no retries here: with the spool no sender has to come back (the tests assert spooled > 0)
    ("spool/database stopped under load", &["delivered", "reached", "applied", "checks"]),
    ("spool/relay SIGKILL spooling and draining", &["delivered", "reached", "applied", "checks"]),
    ("fuzz/proptest messages -> handle_vapi_message", &["fuzz_cases", "reached", "applied", "refused", "checks"]),
    ("fuzz/mutated fixtures -> handle_vapi_message", &["fuzz_cases", "reached", "applied", "refused", "checks"]),
    ("fuzz/proptest + mutated messages -> relay", &["fuzz_cases", "reached", "applied", "refused", "checks"]),
];

const LABELS: [(&str, &str); 7] = [
    ("lost", "rows lost (acknowledged, then missing)"),
    ("doubled", "rows doubled"),
    ("partial", "partial calls / rows of failed transactions"),
    ("leaks", "cross-tenant leaks"),
    ("panics", "panics (XX000)"),
    ("crashes", "backend crashes"),
    ("errors", "answers outside the documented contract"),
];

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn machine() -> Vec<(String, String)> {
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let mem_kb: u64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let os = read("/etc/os-release")
        .lines()
        .find(|l| l.starts_with("PRETTY_NAME="))
        .map(|l| l.trim_start_matches("PRETTY_NAME=").trim_matches('"').to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    vec![
        ("host".into(), read("/proc/sys/kernel/hostname").trim().to_string()),
        ("CPU".into(), format!("{cores} cores available, {model}")),
        ("memory".into(), format!("{:.1} GiB", mem_kb as f64 / 1024.0 / 1024.0)),
        ("OS".into(), format!("{os}, Linux {}", read("/proc/sys/kernel/osrelease").trim())),
        ("Rust".into(), rustc),
    ]
}

#[tokio::test]
#[ignore = "run explicitly after the suite: cargo test -p voxanne-it --test reliability_report -- --ignored --nocapture"]
async fn write_reliability_report() {
    let text = std::fs::read_to_string(figures_file())
        .unwrap_or_else(|e| panic!("{}: {e} (run the suite first)", figures_file().display()));
    let mut latest: BTreeMap<String, Value> = BTreeMap::new();
    let run = voxanne_it::figures::run_id();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let record: Value = serde_json::from_str(line).expect("a figures line is JSON");
        // one run of one commit: a record of another run does not count
        if run.is_some() && record["run"].as_str() != run.as_deref() {
            continue;
        }
        let name = record["test"].as_str().expect("test name").to_string();
        latest.insert(name, record); // later lines win
    }
    let missing: Vec<&str> = EXPECTED.iter().copied().filter(|n| !latest.contains_key(*n)).collect();

    // totals
    let sum = |key: &str| -> u64 { latest.values().map(|r| r[key].as_u64().unwrap_or(0)).sum() };
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    let mut zero: BTreeMap<String, u64> = ZERO_FIGURES.iter().map(|k| (k.to_string(), 0)).collect();
    for r in latest.values() {
        for (k, v) in r["faults"].as_object().into_iter().flatten() {
            *faults.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
        }
        for (k, v) in r["zero"].as_object().into_iter().flatten() {
            *zero.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
        }
    }
    let long = latest.values().any(|r| r["long"] == true);
    let all_long = latest.values().all(|r| r["long"] == true);
    let db = connect().await;
    let pg: String = db.query_one("SELECT pg_catalog.version()", &[]).await.unwrap().get(0);
    let ext: Option<String> = db
        .query_one("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'voxanne_ext'", &[])
        .await
        .unwrap()
        .get(0);
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;

    let mut md = String::new();
    writeln!(md, "# Reliability and security figures\n").unwrap();
    writeln!(
        md,
        "Refreshed by `bin/reliability-doc` (`VOXANNE_LONG=1 bin/reliability-doc` for the long run),\n\
         which runs the suite and copies its report here; `bin/test` writes the same report to\n\
         target/voxanne-reliability/RELIABILITY.md on every run and never touches this file. Do not\n\
         edit by hand. What each test does and how the figures are counted:\n\
         tests/it/tests/{{storms,random_order,crashes,fuzz,attacks,catalog}}.rs; which test proves\n\
         which behaviour: tests/README.md; the attack matrix: docs/SECURITY.md.\n"
    )
    .unwrap();
    writeln!(md, "- Date: {}", voxanne_it::vapi::iso(now_ms)).unwrap();
    for (k, v) in machine() {
        writeln!(md, "- {k}: {v}").unwrap();
    }
    writeln!(md, "- PostgreSQL: {pg}").unwrap();
    writeln!(md, "- voxanne_ext: {}", ext.unwrap_or_else(|| "?".into())).unwrap();
    writeln!(md, "- Commit and run: {}", run.as_deref().unwrap_or("not set (VOXANNE_RUN_ID): every record counts"))
        .unwrap();
    let size = if all_long {
        "long (`VOXANNE_LONG=1`)"
    } else if long {
        "mixed: some tests long (`VOXANNE_LONG=1`), some CI-size"
    } else {
        "CI-size (the default of `bin/test`; `VOXANNE_LONG=1` for the long run)"
    };
    writeln!(
        md,
        "- Run: {size}; seeds: the defaults{}",
        std::env::var("VOXANNE_SEED").map(|s| format!(", VOXANNE_SEED={s}")).unwrap_or_default()
    )
    .unwrap();

    writeln!(md, "\n## Totals\n\n| figure | value |\n|---|---:|").unwrap();
    writeln!(md, "| messages delivered (every attempt, every transport) | {} |", sum("delivered")).unwrap();
    writeln!(
        md,
        "| duplicates sent (the same message again on purpose: storms, planned duplicates) | {} |",
        sum("duplicates")
    )
    .unwrap();
    writeln!(
        md,
        "| reached the database statement (the rest stopped before it: not JSON, too big) | {} |",
        sum("reached")
    )
    .unwrap();
    writeln!(md, "| effects applied (answers `applied`: reached the database and changed it) | {} |", sum("applied"))
        .unwrap();
    writeln!(md, "| refused as expected (the one answer the defect calls for) | {} |", sum("refused")).unwrap();
    writeln!(
        md,
        "| retries (redeliveries after a failed attempt, the relay's retries of a transient SQLSTATE) | {} |",
        sum("retries")
    )
    .unwrap();
    writeln!(md, "| deliveries measured overlapping another of their race | {} |", sum("overlap")).unwrap();
    writeln!(md, "| faults injected | {} |", faults.values().sum::<u64>()).unwrap();
    writeln!(md, "| fuzz cases | {} |", sum("fuzz_cases")).unwrap();
    writeln!(md, "| attacks tried | {} |", sum("attacks")).unwrap();
    writeln!(md, "| state checks (calls compared with serial delivery, catalog queries, …) | {} |", sum("checks"))
        .unwrap();
    for (k, label) in LABELS {
        writeln!(md, "| **{label}** | **{}** |", zero[k]).unwrap();
    }
    writeln!(md, "\n## Faults injected, by kind\n\n| fault | count |\n|---|---:|").unwrap();
    for (k, v) in &faults {
        writeln!(md, "| {k} | {v} |").unwrap();
    }
    writeln!(
        md,
        "\n## Per test\n\nsent: every attempt; reached: answered by the database statement (a fuzz case stopped at the\n\
         `::jsonb` cast or by the relay's JSON and size checks did not); applied: answers `applied` (or\n\
         messages of committed transactions); refused: refused with exactly the answer the case's\n\
         defect calls for; retries: redeliveries after a failed attempt plus the relay's own retries;\n\
         overlap: deliveries measured running at the same time as another of their race; checks:\n\
         facts verified once each (a message's effect after a kill, a transaction's atomicity, a\n\
         call compared field by field with the model and with serial delivery, a catalog query)."
    )
    .unwrap();
    writeln!(
        md,
        "\n| test | s | sent | reached | applied | refused | retries | overlap | duplicates | faults | fuzz cases | attacks | checks | non-zero figures |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    )
    .unwrap();
    for name in EXPECTED {
        let Some(r) = latest.get(*name) else {
            writeln!(md, "| {name} |{} **did not run** |", " — |".repeat(12)).unwrap();
            continue;
        };
        let bad: Vec<String> = r["zero"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
            .map(|(k, v)| format!("**{k} {v}**"))
            .collect();
        let f: u64 = r["faults"].as_object().into_iter().flatten().map(|(_, v)| v.as_u64().unwrap_or(0)).sum();
        writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {f} | {} | {} | {} | {} |",
            r["seconds"],
            r["delivered"],
            r["reached"],
            r["applied"],
            r["refused"],
            r["retries"],
            r["overlap"],
            r["duplicates"],
            r["fuzz_cases"],
            r["attacks"],
            r["checks"],
            if bad.is_empty() { "none".to_string() } else { bad.join(", ") }
        )
        .unwrap();
    }
    let failing: Vec<&Value> =
        latest.values().filter(|r| r["examples"].as_array().is_some_and(|e| !e.is_empty())).collect();
    if !failing.is_empty() {
        writeln!(md, "\n## First examples of non-zero figures\n").unwrap();
        for r in failing {
            writeln!(md, "- {}:", r["test"].as_str().unwrap()).unwrap();
            for e in r["examples"].as_array().unwrap().iter().take(4) {
                let e = e.as_str().unwrap_or_default().replace('|', "\\|").replace('\n', " ");
                let mut end = e.len().min(300);
                while !e.is_char_boundary(end) {
                    end -= 1;
                }
                writeln!(md, "  - `{}`", e[..end].replace('`', "'")).unwrap();
            }
        }
    }
    let path = report_file();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &md).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    println!("{md}");
    println!("written to {}", path.display());

    assert!(missing.is_empty(), "tests of the suite with no figures (did they run?): {missing:?}");
    // a test that delivered nothing, applied nothing or checked nothing proved nothing
    let idle: Vec<String> = POSITIVE
        .iter()
        .flat_map(|(name, keys)| {
            let r = &latest[*name];
            keys.iter().filter(|k| r[**k].as_u64().unwrap_or(0) == 0).map(move |k| format!("{name}: {k} = 0"))
        })
        .collect();
    assert!(idle.is_empty(), "figures that must be positive are zero: {idle:?}");
    let bad: Vec<String> = zero.iter().filter(|(_, v)| **v > 0).map(|(k, v)| format!("{k} = {v}")).collect();
    assert!(bad.is_empty(), "must-be-zero figures are not zero: {}", bad.join(", "));
}
