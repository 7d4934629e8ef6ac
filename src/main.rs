//! The `pageserver` command line: `pageserver -D <workdir> [--init] [-c key=value]...`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::info;

use pageserver::config;
use pageserver::service::{self, Node};
use pageserver::workdir::WorkdirLock;

#[derive(Parser, Debug)]
#[command(
    name = "pageserver",
    version,
    about = "Serves every page of PostgreSQL databases at any LSN"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The workdir: pageserver.toml, tenants and their layer files.
    #[arg(short = 'D', long = "workdir", default_value = ".pageserver")]
    workdir: PathBuf,
    /// Write <workdir>/pageserver.toml from the defaults and the -c overrides, then exit.
    #[arg(long)]
    init: bool,
    /// Override one config key: key=value with a TOML value, e.g. -c "remote_storage={local_path='/x'}".
    #[arg(short = 'c', long = "config-override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Write a data directory that plain PostgreSQL starts on, as the timeline was at an LSN or a point in
    /// time (no WAL replay: a fullbackup at that LSN, unpacked as it streams).
    Restore(RestoreArgs),
    /// Operator views of a timeline's layer files.
    Layers {
        #[command(subcommand)]
        command: LayersCommand,
    },
    /// Print one JSON object per WAL record of the given segment files or directories.
    Waldump {
        #[arg(required = true, value_name = "SEGMENT_OR_DIR")]
        paths: Vec<PathBuf>,
    },
    /// Exercise the storage engine in DIR with a deterministic workload (writes, flushes, compactions,
    /// GC) until killed, or check what DIR holds with --verify.
    StressRepository {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        verify: bool,
        /// Stop after this many steps.
        #[arg(long)]
        steps: Option<u64>,
    },
    /// Read one page through the page service (pagestream_v3) and write its 8192 bytes to stdout.
    Getpage {
        /// host:port of the page service.
        #[arg(long, default_value = "127.0.0.1:64000")]
        page_service: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        timeline: String,
        /// The relation as spcnode/dbnode/relnode.
        #[arg(long, value_name = "SPC/DB/REL")]
        rel: String,
        #[arg(long, default_value_t = 0)]
        fork: u8,
        #[arg(long)]
        block: u32,
        /// The LSN to read at (default: the latest).
        #[arg(long)]
        lsn: Option<String>,
    },
    /// Print a JWT for the NeonJWT auth type, signed with an Ed25519 private key (PEM, as made by
    /// `openssl genpkey -algorithm ed25519`).
    Token {
        /// The private key file.
        #[arg(long, value_name = "PEM")]
        private_key: PathBuf,
        /// `pageserverapi` (everything) or `tenant` (one tenant, given by --tenant-id).
        #[arg(long)]
        scope: String,
        #[arg(long)]
        tenant_id: Option<String>,
        /// Expiry, from now (e.g. "1h", "30 days"); no expiry when absent.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// Load tools in the spirit of Neon's pagebench.
    Pagebench {
        #[command(subcommand)]
        command: PagebenchCommand,
    },
}

