//! TLS of the listeners (the HTTPS API and the page service), with rustls on the aws-lc-rs provider.
//!
//! The certificate chain and private key come from `ssl_cert_file` and `ssl_key_file` (PEM). The key must be
//! owner-only (no group or other permission bits), as PostgreSQL requires of `server.key`: a key that others
//! can read is refused at start and at reload, naming the file and its mode. Both files are checked every
//! `ssl_cert_reload_period`; when either changed (mtime or size) they are loaded again, and new connections
//! use the new certificate. A reload that fails (a half-written file, a key that does not match) keeps the
//! old certificate in force and is logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Pem { path: PathBuf, msg: String },
    #[error(
        "{path} is accessible by group or others (mode {mode:04o}); a private key must be owner-only: chmod 600 it"
    )]
    KeyMode { path: PathBuf, mode: u32 },
    #[error("the certificate and key cannot be used: {0}")]
    Config(String),
}

/// Refuses a private key file that its group or others may read or write.
pub fn check_owner_only(path: &Path) -> Result<(), TlsError> {
    match crate::durable::secret_file_too_open(path) {
        Ok(None) => Ok(()),
        Ok(Some(mode)) => Err(TlsError::KeyMode {
            path: path.to_path_buf(),
            mode,
        }),
        Err(source) => Err(TlsError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The server side of TLS: the current rustls config, replaced when the files change.
pub struct TlsServer {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<(Arc<ServerConfig>, FileStamp)>,
}

/// What tells that a file changed: its mtime and size, for both files.
type FileStamp = [(Option<SystemTime>, u64); 2];

impl TlsServer {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<TlsServer>, TlsError> {
        let stamp = stamp_of(cert_file, key_file);
        let config = server_config(cert_file, key_file)?;
        Ok(Arc::new(TlsServer {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: RwLock::new((config, stamp)),
        }))
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone();
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// Loads the files again if they changed since the last load. Ok(true) when the certificate changed.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamp = stamp_of(&self.cert_file, &self.key_file);
        if self.current.read().unwrap_or_else(|p| p.into_inner()).1 == stamp {
            return Ok(false);
        }
        let config = server_config(&self.cert_file, &self.key_file);
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        // A failed load is not tried again until the files change once more.
        current.1 = stamp;
        current.0 = config?;
        Ok(true)
    }

    /// Checks the files every `period` until `cancel`.
    pub async fn watch(self: Arc<Self>, period: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.reload_if_changed()).await {
                Ok(Ok(true)) => info!(cert = %self.cert_file.display(), "tls certificate reloaded"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => warn!(error = %e, "tls certificate not reloaded; the old one stays"),
                Err(e) => warn!(error = %e, "tls reload task failed"),
            }
        }
    }
}

/// A client config that trusts the certificates (PEM) of `ca_file`: the server must present a chain to one of
/// them, for the name it was reached by.
pub fn client_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    client_config_checking(ServerCheck::ChainAndName, Some(ca_file))
}

/// What a client checks of the server's certificate (libpq's sslmode require, verify-ca, verify-full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCheck {
    /// Nothing: the session is encrypted, the server not authenticated (libpq's `require`).
    Nothing,
    /// A chain to one of the CA certificates, whatever name it is for (`verify-ca`).
    Chain,
    /// The chain and the host name or IP (`verify-full`).
    ChainAndName,
}

/// A client config that checks the server as `check` says, with the CA certificates (PEM) of `ca_file`
/// (required unless `check` is `Nothing`).
pub fn client_config_checking(
    check: ServerCheck,
    ca_file: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let roots = match (check, ca_file) {
        (ServerCheck::Nothing, _) => None,
        (_, Some(ca)) => Some(Arc::new(root_store(ca)?)),
        (_, None) => {
            return Err(TlsError::Config(
                "verifying the server needs a CA file (sslrootcert)".into(),
            ));
        }
    };
    let config = match (check, roots) {
        (ServerCheck::ChainAndName, Some(roots)) => builder.with_root_certificates(roots),
        (ServerCheck::Chain, Some(roots)) => {
            let inner =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verify::AnyName(inner)))
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verify::Unverified(provider))),
    };
    Ok(Arc::new(config.with_no_client_auth()))
}

fn root_store(ca_file: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let pem_err = |msg: String| TlsError::Pem {
        path: ca_file.to_path_buf(),
        msg,
    };
    let pem = std::fs::read(ca_file).map_err(|source| TlsError::Read {
        path: ca_file.to_path_buf(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| pem_err(format!("not a PEM certificate: {e}")))?;
        roots.add(cert).map_err(|e| pem_err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(pem_err("holds no certificate".into()));
    }
    Ok(roots)
}

/// The two server certificate verifiers that rustls does not have: libpq's `require` (none) and `verify-ca`
/// (the chain without the name). Both still verify the handshake signatures, so the session is bound to the
/// key of the certificate presented.
mod verify {
    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};

    #[derive(Debug)]
    pub struct Unverified(pub Arc<CryptoProvider>);

    #[derive(Debug)]
    pub struct AnyName(pub Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for Unverified {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    impl ServerCertVerifier for AnyName {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            match self.0.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                // The chain verified; only the name did not match, which verify-ca does not ask for.
                Err(Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
}

fn stamp_of(cert_file: &Path, key_file: &Path) -> FileStamp {
    let one = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    };
    [one(cert_file), one(key_file)]
}

fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    check_owner_only(key_file)?;
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let pem_err = |path: &Path, msg: String| TlsError::Pem {
        path: path.to_path_buf(),
        msg,
    };
    let cert_pem = read(cert_file)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(cert_file, format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(pem_err(cert_file, "holds no certificate".into()));
    }
    let key_pem = read(key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| pem_err(key_file, format!("not a PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("server.key");
        std::fs::write(&key, "x").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = check_owner_only(&key).unwrap_err().to_string();
        assert!(err.contains("0640") && err.contains("server.key"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_owner_only(&key).is_ok());
    }

    #[test]
    fn garbage_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = TlsServer::load(&cert, &key).err().unwrap().to_string();
        assert!(err.contains("server.crt"), "{err}");
    }
}
