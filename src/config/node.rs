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
    /// How long a WAL redo request that is alone in flight on a lightly loaded node waits for its reply in its
    /// own thread, with the redo process moved to that thread's CPU (two wake-ups across CPUs cost more than
    /// a short redo on some machines); then the reply is left to the reader task. "0s": never.
    pub wal_redo_reply_wait: HumanDuration,
    /// Pages (8 KiB each) in the shared page cache.
    pub page_cache_size: usize,
    /// Bytes of layer index pages kept in memory, for all tenants (layer indexes are read on demand).
    pub layer_index_cache_size: u64,
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
    /// Authentication of the page service: "Trust" or "NeonJWT" (the token as the libpq password).
    pub pg_auth_type: AuthType,
    /// Authentication of the HTTP API: "Trust" or "NeonJWT" (`Authorization: Bearer <token>`).
    pub http_auth_type: AuthType,
    /// Ed25519 public key (PEM) or a directory of them that tokens are verified with; required when either
    /// auth type is NeonJWT. Relative paths are relative to the workdir.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_validation_public_key_path: Option<PathBuf>,
    /// Also serve the HTTP API over TLS on this address (the plain listener stays).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_https_addr: Option<String>,
    /// The page service takes TLS (SSLRequest) and refuses connections without it.
    pub enable_tls_page_service_api: bool,
    /// PEM certificate chain of the TLS listeners; relative to the workdir.
    pub ssl_cert_file: PathBuf,
    /// PEM private key of the TLS listeners; relative to the workdir; must be mode 0600 (owner only).
    pub ssl_key_file: PathBuf,
    /// How often the certificate and key files are checked for a change and reloaded.
    pub ssl_cert_reload_period: HumanDuration,
    /// Where layer files, indexes and the WAL archive are uploaded; none when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_storage: Option<RemoteStorageConfig>,
    /// With remote storage: most bytes of layer files kept on the local disk; beyond it the least recently
    /// read uploaded layers are evicted (and downloaded again when read). 0: no limit.
    pub disk_usage_max_bytes: u64,
    /// Tests only: this percentage of remote storage requests fails on purpose (503s, resets, timeouts,
    /// half of them after the request took effect). 0: off.
    pub test_remote_failures_probability: u8,
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
            wal_redo_reply_wait: HumanDuration::from_micros(100),
            page_cache_size: 8192,
            layer_index_cache_size: 64 << 20,
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
            auth_validation_public_key_path: None,
            listen_https_addr: None,
            enable_tls_page_service_api: false,
            ssl_cert_file: PathBuf::from("server.crt"),
            ssl_key_file: PathBuf::from("server.key"),
            ssl_cert_reload_period: HumanDuration::from_secs(60),
            remote_storage: None,
            disk_usage_max_bytes: 0,
            test_remote_failures_probability: 0,
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
    NeonJWT,
}

/// Where remote storage lives, and the request timeouts. The kind is told by which of `local_path`,
/// `bucket_name` or `container_name` the table has (the same shapes as Neon's `remote_storage`); `timeout`
/// and `small_timeout` go beside them in the same table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "toml::Table", into = "toml::Table")]
pub struct RemoteStorageConfig {
    pub storage: RemoteStorageKind,
    /// Longest time of one request that moves a large object (an upload or download of a layer).
    pub timeout: HumanDuration,
    /// Longest time of one small request: a listing page, a head, a delete, an object up to 1 MiB.
    pub small_timeout: HumanDuration,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RemoteStorageKind {
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
    /// Most requests in flight at once, per kind (reads, writes).
    #[serde(default = "default_concurrency_limit")]
    pub concurrency_limit: usize,
    /// Keys per listing page (S3's and the default: 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys_per_list_response: Option<u32>,
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
    /// Most requests in flight at once, per kind (reads, writes).
    #[serde(default = "default_concurrency_limit")]
    pub concurrency_limit: usize,
    /// Results per listing page (default 1000; Azure's most is 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys_per_list_response: Option<u32>,
}

fn default_concurrency_limit() -> usize {
    100
}

/// Neon's defaults for the request timeouts.
pub const DEFAULT_REMOTE_TIMEOUT: HumanDuration = HumanDuration::from_secs(120);
pub const DEFAULT_REMOTE_SMALL_TIMEOUT: HumanDuration = HumanDuration::from_secs(30);

impl TryFrom<toml::Table> for RemoteStorageConfig {
    type Error = String;

