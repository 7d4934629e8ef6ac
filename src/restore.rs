//! `pageserver restore`: a data directory that plain PostgreSQL starts on, for any LSN or point in time a
//! timeline retains (docs/operations.md, "Restoring a plain PostgreSQL").
//!
//! The pageserver holds every page at every LSN of its retention, so a restore replays no WAL: the LSN is
//! resolved over the management API (`restore_points`, `get_lsn_by_timestamp`), and a `fullbackup` at it is
//! streamed from the page service and unpacked as it arrives, with no temporary tar. It is unpacked into
//! `<out>.restoring-<pid>` beside the target, synced (`syncfs`), and only then renamed to the target: a
//! directory named as the target is always a whole backup; a failed restore removes its partial directory.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;

use crate::http::client::get_json;
use crate::page_service::client::{ClientError, ConnectOptions, PageServiceClient};
use crate::pg::Lsn;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("target directory {}: {msg}", path.display())]
    Target { path: PathBuf, msg: String },
    #[error("management API {url}: {msg}")]
    Api { url: String, msg: String },
    #[error("{0}")]
    OutOfRange(String),
    #[error(
        "invalid time {text:?}: expected such as 2026-11-21T10:00:00Z or 2026-11-21 10:00:00.5+01 (no offset: UTC)"
    )]
    BadTime { text: String },
    /// (`cause` is shown in the message, not chained: the binary prints an error's chain.)
    #[error("fullbackup at {lsn} from {addr}: {cause}")]
    Backup {
        lsn: Lsn,
        addr: String,
        cause: ClientError,
    },
    #[error("unpacking into {}: {msg}", path.display())]
    Unpack { path: PathBuf, msg: String },
}

/// What to restore.
#[derive(Debug, Clone)]
pub enum Target {
    Lsn(Lsn),
    /// As [`parse_time`] reads it.
    Time(String),
    /// A `pg_create_restore_point` name: the state right after its record (the oldest one of that name
    /// within the retention, as PostgreSQL's `recovery_target_name` stops at the first it meets).
    RestorePoint(String),
    Latest,
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The management API, `http://host:port`.
    pub server: String,
    /// The page service, `host:port`; default: the address `GET /v1/status` reports (its host replaced by the
    /// server's when it listens on all addresses).
    pub page_service: Option<String>,
    pub tenant: String,
    pub timeline: String,
    pub target: Target,
    pub out: PathBuf,
    /// A JWT for both the API and the page service (when they use NeonJWT). Never printed.
    pub token: Option<String>,
    /// Make the copy a streaming standby of the primary at this conninfo: it replays the primary's WAL from
    /// the newest checkpoint at or before the LSN (which the primary must still have) and follows it.
    pub standby: Option<String>,
}

/// Where a restore is, for the progress display.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub bytes: u64,
    /// Estimated size of the backup (8 KiB per relation block at the LSN), 0 if unknown.
    pub estimate: u64,
    pub elapsed: Duration,
    pub done: bool,
}

#[derive(Debug, Clone)]
pub struct Restored {
    pub lsn: Lsn,
    pub bytes: u64,
    pub elapsed: Duration,
    pub out: PathBuf,
}

#[derive(Deserialize)]
struct RestorePoints {
    oldest_lsn: Lsn,
    oldest_time: Option<String>,
    newest_lsn: Lsn,
    newest_time: Option<String>,
    restore_points: Vec<NamedPoint>,
}

#[derive(Deserialize)]
struct NamedPoint {
    name: String,
    lsn: Lsn,
}

#[derive(Deserialize)]
struct LsnByTimestamp {
    lsn: Lsn,
    kind: String,
    before_next_commit_lsn: Option<Lsn>,
}

#[derive(Deserialize)]
struct Status {
    pg_addr: String,
}

impl RestorePoints {
    fn describe(&self) -> String {
        let time = |t: &Option<String>| t.clone().unwrap_or_else(|| "no commit yet".into());
        format!(
            "oldest restorable: {} (lsn {}), newest: {} (lsn {})",
            time(&self.oldest_time),
            self.oldest_lsn,
            time(&self.newest_time),
            self.newest_lsn
        )
    }
}

