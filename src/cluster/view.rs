//! The cluster as data cores see it: an immutable value the control core publishes after
//! every change, read without waiting (one atomic load per command).

use super::membership::{Addr, Health, NodeId};

/// In `View::owners`: a slot no known node owns.
pub const NO_OWNER: u16 = u16::MAX;

#[derive(Clone, Debug)]
pub struct ViewNode {
    pub id: NodeId,
    pub addr: Addr,
    pub health: Health,
    pub myself: bool,
    /// Slots it owns in the table.
    pub slots: usize,
    /// The primary it follows, when it is a replica (index in `View::nodes`).
    pub primary: Option<u16>,
}

#[derive(Clone, Debug)]
pub struct View {
    pub me: NodeId,
    /// The slot table's epoch; 0 before the cluster is formed.
    pub epoch: u64,
    /// Every slot is served and this node sees a majority of the primaries.
    pub state_ok: bool,
    /// This node first, then every member by id.
    pub nodes: Vec<ViewNode>,
    /// Per slot, the index in `nodes` of its owner; empty before the cluster is formed.
    pub owners: Vec<u16>,
}

impl View {
    /// A node's view before its control core has said anything.
    pub fn unformed(me: NodeId, addr: Addr) -> View {
        View {
            me,
            epoch: 0,
            state_ok: false,
            nodes: vec![ViewNode {
                id: me,
                addr,
                health: Health::Alive,
                myself: true,
                slots: 0,
                primary: None,
            }],
            owners: Vec::new(),
        }
    }

    /// The node owning `slot`, if any.
    pub fn owner(&self, slot: u16) -> Option<&ViewNode> {
        match self.owners.get(slot as usize) {
            Some(&i) if i != NO_OWNER => self.nodes.get(i as usize),
            _ => None,
        }
    }

    /// The primary this node follows, if it is a replica.
    pub fn my_primary(&self) -> Option<&ViewNode> {
        self.nodes.get(self.nodes[0].primary? as usize)
    }

    /// The replicas of the node at `index`.
    pub fn replicas_of(&self, index: usize) -> impl Iterator<Item = &ViewNode> {
        self.nodes
            .iter()
            .filter(move |n| n.primary == Some(index as u16))
    }

    /// Whether this node owns `slot`.
    pub fn is_mine(&self, slot: u16) -> bool {
        self.owners.get(slot as usize) == Some(&0)
    }

    /// Contiguous runs of slots owned by the node at `index`: (first, last).
    pub fn ranges_of(&self, index: usize) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for (s, &o) in self.owners.iter().enumerate() {
            if o as usize != index {
                continue;
            }
            match out.last_mut() {
                Some((_, last)) if *last as usize + 1 == s => *last = s as u16,
                _ => out.push((s as u16, s as u16)),
            }
        }
        out
    }

    /// Contiguous runs of slots with one owner, over the whole table: (first, last, index).
    pub fn runs(&self) -> Vec<(u16, u16, u16)> {
        let mut out: Vec<(u16, u16, u16)> = Vec::new();
        for (s, &o) in self.owners.iter().enumerate() {
            if o == NO_OWNER {
                continue;
            }
            match out.last_mut() {
                Some((_, last, owner)) if *owner == o && *last as usize + 1 == s => {
                    *last = s as u16
                }
                _ => out.push((s as u16, s as u16, o)),
            }
        }
        out
    }
}