    fn try_from(mut table: toml::Table) -> Result<Self, String> {
        fn parse<T: serde::de::DeserializeOwned>(value: toml::Value) -> Result<T, String> {
            T::deserialize(value).map_err(|e| super::one_line(&e.to_string()))
        }
        let mut timeout_of = |key: &str, default: HumanDuration| -> Result<HumanDuration, String> {
            match table.remove(key) {
                Some(v) => parse(v).map_err(|e| format!("{key}: {e}")),
                None => Ok(default),
            }
        };
        let timeout = timeout_of("timeout", DEFAULT_REMOTE_TIMEOUT)?;
        let small_timeout = timeout_of("small_timeout", DEFAULT_REMOTE_SMALL_TIMEOUT)?;
        let storage = if table.contains_key("local_path") {
            parse(toml::Value::Table(table)).map(RemoteStorageKind::LocalFs)
        } else if table.contains_key("bucket_name") {
            parse(toml::Value::Table(table)).map(RemoteStorageKind::AwsS3)
        } else if table.contains_key("container_name") {
            parse(toml::Value::Table(table)).map(RemoteStorageKind::AzureContainer)
        } else {
            Err(
                "a table with one of `local_path`, `bucket_name` (S3) or `container_name` (Azure)"
                    .into(),
            )
        }?;
        Ok(RemoteStorageConfig {
            storage,
            timeout,
            small_timeout,
        })
    }
}

impl From<RemoteStorageConfig> for toml::Table {
    fn from(config: RemoteStorageConfig) -> toml::Table {
        let value = match config.storage {
            RemoteStorageKind::LocalFs(c) => toml::Value::try_from(c),
            RemoteStorageKind::AwsS3(c) => toml::Value::try_from(c),
            RemoteStorageKind::AzureContainer(c) => toml::Value::try_from(c),
        };
        let mut table = match value {
            Ok(toml::Value::Table(t)) => t,
            // Plain structs of strings and numbers always serialize to a table.
            _ => toml::Table::new(),
        };
        table.insert("timeout".into(), config.timeout.to_string().into());
        table.insert(
            "small_timeout".into(),
            config.small_timeout.to_string().into(),
        );
        table
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
        ]
        .into_iter()
        .chain(
            self.listen_https_addr
                .iter()
                .map(|a| ("listen_https_addr", a)),
        ) {
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
        if self.wal_redo_reply_wait.get() > std::time::Duration::from_millis(10) {
            return bad("wal_redo_reply_wait", "a duration of at most 10ms");
        }
        if self.page_cache_size == 0 {
            return bad("page_cache_size", "a page count greater than 0");
        }
        if self.layer_index_cache_size < 1 << 20 {
            return bad("layer_index_cache_size", "at least 1048576 bytes (1 MiB)");
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
        if (self.pg_auth_type == AuthType::NeonJWT || self.http_auth_type == AuthType::NeonJWT)
            && self.auth_validation_public_key_path.is_none()
        {
            return bad(
                "auth_validation_public_key_path",
                "a key file or directory, since an auth type is NeonJWT",
            );
        }
        if self.ssl_cert_reload_period.get().is_zero() {
            return bad("ssl_cert_reload_period", "a duration greater than 0");
        }
        if self.walredo_user.is_empty() || self.walredo_user == "root" {
            return bad("walredo_user", "the name of an unprivileged user");
        }
        if self.superuser.is_empty() {
            return bad("superuser", "a non-empty role name");
        }
        if let Some(rs) = &self.remote_storage {
            if let RemoteStorageKind::LocalFs(c) = &rs.storage
                && !c.local_path.is_absolute()
            {
                return bad("remote_storage.local_path", "an absolute path");
            }
            if rs.timeout.get().is_zero() {
                return bad("remote_storage.timeout", "a duration greater than 0");
            }
            if rs.small_timeout.get().is_zero() {
                return bad("remote_storage.small_timeout", "a duration greater than 0");
            }
        }
        if self.test_remote_failures_probability > 100 {
            return bad(
                "test_remote_failures_probability",
                "a percentage from 0 to 100",
            );
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
