//! `BASE_BACKUP` as PostgreSQL 15 sends it (src/backend/backup/basebackup_copy.c):
//!
//! 1. a result set `(recptr text, tli int8)`: the start LSN and timeline;
//! 2. a result set `(spcoid, spclocation, size)`, one row per tablespace, the data directory last with
//!    NULL oid and location;
//! 3. CopyOutResponse, then CopyData messages whose first byte says what follows: `n` a new archive
//!    (name and location, NUL-terminated), `d` archive (or manifest) data, `p` progress (int8 bytes
//!    done), `m` the manifest begins; then CopyDone;
//! 4. a result set `(recptr, tli)` with the end LSN, CommandComplete and ReadyForQuery.
//!
//! Only the data directory's archive (`base.tar`) is handled: a cluster with other tablespaces is refused
//! after step 2, which leaves the connection broken (the server is already sending).

use bytes::Buf;
use postgres_protocol::message::backend::Message;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::client::{ReplicationConnection, ResultSet, parse_col};
use super::error::ReplicationError;
use super::wire::{BackendMessage, column_names, data_row, notice_text, server_error, unexpected};
use crate::pg::Lsn;

/// What a finished base backup reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseBackup {
    /// Where replay must start (the backup's checkpoint redo point, as in `backup_label`).
    pub start_lsn: Lsn,
    /// Where the data directory becomes consistent.
    pub end_lsn: Lsn,
    pub timeline: u32,
    /// Bytes of `base.tar` written.
    pub tar_bytes: u64,
}

/// What the CopyData messages of the archive phase are currently carrying.
#[derive(PartialEq, Eq)]
enum CopyState {
    BeforeArchive,
    Archive,
    Manifest,
}

impl ReplicationConnection {
    /// Takes a base backup with a fast checkpoint, without WAL or manifest, and writes the data directory's
    /// tar archive to `out` (flushed at the end). `label` shows in `backup_label`.
    pub async fn base_backup<W: AsyncWrite + Unpin>(
        &mut self,
        label: &str,
        out: &mut W,
    ) -> Result<BaseBackup, ReplicationError> {
        let sql = format!(
            "BASE_BACKUP ( LABEL '{}', CHECKPOINT 'fast', WAL false, MANIFEST 'no', WAIT true )",
            label.replace('\'', "''")
        );
        self.send_query(&sql).await?;
        let (start_lsn, timeline) = position(&self.read_result_set("BASE_BACKUP start").await?)?;
        let tablespaces = self.read_result_set("BASE_BACKUP tablespaces").await?;
        if tablespaces.rows.len() != 1 || tablespaces.rows[0].first().is_some_and(Option::is_some) {
            return Err(ReplicationError::Unsupported(format!(
                "base backup of a cluster with tablespaces other than pg_default and pg_global ({} archives)",
                tablespaces.rows.len()
            )));
        }
        match self.next_message().await? {
            BackendMessage::Std(Message::CopyOutResponse(_)) => {}
            m => return Err(unexpected(&m, "BASE_BACKUP")),
        }
        let tar_bytes = self.copy_archive(out).await?;
        out.flush().await?;
        let (end_lsn, _) = position(&self.read_result_set("BASE_BACKUP end").await?)?;
        self.finish_command("BASE_BACKUP").await?;
        if end_lsn < start_lsn {
            return Err(ReplicationError::protocol(format!(
                "base backup ends at {end_lsn}, before its start {start_lsn}"
            )));
        }
        Ok(BaseBackup {
            start_lsn,
            end_lsn,
            timeline,
            tar_bytes,
        })
    }

