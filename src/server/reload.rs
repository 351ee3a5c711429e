//! Hot reload of the policy file and the certificate, by polling.
//!
//! Both files are Kubernetes volume mounts (a ConfigMap and a Secret) that
//! the kubelet updates with an atomic symlink swap, so comparing the bytes
//! read through the path is enough to see a change, and inotify would add
//! nothing but its own failure modes. `SIGHUP` asks for a check at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;

use crate::checks::Mode;
use crate::config::Policy;

use super::metrics::{Metrics, ReloadResult};
use super::swap::Swap;
use super::tls::{CertReloader, Reload};

/// Loads the policy: the file at `path` (or the built-in default), with the
/// `--mode` override applied.
pub fn load_policy(path: Option<&std::path::Path>, mode: Option<Mode>) -> Result<Policy, String> {
    let mut policy = match path {
        Some(path) => Policy::load(path).map_err(|e| e.to_string())?,
        None => Policy::default(),
    };
    if let Some(mode) = mode {
        policy.mode = mode;
    }
    Ok(policy)
}

/// Polls `--config` and swaps in a changed policy once it is valid.
pub struct ConfigReloader {
    path: PathBuf,
    mode: Option<Mode>,
    store: Arc<Swap<Policy>>,
    metrics: Arc<Metrics>,
    /// The text of the last file tried, loaded or rejected.
    seen: Option<String>,
    /// Whether the last poll could not read the file (counted once).
    unreadable: bool,
}

impl ConfigReloader {
    /// Starts from the file as it is now (the policy loaded at start-up).
    pub fn new(path: PathBuf, mode: Option<Mode>, store: Arc<Swap<Policy>>, metrics: Arc<Metrics>) -> Self {
        let seen = std::fs::read_to_string(&path).ok();
        ConfigReloader { path, mode, store, metrics, seen, unreadable: false }
    }

    /// Reads the file and acts on a change.
    pub async fn check(&mut self) -> Reload {
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(text) => text,
            Err(error) => {
                if !self.unreadable {
                    self.unreadable = true;
                    self.metrics.config_reload(ReloadResult::Error);
                    tracing::error!(
                        %error,
                        config = %self.path.display(),
                        "cannot read the policy file; keeping the current policy"
                    );
                }
                return Reload::Rejected;
            }
        };
        self.unreadable = false;
        if self.seen.as_deref() == Some(text.as_str()) {
            return Reload::Unchanged;
        }
        let result = Policy::from_yaml(&text);
        self.seen = Some(text);
        match result {
            Ok(mut policy) => {
                if let Some(mode) = self.mode {
                    policy.mode = mode;
                }
                let mode = policy.mode.as_str();
                self.metrics.set_exemption_expiries(&policy);
                self.store.store(Arc::new(policy));
                self.metrics.config_reload(ReloadResult::Success);
                tracing::info!(config = %self.path.display(), mode, "loaded the changed policy file");
                Reload::Loaded
            }
            Err(reason) => {
                self.metrics.config_reload(ReloadResult::Error);
                tracing::error!(
                    config = %self.path.display(),
                    %reason,
                    "rejected the changed policy file; keeping the current policy"
                );
                Reload::Rejected
            }
        }
    }
}

/// Runs `check` every `interval`, and at once whenever `nudge` is notified.
async fn every<F>(interval: Duration, nudge: Arc<Notify>, mut check: F)
where
    F: AsyncCheck,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; start-up already loaded
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = nudge.notified() => {}
        }
        check.check().await;
    }
}

/// Something [`every`] can poll.
trait AsyncCheck {
    fn check(&mut self) -> impl std::future::Future<Output = Reload> + Send;
}

impl AsyncCheck for ConfigReloader {
    fn check(&mut self) -> impl std::future::Future<Output = Reload> + Send {
        ConfigReloader::check(self)
    }
}

impl AsyncCheck for CertReloader {
    fn check(&mut self) -> impl std::future::Future<Output = Reload> + Send {
        CertReloader::check(self)
    }
}

/// Polls the policy file in a task of its own.
pub fn spawn_config(reloader: ConfigReloader, interval: Duration, nudge: Arc<Notify>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(every(interval, nudge, reloader))
}

/// Polls the certificate files in a task of its own.
pub fn spawn_cert(reloader: CertReloader, interval: Duration, nudge: Arc<Notify>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(every(interval, nudge, reloader))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_old_policy_when_the_new_one_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, "mode: enforce\n").unwrap();
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(Swap::new(Arc::new(load_policy(Some(&path), None).unwrap())));
        let mut reloader = ConfigReloader::new(path.clone(), None, store.clone(), metrics.clone());
        assert_eq!(reloader.check().await, Reload::Unchanged);

        std::fs::write(&path, "mode: audit\n").unwrap();
        assert_eq!(reloader.check().await, Reload::Loaded);
        assert_eq!(store.load().mode, Mode::Audit);

        std::fs::write(&path, "mode: strict\n").unwrap();
        assert_eq!(reloader.check().await, Reload::Rejected);
        assert_eq!(reloader.check().await, Reload::Unchanged, "a rejected file is counted once");
        assert_eq!(store.load().mode, Mode::Audit);
        let text = metrics.render();
        assert!(text.contains(r#"podgate_config_reloads_total{result="success"} 1"#), "{text}");
        assert!(text.contains(r#"podgate_config_reloads_total{result="error"} 1"#), "{text}");
    }

    #[tokio::test]
    async fn mode_override_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, "mode: enforce\n").unwrap();
        let store = Arc::new(Swap::new(Arc::new(load_policy(Some(&path), Some(Mode::Audit)).unwrap())));
        assert_eq!(store.load().mode, Mode::Audit);
        let mut reloader =
            ConfigReloader::new(path.clone(), Some(Mode::Audit), store.clone(), Arc::new(Metrics::new()));
        std::fs::write(&path, "mode: enforce\nchecks:\n  runAsUser:\n    minUid: 2000\n").unwrap();
        assert_eq!(reloader.check().await, Reload::Loaded);
        assert_eq!(store.load().mode, Mode::Audit);
        assert_eq!(store.load().checks.run_as_user.min_uid, 2000);
    }
}
