//! The durable spool (`--spool-dir`): where a verified message goes when the database cannot take
//! it, so that it is answered 200 and applied later rather than lost (Vapi does not retry by
//! default). Plain segment files of checksummed records (segment.rs), appended by one writer
//! thread (writer.rs) that gathers the appends waiting for it, writes them, and fsyncs once for
//! all of them before any is answered; the drain (drain.rs) replays them in arrival order and deletes a
//! segment once every record in it is settled. Why not an embedded store: docs/OPERATIONS.md.
//!
//! A crash between a record's commit in the database and its segment's deletion replays it
//! after the restart, which the database answers as a duplicate: at-least-once delivery into an
//! exactly-once ledger.

pub mod drain;
pub mod segment;
mod writer;

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{oneshot, Notify};

use crate::metrics;
use segment::Entry;
use writer::{Command, Writer};

/// A segment is sealed, and the next append starts another, once it passes this size; a crash
/// replays at most one segment's worth of records already applied (as duplicates).
const SEGMENT_TARGET: u64 = 8 * 1024 * 1024;
/// Most appends written under one fsync.
const GROUP_MAX: usize = 1024;
/// How long, after the database was found unreachable, messages go to the spool without trying
/// it: during an outage every webhook would otherwise open (and retry) a connection that is
/// refused, thousands a second under load, each from a new source port (on one host, one of
/// them can even take the server's own port while it is down). The drain's success ends it early.
const DOWN_PAUSE_MS: u64 = 1_000;
/// Where the reply-expecting types last loaded from the database are kept, so a relay restarted
/// while the database is down still knows which messages it can spool.
const REPLY_TYPES_FILE: &str = "reply-types.json";

/// Why a message was not spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Past `--spool-max-bytes`: nothing is accepted that cannot be kept.
    #[error("the spool is full ({bytes} of {max} bytes)")]
    Full { bytes: u64, max: u64 },
    /// Vapi waits for this message's answer, which only the database can give.
    #[error("a {0} message expects a reply and cannot be spooled")]
    ReplyExpected(String),
    /// A message without a `type` (the database may still take it for one that expects a
    /// reply: tool-calls' type is optional in the SDK).
    #[error("a message without a type cannot be spooled")]
    Untyped,
    /// The relay has not yet learnt from the database which types expect a reply.
    #[error("the reply-expecting message types are not known yet")]
    TypesUnknown,
    #[error("spool I/O failed: {0}")]
    Io(#[from] io::Error),
    #[error("the spool directory {0} is in use by another relay")]
    Locked(PathBuf),
}

impl SpoolError {
    /// The `reason` label of a refused append.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Full { .. } => "full",
            Self::ReplyExpected(_) => "reply_expected",
            Self::Untyped => "untyped",
            Self::TypesUnknown => "types_unknown",
            Self::Io(_) | Self::Locked(_) => "io",
        }
    }
}

/// One segment's bookkeeping.
#[derive(Debug, Clone)]
pub(super) struct Segment {
    seq: u64,
    entries: u64,
    settled: u64,
    bytes: u64,
    /// When its oldest unsettled entry arrived (ms since the epoch).
    oldest_ms: Option<u64>,
    /// No more appends: the drain may take it.
    sealed: bool,
}

#[derive(Debug, Default)]
pub(super) struct Ledger {
    segments: VecDeque<Segment>,
    /// On disk plus reserved by appends in flight.
    bytes: u64,
}

impl Ledger {
    fn entries(&self) -> u64 {
        self.segments.iter().map(|s| s.entries - s.settled).sum()
    }

    fn oldest_ms(&self) -> Option<u64> {
        self.segments.iter().find_map(|s| s.oldest_ms)
    }

    fn segment(&mut self, seq: u64) -> Option<&mut Segment> {
        self.segments.iter_mut().find(|s| s.seq == seq)
    }
}

/// What `/readyz` and the metrics report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Depth {
    pub entries: u64,
    pub bytes: u64,
    pub oldest_age_seconds: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    ledger: Arc<Mutex<Ledger>>,
    writer: Mutex<mpsc::Sender<Command>>,
    /// Woken by every append, for the drain.
    appended: Notify,
    reply_types: RwLock<Option<HashSet<String>>>,
    /// Until when (ms since the epoch) the database is taken for unreachable ([`DOWN_PAUSE_MS`]).
    down_until: AtomicU64,
    /// Held (an exclusive lock on `LOCK`) while the spool is open.
    _lock: File,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("dir", &self.dir).field("max_bytes", &self.max_bytes).finish_non_exhaustive()
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(super) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.spool"))
}

