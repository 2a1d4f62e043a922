//! A reload of the plugin sections: what is kept, pushed, started, replaced and
//! removed, and how a failure anywhere leaves the set in force untouched.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::config::{PluginConfig, PluginSections};
use super::error::PluginError;
use super::host::{Owned, PluginHost};
use super::plugin::Plugin;
use super::set::OpenChain;

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Plugins started and joined.
    pub added: Vec<String>,
    /// Plugins drained and stopped.
    pub removed: Vec<String>,
    /// Plugins whose endpoint or call settings changed: replaced by a new instance.
    pub replaced: Vec<String>,
    /// Plugins whose `config:` was pushed again with `Describe`.
    pub reconfigured: Vec<String>,
    /// The generation now in force.
    pub generation: u64,
    /// Chains the reload removed: what was checked before is now allowed.
    pub opened: Vec<OpenChain>,
}

/// The plugin configuration without its pushed `config:`: when only that differs, the
/// plugin is kept and its configuration pushed again; otherwise it is replaced.
fn transport_part(pc: &PluginConfig) -> PluginConfig {
    PluginConfig {
        config: None,
        ..pc.clone()
    }
}

impl PluginHost {
    /// Re-reads nothing itself: applies `config`'s plugin sections. Plugins added are
    /// started and described before they join a chain; removed ones leave the chains,
    /// finish their calls in flight and are stopped; a changed `config:` is pushed with
    /// `Describe` (the plugin keeps serving); any other change to a plugin replaces it.
    /// If anything fails (a plugin does not start, a chain member lacks its role, a
    /// plugin rejects its new `config:`), nothing changes and the error says why.
    pub async fn reload(&self, config: &PluginSections) -> Result<ReloadSummary, PluginError> {
        let _one = self.reloading.lock().await;
        let old = self.current();
        let mut summary = ReloadSummary::default();
        let mut kept = BTreeMap::new();
        let mut to_start = Vec::new();
        let mut to_push = Vec::new();
        for (alias, pc) in &config.plugins {
            match old.plugins.get(alias) {
                Some(p) if transport_part(&p.config) == transport_part(pc) => {
                    if p.pushed_config() != pc.config {
                        to_push.push((p.clone(), pc.config.clone()));
                    }
                    let sub = old
                        .events
                        .subscribers()
                        .iter()
                        .find(|s| s.alias == *alias)
                        .cloned();
                    kept.insert(alias.clone(), (p.clone(), sub));
                }
                Some(_) => {
                    summary.replaced.push(alias.clone());
                    to_start.push(alias);
                }
                None => {
                    summary.added.push(alias.clone());
                    to_start.push(alias);
                }
            }
        }
        // A kept plugin's token_file is read again (a rotated token applies now); one that
        // cannot be read fails the reload before anything changed.
        for (plugin, _) in kept.values() {
            plugin.reload_token()?;
        }
        summary.removed = old
            .plugins
            .keys()
            .filter(|a| !config.plugins.contains_key(*a))
            .cloned()
            .collect();
        // A replaced plugin's new instance starts beside the old one, which serves until
        // the new set is in force (a unix socket path is taken over by the new process;
        // a TCP port in use makes the new instance fail to start, and the reload with
        // it). The old instance's process and stream are set aside meanwhile.
        let set_aside: Vec<(String, Owned)> = {
            let mut owned = self.owned.lock();
            summary
                .replaced
                .iter()
                .filter_map(|a| owned.remove(a).map(|o| (a.clone(), o)))
                .collect()
        };
        let restore = |set_aside: Vec<(String, Owned)>| {
            let mut owned = self.owned.lock();
            for (alias, o) in set_aside {
                owned.insert(alias, o);
            }
        };
        let fresh = match self.start_plugins(config, &to_start).await {
            Ok(fresh) => fresh,
            Err(err) => {
                restore(set_aside);
                return Err(err);
            }
        };
        let fresh_list: Vec<Arc<Plugin>> = fresh.values().cloned().collect();
        let fresh_names: Vec<String> = fresh.keys().cloned().collect();
        // Push changed configurations, then build the new set. Any failure undoes the
        // pushes made so far (newest first), stops the plugins just started and gives the
        // replaced ones their processes back: the set in force is untouched.
        let mut pushed: Vec<(Arc<Plugin>, Option<serde_json::Value>)> = Vec::new();
        let built = async {
            for (plugin, new_config) in to_push {
                let before = plugin.pushed_config();
                plugin.push_config(new_config).await?;
                summary.reconfigured.push(plugin.alias.clone());
                pushed.push((plugin, before));
            }
            summary.generation = old.generation + 1;
            self.assemble(config, fresh, &kept, summary.generation)
        }
        .await;
        let set = match built {
            Ok(set) => set,
            Err(err) => {
                for (p, previous) in pushed.into_iter().rev() {
                    let _ = p.push_config(previous).await;
                }
                self.retire(&fresh_names, fresh_list, Duration::from_secs(5))
                    .await;
                restore(set_aside);
                return Err(err);
            }
        };
        // Kept plugins whose re-Describe changed their event kinds keep their queue;
        // one that no longer wants events has its stream ended.
        let streaming: Vec<String> = set
            .events
            .subscribers()
            .iter()
            .map(|s| s.alias.clone())
            .collect();
        for alias in kept.keys() {
            if !streaming.contains(alias)
                && let Some(token) = self.own(alias).stream.take()
            {
                token.cancel();
            }
        }
        let was_open = old.open_chains();
        summary.opened = set
            .open_chains()
            .into_iter()
            .filter(|open| !was_open.contains(open))
            .collect();
        for open in &summary.opened {
            warn!(
                "the reload removed the {} section: {} now",
                open.section, open.allows
            );
        }
        self.install(set);
        let removed: Vec<Arc<Plugin>> = summary
            .removed
            .iter()
            .filter_map(|a| old.plugins.get(a).cloned())
            .collect();
        self.retire(&summary.removed, removed, Duration::from_secs(5))
            .await;
        for alias in &summary.replaced {
            if let Some(p) = old.plugins.get(alias) {
                p.retire();
            }
        }
        let mut processes = Vec::new();
        for (_, o) in set_aside {
            if let Some(token) = o.stream {
                token.cancel();
            }
            processes.extend(o.process);
        }
        futures_util::future::join_all(
            processes
                .into_iter()
                .map(|s| s.stop(Duration::from_secs(5))),
        )
        .await;
        Ok(summary)
    }
}
