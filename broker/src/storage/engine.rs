//! The embedded engine: one redb file, `tandem.redb`, in `storage.path`.
//!
//! redb over fjall, measured on this workload (QoS 1 publish to a persistent session,
//! ack, delete; retained set and overwrite) on the 2-core test machine: with group
//! commit both sustain 175k-240k ops/s; redb reopens and scans 100,000 messages in
//! 15-38 ms against fjall's 180-210 ms, keeps them in 1.8 MB against a 31.5 MB journal,
//! pulls in no dependency beyond libc (fjall: 47 crates), and is durable by default.
//! fjall was 1.4-1.7x faster at one fsync per op, which group commit makes rare. See
//! docs/storage.md.
//!
//! # Tables
//! | table      | key               | value                         |
//! |------------|-------------------|-------------------------------|
//! | `meta`     | name              | u64 (`format`)                |
//! | `sessions` | client id         | [`SessionRecord`]             |
//! | `queue`    | (client id, seq)  | [`StoredDelivery`]            |
//! | `sent`     | (client id, seq)  | [`Sent`] (QoS 2 out)          |
//! | `incoming` | (client id, pkid) | incarnation (QoS 2 in)        |
//! | `retained` | topic             | message                       |
//! | `wills`    | client id         | [`WillRecord`](super::WillRecord) (delayed)  |

use std::collections::BTreeMap;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use bytestring::ByteString;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition,
};

use super::ops::{FORMAT, Op, Snapshot, Storage, StorageError, StoredMessage, StoredSession};
use super::record::{self, Corrupt};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
const SENT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("sent");
const INCOMING: TableDefinition<(&str, u16), u64> = TableDefinition::new("incoming");
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
const WILLS: TableDefinition<&str, &[u8]> = TableDefinition::new("wills");

/// The file in `storage.path`.
pub const FILE: &str = "tandem.redb";

/// The redb engine.
pub struct Redb {
    db: Option<Database>,
    file: PathBuf,
}

impl Redb {
    /// Opens (or creates) the store in directory `dir`: checks every page of the file,
    /// refuses a damaged one or one of a newer format, migrates an older one.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|source| StorageError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let file = dir.join(FILE);
        let db = open_file(&file)?;
        let mut engine = Self { db: Some(db), file };
        engine.check_format()?;
        Ok(engine)
    }

    fn db(&self) -> Result<&Database, StorageError> {
        self.db.as_ref().ok_or_else(|| StorageError::Engine {
            path: self.file.clone(),
            detail: "the store is closed after an error".into(),
        })
    }

    fn err(&self, e: impl Into<redb::Error>) -> StorageError {
        engine_error(&self.file, e.into())
    }

    fn corrupt(&self, c: Corrupt, key: &str) -> StorageError {
        StorageError::Corrupt {
            path: self.file.clone(),
            detail: format!("{c} for {key:?}"),
        }
    }

    /// Reads the format, writes it into a new store, refuses a newer one.
    fn check_format(&mut self) -> Result<(), StorageError> {
        let tx = self.db()?.begin_write().map_err(|e| self.err(e))?;
        let found = {
            let mut meta = tx.open_table(META).map_err(|e| self.err(e))?;
            let found = meta
                .get("format")
                .map_err(|e| self.err(e))?
                .map(|v| v.value());
            if found.is_none() {
                meta.insert("format", FORMAT).map_err(|e| self.err(e))?;
            }
            // Every table exists from here on, so reads never meet a missing one.
            tx.open_table(SESSIONS).map_err(|e| self.err(e))?;
            tx.open_table(QUEUE).map_err(|e| self.err(e))?;
            tx.open_table(SENT).map_err(|e| self.err(e))?;
            tx.open_table(INCOMING).map_err(|e| self.err(e))?;
            tx.open_table(RETAINED).map_err(|e| self.err(e))?;
            tx.open_table(WILLS).map_err(|e| self.err(e))?;
            found
        };
        match found {
            Some(found) if found > FORMAT => Err(StorageError::Newer {
                path: self.file.clone(),
                found,
            }),
            // Format 1 is the first: an older store cannot exist yet. Migrations go here,
            // one step per format, inside this transaction.
            _ => tx.commit().map_err(|e| self.err(e)),
        }
    }
}

/// Opens `file`, turning redb's panics on a damaged file (debug builds) into errors.
fn open_file(file: &Path) -> Result<Database, StorageError> {
    let opened = catch_unwind(AssertUnwindSafe(|| {
        Database::builder()
            .set_check_integrity_on_open(true)
            .create(file)
    }));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(engine_error(file, e.into())),
        Err(_) => Err(StorageError::Corrupt {
            path: file.to_path_buf(),
            detail: "the engine could not read it".into(),
        }),
    }
}

