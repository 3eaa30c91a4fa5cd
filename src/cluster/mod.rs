//! The cluster's control plane, without I/O: what the control core runs.
//!
//! - [`bus`]: the cluster bus's checked wire format.
//! - [`phi`]: the phi-accrual failure detector, per link.
//! - [`membership`]: who is in the cluster and who is alive, suspect (`pdead`) or dead:
//!   SWIM with incarnations, indirect probes and gossip, as a state machine fed with ticks
//!   and messages.
//! - [`map`]: the 16384-slot table, its placement by Jump Consistent Hashing, and the
//!   changes that move only the slots that must move.

pub mod bus;
pub mod map;
pub mod membership;
pub mod phi;

#[cfg(test)]
mod sim;