/// A segment's sequence number, from a name [`segment_path`] made.
fn segment_seq(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".spool")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

/// Makes a directory entry (a new or deleted file in it) durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering what a previous process left: every
    /// segment is checked, a damaged tail is cut off with a log line (the record it held was
    /// never answered 200: its fsync had not returned), and empty segments are removed.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir)?;
        // bodies as Vapi sent them (callers' numbers, transcripts): the relay's user only
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("LOCK"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked(dir.to_path_buf())),
            Err(fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let mut seqs: Vec<u64> =
            fs::read_dir(dir)?.filter_map(|e| e.ok()?.file_name().to_str().and_then(segment_seq)).collect();
        seqs.sort_unstable();
        let mut ledger = Ledger::default();
        for &seq in &seqs {
            let path = segment_path(dir, seq);
            let bytes = fs::read(&path)?;
            let scan = segment::scan(&bytes);
            if let Some(damage) = scan.damage {
                tracing::warn!(
                    segment = %path.display(),
                    offset = scan.valid_len,
                    skipped_bytes = bytes.len() - scan.valid_len,
                    damage = damage.describe(),
                    "spool: a damaged record was cut off, not replayed (an append a crash interrupted)"
                );
                metrics::record_spool_damaged();
                if !scan.entries.is_empty() {
                    let file = OpenOptions::new().write(true).open(&path)?;
                    file.set_len(scan.valid_len as u64)?;
                    file.sync_all()?;
                }
            }
            if scan.entries.is_empty() {
                fs::remove_file(&path)?;
                continue;
            }
            ledger.bytes += scan.valid_len as u64;
            ledger.segments.push_back(Segment {
                seq,
                entries: scan.entries.len() as u64,
                settled: 0,
                bytes: scan.valid_len as u64,
                oldest_ms: scan.entries.first().map(|e| e.arrived_ms),
                sealed: true,
            });
        }
        sync_dir(dir)?;
        let recovered = ledger.entries();
        if recovered > 0 {
            tracing::info!(
                entries = recovered,
                bytes = ledger.bytes,
                "spool: messages from before the restart will be drained"
            );
        }
        let reply_types = fs::read(dir.join(REPLY_TYPES_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<HashSet<String>>(&bytes).ok());
        let ledger = Arc::new(Mutex::new(ledger));
        let (tx, rx) = mpsc::channel();
        let writer = Writer::new(dir.to_path_buf(), ledger.clone(), seqs.last().map_or(1, |s| s + 1));
        std::thread::Builder::new().name("voxanne-spool".into()).spawn(move || writer.run(rx))?;
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            ledger,
            writer: Mutex::new(tx),
            appended: Notify::new(),
            reply_types: RwLock::new(reply_types),
            down_until: AtomicU64::new(0),
            _lock: lock,
        };
        spool.record_metrics();
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database could not be reached: spool without trying it for a moment.
    pub fn database_unreachable(&self) {
        self.down_until.store(now_ms() + DOWN_PAUSE_MS, Ordering::Relaxed);
    }

    /// The database answered.
    pub fn database_reachable(&self) {
        self.down_until.store(0, Ordering::Relaxed);
    }

    /// Whether the database was found unreachable a moment ago.
    pub fn database_down(&self) -> bool {
        now_ms() < self.down_until.load(Ordering::Relaxed)
    }

    /// Whether a message of type `kind` may be spooled: not one Vapi waits on for its reply.
    pub fn admits(&self, kind: Option<&str>) -> Result<(), SpoolError> {
        let types = self.reply_types.read().expect("the reply types' lock is never poisoned");
        match (&*types, kind) {
            (None, _) => Err(SpoolError::TypesUnknown),
            (Some(_), None) => Err(SpoolError::Untyped),
            (Some(types), Some(kind)) if types.contains(kind) => Err(SpoolError::ReplyExpected(kind.to_string())),
            (Some(_), Some(_)) => Ok(()),
        }
    }

    /// Whether the reply-expecting types are known (from the database, now or before a restart).
    pub fn knows_reply_types(&self) -> bool {
        self.reply_types.read().expect("the reply types' lock is never poisoned").is_some()
    }

    /// Sets the reply-expecting types the database named, and keeps them for the next start.
    pub fn set_reply_types(&self, types: Vec<String>) -> io::Result<()> {
        let types: HashSet<String> = types.into_iter().collect();
        let tmp = self.dir.join(format!("{REPLY_TYPES_FILE}.tmp"));
        let mut file = File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(&types).expect("strings serialize"))?;
        file.sync_all()?;
        fs::rename(&tmp, self.dir.join(REPLY_TYPES_FILE))?;
        sync_dir(&self.dir)?;
        *self.reply_types.write().expect("the reply types' lock is never poisoned") = Some(types);
        Ok(())
    }

    /// Appends a verified message; returns once it is on disk (fsynced). Refused, with nothing
    /// written, when the spool would pass `--spool-max-bytes`.
    pub async fn append(&self, body: &str, credential: Option<&[u8]>) -> Result<(), SpoolError> {
        let arrived_ms = now_ms();
        let record = segment::encode(&Entry { arrived_ms, credential, body });
        let len = record.len() as u64;
        {
            let mut ledger = self.ledger.lock().expect("the ledger's lock is never poisoned");
            if ledger.bytes + len > self.max_bytes {
                return Err(SpoolError::Full { bytes: ledger.bytes, max: self.max_bytes });
            }
            ledger.bytes += len;
        }
        let (done, written) = oneshot::channel();
        let sent = self.writer.lock().expect("the writer's lock is never poisoned").send(Command::Append {
            record,
            arrived_ms,
            done,
        });
        let result = match sent {
            Ok(()) => written.await.unwrap_or_else(|_| Err(io::Error::other("the spool writer stopped"))),
            Err(_) => Err(io::Error::other("the spool writer stopped")),
        };
        match result {
            Ok(()) => {
                metrics::record_spool_appended();
                self.record_metrics();
                self.appended.notify_one();
                Ok(())
            }
            Err(e) => {
                self.ledger.lock().expect("the ledger's lock is never poisoned").bytes -= len;
                Err(e.into())
            }
        }
    }

    /// Whether a message of `len` bytes would still fit under `--spool-max-bytes`.
    pub fn has_room_for(&self, len: usize) -> bool {
        let ledger = self.ledger.lock().expect("the ledger's lock is never poisoned");
        ledger.bytes + len as u64 <= self.max_bytes
    }

    /// Entries, bytes, and the age of the oldest entry.
    pub fn depth(&self) -> Depth {
        let ledger = self.ledger.lock().expect("the ledger's lock is never poisoned");
        let age = ledger.oldest_ms().map_or(0, |oldest| now_ms().saturating_sub(oldest) / 1000);
        Depth { entries: ledger.entries(), bytes: ledger.bytes, oldest_age_seconds: age }
    }

    pub fn record_metrics(&self) {
        metrics::record_spool_depth(self.depth());
    }

    /// The oldest segment with unsettled entries, sealed (the active one is sealed first), once
    /// there is one.
    async fn next_segment(&self) -> u64 {
        loop {
            let front = {
                let ledger = self.ledger.lock().expect("the ledger's lock is never poisoned");
                ledger.segments.front().map(|s| (s.seq, s.sealed, s.entries))
            };
            match front {
                Some((seq, true, _)) => return seq,
                Some((_, false, entries)) if entries > 0 => self.seal().await,
                _ => self.appended.notified().await,
            }
        }
    }

    /// Makes the writer start a new segment at its next append.
    async fn seal(&self) {
        let (done, sealed) = oneshot::channel();
        let sent = self.writer.lock().expect("the writer's lock is never poisoned").send(Command::Seal { done });
        if sent.is_ok() {
            let _ = sealed.await;
        }
    }

    /// Reads a sealed segment.
    async fn read(&self, seq: u64) -> io::Result<Vec<u8>> {
        let path = segment_path(&self.dir, seq);
        tokio::task::spawn_blocking(move || fs::read(path)).await.map_err(io::Error::other)?
    }

    /// One more entry of segment `seq` is settled; `next_arrived_ms` is when the next one came.
    fn settled(&self, seq: u64, next_arrived_ms: Option<u64>) {
        if let Some(segment) = self.ledger.lock().expect("the ledger's lock is never poisoned").segment(seq) {
            segment.settled = (segment.settled + 1).min(segment.entries);
            segment.oldest_ms = next_arrived_ms;
        }
        self.record_metrics();
    }

    /// Deletes a segment every entry of which is settled.
    async fn remove(&self, seq: u64) -> io::Result<()> {
        let (path, dir) = (segment_path(&self.dir, seq), self.dir.clone());
        tokio::task::spawn_blocking(move || {
            fs::remove_file(&path)?;
            sync_dir(&dir)
        })
        .await
        .map_err(io::Error::other)??;
        let mut ledger = self.ledger.lock().expect("the ledger's lock is never poisoned");
        if let Some(at) = ledger.segments.iter().position(|s| s.seq == seq) {
            let segment = ledger.segments.remove(at).expect("found");
            ledger.bytes -= segment.bytes;
        }
        drop(ledger);
        self.record_metrics();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::segment::MAGIC;
    use super::*;

    /// A spool directory of the test's own, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Dir {
            let dir = std::env::temp_dir().join(format!("voxanne-spool-test-{}", uuid::Uuid::new_v4().simple()));
            Dir(dir)
        }
        fn segments(&self) -> Vec<PathBuf> {
            let mut found: Vec<PathBuf> = fs::read_dir(&self.0)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_str().and_then(segment_seq).is_some())
                .map(|e| e.path())
                .collect();
            found.sort();
            found
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const MIB: u64 = 1024 * 1024;

    fn body(i: usize) -> String {
        format!(r#"{{"message":{{"type":"status-update","n":{i}}}}}"#)
    }

    /// The bodies a segment holds, in order.
    fn bodies(path: &Path) -> Vec<String> {
        let bytes = fs::read(path).unwrap();
        segment::scan(&bytes).entries.iter().map(|e| e.body.to_string()).collect()
    }

    #[tokio::test]
    async fn concurrent_appends_are_all_on_disk_in_one_segment_when_answered_and_survive_a_reopen() {
        let dir = Dir::new();
        let spool = Arc::new(Spool::open(&dir.0, MIB).unwrap());
        let appends = (0..50).map(|i| {
            let spool = spool.clone();
            tokio::spawn(async move { spool.append(&body(i), (i % 2 == 0).then_some(&[1u8; 32][..])).await })
        });
        for append in futures_util::future::join_all(appends).await {
            append.unwrap().unwrap();
        }
        assert_eq!(spool.depth().entries, 50);
        let segments = dir.segments();
        assert_eq!(segments.len(), 1);
        let mut stored = bodies(&segments[0]);
        stored.sort();
        let mut sent: Vec<String> = (0..50).map(body).collect();
        sent.sort();
        assert_eq!(stored, sent);
        drop(spool);

        let reopened = Spool::open(&dir.0, MIB).unwrap();
        assert_eq!(reopened.depth().entries, 50);
        assert_eq!(reopened.depth().bytes, fs::metadata(&segments[0]).unwrap().len());
    }

    #[tokio::test]
    async fn a_damaged_tail_is_cut_off_at_open_and_the_records_before_it_are_kept() {
        let dir = Dir::new();
        let spool = Spool::open(&dir.0, MIB).unwrap();
        for i in 0..3 {
            spool.append(&body(i), None).await.unwrap();
        }
        drop(spool);
        let path = dir.segments().pop().unwrap();
        let good = fs::metadata(&path).unwrap().len();
        // half of a fourth record: an append a crash cut short
        let record = segment::encode(&Entry { arrived_ms: 1, credential: None, body: &body(3) });
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&record[..record.len() / 2]).unwrap();
        drop(file);

        let reopened = Spool::open(&dir.0, MIB).unwrap();
        assert_eq!(reopened.depth().entries, 3);
        assert_eq!(fs::metadata(&path).unwrap().len(), good, "the damaged tail is cut off");
        assert_eq!(bodies(&path), (0..3).map(body).collect::<Vec<_>>());
        // the next append starts a segment of its own
        reopened.append(&body(4), None).await.unwrap();
        assert_eq!(dir.segments().len(), 2);
    }

    #[tokio::test]
    async fn a_segment_with_nothing_whole_in_it_is_removed_at_open() {
        let dir = Dir::new();
        fs::create_dir_all(&dir.0).unwrap();
        fs::write(segment_path(&dir.0, 7), &MAGIC[..5]).unwrap();
        fs::write(segment_path(&dir.0, 8), MAGIC).unwrap();
        let spool = Spool::open(&dir.0, MIB).unwrap();
        assert_eq!(spool.depth().entries, 0);
        assert!(dir.segments().is_empty());
        spool.append(&body(1), None).await.unwrap();
        assert_eq!(dir.segments(), vec![segment_path(&dir.0, 9)], "numbering goes on after the removed ones");
    }

    #[tokio::test]
    async fn past_the_cap_nothing_is_written_and_the_append_is_refused() {
        let dir = Dir::new();
        let one = segment::encode(&Entry { arrived_ms: 0, credential: None, body: &body(0) }).len() as u64;
        let spool = Spool::open(&dir.0, MAGIC.len() as u64 + 2 * one).unwrap();
        spool.append(&body(0), None).await.unwrap();
        spool.append(&body(1), None).await.unwrap();
        let before = fs::metadata(&dir.segments()[0]).unwrap().len();
        assert!(matches!(spool.append(&body(2), None).await, Err(SpoolError::Full { .. })));
        assert_eq!(fs::metadata(&dir.segments()[0]).unwrap().len(), before);
        assert_eq!(spool.depth().entries, 2);
        assert!(!spool.has_room_for(body(2).len()));
        assert!(spool.has_room_for(0));
    }

    #[tokio::test]
    async fn only_the_relays_user_can_read_the_spool() {
        let dir = Dir::new();
        let spool = Spool::open(&dir.0, MIB).unwrap();
        spool.append(&body(0), None).await.unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.0), 0o700);
        assert_eq!(mode(&dir.segments()[0]), 0o600);
    }

    #[test]
    fn a_directory_is_one_relays_spool() {
        let dir = Dir::new();
        let first = Spool::open(&dir.0, MIB).unwrap();
        assert!(matches!(Spool::open(&dir.0, MIB), Err(SpoolError::Locked(_))));
        drop(first);
        Spool::open(&dir.0, MIB).unwrap();
    }

    #[test]
    fn only_typed_messages_that_expect_no_reply_are_admitted_once_the_types_are_known() {
        let dir = Dir::new();
        let spool = Spool::open(&dir.0, MIB).unwrap();
        assert!(matches!(spool.admits(Some("status-update")), Err(SpoolError::TypesUnknown)));
        spool.set_reply_types(vec!["assistant-request".into(), "tool-calls".into()]).unwrap();
        spool.admits(Some("status-update")).unwrap();
        spool.admits(Some("a-type-from-next-year")).unwrap();
        assert!(matches!(spool.admits(Some("tool-calls")), Err(SpoolError::ReplyExpected(_))));
        assert!(matches!(spool.admits(None), Err(SpoolError::Untyped)));
        drop(spool);
        // kept for a restart while the database is down
        let reopened = Spool::open(&dir.0, MIB).unwrap();
        assert!(matches!(reopened.admits(Some("assistant-request")), Err(SpoolError::ReplyExpected(_))));
        reopened.admits(Some("end-of-call-report")).unwrap();
    }

    #[tokio::test]
    async fn the_drain_takes_sealed_segments_oldest_first_and_seals_the_active_one() {
        let dir = Dir::new();
        let spool = Spool::open(&dir.0, 64 * MIB).unwrap();
        spool.append(&body(0), None).await.unwrap();
        let first = spool.next_segment().await;
        // sealed: the next append goes to another segment
        spool.append(&body(1), None).await.unwrap();
        assert_eq!(dir.segments().len(), 2);
        assert_eq!(spool.next_segment().await, first, "the oldest first");
        spool.settled(first, None);
        spool.remove(first).await.unwrap();
        let second = spool.next_segment().await;
        assert!(second > first);
        assert_eq!(bodies(&segment_path(&dir.0, second)), vec![body(1)]);
        spool.settled(second, None);
        spool.remove(second).await.unwrap();
        assert_eq!(spool.depth(), Depth { entries: 0, bytes: 0, oldest_age_seconds: 0 });
        assert!(dir.segments().is_empty());
    }
}
