//! The cluster's control plane, without I/O: what the control core runs.
//!
//! - [`phi`]: the phi-accrual failure detector, per link.
//! - [`membership`]: who is in the cluster and who is alive, suspect (`pdead`) or dead:
//!   SWIM with incarnations, indirect probes and gossip, as a state machine fed with ticks
//!   and messages.

pub mod membership;
pub mod phi;

#[cfg(test)]
mod sim;