    /// The CopyData messages of the archive phase, up to CopyDone; returns the archive's size.
    async fn copy_archive<W: AsyncWrite + Unpin>(
        &mut self,
        out: &mut W,
    ) -> Result<u64, ReplicationError> {
        let mut state = CopyState::BeforeArchive;
        let mut bytes = 0u64;
        loop {
            let body = match self.next_message().await? {
                BackendMessage::Std(Message::CopyData(body)) => body.into_bytes(),
                BackendMessage::Std(Message::CopyDone) => break,
                m => return Err(unexpected(&m, "BASE_BACKUP archive")),
            };
            let mut payload = body.clone();
            let kind = if payload.is_empty() {
                0
            } else {
                payload.get_u8()
            };
            match kind {
                b'n' if state == CopyState::BeforeArchive => {
                    let name = payload.split(|b| *b == 0).next().unwrap_or_default();
                    if name != b"base.tar" {
                        return Err(ReplicationError::Unsupported(format!(
                            "base backup archive {:?} (only an uncompressed base.tar)",
                            String::from_utf8_lossy(name)
                        )));
                    }
                    state = CopyState::Archive;
                }
                b'd' if state == CopyState::Archive => {
                    out.write_all(&payload).await?;
                    bytes += payload.len() as u64;
                }
                b'd' if state == CopyState::Manifest => {}
                b'p' if payload.len() == 8 => {}
                b'm' if state != CopyState::Manifest => state = CopyState::Manifest,
                _ => {
                    return Err(ReplicationError::protocol(format!(
                        "unexpected BASE_BACKUP CopyData of type {:?} and {} bytes",
                        kind as char,
                        body.len()
                    )));
                }
            }
        }
        if state == CopyState::BeforeArchive {
            return Err(ReplicationError::protocol("BASE_BACKUP sent no archive"));
        }
        Ok(bytes)
    }

    /// The next message, skipping notices; an ErrorResponse is read through ReadyForQuery and returned
    /// as the server's error, so the connection stays usable.
    async fn next_message(&mut self) -> Result<BackendMessage, ReplicationError> {
        loop {
            match self.reader.next().await? {
                BackendMessage::Std(Message::NoticeResponse(body)) => {
                    tracing::info!(notice = notice_text(&body), "server notice");
                }
                BackendMessage::Std(Message::ParameterStatus(_)) => {}
                BackendMessage::Std(Message::ErrorResponse(body)) => {
                    let error = server_error(&body);
                    self.finish_command("an error").await?;
                    return Err(error);
                }
                m => return Ok(m),
            }
        }
    }

    /// RowDescription, DataRows, CommandComplete.
    async fn read_result_set(&mut self, what: &str) -> Result<ResultSet, ReplicationError> {
        let mut set = match self.next_message().await? {
            BackendMessage::Std(Message::RowDescription(body)) => ResultSet {
                columns: column_names(&body)?,
                rows: Vec::new(),
            },
            m => return Err(unexpected(&m, what)),
        };
        loop {
            match self.next_message().await? {
                BackendMessage::Std(Message::DataRow(body)) => set.rows.push(data_row(&body)?),
                BackendMessage::Std(Message::CommandComplete(_)) => return Ok(set),
                m => return Err(unexpected(&m, what)),
            }
        }
    }

    /// Reads to ReadyForQuery, accepting only CommandComplete and notices on the way.
    async fn finish_command(&mut self, what: &str) -> Result<(), ReplicationError> {
        loop {
            match self.reader.next().await? {
                BackendMessage::Std(Message::ReadyForQuery(_)) => {
                    self.idle = true;
                    return Ok(());
                }
                BackendMessage::Std(
                    Message::CommandComplete(_)
                    | Message::NoticeResponse(_)
                    | Message::ParameterStatus(_),
                ) => {}
                m => return Err(unexpected(&m, what)),
            }
        }
    }
}

/// `(recptr, tli)` of a start or end result set.
fn position(set: &ResultSet) -> Result<(Lsn, u32), ReplicationError> {
    let row = super::client::single_row(std::slice::from_ref(set), "BASE_BACKUP position", 2)?;
    Ok((
        parse_col(&row[0], "BASE_BACKUP recptr")?,
        parse_col(&row[1], "BASE_BACKUP tli")?,
    ))
}
