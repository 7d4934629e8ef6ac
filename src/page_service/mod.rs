//! The page service: a libpq server on `listen_pg_addr`, wire-compatible with Neon's for reads
//! (docs/protocols.md). A task per connection; simple query only. With `enable_tls_page_service_api` an
//! SSLRequest is answered 'S' and a connection without TLS is refused (SQLSTATE 28000); otherwise 'N'. With
//! `pg_auth_type = "NeonJWT"` the client's password is its JWT (crate::auth): verified after the startup
//! packet (SQLSTATE 28P01 when it fails), then checked against the tenant of every command before the tenant
//! is looked up (SQLSTATE 42501). Commands:
//! `pagestream_v2|pagestream_v3 <tenant> <timeline>` (a CopyBoth session of page requests, `pagestream.rs`),
//! `basebackup` and `fullbackup` (a tar over CopyOut, `basebackup.rs`), `set ...` (accepted and ignored);
//! anything else is an ErrorResponse naming it.
//!
//! Pipelined pagestream requests are answered in order, in batches: every request already buffered when the
//! first is read is served before the answers are flushed together. A read error (a missing relation, a GC'd
//! LSN, a timeout waiting for WAL) is an Error response and the session goes on; a malformed request or an
//! unexpected message ends the connection with an ErrorResponse.

pub mod basebackup;
pub mod client;
pub mod pagestream;
pub mod pq;
mod request;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::auth::{Claims, JwtAuth, check_permission};
use crate::id::{TenantId, TimelineId};
use crate::pg::Lsn;
use crate::repository::mgr::TenantManager;
use crate::repository::timeline::Timeline;
use crate::tls::TlsServer;
use pagestream::Version;
use pq::{FeMessage, PqError, PqReader, Secret, Startup, be};

/// Requests answered before one flush, at most.
const MAX_BATCH: usize = 64;

/// What the page service needs of the node.
#[derive(Clone)]
pub struct PageService {
    pub mgr: Arc<TenantManager>,
    pub wait_lsn_timeout: Duration,
    /// Connections open at once, at most; one more gets SQLSTATE 53300 and is closed.
    pub max_connections: usize,
    /// Time a client has to send its startup packet.
    pub startup_timeout: Duration,
    /// A connection that sends nothing for this long is closed (SQLSTATE 57P05); None: never.
    pub idle_timeout: Option<Duration>,
    /// `pg_auth_type = "NeonJWT"`: the keys that the token (sent as the password) is checked with.
    pub auth: Option<Arc<JwtAuth>>,
    /// `enable_tls_page_service_api`: TLS is offered on SSLRequest and required.
    pub tls: Option<Arc<TlsServer>>,
}

/// Refused connections answered at once, at most (each waits up to the startup timeout for the startup
/// packet, so that the client reads the error); more are closed without a word.
const MAX_REFUSING: usize = 64;

/// Accepts connections until `shutdown`; then ends every session (an ErrorResponse saying so) and waits for
/// them, at most a few seconds.
pub async fn serve(listener: TcpListener, service: PageService, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(service.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn!(%peer, max = service.max_connections, "page service connection refused: too many connections");
            if let Ok(r) = refusing.clone().try_acquire_owned() {
                tracker.spawn(refuse(stream, service.startup_timeout, r));
            }
            continue;
        };
        let service = service.clone();
        let cancel = shutdown.child_token();
        let span = info_span!("page_service", %peer);
        tracker.spawn(
            async move {
                let _permit = permit;
                match connection(stream, peer, service, cancel).await {
                    Ok(()) | Err(PqError::Closed) => debug!("connection closed"),
                    Err(e) => info!(error = %e, "connection ended"),
                }
            }
            .instrument(span),
        );
    }
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .is_err()
    {
        warn!("page service connections still open after 5 s; leaving them");
    }
}

/// Answers a connection over the limit as PostgreSQL does: its startup packet, then an ErrorResponse.
async fn refuse(stream: TcpStream, startup_timeout: Duration, _permit: OwnedSemaphorePermit) {
    let mut reader = PqReader::new(stream);
    let answered = tokio::time::timeout(startup_timeout, async {
        loop {
            match reader.startup().await? {
                Startup::Params(_) => return Ok::<_, PqError>(()),
                // No TLS for a connection that is refused anyway: the client may go on without it.
                Startup::SslRequest | Startup::GssEncRequest => decline(reader.get_mut()).await?,
            }
        }
    })
    .await;
    if let Ok(Ok(())) = answered {
        let mut out = BytesMut::new();
        be::error(
            &mut out,
            sqlstate::TOO_MANY_CONNECTIONS,
            "sorry, too many clients already (page_service_max_connections)",
        );
        let _ = pq::send(reader.get_mut(), &mut out).await;
    }
}

