//! Cells in the node (sans-IO): the cell directory and the gateway role.
//!
//! The host decides everything about cells ([`agora_protocol::host`]:
//! which members are the cell's gateways, when a framework looks beyond
//! its cell and which cell it imports). This machine carries those
//! decisions between nodes, from what gossip says:
//!
//! - **The gateway role.** While the host counts this node among its cell's
//!   gateways, the driver runs the federation gossip (a second chitchat
//!   cluster of the gateways of every cell) and publishes the cell's
//!   aggregate there; when it stops being one, the driver leaves it.
//!   [`CellsOut::StartFederation`] names the seeds: `--federation-seeds`,
//!   the federation addresses the cell's members publish (its other
//!   gateways), and every gateway the directory knows.
//! - **The directory**: every cell of the federation, its aggregate and its
//!   gateways' addresses. A gateway reads it from the federation gossip
//!   ([`directory_from`]); any other node asks one of its cell's gateways
//!   each [`REFRESH`] (`federation_query`). Aggregates go to the host
//!   ([`CellsOut::Aggregate`]), which judges crossing on them.
//! - **Imports.** When the host imports a cell, this machine asks one of
//!   that cell's gateways for its members (`cell_query`) at once and each
//!   [`REFRESH`] after; the answer (`cell_members`) goes to the host and the
//!   members' addresses to libp2p ([`CellsOut::Contact`]). A gateway
//!   answers a `cell_query` about its own cell from its cell's gossip.
//!
//! - **Locating.** A message for a node this node has no address for (in
//!   cells: a node of another cell that is not imported, such as a task's
//!   home or runner asked about from elsewhere) is held while one gateway
//!   of every other cell is asked where that node is (`locate`); the node's
//!   cell answers (`located`), the address goes to libp2p and the held
//!   messages follow. Unanswered after [`LOCATE_TIMEOUT`], they are dropped
//!   (the asker's own timeout reports the node unreachable).
//!
//! - **Joining through other cells' seeds.** A node whose cell gossip has
//!   shown no other live member for [`BOOTSTRAP_AFTER`] (its seeds are all
//!   in other cells, so their datagrams do not open) asks, every
//!   [`BOOTSTRAP_EVERY`] while alone: a gateway of its own cell the
//!   directory names for that cell's members (`cell_query`), which it then
//!   gossips with directly ([`CellsOut::GossipWith`]); with no such
//!   gateway known, its seeds for their directory (`federation_query`, sent
//!   to each seed's PORT+1, the default libp2p port:
//!   [`CellsOut::Bootstrap`]). A lone gateway also gossips with the
//!   federation addresses the answer names
//!   ([`CellsOut::FederationGossipWith`]), so that its cell is seen.
//! - **Surveys** (`agora nodes --all`): one gateway of every other cell is
//!   asked for its members (`cell_query`); the answers, or after
//!   [`SURVEY_TIMEOUT`] what came, go back to the asker
//!   ([`CellsOut::Surveyed`]).
//!
//! Bounded: the directory holds at most [`MAX_CELLS`] cells, an answer at
//! most [`MAX_IMPORTED`] members, seeds at most [`MAX_FEDERATION_SEEDS`],
//! at most [`MAX_LOCATING`] nodes are looked for at once with at most
//! [`MAX_HELD`] messages each, and at most [`MAX_SURVEYS`] surveys are open.

use crate::surface::Asker;
use agora_protocol::NodeId;
use agora_protocol::cell::{CellAggregate, CellId};
use agora_protocol::host::{MAX_CELLS, MAX_IMPORTED};
use agora_protocol::time::Instant;
use agora_protocol::view::NodeInfo;
use agora_protocol::wire::{
    CellEntry, CellMember, CellMembers, CellQuery, Contact, FederationView, Locate, Located,
    PeerMessage,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// How often a non-gateway refreshes its directory and every node its
/// imported cells.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How long the host must name this node a gateway (or stop naming it)
/// before the node takes (or gives up) the role.
pub const ROLE_SETTLE: Duration = Duration::from_secs(1);
/// The most seeds a starting federation gossip is given.
pub const MAX_FEDERATION_SEEDS: usize = 64;
/// How long a node must be alone in its cell before it looks for its
/// cell through the directory.
pub const BOOTSTRAP_AFTER: Duration = Duration::from_secs(2);
/// How often a lone node looks again.
pub const BOOTSTRAP_EVERY: Duration = Duration::from_secs(3);
/// The most addresses one bootstrap step contacts.
pub const MAX_BOOTSTRAP_ADDRS: usize = 16;
/// How long messages wait for their node to be located.
pub const LOCATE_TIMEOUT: Duration = Duration::from_secs(3);
/// The most nodes looked for at once.
pub const MAX_LOCATING: usize = 256;
/// The most messages held for one node being looked for.
pub const MAX_HELD: usize = 64;
/// How long a survey waits for the other cells' gateways.
pub const SURVEY_TIMEOUT: Duration = Duration::from_secs(2);
/// The most surveys open at once.
pub const MAX_SURVEYS: usize = 64;

/// This node's place in the cells.
#[derive(Clone, Debug)]
pub struct CellsConfig {
    /// The cell's name (`--cell`, or derived by `--cells`).
    pub name: String,
    /// Where this node is reached; `federation` is its federation gossip
    /// address.
    pub me: Contact,
    /// `--federation-seeds`.
    pub federation_seeds: Vec<String>,
    /// `--seeds` (the cell gossip's), asked for the directory when alone.
    pub seeds: Vec<String>,
}

/// What the machine asks its driver to do.
#[derive(Clone, Debug, PartialEq)]
pub enum CellsOut {
    /// Send a message to a node.
    Send {
        /// The node.
        to: NodeId,
        /// The message.
        msg: PeerMessage,
    },
    /// Where a node outside this cell's gossip is reached (for libp2p).
    Contact(Contact),
    /// This node became a gateway: join the federation gossip.
    StartFederation {
        /// Federation gossip addresses to join through.
        seeds: Vec<String>,
    },
    /// This node is no longer a gateway: leave the federation gossip.
    StopFederation,
    /// Ask these seeds (gossip addresses; their PORT+1 is asked) for the
    /// directory.
    Bootstrap {
        /// The seeds.
        seeds: Vec<String>,
    },
    /// Gossip directly with these members of the home cell (gossip
    /// addresses).
    GossipWith(Vec<String>),
    /// Gossip directly with these federation addresses (this node is a
    /// gateway that sees no other).
    FederationGossipWith(Vec<String>),
    /// Another cell's members, for the host ([`super::core::Core::handle_import`]).
    Import {
        /// The cell.
        cell: CellId,
        /// Its members.
        members: Vec<NodeInfo>,
    },
    /// A cell's aggregate, for the host.
    Aggregate {
        /// The cell.
        cell: CellId,
        /// Its aggregate.
        agg: CellAggregate,
    },
    /// A survey is complete (or timed out): every other cell's members.
    Surveyed {
        /// Who asked.
        asker: Asker,
        /// The asker's request id.
        request_id: u64,
        /// The other cells, by name.
        cells: Vec<SurveyedCell>,
    },
}

/// One other cell in a finished survey.
#[derive(Clone, Debug, PartialEq)]
pub struct SurveyedCell {
    /// Its name.
    pub name: String,
    /// Its members as its gateway answered (`None`: no answer in time).
    pub members: Option<Vec<NodeInfo>>,
}

#[derive(Debug)]
struct Survey {
    asker: Asker,
    request_id: u64,
    deadline: Instant,
    /// Each other cell's name and, once answered, members.
    cells: BTreeMap<CellId, (String, Option<Vec<NodeInfo>>)>,
}

/// Counters (for `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CellsStats {
    /// Directory requests sent (`federation_query`).
    pub directory_queries: u64,
    /// Member requests sent (`cell_query`).
    pub member_queries: u64,
    /// Member answers taken (`cell_members`).
    pub member_answers: u64,
    /// Times this node took the gateway role.
    pub gateway_starts: u64,
    /// Times a lone node looked for its cell through the directory.
    pub bootstraps: u64,
    /// Nodes looked for in other cells (`locate` rounds started).
    pub locates: u64,
    /// Nodes found that way.
    pub located: u64,
    /// Messages dropped because their node was not found in time, or too
    /// many were waiting.
    pub unlocated_dropped: u64,
}

