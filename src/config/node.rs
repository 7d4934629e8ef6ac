//! Settings of the pageserver node: listeners, timeouts, caches, logging, remote storage.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::tenant::TenantConfig;
use super::types::HumanDuration;

/// The whole of `pageserver.toml`. Defaults follow Neon's where Neon has the key (Neon's
/// `libs/pageserver_api/src/config.rs`); every key and its default is in `pageserver.toml.example`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Node id, reported by `GET /v1/status`.
    pub id: u64,
    /// Address of the libpq page service (GetPage@LSN, basebackup).
    pub listen_pg_addr: String,
    /// Address of the HTTP management API.
    pub listen_http_addr: String,
    /// Longest time a request waits for WAL up to the LSN it asks for.
    pub wait_lsn_timeout: HumanDuration,
    /// Longest time one WAL redo request may take before its process is killed.
    pub wal_redo_timeout: HumanDuration,
    /// Pages (8 KiB each) in the shared page cache.
    pub page_cache_size: usize,
    /// Most page service connections open at once; one more is refused with SQLSTATE 53300.
    pub page_service_max_connections: usize,
    /// Time a page service client has to send its startup packet; then the connection is closed.
    pub page_service_startup_timeout: HumanDuration,
    /// A page service connection that sends nothing for this long is closed; "0s": never.
    pub page_service_idle_timeout: HumanDuration,
    /// Time an HTTP client has to send a request's headers; then the connection is closed.
    pub http_header_read_timeout: HumanDuration,
    /// Largest `import_basebackup` body accepted, in bytes; a larger one is refused with 413.
    pub import_max_bytes: u64,
    /// Superuser that initdb creates for timelines bootstrapped here.
    pub superuser: String,
    /// Locale that initdb uses for timelines bootstrapped here.
    pub locale: String,
    /// Log line format: "plain" or "json". The level comes from RUST_LOG (default "info").
    pub log_format: LogFormat,
    /// The walredo bundle (`walredo-bundle/build.sh` prints it): `<dir>/v15/bin/postgres` and its libraries.
    pub pg_distrib_dir: PathBuf,
    /// Unprivileged user that runs the `postgres --wal-redo` children when the pageserver runs as root.
    pub walredo_user: String,
    /// Authentication of the page service. Only "Trust" exists so far.
    pub pg_auth_type: AuthType,
    /// Authentication of the HTTP API. Only "Trust" exists so far.
    pub http_auth_type: AuthType,
    /// Where layer files, indexes and the WAL archive are uploaded; none when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_storage: Option<RemoteStorageConfig>,
    /// Defaults for every tenant; a tenant may override them.
    pub tenant_config: TenantConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: 1,
            listen_pg_addr: "127.0.0.1:64000".to_string(),
            listen_http_addr: "127.0.0.1:9898".to_string(),
            wait_lsn_timeout: HumanDuration::from_secs(300),
            wal_redo_timeout: HumanDuration::from_secs(60),
            page_cache_size: 8192,
            page_service_max_connections: 1000,
            page_service_startup_timeout: HumanDuration::from_secs(10),
            page_service_idle_timeout: HumanDuration::from_secs(3600),
            http_header_read_timeout: HumanDuration::from_secs(10),
            import_max_bytes: 64 << 30,
            superuser: "cloud_admin".to_string(),
            locale: "C.UTF-8".to_string(),
            log_format: LogFormat::Plain,
            pg_distrib_dir: PathBuf::from("/var/cache/pageserver/walredo-bundle/current"),
            walredo_user: "nobody".to_string(),
            pg_auth_type: AuthType::Trust,
            http_auth_type: AuthType::Trust,
            remote_storage: None,
            tenant_config: TenantConfig::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthType {
    Trust,
}