/// 'N': the encryption the client asked for is not offered.
async fn decline<W: AsyncWrite + Unpin>(w: &mut W) -> Result<(), PqError> {
    w.write_all(b"N").await?;
    w.flush().await?;
    Ok(())
}

/// Reads the next message, or Err(PqError::Idle) after `idle` without one.
async fn read_within<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut PqReader<R>,
    idle: Option<Duration>,
) -> Result<FeMessage, PqError> {
    match idle {
        Some(d) => tokio::time::timeout(d, reader.read())
            .await
            .unwrap_or(Err(PqError::Idle(d))),
        None => reader.read().await,
    }
}

fn idle_error(out: &mut BytesMut, after: Duration) {
    be::error(
        out,
        sqlstate::IDLE_SESSION_TIMEOUT,
        &format!(
            "terminating connection after {after:?} without a message (page_service_idle_timeout)"
        ),
    );
}

/// SQLSTATEs of the errors we send.
mod sqlstate {
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const INVALID_PARAMETER: &str = "22023";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const INTERNAL: &str = "XX000";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    /// A timeline a recovery is writing into, or whose recovery failed.
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
}

async fn connection(
    stream: TcpStream,
    _peer: SocketAddr,
    service: PageService,
    cancel: CancellationToken,
) -> Result<(), PqError> {
    let _ = stream.set_nodelay(true);
    let deadline = Instant::now() + service.startup_timeout;
    let mut reader = PqReader::new(stream);
    loop {
        match before(deadline, "startup packet", reader.startup()).await? {
            Startup::Params(params) => {
                let (r, mut w) = {
                    let (stream, buf) = reader.into_parts();
                    let (r, w) = stream.into_split();
                    (PqReader::from_parts(r, buf), w)
                };
                if service.tls.is_some() {
                    let mut out = BytesMut::new();
                    be::error(
                        &mut out,
                        sqlstate::INVALID_AUTHORIZATION,
                        "the page service requires TLS (connect with sslmode=require)",
                    );
                    return pq::send(&mut w, &mut out).await;
                }
                return session(r, w, Some(params), deadline, service, cancel).await;
            }
            Startup::SslRequest if service.tls.is_some() => {
                let tls = service.tls.clone().expect("checked");
                reader.get_mut().write_all(b"S").await?;
                reader.get_mut().flush().await?;
                let stream = reader.into_inner()?;
                let stream = before(deadline, "TLS handshake", async {
                    Ok(tls.acceptor().accept(stream).await?)
                })
                .await?;
                let (r, w) = tokio::io::split(stream);
                return session(PqReader::new(r), w, None, deadline, service, cancel).await;
            }
            Startup::SslRequest | Startup::GssEncRequest => decline(reader.get_mut()).await?,
        }
    }
}

/// `fut`, or a Timeout error naming `what` at `deadline`.
async fn before<T>(
    deadline: Instant,
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, PqError>>,
) -> Result<T, PqError> {
    let after = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout_at(deadline, fut)
        .await
        .map_err(|_| PqError::Timeout { what, after })?
}

/// With `pg_auth_type = "NeonJWT"`: asks for the token as a cleartext password and verifies it (Neon's
/// computes send `$NEON_AUTH_TOKEN` there). None when refused; the ErrorResponse is then in `out`.
async fn authenticate<R: AsyncRead + Unpin>(
    jwt: &JwtAuth,
    reader: &mut PqReader<R>,
    deadline: Instant,
    out: &mut BytesMut,
) -> Result<Option<Claims>, PqError> {
    let msg = before(deadline, "password message", reader.read()).await?;
    let FeMessage::Password(Secret(token)) = msg else {
        be::error(
            out,
            sqlstate::PROTOCOL_VIOLATION,
            "expected a password message holding the JWT",
        );
        return Ok(None);
    };
    // A token is good for the page service if it allows something here: its own tenant, or everything.
    let checked = jwt
        .decode(&token)
        .and_then(|c| check_permission(&c, c.tenant_id).map(|()| c));
    match checked {
        Ok(claims) => Ok(Some(claims)),
        Err(e) => {
            warn!(error = %e, "page service authentication failed");
            be::error(out, sqlstate::INVALID_PASSWORD, &e.to_string());
            Ok(None)
        }
    }
}

