//! Bringing replicas up: resolution at start (and again every `resolve_interval` for
//! `dns:///`), a probe per down replica (new channel, health, `Describe`, with backoff
//! and, after error trips, probation), and the health checks that notice a dead replica
//! without waiting for a client's call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use tokio::time::Instant;
use tracing::{info, warn};

use super::Plugin;
use super::call::failure_kind;
use super::describe::health_check;
use super::replicas::{Replica, Target, channel, resolve};
use crate::plugins::endpoint::Endpoint;
use crate::plugins::error::PluginError;
use crate::plugins::rpc::ErrorKind;

impl Plugin {
    /// Resolves, starts probing every replica, and waits until one has answered
    /// `Describe` (or `startup_timeout` passes). Also starts re-resolution for `dns:///`.
    pub async fn start(self: &Arc<Self>) -> Result<(), PluginError> {
        let deadline = Instant::now() + self.config.startup_timeout;
        let mut last_err;
        loop {
            match resolve(&self.config.endpoint).await {
                Ok(t) if !t.is_empty() => {
                    self.reconcile(t);
                    break;
                }
                Ok(_) => last_err = "the name resolved to no address".into(),
                Err(e) => last_err = e,
            }
            if Instant::now() >= deadline {
                return Err(PluginError::Startup {
                    alias: self.alias.clone(),
                    endpoint: self.config.endpoint.to_string(),
                    waited: self.config.startup_timeout,
                    cause: last_err,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if matches!(self.config.endpoint, Endpoint::Dns { .. }) {
            let me = self.clone();
            tokio::spawn(async move { me.resolve_loop().await });
        }
        loop {
            if self.replica_health().1 > 0 {
                return Ok(());
            }
            if let Some(cause) = self.refused.lock().take() {
                return Err(PluginError::Refused {
                    alias: self.alias.clone(),
                    cause,
                });
            }
            if Instant::now() >= deadline {
                return Err(PluginError::Startup {
                    alias: self.alias.clone(),
                    endpoint: self.config.endpoint.to_string(),
                    waited: self.config.startup_timeout,
                    cause: match self.last_failure.lock().clone() {
                        Some(why) => {
                            format!("no replica answered Describe; the last attempt: {why}")
                        }
                        None => "no replica answered Describe".into(),
                    },
                });
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return Err(PluginError::Cancelled),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }

    async fn resolve_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.resolve_interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match resolve(&self.config.endpoint).await {
                Ok(t) if !t.is_empty() => self.reconcile(t),
                Ok(_) => {
                    warn!(plugin = %self.alias, "endpoint resolved to no address; keeping the known replicas")
                }
                Err(e) => {
                    warn!(plugin = %self.alias, cause = %e, "re-resolution failed; keeping the known replicas")
                }
            }
        }
    }

    /// Brings the replica set in line with `targets`: new ones are added (down, to be
    /// probed), vanished ones removed.
    pub(super) fn reconcile(self: &Arc<Self>, targets: Vec<(String, Target)>) {
        let mut added = Vec::new();
        {
            let mut replicas = self.replicas.write();
            replicas.retain(|r| {
                let keep = targets.iter().any(|(l, _)| *l == r.label);
                if !keep {
                    info!(plugin = %self.alias, replica = %r.label, "replica removed");
                }
                keep
            });
            for (label, target) in targets {
                if replicas.iter().any(|r| r.label == label) {
                    continue;
                }
                let replica = Arc::new(Replica {
                    channel: RwLock::new(channel(&self.template, &target)),
                    label,
                    target,
                    up: AtomicBool::new(false),
                    probing: AtomicBool::new(false),
                    consecutive_errors: AtomicU32::new(0),
                    calls: AtomicU64::new(0),
                    answered: AtomicU64::new(0),
                    trips: AtomicU32::new(0),
                });
                replicas.push(replica.clone());
                added.push(replica);
            }
        }
        for replica in added {
            self.spawn_probe(replica);
        }
    }

    pub(super) fn spawn_probe(self: &Arc<Self>, replica: Arc<Replica>) {
        if replica.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            me.probe(&replica).await;
            replica.probing.store(false, Ordering::Release);
        });
    }

    /// Probes a down replica with backoff until it answers health and `Describe`.
    ///
    /// A replica tripped by errors (not by a lost connection) is waited for first, longer
    /// each time in a row, and comes back on probation: one more error trips it again.
    /// So a plugin that answers health but stalls its handlers costs little per call.
    async fn probe(&self, replica: &Replica) {
        let mut backoff = Duration::from_millis(50);
        let trips = replica.trips.load(Ordering::Acquire);
        if trips > 0 {
            let wait = (backoff * 2u32.saturating_pow(trips - 1)).min(self.config.max_backoff);
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let mut attempts = 0u32;
        loop {
            if self.shutdown.is_cancelled() || !self.is_current(replica) {
                return;
            }
            let channel = channel(&self.template, &replica.target);
            match self.describe_on(channel.clone()).await {
                Ok(described) => {
                    *replica.channel.write() = channel;
                    let probation = if trips > 0 {
                        self.config.failure_threshold - 1
                    } else {
                        0
                    };
                    replica
                        .consecutive_errors
                        .store(probation, Ordering::Release);
                    info!(
                        plugin = %self.alias,
                        replica = %replica.label,
                        name = %described.name,
                        version = %described.version,
                        roles = ?described.roles,
                        "plugin described; replica up"
                    );
                    // The description is stored before the replica counts as up: start-up
                    // checks the roles as soon as it sees a replica up.
                    *self.described.write() = Some(described);
                    replica.up.store(true, Ordering::Release);
                    return;
                }
                Err(cause) => {
                    *self.last_failure.lock() = Some(format!("{}: {cause}", replica.label));
                    attempts += 1;
                    // A starting process takes a moment to listen: say nothing for the
                    // first attempts, then every tenth, so a long outage does not flood.
                    if attempts == 3 || attempts.is_multiple_of(10) {
                        warn!(plugin = %self.alias, replica = %replica.label, %cause, attempts, "plugin not answering; retrying");
                    }
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    fn is_current(&self, replica: &Replica) -> bool {
        self.replicas
            .read()
            .iter()
            .any(|r| std::ptr::eq(Arc::as_ptr(r), replica))
    }

    /// Asks each up replica's gRPC health service, on the connection calls use, whether
    /// it still answers; returns how many said SERVING (a plugin without the health
    /// service counts as serving when it answers). A replica whose connection is gone,
    /// or that says it is not serving, is marked down and probed, as after a failed
    /// call. So a plugin that died is seen down without waiting for a client's call.
    pub async fn check_health(self: &Arc<Self>) -> usize {
        let up = self.up_replicas();
        let timeout = self.config.timeout.max(Duration::from_millis(500));
        let checks = up.iter().map(|replica| async move {
            let channel = self.authed(replica.channel.read().clone());
            let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
            match health_check(channel, timeout).await {
                Ok(Ok(resp)) if resp.status == serving => true,
                Ok(Ok(_)) => {
                    self.mark_down(replica, "health check: not serving");
                    false
                }
                Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => true,
                Ok(Err(s)) if failure_kind(&s, false) == ErrorKind::Unavailable => {
                    self.mark_down(replica, "health check: transport failure");
                    false
                }
                // Slow or failing otherwise: not counted as answering now; calls and
                // failure_threshold decide whether it is down.
                Ok(Err(_)) | Err(_) => false,
            }
        });
        futures_util::future::join_all(checks)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }

    /// The `Events` stream on `replica` failed: its connection is gone, so it is marked
    /// down and probed (and described again) like after a failed call.
    pub(crate) fn stream_lost(self: &Arc<Self>, replica: &Arc<Replica>) {
        self.mark_down(replica, "Events stream lost");
    }

    pub(super) fn mark_down(self: &Arc<Self>, replica: &Arc<Replica>, why: &str) {
        if replica.up.swap(false, Ordering::AcqRel) {
            warn!(plugin = %self.alias, replica = %replica.label, cause = why, "replica marked down; probing");
        }
        self.spawn_probe(replica.clone());
    }
}
