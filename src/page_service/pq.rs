//! The server side of the PostgreSQL v3 wire protocol, as far as the page service needs it: the startup
//! packet (an SSLRequest goes to the caller, which answers it; a GSS encryption request is declined with 'N';
//! a cancel request closes the connection), cleartext-password authentication, simple query, CopyBoth and
//! CopyOut, and ErrorResponse. Every message is length-checked before it is buffered: a frontend cannot make
//! the server allocate more than `MAX_MESSAGE` bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frontend message accepted (a pagestream request is at most 42 bytes, a query a few hundred).
pub const MAX_MESSAGE: usize = 1 << 20;

const PROTOCOL_3_0: u32 = 196_608;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

#[derive(Debug, thiserror::Error)]
pub enum PqError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed by the client")]
    Closed,
    #[error("malformed {what}: {detail}")]
    Protocol { what: &'static str, detail: String },
    #[error("cancel request (not supported)")]
    Cancel,
    #[error("no {what} within {after:?}")]
    Timeout {
        what: &'static str,
        after: std::time::Duration,
    },
    #[error("no message for {0:?} (idle timeout)")]
    Idle(std::time::Duration),
}

fn protocol(what: &'static str, detail: impl Into<String>) -> PqError {
    PqError::Protocol {
        what,
        detail: detail.into(),
    }
}

/// The first packet of a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Startup {
    SslRequest,
    GssEncRequest,
    Params(Vec<(String, String)>),
}

/// A frontend message after startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeMessage {
    Query(String),
    CopyData(Bytes),
    CopyDone,
    CopyFail,
    Sync,
    Terminate,
    /// PasswordMessage: the answer to an authentication request (with NeonJWT, the token).
    Password(Secret),
    /// Any other message, by its tag (extended query protocol, function calls, ...).
    Other(u8),
}

/// A password or token: never printed (its Debug is redacted), so that no log line or error can hold it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Reads frontend messages from a buffered stream.
pub struct PqReader<R> {
    io: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> PqReader<R> {
    pub fn new(io: R) -> PqReader<R> {
        PqReader {
            io,
            buf: BytesMut::with_capacity(8192),
        }
    }

    /// Reads until `n` bytes are buffered; Closed at a clean end of stream before any byte of a message.
    async fn fill(&mut self, n: usize) -> Result<(), PqError> {
        while self.buf.len() < n {
            let before = self.buf.len();
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(if before == 0 {
                    PqError::Closed
                } else {
                    protocol("message", "connection closed in the middle of a message")
                });
            }
        }
        Ok(())
    }

    /// The startup packet: its parameters (user, database, options, application_name, ...), or an encryption
    /// request for the caller to answer ('S' or 'N' on the stream, [`PqReader::get_mut`]).
    pub async fn startup(&mut self) -> Result<Startup, PqError> {
        self.fill(8).await?;
        let len = u32::from_be_bytes(self.buf[..4].try_into().expect("4")) as usize;
        let code = u32::from_be_bytes(self.buf[4..8].try_into().expect("4"));
        if !(8..=10_000).contains(&len) {
            return Err(protocol("startup packet", format!("length {len}")));
        }
        self.fill(len).await?;
        let mut packet = self.buf.split_to(len);
        packet.advance(8);
        match code {
            SSL_REQUEST => Ok(Startup::SslRequest),
            GSSENC_REQUEST => Ok(Startup::GssEncRequest),
            CANCEL_REQUEST => Err(PqError::Cancel),
            PROTOCOL_3_0 => parse_startup_params(&packet).map(Startup::Params),
            other => Err(protocol(
                "startup packet",
                format!(
                    "protocol version {}.{} (only 3.0 is supported)",
                    other >> 16,
                    other & 0xFFFF
                ),
            )),
        }
    }

    /// The stream itself, to answer an encryption request.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.io
    }

    /// The stream and what is buffered from it, to go on reading it in another form (split in halves).
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.io, self.buf)
    }

    /// A reader over `io` that first returns what `buf` already holds.
    pub fn from_parts(io: R, buf: BytesMut) -> PqReader<R> {
        PqReader { io, buf }
    }

    /// The stream back, for a TLS handshake after an SSLRequest. Bytes the client sent after its SSLRequest
    /// and before the handshake would be plaintext injected into the encrypted session (CVE-2021-23214):
    /// they are an error.
    pub fn into_inner(self) -> Result<R, PqError> {
        if !self.buf.is_empty() {
            return Err(protocol(
                "SSLRequest",
                "data received after an SSLRequest before the TLS handshake",
            ));
        }
        Ok(self.io)
    }

    /// The next message, or Closed at end of stream between messages.
    pub async fn read(&mut self) -> Result<FeMessage, PqError> {
        loop {
            if let Some(m) = self.try_read()? {
                return Ok(m);
            }
            let before = self.buf.len();
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(if before == 0 {
                    PqError::Closed
                } else {
                    protocol("message", "connection closed in the middle of a message")
                });
            }
        }
    }

    /// A message that is already wholly buffered, without waiting (pipelined requests are answered in
    /// batches).
    pub fn try_read(&mut self) -> Result<Option<FeMessage>, PqError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let tag = self.buf[0];
        let len = u32::from_be_bytes(self.buf[1..5].try_into().expect("4")) as usize;
        if !(4..=MAX_MESSAGE).contains(&len) {
            return Err(protocol(
                "message",
                format!("length {len} of a {:?} message", tag as char),
            ));
        }
        if self.buf.len() < 1 + len {
            self.buf.reserve(1 + len - self.buf.len());
            return Ok(None);
        }
        let mut msg = self.buf.split_to(1 + len).freeze();
        msg.advance(5);
        Ok(Some(match tag {
            b'Q' => FeMessage::Query(cstr(&mut &msg[..], "query")?),
            b'd' => FeMessage::CopyData(msg),
            b'c' => FeMessage::CopyDone,
            b'f' => FeMessage::CopyFail,
            b'S' => FeMessage::Sync,
            b'X' => FeMessage::Terminate,
            b'p' => FeMessage::Password(Secret(cstr(&mut &msg[..], "password message")?)),
            other => FeMessage::Other(other),
        }))
    }
}

