//! `tessera-bench`: see `tessera-bench --help` and the crate docs.
//!
//! Exit status: 0 after a run (even one with error replies, which the table reports), 1
//! when the run could not be done (no connection, a connection lost, an output file not
//! written), 2 for bad flags.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use tessera_bench::cli::{Cli, Sub};
use tessera_bench::error::BenchError;
use tessera_bench::report::{group, Report};
use tessera_bench::run::Progress;
use tessera_bench::{hgrm, plot, run, Config};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Some(Sub::Plot { out, runs, title }) => plot_files(&out, &runs, &title),
        None => match cli.run.to_config() {
            Ok(cfg) => bench(&cfg, &cli.run),
            Err(msg) => {
                eprintln!("tessera-bench: {msg}");
                return ExitCode::from(2);
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera-bench: {e}");
            ExitCode::from(1)
        }
    }
}

fn write_file(
    path: &Path,
    write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
) -> Result<(), BenchError> {
    let mut buf = Vec::new();
    write(&mut buf)
        .and_then(|()| std::fs::write(path, &buf))
        .map_err(|source| BenchError::Output {
            path: path.to_path_buf(),
            source,
        })
}

fn print_progress(p: &Progress) {
    let phase = if p.warmup { " warmup" } else { "" };
    eprintln!(
        "[{:>6.1}s]{phase} {:>11} ops/s  p50 {:.3} ms  p99 {:.3} ms  errors {}",
        p.elapsed_s,
        group(p.ops_per_s.round() as u64),
        p.p50_ms,
        p.p99_ms,
        p.errors
    );
}

fn bench(cfg: &Config, args: &tessera_bench::cli::RunArgs) -> Result<(), BenchError> {
    let mut quiet = |_: &Progress| {};
    let mut loud = print_progress;
    let progress: &mut dyn FnMut(&Progress) = if args.quiet { &mut quiet } else { &mut loud };
    let outcome = run(cfg, progress)?;
    if outcome.populated_keys > 0 && !args.quiet {
        eprintln!(
            "populated {} keys (connecting included) in {:.2} s",
            group(outcome.populated_keys),
            outcome.populate_s
        );
    }
    let report = Report::new(cfg, &outcome);
    print!("{}", report.table());
    let _ = std::io::stdout().flush();
    if let Some(path) = &args.json {
        write_file(path, |b| b.write_all(report.to_json().as_bytes()))?;
    }
    if let Some(path) = &args.hdr {
        write_file(path, |b| hgrm::write(&outcome.total.hist, b))?;
    }
    if let Some(path) = &args.plot {
        let label = if cfg.label.is_empty() {
            cfg.addr.clone()
        } else {
            cfg.label.clone()
        };
        let series = plot::Series {
            label: format!("{label} ({:.0} ops/s)", report.ops_per_sec),
            points: report.percentiles.clone(),
        };
        write_file(path, |b| {
            b.write_all(plot::svg(&[series], "Latency by percentile").as_bytes())
        })?;
    }
    Ok(())
}

fn plot_files(out: &Path, runs: &[std::path::PathBuf], title: &str) -> Result<(), BenchError> {
    let series = runs
        .iter()
        .map(|p| plot::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    write_file(out, |b| b.write_all(plot::svg(&series, title).as_bytes()))
}