#[derive(clap::Subcommand, Debug)]
enum LayersCommand {
    /// Draw a timeline's layer map as SVG.
    ///
    /// Of a timeline directory (<workdir>/tenants/<T>/timelines/<TL>), offline: key ranges across, LSN ranges up, image/L1/L0 told apart, the GC cutoff and branch points marked (the same
    /// picture as GET .../layer_map.svg).
    Draw {
        /// The timeline directory.
        timeline_dir: PathBuf,
        /// Write the SVG here instead of to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List the layers of a timeline, in a workdir or in remote storage.
    ///
    /// Of a timeline directory (<workdir>/tenants/<T>/timelines/<TL>: those its
    /// metadata names, resident or evicted, and stray layer files), or in remote storage (those its newest
    /// index names, each checked against the bucket's listing).
    List {
        /// The timeline directory (or give --remote-storage, --tenant and --timeline).
        #[arg(
            required_unless_present = "remote_storage",
            conflicts_with = "remote_storage"
        )]
        timeline_dir: Option<PathBuf>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Print a layer file's footer and index, and with --values its values.
    ///
    /// The footer (kind, key and LSN ranges, size, index place), then one line per index
    /// entry (number, key, LSN, block offset and length); with --values, each value decoded too.
    Dump {
        file: PathBuf,
        /// Read every block (crc checked) and describe its value: a page image with its page LSN, a WAL
        /// record by resource manager, info and xid.
        #[arg(long)]
        values: bool,
    },
    /// Show an index_part.json: a file, or the newest index of a timeline in remote storage.
    ///
    /// A summary: the timeline's metadata, its layers by kind, generations and LSN-time samples; --json
    /// prints the index itself (validated either way).
    IndexPart {
        /// The index file (or give --remote-storage, --tenant and --timeline).
        #[arg(
            required_unless_present = "remote_storage",
            conflicts_with = "remote_storage"
        )]
        file: Option<PathBuf>,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Print the JSON itself (validated) instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Check every checksum of a workdir or of a bucket.
    ///
    /// Of every layer file under a directory (a workdir, a tenant or a timeline
    /// directory: footer, index and every block), or of a bucket (--remote-storage: each timeline's newest
    /// index, every layer it names, downloaded and checked, and the WAL archive's objects against their
    /// manifests' sha256 and hash chain). One line per object; exits 1 if any is damaged.
    Verify {
        /// The directory (or give --remote-storage, and optionally --tenant and --timeline).
        #[arg(
            required_unless_present = "remote_storage",
            conflicts_with = "remote_storage"
        )]
        dir: Option<PathBuf>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Print a key in every form.
    ///
    /// A key is 36 hex digits, as in layer file names and the API; printed as hex, its six fields,
    /// and what it stands for (relation, fork, block and data-directory file; SLRU page; metadata key).
    Key { key: String },
}

/// Where a timeline is in remote storage.
#[derive(clap::Args, Debug)]
struct RemoteArgs {
    /// The remote storage, as the remote_storage key of pageserver.toml: "{local_path='/x'}" or
    /// "{bucket_name='b', bucket_region='r', endpoint='http://...'}" or "{container_name='c', ...}".
    /// Credentials come from the environment, as for the server.
    #[arg(long, value_name = "TOML")]
    remote_storage: Option<String>,
    /// The tenant id (32 hex digits); for verify, all tenants when absent.
    #[arg(long, requires = "remote_storage")]
    tenant: Option<String>,
    /// The timeline id (32 hex digits); for verify, all timelines of the tenant when absent.
    #[arg(long, requires = "tenant")]
    timeline: Option<String>,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["lsn", "time", "restore_point", "latest"])))]
struct RestoreArgs {
    /// The management API of the pageserver.
    #[arg(
        long,
        value_name = "http://HOST:PORT",
        default_value = "http://127.0.0.1:9898"
    )]
    server: String,
    /// The page service (default: the address the server reports in /v1/status).
    #[arg(long, value_name = "HOST:PORT")]
    page_service: Option<String>,
    /// The tenant id (32 hex digits).
    #[arg(long)]
    tenant: String,
    /// The timeline id (32 hex digits).
    #[arg(long)]
    timeline: String,
    /// Restore the state at this LSN (within the timeline's retention).
    #[arg(long, value_name = "X/Y")]
    lsn: Option<String>,
    /// Restore the state at this time: every transaction committed up to it and none after, as PostgreSQL's
    /// recovery_target_time. As PostgreSQL prints it or RFC 3339: 2026-12-07 10:00:00.5+01,
    /// 2026-12-07T10:00:00Z; without an offset, UTC.
    #[arg(long, value_name = "TIME")]
    time: Option<String>,
    /// Restore the state right after this named restore point (pg_create_restore_point), as PostgreSQL's
    /// recovery_target_name.
    #[arg(long, value_name = "NAME")]
    restore_point: Option<String>,
    /// Restore the newest state the timeline holds.
    #[arg(long)]
    latest: bool,
    /// The data directory to write: must not exist, or be empty. It appears only when complete.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A file holding the JWT for a server with NeonJWT auth (used for the API and the page service).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Make the copy a streaming standby of this primary (a libpq conninfo): standby.signal and
    /// primary_conninfo are written, and it replays the primary's WAL from the newest checkpoint at or before
    /// the restore point, so the primary must still have that WAL (a slot, or wal_keep_size).
    #[arg(long, value_name = "CONNINFO")]
    standby: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