/// A connection after its encryption is settled: the startup packet (if not read yet), authentication, then
/// queries until the client leaves.
async fn session<R, W>(
    mut reader: PqReader<R>,
    mut w: W,
    params: Option<Vec<(String, String)>>,
    deadline: Instant,
    service: PageService,
    cancel: CancellationToken,
) -> Result<(), PqError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let params = match params {
        Some(p) => p,
        None => match before(deadline, "startup packet", reader.startup()).await? {
            Startup::Params(p) => p,
            _ => {
                return Err(PqError::Protocol {
                    what: "startup packet",
                    detail: "an encryption request inside TLS".into(),
                });
            }
        },
    };
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    debug!(
        user = param("user").unwrap_or(""),
        application_name = param("application_name").unwrap_or(""),
        options = param("options").unwrap_or(""),
        "startup"
    );
    let mut out = BytesMut::with_capacity(64 * 1024);
    let claims = match &service.auth {
        Some(jwt) => {
            be::authentication_cleartext_password(&mut out);
            pq::send(&mut w, &mut out).await?;
            match authenticate(jwt, &mut reader, deadline, &mut out).await? {
                Some(claims) => Some(claims),
                None => return pq::send(&mut w, &mut out).await,
            }
        }
        None => None,
    };
    be::authentication_ok(&mut out);
    for (name, value) in [
        ("server_version", "15.18"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        be::parameter_status(&mut out, name, value);
    }
    be::backend_key_data(&mut out, std::process::id(), 0);
    be::ready_for_query(&mut out);
    pq::send(&mut w, &mut out).await?;

    loop {
        let msg = tokio::select! {
            m = read_within(&mut reader, service.idle_timeout) => match m {
                Err(PqError::Idle(after)) => {
                    idle_error(&mut out, after);
                    return pq::send(&mut w, &mut out).await;
                }
                m => m?,
            },
            _ = cancel.cancelled() => {
                be::error(&mut out, sqlstate::ADMIN_SHUTDOWN, "the pageserver is shutting down");
                return pq::send(&mut w, &mut out).await;
            }
        };
        match msg {
            FeMessage::Query(q) => {
                let keep_going = query(
                    &q,
                    &service,
                    claims.as_ref(),
                    &mut reader,
                    &mut w,
                    &mut out,
                    &cancel,
                )
                .await?;
                if !keep_going {
                    return Ok(());
                }
                be::ready_for_query(&mut out);
                pq::send(&mut w, &mut out).await?;
            }
            FeMessage::Terminate => return Ok(()),
            FeMessage::Sync => {
                be::ready_for_query(&mut out);
                pq::send(&mut w, &mut out).await?;
            }
            other => {
                let what = match other {
                    FeMessage::Other(tag) => format!("message {:?}", tag as char),
                    m => format!("{m:?} outside COPY"),
                };
                be::error(
                    &mut out,
                    sqlstate::PROTOCOL_VIOLATION,
                    &format!("unsupported {what}: only simple query is supported"),
                );
                return pq::send(&mut w, &mut out).await;
            }
        }
    }
}

