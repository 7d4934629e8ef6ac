//! Streaming WAL decoder: bytes in, whole records out.
//!
//! Feed it the WAL from any LSN at a page boundary (the first page may begin with the tail of an earlier
//! record, which is skipped) or from a record start inside a page, as a replication stream starts. It strips
//! page headers, reassembles records that span pages and segments, checks each page header (magic, address,
//! flags, segment and page size) and each record (length, resource manager, CRC32C, prev link), skips the rest
//! of a segment after `XLOG_SWITCH`, and follows `XLP_FIRST_IS_OVERWRITE_CONTRECORD`: a record cut short by a
//! crash is dropped and decoding resumes at the `XLOG_OVERWRITE_CONTRECORD` record that replaced it.
//!
//! State machine, driven by [`WalStreamDecoder::poll_decode`]:
//! - at a page boundary, a page header must be read first (long at a segment start, short elsewhere);
//! - `Waiting`: at a record boundary; reads `xl_tot_len` (zero = end of WAL) and starts reassembly;
//! - `Reassembling`: collects `total` bytes of one record, page by page;
//! - `SkippingTail`: at stream start, drops the continuation of a record begun before the stream;
//! - `SkippingTo`: after `XLOG_SWITCH`, drops bytes up to the next segment.
//!
//! Invariant: `lsn` is the WAL position of `input[0]`.

use bytes::{Buf, Bytes, BytesMut};

use super::constants::*;
use super::lsn::Lsn;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalDecodeError {
    /// Zeros where a record should start: the end of the WAL that was written.
    #[error("end of WAL at {lsn}")]
    EndOfWal { lsn: Lsn },
    #[error("invalid WAL page magic {got:#06X} at {lsn}, expected {expected:#06X}")]
    BadPageMagic { lsn: Lsn, got: u16, expected: u16 },
    #[error("WAL page at {lsn} says it is at {got}")]
    BadPageAddress { lsn: Lsn, got: Lsn },
    #[error("invalid WAL page header flags {info:#06X} at {lsn}")]
    BadPageFlags { lsn: Lsn, info: u16 },
    #[error("WAL segment header at {lsn}: {what} is {got}, expected {expected}")]
    BadSegmentHeader {
        lsn: Lsn,
        what: &'static str,
        got: u64,
        expected: u64,
    },
    #[error("no contrecord flag on WAL page {lsn}, inside the record that starts at {record}")]
    MissingContrecord { lsn: Lsn, record: Lsn },
    #[error("WAL page {lsn} continues {got} bytes of a record, expected {expected}")]
    BadContrecordLength { lsn: Lsn, got: u32, expected: u32 },
    #[error("WAL page {lsn} starts with a continuation, but no record is in progress")]
    UnexpectedContrecord { lsn: Lsn },
    #[error("torn WAL record at {record}: {have} of {total} bytes before the WAL ends at {lsn}")]
    TornRecord {
        record: Lsn,
        lsn: Lsn,
        have: u32,
        total: u32,
    },
    #[error("invalid WAL record length {len} at {lsn}")]
    BadRecordLength { lsn: Lsn, len: u32 },
    #[error("WAL record CRC mismatch at {lsn}: expected {expected:08X}, got {got:08X}")]
    BadCrc { lsn: Lsn, expected: u32, got: u32 },
    #[error("invalid resource manager id {rmid} in WAL record at {lsn}")]
    BadRmid { lsn: Lsn, rmid: u8 },
    #[error("WAL record at {lsn} links back to {got}, expected {expected}")]
    BadPrevLink { lsn: Lsn, got: Lsn, expected: Lsn },
    #[error("WAL segment size {0} is not a power of two from 1 MiB to 1 GiB")]
    BadSegmentSize(u32),
}

impl WalDecodeError {
    /// True for the clean end of written WAL (zeros), as opposed to corruption.
    pub fn is_end_of_wal(&self) -> bool {
        matches!(self, WalDecodeError::EndOfWal { .. })
    }
}