fn parse_startup_params(mut packet: &[u8]) -> Result<Vec<(String, String)>, PqError> {
    let mut params = Vec::new();
    loop {
        let key = cstr(&mut packet, "startup packet")?;
        if key.is_empty() {
            break;
        }
        let value = cstr(&mut packet, "startup packet")?;
        params.push((key, value));
    }
    Ok(params)
}

/// A NUL-terminated string from the front of `b`.
fn cstr(b: &mut &[u8], what: &'static str) -> Result<String, PqError> {
    let end = b
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| protocol(what, "string without its NUL terminator"))?;
    let s = String::from_utf8(b[..end].to_vec()).map_err(|_| protocol(what, "string not UTF-8"))?;
    *b = &b[end + 1..];
    Ok(s)
}

/// Backend messages, appended to an output buffer.
pub mod be {
    use super::*;

    fn message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
        message_with_tail(out, tag, 0, body);
    }

    /// A message whose last `tail_len` bytes the caller sends after `out` (the length counts them).
    fn message_with_tail(
        out: &mut BytesMut,
        tag: u8,
        tail_len: usize,
        body: impl FnOnce(&mut BytesMut),
    ) {
        out.put_u8(tag);
        let at = out.len();
        out.put_u32(0);
        body(out);
        let len = (out.len() - at + tail_len) as u32;
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    fn put_cstr(out: &mut BytesMut, s: &str) {
        out.put_slice(s.replace('\0', " ").as_bytes());
        out.put_u8(0);
    }

    pub fn authentication_ok(out: &mut BytesMut) {
        message(out, b'R', |b| b.put_u32(0));
    }

    /// AuthenticationCleartextPassword: the client answers with a PasswordMessage.
    pub fn authentication_cleartext_password(out: &mut BytesMut) {
        message(out, b'R', |b| b.put_u32(3));
    }

    pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
        message(out, b'S', |b| {
            put_cstr(b, name);
            put_cstr(b, value);
        });
    }

    pub fn backend_key_data(out: &mut BytesMut, pid: u32, key: u32) {
        message(out, b'K', |b| {
            b.put_u32(pid);
            b.put_u32(key);
        });
    }

    pub fn ready_for_query(out: &mut BytesMut) {
        message(out, b'Z', |b| b.put_u8(b'I'));
    }

    /// ErrorResponse with severity ERROR, an SQLSTATE and the message.
    pub fn error(out: &mut BytesMut, sqlstate: &str, msg: &str) {
        message(out, b'E', |b| {
            for (field, value) in [
                (b'S', "ERROR"),
                (b'V', "ERROR"),
                (b'C', sqlstate),
                (b'M', msg),
            ] {
                b.put_u8(field);
                put_cstr(b, value);
            }
            b.put_u8(0);
        });
    }

    pub fn command_complete(out: &mut BytesMut, tag: &str) {
        message(out, b'C', |b| put_cstr(b, tag));
    }

    /// CopyBothResponse: text format, no columns.
    pub fn copy_both_response(out: &mut BytesMut) {
        message(out, b'W', |b| {
            b.put_u8(0);
            b.put_i16(0);
        });
    }

    /// CopyOutResponse: text format, no columns.
    pub fn copy_out_response(out: &mut BytesMut) {
        message(out, b'H', |b| {
            b.put_u8(0);
            b.put_i16(0);
        });
    }

    pub fn copy_data(out: &mut BytesMut, data: &[u8]) {
        message(out, b'd', |b| b.put_slice(data));
    }

    /// CopyData whose payload `f` appends (no copy of large payloads).
    pub fn copy_data_with(out: &mut BytesMut, f: impl FnOnce(&mut BytesMut)) {
        message(out, b'd', f);
    }

    /// A CopyData message whose last `tail_len` bytes are not written to `out`: the caller sends them right
    /// after it (a page sent from its own buffer instead of copied).
    pub fn copy_data_head(out: &mut BytesMut, tail_len: usize, head: impl FnOnce(&mut BytesMut)) {
        message_with_tail(out, b'd', tail_len, head);
    }

    pub fn copy_done(out: &mut BytesMut) {
        message(out, b'c', |_| {});
    }
}

