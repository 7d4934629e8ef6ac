//! TLS to the WAL source, negotiated as libpq does (`src/interfaces/libpq/fe-connect.c`, the SSLRequest
//! exchange of the protocol's "SSL Session Encryption"): the client sends the 8-byte SSLRequest before its
//! startup message, the server answers one byte, 'S' (go on with a TLS handshake) or 'N' (no TLS here).
//!
//! | sslmode | SSLRequest | on 'N' | server certificate |
//! |---|---|---|---|
//! | disable, allow | not sent | - | - |
//! | prefer (default) | sent | plaintext | not verified |
//! | require | sent | error | not verified (the chain, if `sslrootcert` is given) |
//! | verify-ca | sent | error | chain to `sslrootcert` |
//! | verify-full | sent | error | chain to `sslrootcert`, and the host name (or IP) in the certificate |

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::connstr::{ConnConfig, SslMode};
use super::error::ReplicationError;
use super::wire::{ConnRead, ConnWrite};
use crate::tls::{ServerCheck, client_config_checking};

/// The SSLRequest packet: length 8, code 1234.5679.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

fn tls_error(config: &ConnConfig, msg: impl std::fmt::Display) -> ReplicationError {
    ReplicationError::Tls {
        addr: config.addr(),
        msg: msg.to_string(),
    }
}

/// The connection's halves after the TLS negotiation that `config.sslmode` asks for.
pub(super) async fn negotiate(
    mut tcp: TcpStream,
    config: &ConnConfig,
) -> Result<(ConnRead, ConnWrite), ReplicationError> {
    let check = match config.sslmode {
        SslMode::Disable | SslMode::Allow => None,
        SslMode::Prefer | SslMode::Require => Some(ServerCheck::Nothing),
        SslMode::VerifyCa => Some(ServerCheck::Chain),
        SslMode::VerifyFull => Some(ServerCheck::ChainAndName),
    };
    let Some(check) = check else {
        return Ok(plain(tcp));
    };
    // Built before anything is sent, so that a bad sslrootcert is an error of its own.
    let ca = match check {
        ServerCheck::Nothing => None,
        _ => config.sslrootcert.as_deref(),
    };
    let tls_config = client_config_checking(check, ca).map_err(|e| tls_error(config, e))?;
    tcp.write_all(&SSL_REQUEST).await?;
    match tcp.read_u8().await? {
        b'S' => {}
        b'N' if config.sslmode == SslMode::Prefer => return Ok(plain(tcp)),
        b'N' => {
            return Err(tls_error(
                config,
                format!(
                    "the server does not support TLS, and sslmode={:?} requires it",
                    config.sslmode
                ),
            ));
        }
        other => {
            return Err(ReplicationError::protocol(format!(
                "answer {other:#04x} to SSLRequest (expected 'S' or 'N')"
            )));
        }
    }
    let name = rustls::pki_types::ServerName::try_from(config.host.clone())
        .map_err(|e| tls_error(config, format!("host name {:?}: {e}", config.host)))?;
    let stream = tokio_rustls::TlsConnector::from(tls_config)
        .connect(name, tcp)
        .await
        .map_err(|e| tls_error(config, e))?;
    let (r, w) = tokio::io::split(stream);
    Ok((Box::new(r), Box::new(w)))
}

fn plain(tcp: TcpStream) -> (ConnRead, ConnWrite) {
    let (r, w) = tcp.into_split();
    (Box::new(r), Box::new(w))
}
