//! `kawal --config FILE` runs the sidecar; `kawal check FILE` validates a
//! config and loads every file it names as start would; `kawal probe URL` is
//! a health check (see [`cli`]).

use std::process::ExitCode;

use kawal::config::{Config, LogLevel};
use kawal::signals::{Ended, Signals};

// The binary's own module: the library forbids unsafe code, and an
// allocator is nothing else. See Cargo.toml for why not the system one.
mod alloc;
mod cli;

#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = match cli::parse(&args) {
        Ok(cli::Command::Run(path)) => path,
        Ok(cli::Command::Check(path)) => return cli::check(&path),
        Ok(cli::Command::Probe(url)) => return cli::run_probe(&url),
        Ok(cli::Command::Help) => return cli::print(cli::USAGE),
        Ok(cli::Command::Version) => return cli::print(&cli::version()),
        Err(e) => {
            eprintln!("kawal: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let mut cfg = match Config::load(&path) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = match runtime(&cfg) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (sink, _flush_on_exit) = kawal::log::Sink::stdout();
    // The filter (RUST_LOG when set, else [log] level) decides access lines too.
    cfg.log.level = match kawal::log::init(&sink, cfg.log.level, cfg.log.format, &cfg.service.name) {
        true => cfg.log.level.max(LogLevel::Info),
        false => cfg.log.level.min(LogLevel::Warn),
    };
    rt.block_on(async {
        let signals = Signals::install().expect("signal handlers");
        let kawal = match kawal::start(cfg, sink).await {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "kawal could not start");
                return ExitCode::FAILURE;
            }
        };
        let reloader = kawal.reloader();
        match signals.serve(kawal, move || reloader.reload()).await {
            Ended::Drained => ExitCode::SUCCESS,
            Ended::Cut => {
                tracing::warn!(
                    event = "stopped",
                    ended = "cut",
                    "kawal stopped by a second signal, without draining"
                );
                ExitCode::from(130)
            }
        }
    })
}

/// One worker: a current-thread runtime, with no work-stealing machinery to
/// pay for (a sidecar pinned to one core is the common deployment).
fn runtime(cfg: &Config) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = cfg
        .service
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut rt = tokio::runtime::Builder::new_multi_thread();
        rt.worker_threads(threads);
        rt
    };
    rt.enable_all().build()
}