fn engine_error(file: &Path, e: redb::Error) -> StorageError {
    match e {
        redb::Error::Io(source) => StorageError::Io {
            path: file.to_path_buf(),
            source,
        },
        redb::Error::Corrupted(detail) => StorageError::Corrupt {
            path: file.to_path_buf(),
            detail,
        },
        redb::Error::DatabaseAlreadyOpen => StorageError::Engine {
            path: file.to_path_buf(),
            detail: "another process has the store open (is another Tandem running on it?)".into(),
        },
        other => StorageError::Engine {
            path: file.to_path_buf(),
            detail: other.to_string(),
        },
    }
}

/// The tables a batch writes.
struct Tables<'tx> {
    sessions: Table<'tx, &'static str, &'static [u8]>,
    queue: Table<'tx, (&'static str, u64), &'static [u8]>,
    sent: Table<'tx, (&'static str, u64), &'static [u8]>,
    incoming: Table<'tx, (&'static str, u16), u64>,
    retained: Table<'tx, &'static str, &'static [u8]>,
    wills: Table<'tx, &'static str, &'static [u8]>,
}

impl Tables<'_> {
    fn apply(&mut self, op: &Op) -> Result<(), redb::Error> {
        match op {
            Op::Session { client_id, record } => {
                let bytes = record::encode_session(record);
                self.sessions.insert(&**client_id, bytes.as_slice())?;
            }
            Op::SessionGone {
                client_id,
                incarnation,
            } => self.session_gone(client_id, *incarnation)?,
            Op::Queued {
                client_id,
                seq,
                delivery,
            } => {
                let bytes = record::encode_delivery(delivery);
                self.queue.insert((&**client_id, *seq), bytes.as_slice())?;
            }
            Op::Sent {
                client_id,
                seq,
                sent,
            } => {
                let key = (&**client_id, *seq);
                // Only for a delivery still queued: a late state of one already done
                // must not leave a record behind.
                if self.queue.get(key)?.is_some() {
                    self.sent.insert(key, &record::encode_sent(*sent)[..])?;
                }
            }
            Op::Done { client_id, seq } => {
                self.queue.remove((&**client_id, *seq))?;
                self.sent.remove((&**client_id, *seq))?;
            }
            Op::Incoming {
                client_id,
                pkid,
                incarnation,
            } => {
                self.incoming.insert((&**client_id, *pkid), *incarnation)?;
            }
            Op::IncomingReleased { client_id, pkid } => {
                self.incoming.remove((&**client_id, *pkid))?;
            }
            Op::Retained { message } => {
                let bytes = record::encode_retained(message);
                self.retained.insert(&*message.topic, bytes.as_slice())?;
            }
            Op::RetainedCleared { topic } => {
                self.retained.remove(&**topic)?;
            }
            Op::Will { client_id, record } => {
                let bytes = record::encode_will(record);
                self.wills.insert(&**client_id, bytes.as_slice())?;
            }
            Op::WillGone { client_id } => {
                self.wills.remove(&**client_id)?;
            }
        }
        Ok(())
    }

    /// Removes incarnation `gone` of `client_id`'s session: its record if it is still
    /// the stored one, its messages (sequence numbers from `gone` up to the next
    /// incarnation, if one is stored) and its inbound ids.
    fn session_gone(&mut self, client_id: &str, gone: u64) -> Result<(), redb::Error> {
        let stored = match self.sessions.get(client_id)? {
            Some(v) => record::decode_session(v.value())
                .ok()
                .map(|r| r.incarnation),
            None => None,
        };
        let upper = match stored {
            Some(newer) if newer > gone => newer,
            Some(older) if older < gone => u64::MAX,
            // This incarnation's record, or one that does not decode.
            _ => {
                self.sessions.remove(client_id)?;
                u64::MAX
            }
        };
        let range = (
            Bound::Included((client_id, gone)),
            Bound::Excluded((client_id, upper)),
        );
        self.queue.retain_in(range, |_, _| false)?;
        self.sent.retain_in(range, |_, _| false)?;
        let ids = (
            Bound::Included((client_id, 0u16)),
            Bound::Included((client_id, u16::MAX)),
        );
        self.incoming.retain_in(ids, |_, inc| inc > gone)?;
        Ok(())
    }
}