/// Messages waiting for their node's address.
#[derive(Debug)]
struct Locating {
    deadline: Instant,
    held: Vec<PeerMessage>,
}

/// The cells machine.
#[derive(Debug)]
pub struct Cells {
    cfg: CellsConfig,
    cell: CellId,
    directory: BTreeMap<CellId, CellEntry>,
    directory_version: u64,
    gateway: bool,
    /// What the host last said about the role, and since when.
    wanted: Option<(bool, Instant)>,
    imports: BTreeSet<CellId>,
    locating: BTreeMap<NodeId, Locating>,
    surveys: Vec<Survey>,
    /// Since when the home cell has shown no other live member.
    alone_since: Option<Instant>,
    next_bootstrap: Instant,
    next_refresh: Instant,
    turn: usize,
    out: VecDeque<CellsOut>,
    /// Counters.
    pub stats: CellsStats,
}

impl Cells {
    /// A node of the cell `cfg.name`, started at `now`.
    pub fn new(cfg: CellsConfig, now: Instant) -> Self {
        Cells {
            cell: CellId::from_name(&cfg.name),
            cfg,
            directory: BTreeMap::new(),
            directory_version: 0,
            gateway: false,
            wanted: None,
            imports: BTreeSet::new(),
            locating: BTreeMap::new(),
            surveys: Vec::new(),
            alone_since: None,
            next_bootstrap: now,
            next_refresh: now,
            turn: 0,
            out: VecDeque::new(),
            stats: CellsStats::default(),
        }
    }

    /// The home cell.
    pub fn cell(&self) -> CellId {
        self.cell
    }

    /// The home cell's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Whether this node holds the gateway role (runs the federation).
    pub fn is_gateway(&self) -> bool {
        self.gateway
    }

    /// The cells this node knows of, its own included.
    pub fn directory(&self) -> &BTreeMap<CellId, CellEntry> {
        &self.directory
    }

    /// The cells imported for the host's bidders.
    pub fn imports(&self) -> &BTreeSet<CellId> {
        &self.imports
    }

