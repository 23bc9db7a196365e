//! The demo's child processes: each a process of its own (own process group, so a terminal's
//! Ctrl-C reaches only the demo, which then stops them in order), each logging to a file.

use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

pub struct Component {
    pub name: String,
    pub log: PathBuf,
    pub pid: u32,
    child: tokio::process::Child,
}

pub struct Procs {
    pub dir: PathBuf,
    pub components: Vec<Component>,
}

/// How long a child gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

impl Procs {
    pub fn new(dir: PathBuf) -> Procs {
        Procs {
            dir,
            components: Vec::new(),
        }
    }

    /// Starts `program args` as component `name`, its stdout and stderr in `<dir>/<file>.log`.
    pub fn spawn(&mut self, name: &str, program: &Path, args: &[String]) -> anyhow::Result<()> {
        let file = name.replace([' ', '/'], "-");
        let log = self.dir.join(format!("{file}.log"));
        let out = std::fs::File::create(&log)
            .with_context(|| format!("cannot create the log file {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("cannot open the log file {}", log.display()))?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env("NO_COLOR", "1")
            .env(
                "MESH_LOG",
                std::env::var("MESH_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        #[cfg(unix)]
        cmd.process_group(0);
        let child = cmd.spawn().with_context(|| {
            format!(
                "component {name} failed to start: cannot run {} (log: {})",
                program.display(),
                log.display()
            )
        })?;
        let pid = child.id().unwrap_or_default();
        self.components.push(Component {
            name: name.to_string(),
            log,
            pid,
            child,
        });
        Ok(())
    }

    pub fn pids(&self) -> Vec<u32> {
        self.components.iter().map(|c| c.pid).collect()
    }

    /// An error naming a component that exited, with its log file and its last lines.
    fn exited(c: &Component, status: std::process::ExitStatus) -> anyhow::Error {
        let tail = std::fs::read_to_string(&c.log)
            .map(|t| {
                let lines: Vec<&str> = t.lines().collect();
                lines[lines.len().saturating_sub(6)..].join("\n    ")
            })
            .unwrap_or_default();
        anyhow::anyhow!(
            "component {} exited early ({status}); its log: {}\n    {tail}",
            c.name,
            c.log.display()
        )
    }

    /// Fails if any component has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for c in &mut self.components {
            if let Ok(Some(status)) = c.child.try_wait() {
                return Err(Self::exited(c, status));
            }
        }
        Ok(())
    }

    /// Polls `url` until it answers 2xx, failing when the component exits or `timeout` passes.
    pub async fn wait_ready(
        &mut self,
        name: &str,
        url: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(c) = self.components.iter_mut().find(|c| c.name == name)
                && let Ok(Some(status)) = c.child.try_wait()
            {
                return Err(Self::exited(c, status));
            }
            let probe = crate::ops::request("GET", url, bytes::Bytes::new());
            if let Ok(Ok(a)) = tokio::time::timeout(Duration::from_secs(1), probe).await
                && (200..300).contains(&a.status)
            {
                return Ok(());
            }
            if started.elapsed() > timeout {
                let log = self
                    .components
                    .iter()
                    .find(|c| c.name == name)
                    .map(|c| c.log.display().to_string())
                    .unwrap_or_default();
                anyhow::bail!(
                    "component {name} did not become ready ({url}) within {timeout:?}; its log: {log}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM to every child (newest first), then SIGKILL to those still running after the
    /// grace period; every child is reaped.
    pub async fn shutdown(&mut self) {
        for c in self.components.iter_mut().rev() {
            if matches!(c.child.try_wait(), Ok(None)) {
                terminate(c.pid);
            }
        }
        let deadline = Instant::now() + GRACE;
        for c in self.components.iter_mut().rev() {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, c.child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    eprintln!("  {} did not stop within {GRACE:?}; killing it", c.name);
                    let _ = c.child.kill().await;
                }
            }
        }
    }
}

/// SIGTERM without unsafe code: the system's `kill`.
fn terminate(pid: u32) {
    if pid == 0 {
        return;
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
