//! A throwaway PostgreSQL cluster: 15 from Debian's `postgresql-15` package, 18 built from Debian's
//! `postgresql-18` source by `scripts/postgres-build.sh 18` (scripts/test.sh runs it).
//!
//! PostgreSQL refuses to run as root: when the tests run as root, initdb and the server run as the
//! `postgres` user (or `$PAGESERVER_TEST_PG_USER`), on a temp directory that user owns. Clients (psql,
//! pgbench, pg_basebackup) run as the test's own user over TCP on a free loopback port, with trust auth.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::unistd::{Uid, User, chown};
use tempfile::TempDir;

/// Where the PostgreSQL 15 binaries are; `$PG_BIN` overrides.
pub fn pg_bin_dir() -> PathBuf {
    pg_bin_dir_of(15)
}

/// Where the binaries of PostgreSQL `major` are: 15 at `$PG_BIN` or Debian's package; 18 at
/// `$PAGESERVER_PG18` or `<cache>/postgresql/18` (`scripts/postgres-build.sh 18`), `bin/` of it.
pub fn pg_bin_dir_of(major: u32) -> PathBuf {
    let dir = match major {
        15 => PathBuf::from(
            std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".to_string()),
        ),
        18 => {
            let install = std::env::var("PAGESERVER_PG18").unwrap_or_else(|_| {
                let cache = std::env::var("PAGESERVER_CACHE_DIR")
                    .unwrap_or_else(|_| "/var/cache/pageserver".to_string());
                format!("{cache}/postgresql/18")
            });
            PathBuf::from(install).join("bin")
        }
        other => panic!("no PostgreSQL {other} in the test bed"),
    };
    assert!(
        dir.join("postgres").exists(),
        "PostgreSQL {major} is not installed at {} (15: apt-get install postgresql-15, or set PG_BIN; \
         18: scripts/postgres-build.sh 18, or set PAGESERVER_PG18); scripts/test.sh installs both",
        dir.display()
    );
    dir
}

/// Settings for a new cluster; `Default` gives a primary ready for physical replication.
#[derive(Clone, Debug, Default)]
pub struct PgOptions {
    /// Extra lines for postgresql.conf.
    pub extra_conf: Vec<String>,
}

pub struct PgCluster {
    dir: TempDir,
    data: PathBuf,
    port: u16,
    bin: PathBuf,
    run_as: Option<User>,
    running: bool,
}

impl PgCluster {
    /// initdb, configure and start a PostgreSQL 15 cluster; panics with the server log if it does not come
    /// up.
    pub fn start(options: PgOptions) -> PgCluster {
        Self::start_version(15, options)
    }

    /// As [`start`](Self::start), with PostgreSQL `major` (15 or 18).
    pub fn start_version(major: u32, options: PgOptions) -> PgCluster {
        let bin = pg_bin_dir_of(major);
        let run_as = server_user();
        let dir = tempfile::Builder::new()
            .prefix("pgtest-")
            .tempdir_in("/tmp")
            .expect("create temp dir");
        if let Some(user) = &run_as {
            chown(dir.path(), Some(user.uid), Some(user.gid)).expect("chown test dir");
        }
        let data = dir.path().join("data");
        let port = super::free_port();
        let mut cluster = PgCluster {
            dir,
            data,
            port,
            bin,
            run_as,
            running: false,
        };
        cluster.initdb();
        cluster.write_conf(&options);
        cluster.pg_ctl_start();
        cluster
    }