/// Restores; `progress` is called about every 200 ms and once at the end.
pub async fn restore(
    opts: &RestoreOptions,
    mut progress: impl FnMut(Progress),
) -> Result<Restored, RestoreError> {
    check_target(&opts.out)?;
    let token = opts.token.as_deref();
    let base = format!("/v1/tenant/{}/timeline/{}", opts.tenant, opts.timeline);
    let points: RestorePoints = fetch(opts, &format!("{base}/restore_points")).await?;
    let lsn = match &opts.target {
        Target::Latest => points.newest_lsn,
        Target::Lsn(lsn) => {
            if *lsn < points.oldest_lsn || *lsn > points.newest_lsn {
                return Err(RestoreError::OutOfRange(format!(
                    "lsn {lsn} is outside the timeline's retention; {}",
                    points.describe()
                )));
            }
            *lsn
        }
        Target::RestorePoint(name) => {
            match points.restore_points.iter().find(|p| &p.name == name) {
                Some(p) => p.lsn,
                None => {
                    let names: Vec<&str> = points
                        .restore_points
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect();
                    return Err(RestoreError::OutOfRange(format!(
                        "no restore point named {name:?} within the timeline's retention; there are {names:?}"
                    )));
                }
            }
        }
        Target::Time(text) => {
            let t = parse_time(text).ok_or_else(|| RestoreError::BadTime { text: text.clone() })?;
            let utc = humantime::format_rfc3339_micros(t).to_string();
            let path = format!("{base}/get_lsn_by_timestamp?timestamp={utc}");
            let found: LsnByTimestamp = fetch(opts, &path).await?;
            match found.kind.as_str() {
                "present" => found.before_next_commit_lsn.unwrap_or(found.lsn),
                "future" => {
                    return Err(RestoreError::OutOfRange(format!(
                        "time {utc} is after the newest commit the timeline holds (use --latest for its \
                         newest state); {}",
                        points.describe()
                    )));
                }
                _ => {
                    return Err(RestoreError::OutOfRange(format!(
                        "time {utc} is outside the timeline's retention; {}",
                        points.describe()
                    )));
                }
            }
        }
    };
    let estimate = crate::pagebench::fetch_keyspace_at(
        &opts.server,
        &opts.tenant,
        &opts.timeline,
        Some(lsn),
        token,
    )
    .await
    .map(|(ranges, _)| crate::pagebench::rel_block_runs(&ranges, None).1 * 8192)
    .unwrap_or(0);
    let addr = match &opts.page_service {
        Some(a) => a.clone(),
        None => {
            let status: Status = fetch(opts, "/v1/status").await?;
            reachable(&status.pg_addr, &opts.server)
        }
    };
    let tmp = partial_dir(&opts.out)?;
    let result = fetch_and_unpack(opts, &addr, lsn, &tmp, estimate, &mut progress).await;
    let finished = result.and_then(|(bytes, elapsed)| {
        publish(&tmp, &opts.out)?;
        Ok(Restored {
            lsn,
            bytes,
            elapsed,
            out: opts.out.clone(),
        })
    });
    if finished.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    finished
}

async fn fetch<T: serde::de::DeserializeOwned>(
    opts: &RestoreOptions,
    path: &str,
) -> Result<T, RestoreError> {
    (get_json(&opts.server, path, opts.token.as_deref()).await).map_err(|msg| RestoreError::Api {
        url: format!("{}{path}", opts.server),
        msg,
    })
}

/// The target must not exist, or be an empty directory.
fn check_target(out: &Path) -> Result<(), RestoreError> {
    let err = |msg: String| RestoreError::Target {
        path: out.to_path_buf(),
        msg,
    };
    match std::fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(err(
                    "is not empty; restore writes only into a new or empty directory".into(),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(e.to_string())),
    }
}

/// `<out>.restoring-<pid>`, created with mode 0700 (what PostgreSQL wants of a data directory).
fn partial_dir(out: &Path) -> Result<PathBuf, RestoreError> {
    use std::os::unix::fs::DirBuilderExt;
    let name = out.file_name().ok_or_else(|| RestoreError::Target {
        path: out.to_path_buf(),
        msg: "has no directory name".into(),
    })?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".restoring-{}", std::process::id()));
    let tmp = out.with_file_name(tmp_name);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .map_err(|e| RestoreError::Target {
            path: tmp.clone(),
            msg: format!("cannot create: {e}"),
        })?;
    Ok(tmp)
}