impl Storage for Redb {
    fn commit(&mut self, ops: &[Op], durable: bool) -> Result<(), StorageError> {
        let db = self.db()?;
        let mut tx = db.begin_write().map_err(|e| self.err(e))?;
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        tx.set_durability(durability).map_err(|e| self.err(e))?;
        {
            let mut t = Tables {
                sessions: tx.open_table(SESSIONS).map_err(|e| self.err(e))?,
                queue: tx.open_table(QUEUE).map_err(|e| self.err(e))?,
                sent: tx.open_table(SENT).map_err(|e| self.err(e))?,
                incoming: tx.open_table(INCOMING).map_err(|e| self.err(e))?,
                retained: tx.open_table(RETAINED).map_err(|e| self.err(e))?,
                wills: tx.open_table(WILLS).map_err(|e| self.err(e))?,
            };
            for op in ops {
                t.apply(op).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    fn load(&mut self) -> Result<Snapshot, StorageError> {
        let loaded = catch_unwind(AssertUnwindSafe(|| self.read_all()));
        let (mut snapshot, orphans) = loaded.unwrap_or_else(|_| {
            Err(StorageError::Corrupt {
                path: self.file.clone(),
                detail: "the engine could not read it".into(),
            })
        })?;
        if !orphans.is_empty() {
            snapshot.orphans = orphans.len() as u64;
            self.commit(&orphans, true)?;
        }
        Ok(snapshot)
    }

    fn recover(&mut self) -> Result<(), StorageError> {
        // After an I/O error redb refuses every further transaction until it is opened
        // again; opening it again also rolls back to the last durable commit.
        self.db = None;
        self.db = Some(open_file(&self.file)?);
        Ok(())
    }
}

impl Redb {
    /// Reads every table; returns the snapshot and the ops that remove orphans (records
    /// of no stored session, left by a crash between a session's end and its removal).
    fn read_all(&self) -> Result<(Snapshot, Vec<Op>), StorageError> {
        let tx = self.db()?.begin_read().map_err(|e| self.err(e))?;
        let mut next_seq = 1u64;
        let mut sessions: BTreeMap<ByteString, StoredSession> = BTreeMap::new();
        let table = tx.open_table(SESSIONS).map_err(|e| self.err(e))?;
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let client_id = ByteString::from(k.value());
            let record =
                record::decode_session(v.value()).map_err(|c| self.corrupt(c, k.value()))?;
            next_seq = next_seq.max(record.incarnation + 1);
            sessions.insert(
                client_id.clone(),
                StoredSession {
                    client_id,
                    record,
                    messages: Vec::new(),
                    incoming: Vec::new(),
                },
            );
        }
        let mut orphans = Vec::new();
        let queue = tx.open_table(QUEUE).map_err(|e| self.err(e))?;
        for entry in queue.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let (client_id, seq) = k.value();
            next_seq = next_seq.max(seq + 1);
            match sessions.get_mut(client_id) {
                Some(s) if seq >= s.record.incarnation => {
                    let delivery = record::decode_delivery(v.value())
                        .map_err(|c| self.corrupt(c, client_id))?;
                    s.messages.push(StoredMessage {
                        seq,
                        delivery,
                        sent: None,
                    });
                }
                _ => orphans.push(Op::Done {
                    client_id: client_id.into(),
                    seq,
                }),
            }
        }
        let sent = tx.open_table(SENT).map_err(|e| self.err(e))?;
        for entry in sent.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let (client_id, seq) = k.value();
            let state = record::decode_sent(v.value()).map_err(|c| self.corrupt(c, client_id))?;
            let message = sessions.get_mut(client_id).and_then(|s| {
                // Queue order is key order: found by binary search.
                let i = s.messages.binary_search_by_key(&seq, |m| m.seq).ok()?;
                s.messages.get_mut(i)
            });
            match message {
                Some(m) => m.sent = Some(state),
                None => orphans.push(Op::Done {
                    client_id: client_id.into(),
                    seq,
                }),
            }
        }
        let incoming = tx.open_table(INCOMING).map_err(|e| self.err(e))?;
        for entry in incoming.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let (client_id, pkid) = k.value();
            match sessions.get_mut(client_id) {
                Some(s) if v.value() == s.record.incarnation => s.incoming.push(pkid),
                _ => orphans.push(Op::IncomingReleased {
                    client_id: client_id.into(),
                    pkid,
                }),
            }
        }
        let table = tx.open_table(RETAINED).map_err(|e| self.err(e))?;
        let mut retained = Vec::with_capacity(table.len().unwrap_or(0) as usize);
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let message =
                record::decode_retained(v.value()).map_err(|c| self.corrupt(c, k.value()))?;
            retained.push(message);
        }
        let table = tx.open_table(WILLS).map_err(|e| self.err(e))?;
        let mut wills = Vec::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let will = record::decode_will(v.value()).map_err(|c| self.corrupt(c, k.value()))?;
            wills.push((ByteString::from(k.value()), will));
        }
        let snapshot = Snapshot {
            sessions: sessions.into_values().collect(),
            retained,
            wills,
            next_seq,
            orphans: 0,
        };
        Ok((snapshot, orphans))
    }
}