enum PagebenchCommand {
    /// GetPage at random relation blocks of a timeline's keyspace, at its latest LSN; prints a JSON report.
    GetPageLatestLsn {
        /// The management API, http://host:port.
        #[arg(long, default_value = "http://127.0.0.1:9898")]
        mgmt_api_endpoint: String,
        /// The page service: host:port, or postgres://user@host:port.
        #[arg(long, default_value = "127.0.0.1:64000")]
        page_service_connstring: String,
        #[arg(long, default_value_t = 1)]
        num_clients: usize,
        /// Requests in flight per client.
        #[arg(long, default_value_t = 1)]
        queue_depth: usize,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        runtime: std::time::Duration,
        /// Only the first N relation blocks of the keyspace (a hot set).
        #[arg(long)]
        limit_keys: Option<u64>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the report to this file.
        #[arg(long)]
        report: Option<PathBuf>,
        /// <tenant_id>/<timeline_id>
        target: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Waldump { ref paths }) => waldump(paths),
        Some(Command::StressRepository {
            ref dir,
            verify,
            steps,
        }) => stress(dir, verify, steps),
        Some(Command::Getpage {
            ref page_service,
            ref tenant,
            ref timeline,
            ref rel,
            fork,
            block,
            ref lsn,
        }) => getpage(
            page_service,
            tenant,
            timeline,
            rel,
            fork,
            block,
            lsn.as_deref(),
        ),
        Some(Command::Pagebench { ref command }) => pagebench(command),
        Some(Command::Restore(ref args)) => restore(args),
        Some(Command::Layers {
            command:
                LayersCommand::Draw {
                    ref timeline_dir,
                    ref out,
                },
        }) => layers_draw(timeline_dir, out.as_deref()),
        Some(Command::Layers {
            command: LayersCommand::Verify {
                dir: Some(ref dir), ..
            },
        }) => layers_verify(dir),
        Some(Command::Layers {
            command:
                LayersCommand::Verify {
                    dir: None,
                    ref remote,
                },
        }) => layers_verify_remote(remote),
        Some(Command::Layers {
            command:
                LayersCommand::List {
                    ref timeline_dir,
                    ref remote,
                },
        }) => layers_list(timeline_dir.as_deref(), remote),
        Some(Command::Layers {
            command: LayersCommand::Dump { ref file, values },
        }) => layers_dump(file, values),
        Some(Command::Layers {
            command:
                LayersCommand::IndexPart {
                    ref file,
                    ref remote,
                    json,
                },
        }) => layers_index_part(file.as_deref(), remote, json),
        Some(Command::Layers {
            command: LayersCommand::Key { ref key },
        }) => layers_key(key),
        Some(Command::Token {
            ref private_key,
            ref scope,
            ref tenant_id,
            expires_in,
        }) => token(private_key, scope, tenant_id.as_deref(), expires_in),
        None => run(cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: every error in the chain, outermost first.
            eprintln!("pageserver: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn token(
    private_key: &std::path::Path,
    scope: &str,
    tenant_id: Option<&str>,
    expires_in: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    use pageserver::auth::{Claims, Scope, encode_token};
    let scope: Scope = serde_json::from_value(serde_json::Value::String(scope.to_string()))
        .map_err(|_| anyhow::anyhow!("unknown scope {scope:?}: pageserverapi or tenant"))?;
    let tenant_id = tenant_id
        .map(|t| t.parse())
        .transpose()
        .context("--tenant-id")?;
    if scope == Scope::Tenant && tenant_id.is_none() {
        anyhow::bail!("scope tenant needs --tenant-id");
    }
    let exp = expires_in.map(|d| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (now + d).as_secs()
    });
    let pem = std::fs::read(private_key).with_context(|| format!("{}", private_key.display()))?;
    let claims = Claims {
        scope,
        tenant_id,
        exp,
    };
    let token = encode_token(&pem, &claims)
        .map_err(|e| anyhow::anyhow!("{}: {e}", private_key.display()))?;
    println!("{token}");
    Ok(())
}

fn waldump(paths: &[PathBuf]) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let summary = pageserver::waldump::run(paths, &mut out)?;
    std::io::Write::flush(&mut out).context("cannot write output")?;
    match summary.end_of_wal {
        Some(lsn) => eprintln!("{} records; end of WAL at {lsn}", summary.records),
        None => eprintln!("{} records", summary.records),
    }
    Ok(())
}