/// `pg_addr` as reported by the server; a wildcard host is replaced by the management API's host.
fn reachable(pg_addr: &str, server: &str) -> String {
    let server_host = server
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .rsplit_once(':')
        .map_or("127.0.0.1", |(h, _)| h);
    match pg_addr.rsplit_once(':') {
        Some(("0.0.0.0" | "[::]", port)) => format!("{server_host}:{port}"),
        _ => pg_addr.to_string(),
    }
}

/// A `Read` over the chunks a channel delivers; end of input when the sender is gone.
struct ChunkReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(chunk) => self.current = chunk,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

async fn fetch_and_unpack(
    opts: &RestoreOptions,
    addr: &str,
    lsn: Lsn,
    dir: &Path,
    estimate: u64,
    progress: &mut impl FnMut(Progress),
) -> Result<(u64, Duration), RestoreError> {
    let started = Instant::now();
    let backup_err = |cause| RestoreError::Backup {
        lsn,
        addr: addr.to_string(),
        cause,
    };
    let options = ConnectOptions {
        password: opts.token.clone(),
        tls: None,
    };
    let mut client = PageServiceClient::connect_with(addr, &options)
        .await
        .map_err(backup_err)?;
    let (tx, rx) = mpsc::sync_channel::<Bytes>(64);
    let unpack_dir = dir.to_path_buf();
    let unpacker = std::thread::spawn(move || -> Result<(), String> {
        let mut archive = tar::Archive::new(ChunkReader {
            rx,
            current: Bytes::new(),
        });
        archive.set_preserve_permissions(true);
        archive.set_overwrite(false);
        archive.unpack(&unpack_dir).map_err(|e| e.to_string())?;
        // Drain what follows the end-of-archive blocks, so that the sender never blocks on a full channel.
        let mut rest = archive.into_inner();
        std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| e.to_string())?;
        Ok(())
    });
    let (mut bytes, mut unpack_stopped) = (0u64, false);
    let mut last_report = Instant::now();
    let mut command = format!("fullbackup {} {} {lsn}", opts.tenant, opts.timeline);
    if opts.standby.is_some() {
        command.push_str(" --standby");
    }
    let streamed = client
        .backup_into(&command, |chunk| {
            bytes += chunk.len() as u64;
            if tx.send(Bytes::copy_from_slice(chunk)).is_err() {
                unpack_stopped = true;
                return Err(std::io::Error::other("the unpacking stopped").into());
            }
            if last_report.elapsed() >= Duration::from_millis(200) {
                last_report = Instant::now();
                progress(Progress {
                    bytes,
                    estimate,
                    elapsed: started.elapsed(),
                    done: false,
                });
            }
            Ok(())
        })
        .await;
    drop(tx);
    let unpacked = tokio::task::spawn_blocking(move || unpacker.join())
        .await
        .map_err(|e| e.to_string())
        .and_then(|joined| joined.map_err(|_| "the unpacking thread panicked".to_string()))
        .and_then(|r| r);
    let unpack_err = |msg| RestoreError::Unpack {
        path: dir.to_path_buf(),
        msg,
    };
    match (streamed, unpacked) {
        (_, Err(msg)) if unpack_stopped => return Err(unpack_err(msg)),
        (Err(e), _) => return Err(backup_err(e)),
        (Ok(()), Err(msg)) => return Err(unpack_err(msg)),
        (Ok(()), Ok(())) => {}
    }
    let _ = client.terminate().await;
    if !dir.join("global/pg_control").is_file() {
        return Err(unpack_err("the backup has no global/pg_control".into()));
    }
    if let Some(conninfo) = &opts.standby {
        make_standby(dir, conninfo).map_err(|e| unpack_err(format!("standby settings: {e}")))?;
    }
    sync_dir(dir).map_err(|e| unpack_err(format!("syncfs: {e}")))?;
    progress(Progress {
        bytes,
        estimate,
        elapsed: started.elapsed(),
        done: true,
    });
    Ok((bytes, started.elapsed()))
}

/// `standby.signal`, and `primary_conninfo` in `postgresql.auto.conf` (quoted as PostgreSQL's config files
/// quote: a quote or a backslash doubled).
fn make_standby(dir: &Path, conninfo: &str) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::write(dir.join("standby.signal"), b"")?;
    let quoted = conninfo.replace('\\', "\\\\").replace('\'', "''");
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join("postgresql.auto.conf"))?;
    writeln!(conf, "primary_conninfo = '{quoted}'")
}

/// Makes everything written under `dir` durable (one `syncfs` of its filesystem).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(dir)?;
    nix::unistd::syncfs(&f).map_err(std::io::Error::from)
}

