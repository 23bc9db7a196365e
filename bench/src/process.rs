//! `mesh` subcommands run as child processes, so a benchmark can measure a server's own memory
//! and CPU time apart from the load it generates. Addresses come from the `<name> listening
//! addr=...` lines each subcommand logs once it has bound its listeners (the way
//! `tests/src/lib.rs` finds them), so every server can bind `127.0.0.1:0`.

use anyhow::{Context, Result, bail};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::system::{self, ProcStats};

/// How many of a process's last log lines are kept for error messages.
const TAIL_LINES: usize = 40;

/// The workspace this crate lives in.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The `mesh` binary: `MESH_BIN` when set, else built with `cargo build [--release] --bin mesh`
/// in this workspace (by the cargo that runs us, when there is one). Cargo's own output goes to
/// stderr unless `quiet`.
pub fn mesh_bin(release: bool, quiet: bool) -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("MESH_BIN") {
        return Ok(PathBuf::from(bin));
    }
    build_mesh_bin(release, quiet)
}

/// Builds the `mesh` binary and returns its path.
pub fn build_mesh_bin(release: bool, quiet: bool) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = workspace_root();
    let mut command = std::process::Command::new(&cargo);
    command.args(["build", "--bin", "mesh"]).current_dir(&root);
    if release {
        command.arg("--release");
    }
    if quiet {
        command.arg("--quiet");
    }
    let status = command
        .status()
        .with_context(|| format!("cannot run {}", Path::new(&cargo).display()))?;
    if !status.success() {
        bail!(
            "`cargo build{} --bin mesh` failed ({status})",
            if release { " --release" } else { "" }
        );
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target
        .join(if release { "release" } else { "debug" })
        .join("mesh");
    if !bin.is_file() {
        bail!(
            "cargo built the mesh binary, but {} is missing",
            bin.display()
        );
    }
    Ok(bin)
}

/// A `mesh` subcommand running as a child process; killed (SIGKILL) when dropped.
pub struct MeshProcess {
    label: String,
    child: Child,
    pid: u32,
    addrs: HashMap<String, SocketAddr>,
    log: Arc<LogState>,
}

#[derive(Default)]
struct LogState {
    tail: Mutex<VecDeque<String>>,
    warnings: AtomicUsize,
    errors: AtomicUsize,
}

impl MeshProcess {
    /// Runs `bin <args>` and waits (up to `timeout`) until it has logged `<name> listening
    /// addr=...` for each of `listeners`.
    pub async fn start(
        bin: &Path,
        label: &str,
        args: &[&str],
        listeners: &[&str],
        timeout: Duration,
    ) -> Result<MeshProcess> {
        Self::start_with_env(bin, label, args, &[], listeners, timeout).await
    }

    /// [`MeshProcess::start`] with extra environment variables for the child.
    pub async fn start_with_env(
        bin: &Path,
        label: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        listeners: &[&str],
        timeout: Duration,
    ) -> Result<MeshProcess> {
        let mut child = Command::new(bin)
            .args(args)
            .envs(envs.iter().copied())
            .env("MESH_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} {label}", bin.display()))?;
        let pid = child
            .id()
            .with_context(|| format!("mesh {label} exited at once"))?;
        let stderr = child.stderr.take().context("stderr is not piped")?;
        let log = Arc::new(LogState::default());
        let (found_tx, mut found_rx) = mpsc::unbounded_channel::<(String, String)>();
        let wanted: Vec<String> = listeners.iter().map(|l| l.to_string()).collect();
        {
            let log = Arc::clone(&log);
            // Reads stderr to its end, so the child never blocks on a full pipe.
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let line = strip_ansi(&line);
                    if line.contains(" WARN ") {
                        log.warnings.fetch_add(1, Ordering::Relaxed);
                    } else if line.contains(" ERROR ") {
                        log.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some((name, addr)) = listening_line(&line, &wanted) {
                        let _ = found_tx.send((name, addr));
                    }
                    let mut tail = log.tail.lock().unwrap_or_else(|e| e.into_inner());
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        }
        let mut process = MeshProcess {
            label: label.to_string(),
            child,
            pid,
            addrs: HashMap::new(),
            log,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        while process.addrs.len() < listeners.len() {
            match tokio::time::timeout_at(deadline, found_rx.recv()).await {
                Ok(Some((name, addr))) => {
                    let addr: SocketAddr = addr.parse().with_context(|| {
                        format!("mesh {label} logged a bad address for {name}: {addr:?}")
                    })?;
                    process.addrs.insert(name, addr);
                }
                Ok(None) => bail!(
                    "mesh {label} exited before it reported its listeners; its last log \
                     lines:\n{}",
                    process.log_tail()
                ),
                Err(_) => bail!(
                    "mesh {label} did not report its listeners within {}s; its last log \
                     lines:\n{}",
                    timeout.as_secs(),
                    process.log_tail()
                ),
            }
        }
        Ok(process)
    }

    pub fn addr(&self, listener: &str) -> Result<SocketAddr> {
        self.addrs
            .get(listener)
            .copied()
            .with_context(|| format!("mesh {} has no {listener} listener", self.label))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its memory and CPU time so far.
    pub fn stats(&self) -> Result<ProcStats> {
        system::proc_stats(Some(self.pid))
            .with_context(|| format!("cannot read the stats of mesh {}", self.label))
    }

    /// Fails, with the last log lines, if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!(
                "mesh {} exited ({status}); its last log lines:\n{}",
                self.label,
                self.log_tail()
            ),
        }
    }

    /// Log lines at WARN and ERROR level so far.
    pub fn warnings_and_errors(&self) -> (usize, usize) {
        (
            self.log.warnings.load(Ordering::Relaxed),
            self.log.errors.load(Ordering::Relaxed),
        )
    }

    /// The last log lines, for error messages.
    pub fn log_tail(&self) -> String {
        let tail = self.log.tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter()
            .map(|l| format!("  [{}] {l}", self.label))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Kills the process and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// `(name, addr)` from a `... <name> listening addr=<addr> ...` line, for a wanted name.
fn listening_line(line: &str, wanted: &[String]) -> Option<(String, String)> {
    let name = wanted
        .iter()
        .find(|w| line.contains(&format!(" {w} listening")))?;
    let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
    Some((name.clone(), addr.to_string()))
}

/// Removes ANSI escape sequences (`ESC [ ... letter`), in case the child colours its log.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_listening_lines() {
        let wanted = vec!["xds".to_string(), "admin".to_string()];
        let line = "2025-01-01T00:00:00.000001Z  INFO mesh: xds listening addr=127.0.0.1:4242";
        assert_eq!(
            listening_line(line, &wanted),
            Some(("xds".to_string(), "127.0.0.1:4242".to_string()))
        );
        let line = "2025-01-01T00:00:00Z  INFO mesh: registry listening addr=127.0.0.1:1 x=y";
        assert_eq!(listening_line(line, &wanted), None);
        let coloured = "\u{1b}[2m2025\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m mesh: admin listening \
                        \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:9 data_dir=/x";
        assert_eq!(
            listening_line(&strip_ansi(coloured), &wanted),
            Some(("admin".to_string(), "127.0.0.1:9".to_string()))
        );
    }
}
