//! Cells: grouping nodes into chitchat clusters small enough to gossip, and
//! the federation-level aggregates that let a bidder cross cells.
//! (Owned by the simulator work; see docs/PROTOCOL.md.)
