//! The WAL receiver of one timeline: connects to its WAL source, makes sure the slot exists, streams from the
//! timeline's last record, decodes and archives (in a task of its own, ahead of ingest by at most [`RECEIVE_QUEUE`]
//! messages) and ingests, and reports write = last_record_lsn, flush = apply =
//! disk_consistent_lsn every second (never more than is durable here, so the slot keeps everything else). When
//! it has caught up with a source that has sent no WAL for a second (idle), or that asks for a reply, and holds
//! WAL that is not durable yet, it flushes at once: an idle primary sees its last commit flushed within seconds
//! (a primary's clean shutdown, and synchronous replication, wait for their standbys' flush position).
//! Silence: the time since the last message, not counting our own work on it. After half of
//! `lagging_wal_timeout` in silence each status update asks for a reply (a healthy idle source answers with a
//! keepalive); at the timeout the source is lost (a partition without RST or FIN) and the connection is
//! dropped and retried. Errors (a source that refuses, drops the connection or goes silent, a slot another
//! client holds, WAL that does not decode or ingest) are logged, shown in its state with the time of the next attempt
//! and retried with exponential backoff (1 s doubling to 30 s, from 1 s again after a connection that
//! streamed; a full disk every second, and the timeline shows it stalled until ingest goes through again); each attempt streams from the timeline's last record, so nothing ingested is lost or applied
//! twice. After a restart it resumes from disk_consistent_lsn, which is where the timeline's last record is
//! then.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::{Instrument, info, info_span, warn};

use super::{ReplicationConnection, ReplicationError, ReplicationMessage, StatusSender};
use crate::pg::constants::DEFAULT_WAL_SEGMENT_SIZE;
use crate::pg::{DecodedRecord, Lsn, WalStreamDecoder, decode_record};
use crate::repository::timeline::{DiskFull, Timeline};
use crate::walingest::WalIngest;

/// How often the receiver reports its positions to the source (and checks for silence and idleness).
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// How long the source must have sent no WAL before the receiver, caught up, flushes what is not durable.
const IDLE_FLUSH_AFTER: Duration = Duration::from_secs(1);

/// Where a timeline's WAL comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalSource {
    pub connstr: String,
    pub slot_name: String,
}

/// What the receiver of a timeline is doing, for timeline detail.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReceiverState {
    /// "connecting", "streaming", "retrying", "stopped".
    pub status: String,
    pub last_received_msg_lsn: Option<Lsn>,
    /// Microseconds since the Unix epoch.
    pub last_received_msg_ts: Option<u64>,
    pub last_error: Option<String>,
    pub connect_attempts: u64,
    /// While retrying: when the next attempt starts, microseconds since the Unix epoch.
    pub next_attempt_ts: Option<u64>,
}

pub type SharedState = Arc<Mutex<ReceiverState>>;

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn set(state: &SharedState, f: impl FnOnce(&mut ReceiverState)) {
    f(&mut state.lock().unwrap_or_else(|p| p.into_inner()));
}