fn stress(dir: &std::path::Path, verify: bool, steps: Option<u64>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        if verify {
            let v = pageserver::repository::stress::verify(dir).await?;
            println!(
                "verified {} reads; removed {} leftover files; disk_consistent_lsn {}",
                v.reads, v.leftovers_removed, v.disk_consistent_lsn
            );
        } else {
            pageserver::repository::stress::run(dir, steps).await?;
        }
        anyhow::Ok(())
    })
}

fn layers_draw(dir: &std::path::Path, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    let svg = pageserver::repository::draw::draw_timeline_dir(dir)?;
    match out {
        Some(path) => std::fs::write(path, svg).with_context(|| format!("{}", path.display()))?,
        None => print!("{svg}"),
    }
    Ok(())
}

fn layers_key(text: &str) -> anyhow::Result<()> {
    let key: pageserver::repository::Key = text
        .parse()
        .map_err(|e| anyhow::anyhow!("{text:?} is not a key (36 hex digits): {e}"))?;
    println!("key     {key}");
    println!(
        "fields  field1={} field2={} field3={} field4={} field5={} field6={}",
        key.field1, key.field2, key.field3, key.field4, key.field5, key.field6
    );
    println!("what    {}", key.describe());
    Ok(())
}

fn layers_verify(dir: &std::path::Path) -> anyhow::Result<()> {
    use pageserver::repository::layers::{DeltaLayer, ImageLayer, LayerName};
    let mut dirs = vec![dir.to_path_buf()];
    let (mut ok, mut damaged) = (0u64, 0u64);
    while let Some(d) = dirs.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .with_context(|| format!("{}", d.display()))?
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let Some(name) = (path.file_name().and_then(|n| n.to_str()))
                .and_then(|n| n.parse::<LayerName>().ok())
            else {
                continue;
            };
            let checked = if name.is_delta() {
                DeltaLayer::open(&path).and_then(|l| l.verify())
            } else {
                ImageLayer::open(&path).and_then(|l| l.verify())
            };
            match checked {
                Ok(()) => {
                    ok += 1;
                    println!("ok {}", path.display());
                }
                Err(e) => {
                    damaged += 1;
                    println!("DAMAGED {e}");
                }
            }
        }
    }
    println!("{ok} layer files ok, {damaged} damaged");
    if damaged > 0 {
        anyhow::bail!("{damaged} damaged layer file(s) under {}", dir.display());
    }
    Ok(())
}

/// Runs `f` on a small runtime (the offline tools' remote storage calls).
fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(f)
}

/// The remote storage and tenant (and timeline, if `need_timeline` or given) of `--remote-storage`.
async fn remote_target(
    remote: &RemoteArgs,
    need_timeline: bool,
) -> anyhow::Result<(
    pageserver::remote_storage::GenericRemoteStorage,
    Option<pageserver::id::TenantId>,
    Option<pageserver::id::TimelineId>,
)> {
    let toml = (remote.remote_storage.as_deref()).context("--remote-storage is required")?;
    let storage = pageserver::inspect::remote_storage(toml).await?;
    let tenant = (remote.tenant.as_deref())
        .map(|t| {
            t.parse()
                .map_err(|e| anyhow::anyhow!("--tenant {t:?}: {e}"))
        })
        .transpose()?;
    let timeline = (remote.timeline.as_deref())
        .map(|t| {
            t.parse()
                .map_err(|e| anyhow::anyhow!("--timeline {t:?}: {e}"))
        })
        .transpose()?;
    if need_timeline && (tenant.is_none() || timeline.is_none()) {
        anyhow::bail!("--remote-storage needs --tenant and --timeline here");
    }
    Ok((storage, tenant, timeline))
}

