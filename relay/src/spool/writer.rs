//! The spool's one writer thread: it takes every append waiting for it, writes them to the
//! active segment, and fsyncs once for all of them before any is answered (group commit); it
//! starts a segment when there is none and seals one past [`SEGMENT_TARGET`] or when the drain
//! asks.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};

use tokio::sync::oneshot;

use super::segment::MAGIC;
use super::{segment_path, sync_dir, Ledger, Segment, GROUP_MAX, SEGMENT_TARGET};

/// What the writer is asked.
pub(super) enum Command {
    Append { record: Vec<u8>, arrived_ms: u64, done: oneshot::Sender<io::Result<()>> },
    Seal { done: oneshot::Sender<()> },
}

/// The writer thread's state: the segment being appended to, if any.
pub(super) struct Writer {
    dir: PathBuf,
    ledger: Arc<Mutex<Ledger>>,
    next_seq: u64,
    active: Option<Active>,
}

struct Active {
    seq: u64,
    file: File,
    len: u64,
}

/// An append written, waiting for the group's fsync.
struct Written {
    done: oneshot::Sender<io::Result<()>>,
    len: u64,
    arrived_ms: u64,
}

impl Writer {
    pub(super) fn new(dir: PathBuf, ledger: Arc<Mutex<Ledger>>, next_seq: u64) -> Writer {
        Writer { dir, ledger, next_seq, active: None }
    }

    /// Serves commands until every sender is gone: each turn takes every command already
    /// waiting (up to [`GROUP_MAX`]), writes their records, and fsyncs once before answering.
    pub(super) fn run(mut self, commands: mpsc::Receiver<Command>) {
        while let Ok(first) = commands.recv() {
            let mut group = vec![first];
            while group.len() < GROUP_MAX {
                match commands.try_recv() {
                    Ok(command) => group.push(command),
                    Err(_) => break,
                }
            }
            let mut written = Vec::new();
            for command in group {
                match command {
                    Command::Append { record, arrived_ms, done } => match self.write(&record) {
                        Ok(()) => written.push(Written { done, len: record.len() as u64, arrived_ms }),
                        Err(e) => {
                            let _ = done.send(Err(e));
                        }
                    },
                    Command::Seal { done } => {
                        self.commit(std::mem::take(&mut written));
                        self.seal();
                        let _ = done.send(());
                    }
                }
            }
            self.commit(written);
            if self.active.as_ref().is_some_and(|a| a.len >= SEGMENT_TARGET) {
                self.seal();
            }
        }
    }

    /// Appends one record to the active segment, starting one if needed. A write that fails
    /// halfway is cut off again, so the next record does not follow a damaged one.
    fn write(&mut self, record: &[u8]) -> io::Result<()> {
        if self.active.is_none() {
            self.active = Some(self.create()?);
        }
        let active = self.active.as_mut().expect("just made");
        match active.file.write_all(record) {
            Ok(()) => {
                active.len += record.len() as u64;
                Ok(())
            }
            Err(e) => {
                if active.file.set_len(active.len).is_err() {
                    // left damaged: no more appends to it (a restart cuts the tail off)
                    self.seal();
                }
                Err(e)
            }
        }
    }

    /// A new segment, its name durable before any record goes in.
    fn create(&mut self) -> io::Result<Active> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut file =
            OpenOptions::new().create_new(true).append(true).mode(0o600).open(segment_path(&self.dir, seq))?;
        file.write_all(MAGIC)?;
        file.sync_all()?;
        sync_dir(&self.dir)?;
        let mut ledger = self.ledger.lock().expect("the ledger's lock is never poisoned");
        ledger.bytes += MAGIC.len() as u64;
        ledger.segments.push_back(Segment {
            seq,
            entries: 0,
            settled: 0,
            bytes: MAGIC.len() as u64,
            oldest_ms: None,
            sealed: false,
        });
        Ok(Active { seq, file, len: MAGIC.len() as u64 })
    }

    /// One fsync for the written records, then their answers. A failed fsync fails them all,
    /// and the segment takes no more appends: what reached the disk of it is unknown.
    fn commit(&mut self, written: Vec<Written>) {
        if written.is_empty() {
            return;
        }
        let active = self.active.as_ref().expect("records were written to it");
        let synced = active.file.sync_data();
        if synced.is_ok() {
            let mut ledger = self.ledger.lock().expect("the ledger's lock is never poisoned");
            let segment = ledger.segment(active.seq).expect("the active segment is in the ledger");
            segment.entries += written.len() as u64;
            segment.bytes += written.iter().map(|w| w.len).sum::<u64>();
            segment.oldest_ms = segment.oldest_ms.or(Some(written[0].arrived_ms));
        }
        let failed = synced.as_ref().err().map(|e| (e.kind(), e.to_string()));
        if failed.is_some() {
            self.seal();
        }
        for w in written {
            let _ = w.done.send(match &failed {
                None => Ok(()),
                Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
            });
        }
    }

    fn seal(&mut self) {
        if let Some(active) = self.active.take() {
            let mut ledger = self.ledger.lock().expect("the ledger's lock is never poisoned");
            if let Some(segment) = ledger.segment(active.seq) {
                segment.sealed = true;
            }
        }
    }
}