/// Writes `parts` in order with vectored writes (no copy into one buffer), then flushes.
pub async fn send_parts<W: AsyncWrite + Unpin>(
    w: &mut W,
    parts: &mut std::collections::VecDeque<bytes::Bytes>,
) -> Result<(), PqError> {
    use bytes::Buf;
    parts.retain(|p| !p.is_empty());
    while !parts.is_empty() {
        let slices: Vec<std::io::IoSlice<'_>> = parts
            .iter()
            .take(64)
            .map(|p| std::io::IoSlice::new(p))
            .collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
        }
        while n > 0 {
            let Some(front) = parts.front_mut() else {
                break;
            };
            if n >= front.len() {
                n -= front.len();
                parts.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
    w.flush().await?;
    Ok(())
}

/// Writes what is buffered in `out` and flushes.
pub async fn send<W: AsyncWrite + Unpin>(w: &mut W, out: &mut BytesMut) -> Result<(), PqError> {
    w.write_all(out).await?;
    w.flush().await?;
    out.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most 5 bytes per write, vectored or not (short writes, as a socket may make).
    struct ShortWrites(Vec<u8>);

    impl AsyncWrite for ShortWrites {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(5);
            self.0.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(5 - n);
                self.0.extend_from_slice(&b[..take]);
                n += take;
                if n == 5 {
                    break;
                }
            }
            std::task::Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn parts_go_out_whole_and_in_order_through_short_writes() {
        let mut parts: std::collections::VecDeque<bytes::Bytes> =
            [&b"abc"[..], b"", b"defghijk", b"l", b"", b"mnopqrstuvwxyz"]
                .into_iter()
                .map(bytes::Bytes::from_static)
                .collect();
        let mut w = ShortWrites(Vec::new());
        send_parts(&mut w, &mut parts).await.unwrap();
        assert_eq!(w.0, b"abcdefghijklmnopqrstuvwxyz");
        assert!(parts.is_empty());
    }

    #[tokio::test]
    async fn startup_reports_ssl_then_reads_params() {
        let mut input = Vec::new();
        input.extend_from_slice(&8u32.to_be_bytes());
        input.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        let params = b"user\0postgres\0database\0x\0\0";
        input.extend_from_slice(&((8 + params.len()) as u32).to_be_bytes());
        input.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        input.extend_from_slice(params);
        input.extend_from_slice(b"Q\0\0\0\x0aset x\0X\0\0\0\x04");
        let mut r = PqReader::new(&input[..]);
        assert_eq!(r.startup().await.unwrap(), Startup::SslRequest);
        let p = r.startup().await.unwrap();
        assert_eq!(
            p,
            Startup::Params(vec![
                ("user".into(), "postgres".into()),
                ("database".into(), "x".into())
            ])
        );
        assert_eq!(r.read().await.unwrap(), FeMessage::Query("set x".into()));
        assert_eq!(r.read().await.unwrap(), FeMessage::Terminate);
        assert!(matches!(r.read().await, Err(PqError::Closed)));
    }

    #[tokio::test]
    async fn bad_lengths_and_truncation_are_errors() {
        let huge = [b'd', 0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            PqReader::new(&huge[..]).read().await,
            Err(PqError::Protocol { .. })
        ));
        let short = [b'd', 0, 0, 0, 3];
        assert!(PqReader::new(&short[..]).read().await.is_err());
        let cut = [b'd', 0, 0, 0, 10, 1, 2];
        assert!(matches!(
            PqReader::new(&cut[..]).read().await,
            Err(PqError::Protocol { .. })
        ));
        let unterminated = [b'Q', 0, 0, 0, 6, b'a', b'b'];
        assert!(PqReader::new(&unterminated[..]).read().await.is_err());
        let mut old = Vec::new();
        old.extend_from_slice(&8u32.to_be_bytes());
        old.extend_from_slice(&(2u32 << 16).to_be_bytes());
        let err = PqReader::new(&old[..]).startup().await.unwrap_err();
        assert!(err.to_string().contains("protocol version 2.0"), "{err}");
    }

    #[tokio::test]
    async fn a_password_is_read_and_never_printed() {
        let input = b"p\0\0\0\x0aa.b.c\0";
        let m = PqReader::new(&input[..]).read().await.unwrap();
        assert_eq!(m, FeMessage::Password(Secret("a.b.c".into())));
        assert!(!format!("{m:?}").contains("a.b.c"));
    }

    #[test]
    fn backend_messages_have_their_lengths() {
        let mut out = BytesMut::new();
        be::error(&mut out, "XX000", "boom");
        assert_eq!(&out[..], b"E\0\0\0\x20SERROR\0VERROR\0CXX000\0Mboom\0\0");
        out.clear();
        be::copy_both_response(&mut out);
        assert_eq!(&out[..], b"W\0\0\0\x07\0\0\0");
    }
}