/// Runs one simple query. Ok(false) when the connection is to end (the COPY session ended with the client's
/// Terminate or a protocol error already reported).
async fn query<R, W>(
    text: &str,
    service: &PageService,
    claims: Option<&Claims>,
    reader: &mut PqReader<R>,
    w: &mut W,
    out: &mut BytesMut,
    cancel: &CancellationToken,
) -> Result<bool, PqError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let text = text.trim().trim_end_matches(';');
    let (command, args) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let args: Vec<&str> = args.split_whitespace().collect();
    match command.to_ascii_lowercase().as_str() {
        "pagestream_v2" | "pagestream_v3" => {
            let version = if command.eq_ignore_ascii_case("pagestream_v2") {
                Version::V2
            } else {
                Version::V3
            };
            let [tenant, timeline] = args[..] else {
                be::error(
                    out,
                    sqlstate::INVALID_PARAMETER,
                    &format!("{command} takes <tenant_id> <timeline_id>"),
                );
                return Ok(true);
            };
            let Some(tl) = resolve_or_report(service, claims, tenant, timeline, out).await else {
                return Ok(true);
            };
            let span =
                info_span!("pagestream", tenant_id = %tl.tenant_id, timeline_id = %tl.timeline_id);
            pagestream(version, &tl, service, reader, w, out, cancel)
                .instrument(span)
                .await
        }
        "basebackup" | "fullbackup" => {
            let full = command.eq_ignore_ascii_case("fullbackup");
            let cmd = match basebackup::BackupCommand::parse(full, &args) {
                Ok(cmd) => cmd,
                Err(msg) => {
                    be::error(out, sqlstate::INVALID_PARAMETER, &msg);
                    return Ok(true);
                }
            };
            let Some(tl) =
                resolve_or_report(service, claims, &cmd.tenant, &cmd.timeline, out).await
            else {
                return Ok(true);
            };
            let span = info_span!("basebackup", tenant_id = %tl.tenant_id, timeline_id = %tl.timeline_id, full);
            basebackup::send(&cmd, &tl, service.wait_lsn_timeout, w, out)
                .instrument(span)
                .await?;
            Ok(true)
        }
        "set" => {
            be::command_complete(out, "SELECT 1");
            Ok(true)
        }
        _ => {
            be::error(
                out,
                sqlstate::FEATURE_NOT_SUPPORTED,
                &format!("unsupported command {command:?}"),
            );
            Ok(true)
        }
    }
}

/// The timeline named by the command's ids; else an ErrorResponse saying why not goes into `out`.
async fn resolve_or_report(
    service: &PageService,
    claims: Option<&Claims>,
    tenant: &str,
    timeline: &str,
    out: &mut BytesMut,
) -> Option<Arc<Timeline>> {
    match resolve(service, claims, tenant, timeline).await {
        Ok(tl) => Some(tl),
        Err((code, msg)) => {
            be::error(out, code, &msg);
            None
        }
    }
}

/// The timeline named by the command's ids, or the SQLSTATE and message of why not. With auth, the token
/// must allow the tenant before it is looked up.
async fn resolve(
    service: &PageService,
    claims: Option<&Claims>,
    tenant: &str,
    timeline: &str,
) -> Result<Arc<Timeline>, (&'static str, String)> {
    let bad = |what: &str, v: &str| {
        (
            sqlstate::INVALID_PARAMETER,
            format!("invalid {what} {v:?}: expected 32 hex digits"),
        )
    };
    let tenant_id: TenantId = tenant.parse().map_err(|_| bad("tenant id", tenant))?;
    let timeline_id: TimelineId = timeline.parse().map_err(|_| bad("timeline id", timeline))?;
    if let Some(claims) = claims {
        check_permission(claims, Some(tenant_id))
            .map_err(|e| (sqlstate::INSUFFICIENT_PRIVILEGE, e.to_string()))?;
    }
    let attached = service
        .mgr
        .get(tenant_id)
        .await
        .map_err(|e| (sqlstate::UNDEFINED_OBJECT, e.to_string()))?;
    let tl = attached
        .tenant
        .timeline(timeline_id)
        .map_err(|e| (sqlstate::UNDEFINED_OBJECT, e.to_string()))?;
    if let Some(why) = tl.not_serving() {
        return Err((sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE, why));
    }
    Ok(tl)
}

