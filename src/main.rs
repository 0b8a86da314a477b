//! `kawal --config FILE` runs the sidecar; `kawal check FILE` validates a
//! config and loads every file it names as start would (exit 0, or every
//! problem on stderr and exit 2).

use std::path::PathBuf;
use std::process::ExitCode;

use kawal::config::{Config, LogLevel};

// The binary's own module: the library forbids unsafe code, and an
// allocator is nothing else. See Cargo.toml for why not the system one.
mod alloc;

#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;

const USAGE: &str = "usage: kawal --config FILE | kawal check FILE";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, check_only) = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--config", path] | ["-c", path] => (PathBuf::from(path), false),
        ["check", path] => (PathBuf::from(path), true),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    // `check` loads the certificates, keys and JWKS file too, as start will.
    let loaded = if check_only {
        Config::check_files(&path)
    } else {
        Config::load(&path)
    };
    let mut cfg = match loaded {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if check_only {
        println!("{}: ok", path.display());
        return ExitCode::SUCCESS;
    }

    // One worker: a current-thread runtime, with no work-stealing machinery
    // to pay for (a sidecar pinned to one core is the common deployment).
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
    let rt = match rt.enable_all().build() {
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
        let kawal = match kawal::start(cfg, sink).await {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "kawal could not start");
                return ExitCode::FAILURE;
            }
        };
        shutdown_signal().await;
        tracing::info!("shutdown signal received, draining");
        kawal.shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
