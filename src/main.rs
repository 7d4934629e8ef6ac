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