/// Writes through `f` to a buffered stdout; a closed pipe (`| head`) ends the output quietly.
fn to_stdout(f: impl FnOnce(&mut dyn std::io::Write) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = f(&mut out).and_then(|()| Ok(std::io::Write::flush(&mut out)?));
    match result {
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
                    || matches!(
                        c.downcast_ref::<pageserver::inspect::InspectError>(),
                        Some(pageserver::inspect::InspectError::Output(io))
                            if io.kind() == std::io::ErrorKind::BrokenPipe
                    )
            }) =>
        {
            Ok(())
        }
        r => r,
    }
}

fn layers_list(dir: Option<&std::path::Path>, remote: &RemoteArgs) -> anyhow::Result<()> {
    use pageserver::inspect::{local_layers, remote_layers, write_rows};
    let rows = match dir {
        Some(dir) => {
            let (meta, rows) = local_layers(dir)?;
            println!(
                "timeline {} (workdir): disk_consistent_lsn {}, gc cutoff {}",
                dir.display(),
                meta.disk_consistent_lsn,
                meta.latest_gc_cutoff_lsn
            );
            rows
        }
        None => block_on(async {
            let (storage, tenant, timeline) = remote_target(remote, true).await?;
            let (tenant, timeline) = (tenant.expect("checked"), timeline.expect("checked"));
            let (generation, index, rows) = remote_layers(&storage, tenant, timeline).await?;
            println!(
                "timeline {timeline} of tenant {tenant} (remote index of generation {generation}): \
                 disk_consistent_lsn {}, gc cutoff {}",
                index.disk_consistent_lsn, index.metadata.latest_gc_cutoff_lsn
            );
            Ok(rows)
        })?,
    };
    to_stdout(|mut out| Ok(write_rows(&mut out, &rows)?))
}

fn layers_dump(file: &std::path::Path, values: bool) -> anyhow::Result<()> {
    use pageserver::repository::layers::inspect::InspectedLayer;
    let layer = InspectedLayer::open(file)?;
    let info = layer.info();
    to_stdout(|out| {
        let level = match (info.kind, info.l0) {
            (pageserver::repository::layers::LayerKind::Image, _) => "",
            (_, true) => " L0",
            (_, false) => " L1",
        };
        writeln!(out, "file      {}", file.display())?;
        writeln!(
            out,
            "kind      {}{level} (format version {})",
            info.kind, info.format_version
        )?;
        writeln!(
            out,
            "keys      {} .. {}",
            info.key_range.start, info.key_range.end
        )?;
        writeln!(
            out,
            "lsns      {} .. {}",
            info.lsn_range.start, info.lsn_range.end
        )?;
        writeln!(out, "size      {} bytes", info.file_size)?;
        writeln!(
            out,
            "index     {} entries at offset {}, {} bytes, {} pages",
            info.entry_count, info.index_offset, info.index_len, info.index_pages
        )?;
        writeln!(
            out,
            "{:>8} {:<36} {:<18} {:>12} {:>7}{}",
            "entry",
            "key",
            "lsn",
            "offset",
            "len",
            if values { "  value" } else { "" }
        )?;
        let mut values_iter = values.then(|| layer.values());
        for entry in layer.index() {
            let e = entry?;
            let lsn = e.lsn.map_or_else(|| "-".to_string(), |l| l.to_string());
            write!(
                out,
                "{:>8} {} {:<18} {:>12} {:>7}",
                e.number, e.key, lsn, e.offset, e.len
            )?;
            if let Some(it) = values_iter.as_mut() {
                match it.next() {
                    Some(Ok((_, v))) => write!(out, "  {}", layer.describe_value(&v))?,
                    Some(Err(err)) => {
                        writeln!(out)?;
                        return Err(err.into());
                    }
                    None => {}
                }
            }
            writeln!(out)?;
        }
        Ok(())
    })
}

