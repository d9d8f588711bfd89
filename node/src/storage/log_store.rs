//! The Raft log and vote in RocksDB, with group commit: appends are written at once and made
//! durable by one fsync of the write-ahead log that covers every append queued behind it.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use super::{cf, to_io, StorageStats, CF_LOGS, CF_META, CF_SNAPSHOT};
use crate::raft::{decode, encode, Entry, LogId, TypeConfig, Vote};
use crate::state_machine::format::LOG_FORMAT;

const KEY_VOTE: &[u8] = b"vote";
/// The data directory's LOG_FORMAT, 4 bytes big-endian (not through the codec it describes).
const KEY_LOG_FORMAT: &[u8] = b"log_format";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    flusher: Arc<Flusher>,
    stats: Arc<StorageStats>,
}

/// The flusher thread and its queue. Dropping the last handle stops the thread and waits for it,
/// so the database is closed (and its lock released) when the stores are dropped.
struct Flusher {
    queue: Option<mpsc::Sender<IOFlushed<TypeConfig>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Flusher {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl LogStore {
    pub(super) fn new(db: Arc<DB>, sync_appends: bool, stats: Arc<StorageStats>) -> Self {
        let (queue, receiver) = mpsc::channel();
        let flusher_db = db.clone();
        let flusher_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("wal-flusher".into())
            .spawn(move || flush_loop(&flusher_db, &receiver, sync_appends, &flusher_stats))
            .expect("spawning the WAL flusher thread");
        let flusher = Flusher {
            queue: Some(queue),
            thread: Some(thread),
        };
        LogStore {
            db,
            flusher: Arc::new(flusher),
            stats,
        }
    }

    /// The sizes the snapshot policy weighs, shared with the state machine store.
    pub fn stats(&self) -> Arc<StorageStats> {
        self.stats.clone()
    }

    fn get_meta<T: for<'de> serde::Deserialize<'de>>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.db.get_cf(cf(&self.db, CF_META), key).map_err(to_io)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn put_meta_synced<T: serde::Serialize>(&self, key: &[u8], value: &T) -> io::Result<()> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .put_cf_opt(cf(&self.db, CF_META), key, encode(value), &options)
            .map_err(to_io)
    }
}

/// Marks a new data directory with LOG_FORMAT, or checks the mark of an existing one: a node
/// refuses, by name, a log laid out by another build instead of decoding it as its own. A data
/// directory with contents but no mark was written before there was one.
pub(super) fn check_log_format(db: &DB) -> io::Result<()> {
    let refuse = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{why}; this conclave-node reads log format {LOG_FORMAT} only (start it on an \
                 empty data directory, or run the version that wrote this one)"
            ),
        )
    };
    let meta = cf(db, CF_META);
    if let Some(mark) = db.get_cf(meta, KEY_LOG_FORMAT).map_err(to_io)? {
        let format = <[u8; 4]>::try_from(mark.as_slice())
            .map(u32::from_be_bytes)
            .map_err(|_| {
                refuse(format!(
                    "the log format mark is {} bytes, not 4",
                    mark.len()
                ))
            })?;
        if format != LOG_FORMAT {
            return Err(refuse(format!(
                "the data directory holds a Raft log in format {format}"
            )));
        }
        return Ok(());
    }
    for family in [CF_LOGS, CF_META, CF_SNAPSHOT] {
        if db
            .iterator_cf(cf(db, family), IteratorMode::Start)
            .next()
            .is_some()
        {
            return Err(refuse(
                "the data directory holds a Raft log without a log format mark: an older \
                 conclave-node wrote it"
                    .to_string(),
            ));
        }
    }
    let mut options = WriteOptions::default();
    options.set_sync(true);
    db.put_cf_opt(meta, KEY_LOG_FORMAT, LOG_FORMAT.to_be_bytes(), &options)
        .map_err(to_io)
}

/// Completes queued append callbacks in batches: every callback waiting when an fsync starts is
/// covered by it (RocksDB writes its WAL sequentially, so syncing it syncs every earlier write).
fn flush_loop(
    db: &DB,
    queue: &mpsc::Receiver<IOFlushed<TypeConfig>>,
    sync: bool,
    stats: &StorageStats,
) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        // Unsynced only in the test-only unsafe mode that acknowledges before fsync.
        let started = std::time::Instant::now();
        let result = db.flush_wal(sync);
        stats.fsync_seconds.observe(started.elapsed().as_secs_f64());
        for callback in batch {
            callback.io_completed(result.clone().map_err(to_io));
        }
    }
}

fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        let mode = IteratorMode::From(&log_key(start), Direction::Forward);
        for item in self.db.iterator_cf(cf(&self.db, CF_LOGS), mode) {
            let (key, value) = item.map_err(to_io)?;
            let index = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, "log key is not 8 bytes")
            })?);
            if !range.contains(&index) {
                break;
            }
            entries.push(decode(&value)?);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let last = self
            .db
            .iterator_cf(cf(&self.db, CF_LOGS), IteratorMode::End)
            .next();
        let last_log_id = match last {
            Some(item) => {
                let (_, value) = item.map_err(to_io)?;
                Some(decode::<Entry>(&value)?.log_id())
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        // Raft §5.1: a vote must be durable before it is acted on.
        self.put_meta_synced(KEY_VOTE, vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not synced: losing it only means re-applying from the snapshot on restart; openraft
        // never relies on it for safety.
        self.db
            .put_cf(cf(&self.db, CF_META), KEY_COMMITTED, encode(&committed))
            .map_err(to_io)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let logs = cf(&self.db, CF_LOGS);
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(logs, log_key(entry.index()), encode(&entry));
        }
        self.stats.appended(batch.size_in_bytes());
        // Written to the WAL now, made durable by the flusher's next fsync; openraft treats the
        // entries as persisted (and so may count them toward a quorum) only once it calls back.
        self.db.write(batch).map_err(to_io)?;
        self.flusher
            .queue
            .as_ref()
            .expect("the queue lives as long as the flusher")
            .send(callback)
            .map_err(|_| io::Error::other("the WAL flusher thread has stopped"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        // Unsynced: the WAL is sequential, so a later synced append cannot survive a crash
        // without this truncation surviving too.
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf(&self.db, CF_LOGS), log_key(from), log_key(u64::MAX));
        self.db.write(batch).map_err(to_io)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_META), KEY_LAST_PURGED, encode(&log_id));
        batch.delete_range_cf(
            cf(&self.db, CF_LOGS),
            log_key(0),
            log_key(log_id.index() + 1),
        );
        self.db.write(batch).map_err(to_io)
    }
}