/// One whole record as it stands in the WAL, page headers removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// Where the record starts.
    pub lsn: Lsn,
    /// Where the next record starts (8-aligned; the next segment after `XLOG_SWITCH`), as PostgreSQL's
    /// `EndRecPtr`. Pages changed by the record carry this LSN.
    pub end_lsn: Lsn,
    /// The record: 24-byte `XLogRecord` header, then block headers and data.
    pub bytes: Bytes,
}

#[derive(Debug)]
enum State {
    Waiting,
    Reassembling {
        start: Lsn,
        total: u32,
        buf: BytesMut,
    },
    SkippingTail {
        remaining: u32,
    },
    SkippingTo {
        target: Lsn,
    },
    Failed(WalDecodeError),
}

#[derive(Debug)]
pub struct WalStreamDecoder {
    lsn: Lsn,
    seg_size: u32,
    input: BytesMut,
    state: State,
    /// Start of the previous record, to check prev links; unknown at stream start.
    prev_record: Option<Lsn>,
    /// True until the first page header was read: only that one may begin with the tail of an unseen record.
    at_stream_start: bool,
    /// The system identifier seen in the first long page header; later ones must match.
    system_id: Option<u64>,
    /// The page magic of the WAL's PostgreSQL version.
    magic: u16,
}

impl WalStreamDecoder {
    /// A decoder of `version`'s WAL from `start` in segments of `seg_size` bytes.
    pub fn new(
        start: Lsn,
        seg_size: u32,
        version: super::PgVersion,
    ) -> Result<WalStreamDecoder, WalDecodeError> {
        if !super::lsn::is_valid_segment_size(seg_size) {
            return Err(WalDecodeError::BadSegmentSize(seg_size));
        }
        Ok(WalStreamDecoder {
            lsn: start,
            seg_size,
            input: BytesMut::new(),
            state: State::Waiting,
            prev_record: None,
            at_stream_start: true,
            system_id: None,
            magic: version.xlog_page_magic(),
        })
    }

    /// Sets the start of the record before the stream's first, so its prev link is checked too.
    pub fn set_prev_record(&mut self, prev: Lsn) {
        self.prev_record = Some(prev);
    }

    pub fn feed_bytes(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// Like [`feed_bytes`](Self::feed_bytes), without a copy when nothing is buffered and `bytes` is not
    /// shared (a whole segment read from a file, a replication message).
    pub fn feed(&mut self, bytes: Bytes) {
        if self.input.is_empty() {
            match bytes.try_into_mut() {
                Ok(owned) => self.input = owned,
                Err(shared) => self.input.extend_from_slice(&shared),
            }
        } else {
            self.input.extend_from_slice(&bytes);
        }
    }

    /// WAL position up to which input has been consumed.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// Bytes fed but not consumed yet.
    pub fn buffered(&self) -> usize {
        self.input.len()
    }

    /// The next whole record, `Ok(None)` if more input is needed. After an error the decoder keeps
    /// returning that error.
    pub fn poll_decode(&mut self) -> Result<Option<RawRecord>, WalDecodeError> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        let result = self.decode_step();
        if let Err(e) = &result {
            self.state = State::Failed(e.clone());
        }
        result
    }

