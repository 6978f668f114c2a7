//! The agent's side of the HTTP API (`--http`, see [`crate::http`]): the
//! core publishes an [`ApiSnapshot`] of its view, tasks and frameworks
//! (coalesced: at most every [`PUBLISH_API_EVERY`], and only when something
//! changed, or every [`REFRESH_API_EVERY`] regardless), answers each
//! [`ApiCommand`] in its one loop through the same paths as the framework
//! socket (the cluster-wide task fan-out, log reads, kills), places
//! submitted tasks with an internal framework named "http" homed on this
//! node, and counts bids, placements and gossip traffic in [`Metrics`].

use super::core::Core;
use super::frameworks::Framework;
use super::queries::{LogReply, TaskReply, merge_rows};
use crate::http::{ApiCommand, ApiSnapshot, CommandError, LocalFramework, Metrics, PeerTotals};
use agora_protocol::wire::{ErrorCode, ReadLog};
use agora_protocol::{FrameworkId, Instant};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Least time between two published snapshots.
pub const PUBLISH_API_EVERY: Duration = Duration::from_millis(200);
/// A snapshot is republished at least this often (gossip counters, ages).
pub const REFRESH_API_EVERY: Duration = Duration::from_secs(2);
/// The internal framework's failover timeout (it never disconnects).
const HTTP_FAILOVER: Duration = Duration::from_secs(3600);

/// What the core keeps for the HTTP API.
pub struct HttpSide {
    snap_tx: watch::Sender<Arc<ApiSnapshot>>,
    /// Shared with the HTTP server, which only reads it on scrapes.
    pub metrics: Arc<Metrics>,
    /// The internal "http" framework that places submitted tasks.
    pub framework: FrameworkId,
    cell_id: String,
    /// Something the snapshot shows changed since the last publish.
    pub dirty: bool,
    last_publish: Instant,
}

impl Core {
    /// Turns the HTTP side on: registers the internal "http" framework and
    /// keeps the snapshot sender and the metrics.
    pub fn enable_http(
        &mut self,
        snap_tx: watch::Sender<Arc<ApiSnapshot>>,
        metrics: Arc<Metrics>,
        cell_id: String,
    ) -> anyhow::Result<()> {
        let text = format!("http-{:08x}@{}", rand::random::<u32>(), self.me);
        let id = FrameworkId::new(&text)
            .map_err(|e| anyhow::anyhow!("cannot name the internal http framework {text}: {e}"))?;
        self.host
            .add_framework(id.clone(), 1, rand::make_rng())
            .map_err(|e| anyhow::anyhow!("cannot register the internal http framework: {e}"))?;
        // Not a socket connection: internal, so it never fails over and is
        // never forgotten (not even when the framework table is full).
        let f = Framework::new(
            id.clone(),
            "http".to_string(),
            String::new(),
            1,
            HTTP_FAILOVER,
            None,
        );
        self.frameworks.insert(id.clone(), f);
        tracing::info!(framework = %id, "internal http framework registered");
        self.http = Some(HttpSide {
            snap_tx,
            metrics,
            framework: id,
            cell_id,
            dirty: true,
            last_publish: Instant::ZERO,
        });
        self.publish_api(self.clock.now());
        Ok(())
    }

    /// Publishes a snapshot if one is due (called after every input).
    pub(super) fn maybe_publish_api(&mut self, now: Instant) {
        let Some(h) = &self.http else { return };
        let since = now - h.last_publish;
        if (h.dirty && since >= PUBLISH_API_EVERY) || since >= REFRESH_API_EVERY {
            self.publish_api(now);
        }
    }

    /// When the loop must wake for a pending snapshot.
    pub(super) fn api_deadline(&self) -> Option<Instant> {
        let h = self.http.as_ref()?;
        Some(if h.dirty {
            h.last_publish + PUBLISH_API_EVERY
        } else {
            h.last_publish + REFRESH_API_EVERY
        })
    }

