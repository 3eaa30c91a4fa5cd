//! The `tessera` binary: parse configuration, set up logging and signals, run the node.

use clap::Parser;
use std::sync::Arc;
use tessera::config::Cli;
use tessera::server::{self, core::NodeShared};

#[global_allocator]
static ALLOC: tessera::alloc::CountingAlloc = tessera::alloc::CountingAlloc;

fn main() {
    let cli = Cli::parse();
    let (config, config_file) = match cli.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("*** FATAL CONFIG ERROR ***\n{e}");
            std::process::exit(1);
        }
    };
    tessera::logging::init(&config.loglevel, config.log_json);
    let cpus = (0..config.cores)
        .map(|i| config.cpus.get(i).copied())
        .collect();
    let node = Arc::new(NodeShared::new(config_file, cpus));
    install_signal_handlers(node.clone());
    match server::run(config, node) {
        Ok(()) => {
            tracing::info!("tessera is now ready to exit, bye bye...");
        }
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("tessera: {e}");
            std::process::exit(1);
        }
    }
}

/// SIGTERM and SIGINT start a graceful shutdown; a second one exits at once.
fn install_signal_handlers(node: Arc<NodeShared>) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tessera: cannot install signal handlers: {e}");
            std::process::exit(1);
        }
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if node.shutting_down() {
                    eprintln!("tessera: second signal {sig}, exiting now");
                    std::process::exit(1);
                }
                tracing::warn!("Received signal {sig}, scheduling shutdown...");
                node.request_shutdown_by_signal();
            }
        })
        .expect("spawn the signal thread");
}
