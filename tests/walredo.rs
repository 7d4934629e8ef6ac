//! The redo manager with the real sandboxed `postgres --wal-redo` of the walredo bundle
//! (`$PAGESERVER_WALREDO_BUNDLE`, set by scripts/test.sh; the test fails without it).

mod support;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use bytes::Bytes;
use pageserver::pg::Lsn;
use pageserver::pg::PgVersion;
use pageserver::pg::page::PageHeader;
use pageserver::walredo::{
    PageId, PostgresRedoManager, RedoConfig, RedoManager, RedoRequest, WalRecord,
};
use support::walsample::{HeapPageSample, heap_page_sample, heap_page_sample_of};
use tracing::Span;

fn bundle() -> std::path::PathBuf {
    pageserver::walredo::bundle_from_env().expect(
        "PAGESERVER_WALREDO_BUNDLE must name a built walredo bundle (scripts/test.sh sets it)",
    )
}

fn config(binary: &str) -> RedoConfig {
    RedoConfig {
        bundle_dir: bundle(),
        binary_name: binary.to_string(),
        run_as_user: "nobody".to_string(),
        pool_size: 1,
        idle_timeout: Duration::ZERO,
        request_timeout: Duration::from_secs(10),
        reply_wait: pageserver::config::NodeConfig::default()
            .wal_redo_reply_wait
            .get(),
        empty_root: true,
    }
}

fn manager() -> PostgresRedoManager {
    PostgresRedoManager::new(&config("postgres"), Span::none()).unwrap()
}

fn request(sample: &HeapPageSample) -> RedoRequest {
    RedoRequest {
        pg_version: sample.version,
        page: PageId::Rel(sample.tag),
        base_image: None,
        records: sample.records.clone(),
    }
}

/// The parts of a heap page redo must reproduce exactly: everything but the LSN, checksum, hint bits and the
/// command id, which redo sets to FirstCommandId (compared in full, with PostgreSQL's masking, by the
/// consistency test).
fn assert_same_tuples(ours: &[u8], theirs: &[u8]) {
    let (a, b) = (
        PageHeader::parse(ours).unwrap(),
        PageHeader::parse(theirs).unwrap(),
    );
    assert_eq!((a.lower, a.upper, a.special), (b.lower, b.upper, b.special));
    assert_eq!(
        &ours[24..a.lower as usize],
        &theirs[24..b.lower as usize],
        "line pointers differ"
    );
    // Tuple bodies, skipping the infomask hint bits (t_infomask at offset 20 of each tuple header).
    let masked = |page: &[u8]| {
        let mut p = page.to_vec();
        let mut off = a.lower as usize - 4;
        while off >= 24 {
            let lp = u32::from_le_bytes(p[off..off + 4].try_into().unwrap());
            let tuple = (lp & 0x7FFF) as usize;
            if tuple + 24 <= p.len() {
                p[tuple + 8..tuple + 12].fill(0); // t_cid
                p[tuple + 20] &= !0xF0; // HEAP_XMIN_COMMITTED|INVALID, HEAP_XMAX_COMMITTED|INVALID
            }
            off -= 4;
        }
        p[a.upper as usize..].to_vec()
    };
    assert_eq!(masked(ours), masked(theirs), "tuple data differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redo_in_the_sandbox_rebuilds_a_real_heap_page() {
    rebuilds_a_real_heap_page(PgVersion::V15).await;
}

/// A request alone in flight waits for its reply in its own thread (`wal_redo_reply_wait`), with the child
/// on that thread's CPU, instead of leaving it to the reader task: the pages are the same either way, and
/// with the wait on, replies reach the waiting request that way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_waited_for_in_the_thread_is_the_same_as_one_from_the_reader_task() {
    let sample = tokio::task::spawn_blocking(move || heap_page_sample_of(PgVersion::V15, 20))
        .await
        .unwrap();
    let in_thread = PostgresRedoManager::new(
        &RedoConfig {
            reply_wait: Duration::from_millis(10),
            ..config("postgres")
        },
        Span::none(),
    )
    .unwrap();
    let reader_task = PostgresRedoManager::new(
        &RedoConfig {
            reply_wait: Duration::ZERO,
            ..config("postgres")
        },
        Span::none(),
    )
    .unwrap();
    let before = pageserver::metrics::WAL_REDO_REPLIES_IN_THREAD.get();
    for _ in 0..20 {
        let a = in_thread.redo(request(&sample)).await.unwrap();
        let b = reader_task.redo(request(&sample)).await.unwrap();
        assert_eq!(a, b);
        assert_same_tuples(&a, &sample.page);
    }
    // Other tests of this binary may wait in their thread at the same time (one request does at a time), so
    // not every one of these replies need have come that way; some must.
    assert!(pageserver::metrics::WAL_REDO_REPLIES_IN_THREAD.get() > before);
    in_thread.shutdown().await;
    reader_task.shutdown().await;
}

/// The same with the bundle's PostgreSQL 18 on WAL of a PostgreSQL 18 cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redo_of_postgresql_18_in_the_sandbox_rebuilds_a_real_heap_page() {
    rebuilds_a_real_heap_page(PgVersion::V18).await;
}

