//! The HTTP/1.1 listener, plain or TLS (`listen_https_addr`): a task per connection; on shutdown, connections
//! finish their request and close.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use super::error::ApiError;
use super::routes::{self, ApiState, RequestContext};
use crate::tls::TlsServer;

/// How long open connections get to finish after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves the API on `listener` (over TLS when `tls` is given) until `cancel` fires.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<TlsServer>>,
    state: Arc<ApiState>,
    cancel: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        let cancel = cancel.clone();
        let header_timeout = state.mgr.node().http_header_read_timeout.get();
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        connections.spawn(
            async move {
                match acceptor {
                    None => connection(stream, state, header_timeout, cancel).await,
                    Some(acceptor) => {
                        // The handshake gets the time the headers get.
                        match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(tls_stream)) => {
                                connection(tls_stream, state, header_timeout, cancel).await
                            }
                            Ok(Err(e)) => info!(error = %e, "tls handshake failed"),
                            Err(_) => info!("tls handshake timed out"),
                        }
                    }
                }
            }
            .instrument(info_span!("http_conn", %peer)),
        );
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        warn!("http connections still open after shutdown grace; closing them");
    }
}

/// One connection: requests until the client closes it or shutdown.
async fn connection<S>(
    stream: S,
    state: Arc<ApiState>,
    header_timeout: Duration,
    cancel: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(state.clone(), req));
    // A client that opens a connection and never completes its headers is dropped, so that idle sockets
    // cannot pile up.
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        info!(error = %e, "http connection ended with an error");
    }
}

async fn handle(
    state: Arc<ApiState>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let result = match routes::find(&method, &path) {
        Ok(Some((route, params))) => {
            match super::auth::authorize(&state, route, &params, request.headers()) {
                Ok(claims) => {
                    let ctx = RequestContext::new(state, params, request, claims);
                    (route.handler)(ctx).await
                }
                Err(e) => Err(e),
            }
        }
        Ok(None) => Err(ApiError::NotFound(format!("no route for {method} {path}"))),
        Err(e) => Err(e),
    };
    Ok(result.unwrap_or_else(ApiError::into_response))
}
