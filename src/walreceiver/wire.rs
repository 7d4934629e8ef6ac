//! Framing of the libpq wire protocol on top of postgres-protocol's codecs: a bounded, cancel-safe message
//! reader, a shared writer that reading never blocks, and the conversions of backend messages into our types.
//!
//! Invariants: a frame is at most [`MAX_MESSAGE_LEN`] bytes, checked before its body is buffered; every
//! decoding failure is a [`ReplicationError::Protocol`], never a panic; a write cancelled half-way poisons
//! the writer, so that a torn message is never followed by another.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{
    DataRowBody, ErrorResponseBody, Message, RowDescriptionBody,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use super::error::ReplicationError;

/// Largest backend message accepted (length field included): 1 GiB, the most PostgreSQL itself sends.
pub const MAX_MESSAGE_LEN: usize = 1 << 30;

/// Tag of CopyBothResponse, which postgres-protocol's parser does not know.
const COPY_BOTH_RESPONSE_TAG: u8 = b'W';

/// A decoded backend message.
pub(crate) enum BackendMessage {
    Std(Message),
    CopyBothResponse,
}

/// Decodes one whole frame from the front of `buf`, `Ok(None)` if more bytes are needed.
pub(crate) fn parse_frame(buf: &mut BytesMut) -> Result<Option<BackendMessage>, ReplicationError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if !(4..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(ReplicationError::protocol(format!(
            "message {:?} has invalid length {len} (allowed 4..={MAX_MESSAGE_LEN})",
            tag as char
        )));
    }
    if buf.len() < len + 1 {
        return Ok(None);
    }
    if tag == COPY_BOTH_RESPONSE_TAG {
        let mut body = buf.split_to(len + 1);
        body.advance(5);
        // Overall format (int8), column count (int16), one int16 format per column.
        if body.len() < 3 || body.len() != 3 + 2 * u16::from_be_bytes([body[1], body[2]]) as usize {
            return Err(ReplicationError::protocol(
                "malformed CopyBothResponse message",
            ));
        }
        return Ok(Some(BackendMessage::CopyBothResponse));
    }
    match Message::parse(buf) {
        Ok(Some(m)) => Ok(Some(BackendMessage::Std(m))),
        // Unreachable with a whole frame buffered; treat as a protocol error rather than trusting it.
        Ok(None) => Err(ReplicationError::protocol(format!(
            "incomplete {:?} message",
            tag as char
        ))),
        Err(e) => Err(ReplicationError::protocol(format!(
            "malformed {:?} message: {e}",
            tag as char
        ))),
    }
}

/// The read half of a connection, plain TCP or TLS.
pub(crate) type ConnRead = Box<dyn tokio::io::AsyncRead + Unpin + Send + Sync>;
/// The write half of a connection, plain TCP or TLS.
pub(crate) type ConnWrite = Box<dyn tokio::io::AsyncWrite + Unpin + Send + Sync>;