async fn rebuilds_a_real_heap_page(version: PgVersion) {
    let sample = tokio::task::spawn_blocking(move || heap_page_sample_of(version, 20))
        .await
        .unwrap();
    let manager = manager();
    let page = manager.redo(request(&sample)).await.unwrap();
    assert_same_tuples(&page, &sample.page);
    assert_eq!(
        PageHeader::parse(&page).unwrap().lsn,
        sample.records.last().unwrap().0
    );

    // The child is sandboxed while it serves requests.
    let pid = manager.pids().await[0];
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.lines().any(|l| l == "Seccomp:\t2"),
        "no seccomp filter:\n{status}"
    );
    // And runs as an unprivileged user when we are root.
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    assert!(
        !uid_line.split_whitespace().skip(1).any(|u| u == "0"),
        "{uid_line}"
    );

    // Half the records on a base image of the other half gives the same page.
    let half = sample.records.len() / 2;
    let first = manager
        .redo(RedoRequest {
            records: sample.records[..half].to_vec(),
            ..request(&sample)
        })
        .await
        .unwrap();
    let rest = manager
        .redo(RedoRequest {
            base_image: Some(first),
            records: sample.records[half..].to_vec(),
            ..request(&sample)
        })
        .await
        .unwrap();
    assert_eq!(rest, page);
    assert_eq!(
        manager.pids().await,
        vec![pid],
        "one process served every request"
    );
}

fn namespace(pid: &str, kind: &str) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap()
}

/// The files a process has mapped (the paths as it sees them).
fn mapped_files(pid: u32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut files: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/'))
        .map(str::to_string)
        .collect();
    files.sort();
    files.dedup();
    files
}

/// The child runs in an empty root of its own (docs/walredo.md §4): only the bundle is there, every library
/// it runs on is the bundle's copy, its user, mount and network namespaces are new; and its pages equal
/// those of a child on the host's filesystem, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_runs_in_an_empty_root_on_the_bundles_libraries() {
    runs_in_an_empty_root(PgVersion::V15).await;
}

/// The same for the bundle's PostgreSQL 18: its child's root holds only the bundle, it maps only v18's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_18_child_runs_in_an_empty_root_on_the_bundles_libraries() {
    runs_in_an_empty_root(PgVersion::V18).await;
}

