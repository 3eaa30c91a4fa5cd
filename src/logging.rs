//! Logging: tracing to stderr, plain or one JSON object per line, at Redis's `loglevel`
//! (`debug`, `verbose`, `notice`, `warning`), which CONFIG SET changes while the node runs.
//! `RUST_LOG`, when set, chooses the filter at start instead (a later CONFIG SET replaces it).

use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Swaps the running filter; set once by [`init`].
static RELOAD: OnceLock<SetFilter> = OnceLock::new();

/// The tracing filter for a Redis `loglevel`.
fn filter_for(level: &str) -> EnvFilter {
    EnvFilter::new(match level {
        "debug" => "debug",
        "verbose" | "notice" => "info",
        _ => "warn",
    })
}

/// Installs the process's subscriber at `level`, JSON lines if `json`.
pub fn init(level: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| filter_for(level));
    let set: SetFilter = if json {
        // One object per line: timestamp, level, target, fields (message among them).
        let builder = tracing_subscriber::fmt()
            .json()
            .with_current_span(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_filter_reloading();
        let handle = builder.reload_handle();
        builder.init();
        Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
    } else {
        let builder = tracing_subscriber::fmt()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_filter_reloading();
        let handle = builder.reload_handle();
        builder.init();
        Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
    };
    let _ = RELOAD.set(set);
}

/// Logs at `level` from now on (CONFIG SET loglevel). Without [`init`] (tests of the
/// library) there is nothing to change.
pub fn set_level(level: &str) -> Result<(), String> {
    match RELOAD.get() {
        Some(set) => set(filter_for(level)),
        None => Ok(()),
    }
}
