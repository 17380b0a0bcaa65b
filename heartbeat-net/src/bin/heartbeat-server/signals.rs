//! SIGHUP and SIGUSR1, which no longer end the server:
//!
//! - **SIGHUP** reloads what was read from files at start: the `--expect` list, the
//!   `--auth-keys` table, the `--client-settings` file and the `--tls-cert`/`--tls-key` pair,
//!   where configured. Connections stay open; the next challenges use the new keys, the next
//!   connections the new certificate, and each client whose settings changed a detector of
//!   its new settings at once. A file that cannot be used is logged and the one in force is kept.
//! - **SIGUSR1** prints the current report on stderr, with the hooks' and outputs' counters,
//!   and with `--json` a `{"event":"summary","final":false,...}` line on stdout.
//!
//! Files are read off the server's loop (a blocking thread); the loop is reached only through
//! its control channel ([`ServerControl`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use heartbeat_core::analysis::Report;
use heartbeat_core::server::{ExpectChanges, Server};
use heartbeat_core::{Now, UnixTime};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::output::Output;
use super::{AppCounters, expect, settings, summary_line};
use heartbeat_net::keys;
use heartbeat_net::tls::{self, TlsReload};
use heartbeat_net::{ControlError, ServerControl};

/// What SIGHUP reloads.
#[derive(Debug, Default)]
pub(crate) struct Reload {
    /// `--expect FILE` and `--expect-grace`.
    pub(crate) expect: Option<(PathBuf, Option<Duration>)>,
    /// `--auth-keys FILE`.
    pub(crate) auth_keys: Option<PathBuf>,
    /// `--tls-cert` and `--tls-key`, and the listener's handle.
    pub(crate) tls: Option<(PathBuf, PathBuf, TlsReload)>,
    /// `--client-settings FILE`.
    pub(crate) client_settings: Option<PathBuf>,
}

/// The two handlers, installed (so the signals are no longer fatal) before they run.
#[derive(Debug)]
pub(crate) struct Signals {
    hup: Signal,
    usr1: Signal,
}

impl Signals {
    /// Installs the handlers now.
    pub(crate) fn install() -> anyhow::Result<Self> {
        Ok(Self {
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
            usr1: signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?,
        })
    }

    /// Handles the signals until the server loop is gone.
    pub(crate) async fn run(
        mut self,
        control: ServerControl,
        reload: Reload,
        output: Output,
        json: bool,
        counters: AppCounters,
    ) {
        loop {
            let ok = tokio::select! {
                Some(()) = self.hup.recv() => {
                    tracing::info!("Received SIGHUP: reloading");
                    on_hup(&control, &reload).await
                }
                Some(()) = self.usr1.recv() => on_usr1(&control, &output, json, &counters).await,
                else => return,
            };
            if !ok {
                return;
            }
        }
    }
}

/// How long a signal's request may wait for the server task: a stalled task does not hold up
/// the handlers forever (the request stays queued and may still be carried out later; the
/// log says it got no answer).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `f` on the server in its loop. `Err(true)` once the loop is gone (the handlers stop),
/// `Err(false)` when it did not answer (busy, stalled: logged).
async fn apply<T: Send + 'static>(
    control: &ServerControl,
    f: impl FnOnce(&mut Server, Now) -> T + Send + 'static,
) -> Result<T, bool> {
    control
        .update(CONTROL_TIMEOUT, f)
        .await
        .map_err(answered_error)
}

/// `Err` of [`apply`] from a control error.
fn answered_error(e: ControlError) -> bool {
    if e == ControlError::Stopped {
        return true;
    }
    tracing::warn!("A signal's request to the server got no answer: {e}");
    false
}