    /// What to say when the input has ended for good (a WAL file was read to its end): an error if a
    /// record was cut off, `Ok` otherwise.
    pub fn finish(&self) -> Result<(), WalDecodeError> {
        match &self.state {
            State::Reassembling { start, total, buf } => Err(WalDecodeError::TornRecord {
                record: *start,
                lsn: self.lsn,
                have: buf.len() as u32,
                total: *total,
            }),
            State::Failed(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    fn decode_step(&mut self) -> Result<Option<RawRecord>, WalDecodeError> {
        loop {
            if self.lsn.block_offset() == 0 && !matches!(self.state, State::SkippingTo { .. }) {
                if !self.read_page_header()? {
                    return Ok(None);
                }
                continue;
            }
            match &mut self.state {
                State::Waiting => {
                    if !self.lsn.is_aligned() {
                        let pad = (self.lsn.align().0 - self.lsn.0) as usize;
                        if self.input.len() < pad {
                            return Ok(None);
                        }
                        self.consume(pad);
                        continue;
                    }
                    if self.input.len() < 4 {
                        return Ok(None);
                    }
                    let total = u32::from_le_bytes([
                        self.input[0],
                        self.input[1],
                        self.input[2],
                        self.input[3],
                    ]);
                    if total == 0 {
                        return Err(WalDecodeError::EndOfWal { lsn: self.lsn });
                    }
                    if total < SIZE_OF_XLOG_RECORD as u32 || total > XLOG_RECORD_MAX_SIZE {
                        return Err(WalDecodeError::BadRecordLength {
                            lsn: self.lsn,
                            len: total,
                        });
                    }
                    self.state = State::Reassembling {
                        start: self.lsn,
                        total,
                        buf: BytesMut::new(),
                    };
                }
                State::Reassembling { start, total, buf } => {
                    let on_page = XLOG_BLCKSZ - self.lsn.block_offset() as usize;
                    let need = *total as usize - buf.len();
                    let n = need.min(on_page).min(self.input.len());
                    if n == 0 {
                        return Ok(None);
                    }
                    if buf.is_empty() && n == need {
                        // The whole record is on this page: take it without copying.
                        *buf = self.input.split_to(n);
                    } else {
                        buf.extend_from_slice(&self.input[..n]);
                        self.input.advance(n);
                    }
                    self.lsn = self.lsn + n as u64;
                    if buf.len() == *total as usize {
                        let start = *start;
                        let bytes = std::mem::take(buf).freeze();
                        return self.finish_record(start, bytes).map(Some);
                    }
                }
                State::SkippingTail { remaining } => {
                    let on_page = XLOG_BLCKSZ - self.lsn.block_offset() as usize;
                    let n = (*remaining as usize).min(on_page).min(self.input.len());
                    if n == 0 && *remaining > 0 {
                        return Ok(None);
                    }
                    *remaining -= n as u32;
                    let done = *remaining == 0;
                    self.consume(n);
                    if done {
                        self.state = State::Waiting;
                    }
                }
                State::SkippingTo { target } => {
                    let target = *target;
                    let n = ((target.0 - self.lsn.0) as usize).min(self.input.len());
                    self.consume(n);
                    if self.lsn < target {
                        return Ok(None);
                    }
                    self.state = State::Waiting;
                }
                State::Failed(e) => return Err(e.clone()),
            }
        }
    }

    fn consume(&mut self, n: usize) {
        self.input.advance(n);
        self.lsn = self.lsn + n as u64;
    }

    /// Reads and checks the page header at `self.lsn`; false if more input is needed.
    fn read_page_header(&mut self) -> Result<bool, WalDecodeError> {
        let lsn = self.lsn;
        let at_segment_start = lsn.segment_offset(self.seg_size) == 0;
        let size = if at_segment_start {
            SIZE_OF_XLOG_LONG_PHD
        } else {
            SIZE_OF_XLOG_SHORT_PHD
        };
        if self.input.len() < size {
            return Ok(false);
        }
        let mut header = [0u8; SIZE_OF_XLOG_LONG_PHD];
        header[..size].copy_from_slice(&self.input[..size]);
        let h = &header[..size];
        let magic = u16::from_le_bytes([h[0], h[1]]);
        let info = u16::from_le_bytes([h[2], h[3]]);
        let pageaddr = Lsn(u64::from_le_bytes(h[8..16].try_into().unwrap_or_default()));
        let rem_len = u32::from_le_bytes(h[16..20].try_into().unwrap_or_default());
        if magic != self.magic {
            if h.iter().all(|&b| b == 0) {
                // A page never written: the WAL ends here, cleanly unless a record was in progress.
                return Err(match &self.state {
                    State::Reassembling { start, total, buf } => WalDecodeError::TornRecord {
                        record: *start,
                        lsn,
                        have: buf.len() as u32,
                        total: *total,
                    },
                    _ => WalDecodeError::EndOfWal { lsn },
                });
            }
            return Err(WalDecodeError::BadPageMagic {
                lsn,
                got: magic,
                expected: self.magic,
            });
        }
        if info & !XLP_ALL_FLAGS != 0 || (info & XLP_LONG_HEADER != 0) != at_segment_start {
            return Err(WalDecodeError::BadPageFlags { lsn, info });
        }
        if pageaddr != lsn {
            return Err(WalDecodeError::BadPageAddress { lsn, got: pageaddr });
        }
        if at_segment_start {
            self.check_long_header(lsn, h)?;
        }
        let at_stream_start = std::mem::replace(&mut self.at_stream_start, false);
        match &self.state {
            State::Reassembling { start, total, buf } => {
                let expected = *total - buf.len() as u32;
                if info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 {
                    // The record in progress was never finished; XLOG_OVERWRITE_CONTRECORD follows.
                    self.state = State::Waiting;
                } else if info & XLP_FIRST_IS_CONTRECORD == 0 {
                    return Err(WalDecodeError::MissingContrecord {
                        lsn,
                        record: *start,
                    });
                } else if rem_len != expected {
                    return Err(WalDecodeError::BadContrecordLength {
                        lsn,
                        got: rem_len,
                        expected,
                    });
                }
            }
            State::SkippingTail { remaining }
                if info & XLP_FIRST_IS_CONTRECORD == 0 || rem_len != *remaining =>
            {
                return Err(WalDecodeError::BadContrecordLength {
                    lsn,
                    got: rem_len,
                    expected: *remaining,
                });
            }
            State::Waiting if info & XLP_FIRST_IS_CONTRECORD != 0 => {
                if !at_stream_start {
                    return Err(WalDecodeError::UnexpectedContrecord { lsn });
                }
                self.state = State::SkippingTail { remaining: rem_len };
            }
            _ => {}
        }
        self.consume(size);
        Ok(true)
    }

    fn check_long_header(&mut self, lsn: Lsn, h: &[u8]) -> Result<(), WalDecodeError> {
        let sysid = u64::from_le_bytes(h[24..32].try_into().unwrap_or_default());
        let seg_size = u32::from_le_bytes(h[32..36].try_into().unwrap_or_default());
        let blcksz = u32::from_le_bytes(h[36..40].try_into().unwrap_or_default());
        let bad = |what, got: u64, expected: u64| WalDecodeError::BadSegmentHeader {
            lsn,
            what,
            got,
            expected,
        };
        if seg_size != self.seg_size {
            return Err(bad("segment size", seg_size as u64, self.seg_size as u64));
        }
        if blcksz as usize != XLOG_BLCKSZ {
            return Err(bad("WAL page size", blcksz as u64, XLOG_BLCKSZ as u64));
        }
        match self.system_id {
            Some(expected) if expected != sysid => {
                return Err(bad("system identifier", sysid, expected));
            }
            _ => self.system_id = Some(sysid),
        }
        Ok(())
    }

    fn finish_record(&mut self, start: Lsn, bytes: Bytes) -> Result<RawRecord, WalDecodeError> {
        let prev = Lsn(u64::from_le_bytes(
            bytes[8..16].try_into().unwrap_or_default(),
        ));
        let info = bytes[16];
        let rmid = bytes[17];
        let stored_crc = u32::from_le_bytes(bytes[20..24].try_into().unwrap_or_default());
        let crc =
            crc32c::crc32c_append(crc32c::crc32c(&bytes[SIZE_OF_XLOG_RECORD..]), &bytes[..20]);
        if crc != stored_crc {
            return Err(WalDecodeError::BadCrc {
                lsn: start,
                expected: stored_crc,
                got: crc,
            });
        }
        if !is_valid_rmid(rmid) {
            return Err(WalDecodeError::BadRmid { lsn: start, rmid });
        }
        if let Some(expected) = self.prev_record
            && prev != expected
        {
            return Err(WalDecodeError::BadPrevLink {
                lsn: start,
                got: prev,
                expected,
            });
        }
        self.prev_record = Some(start);
        let end_lsn = if rmid == RM_XLOG_ID && info & XLR_RMGR_INFO_MASK == XLOG_SWITCH {
            // The rest of the segment is unused; the next record starts in the next segment.
            let next = if self.lsn.segment_offset(self.seg_size) == 0 {
                self.lsn
            } else {
                self.lsn.next_segment_start(self.seg_size)
            };
            self.state = State::SkippingTo { target: next };
            next
        } else {
            self.state = State::Waiting;
            self.lsn.align()
        };
        Ok(RawRecord {
            lsn: start,
            end_lsn,
            bytes,
        })
    }
}