    fn publish_api(&mut self, now: Instant) {
        let mut rows = BTreeMap::new();
        merge_rows(&mut rows, self.local_rows());
        let tasks = rows.into_values().collect();
        let http_fw = self.http.as_ref().map(|h| h.framework.clone());
        let local: Vec<LocalFramework> = self
            .frameworks
            .values()
            .map(|f| LocalFramework {
                id: f.id.clone(),
                name: f.name.clone(),
                weight: f.weight,
                connected: f.conn.is_some() || Some(&f.id) == http_fw.as_ref(),
            })
            .collect();
        let stats = self.gossip.stats();
        let Some(h) = &mut self.http else { return };
        let snap =
            ApiSnapshot::from_view(self.me.clone(), &h.cell_id, self.host.view(), tasks, &local);
        h.metrics
            .set_gossip_totals(stats.bytes_in, stats.bytes_out, stats.datagrams_rejected);
        let p = self.p2p.stats;
        h.metrics.set_peer_totals(&PeerTotals {
            sent: p.sent,
            received: p.received,
            unroutable: p.unroutable,
            failed: p.failures,
            other_version: p.other_version,
        });
        h.snap_tx.send_replace(Arc::new(snap));
        h.dirty = false;
        h.last_publish = now;
    }

    /// Marks the snapshot stale.
    pub(super) fn api_dirty(&mut self) {
        if let Some(h) = &mut self.http {
            h.dirty = true;
        }
    }

    /// The metrics, when the HTTP API is on.
    pub(super) fn metrics(&self) -> Option<&Metrics> {
        self.http.as_ref().map(|h| &*h.metrics)
    }

    /// Answers one command from the HTTP server.
    pub async fn on_api(&mut self, cmd: ApiCommand) {
        let now = self.clock.now();
        match cmd {
            ApiCommand::ListTasks { reply } => self.start_list_tasks(TaskReply::List(reply)),
            ApiCommand::GetTask { id, reply } => {
                let homed_here = self.host.status_of(&id).is_some();
                let mut rows = BTreeMap::new();
                merge_rows(&mut rows, self.local_rows());
                match rows.remove(&id) {
                    // The home node's row is authoritative; a row of a task
                    // running here but homed elsewhere is good enough.
                    Some(row) if homed_here || row.node.as_ref() == Some(&self.me) => {
                        let _ = reply.send(Some(row));
                    }
                    _ => self.start_list_tasks(TaskReply::Get(id, reply)),
                }
            }
            ApiCommand::ReadLog {
                task_id,
                stream,
                offset,
                max_bytes,
                reply,
            } => {
                let r = ReadLog {
                    request_id: 0,
                    task_id,
                    stream,
                    offset,
                    max_bytes,
                };
                self.start_read_log(LogReply::Api(reply), r).await;
            }
            ApiCommand::Submit { specs, reply } => {
                let _ = reply.send(self.api_submit(now, specs));
            }
            ApiCommand::Kill { task_id, reply } => {
                if self.host.status_of(&task_id).is_some() {
                    // Homed here: the host answers.
                    let answer = self
                        .host
                        .kill(now, None, &task_id)
                        .map(|_| ())
                        .map_err(|e| CommandError::new(e.code, e.message));
                    let _ = reply.send(answer);
                } else {
                    // Homed elsewhere: find a node that knows it, then kill.
                    self.start_list_tasks(TaskReply::Kill(task_id, reply));
                }
            }
        }
        self.api_dirty();
    }

    fn api_submit(
        &mut self,
        now: Instant,
        specs: Vec<agora_protocol::task::TaskSpec>,
    ) -> Result<Vec<agora_protocol::TaskId>, CommandError> {
        let fw = self
            .http
            .as_ref()
            .map(|h| h.framework.clone())
            .ok_or_else(|| {
                CommandError::new(ErrorCode::Busy, "the HTTP API is not enabled on this node")
            })?;
        self.submit_room(&fw, specs.len())
            .and_then(|()| self.host.submit(now, &fw, specs))
            .map_err(|e| CommandError::new(e.code, e.message))
    }
}