    /// When [`Cells::handle_tick`] has work next.
    pub fn poll_timeout(&self) -> Instant {
        let t = match self.wanted {
            Some((w, since)) if w != self.gateway => self.next_refresh.min(since + ROLE_SETTLE),
            _ => self.next_refresh,
        };
        self.locating
            .values()
            .map(|l| l.deadline)
            .chain(self.surveys.iter().map(|s| s.deadline))
            .fold(t, Instant::min)
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<CellsOut> {
        self.out.pop_front()
    }

    /// The host's gateways of the home cell now (`gateways`), the
    /// federation addresses the home cell's members publish, and whether
    /// the home cell shows no other live member (`alone`): takes or gives
    /// up the gateway role, every [`REFRESH`] asks for the directory and
    /// the imported cells' members, and a lone node looks for its cell.
    pub fn handle_tick(
        &mut self,
        now: Instant,
        gateways: &[NodeId],
        home_federation: &[String],
        alone: bool,
    ) {
        if alone {
            let since = *self.alone_since.get_or_insert(now);
            if now >= since + BOOTSTRAP_AFTER && now >= self.next_bootstrap {
                self.next_bootstrap = now + BOOTSTRAP_EVERY;
                self.bootstrap();
            }
        } else {
            self.alone_since = None;
        }
        let want = gateways.contains(&self.cfg.me.node);
        // The role changes once the host has said so for ROLE_SETTLE: a
        // node that starts alone is its cell's gateway until its first
        // gossip exchange, and should not join the federation for that.
        match self.wanted {
            Some((w, _)) if w == want => {}
            _ => self.wanted = Some((want, now)),
        }
        let settled = self
            .wanted
            .is_some_and(|(_, since)| now >= since + ROLE_SETTLE);
        if want != self.gateway && settled {
            self.gateway = want;
            if want {
                self.stats.gateway_starts += 1;
                let seeds = self.federation_seeds(home_federation);
                self.out.push_back(CellsOut::StartFederation { seeds });
            } else {
                self.out.push_back(CellsOut::StopFederation);
            }
        }
        self.expire_locating(now);
        self.finish_surveys(Some(now));
        if now < self.next_refresh {
            return;
        }
        self.next_refresh = now + REFRESH;
        self.turn = self.turn.wrapping_add(1);
        if !self.gateway {
            let others: Vec<&NodeId> = gateways
                .iter()
                .filter(|g| **g != self.cfg.me.node)
                .collect();
            if !others.is_empty() {
                let to = others[self.turn % others.len()].clone();
                self.stats.directory_queries += 1;
                self.out.push_back(CellsOut::Send {
                    to,
                    msg: PeerMessage::FederationQuery,
                });
            }
        }
        let imports: Vec<CellId> = self.imports.iter().copied().collect();
        for c in imports {
            self.ask_members(c);
        }
    }

    /// `msg` must go to `to`, whose address this node does not know: held
    /// while the other cells are asked where `to` is (see the module
    /// docs). Dropped at once when there is no other cell to ask, or too
    /// much is waiting already.
    pub fn handle_unroutable(&mut self, now: Instant, to: NodeId, msg: PeerMessage) {
        if let Some(l) = self.locating.get_mut(&to) {
            if l.held.len() < MAX_HELD {
                l.held.push(msg);
            } else {
                self.stats.unlocated_dropped += 1;
            }
            return;
        }
        let asks: Vec<NodeId> = self
            .directory
            .values()
            .filter(|e| e.cell != self.cell && !e.gateways.is_empty())
            .map(|e| e.gateways[self.turn % e.gateways.len()].node.clone())
            .collect();
        if asks.is_empty() || self.locating.len() >= MAX_LOCATING {
            self.stats.unlocated_dropped += 1;
            tracing::debug!(%to, kind = msg.kind(), "no address for this node and no other cell to ask; message dropped");
            return;
        }
        self.stats.locates += 1;
        for g in asks {
            if let Some(contact) = self.gateway_contact(&g) {
                self.out.push_back(CellsOut::Contact(contact));
            }
            self.out.push_back(CellsOut::Send {
                to: g,
                msg: PeerMessage::Locate(Locate { node: to.clone() }),
            });
        }
        self.locating.insert(
            to,
            Locating {
                deadline: now + LOCATE_TIMEOUT,
                held: vec![msg],
            },
        );
    }

    /// A lone node looks for its cell (see the module docs).
    fn bootstrap(&mut self) {
        self.stats.bootstraps += 1;
        if self.ask_home_gateways() {
            return;
        }
        let seeds: Vec<String> = self
            .cfg
            .seeds
            .iter()
            .take(MAX_BOOTSTRAP_ADDRS)
            .cloned()
            .collect();
        if !seeds.is_empty() {
            self.out.push_back(CellsOut::Bootstrap { seeds });
        }
    }

    /// Asks a gateway of the home cell other than this node (from the
    /// directory) for the cell's members; false when none is known.
    fn ask_home_gateways(&mut self) -> bool {
        let me = self.cfg.me.node.clone();
        let Some(entry) = self.directory.get(&self.cell) else {
            return false;
        };
        let others: Vec<Contact> = entry
            .gateways
            .iter()
            .filter(|g| g.node != me)
            .cloned()
            .collect();
        if others.is_empty() {
            return false;
        }
        let g = others[self.turn % others.len()].clone();
        self.turn = self.turn.wrapping_add(1);
        let to = g.node.clone();
        self.out.push_back(CellsOut::Contact(g));
        self.out.push_back(CellsOut::Send {
            to,
            msg: PeerMessage::CellQuery(CellQuery { cell: self.cell }),
        });
        true
    }

    /// `asker` wants every other cell's members: one gateway of each is
    /// asked. Refused (with the reason) when too many surveys are open.
    pub fn handle_survey(
        &mut self,
        now: Instant,
        asker: Asker,
        request_id: u64,
    ) -> Result<(), String> {
        if self.surveys.len() >= MAX_SURVEYS {
            return Err(format!(
                "{MAX_SURVEYS} surveys of the cells are already open on this node; retry in {} s",
                SURVEY_TIMEOUT.as_secs()
            ));
        }
        let mut cells = BTreeMap::new();
        let others: Vec<CellEntry> = self
            .directory
            .values()
            .filter(|e| e.cell != self.cell)
            .cloned()
            .collect();
        for e in others {
            cells.insert(e.cell, (e.name.clone(), None));
            if e.gateways.is_empty() {
                continue;
            }
            let g = e.gateways[self.turn % e.gateways.len()].clone();
            self.stats.member_queries += 1;
            let to = g.node.clone();
            self.out.push_back(CellsOut::Contact(g));
            self.out.push_back(CellsOut::Send {
                to,
                msg: PeerMessage::CellQuery(CellQuery { cell: e.cell }),
            });
        }
        self.surveys.push(Survey {
            asker,
            request_id,
            deadline: now + SURVEY_TIMEOUT,
            cells,
        });
        self.finish_surveys(None);
        Ok(())
    }

    /// Hands back the surveys every cell answered, and (given the time)
    /// those past their deadline.
    fn finish_surveys(&mut self, now: Option<Instant>) {
        let mut i = 0;
        while i < self.surveys.len() {
            let s = &self.surveys[i];
            let done = s.cells.values().all(|(_, m)| m.is_some());
            if done || now.is_some_and(|t| t >= s.deadline) {
                let s = self.surveys.swap_remove(i);
                let mut cells: Vec<SurveyedCell> = s
                    .cells
                    .into_values()
                    .map(|(name, members)| SurveyedCell { name, members })
                    .collect();
                cells.sort_by(|a, b| a.name.cmp(&b.name));
                self.out.push_back(CellsOut::Surveyed {
                    asker: s.asker,
                    request_id: s.request_id,
                    cells,
                });
            } else {
                i += 1;
            }
        }
    }

    fn gateway_contact(&self, node: &NodeId) -> Option<Contact> {
        self.directory
            .values()
            .flat_map(|e| e.gateways.iter())
            .find(|g| g.node == *node)
            .cloned()
    }

    fn expire_locating(&mut self, now: Instant) {
        let mut dropped = 0;
        self.locating.retain(|node, l| {
            let keep = now < l.deadline;
            if !keep {
                dropped += l.held.len() as u64;
                tracing::debug!(%node, held = l.held.len(), "no cell said where this node is; its messages were dropped");
            }
            keep
        });
        self.stats.unlocated_dropped += dropped;
    }

    /// The federation gossip's cells (this node is a gateway): the
    /// directory becomes them.
    pub fn handle_federation(&mut self, cells: Vec<CellEntry>) {
        if self.gateway {
            self.set_directory(cells);
        }
    }

    /// The host imports (`import`) or drops `cell`.
    pub fn handle_import_cell(&mut self, cell: CellId, import: bool) {
        if cell == self.cell {
            return;
        }
        if import {
            if self.imports.insert(cell) {
                self.ask_members(cell);
            }
        } else {
            self.imports.remove(&cell);
        }
    }

    /// A directory message from `from`; `members` lists the home cell's
    /// members as gossip knows them (called only for a `cell_query` about
    /// the home cell).
    pub fn handle_message(
        &mut self,
        from: NodeId,
        msg: PeerMessage,
        members: impl FnOnce() -> Vec<CellMember>,
    ) {
        match msg {
            PeerMessage::FederationQuery => {
                let cells = self.directory.values().cloned().collect();
                self.out.push_back(CellsOut::Send {
                    to: from,
                    msg: PeerMessage::FederationView(FederationView { cells }),
                });
            }
            PeerMessage::FederationView(v) => {
                if self.alone_since.is_some() {
                    // Looking for the home cell: its other gateways, and
                    // (a lone gateway) the federation's addresses.
                    let mine = self.cfg.me.federation.clone();
                    let fed: Vec<String> = v
                        .cells
                        .iter()
                        .flat_map(|e| e.gateways.iter())
                        .filter_map(|g| g.federation.clone())
                        .filter(|a| Some(a) != mine.as_ref())
                        .take(MAX_BOOTSTRAP_ADDRS)
                        .collect();
                    let home: Vec<Contact> = v
                        .cells
                        .iter()
                        .filter(|e| e.cell == self.cell && CellId::from_name(&e.name) == e.cell)
                        .flat_map(|e| e.gateways.iter())
                        .filter(|g| g.node != self.cfg.me.node)
                        .take(MAX_BOOTSTRAP_ADDRS)
                        .cloned()
                        .collect();
                    if self.gateway && !fed.is_empty() {
                        self.out.push_back(CellsOut::FederationGossipWith(fed));
                    }
                    for g in home {
                        let to = g.node.clone();
                        self.out.push_back(CellsOut::Contact(g));
                        self.out.push_back(CellsOut::Send {
                            to,
                            msg: PeerMessage::CellQuery(CellQuery { cell: self.cell }),
                        });
                    }
                }
                // A gateway reads the federation itself.
                if !self.gateway {
                    self.set_directory(v.cells);
                }
            }
            PeerMessage::CellQuery(CellQuery { cell }) => {
                if cell == self.cell {
                    let mut members = members();
                    members.truncate(MAX_IMPORTED);
                    self.out.push_back(CellsOut::Send {
                        to: from,
                        msg: PeerMessage::CellMembers(CellMembers { cell, members }),
                    });
                } else {
                    tracing::debug!(%from, cell = cell.0, "a cell query about another cell; not answered");
                }
            }
            PeerMessage::Locate(Locate { node }) => {
                // Answered from the home cell's gossip, by whichever member
                // is asked (a gateway, normally); silent when the node is
                // not a live member here.
                let found = members()
                    .into_iter()
                    .find(|m| m.info.id == node && m.contact.node == node && m.info.alive);
                if let Some(m) = found {
                    self.out.push_back(CellsOut::Send {
                        to: from,
                        msg: PeerMessage::Located(Located {
                            cell: self.cell,
                            contact: m.contact,
                        }),
                    });
                }
            }
            PeerMessage::Located(Located { cell, contact }) => {
                // Only an answer about a node looked for, from another
                // cell of the directory, is believed.
                if cell == self.cell || !self.directory.contains_key(&cell) {
                    return;
                }
                let Some(l) = self.locating.remove(&contact.node) else {
                    return;
                };
                self.stats.located += 1;
                let to = contact.node.clone();
                self.out.push_back(CellsOut::Contact(contact));
                for msg in l.held {
                    self.out.push_back(CellsOut::Send {
                        to: to.clone(),
                        msg,
                    });
                }
            }
            PeerMessage::CellMembers(m) => {
                if m.cell == self.cell {
                    // A lone node's answer: gossip with its cell's members.
                    if self.alone_since.is_some() {
                        let addrs: Vec<String> = m
                            .members
                            .iter()
                            .filter(|x| x.info.id != self.cfg.me.node && x.info.alive)
                            .map(|x| x.info.addr.clone())
                            .take(MAX_BOOTSTRAP_ADDRS)
                            .collect();
                        if !addrs.is_empty() {
                            self.out.push_back(CellsOut::GossipWith(addrs));
                        }
                    }
                    return;
                }
                let surveyed = self
                    .surveys
                    .iter()
                    .any(|s| s.cells.get(&m.cell).is_some_and(|(_, got)| got.is_none()));
                if surveyed {
                    let infos: Vec<NodeInfo> = m
                        .members
                        .iter()
                        .take(MAX_IMPORTED)
                        .filter(|x| x.contact.node == x.info.id)
                        .map(|x| x.info.clone())
                        .collect();
                    for s in &mut self.surveys {
                        if let Some((_, got @ None)) = s.cells.get_mut(&m.cell) {
                            *got = Some(infos.clone());
                        }
                    }
                    self.finish_surveys(None);
                }
                if !self.imports.contains(&m.cell) {
                    return;
                }
                self.stats.member_answers += 1;
                let mut infos = Vec::with_capacity(m.members.len().min(MAX_IMPORTED));
                for member in m.members.into_iter().take(MAX_IMPORTED) {
                    if member.contact.node != member.info.id {
                        continue;
                    }
                    self.out.push_back(CellsOut::Contact(member.contact));
                    infos.push(member.info);
                }
                self.out.push_back(CellsOut::Import {
                    cell: m.cell,
                    members: infos,
                });
            }
            other => {
                tracing::debug!(kind = other.kind(), "not a cell directory message");
            }
        }
    }

    fn set_directory(&mut self, cells: Vec<CellEntry>) {
        let mut next = BTreeMap::new();
        for mut e in cells {
            if next.len() >= MAX_CELLS {
                break;
            }
            // An id that does not come from its name is not believed.
            if CellId::from_name(&e.name) != e.cell {
                continue;
            }
            e.gateways.truncate(16);
            self.out.push_back(CellsOut::Aggregate {
                cell: e.cell,
                agg: e.aggregate.clone(),
            });
            next.insert(e.cell, e);
        }
        if next != self.directory {
            self.directory = next;
            self.directory_version += 1;
        }
    }

    /// Grows each time the directory changes (so that the driver copies it
    /// for the core only then).
    pub fn directory_version(&self) -> u64 {
        self.directory_version
    }

    fn ask_members(&mut self, cell: CellId) {
        let Some(entry) = self.directory.get(&cell) else {
            return;
        };
        if entry.gateways.is_empty() {
            return;
        }
        let g = entry.gateways[self.turn % entry.gateways.len()].clone();
        self.stats.member_queries += 1;
        let to = g.node.clone();
        self.out.push_back(CellsOut::Contact(g));
        self.out.push_back(CellsOut::Send {
            to,
            msg: PeerMessage::CellQuery(CellQuery { cell }),
        });
    }

    fn federation_seeds(&self, home_federation: &[String]) -> Vec<String> {
        let mine = self.cfg.me.federation.as_deref();
        let mut seen = BTreeSet::new();
        let known = self
            .directory
            .values()
            .flat_map(|e| e.gateways.iter())
            .filter_map(|g| g.federation.clone());
        self.cfg
            .federation_seeds
            .iter()
            .cloned()
            .chain(home_federation.iter().cloned())
            .chain(known)
            .filter(|s| Some(s.as_str()) != mine)
            .filter(|s| seen.insert(s.clone()))
            .take(MAX_FEDERATION_SEEDS)
            .collect()
    }
}

/// One gateway as the federation gossip shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct FederationMember {
    /// Its cell's name.
    pub cell: String,
    /// Its cell's aggregate, as it publishes it.
    pub aggregate: CellAggregate,
    /// Where it is reached.
    pub contact: Contact,
}

