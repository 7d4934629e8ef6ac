//! The pageserver binary as a child process on free loopback ports with a temp workdir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

/// Path of the binary under test, built by cargo for integration tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pageserver"))
}

/// A running pageserver; killed on drop.
pub struct Pageserver {
    child: Option<Child>,
    workdir: TempDir,
    pub http_addr: String,
    pub pg_addr: String,
    log: PathBuf,
    /// Extra environment of the next starts (e.g. `PAGESERVER_FAILPOINT`).
    pub env: Vec<(String, String)>,
    /// A JWT sent as `Authorization: Bearer` with every request of the helpers (NeonJWT servers).
    pub token: Option<String>,
    /// Another distribution's root filesystem to run in (`tests/support/in_root.sh`), if any.
    root: Option<PathBuf>,
}

impl Pageserver {
    /// Starts a pageserver with a new workdir and waits until its HTTP API answers.
    pub fn start(overrides: &[&str]) -> Pageserver {
        Self::start_with_env(overrides, Vec::new())
    }

    /// [`start`](Self::start) with extra environment (e.g. remote storage credentials), kept for restarts.
    pub fn start_with_env(overrides: &[&str], env: Vec<(String, String)>) -> Pageserver {
        Self::start_where(overrides, env, None)
    }

    /// [`start`](Self::start) with `root` (another distribution's root filesystem) as the process's `/`:
    /// the binary, the walredo bundle and the workdir are mounted in at their own paths
    /// (`tests/support/in_root.sh`; needs root).
    pub fn start_in_root(root: &Path, overrides: &[&str]) -> Pageserver {
        Self::start_where(overrides, Vec::new(), Some(root.to_path_buf()))
    }

    fn start_where(
        overrides: &[&str],
        env: Vec<(String, String)>,
        root: Option<PathBuf>,
    ) -> Pageserver {
        let workdir = tempfile::Builder::new()
            .prefix("pageserver-test-")
            .tempdir()
            .expect("create workdir");
        let http_addr = format!("127.0.0.1:{}", super::free_port());
        let pg_addr = format!("127.0.0.1:{}", super::free_port());
        let log = workdir.path().join("pageserver.log");
        let mut server = Pageserver {
            child: None,
            workdir,
            http_addr,
            pg_addr,
            log,
            env,
            token: None,
            root,
        };
        // A port that was free when picked may be taken by a parallel test before the pageserver binds it:
        // then pick others.
        for _ in 0..10 {
            match server.try_spawn(overrides) {
                Ok(()) => return server,
                Err(log) if log.contains("Address already in use") => {
                    server.http_addr = format!("127.0.0.1:{}", super::free_port());
                    server.pg_addr = format!("127.0.0.1:{}", super::free_port());
                }
                Err(log) => panic!("{log}"),
            }
        }
        panic!("no free ports for the pageserver after 10 attempts")
    }

    /// Starts the process (again) on the same workdir and ports.
    pub fn spawn(&mut self, overrides: &[&str]) {
        if let Err(log) = self.try_spawn(overrides) {
            panic!("{log}");
        }
    }

    /// Starts the process; Err with the log if it exits before it is ready.
    fn try_spawn(&mut self, overrides: &[&str]) -> Result<(), String> {
        assert!(self.child.is_none(), "pageserver already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let mut cmd = match &self.root {
            None => Command::new(binary()),
            Some(root) => {
                let mut cmd = Command::new(
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/in_root.sh"),
                );
                cmd.arg(root).arg(binary()).arg(self.workdir.path());
                if let Ok(bundle) = std::env::var("PAGESERVER_WALREDO_BUNDLE") {
                    cmd.arg(std::fs::canonicalize(bundle).expect("the walredo bundle"));
                }
                cmd.arg("--").arg(binary());
                cmd
            }
        };
        cmd.arg("-D")
            .arg(self.workdir.path())
            .arg("-c")
            .arg(format!("listen_http_addr='{}'", self.http_addr))
            .arg("-c")
            .arg(format!("listen_pg_addr='{}'", self.pg_addr));
        // The walredo bundle that scripts/test.sh built, unless the test names another.
        if let Ok(bundle) = std::env::var("PAGESERVER_WALREDO_BUNDLE")
            && !overrides.iter().any(|o| o.starts_with("pg_distrib_dir"))
        {
            let bundle = match &self.root {
                // Inside the root the `current` link of the cache does not exist: the bundle's own path.
                Some(_) => std::fs::canonicalize(&bundle)
                    .expect("the walredo bundle")
                    .display()
                    .to_string(),
                None => bundle,
            };
            cmd.arg("-c").arg(format!("pg_distrib_dir='{bundle}'"));
        }
        for o in overrides {
            cmd.arg("-c").arg(o);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn pageserver"));
        self.wait_ready(Duration::from_secs(20))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = self.try_get("/v1/status") {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "pageserver exited with {status} before it was ready:\n{}",
                    self.log_text()
                ));
            }
            assert!(
                Instant::now() < deadline,
                "pageserver not ready after {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn workdir(&self) -> &Path {
        self.workdir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("pageserver not running").id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into()
    }

