//! The payloads carried in CopyData during physical streaming (all integers big-endian):
//!
//! - server → client `w` XLogData: `wal_start` u64, `wal_end` u64, `send_time` i64, then WAL bytes;
//! - server → client `k` keepalive: `wal_end` u64, `send_time` i64, `reply_requested` u8;
//! - client → server `r` standby status update: write, flush, apply LSNs (u64), client time i64, reply u8.
//!
//! Times are microseconds since 2000-01-01 00:00 UTC, PostgreSQL's epoch.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

use super::error::ReplicationError;
use crate::pg::Lsn;

const XLOG_DATA_HEADER: usize = 1 + 8 + 8 + 8;
const KEEPALIVE_LEN: usize = 1 + 8 + 8 + 1;
/// Length of a standby status update payload.
pub const STATUS_UPDATE_LEN: usize = 1 + 8 + 8 + 8 + 8 + 1;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800 * 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// WAL bytes `data` at `[wal_start, wal_start + data.len())`; `wal_end` is the server's flush position.
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        send_time: i64,
        data: Bytes,
    },
    /// The server is alive; answer with a status update at once when `reply_requested`.
    Keepalive {
        wal_end: Lsn,
        send_time: i64,
        reply_requested: bool,
    },
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

impl ReplicationMessage {
    /// Decodes a CopyData payload of the streaming protocol.
    pub fn parse(payload: Bytes) -> Result<ReplicationMessage, ReplicationError> {
        let short = |what: &str, need: usize| {
            ReplicationError::protocol(format!(
                "{what} message of {} bytes, expected {need}",
                payload.len()
            ))
        };
        match payload.first() {
            Some(b'w') => {
                if payload.len() < XLOG_DATA_HEADER {
                    return Err(short("XLogData", XLOG_DATA_HEADER));
                }
                let wal_start = Lsn(be_u64(&payload, 1));
                let data = payload.slice(XLOG_DATA_HEADER..);
                if wal_start.checked_add(data.len() as u64).is_none() {
                    return Err(ReplicationError::protocol(format!(
                        "XLogData at {wal_start} of {} bytes runs past the end of the WAL",
                        data.len()
                    )));
                }
                Ok(ReplicationMessage::XLogData {
                    wal_start,
                    wal_end: Lsn(be_u64(&payload, 9)),
                    send_time: be_u64(&payload, 17) as i64,
                    data,
                })
            }
            Some(b'k') => {
                if payload.len() != KEEPALIVE_LEN {
                    return Err(short("keepalive", KEEPALIVE_LEN));
                }
                Ok(ReplicationMessage::Keepalive {
                    wal_end: Lsn(be_u64(&payload, 1)),
                    send_time: be_u64(&payload, 9) as i64,
                    reply_requested: payload[17] != 0,
                })
            }
            Some(t) => Err(ReplicationError::protocol(format!(
                "unknown streaming message type {:?}",
                *t as char
            ))),
            None => Err(ReplicationError::protocol("empty CopyData message")),
        }
    }
}

/// The payload of a standby status update.
pub fn encode_status_update(
    write: Lsn,
    flush: Lsn,
    apply: Lsn,
    client_time: i64,
    reply_requested: bool,
) -> Bytes {
    let mut b = BytesMut::with_capacity(STATUS_UPDATE_LEN);
    b.put_u8(b'r');
    b.put_u64(write.0);
    b.put_u64(flush.0);
    b.put_u64(apply.0);
    b.put_i64(client_time);
    b.put_u8(reply_requested as u8);
    b.freeze()
}

/// Now, in microseconds since 2000-01-01 (a clock before 1970 counts as the Unix epoch).
pub fn pg_now_micros() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    unix - PG_EPOCH_OFFSET_MICROS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xlog_data() {
        let mut b = BytesMut::new();
        b.put_u8(b'w');
        b.put_u64(0x1_0000_0028);
        b.put_u64(0x1_0000_2000);
        b.put_i64(-5);
        b.put_slice(b"wal!");
        let m = ReplicationMessage::parse(b.freeze()).unwrap();
        assert_eq!(
            m,
            ReplicationMessage::XLogData {
                wal_start: Lsn(0x1_0000_0028),
                wal_end: Lsn(0x1_0000_2000),
                send_time: -5,
                data: Bytes::from_static(b"wal!"),
            }
        );
    }

    #[test]
    fn keepalive() {
        let mut b = BytesMut::new();
        b.put_u8(b'k');
        b.put_u64(42);
        b.put_i64(7);
        b.put_u8(1);
        assert_eq!(
            ReplicationMessage::parse(b.freeze()).unwrap(),
            ReplicationMessage::Keepalive {
                wal_end: Lsn(42),
                send_time: 7,
                reply_requested: true
            }
        );
    }

    #[test]
    fn malformed_payloads_are_protocol_errors() {
        let mut past_end = BytesMut::new();
        past_end.put_u8(b'w');
        past_end.put_u64(u64::MAX - 1);
        past_end.put_u64(0);
        past_end.put_i64(0);
        past_end.put_slice(b"abc");
        for payload in [
            Bytes::new(),
            Bytes::from_static(b"w"),
            Bytes::from_static(b"w\0\0\0\0\0\0\0\x01\0\0"),
            Bytes::from_static(b"k\0\0\0\0\0\0\0\x01"),
            Bytes::from_static(&[b'k'; 19]),
            Bytes::from_static(b"q123"),
            past_end.freeze(),
        ] {
            let e = ReplicationMessage::parse(payload.clone()).unwrap_err();
            assert!(
                matches!(e, ReplicationError::Protocol(_)),
                "{payload:?}: {e}"
            );
        }
    }

    #[test]
    fn status_update_layout() {
        let b = encode_status_update(Lsn(1), Lsn(2), Lsn(3), 4, true);
        assert_eq!(b.len(), STATUS_UPDATE_LEN);
        assert_eq!(b[0], b'r');
        assert_eq!(be_u64(&b, 1), 1);
        assert_eq!(be_u64(&b, 9), 2);
        assert_eq!(be_u64(&b, 17), 3);
        assert_eq!(be_u64(&b, 25), 4);
        assert_eq!(b[33], 1);
        assert!(pg_now_micros() > 700_000_000 * 1_000_000);
    }
}
