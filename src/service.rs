//! Starts the pageserver's services and stops them: `run(config, shutdown)` binds every listener first (so a
//! bad address fails at once, before anything runs), serves until `shutdown` fires, then waits for each service.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::auth::JwtAuth;
use crate::config::{AuthType, NodeConfig};
use crate::http;
use crate::page_service::{self, PageService};
use crate::repository::mgr::TenantManager;
use crate::tls::TlsServer;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot listen on {key} = {addr:?}: {source}")]
    Bind {
        key: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("service task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot load the tenants: {0}")]
    Tenants(#[from] crate::repository::mgr::MgrError),
    #[error("auth_validation_public_key_path: {0}")]
    AuthKeys(#[from] crate::auth::KeyError),
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("pg_distrib_dir: {0}")]
    Bundle(#[from] crate::walredo::bundle::BundleError),
}

/// The running node's fixed facts.
#[derive(Debug, Clone)]
pub struct Node {
    pub workdir: PathBuf,
    pub config: NodeConfig,
}

/// Runs every service until `shutdown` is cancelled, then stops them and returns.
pub async fn run(node: Node, shutdown: CancellationToken) -> Result<(), ServiceError> {
    let config = &node.config;
    let http_listener = bind("listen_http_addr", &config.listen_http_addr).await?;
    let pg_listener = bind("listen_pg_addr", &config.listen_pg_addr).await?;
    let https_listener = match &config.listen_https_addr {
        Some(addr) => Some(bind("listen_https_addr", addr).await?),
        None => None,
    };
    // Keys and certificates are checked before any tenant loads: a bad one stops the start at once.
    let jwt = match &config.auth_validation_public_key_path {
        Some(path) => Some(Arc::new(JwtAuth::load(&node.workdir.join(path))?)),
        None => None,
    };
    let tls = if https_listener.is_some() || config.enable_tls_page_service_api {
        let workdir = &node.workdir;
        let tls = TlsServer::load(
            &workdir.join(&config.ssl_cert_file),
            &workdir.join(&config.ssl_key_file),
        )?;
        tokio::spawn(
            tls.clone()
                .watch(config.ssl_cert_reload_period.get(), shutdown.clone()),
        );
        Some(tls)
    } else {
        None
    };
    // The walredo bundle, against its manifest: a bundle that differs stops the start, naming the file. One
    // that is not there is only reported: the node serves what needs no redo, and redo says what is missing.
    if config.pg_distrib_dir.exists() {
        let dir = config.pg_distrib_dir.clone();
        let verified =
            tokio::task::spawn_blocking(move || crate::walredo::bundle::verify(&dir)).await??;
        info!(bundle = %config.pg_distrib_dir.display(), files = verified.files, bytes = verified.bytes, "walredo bundle verified against its manifest");
    } else {
        tracing::warn!(bundle = %config.pg_distrib_dir.display(), "no walredo bundle at pg_distrib_dir: WAL redo will fail until one is there (walredo-bundle/build.sh)");
    }
    let uses_jwt = |t: AuthType| (t == AuthType::NeonJWT).then(|| jwt.clone()).flatten();
    info!(
        workdir = %node.workdir.display(),
        http = %local_addr(&http_listener),
        https = %https_listener.as_ref().map(local_addr).unwrap_or_default(),
        pg = %local_addr(&pg_listener),
        node_id = config.id,
        http_auth = ?config.http_auth_type,
        pg_auth = ?config.pg_auth_type,
        pg_tls = config.enable_tls_page_service_api,
        "pageserver started"
    );
    let mgr = TenantManager::load(&node.workdir, config.clone()).await?;
    let state = Arc::new(http::ApiState {
        node_id: config.id,
        pg_addr: local_addr(&pg_listener),
        mgr: mgr.clone(),
        jwt: jwt.clone(),
        http_auth: uses_jwt(config.http_auth_type),
    });
    let http_task = tokio::spawn(http::serve(
        http_listener,
        None,
        state.clone(),
        shutdown.clone(),
    ));
    let https_task =
        https_listener.map(|l| tokio::spawn(http::serve(l, tls.clone(), state, shutdown.clone())));
    let idle = config.page_service_idle_timeout.get();
    let page_service = PageService {
        mgr: mgr.clone(),
        wait_lsn_timeout: config.wait_lsn_timeout.get(),
        max_connections: config.page_service_max_connections,
        startup_timeout: config.page_service_startup_timeout.get(),
        idle_timeout: (!idle.is_zero()).then_some(idle),
        auth: uses_jwt(config.pg_auth_type),
        tls: tls.filter(|_| config.enable_tls_page_service_api),
    };
    let pg_task = tokio::spawn(page_service::serve(
        pg_listener,
        page_service,
        shutdown.clone(),
    ));

    shutdown.cancelled().await;
    info!("shutting down");
    http_task.await?;
    if let Some(t) = https_task {
        t.await?;
    }
    pg_task.await?;
    // Tenants flush what they hold in memory, so a restart does not stream it again.
    mgr.shutdown(Duration::from_millis(2500)).await;
    info!("shut down");
    Ok(())
}

async fn bind(key: &'static str, addr: &str) -> Result<TcpListener, ServiceError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServiceError::Bind {
            key,
            addr: addr.to_string(),
            source,
        })
}

fn local_addr(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}