/// The directory from the live members of the federation gossip: one
/// entry per cell, its gateways in the order given, its aggregate from the
/// gateway that counts most members (gateways of one cell see nearly the
/// same; the fullest view wins, ties to the first).
pub fn directory_from(members: impl IntoIterator<Item = FederationMember>) -> Vec<CellEntry> {
    let mut cells: BTreeMap<CellId, CellEntry> = BTreeMap::new();
    for m in members {
        let id = CellId::from_name(&m.cell);
        let room = cells.len() < MAX_CELLS;
        match cells.get_mut(&id) {
            Some(e) => {
                if m.aggregate.members > e.aggregate.members {
                    e.aggregate = m.aggregate;
                }
                e.gateways.push(m.contact);
            }
            None if room => {
                cells.insert(
                    id,
                    CellEntry {
                        cell: id,
                        name: m.cell,
                        aggregate: m.aggregate,
                        gateways: vec![m.contact],
                    },
                );
            }
            None => {}
        }
    }
    cells.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::resources::Resources;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn contact(n: &str) -> Contact {
        Contact {
            node: id(n),
            peer_id: format!("peer-{n}"),
            p2p_addr: format!("/ip4/127.0.0.1/tcp/{}", 7000 + n.len()),
            federation: Some(format!("127.0.0.1:{}", 8000 + n.len())),
        }
    }

    fn machine(me: &str, cell: &str) -> Cells {
        Cells::new(
            CellsConfig {
                name: cell.into(),
                me: contact(me),
                federation_seeds: vec!["10.0.0.9:7702".into()],
                seeds: vec!["10.0.0.9:7700".into()],
            },
            Instant::ZERO,
        )
    }

    fn drain(c: &mut Cells) -> Vec<CellsOut> {
        std::iter::from_fn(|| c.poll_output()).collect()
    }

    fn agg(members: u32) -> CellAggregate {
        CellAggregate {
            members,
            alive: members,
            ..CellAggregate::default()
        }
    }

    fn entry(name: &str, gws: &[&str]) -> CellEntry {
        CellEntry {
            cell: CellId::from_name(name),
            name: name.into(),
            aggregate: agg(gws.len() as u32),
            gateways: gws.iter().map(|g| contact(g)).collect(),
        }
    }

    #[test]
    fn a_node_takes_and_gives_up_the_gateway_role_as_the_host_decides() {
        let mut c = machine("a", "east");
        c.handle_tick(Instant::ZERO, &[id("b")], &[], false);
        assert!(!c.is_gateway());
        // Not a gateway: it asks the cell's gateway for the directory.
        assert_eq!(
            drain(&mut c),
            vec![CellsOut::Send {
                to: id("b"),
                msg: PeerMessage::FederationQuery
            }]
        );
        // Within the refresh period nothing more is asked.
        c.handle_tick(Instant::from_millis(500), &[id("b")], &[], false);
        assert!(drain(&mut c).is_empty());
        // `b` died: the host names `a`, which takes the role once that has
        // held for ROLE_SETTLE (not for a moment's view).
        c.handle_tick(Instant::from_millis(600), &[id("a")], &[], false);
        assert!(!c.is_gateway());
        c.handle_tick(Instant::from_millis(700), &[id("b")], &[], false);
        c.handle_tick(Instant::from_millis(800), &[id("a")], &[], false);
        c.handle_tick(Instant::from_millis(1700), &[id("a")], &[], false);
        assert!(!c.is_gateway(), "named again at 800 ms: not settled yet");
        // The next refresh is at 2700 ms; the role is due before.
        assert_eq!(c.poll_timeout(), Instant::from_millis(1800));
        drain(&mut c);
        c.handle_tick(
            Instant::from_millis(1800),
            &[id("a")],
            &["127.0.0.1:9999".into()],
            false,
        );
        assert!(c.is_gateway());
        assert_eq!(
            drain(&mut c),
            vec![CellsOut::StartFederation {
                seeds: vec!["10.0.0.9:7702".into(), "127.0.0.1:9999".into()]
            }]
        );
        // A gateway does not ask for the directory: it reads the federation.
        c.handle_tick(Instant::from_millis(2900), &[id("a")], &[], false);
        assert!(drain(&mut c).is_empty());
        c.handle_tick(Instant::from_millis(3000), &[id("c")], &[], false);
        assert!(c.is_gateway(), "gives the role up only once settled too");
        c.handle_tick(Instant::from_millis(4000), &[id("c")], &[], false);
        assert!(!c.is_gateway());
        assert_eq!(drain(&mut c)[0], CellsOut::StopFederation);
        assert_eq!(c.stats.gateway_starts, 1);
    }

    #[test]
    fn the_directory_gives_aggregates_and_imports_ask_the_cells_gateways() {
        let mut c = machine("a", "east");
        c.handle_tick(Instant::ZERO, &[id("b")], &[], false);
        drain(&mut c);
        let west = entry("west", &["w1", "w2"]);
        let mut forged = entry("forged", &["x"]);
        forged.cell = CellId(1);
        c.handle_message(
            id("b"),
            PeerMessage::FederationView(FederationView {
                cells: vec![entry("east", &["b"]), west.clone(), forged],
            }),
            Vec::new,
        );
        let out = drain(&mut c);
        assert_eq!(
            out,
            vec![
                CellsOut::Aggregate {
                    cell: CellId::from_name("east"),
                    agg: agg(1)
                },
                CellsOut::Aggregate {
                    cell: west.cell,
                    agg: agg(2)
                },
            ]
        );
        assert_eq!(c.directory().len(), 2, "the forged id is not believed");
        // The host imports west: one of its gateways is asked at once.
        c.handle_import_cell(west.cell, true);
        let out = drain(&mut c);
        assert!(matches!(&out[0], CellsOut::Contact(g) if g.node.as_str().starts_with('w')));
        assert!(matches!(
            &out[1],
            CellsOut::Send { msg: PeerMessage::CellQuery(CellQuery { cell }), .. } if *cell == west.cell
        ));
        // The answer goes to the host, the contacts to libp2p.
        let member = CellMember {
            info: NodeInfo::new(id("w3"), Resources::cpu_mem(4000, 1024), Default::default()),
            contact: contact("w3"),
        };
        let mut liar = member.clone();
        liar.contact.node = id("other");
        c.handle_message(
            id("w1"),
            PeerMessage::CellMembers(CellMembers {
                cell: west.cell,
                members: vec![member.clone(), liar],
            }),
            Vec::new,
        );
        assert_eq!(
            drain(&mut c),
            vec![
                CellsOut::Contact(contact("w3")),
                CellsOut::Import {
                    cell: west.cell,
                    members: vec![member.info.clone()]
                }
            ]
        );
        // Refreshed each period while imported; not after the drop.
        c.handle_tick(Instant::from_millis(1000), &[id("b")], &[], false);
        let asks = drain(&mut c)
            .into_iter()
            .filter(|o| {
                matches!(
                    o,
                    CellsOut::Send {
                        msg: PeerMessage::CellQuery(_),
                        ..
                    }
                )
            })
            .count();
        assert_eq!(asks, 1);
        c.handle_import_cell(west.cell, false);
        c.handle_message(
            id("w1"),
            PeerMessage::CellMembers(CellMembers {
                cell: west.cell,
                members: vec![member],
            }),
            Vec::new,
        );
        assert!(drain(&mut c).is_empty(), "a late answer is dropped");
        assert_eq!(c.stats.member_answers, 1);
    }

    #[test]
    fn a_gateway_answers_about_its_own_cell_only() {
        let mut c = machine("a", "east");
        let member = CellMember {
            info: NodeInfo::new(id("a"), Resources::cpu_mem(1000, 256), Default::default()),
            contact: contact("a"),
        };
        let m2 = member.clone();
        c.handle_message(
            id("z"),
            PeerMessage::CellQuery(CellQuery {
                cell: CellId::from_name("east"),
            }),
            move || vec![m2],
        );
        assert_eq!(
            drain(&mut c),
            vec![CellsOut::Send {
                to: id("z"),
                msg: PeerMessage::CellMembers(CellMembers {
                    cell: CellId::from_name("east"),
                    members: vec![member]
                })
            }]
        );
        c.handle_message(
            id("z"),
            PeerMessage::CellQuery(CellQuery {
                cell: CellId::from_name("west"),
            }),
            || panic!("not asked for another cell"),
        );
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn a_message_for_a_node_of_another_cell_waits_until_that_cell_says_where_it_is() {
        let mut c = machine("a", "east");
        let now = Instant::from_millis(10);
        let (east, west, north) = (
            entry("east", &["a"]),
            entry("west", &["w1"]),
            entry("north", &["n1"]),
        );
        let msg = |n: u64| PeerMessage::ListTasks(agora_protocol::wire::TaskQuery::all(n));
        // No other cell known: dropped at once.
        c.handle_unroutable(now, id("w7"), msg(1));
        assert!(drain(&mut c).is_empty());
        assert_eq!(c.stats.unlocated_dropped, 1);
        c.handle_message(
            id("b"),
            PeerMessage::FederationView(FederationView {
                cells: vec![east, west.clone(), north.clone()],
            }),
            Vec::new,
        );
        drain(&mut c);
        // One gateway of each other cell is asked (their addresses to libp2p
        // first); a second message for the same node waits with the first.
        c.handle_unroutable(now, id("w7"), msg(2));
        c.handle_unroutable(now, id("w7"), msg(3));
        let out = drain(&mut c);
        let locate = PeerMessage::Locate(Locate { node: id("w7") });
        assert_eq!(
            out,
            vec![
                CellsOut::Contact(contact("n1")),
                CellsOut::Send {
                    to: id("n1"),
                    msg: locate.clone()
                },
                CellsOut::Contact(contact("w1")),
                CellsOut::Send {
                    to: id("w1"),
                    msg: locate.clone()
                },
            ]
        );
        // Only the asked node's cell's answer is believed; its own cell
        // or a cell outside the directory is not.
        let answer = |cell: CellId| {
            PeerMessage::Located(Located {
                cell,
                contact: contact("w7"),
            })
        };
        c.handle_message(id("x"), answer(CellId::from_name("east")), Vec::new);
        c.handle_message(id("x"), answer(CellId::from_name("south")), Vec::new);
        assert!(drain(&mut c).is_empty());
        c.handle_message(id("w1"), answer(west.cell), Vec::new);
        assert_eq!(
            drain(&mut c),
            vec![
                CellsOut::Contact(contact("w7")),
                CellsOut::Send {
                    to: id("w7"),
                    msg: msg(2)
                },
                CellsOut::Send {
                    to: id("w7"),
                    msg: msg(3)
                },
            ]
        );
        // A second answer (north's, had it one) finds nothing waiting.
        c.handle_message(id("n1"), answer(north.cell), Vec::new);
        assert!(drain(&mut c).is_empty());
        assert_eq!(c.stats.located, 1);
        // Unanswered, held messages are dropped after LOCATE_TIMEOUT.
        c.handle_unroutable(now, id("z9"), msg(4));
        drain(&mut c);
        c.handle_tick(now + LOCATE_TIMEOUT / 2, &[id("b")], &[], false);
        c.handle_message(id("b"), answer(west.cell), Vec::new);
        c.handle_tick(now + LOCATE_TIMEOUT, &[id("b")], &[], false);
        assert_eq!(c.stats.unlocated_dropped, 2);
        let late = PeerMessage::Located(Located {
            cell: west.cell,
            contact: contact("z9"),
        });
        c.handle_message(id("w1"), late, Vec::new);
        assert!(
            !drain(&mut c)
                .iter()
                .any(|o| matches!(o, CellsOut::Send { to, .. } if *to == id("z9"))),
            "nothing is sent after the timeout"
        );
        assert_eq!(c.stats.locates, 2);
    }

    #[test]
    fn a_member_answers_where_a_live_node_of_its_cell_is_and_nothing_else() {
        let mut c = machine("a", "east");
        let member = |n: &str, alive: bool| {
            let mut info = NodeInfo::new(id(n), Resources::cpu_mem(1000, 256), Default::default());
            info.alive = alive;
            CellMember {
                info,
                contact: contact(n),
            }
        };
        let members = || vec![member("e1", true), member("e2", false)];
        let ask = |n: &str| PeerMessage::Locate(Locate { node: id(n) });
        c.handle_message(id("z"), ask("e1"), members);
        assert_eq!(
            drain(&mut c),
            vec![CellsOut::Send {
                to: id("z"),
                msg: PeerMessage::Located(Located {
                    cell: CellId::from_name("east"),
                    contact: contact("e1")
                })
            }]
        );
        c.handle_message(id("z"), ask("e2"), members);
        c.handle_message(id("z"), ask("w1"), members);
        assert!(drain(&mut c).is_empty(), "dead or unknown: no answer");
    }

    #[test]
    fn a_survey_asks_every_other_cell_and_answers_when_all_did_or_in_time() {
        let mut c = machine("a", "east");
        let (west, north) = (entry("west", &["w1"]), entry("north", &["n1"]));
        let asker = Asker::Conn(7);
        // No other cell: answered at once, empty.
        c.handle_survey(Instant::ZERO, asker, 1).unwrap();
        assert_eq!(
            drain(&mut c),
            vec![CellsOut::Surveyed {
                asker,
                request_id: 1,
                cells: Vec::new()
            }]
        );
        c.handle_message(
            id("b"),
            PeerMessage::FederationView(FederationView {
                cells: vec![entry("east", &["a"]), west.clone(), north.clone()],
            }),
            Vec::new,
        );
        drain(&mut c);
        c.handle_survey(Instant::ZERO, asker, 2).unwrap();
        let asked: Vec<NodeId> = drain(&mut c)
            .into_iter()
            .filter_map(|o| match o {
                CellsOut::Send {
                    to,
                    msg: PeerMessage::CellQuery(_),
                } => Some(to),
                _ => None,
            })
            .collect();
        assert_eq!(asked, vec![id("n1"), id("w1")]);
        let w2 = NodeInfo::new(id("w2"), Resources::cpu_mem(2000, 512), Default::default());
        let members = |cell: &CellEntry, infos: Vec<NodeInfo>| {
            PeerMessage::CellMembers(CellMembers {
                cell: cell.cell,
                members: infos
                    .into_iter()
                    .map(|info| CellMember {
                        contact: contact(info.id.as_str()),
                        info,
                    })
                    .collect(),
            })
        };
        c.handle_message(id("w1"), members(&west, vec![w2.clone()]), Vec::new);
        // West answered (not imported: nothing goes to the host); north
        // has not, so the survey waits.
        assert!(drain(&mut c).is_empty());
        c.handle_message(id("n1"), members(&north, Vec::new()), Vec::new);
        assert_eq!(
            drain(&mut c),
            vec![CellsOut::Surveyed {
                asker,
                request_id: 2,
                cells: vec![
                    SurveyedCell {
                        name: "north".into(),
                        members: Some(Vec::new())
                    },
                    SurveyedCell {
                        name: "west".into(),
                        members: Some(vec![w2.clone()])
                    },
                ]
            }]
        );
        // North silent: after SURVEY_TIMEOUT the answer says so.
        c.handle_survey(Instant::ZERO, asker, 3).unwrap();
        c.handle_message(id("w1"), members(&west, vec![w2.clone()]), Vec::new);
        drain(&mut c);
        assert!(c.poll_timeout() <= Instant::ZERO + SURVEY_TIMEOUT);
        c.handle_tick(Instant::ZERO + SURVEY_TIMEOUT, &[id("b")], &[], false);
        let done: Vec<CellsOut> = drain(&mut c)
            .into_iter()
            .filter(|o| matches!(o, CellsOut::Surveyed { .. }))
            .collect();
        assert_eq!(
            done,
            vec![CellsOut::Surveyed {
                asker,
                request_id: 3,
                cells: vec![
                    SurveyedCell {
                        name: "north".into(),
                        members: None
                    },
                    SurveyedCell {
                        name: "west".into(),
                        members: Some(vec![w2])
                    },
                ]
            }]
        );
        // Bounded.
        for i in 0..MAX_SURVEYS as u64 {
            c.handle_survey(Instant::from_millis(5000), asker, 10 + i)
                .unwrap();
        }
        assert!(
            c.handle_survey(Instant::from_millis(5000), asker, 99)
                .is_err()
        );
    }

    #[test]
    fn a_node_alone_in_its_cell_finds_it_through_the_directory() {
        // a's seeds are all in other cells: its cell gossip shows nobody
        // (who the host names gateway does not matter here).
        let mut c = machine("a", "east");
        let t = |ms: u64| Instant::from_millis(ms);
        let boot = |out: &[CellsOut]| {
            out.iter()
                .filter(|o| matches!(o, CellsOut::Bootstrap { .. }))
                .count()
        };
        c.handle_tick(t(0), &[id("z")], &[], true);
        assert_eq!(boot(&drain(&mut c)), 0, "not before BOOTSTRAP_AFTER");
        c.handle_tick(t(2000), &[id("z")], &[], true);
        assert!(drain(&mut c).contains(&CellsOut::Bootstrap {
            seeds: vec!["10.0.0.9:7700".into()]
        }));
        c.handle_tick(t(3000), &[id("z")], &[], true);
        assert_eq!(boot(&drain(&mut c)), 0, "not again before BOOTSTRAP_EVERY");
        // A seed answers with its directory: east's other gateway is asked
        // for east's members.
        c.handle_message(
            id("w1"),
            PeerMessage::FederationView(FederationView {
                cells: vec![entry("east", &["e9"]), entry("west", &["w1"])],
            }),
            Vec::new,
        );
        let out = drain(&mut c);
        assert!(out.contains(&CellsOut::Send {
            to: id("e9"),
            msg: PeerMessage::CellQuery(CellQuery {
                cell: CellId::from_name("east")
            })
        }));
        // Its answer: gossip with east's live members other than a.
        let member = |n: &str, addr: &str, alive: bool| {
            let mut info = NodeInfo::new(id(n), Resources::cpu_mem(1000, 256), Default::default());
            info.addr = addr.into();
            info.alive = alive;
            CellMember {
                info,
                contact: contact(n),
            }
        };
        c.handle_message(
            id("e9"),
            PeerMessage::CellMembers(CellMembers {
                cell: CellId::from_name("east"),
                members: vec![
                    member("e9", "10.0.0.5:7700", true),
                    member("e8", "10.0.0.6:7700", false),
                    member("a", "10.0.0.1:7700", true),
                ],
            }),
            Vec::new,
        );
        assert_eq!(
            drain(&mut c),
            vec![CellsOut::GossipWith(vec!["10.0.0.5:7700".into()])]
        );
        // Still alone at the next look: the directory's gateway is asked,
        // not the seeds.
        c.handle_tick(t(5000), &[id("z")], &[], true);
        let out = drain(&mut c);
        assert_eq!(boot(&out), 0);
        assert!(out.iter().any(|o| matches!(o, CellsOut::Send { to, msg: PeerMessage::CellQuery(_) } if *to == id("e9"))));
        // Joined: no more looking, and a late answer changes nothing.
        c.handle_tick(t(8000), &[id("e9")], &[], false);
        drain(&mut c);
        c.handle_tick(t(20_000), &[id("e9")], &[], false);
        assert!(!drain(&mut c).iter().any(|o| matches!(
            o,
            CellsOut::Send {
                msg: PeerMessage::CellQuery(_),
                ..
            } | CellsOut::Bootstrap { .. }
        )));
        c.handle_message(
            id("e9"),
            PeerMessage::CellMembers(CellMembers {
                cell: CellId::from_name("east"),
                members: vec![member("e9", "10.0.0.5:7700", true)],
            }),
            Vec::new,
        );
        assert!(drain(&mut c).is_empty());
        assert_eq!(c.stats.bootstraps, 2);
    }

    #[test]
    fn the_federation_members_make_one_entry_per_cell() {
        let m = |cell: &str, n: &str, members: u32| FederationMember {
            cell: cell.into(),
            aggregate: agg(members),
            contact: contact(n),
        };
        let d = directory_from(vec![
            m("east", "e1", 3),
            m("west", "w1", 5),
            m("east", "e2", 4),
        ]);
        assert_eq!(d.len(), 2);
        let east = d.iter().find(|e| e.name == "east").unwrap();
        assert_eq!(east.gateways.len(), 2);
        assert_eq!(east.aggregate.members, 4, "the fullest view wins");
    }
}