/// Runs until `cancel` (a child of the timeline's token) fires.
pub async fn run(
    tl: Arc<Timeline>,
    source: WalSource,
    state: SharedState,
    cancel: tokio_util::sync::CancellationToken,
) {
    let span = info_span!("walreceiver", tenant_id = %tl.tenant_id, timeline_id = %tl.timeline_id);
    async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            set(&state, |s| {
                s.status = "connecting".into();
                s.connect_attempts += 1;
                s.next_attempt_ts = None;
            });
            let result = tokio::select! {
                r = stream_once(&tl, &source, &state) => r,
                _ = cancel.cancelled() => break,
            };
            match result {
                Ok(()) => {
                    info!("WAL source ended the stream; reconnecting");
                    backoff = Duration::from_secs(1);
                }
                Err(e) => {
                    // A connection that streamed starts the backoff over: the source was healthy until now.
                    // A full disk is retried every second, so that ingest resumes as soon as space returns.
                    let streamed =
                        state.lock().unwrap_or_else(|p| p.into_inner()).status == "streaming";
                    let disk_full = tl.disk_full.check(DiskFull::INGEST, &e);
                    if streamed || disk_full {
                        backoff = Duration::from_secs(1);
                    }
                    warn!(error = %e, retry_in = ?backoff, "WAL receiver failed");
                    set(&state, |s| {
                        s.status = "retrying".into();
                        s.last_error = Some(e);
                        s.next_attempt_ts = Some(now_micros() + backoff.as_micros() as u64);
                    });
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = cancel.cancelled() => break,
            }
            if tl.disk_full.state().is_none() {
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
        set(&state, |s| s.status = "stopped".into());
    }
    .instrument(span)
    .await
}

/// One connection: stream until the source ends it or an error.
async fn stream_once(
    tl: &Arc<Timeline>,
    source: &WalSource,
    state: &SharedState,
) -> Result<(), String> {
    let conf = tl.conf();
    let mut conn = ReplicationConnection::connect(
        &source.connstr,
        "pageserver",
        conf.walreceiver_connect_timeout.get(),
    )
    .await
    .map_err(|e| format!("connect: {e}"))?;
    let system = conn
        .identify_system()
        .await
        .map_err(|e| format!("IDENTIFY_SYSTEM: {e}"))?;
    check_source_version(conn.parameter("server_version"), tl.pg_version)?;
    match conn.create_physical_slot(&source.slot_name, true).await {
        Ok(_) => info!(slot = %source.slot_name, "created replication slot"),
        Err(ReplicationError::SlotExists { .. }) => {}
        Err(e) => return Err(format!("create slot {}: {e}", source.slot_name)),
    }
    let last = tl.last_record_lsn();
    // The archive may end below the last record (its tail was not durable yet when this process or its
    // workdir was lost): stream from there, archive everything, and decode only from the last record.
    let archive_end = match &tl.wal_archive {
        Some(archive) => {
            let system_id: u64 = system
                .systemid
                .parse()
                .map_err(|_| format!("IDENTIFY_SYSTEM: bad system id {:?}", system.systemid))?;
            archive
                .begin(system_id, system.timeline)
                .await
                .map_err(|e| e.to_string())?
        }
        None => None,
    };
    let start = match archive_end {
        Some(end) if end < last => end,
        _ => last,
    };
    let mut stream = conn
        .start_replication(Some(&source.slot_name), start, system.timeline)
        .await
        .map_err(|e| format!("START_REPLICATION at {start}: {e}"))?;
    info!(%start, "streaming WAL");
    set(state, |s| {
        s.status = "streaming".into();
        s.last_error = None;
    });
    let mut decoder = WalStreamDecoder::new(last, DEFAULT_WAL_SEGMENT_SIZE, tl.pg_version)
        .map_err(|e| e.to_string())?;
    if let Some(prev) = tl.prev_record_lsn() {
        decoder.set_prev_record(prev);
    }
    let status = stream.status_sender();
    // Receiving, decoding and archiving run in their own task, ahead of ingest by at most RECEIVE_QUEUE
    // messages.
    let (tx, mut rx) = tokio::sync::mpsc::channel(RECEIVE_QUEUE);
    let archive = tl.wal_archive.clone();
    let _receiver = AbortOnDrop(tokio::spawn(
        async move {
            loop {
                // The archive takes the raw WAL before it is decoded: WAL this version fails to decode is
                // still archived, for a recovery by a later one.
                let item = match stream.next().await {
                    Ok(Some(msg)) => match archive_message(archive.as_deref(), &msg).await {
                        Ok(()) => receive(msg, last, &mut decoder).map(Some),
                        Err(e) => Err(e),
                    },
                    Ok(None) => Ok(None),
                    Err(e) => Err(format!("stream: {e}")),
                };
                let end = !matches!(item, Ok(Some(_)));
                if tx.send(item).await.is_err() || end {
                    break;
                }
            }
        }
        .in_current_span(),
    ));
    let mut ingest = WalIngest::new(tl.clone());
    let mut status_tick = tokio::time::interval(STATUS_INTERVAL);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let silence_limit = conf.lagging_wal_timeout.get();
    // When the source was last heard from (or, after our own long work, when we were ready to hear again),
    // and when it last sent WAL.
    let mut heard = Instant::now();
    let mut last_wal = Instant::now();
    let mut source_end = start;
    loop {
        let msg = tokio::select! {
            biased;
            m = rx.recv() => m.unwrap_or(Ok(None))?,
            _ = status_tick.tick() => {
                let silent = heard.elapsed();
                if silent >= silence_limit {
                    return Err(format!(
                        "WAL source lost: no message for {silent:?} (lagging_wal_timeout {silence_limit:?})"
                    ));
                }
                // An idle source: flush what is not durable now rather than at checkpoint_distance or
                // checkpoint_timeout, so that the source sees it confirmed. The flush is not silence.
                if last_wal.elapsed() >= IDLE_FLUSH_AFTER {
                    let started = Instant::now();
                    flush_if_caught_up(tl, source_end).await?;
                    heard += started.elapsed();
                }
                // Ask for a reply once half the timeout has passed in silence: a healthy idle source answers
                // with a keepalive, a partitioned one does not.
                send_status(tl, &status, silent >= silence_limit / 2).await?;
                continue;
            }
        };
        let Some(msg) = msg else { return Ok(()) };
        match msg {
            Received::Wal {
                wal_end,
                carried_wal,
                records,
            } => {
                if carried_wal {
                    last_wal = Instant::now();
                }
                source_end = source_end.max(wal_end);
                if !records.is_empty() {
                    ingest
                        .ingest_batch(&records)
                        .await
                        .map_err(|e| format!("ingest: {e}"))?;
                    tl.disk_full.clear(DiskFull::INGEST);
                }
                set(state, |s| {
                    s.last_received_msg_lsn = Some(wal_end);
                    s.last_received_msg_ts = Some(now_micros());
                });
            }
            Received::Keepalive {
                wal_end,
                reply_requested,
            } => {
                source_end = source_end.max(wal_end);
                set(state, |s| {
                    s.last_received_msg_lsn =
                        Some(s.last_received_msg_lsn.map_or(wal_end, |l| l.max(wal_end)));
                    s.last_received_msg_ts = Some(now_micros());
                });
                // A keepalive that asks for a reply comes from an idle or stopping source (a primary's clean
                // shutdown waits for its standbys' flush position): flush first if caught up.
                if reply_requested {
                    flush_if_caught_up(tl, source_end).await?;
                    send_status(tl, &status, false).await?;
                }
            }
        }
        // Measured from when we are ready for the next message: our own work (a long ingest) is not silence.
        heard = Instant::now();
    }
}

/// Refuses a WAL source whose major version is not the timeline's (a reconnect that reached a primary
/// upgraded or replaced since the timeline was made): its WAL would only fail to decode, with an error about
/// page headers. A source that reports no `server_version` (or one that does not parse) is not refused here;
/// the decoder's own checks of the WAL page magic still apply.
fn check_source_version(
    reported: Option<&str>,
    timeline: crate::pg::PgVersion,
) -> Result<(), String> {
    let Some(major) = reported.and_then(super::follow::server_major_version) else {
        return Ok(());
    };
    if major != timeline.major() {
        return Err(format!(
            "the WAL source runs PostgreSQL {major} (server_version {:?}), this timeline is PostgreSQL {timeline}: \
             its WAL cannot be ingested here",
            reported.unwrap_or_default()
        ));
    }
    Ok(())
}

/// Messages the receiving task has read (and decoded) but ingest has not taken yet.
const RECEIVE_QUEUE: usize = 64;

/// A message of the stream, its WAL decoded.
enum Received {
    Wal {
        wal_end: Lsn,
        /// The message carried WAL (it was archived by the receiving task).
        carried_wal: bool,
        /// The records that end in it (those below `last`, the timeline's last record, are not decoded).
        records: Vec<DecodedRecord>,
    },
    Keepalive {
        wal_end: Lsn,
        reply_requested: bool,
    },
}

/// Decodes what `msg` carries above `last` (the stream may start lower, at the archive's end).
fn receive(
    msg: ReplicationMessage,
    last: Lsn,
    decoder: &mut WalStreamDecoder,
) -> Result<Received, String> {
    Ok(match msg {
        ReplicationMessage::XLogData {
            wal_start,
            wal_end,
            data,
            ..
        } => {
            // Below the last record: archived only (the stream started at the archive's end).
            let skip = last.checked_sub(wal_start).unwrap_or(0);
            if skip < data.len() as u64 {
                decoder.feed(data.slice(skip as usize..));
            }
            // Sized for records of about 128 bytes (pgbench's average is about 150), so that the vector
            // rarely grows: its reallocations, copies of every record so far, were 1.5% of ingest's CPU.
            let mut records = Vec::with_capacity(data.len() / 128);
            loop {
                match decoder.poll_decode() {
                    Ok(Some(raw)) => records.push(decode_record(&raw).map_err(|e| e.to_string())?),
                    Ok(None) => break,
                    Err(e) => return Err(format!("decoding WAL: {e}")),
                }
            }
            Received::Wal {
                wal_end,
                carried_wal: !data.is_empty(),
                records,
            }
        }
        ReplicationMessage::Keepalive {
            wal_end,
            reply_requested,
            ..
        } => Received::Keepalive {
            wal_end,
            reply_requested,
        },
    })
}

/// Appends the WAL of a message to the timeline's archive, if it has one.
async fn archive_message(
    archive: Option<&crate::wal_archive::WalArchive>,
    msg: &ReplicationMessage,
) -> Result<(), String> {
    if let (
        Some(archive),
        ReplicationMessage::XLogData {
            wal_start, data, ..
        },
    ) = (archive, msg)
    {
        archive
            .append(*wal_start, data)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Aborts a task when its owner is dropped (a cancelled or failed connection stops its receiving task).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Flushes the timeline if it holds WAL that is not durable and has everything the source has sent.
/// Everything sent is ingested when the last record reaches the source's end: the decoder then holds nothing.
async fn flush_if_caught_up(tl: &Arc<Timeline>, source_end: Lsn) -> Result<(), String> {
    let last = tl.last_record_lsn();
    if source_end <= last.align() {
        if tl.disk_consistent_lsn() < last {
            tl.checkpoint().await.map_err(|e| format!("flush: {e}"))?;
        }
        if let Some(archive) = &tl.wal_archive {
            archive.request_partial();
        }
    }
    Ok(())
}

async fn send_status(tl: &Timeline, stream: &StatusSender, reply: bool) -> Result<(), String> {
    if let Some(archive) = &tl.wal_archive {
        archive.sync().await.map_err(|e| e.to_string())?;
    }
    let durable = tl.feedback_flush_lsn();
    stream
        .send_status(tl.last_record_lsn(), durable, durable, reply)
        .await
        .map_err(|e| format!("status update: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::PgVersion;

    #[test]
    fn a_source_of_another_major_version_is_refused_naming_both() {
        let err = check_source_version(Some("18.6 (Debian 18.6-3)"), PgVersion::V15).unwrap_err();
        assert!(err.contains("PostgreSQL 18"), "{err}");
        assert!(err.contains("this timeline is PostgreSQL 15"), "{err}");
        let err = check_source_version(Some("15.18"), PgVersion::V18).unwrap_err();
        assert!(
            err.contains("PostgreSQL 15") && err.contains("PostgreSQL 18"),
            "{err}"
        );
        check_source_version(Some("15.18 (Debian 15.18-0+deb12u1)"), PgVersion::V15).unwrap();
        check_source_version(Some("18.6"), PgVersion::V18).unwrap();
        // Nothing reported, or nothing that parses: left to the decoder's checks.
        check_source_version(None, PgVersion::V15).unwrap();
        check_source_version(Some("devel"), PgVersion::V15).unwrap();
    }
}