/// Where remote storage lives; the kind is told by which of `local_path`, `bucket_name` or
/// `container_name` the table has (the same shapes as Neon's `remote_storage`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "toml::Table", into = "toml::Table")]
pub enum RemoteStorageConfig {
    LocalFs(LocalFsConfig),
    AwsS3(S3Config),
    AzureContainer(AzureConfig),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalFsConfig {
    pub local_path: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket_name: String,
    pub bucket_region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_in_bucket: Option<String>,
    /// An S3-compatible endpoint such as `http://127.0.0.1:5000`; AWS's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default = "default_concurrency_limit")]
    pub concurrency_limit: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    pub container_name: String,
    pub container_region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_in_container: Option<String>,
    /// A Blob service endpoint such as Azurite's `http://127.0.0.1:10000/devstoreaccount1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default = "default_concurrency_limit")]
    pub concurrency_limit: usize,
}

fn default_concurrency_limit() -> usize {
    100
}

impl TryFrom<toml::Table> for RemoteStorageConfig {
    type Error = String;

    fn try_from(table: toml::Table) -> Result<Self, String> {
        fn parse<T: serde::de::DeserializeOwned>(table: toml::Table) -> Result<T, String> {
            T::deserialize(toml::Value::Table(table)).map_err(|e| super::one_line(&e.to_string()))
        }
        if table.contains_key("local_path") {
            parse(table).map(RemoteStorageConfig::LocalFs)
        } else if table.contains_key("bucket_name") {
            parse(table).map(RemoteStorageConfig::AwsS3)
        } else if table.contains_key("container_name") {
            parse(table).map(RemoteStorageConfig::AzureContainer)
        } else {
            Err(
                "a table with one of `local_path`, `bucket_name` (S3) or `container_name` (Azure)"
                    .into(),
            )
        }
    }
}

impl From<RemoteStorageConfig> for toml::Table {
    fn from(config: RemoteStorageConfig) -> toml::Table {
        let value = match config {
            RemoteStorageConfig::LocalFs(c) => toml::Value::try_from(c),
            RemoteStorageConfig::AwsS3(c) => toml::Value::try_from(c),
            RemoteStorageConfig::AzureContainer(c) => toml::Value::try_from(c),
        };
        match value {
            Ok(toml::Value::Table(t)) => t,
            // Plain structs of strings and numbers always serialize to a table.
            _ => toml::Table::new(),
        }
    }
}

impl NodeConfig {
    /// Checks values that parse but make no sense; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, expected: &str| {
            Err(ConfigError::Invalid {
                key: key.to_string(),
                expected: expected.to_string(),
            })
        };
        for (key, addr) in [
            ("listen_pg_addr", &self.listen_pg_addr),
            ("listen_http_addr", &self.listen_http_addr),
        ] {
            if !is_host_port(addr) {
                return bad(
                    key,
                    "an address of the form host:port, such as 127.0.0.1:9898",
                );
            }
        }
        if self.wait_lsn_timeout.get().is_zero() {
            return bad("wait_lsn_timeout", "a duration greater than 0");
        }
        if self.wal_redo_timeout.get().is_zero() {
            return bad("wal_redo_timeout", "a duration greater than 0");
        }
        if self.page_cache_size == 0 {
            return bad("page_cache_size", "a page count greater than 0");
        }
        if self.page_service_max_connections == 0 {
            return bad("page_service_max_connections", "a count greater than 0");
        }
        if self.page_service_startup_timeout.get().is_zero() {
            return bad("page_service_startup_timeout", "a duration greater than 0");
        }
        if self.http_header_read_timeout.get().is_zero() {
            return bad("http_header_read_timeout", "a duration greater than 0");
        }
        if self.walredo_user.is_empty() || self.walredo_user == "root" {
            return bad("walredo_user", "the name of an unprivileged user");
        }
        if self.superuser.is_empty() {
            return bad("superuser", "a non-empty role name");
        }
        if let Some(RemoteStorageConfig::LocalFs(c)) = &self.remote_storage
            && !c.local_path.is_absolute()
        {
            return bad("remote_storage.local_path", "an absolute path");
        }
        self.tenant_config.validate("tenant_config.")
    }
}

fn is_host_port(addr: &str) -> bool {
    match addr.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}
