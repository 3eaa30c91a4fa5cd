//! `tessera-ctl`: see `tessera-ctl --help` and the crate docs.
//!
//! Exit status: 0 when the command did what it says, 1 when a check failed (slots not
//! covered exactly once), a node answered with an error, or a node could not be reached;
//! 2 for bad arguments.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tessera_ctl::cmd::{self, NodeAddr, Outcome};
use tessera_ctl::nodes::{is_node_id, NODE_ID_LEN};
use tessera_ctl::CREATE_TIMEOUT_SECS_DEFAULT;

#[derive(Parser, Debug)]
#[command(
    name = "tessera-ctl",
    version,
    about = "Cluster admin tool for tessera (and Redis) nodes started with --cluster-enabled yes."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Form a cluster from running, empty nodes: the first meets the others, then places
    /// all 16384 slots over them (CLUSTER CREATE).
    Create {
        /// The nodes, HOST:PORT each; the first one coordinates.
        #[arg(required = true, value_name = "HOST:PORT")]
        nodes: Vec<NodeAddr>,
        /// Give up when the cluster has not formed after this many seconds.
        #[arg(long, default_value_t = CREATE_TIMEOUT_SECS_DEFAULT,
              value_parser = clap::value_parser!(u64).range(1..))]
        timeout_secs: u64,
    },
    /// Show the slot table as one node sees it and check that every slot has one owner.
    Status {
        #[arg(value_name = "HOST:PORT")]
        node: NodeAddr,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Ask a node to meet another (CLUSTER MEET).
    Meet {
        #[arg(value_name = "HOST:PORT")]
        node: NodeAddr,
        /// The node to introduce.
        #[arg(value_name = "NEWHOST:NEWPORT")]
        new_node: NodeAddr,
    },
    /// Ask a node to forget another by id (CLUSTER FORGET).
    Forget {
        #[arg(value_name = "HOST:PORT")]
        node: NodeAddr,
        /// The id of the node to forget, as `status` shows it.
        #[arg(value_parser = node_id)]
        node_id: String,
    },
}

fn node_id(s: &str) -> Result<String, String> {
    if is_node_id(s) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!(
            "a node id is {NODE_ID_LEN} hex digits; `tessera-ctl status` lists them"
        ))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let result = match &cli.cmd {
        Command::Create {
            nodes,
            timeout_secs,
        } => cmd::create(nodes, Duration::from_secs(*timeout_secs), &mut out),
        Command::Status { node, json } => cmd::status(node, *json, &mut out),
        Command::Meet { node, new_node } => cmd::meet(node, new_node, &mut out),
        Command::Forget { node, node_id } => cmd::forget(node, node_id, &mut out),
    };
    // Whatever was printed goes out before the error line, so the two read in order.
    let _ = out.flush();
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::CheckFailed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("tessera-ctl: {e}");
            ExitCode::from(1)
        }
    }
}