/// Reads backend messages. [`next`](Self::next) is cancel-safe: a partial frame stays buffered.
pub(crate) struct MessageReader<R> {
    rd: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    pub fn new(rd: R) -> Self {
        MessageReader {
            rd,
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    pub async fn next(&mut self) -> Result<BackendMessage, ReplicationError> {
        loop {
            if let Some(m) = parse_frame(&mut self.buf)? {
                return Ok(m);
            }
            // Grow by what the frame still needs, at most 1 MiB at a time: a length is only a claim.
            let needed = match self.buf.len() {
                n if n >= 5 => {
                    let len =
                        u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                    (len as usize + 1).saturating_sub(n)
                }
                n => 5 - n,
            };
            self.buf.reserve(needed.clamp(8192, 1 << 20));
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(ReplicationError::Closed);
            }
        }
    }
}

struct WriterState<W> {
    w: W,
    /// Set while a message is being written; still set if that write was cancelled or failed.
    poisoned: bool,
}

/// The write half, shared by the connection, its WAL stream and status senders.
pub(crate) struct SharedWriter<W> {
    inner: Arc<Mutex<WriterState<W>>>,
}

impl<W> Clone for SharedWriter<W> {
    fn clone(&self) -> Self {
        SharedWriter {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<W: AsyncWrite + Unpin> SharedWriter<W> {
    pub fn new(w: W) -> Self {
        SharedWriter {
            inner: Arc::new(Mutex::new(WriterState { w, poisoned: false })),
        }
    }

    /// Writes whole messages. Not cancel-safe on the wire (a message may be half sent), so a cancelled send
    /// makes every later send fail with [`ReplicationError::Broken`].
    pub async fn send(&self, bytes: &[u8]) -> Result<(), ReplicationError> {
        let mut state = self.inner.lock().await;
        if state.poisoned {
            return Err(ReplicationError::Broken);
        }
        state.poisoned = true;
        state.w.write_all(bytes).await?;
        state.w.flush().await?;
        state.poisoned = false;
        Ok(())
    }
}

/// The SQLSTATE, message and detail of an ErrorResponse.
pub(crate) fn server_error(body: &ErrorResponseBody) -> ReplicationError {
    let mut code = None;
    let mut message = None;
    let mut detail = None;
    let mut fields = body.fields();
    loop {
        match fields.next() {
            Ok(Some(f)) => {
                let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
                match f.type_() {
                    b'C' => code = Some(value),
                    b'M' => message = Some(value),
                    b'D' => detail = Some(value),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(e) => return ReplicationError::protocol(format!("malformed ErrorResponse: {e}")),
        }
    }
    ReplicationError::Server {
        code: code.unwrap_or_else(|| "XX000".to_string()),
        message: message.unwrap_or_else(|| "(no message)".to_string()),
        detail,
    }
}

/// The message text of a NoticeResponse, for logging.
pub(crate) fn notice_text(
    body: &postgres_protocol::message::backend::NoticeResponseBody,
) -> String {
    let mut fields = body.fields();
    while let Ok(Some(f)) = fields.next() {
        if f.type_() == b'M' {
            return String::from_utf8_lossy(f.value_bytes()).into_owned();
        }
    }
    String::new()
}

pub(crate) fn column_names(body: &RowDescriptionBody) -> Result<Vec<String>, ReplicationError> {
    body.fields()
        .map(|f| Ok(f.name().to_string()))
        .collect()
        .map_err(|e| ReplicationError::protocol(format!("malformed RowDescription: {e}")))
}

/// The columns of a DataRow in text format; `None` for NULL.
pub(crate) fn data_row(body: &DataRowBody) -> Result<Vec<Option<String>>, ReplicationError> {
    let bad = |e: String| ReplicationError::protocol(format!("malformed DataRow: {e}"));
    let buf = body.buffer();
    let ranges: Vec<_> = body.ranges().collect().map_err(|e| bad(e.to_string()))?;
    ranges
        .into_iter()
        .map(|r| match r {
            None => Ok(None),
            Some(r) => {
                let bytes = buf
                    .get(r)
                    .ok_or_else(|| bad("column out of bounds".into()))?;
                let s = std::str::from_utf8(bytes).map_err(|e| bad(e.to_string()))?;
                Ok(Some(s.to_string()))
            }
        })
        .collect()
}

/// A short name of a message, for "unexpected message" errors.
pub(crate) fn describe(m: &BackendMessage) -> &'static str {
    use Message::*;
    match m {
        BackendMessage::CopyBothResponse => "CopyBothResponse",
        BackendMessage::Std(m) => match m {
            AuthenticationOk
            | AuthenticationCleartextPassword
            | AuthenticationMd5Password(_)
            | AuthenticationSasl(_)
            | AuthenticationSaslContinue(_)
            | AuthenticationSaslFinal(_)
            | AuthenticationGss
            | AuthenticationGssContinue(_)
            | AuthenticationKerberosV5
            | AuthenticationScmCredential
            | AuthenticationSspi => "an authentication request",
            BackendKeyData(_) => "BackendKeyData",
            CommandComplete(_) => "CommandComplete",
            CopyData(_) => "CopyData",
            CopyDone => "CopyDone",
            CopyInResponse(_) => "CopyInResponse",
            CopyOutResponse(_) => "CopyOutResponse",
            DataRow(_) => "DataRow",
            EmptyQueryResponse => "EmptyQueryResponse",
            ErrorResponse(_) => "ErrorResponse",
            NoticeResponse(_) => "NoticeResponse",
            ParameterStatus(_) => "ParameterStatus",
            ReadyForQuery(_) => "ReadyForQuery",
            RowDescription(_) => "RowDescription",
            _ => "an extended-query message",
        },
    }
}

pub(crate) fn unexpected(m: &BackendMessage, during: &str) -> ReplicationError {
    ReplicationError::protocol(format!("unexpected {} during {during}", describe(m)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.extend_from_slice(&[tag]);
        b.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut whole = frame(b'Z', b"I");
        let mut part = whole.split_to(3);
        assert!(parse_frame(&mut part).unwrap().is_none());
        part.unsplit(whole.split_to(2));
        assert!(parse_frame(&mut part).unwrap().is_none());
        part.unsplit(whole);
        assert!(matches!(
            parse_frame(&mut part).unwrap(),
            Some(BackendMessage::Std(Message::ReadyForQuery(_)))
        ));
        assert!(part.is_empty());
    }

    #[test]
    fn lengths_are_bounded() {
        for len in [0u32, 3, (MAX_MESSAGE_LEN + 1) as u32, u32::MAX] {
            let mut b = BytesMut::from(&b"d"[..]);
            b.extend_from_slice(&len.to_be_bytes());
            let e = parse_frame(&mut b).err().expect("must fail");
            assert!(matches!(e, ReplicationError::Protocol(_)), "{e}");
        }
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        for (tag, body) in [
            (b'?', &b"xyz"[..]),
            (b'Z', &b""[..]),
            (b'K', &b"\0\0"[..]),
            (b'W', &b"\0\0\x05\0\0"[..]),
            (b'R', &b"\0\0\0\x63"[..]),
        ] {
            let mut b = frame(tag, body);
            let e = parse_frame(&mut b).err().expect("must fail");
            assert!(matches!(e, ReplicationError::Protocol(_)), "{e}");
        }
    }

    #[test]
    fn copy_both_response() {
        let mut b = frame(b'W', b"\0\0\0");
        assert!(matches!(
            parse_frame(&mut b).unwrap(),
            Some(BackendMessage::CopyBothResponse)
        ));
    }
}