/// Renames the finished directory to the target (replacing an empty one) and syncs the parent.
fn publish(tmp: &Path, out: &Path) -> Result<(), RestoreError> {
    let err = |msg: String| RestoreError::Target {
        path: out.to_path_buf(),
        msg,
    };
    if out.is_dir() {
        std::fs::remove_dir(out)
            .map_err(|e| err(format!("cannot replace the empty directory: {e}")))?;
    }
    std::fs::rename(tmp, out).map_err(|e| err(format!("rename from {}: {e}", tmp.display())))?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent).map_err(|e| err(format!("sync: {e}")))?;
    }
    Ok(())
}

/// One progress line: bytes, rate, and with an estimate, percent and ETA.
pub fn progress_line(p: &Progress) -> String {
    let mib = p.bytes as f64 / (1 << 20) as f64;
    let secs = p.elapsed.as_secs_f64().max(1e-3);
    let rate = mib / secs;
    if p.done {
        return format!("restored {mib:.1} MiB in {secs:.1} s ({rate:.1} MiB/s)");
    }
    if p.estimate == 0 {
        return format!("{mib:.1} MiB, {rate:.1} MiB/s");
    }
    let pct = (p.bytes as f64 / p.estimate as f64 * 100.0).min(99.9);
    let left = p.estimate.saturating_sub(p.bytes) as f64 / (1 << 20) as f64;
    let eta = if rate > 0.0 { left / rate } else { 0.0 };
    format!(
        "{mib:.1} of ~{:.1} MiB ({pct:.0}%), {rate:.1} MiB/s, ETA {eta:.0} s",
        p.estimate as f64 / (1 << 20) as f64
    )
}

/// A time as an operator copies it from PostgreSQL (`SELECT now()`, a log line, `recovery_target_time`) or
/// writes it in RFC 3339: a date, `T` or a space, a time with optional fraction, then `Z`, an offset
/// (`+01`, `-08:00`, `+0530`) or nothing (UTC).
pub fn parse_time(text: &str) -> Option<std::time::SystemTime> {
    let text = text.trim();
    // An offset sign comes after the date's own dashes (the first 10 characters).
    let sign_at = (text.get(10..)?.rfind(['+', '-'])).map(|i| i + 10);
    let (main, offset_secs) = match sign_at {
        Some(i) => {
            let (main, offset) = text.split_at(i);
            let digits: String = offset[1..].chars().filter(|c| *c != ':').collect();
            if !(digits.len() == 2 || digits.len() == 4)
                || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            let hours: u64 = digits[..2].parse().ok()?;
            let minutes: u64 = digits
                .get(2..)
                .filter(|m| !m.is_empty())
                .map_or(Ok(0), str::parse)
                .ok()?;
            if hours > 15 || minutes > 59 {
                return None;
            }
            let secs = hours * 3600 + minutes * 60;
            (
                main,
                if offset.starts_with('-') {
                    -(secs as i64)
                } else {
                    secs as i64
                },
            )
        }
        None => (text.strip_suffix('Z').unwrap_or(text), 0),
    };
    let local = humantime::parse_rfc3339_weak(main).ok()?;
    // UTC = local time - offset.
    if offset_secs >= 0 {
        local.checked_sub(std::time::Duration::from_secs(offset_secs as u64))
    } else {
        local.checked_add(std::time::Duration::from_secs(offset_secs.unsigned_abs()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_as_postgresql_prints_them() {
        let utc =
            |t: &str| super::parse_time(t).map(|t| humantime::format_rfc3339_micros(t).to_string());
        let want = Some("2026-12-07T06:29:02.887499Z".to_string());
        for t in [
            "2026-12-07T06:29:02.887499Z",
            "2026-12-07 06:29:02.887499",
            "2026-12-07 06:29:02.887499+00",
            "2026-12-07 07:29:02.887499+01",
            "2026-12-07 12:29:02.887499+06:00",
            "2026-12-06 22:59:02.887499-0730",
        ] {
            assert_eq!(utc(t), want, "{t}");
        }
        for bad in [
            "2026-12-07",
            "2026-12-07 06:29:02+1",
            "2026-12-07 06:29:02+16",
            "yesterday",
            "2026-12-07 06:29:02 +01",
        ] {
            assert_eq!(utc(bad), None, "{bad}");
        }
    }
}