    /// GET `path`; returns the status and body text.
    pub fn try_get(&self, path: &str) -> Result<(u16, String), ureq::Error> {
        let mut response = Self::agent().get(&self.url(path)).call()?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string()?;
        Ok((status, body))
    }

    /// Any method with an optional JSON (or any) body; returns the status and body text.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.try_request(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log_text()))
    }

    /// Like [`request`](Self::request); Err when no answer comes (the connection failed or closed).
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), ureq::Error> {
        self.try_request_as(method, path, body, self.token.as_deref())
    }

    /// Like [`try_request`](Self::try_request) with `token` as the bearer token (None: no header).
    pub fn try_request_as(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> Result<(u16, String), ureq::Error> {
        fn auth<B>(r: ureq::RequestBuilder<B>, token: Option<&str>) -> ureq::RequestBuilder<B> {
            match token {
                Some(t) => r.header("Authorization", format!("Bearer {t}")),
                None => r,
            }
        }
        let agent = Self::agent();
        let url = self.url(path);
        let result = match (method, body) {
            ("GET", _) => auth(agent.get(&url), token).call(),
            ("DELETE", _) => auth(agent.delete(&url), token).call(),
            ("POST", b) => auth(agent.post(&url), token)
                .content_type("application/json")
                .send(b.unwrap_or("")),
            ("PUT", b) => auth(agent.put(&url), token)
                .content_type("application/json")
                .send(b.unwrap_or("")),
            ("PATCH", b) => auth(agent.patch(&url), token)
                .content_type("application/json")
                .send(b.unwrap_or("")),
            (m, _) => panic!("unsupported method {m}"),
        };
        let mut response = result?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        Ok((status, text))
    }

    /// Like [`request`](Self::request), parsing a JSON answer.
    pub fn json(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let (status, text) = self.request(method, path, body);
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: {status} {text:?} is not JSON: {e}"));
        (status, value)
    }

    /// Creates `tenant` (with the tenant config keys of `conf`, an object) and the timeline `timeline` that
    /// follows the primary at `connstr` through `slot` (the one-call API); panics unless both answer 201.
    pub fn follow(
        &self,
        tenant: &str,
        conf: serde_json::Value,
        timeline: &str,
        connstr: &str,
        slot: &str,
    ) -> serde_json::Value {
        let mut body = conf;
        body["new_tenant_id"] = tenant.into();
        let (s, created) = self.json("POST", "/v1/tenant", Some(&body.to_string()));
        assert_eq!(s, 201, "{created}");
        let follow = serde_json::json!({"new_timeline_id": timeline,
            "wal_source": {"connstr": connstr, "slot_name": slot}});
        let (s, info) = self.json(
            "POST",
            &format!("/v1/tenant/{tenant}/timeline"),
            Some(&follow.to_string()),
        );
        assert_eq!(s, 201, "{info}");
        info
    }

    /// The value of the unlabelled metric `name` in `/metrics` (0 if absent).
    pub fn metric(&self, name: &str) -> u64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Attaches `tenant` (`location_config` AttachedSingle, with `generation` if given); panics unless 200.
    pub fn attach(&self, tenant: &str, generation: Option<u32>) {
        let mut body = serde_json::json!({"mode": "AttachedSingle", "tenant_conf": {}});
        if let Some(g) = generation {
            body["generation"] = g.into();
        }
        let (s, answer) = self.json(
            "PUT",
            &format!("/v1/tenant/{tenant}/location_config"),
            Some(&body.to_string()),
        );
        assert_eq!(s, 200, "{answer}");
    }

    /// The tar of `fullbackup <tenant> <timeline> <lsn>` over the page service.
    pub fn fullbackup(&self, tenant: &str, timeline: &str, lsn: pageserver::pg::Lsn) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut c = pageserver::page_service::client::PageServiceClient::connect(&self.pg_addr)
                .await
                .expect("connect to the page service");
            c.backup(&format!("fullbackup {tenant} {timeline} {lsn}"))
                .await
                .expect("fullbackup")
        })
    }

    /// Creates tenant `tenant` with the default config; panics unless 201.
    pub fn create_tenant(&self, tenant: &str) {
        let body = serde_json::json!({ "new_tenant_id": tenant });
        let (s, answer) = self.json("POST", "/v1/tenant", Some(&body.to_string()));
        assert_eq!(s, 201, "{answer}");
    }

    /// Bootstraps timeline `timeline` of `tenant` with the bundle's initdb; panics unless 201. Returns its info.
    pub fn bootstrap(&self, tenant: &str, timeline: &str) -> serde_json::Value {
        let body = serde_json::json!({ "new_timeline_id": timeline });
        let (s, info) = self.json(
            "POST",
            &format!("/v1/tenant/{tenant}/timeline"),
            Some(&body.to_string()),
        );
        assert_eq!(s, 201, "{info}");
        info
    }

    /// `PUT .../checkpoint` of a timeline (its in-memory layer flushed to a layer file); panics unless 200.
    pub fn checkpoint(&self, tenant: &str, timeline: &str) {
        let (s, answer) = self.json(
            "PUT",
            &format!("/v1/tenant/{tenant}/timeline/{timeline}/checkpoint"),
            None,
        );
        assert_eq!(s, 200, "{answer}");
    }

    /// The status and length of the first page of pg_class in database `postgres` (5) as the debug route
    /// `getpage` answers it: (200, 8192) for any timeline made from initdb.
    pub fn pg_class_page(&self, tenant: &str, timeline: &str) -> (u16, usize) {
        let key = pageserver::repository::Key::rel_block(
            pageserver::pg::RelFileNode {
                spc: 1663,
                db: 5,
                rel: 1259,
            },
            0,
            0,
        );
        let (s, page) = self.get_bytes(&format!(
            "/v1/tenant/{tenant}/timeline/{timeline}/getpage?key={key}"
        ));
        (s, page.len())
    }

    /// PUT import_basebackup of `tar` (a `pg_basebackup -Ft -X none` tar) as timeline `timeline` of
    /// `tenant`, from `base` to `end`; panics unless 201.
    pub fn import_basebackup(
        &self,
        tenant: &str,
        timeline: &str,
        tar: &[u8],
        base: pageserver::pg::Lsn,
        end: pageserver::pg::Lsn,
    ) {
        let (status, body) = self.try_import_basebackup(tenant, timeline, tar, (base, end), 15);
        assert_eq!(status, 201, "{tenant}/{timeline}: {body}");
    }

    /// PUT import_basebackup of `tar` as a PostgreSQL `pg_version` timeline over the LSN range `lsns`
    /// (base, end): the status and body.
    pub fn try_import_basebackup(
        &self,
        tenant: &str,
        timeline: &str,
        tar: &[u8],
        (base, end): (pageserver::pg::Lsn, pageserver::pg::Lsn),
        pg_version: u32,
    ) -> (u16, String) {
        let url = format!(
            "http://{}/v1/tenant/{tenant}/timeline/{timeline}/import_basebackup?base_lsn={base}&end_lsn={end}&pg_version={pg_version}",
            self.http_addr
        );
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .put(&url)
            .content_type("application/x-tar")
            .send(tar)
            .unwrap();
        let body = r.body_mut().read_to_string().unwrap();
        (r.status().as_u16(), body)
    }

    /// `PUT .../wal_source` with `source` (`{"connstr", "slot_name"}` or null); panics unless 200.
    pub fn set_wal_source(&self, tenant: &str, timeline: &str, source: serde_json::Value) {
        let (s, body) = self.json(
            "PUT",
            &format!("/v1/tenant/{tenant}/timeline/{timeline}/wal_source"),
            Some(&source.to_string()),
        );
        assert_eq!(s, 200, "{body}");
    }

    /// Polls timeline detail until last_record_lsn reaches `lsn` (at most 120 s); returns the detail.
    pub fn wait_ingested(
        &self,
        tenant: &str,
        timeline: &str,
        lsn: pageserver::pg::Lsn,
    ) -> serde_json::Value {
        self.wait_lsn_field(tenant, timeline, "last_record_lsn", lsn)
    }

    /// Polls timeline detail until remote_consistent_lsn (the newest index in remote storage) reaches `lsn`
    /// (at most 120 s); returns the detail.
    pub fn wait_remote(
        &self,
        tenant: &str,
        timeline: &str,
        lsn: pageserver::pg::Lsn,
    ) -> serde_json::Value {
        self.wait_lsn_field(tenant, timeline, "remote_consistent_lsn", lsn)
    }

    /// Polls timeline detail until its LSN `field` reaches `lsn` (at most 120 s); returns the detail.
    pub fn wait_lsn_field(
        &self,
        tenant: &str,
        timeline: &str,
        field: &str,
        lsn: pageserver::pg::Lsn,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (_, info) = self.json(
                "GET",
                &format!("/v1/tenant/{tenant}/timeline/{timeline}"),
                None,
            );
            if lsn_field(&info, field) >= lsn {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "{field} stuck before {lsn}: {info}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET with a binary answer.
    pub fn get_bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let mut response = Self::agent()
            .get(&self.url(path))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log_text()));
        let status = response.status().as_u16();
        let bytes = response.body_mut().read_to_vec().unwrap_or_default();
        (status, bytes)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log_text()))
    }

    /// Sends `signal` and waits up to `timeout` for the process to exit.
    pub fn signal_and_wait(&mut self, signal: Signal, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take().expect("pageserver not running");
        kill(Pid::from_raw(child.id() as i32), signal).expect("send signal");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait for pageserver") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`, as a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The LSN `field` of a timeline detail (0/0 when it is null or missing).
pub fn lsn_field(info: &serde_json::Value, field: &str) -> pageserver::pg::Lsn {
    info[field].as_str().unwrap_or("0/0").parse().unwrap()
}

impl Drop for Pageserver {
    fn drop(&mut self) {
        self.kill9();
    }
}