fn layers_index_part(
    file: Option<&std::path::Path>,
    remote: &RemoteArgs,
    json: bool,
) -> anyhow::Result<()> {
    use pageserver::remote_storage::index::IndexPart;
    let (from, index) = match file {
        Some(path) => {
            let data = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
            // The timeline named by the path (<...>/timelines/<TL>/index_part.json), for messages.
            let timeline = (path.parent().and_then(|p| p.file_name()))
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| "00000000000000000000000000000000".parse().expect("an id"));
            let index = IndexPart::from_json(&data, timeline)
                .with_context(|| format!("{}", path.display()))?;
            (path.display().to_string(), index)
        }
        None => block_on(async {
            let (storage, tenant, timeline) = remote_target(remote, true).await?;
            let (tenant, timeline) = (tenant.expect("checked"), timeline.expect("checked"));
            let (generation, index) =
                pageserver::remote_storage::upload_queue::download_newest_index(
                    &storage,
                    tenant,
                    timeline,
                    pageserver::remote_storage::index::Generation(u32::MAX),
                )
                .await?
                .ok_or(pageserver::inspect::InspectError::NoIndex { tenant, timeline })?;
            let key = pageserver::remote_storage::index::index_path(tenant, timeline, generation);
            Ok((format!("{key} (generation {generation})"), index))
        })?,
    };
    to_stdout(|mut out| {
        if json {
            out.write_all(&index.to_json())?;
            writeln!(out)?;
        } else {
            pageserver::inspect::write_index(&mut out, &from, &index)?;
        }
        Ok(())
    })
}

