//! Figures of the reliability and security suite.
//!
//! Every test of the suite (storms, races, crashes, fuzz, attacks, catalog) counts what it did
//! and what went wrong in a [`Figures`], and [`Figures::finish`] appends one JSON line to
//! `target/voxanne-reliability/figures.jsonl` before asserting that every "must be zero" figure
//! is zero. The test binaries are separate processes, so the file is how they meet: the report
//! (`tests/reliability_report.rs`, run by name after the suite) aggregates the latest line of
//! every expected test, prints the summary and writes [`report_file`]
//! (`target/voxanne-reliability/RELIABILITY.md`); `bin/reliability-doc` copies it to
//! `docs/RELIABILITY.md`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// `VOXANNE_LONG=1` selects the long variants (≥ 100,000 fuzz cases, more rounds, more kills).
pub fn long() -> bool {
    matches!(std::env::var("VOXANNE_LONG").as_deref(), Ok("1") | Ok("true") | Ok("yes"))
}

/// `ci` in a normal run, `long` with `VOXANNE_LONG=1`.
pub fn scale(ci: usize, long_run: usize) -> usize {
    if long() {
        long_run
    } else {
        ci
    }
}

/// The seed of the randomised tests: `VOXANNE_SEED` (decimal) or a fixed default, so a CI run
/// is reproducible and a failing seed can be replayed.
pub fn seed(default: u64) -> u64 {
    std::env::var("VOXANNE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// The workspace root (tests/it/../..).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// Where the figures of a run are collected.
pub fn figures_dir() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"));
    target.join("voxanne-reliability")
}

pub fn figures_file() -> PathBuf {
    figures_dir().join("figures.jsonl")
}

/// Where the report of a run is written (never a tracked file; `bin/reliability-doc` copies it
/// to docs/RELIABILITY.md).
pub fn report_file() -> PathBuf {
    figures_dir().join("RELIABILITY.md")
}

/// The run a record belongs to: `VOXANNE_RUN_ID`, which bin/test sets once for the suite and
/// its report, so the report counts only records of this run.
pub fn run_id() -> Option<String> {
    std::env::var("VOXANNE_RUN_ID").ok()
}

/// The kinds of "must be zero" figures, in report order.
pub const ZERO_FIGURES: [&str; 7] = ["lost", "doubled", "partial", "leaks", "panics", "crashes", "errors"];

/// What one test did. The "must be zero" figures: `lost` (an acknowledged effect missing),
/// `doubled` (an effect written twice), `partial` (rows of a failed or killed transaction, or
/// rows breaking the one-statement invariants), `leaks` (a tenant saw or changed another
/// tenant's rows), `panics` (XX000 / a Rust panic), `crashes` (a backend died on its own),
/// `errors` (an answer outside the documented contract: a 5xx, an undocumented SQLSTATE, a
/// client error on a valid message).
#[derive(Debug)]
pub struct Figures {
    pub name: &'static str,
    started: Instant,
    /// Attempts sent (every delivery of every message, redeliveries included).
    pub delivered: u64,
    /// Planned repeats of a message (a sender's duplicates), not redeliveries after a failure.
    pub duplicates: u64,
    /// Deliveries that reached the database statement (for the fuzz: past the `::jsonb` cast and
    /// the relay's own JSON and size checks); the rest were stopped before it.
    pub reached: u64,
    /// Effects acknowledged as `applied`: the work that reached the database and changed it.
    pub applied: u64,
    /// Deliveries refused as expected: the one documented answer their defect calls for.
    pub refused: u64,
    /// Redeliveries after a failed attempt and the relay's own retries of a transient SQLSTATE.
    pub retries: u64,
    /// Deliveries that ran at the same time as another of the same race (measured: statement or
    /// request windows that overlap), the proof that a race really raced.
    pub overlap: u64,
    pub faults: BTreeMap<String, u64>,
    pub fuzz_cases: u64,
    pub attacks: u64,
    pub checks: u64,
    pub zero: BTreeMap<&'static str, u64>,
    pub examples: Vec<String>,
    pub notes: BTreeMap<String, Value>,
}

impl Figures {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            started: Instant::now(),
            delivered: 0,
            duplicates: 0,
            reached: 0,
            applied: 0,
            refused: 0,
            retries: 0,
            overlap: 0,
            faults: BTreeMap::new(),
            fuzz_cases: 0,
            attacks: 0,
            checks: 0,
            zero: ZERO_FIGURES.iter().map(|k| (*k, 0)).collect(),
            examples: Vec::new(),
            notes: BTreeMap::new(),
        }
    }

    pub fn fault(&mut self, kind: &str, n: u64) {
        *self.faults.entry(kind.to_string()).or_default() += n;
    }

    /// Count a violation of a "must be zero" figure, keeping the first few examples.
    pub fn violation(&mut self, kind: &'static str, example: impl Into<String>) {
        assert!(ZERO_FIGURES.contains(&kind), "unknown figure {kind}");
        *self.zero.get_mut(kind).unwrap() += 1;
        // the first few of each kind
        let prefix = format!("{kind}: ");
        if self.examples.iter().filter(|e| e.starts_with(&prefix)).count() < 4 {
            let mut e: String = example.into();
            if e.len() > 600 {
                let mut end = 600;
                while !e.is_char_boundary(end) {
                    end -= 1;
                }
                e.truncate(end);
                e.push('…');
            }
            self.examples.push(format!("{kind}: {e}"));
        }
    }

    pub fn note(&mut self, key: &str, value: impl Into<Value>) {
        self.notes.insert(key.to_string(), value.into());
    }

    pub fn count(&self, kind: &str) -> u64 {
        self.zero.get(kind).copied().unwrap_or(0)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "test": self.name,
            "finished_unix": SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs(),
            "long": long(),
            "seconds": (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            "run": run_id(),
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "reached": self.reached,
            "applied": self.applied,
            "refused": self.refused,
            "retries": self.retries,
            "overlap": self.overlap,
            "faults": self.faults,
            "fuzz_cases": self.fuzz_cases,
            "attacks": self.attacks,
            "checks": self.checks,
            "zero": self.zero,
            "examples": self.examples,
            "notes": self.notes,
        })
    }

    /// Append the record, print it, then fail if any "must be zero" figure is not zero.
    pub fn finish(self) {
        let record = self.to_json();
        let dir = figures_dir();
        std::fs::create_dir_all(&dir).expect("create the figures directory");
        let mut file =
            std::fs::OpenOptions::new().create(true).append(true).open(figures_file()).expect("open the figures file");
        // One write of one line: appends of concurrent writers do not interleave.
        let mut line = record.to_string();
        line.push('\n');
        file.write_all(line.as_bytes()).expect("append to the figures file");
        eprintln!("figures {}", serde_json::to_string_pretty(&record).unwrap());
        let bad: Vec<String> = self.zero.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k} = {n}")).collect();
        assert!(bad.is_empty(), "{}: {} (examples: {:#?})", self.name, bad.join(", "), self.examples);
    }
}

// ---------------------------------------------------------------------------------------------
// A small deterministic PRNG (splitmix64) for shuffles and choices: seeded, so every run of a
// given seed makes the same schedule (the timing of a real race still differs, by design).

#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}