    /// A streaming standby of this cluster, not started yet (start it with [`restart`](Self::restart)):
    /// `pg_basebackup -X none -R` with a new physical slot `slot` that keeps the WAL from the backup's start,
    /// its own port and socket directory, and `extra_conf` appended.
    pub fn standby(&self, slot: &str, extra_conf: &[&str]) -> PgCluster {
        let dir = tempfile::Builder::new()
            .prefix("pgstandby-")
            .tempdir_in("/tmp")
            .expect("create temp dir");
        if let Some(user) = &self.run_as {
            chown(dir.path(), Some(user.uid), Some(user.gid)).expect("chown standby dir");
        }
        self.create_physical_slot(slot);
        let standby = PgCluster {
            data: dir.path().join("data"),
            dir,
            port: super::free_port(),
            bin: self.bin.clone(),
            run_as: self.run_as.clone(),
            running: false,
        };
        let mut cmd = standby.server_command("pg_basebackup");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
        ])
        .args(["-X", "none", "-R", "--no-sync", "--checkpoint=fast", "-D"])
        .arg(&standby.data);
        run_ok(&mut cmd, "pg_basebackup for a standby");
        let mut conf = format!(
            "\n# standby\nport = {}\nunix_socket_directories = '{}'\nprimary_slot_name = '{slot}'\n",
            standby.port,
            standby.dir.path().display()
        );
        for line in extra_conf {
            conf.push_str(line);
            conf.push('\n');
        }
        let path = standby.data.join("postgresql.conf");
        let mut text = fs::read_to_string(&path).expect("read standby postgresql.conf");
        text.push_str(&conf);
        fs::write(&path, text).expect("write standby postgresql.conf");
        standby
    }

    /// A cluster from a data directory in a tar (a fullbackup), started with its own port and socket
    /// directory: the test of "plain PostgreSQL boots on it with no extra steps". Panics with the server log
    /// if it does not come up.
    pub fn start_from_tar(tar: &[u8]) -> PgCluster {
        let dir = Self::data_dir_home();
        tar::Archive::new(tar)
            .unpack(dir.path().join("data"))
            .expect("unpack the tar");
        Self::start_on(dir)
    }

    /// A temporary directory for a data directory that the test writes at `<dir>/data`, then starts with
    /// [`start_on`](Self::start_on).
    pub fn data_dir_home() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("pgfull-")
            .tempdir_in("/tmp")
            .expect("create temp dir")
    }

    /// Plain PostgreSQL on the data directory `<dir>/data` (made by a backup or a restore): owned by the
    /// server user, mode 0700, on a free port.
    pub fn start_on(dir: tempfile::TempDir) -> PgCluster {
        let data = dir.path().join("data");
        let version = fs::read_to_string(data.join("PG_VERSION")).expect("read PG_VERSION");
        let major: u32 = version
            .trim()
            .parse()
            .expect("PG_VERSION holds a major version");
        let run_as = server_user();
        let mut paths = vec![dir.path().to_path_buf()];
        while let Some(p) = paths.pop() {
            if let Some(user) = &run_as {
                chown(&p, Some(user.uid), Some(user.gid)).expect("chown");
            }
            if p.is_dir() {
                for e in fs::read_dir(&p).expect("read dir") {
                    paths.push(e.expect("dir entry").path());
                }
            }
        }
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).expect("chmod data dir");
        let mut cluster = PgCluster {
            data,
            port: super::free_port(),
            bin: pg_bin_dir_of(major),
            run_as,
            running: false,
            dir,
        };
        let conf = format!(
            "\n# test bed\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n",
            cluster.port,
            cluster.dir.path().display()
        );
        let path = cluster.data.join("postgresql.conf");
        let mut text = fs::read_to_string(&path).expect("the backup has a postgresql.conf");
        text.push_str(&conf);
        fs::write(&path, text).expect("write postgresql.conf");
        cluster.pg_ctl_start();
        cluster
    }

    fn server_command(&self, program: &str) -> Command {
        self.command_as_server_user(&self.bin.join(program).to_string_lossy())
    }

    fn initdb(&self) {
        let mut cmd = self.server_command("initdb");
        cmd.args([
            "--auth=trust",
            "--username=postgres",
            "--encoding=UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&self.data);
        run_ok(&mut cmd, "initdb");
    }

    fn write_conf(&self, options: &PgOptions) {
        let mut conf = format!(
            "\n# pageserver test bed\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{dir}'\nwal_level = replica\nmax_wal_senders = 10\n\
             max_replication_slots = 10\nfsync = off\nlogging_collector = off\n",
            port = self.port,
            dir = self.dir.path().display(),
        );
        for line in &options.extra_conf {
            conf.push_str(line);
            conf.push('\n');
        }
        let path = self.data.join("postgresql.conf");
        let mut text = fs::read_to_string(&path).expect("read postgresql.conf");
        text.push_str(&conf);
        fs::write(&path, text).expect("write postgresql.conf");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn pg_ctl_start(&mut self) {
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("-D").arg(&self.data).arg("-l").arg(self.log_path());
        cmd.args(["-w", "-t", "60", "start"]);
        let out = cmd.output().expect("spawn pg_ctl");
        if !out.status.success() {
            panic!(
                "pg_ctl start failed: {}\n--- server log ---\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            );
        }
        self.running = true;
    }

    /// The whole server log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The cluster's own directory (the data directory's parent, the socket directory), owned by the server
    /// user.
    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// `program` (from PATH, or a path) run as the server's user, in the cluster's directory: for tools that
    /// work on the server's files, such as pgBackRest.
    pub fn command_as_server_user(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.dir.path());
        cmd.env("LC_ALL", "C.UTF-8");
        if let Some(user) = &self.run_as {
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
            cmd.env("HOME", self.dir.path());
        }
        cmd
    }

    /// The end of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// A libpq connection string for `dbname`.
    pub fn connstr(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname}",
            self.port
        )
    }

    pub fn client_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    /// Runs SQL in `dbname` with psql; returns unaligned, tuples-only output (`|` between columns).
    pub fn try_sql(&self, dbname: &str, sql: &str) -> Result<String, String> {
        let out = self
            .client_command("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                dbname,
                "-c",
                sql,
            ])
            .output()
            .map_err(|e| format!("spawn psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Starts psql on `sql` in the background (for concurrent sessions); wait on the child.
    pub fn spawn_sql(&self, dbname: &str, sql: &str) -> std::process::Child {
        self.client_command("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                dbname,
                "-c",
                sql,
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn psql")
    }

    /// Like [`try_sql`](Self::try_sql) on database `postgres`; panics on error.
    pub fn sql(&self, sql: &str) -> String {
        self.sql_in("postgres", sql)
    }

    pub fn sql_in(&self, dbname: &str, sql: &str) -> String {
        self.try_sql(dbname, sql)
            .unwrap_or_else(|e| panic!("SQL failed in {dbname}: {sql}\n{e}"))
    }

    /// `SELECT pg_current_wal_lsn()` as PostgreSQL prints it.
    pub fn current_lsn(&self) -> String {
        self.sql("SELECT pg_current_wal_lsn()")
    }

    /// Creates a physical replication slot that keeps WAL from now on.
    pub fn create_physical_slot(&self, name: &str) {
        self.sql(&format!(
            "SELECT pg_create_physical_replication_slot('{name}', true)"
        ));
    }

    /// `pgbench -i -s <scale>` in `dbname`.
    pub fn pgbench_init(&self, dbname: &str, scale: u32) {
        let mut cmd = self.client_command("pgbench");
        cmd.args(["-i", "-q", "-s", &scale.to_string(), dbname]);
        run_ok(&mut cmd, "pgbench -i");
    }

    /// `pgbench <args> <dbname>`; returns its stdout.
    pub fn pgbench(&self, dbname: &str, args: &[&str]) -> String {
        let mut cmd = self.client_command("pgbench");
        cmd.args(args).arg(dbname);
        let out = run_ok(&mut cmd, "pgbench");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `pg_basebackup -Ft -X none` into `dest` (created); returns the path of `base.tar`.
    pub fn basebackup_tar(&self, dest: &Path) -> PathBuf {
        let mut cmd = self.client_command("pg_basebackup");
        cmd.args(["-Ft", "-X", "none", "--no-sync", "--checkpoint=fast", "-D"])
            .arg(dest);
        run_ok(&mut cmd, "pg_basebackup");
        dest.join("base.tar")
    }

    /// Fast shutdown (checkpoint, then stop); waits for it.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "60", "stop"]);
        run_ok(&mut cmd, "pg_ctl stop");
        self.running = false;
    }

    /// Immediate shutdown: every server process exits at once, as in a crash (the next start runs crash
    /// recovery).
    pub fn crash(&mut self) {
        if !self.running {
            return;
        }
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "60", "stop"]);
        run_ok(&mut cmd, "pg_ctl stop -m immediate");
        self.running = false;
    }

    /// Starts a stopped cluster again.
    pub fn restart(&mut self) {
        self.stop();
        self.pg_ctl_start();
    }

    /// Turns TLS on with this certificate and key (copied into the cluster's directory, owned by its user) and
    /// refuses every connection without TLS (`hostnossl ... reject` first in pg_hba.conf), then restarts.
    pub fn enable_tls(&mut self, cert: &Path, key: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let mut conf = String::from("\n# tls\nssl = on\n");
        for (src, name, key_) in [
            (cert, "server.crt", "ssl_cert_file"),
            (key, "server.key", "ssl_key_file"),
        ] {
            let dst = self.dir.path().join(name);
            fs::copy(src, &dst).expect("copy tls file");
            fs::set_permissions(&dst, fs::Permissions::from_mode(0o600)).expect("chmod tls file");
            if let Some(user) = &self.run_as {
                chown(&dst, Some(user.uid), Some(user.gid)).expect("chown tls file");
            }
            conf.push_str(&format!("{key_} = '{}'\n", dst.display()));
        }
        let path = self.data.join("postgresql.conf");
        let text = fs::read_to_string(&path).expect("read postgresql.conf");
        fs::write(&path, text + &conf).expect("write postgresql.conf");
        let hba = self.data.join("pg_hba.conf");
        let old = fs::read_to_string(&hba).expect("read pg_hba.conf");
        fs::write(
            &hba,
            format!("hostnossl all all all reject\nhostnossl replication all all reject\n{old}"),
        )
        .expect("write pg_hba.conf");
        self.restart();
    }

    /// The directory holding the WAL segments.
    pub fn wal_dir(&self) -> PathBuf {
        self.data.join("pg_wal")
    }

    /// A `pg_controldata` field, e.g. "Latest checkpoint location".
    pub fn controldata(&self, field: &str) -> String {
        let out = run_ok(
            Command::new(self.bin.join("pg_controldata"))
                .arg("-D")
                .arg(&self.data),
            "pg_controldata",
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{field}:"))
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("pg_controldata has no {field:?}:\n{text}"))
    }

    /// Path of a program of the cluster's PostgreSQL, such as pg_waldump.
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    pub fn is_running(&self) -> bool {
        self.running
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        let status = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "10", "stop"])
            .output();
        if status.map(|o| o.status.success()).unwrap_or(false) {
            return;
        }
        // pg_ctl could not stop it: kill the postmaster, whose children exit when it is gone.
        if let Some(pid) = fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && Path::new(&format!("/proc/{pid}")).exists() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Gives `path` (a directory the test made) to the server's user, for files the server or its tools write.
pub fn chown_to_server_user(path: &Path) {
    if let Some(user) = server_user() {
        chown(path, Some(user.uid), Some(user.gid)).expect("chown to the server user");
    }
}

/// The unprivileged user that runs the server when the tests run as root.
fn server_user() -> Option<User> {
    if !Uid::effective().is_root() {
        return None;
    }
    let name = std::env::var("PAGESERVER_TEST_PG_USER").unwrap_or_else(|_| "postgres".into());
    let user = User::from_name(&name)
        .expect("look up user")
        .unwrap_or_else(|| panic!("tests run as root need the user {name:?} to run PostgreSQL"));
    Some(user)
}

fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// The base LSN of a base backup: `START WAL LOCATION` in its `backup_label` (found in the tar's bytes).
pub fn backup_start_lsn(tar: &[u8]) -> pageserver::pg::Lsn {
    let text = String::from_utf8_lossy(tar);
    (text.split("START WAL LOCATION: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("START WAL LOCATION in the backup's backup_label")
}