async fn runs_in_an_empty_root(version: PgVersion) {
    let sample = tokio::task::spawn_blocking(move || heap_page_sample_of(version, 20))
        .await
        .unwrap();
    let isolated = manager();
    let page = isolated.redo(request(&sample)).await.unwrap();
    assert_same_tuples(&page, &sample.page);
    let pid = isolated.pids().await[0];
    let dir = format!("/pageserver-walredo-bundle/{}/", version.bundle_dir_name());

    let interp = pageserver::walredo::isolate::elf_interpreter(
        &bundle()
            .join(version.bundle_dir_name())
            .join("bin/postgres"),
    )
    .unwrap();
    let loader_dir = interp
        .components()
        .nth(1)
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    let mut root: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    root.sort();
    let mut expected = vec!["pageserver-walredo-bundle".to_string(), loader_dir];
    expected.sort();
    assert_eq!(root, expected);

    let files = mapped_files(pid);
    assert!(files.iter().all(|f| f.starts_with(&dir)), "{files:#?}");
    for lib in [
        "bin/postgres",
        "lib/system/libc.so.6",
        "lib/system/libzstd.so.1",
    ] {
        assert!(
            files.contains(&format!("{dir}{lib}")),
            "{lib} not mapped: {files:#?}"
        );
    }
    for kind in ["user", "mnt", "net"] {
        assert_ne!(
            namespace(&pid.to_string(), kind),
            namespace("self", kind),
            "{kind}"
        );
    }

    // The same redo on the host's filesystem: the same bytes; and there the child maps the host's libraries.
    let mut cfg = config("postgres");
    cfg.empty_root = false;
    let host = PostgresRedoManager::new(&cfg, Span::none()).unwrap();
    assert_eq!(host.redo(request(&sample)).await.unwrap(), page);
    let host_pid = host.pids().await[0];
    assert_eq!(
        namespace(&host_pid.to_string(), "net"),
        namespace("self", "net")
    );
    assert!(
        !mapped_files(host_pid)
            .iter()
            .any(|f| f.starts_with("/pageserver-walredo-bundle/")),
        "the host child runs on the host's libraries"
    );
    isolated.shutdown().await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_syscalls_kill_the_sandboxed_child() {
    for call in ["open", "socket", "execve"] {
        let manager =
            PostgresRedoManager::new(&config("postgres-testhooks"), Span::none()).unwrap();
        let process = manager
            .pool(pageserver::pg::PgVersion::V15)
            .unwrap()
            .any_process()
            .await
            .unwrap();
        // A ping first: the child is up and sandboxed.
        let pong = process.request(&[b'H', 0, 0, 0, 4]).await.unwrap();
        assert_eq!(pong.len(), 8192);
        let payload = format!("{call}\0");
        let mut msg = vec![b'X'];
        msg.extend_from_slice(&((payload.len() + 4) as i32).to_be_bytes());
        msg.extend_from_slice(payload.as_bytes());
        process.send_raw(&msg).await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), process.wait_exit())
            .await
            .expect("child still alive after a forbidden syscall")
            .expect("exit status");
        assert_eq!(status.signal(), Some(libc::SIGSYS), "{call}: {status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_record_kills_only_its_tenants_process() {
    let sample = tokio::task::spawn_blocking(|| heap_page_sample(10))
        .await
        .unwrap();
    let a = manager();
    let b = std::sync::Arc::new(manager());
    let good = a.redo(request(&sample)).await.unwrap();
    let a_pid = a.pids().await[0];

    // Tenant B redoes pages concurrently the whole time.
    let b_task = {
        let b = b.clone();
        let req = request(&sample);
        tokio::spawn(async move {
            let mut pages = Vec::new();
            for _ in 0..200 {
                pages.push(b.redo(req.clone()).await.unwrap());
            }
            pages
        })
    };
    let mut garbage = vec![0xABu8; 64];
    garbage[0..4].copy_from_slice(&64u32.to_le_bytes());
    garbage[17] = 10; // heap
    let bad = RedoRequest {
        pg_version: pageserver::pg::PgVersion::V15,
        records: vec![(
            Lsn(0x1000),
            WalRecord::Postgres {
                will_init: true,
                rec: Bytes::from(garbage),
            },
        )],
        ..request(&sample)
    };
    let err = a.redo(bad).await.unwrap_err();
    println!("malformed record for tenant A: {err}");
    let b_pages = b_task.await.unwrap();
    assert!(
        b_pages.iter().all(|p| *p == good),
        "tenant B got a wrong page"
    );

    // A's next request is served, by a new process.
    assert_eq!(a.redo(request(&sample)).await.unwrap(), good);
    let new_pid = a.pids().await[0];
    assert_ne!(new_pid, a_pid);
    assert!(!std::path::Path::new(&format!("/proc/{a_pid}")).exists() || is_zombie_or_gone(a_pid));
}

fn is_zombie_or_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split_whitespace().nth(2) == Some("Z"),
        Err(_) => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kills_every_process_of_the_tenant() {
    let mut cfg = config("postgres");
    cfg.pool_size = 3;
    let manager = std::sync::Arc::new(PostgresRedoManager::new(&cfg, Span::none()).unwrap());
    let ping = [b'H', 0, 0, 0, 4];
    busy(&manager, 8, Duration::from_secs(2)).await;
    let pids = manager.pids().await;
    assert_eq!(pids.len(), 3, "{pids:?}");
    manager.shutdown().await;
    for pid in pids {
        assert!(
            is_zombie_or_gone(pid),
            "process {pid} still alive after shutdown"
        );
    }
    assert!(
        manager
            .pool(pageserver::pg::PgVersion::V15)
            .unwrap()
            .request(&ping)
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bundle_is_a_clear_error() {
    let mut cfg = config("postgres");
    cfg.bundle_dir = "/nonexistent/bundle".into();
    let err = PostgresRedoManager::new(&cfg, Span::none())
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("/nonexistent/bundle"), "{err}");
}

/// `tasks` concurrent callers sending pings back to back for `time`; the number of requests served.
async fn busy(manager: &std::sync::Arc<PostgresRedoManager>, tasks: usize, time: Duration) -> u64 {
    let ping = [b'H', 0, 0, 0, 4];
    let end = std::time::Instant::now() + time;
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let m = manager.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while std::time::Instant::now() < end {
                    m.pool(pageserver::pg::PgVersion::V15)
                        .unwrap()
                        .request(&ping)
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_grows_with_load_and_stops_idle_processes() {
    let mut cfg = config("postgres");
    cfg.pool_size = 4;
    cfg.idle_timeout = Duration::from_millis(500);
    let manager = std::sync::Arc::new(PostgresRedoManager::new(&cfg, Span::none()).unwrap());
    assert!(manager.pids().await.is_empty(), "a new pool starts empty");

    // One caller at a time: one process serves everything.
    let served = busy(&manager, 1, Duration::from_millis(300)).await;
    let pids = manager.pids().await;
    assert_eq!(pids.len(), 1, "{served} sequential requests: {pids:?}");

    // Sixteen callers keep every process busy: the pool grows to its size, and no further.
    let served = busy(&manager, 16, Duration::from_secs(2)).await;
    let pids = manager.pids().await;
    assert_eq!(pids.len(), 4, "{served} concurrent requests: {pids:?}");

    // Idle: every process is stopped after the idle timeout, and its process is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !manager.pids().await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "processes still alive 10 s after the load stopped: {:?}",
            manager.pids().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for pid in pids {
        assert!(is_zombie_or_gone(pid), "idle process {pid} still running");
    }

    // And the next request launches one again.
    let ping = [b'H', 0, 0, 0, 4];
    assert_eq!(
        manager
            .pool(pageserver::pg::PgVersion::V15)
            .unwrap()
            .request(&ping)
            .await
            .unwrap()
            .len(),
        8192
    );
    assert_eq!(manager.pids().await.len(), 1);
    manager.shutdown().await;
}