async fn on_usr1(
    control: &ServerControl,
    output: &Output,
    json: bool,
    counters: &AppCounters,
) -> bool {
    let answer = control
        .inspect(CONTROL_TIMEOUT, |server, _, now| {
            (server.report(), now.unix)
        })
        .await;
    let (report, time): (Report, UnixTime) = match answer {
        Ok(answer) => answer,
        Err(e) => return !answered_error(e),
    };
    let c = counters.counts();
    output.stderr.line(format!(
        "Report (SIGUSR1), {} client(s):\n{report}hooks: {} ok, {} failed, {} timed out, {} \
         alerts dropped; lines dropped: {} on stderr, {} on stdout",
        report.clients.len(),
        c.hooks.ok,
        c.hooks.failed,
        c.hooks.timed_out,
        c.hooks.dropped,
        c.stderr.dropped,
        c.stdout.dropped,
    ));
    if json {
        output.stdout.line(summary_line(&report, time, false));
    }
    true
}

async fn on_hup(control: &ServerControl, reload: &Reload) -> bool {
    if let Some((path, grace)) = &reload.expect {
        let (p, grace) = (path.clone(), *grace);
        match blocking(move || expect::load(&p, grace)).await {
            Ok(list) => {
                let n = list.len();
                match apply(control, move |s, now| s.set_expected(now, &list)).await {
                    Ok(changes) => tracing::info!(
                        "Reloaded --expect {}: {n} client(s) expected; {}",
                        path.display(),
                        describe(&changes)
                    ),
                    Err(true) => return false,
                    Err(false) => {}
                }
            }
            Err(e) => tracing::error!("Reloading --expect: {e}; keeping the list in force"),
        }
    }
    if let Some(path) = &reload.auth_keys {
        let p = path.clone();
        match blocking(move || keys::load_auth_keys(&p)).await {
            Ok(loaded) => {
                loaded.warnings.iter().for_each(|w| tracing::warn!("{w}"));
                let n = loaded.value.len();
                match apply(control, move |s, _| s.set_auth_keys(loaded.value)).await {
                    Ok(_) => tracing::info!(
                        "Reloaded --auth-keys {}: {n} client key(s); the next connections use \
                         them",
                        path.display()
                    ),
                    Err(true) => return false,
                    Err(false) => {}
                }
            }
            Err(e) => tracing::error!("Reloading --auth-keys: {e}; keeping the keys in force"),
        }
    }
    if let Some(path) = &reload.client_settings {
        let p = path.clone();
        match blocking(move || settings::load(&p)).await {
            Ok(rules) => {
                let described = settings::describe(&rules);
                match apply(control, move |s, now| s.set_client_detectors(now, rules)).await {
                    Ok(changed) => tracing::info!(
                        "Reloaded --client-settings {}: {described}; detector changed for {}",
                        path.display(),
                        if changed.is_empty() {
                            "no client".to_owned()
                        } else {
                            changed
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                    Err(true) => return false,
                    Err(false) => {}
                }
            }
            Err(e) => {
                tracing::error!("Reloading --client-settings: {e}; keeping the settings in force");
            }
        }
    }
    if let Some((cert, key, handle)) = &reload.tls {
        let (c, k) = (cert.clone(), key.clone());
        match blocking(move || tls::server_config(&c, &k)).await {
            Ok((config, warnings)) => {
                warnings.iter().for_each(|w| tracing::warn!("{w}"));
                handle.set(config);
                tracing::info!(
                    "Reloaded --tls-cert {}: the next connections use it",
                    cert.display()
                );
            }
            Err(e) => {
                tracing::error!("Reloading the TLS certificate: {e}; keeping the one in force");
            }
        }
    }
    true
}

/// `f` on a blocking thread (a file read must not hold up the runtime the loop runs on).
async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the reading thread failed: {e}")),
    }
}

/// `added: a, b; removed: c (forgotten, never heard from: c)`, or `no change`.
fn describe(c: &ExpectChanges) -> String {
    let list = |v: &[heartbeat_core::ClientId]| {
        v.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
    };
    let mut parts = Vec::new();
    if !c.added.is_empty() {
        parts.push(format!("added: {}", list(&c.added)));
    }
    if !c.removed.is_empty() {
        let mut removed = format!("removed: {}", list(&c.removed));
        if !c.forgotten.is_empty() {
            removed.push_str(&format!(
                " (forgotten, never heard from: {})",
                list(&c.forgotten)
            ));
        }
        parts.push(removed);
    }
    if parts.is_empty() {
        "no change".to_owned()
    } else {
        parts.join("; ")
    }
}
