//! A client of the page service: connect (optionally over TLS, optionally with a JWT as the password), run `pagestream_v2|v3` sessions and take backups. Used by
//! the `pageserver getpage` and `pageserver pagebench` commands and by the tests. It frames messages with
//! postgres-protocol's codecs (the walreceiver's bounded reader), independent of the server's own codec.

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::pagestream::{self, Request, ResponseBody, Version};
use crate::walreceiver::ReplicationError;
use crate::walreceiver::wire::{
    BackendMessage, ConnRead, ConnWrite, MessageReader, describe, server_error,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    /// The wire layer's error (shared with the WAL receiver), worded for this connection: [`wire_error`].
    #[error("{}", wire_error(.0))]
    Wire(#[from] ReplicationError),
    #[error("unexpected {got} {during}")]
    Unexpected { got: &'static str, during: String },
    #[error("bad pagestream response: {0}")]
    Response(#[from] pagestream::ResponseParseError),
    #[error("the server asks for a password and none was given")]
    PasswordNeeded,
    #[error("the server does not offer TLS")]
    NoTls,
    #[error("tls: {0}")]
    Tls(String),
}

/// The wire layer words the errors of its own connection as a replication connection's; a page service
/// client's say which connection they are about.
fn wire_error(e: &ReplicationError) -> String {
    match e {
        ReplicationError::Io(e) => format!("i/o error on the page service connection: {e}"),
        ReplicationError::Closed => "the server closed the page service connection".into(),
        ReplicationError::Broken => {
            "the page service connection is unusable after an earlier error".into()
        }
        other => other.to_string(),
    }
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> ClientError {
        ClientError::Wire(ReplicationError::Io(e))
    }
}

impl ClientError {
    /// The SQLSTATE of an ErrorResponse.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ClientError::Wire(e) => e.sqlstate(),
            _ => None,
        }
    }
}

/// A connection to the page service, ready for a query.
pub struct PageServiceClient {
    reader: MessageReader<ConnRead>,
    w: ConnWrite,
}

/// How to connect: the password (a JWT when the server's `pg_auth_type` is NeonJWT) and TLS.
#[derive(Default, Clone)]
pub struct ConnectOptions {
    pub password: Option<String>,
    /// Ask for TLS and verify the server with this config (see [`crate::tls::client_config`]).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// SSLRequest: asks the server to switch to TLS.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

fn unexpected(m: &BackendMessage, during: &str) -> ClientError {
    match m {
        BackendMessage::Std(Message::ErrorResponse(body)) => ClientError::Wire(server_error(body)),
        m => ClientError::Unexpected {
            got: describe(m),
            during: during.to_string(),
        },
    }
}

impl PageServiceClient {
    /// Connects to `addr` (host:port) and starts a session as user `pageserver` (no TLS, no password).
    pub async fn connect(addr: &str) -> Result<PageServiceClient, ClientError> {
        Self::connect_with(addr, &ConnectOptions::default()).await
    }

    /// Connects to `addr` (host:port) with `options` and starts a session as user `pageserver`.
    pub async fn connect_with(
        addr: &str,
        options: &ConnectOptions,
    ) -> Result<PageServiceClient, ClientError> {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (r, w): (ConnRead, ConnWrite) = match &options.tls {
            None => {
                let (r, w) = stream.into_split();
                (Box::new(r), Box::new(w))
            }
            Some(config) => {
                stream.write_all(&SSL_REQUEST).await?;
                if stream.read_u8().await? != b'S' {
                    return Err(ClientError::NoTls);
                }
                let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| ClientError::Tls(format!("server name {host:?}: {e}")))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|e| ClientError::Tls(e.to_string()))?;
                let (r, w) = tokio::io::split(tls);
                (Box::new(r), Box::new(w))
            }
        };
        let mut client = PageServiceClient {
            reader: MessageReader::new(r),
            w,
        };
        let mut buf = BytesMut::new();
        frontend::startup_message(
            [
                ("user", "pageserver"),
                ("application_name", "pageserver-client"),
            ],
            &mut buf,
        )?;
        client.w.write_all(&buf).await?;
        loop {
            match client.reader.next().await? {
                BackendMessage::Std(Message::AuthenticationCleartextPassword) => {
                    let password = options
                        .password
                        .as_deref()
                        .ok_or(ClientError::PasswordNeeded)?;
                    buf.clear();
                    frontend::password_message(password.as_bytes(), &mut buf)?;
                    client.w.write_all(&buf).await?;
                }
                BackendMessage::Std(Message::AuthenticationOk)
                | BackendMessage::Std(Message::ParameterStatus(_))
                | BackendMessage::Std(Message::BackendKeyData(_)) => {}
                BackendMessage::Std(Message::ReadyForQuery(_)) => return Ok(client),
                m => return Err(unexpected(&m, "during startup")),
            }
        }
    }

    async fn query(&mut self, text: &str) -> Result<(), ClientError> {
        let mut buf = BytesMut::new();
        frontend::query(text, &mut buf)?;
        self.w.write_all(&buf).await?;
        Ok(())
    }

    async fn until_ready(&mut self) -> Result<(), ClientError> {
        loop {
            match self.reader.next().await? {
                BackendMessage::Std(Message::ReadyForQuery(_)) => return Ok(()),
                BackendMessage::Std(Message::ErrorResponse(body)) => {
                    let err = server_error(&body);
                    // The connection is usable again after ReadyForQuery.
                    while !matches!(
                        self.reader.next().await?,
                        BackendMessage::Std(Message::ReadyForQuery(_))
                    ) {}
                    return Err(err.into());
                }
                _ => {}
            }
        }
    }

    /// Runs a command that answers without COPY (e.g. `set ...`); an ErrorResponse is the error.
    pub async fn simple(&mut self, text: &str) -> Result<(), ClientError> {
        self.query(text).await?;
        self.until_ready().await
    }

    /// `pagestream_vN <tenant> <timeline>`: the session, once the server answered CopyBothResponse.
    pub async fn pagestream(
        mut self,
        version: Version,
        tenant: &str,
        timeline: &str,
    ) -> Result<PagestreamSession, (ClientError, Option<PageServiceClient>)> {
        let name = match version {
            Version::V2 => "pagestream_v2",
            Version::V3 => "pagestream_v3",
        };
        if let Err(e) = self.query(&format!("{name} {tenant} {timeline}")).await {
            return Err((e, None));
        }
        match self.reader.next().await {
            Ok(BackendMessage::CopyBothResponse) => Ok(PagestreamSession {
                client: self,
                version,
                out: BytesMut::new(),
            }),
            Ok(BackendMessage::Std(Message::ErrorResponse(body))) => {
                let err = server_error(&body).into();
                match self.until_ready().await {
                    Ok(()) => Err((err, Some(self))),
                    Err(_) => Err((err, None)),
                }
            }
            Ok(m) => Err((unexpected(&m, "after pagestream"), None)),
            Err(e) => Err((e.into(), None)),
        }
    }

    /// `basebackup ...` or `fullbackup ...`: the whole CopyOut stream (a tar, or gzip of one).
    pub async fn backup(&mut self, command: &str) -> Result<Vec<u8>, ClientError> {
        let mut data = Vec::new();
        self.backup_into(command, |chunk| {
            data.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(data)
    }

    /// [`backup`](Self::backup), each CopyData chunk handed to `sink` as it arrives; an error from `sink`
    /// ends the backup (the connection is then unusable). Ok only after the server's CommandComplete.
    pub async fn backup_into(
        &mut self,
        command: &str,
        mut sink: impl FnMut(&[u8]) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        self.query(command).await?;
        loop {
            match self.reader.next().await? {
                BackendMessage::Std(Message::CopyOutResponse(_)) => {}
                BackendMessage::Std(Message::CopyData(body)) => sink(body.data())?,
                BackendMessage::Std(Message::CopyDone) => {}
                BackendMessage::Std(Message::CommandComplete(_)) => {
                    self.until_ready().await?;
                    return Ok(());
                }
                BackendMessage::Std(Message::ErrorResponse(body)) => {
                    let err = server_error(&body);
                    self.until_ready().await.ok();
                    return Err(err.into());
                }
                m => return Err(unexpected(&m, "during a backup")),
            }
        }
    }

    /// Ends the connection politely.
    pub async fn terminate(mut self) -> Result<(), ClientError> {
        let mut buf = BytesMut::new();
        frontend::terminate(&mut buf);
        self.w.write_all(&buf).await?;
        Ok(())
    }
}

/// A pagestream session. Requests can be pipelined: [`send`](Self::send) several, [`flush`](Self::flush),
/// then [`recv`](Self::recv) each answer in order.
pub struct PagestreamSession {
    client: PageServiceClient,
    version: Version,
    out: BytesMut,
}

impl PagestreamSession {
    pub fn version(&self) -> Version {
        self.version
    }

    /// Queues a request (sent by the next flush).
    pub fn send(&mut self, req: &Request) {
        let mut msg = BytesMut::new();
        pagestream::encode_request(self.version, req, &mut msg);
        self.send_raw(&msg);
    }

    /// Queues any bytes as one CopyData message (for tests of malformed requests).
    pub fn send_raw(&mut self, payload: &[u8]) {
        frontend::CopyData::new(payload)
            .map(|d| d.write(&mut self.out))
            .expect("a payload under 1 GiB");
    }

    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.client.w.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    /// The next CopyData payload.
    pub async fn recv_raw(&mut self) -> Result<Bytes, ClientError> {
        match self.client.reader.next().await? {
            BackendMessage::Std(Message::CopyData(body)) => Ok(body.into_bytes()),
            m => Err(unexpected(&m, "in a pagestream session")),
        }
    }

    /// The answer to `req`, which must be the oldest request not yet answered.
    pub async fn recv(&mut self, req: &Request) -> Result<ResponseBody, ClientError> {
        let msg = self.recv_raw().await?;
        Ok(pagestream::parse_response(self.version, req, &msg)?)
    }

    /// One request and its answer.
    pub async fn request(&mut self, req: &Request) -> Result<ResponseBody, ClientError> {
        self.send(req);
        self.flush().await?;
        self.recv(req).await
    }

    /// Ends the session with CopyDone: the connection is ready for another command.
    pub async fn finish(mut self) -> Result<PageServiceClient, ClientError> {
        frontend::copy_done(&mut self.out);
        self.flush().await?;
        let mut client = self.client;
        loop {
            match client.reader.next().await? {
                BackendMessage::Std(Message::CopyDone)
                | BackendMessage::Std(Message::CommandComplete(_)) => {}
                BackendMessage::Std(Message::ReadyForQuery(_)) => return Ok(client),
                m => return Err(unexpected(&m, "after CopyDone")),
            }
        }
    }

    /// Ends the session and the connection (Terminate).
    pub async fn terminate(mut self) -> Result<(), ClientError> {
        frontend::terminate(&mut self.out);
        self.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_page_service_connection() {
        let io = ClientError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let closed = ClientError::Wire(ReplicationError::Closed);
        let broken = ClientError::Wire(ReplicationError::Broken);
        for e in [&io, &closed, &broken] {
            let msg = e.to_string();
            assert!(msg.contains("page service connection"), "{msg}");
            assert!(!msg.contains("replication"), "{msg}");
        }
        // The server's own errors keep their words and SQLSTATE.
        let server = ClientError::Wire(ReplicationError::Server {
            code: "XX000".into(),
            message: "boom".into(),
            detail: None,
        });
        assert_eq!(server.to_string(), "server error XX000: boom");
        assert_eq!(server.sqlstate(), Some("XX000"));
    }
}
