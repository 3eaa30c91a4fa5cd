//! The cluster's control plane, without I/O: what the control core runs.
//!
//! - [`bus`]: the cluster bus's checked wire format.
//! - [`phi`]: the phi-accrual failure detector, per link.
//! - [`membership`]: who is in the cluster and who is alive, suspect (`pdead`) or dead:
//!   SWIM with incarnations, indirect probes and gossip, as a state machine fed with ticks
//!   and messages.
//! - [`map`]: the 16384-slot table, its placement by Jump Consistent Hashing, and the
//!   changes that move only the slots that must move.
//! - [`state`]: one node's whole cluster state (membership, table, the coordinator's rule),
//!   fed frames and ticks by the control core's driver; and the saved `nodes.conf`.
//! - [`view`]: what data cores read: the table and nodes as one immutable value.

pub mod bus;
pub mod election;
pub mod map;
pub mod membership;
pub mod phi;
pub mod state;
pub mod view;

#[cfg(test)]
mod sim;
