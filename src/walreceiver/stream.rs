//! The COPY BOTH phase of physical streaming: WAL and keepalives in, standby status updates out.
//!
//! The read half belongs to the [`WalStream`]; the write half is shared with every [`StatusSender`], so a
//! task can send status updates while another waits in [`WalStream::next`]. `next` is cancel-safe (use it in
//! `select!` with a timer); a cancelled `send_status` leaves the writer poisoned, because part of a message
//! may be on the wire.
//!
//! End of stream: CopyDone from the server is `Ok(None)` (the server stopped streaming, e.g. at the end of
//! its timeline); EOF is [`ReplicationError::Closed`]; an ErrorResponse is [`ReplicationError::Server`].
//! After any of these, `next` keeps returning `Ok(None)`.

use bytes::BytesMut;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::error::ReplicationError;
use super::message::{ReplicationMessage, encode_status_update, pg_now_micros};
use super::wire::{
    BackendMessage, ConnRead, ConnWrite, MessageReader, SharedWriter, notice_text, server_error,
    unexpected,
};
use crate::pg::Lsn;

pub struct WalStream {
    reader: MessageReader<ConnRead>,
    sender: StatusSender,
    /// Where the next XLogData must start: the stream's start, then the end of the last one.
    next_lsn: Lsn,
    ended: bool,
}

/// Sends standby status updates on a streaming connection; clone it freely.
#[derive(Clone)]
pub struct StatusSender {
    writer: SharedWriter<ConnWrite>,
}

impl std::fmt::Debug for WalStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalStream")
            .field("received_lsn", &self.next_lsn)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl WalStream {
    pub(super) fn new(
        reader: MessageReader<ConnRead>,
        writer: SharedWriter<ConnWrite>,
        start: Lsn,
    ) -> WalStream {
        WalStream {
            reader,
            sender: StatusSender { writer },
            next_lsn: start,
            ended: false,
        }
    }

    /// The next WAL chunk or keepalive; `Ok(None)` once the server ended the stream. XLogData is checked to
    /// follow on from the previous one (or the start position) without a gap or overlap.
    pub async fn next(&mut self) -> Result<Option<ReplicationMessage>, ReplicationError> {
        if self.ended {
            return Ok(None);
        }
        let result = self.next_inner().await;
        if !matches!(result, Ok(Some(_))) {
            self.ended = true;
        }
        result
    }

    async fn next_inner(&mut self) -> Result<Option<ReplicationMessage>, ReplicationError> {
        loop {
            match self.reader.next().await? {
                BackendMessage::Std(Message::CopyData(body)) => {
                    let m = ReplicationMessage::parse(body.into_bytes())?;
                    return self.accept(m).map(Some);
                }
                BackendMessage::Std(Message::CopyDone) => return Ok(None),
                BackendMessage::Std(Message::ErrorResponse(body)) => {
                    return Err(server_error(&body));
                }
                BackendMessage::Std(Message::NoticeResponse(body)) => {
                    tracing::info!(notice = notice_text(&body), "server notice");
                }
                BackendMessage::Std(Message::ParameterStatus(_)) => {}
                other => return Err(unexpected(&other, "streaming")),
            }
        }
    }

    fn accept(&mut self, m: ReplicationMessage) -> Result<ReplicationMessage, ReplicationError> {
        if let ReplicationMessage::XLogData {
            wal_start, data, ..
        } = &m
        {
            if *wal_start != self.next_lsn {
                return Err(ReplicationError::protocol(format!(
                    "XLogData starts at {wal_start}, expected {}",
                    self.next_lsn
                )));
            }
            // parse() checked that this does not overflow.
            self.next_lsn = *wal_start + data.len() as u64;
        }
        Ok(m)
    }

    /// The end of the WAL received so far.
    pub fn received_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Sends a standby status update (see [`StatusSender::send_status`]).
    pub async fn send_status(
        &self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        reply_requested: bool,
    ) -> Result<(), ReplicationError> {
        self.sender
            .send_status(write, flush, apply, reply_requested)
            .await
    }

    /// A handle to send status updates from another task.
    pub fn status_sender(&self) -> StatusSender {
        self.sender.clone()
    }
}

impl StatusSender {
    /// Sends a standby status update: `write` = received, `flush` = durable here (the slot keeps the WAL
    /// after it), `apply` = applied; `reply_requested` asks the server for a keepalive back.
    pub async fn send_status(
        &self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        reply_requested: bool,
    ) -> Result<(), ReplicationError> {
        let payload = encode_status_update(write, flush, apply, pg_now_micros(), reply_requested);
        let mut buf = BytesMut::with_capacity(payload.len() + 5);
        frontend::CopyData::new(payload)?.write(&mut buf);
        self.writer.send(&buf).await
    }
}