/// The CopyBoth session of `pagestream_vN`.
async fn pagestream<R, W>(
    version: Version,
    tl: &Arc<Timeline>,
    service: &PageService,
    reader: &mut PqReader<R>,
    w: &mut W,
    out: &mut BytesMut,
    cancel: &CancellationToken,
) -> Result<bool, PqError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    be::copy_both_response(out);
    pq::send(w, out).await?;
    loop {
        let first = tokio::select! {
            m = read_within(reader, service.idle_timeout) => match m {
                Err(PqError::Idle(after)) => {
                    idle_error(out, after);
                    pq::send(w, out).await?;
                    return Ok(false);
                }
                m => m,
            },
            _ = cancel.cancelled() => {
                be::error(out, sqlstate::ADMIN_SHUTDOWN, "the pageserver is shutting down");
                pq::send(w, out).await?;
                return Ok(false);
            }
            _ = tl.cancel.cancelled() => {
                be::error(out, sqlstate::ADMIN_SHUTDOWN, "the timeline is shutting down (detached or deleted)");
                pq::send(w, out).await?;
                return Ok(false);
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match reader.try_read() {
                Ok(Some(m)) => batch.push(Ok(m)),
                Ok(None) => break,
                Err(e) => {
                    batch.push(Err(e));
                    break;
                }
            }
        }
        let mut batch = batch.into_iter().peekable();
        let mut parts = VecDeque::new();
        loop {
            // The requests at the head of the batch are served concurrently (a read waiting for redo does
            // not hold up the others); the answers go out in request order.
            let mut requests = Vec::new();
            let mut malformed = None;
            while let Some(Ok(FeMessage::CopyData(data))) = batch.peek() {
                let parsed = pagestream::parse_request(version, data);
                batch.next();
                match parsed {
                    Ok(req) => requests.push(req),
                    Err(e) => {
                        malformed = Some(e);
                        break;
                    }
                }
            }
            let timeout = service.wait_lsn_timeout;
            match requests.as_slice() {
                [] => {}
                [req] => {
                    let resp = request::handle(tl, req, timeout).await;
                    answer(out, &mut parts, version, req, &resp);
                }
                many => {
                    let answers = futures::future::join_all(
                        many.iter().map(|r| request::handle(tl, r, timeout)),
                    )
                    .await;
                    for (req, resp) in many.iter().zip(&answers) {
                        answer(out, &mut parts, version, req, resp);
                    }
                }
            }
            let msg = match malformed {
                Some(e) => Err(e),
                None => match batch.next() {
                    Some(msg) => Ok(msg),
                    None => break,
                },
            };
            let end = match msg {
                Err(e) => {
                    be::error(
                        out,
                        sqlstate::PROTOCOL_VIOLATION,
                        &format!("malformed request: {e}"),
                    );
                    Some(false)
                }
                Ok(msg) => match msg {
                    // The client ends the session: with CopyDone the connection goes on.
                    Ok(FeMessage::CopyDone) => {
                        be::copy_done(out);
                        be::command_complete(out, "COPY 0");
                        Some(true)
                    }
                    Ok(FeMessage::Terminate) | Err(PqError::Closed) => Some(false),
                    Ok(other) => {
                        be::error(
                            out,
                            sqlstate::PROTOCOL_VIOLATION,
                            &format!("unexpected message {other:?} during COPY"),
                        );
                        Some(false)
                    }
                    Err(e) => {
                        be::error(out, sqlstate::PROTOCOL_VIOLATION, &e.to_string());
                        Some(false)
                    }
                },
            };
            if let Some(keep_going) = end {
                // Answers of earlier requests of the batch go out first.
                let _ = send_answers(w, out, &mut parts).await;
                return Ok(keep_going);
            }
        }
        send_answers(w, out, &mut parts).await?;
    }
}

/// Appends the answer to `req`: to `out`, except a GetPage's page, which goes to `parts` after what `out`
/// holds so far, to be sent from the page's own buffer (not copied into `out`).
fn answer(
    out: &mut BytesMut,
    parts: &mut VecDeque<Bytes>,
    version: Version,
    req: &pagestream::Request,
    resp: &pagestream::ResponseBody,
) {
    match pagestream::response_page(resp) {
        Some(page) => {
            be::copy_data_head(out, page.len(), |b| {
                pagestream::encode_response_header(version, req, resp, b)
            });
            parts.push_back(out.split().freeze());
            parts.push_back(page.clone());
        }
        None => be::copy_data_with(out, |b| pagestream::encode_response(version, req, resp, b)),
    }
}

/// Sends `parts`, then what `out` holds, with vectored writes; flushes.
async fn send_answers<W: AsyncWrite + Unpin>(
    w: &mut W,
    out: &mut BytesMut,
    parts: &mut VecDeque<Bytes>,
) -> Result<(), PqError> {
    if parts.is_empty() {
        return pq::send(w, out).await;
    }
    if !out.is_empty() {
        parts.push_back(out.split().freeze());
    }
    pq::send_parts(w, parts).await
}

/// A read at `lsn` that waited for WAL or hit the GC cutoff is explained in these words.
pub(crate) fn lsn_text(lsn: Lsn) -> String {
    if lsn.0 == u64::MAX {
        "latest".into()
    } else {
        lsn.to_string()
    }
}