fn layers_verify_remote(remote: &RemoteArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (storage, tenant, timeline) = rt.block_on(remote_target(remote, false))?;
    let scratch = std::env::temp_dir().join(format!("pageserver-verify-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("{}", scratch.display()))?;
    let mut counts = None;
    let result = to_stdout(|mut out| {
        counts = Some(rt.block_on(pageserver::inspect::verify_remote(
            &storage, tenant, timeline, &scratch, &mut out,
        ))?);
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&scratch);
    result?;
    if let Some(c) = counts
        && c.damaged > 0
    {
        anyhow::bail!("{} damaged object(s) in remote storage", c.damaged);
    }
    Ok(())
}

fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    use pageserver::restore::{RestoreOptions, Target, progress_line};
    use std::io::{IsTerminal, Write};
    let target = match (&args.lsn, &args.time, &args.restore_point) {
        (Some(l), _, _) => Target::Lsn(
            l.parse()
                .ok()
                .with_context(|| format!("--lsn {l:?}: expected such as 0/16B3740"))?,
        ),
        (_, Some(t), _) => Target::Time(t.clone()),
        (_, _, Some(name)) => Target::RestorePoint(name.clone()),
        _ => Target::Latest,
    };
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("--token-file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let opts = RestoreOptions {
        server: args.server.clone(),
        page_service: args.page_service.clone(),
        tenant: args.tenant.clone(),
        timeline: args.timeline.clone(),
        target,
        out: args.out.clone(),
        token,
        standby: args.standby.clone(),
    };
    let tty = std::io::stderr().is_terminal();
    let mut last_line = std::time::Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let restored = runtime.block_on(pageserver::restore::restore(&opts, |p| {
        let mut err = std::io::stderr();
        if tty {
            let _ = write!(err, "\r\x1b[2K{}", progress_line(&p));
            if p.done {
                let _ = writeln!(err);
            }
        } else if p.done || last_line.elapsed() >= std::time::Duration::from_secs(5) {
            last_line = std::time::Instant::now();
            let _ = writeln!(err, "{}", progress_line(&p));
        }
    }));
    if tty {
        eprintln!();
    }
    let restored = restored?;
    println!(
        "restored {} at lsn {} ({} bytes in {:.1} s)",
        restored.out.display(),
        restored.lsn,
        restored.bytes,
        restored.elapsed.as_secs_f64()
    );
    Ok(())
}

fn getpage(
    page_service: &str,
    tenant: &str,
    timeline: &str,
    rel: &str,
    fork: u8,
    block: u32,
    lsn: Option<&str>,
) -> anyhow::Result<()> {
    use pageserver::page_service::pagestream::{
        Request, RequestBody, RequestHeader, ResponseBody, Version,
    };
    let parts: Vec<u32> = rel
        .split('/')
        .map(|p| p.parse::<u32>())
        .collect::<Result<_, _>>()
        .ok()
        .filter(|v: &Vec<u32>| v.len() == 3)
        .with_context(|| format!("--rel {rel:?}: expected spcnode/dbnode/relnode"))?;
    let lsn = match lsn {
        None => pageserver::pg::Lsn(u64::MAX),
        Some(l) => l
            .parse()
            .ok()
            .with_context(|| format!("--lsn {l:?}: expected such as 0/16B3740"))?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let page = runtime.block_on(async {
        let client =
            pageserver::page_service::client::PageServiceClient::connect(page_service).await?;
        let mut session = client
            .pagestream(Version::V3, tenant, timeline)
            .await
            .map_err(|(e, _)| e)?;
        let req = Request {
            hdr: RequestHeader {
                reqid: 1,
                request_lsn: lsn,
                not_modified_since: pageserver::pg::Lsn(0),
            },
            body: RequestBody::GetPage {
                rel: pageserver::pg::RelFileNode {
                    spc: parts[0],
                    db: parts[1],
                    rel: parts[2],
                },
                fork,
                blkno: block,
            },
        };
        let answer = session.request(&req).await?;
        session.terminate().await?;
        anyhow::Ok(answer)
    })?;
    match page {
        ResponseBody::GetPage(p) => {
            std::io::Write::write_all(&mut std::io::stdout(), &p)
                .context("cannot write the page")?;
            Ok(())
        }
        ResponseBody::Error(e) => anyhow::bail!("the page service answered: {e}"),
        other => anyhow::bail!("unexpected answer {other:?}"),
    }
}

fn pagebench(command: &PagebenchCommand) -> anyhow::Result<()> {
    let PagebenchCommand::GetPageLatestLsn {
        mgmt_api_endpoint,
        page_service_connstring,
        num_clients,
        queue_depth,
        runtime,
        limit_keys,
        seed,
        report,
        target,
    } = command;
    let (tenant, timeline) = target
        .split_once('/')
        .with_context(|| format!("{target:?}: expected <tenant_id>/<timeline_id>"))?;
    // postgres://user@host:port[/db] or host:port.
    let addr = page_service_connstring
        .strip_prefix("postgres://")
        .or_else(|| page_service_connstring.strip_prefix("postgresql://"))
        .map(|rest| {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
            rest.split(['/', '?']).next().unwrap_or(rest).to_string()
        })
        .unwrap_or_else(|| page_service_connstring.clone());
    let load = pageserver::pagebench::Load {
        page_service: addr,
        tenant: tenant.to_string(),
        timeline: timeline.to_string(),
        clients: *num_clients,
        queue_depth: *queue_depth,
        runtime: *runtime,
        limit_keys: *limit_keys,
        seed: *seed,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let (ranges, lsn) =
            pageserver::pagebench::fetch_keyspace(mgmt_api_endpoint, tenant, timeline).await?;
        pageserver::pagebench::get_page_latest_lsn(&load, &ranges, lsn).await
    })?;
    let text = serde_json::to_string_pretty(&result)?;
    println!("{text}");
    if let Some(path) = report {
        std::fs::write(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.init {
        let lock = WorkdirLock::acquire(&cli.workdir)?;
        config::init(&cli.workdir, &cli.overrides)?;
        println!(
            "wrote {}",
            cli.workdir.join(config::CONFIG_FILE_NAME).display()
        );
        drop(lock);
        return Ok(());
    }
    let config = config::load(&cli.workdir, &cli.overrides)?;
    let lock = WorkdirLock::acquire(&cli.workdir)?;
    pageserver::logging::init(config.log_format);
    let workdir = cli
        .workdir
        .canonicalize()
        .context("cannot resolve the workdir")?;
    let node = Node { workdir, config };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pageserver")
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        let services = tokio::spawn(service::run(node, shutdown.clone()));
        tokio::pin!(services);
        let outcome = tokio::select! {
            r = &mut services => Some(r),
            _ = sigterm.recv() => { info!("received SIGTERM"); None }
            _ = sigint.recv() => { info!("received SIGINT"); None }
        };
        let result = match outcome {
            Some(r) => r,
            None => {
                shutdown.cancel();
                services.await
            }
        };
        result.context("service task panicked")??;
        anyhow::Ok(())
    })?;
    // Tasks still blocked in I/O must not hold the exit back past the shutdown budget.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    drop(lock);
    Ok(())
}
