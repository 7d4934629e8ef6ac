//! Starts the pageserver's services and stops them: `run(config, shutdown)` binds every listener first (so a
//! bad address fails at once, before anything runs), serves until `shutdown` fires, then waits for each service.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::NodeConfig;
use crate::http;
use crate::page_service::{self, PageService};
use crate::repository::mgr::TenantManager;

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
    info!(
        workdir = %node.workdir.display(),
        http = %local_addr(&http_listener),
        pg = %local_addr(&pg_listener),
        node_id = config.id,
        "pageserver started"
    );
    let mgr = TenantManager::load(&node.workdir, config.clone()).await?;
    let state = Arc::new(http::ApiState {
        node_id: config.id,
        mgr: mgr.clone(),
    });
    let http_task = tokio::spawn(http::serve(http_listener, state, shutdown.clone()));
    let idle = config.page_service_idle_timeout.get();
    let page_service = PageService {
        mgr: mgr.clone(),
        wait_lsn_timeout: config.wait_lsn_timeout.get(),
        max_connections: config.page_service_max_connections,
        startup_timeout: config.page_service_startup_timeout.get(),
        idle_timeout: (!idle.is_zero()).then_some(idle),
    };
    let pg_task = tokio::spawn(page_service::serve(
        pg_listener,
        page_service,
        shutdown.clone(),
    ));

    shutdown.cancelled().await;
    info!("shutting down");
    http_task.await?;
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
