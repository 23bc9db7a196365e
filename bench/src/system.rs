//! What the machine allows and is: the open-file limit, the filesystem under the data
//! directory, and a process's memory and CPU time, read from `/proc` (Linux); elsewhere these
//! read as unknown.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::path::Path;
use std::sync::OnceLock;

/// The soft limit on open files (`ulimit -n`); `None` when unknown or unlimited.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Fails with a message saying what to do when fewer than `needed` files may be open.
pub fn ensure_open_files(needed: u64) -> Result<()> {
    match open_files_limit() {
        Some(limit) if limit < needed => bail!(
            "this run needs about {needed} open files (a socket on each side of every \
             connection, both in this process) but the limit is {limit}: raise it with \
             `ulimit -n {needed}` (or more) in the shell that runs the benchmark, or ask for \
             fewer watchers"
        ),
        _ => Ok(()),
    }
}

/// The type of the filesystem that holds `path` (`ext4`, `tmpfs`, ...), from `/proc/mounts`.
pub fn filesystem_type(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let mount_point = unescape_mount_path(fields.nth(1)?);
            let fs_type = fields.next()?;
            path.starts_with(&mount_point)
                .then(|| (mount_point.len(), fs_type.to_string()))
        })
        // The deepest mount point wins; among equals the last mounted, which hides the others.
        .max_by_key(|(depth, _)| *depth)
        .map(|(_, fs_type)| fs_type)
}

/// `/proc/mounts` writes space, tab, newline and backslash in octal (`\040`).
fn unescape_mount_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('\\') {
        out.push_str(&rest[..pos]);
        let code = rest
            .get(pos + 1..pos + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[pos + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[pos + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Filesystems on which an fsync costs nothing, so "durable" numbers would not be.
pub fn is_memory_backed(fs_type: &str) -> bool {
    matches!(fs_type, "tmpfs" | "ramfs")
}

/// The 1-minute load average (`/proc/loadavg`): runnable tasks, averaged; above the CPU count
/// the machine was busy with something.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A process's resident memory and the CPU time it has used so far (all threads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProcStats {
    /// `VmRSS` from `/proc/PID/status`.
    pub rss_bytes: u64,
    /// `RssAnon`: the private part of the RSS. The rest is mostly the executable's and
    /// libraries' pages, which every process running the same binary shares.
    pub rss_anon_bytes: u64,
    /// utime + stime from `/proc/PID/stat`, in seconds.
    pub cpu_seconds: f64,
}

impl ProcStats {
    pub fn rss_mb(&self) -> f64 {
        self.rss_bytes as f64 / (1024.0 * 1024.0)
    }
}

/// The memory and CPU time of process `pid`; `None` for this process.
pub fn proc_stats(pid: Option<u32>) -> Result<ProcStats> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_string(),
    };
    let status = std::fs::read_to_string(format!("{dir}/status"))
        .with_context(|| format!("cannot read {dir}/status"))?;
    let stat = std::fs::read_to_string(format!("{dir}/stat"))
        .with_context(|| format!("cannot read {dir}/stat"))?;
    Ok(ProcStats {
        rss_bytes: parse_kb_line(&status, "VmRSS:").context("no VmRSS line in /proc/PID/status")?,
        rss_anon_bytes: parse_kb_line(&status, "RssAnon:").unwrap_or(0),
        cpu_seconds: parse_cpu_ticks(&stat).context("cannot parse /proc/PID/stat")? as f64
            / clock_ticks_per_second() as f64,
    })
}

/// `VmRSS:   12345 kB` -> bytes.
fn parse_kb_line(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime (fields 14 and 15) in clock ticks. The command name (field 2) is in
/// parentheses and may hold spaces, so fields are counted from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, so index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `getconf CLK_TCK` (the workspace forbids the `unsafe` a direct `sysconf` call needs); 100,
/// the value on every common Linux, when it cannot be asked.
fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/mnt/my\040disk"), "/mnt/my disk");
        assert_eq!(unescape_mount_path(r"/a\\b"), r"/a\\b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }

    #[test]
    fn the_root_filesystem_has_a_type_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(filesystem_type(Path::new("/")).is_some());
        }
    }

    #[test]
    fn proc_stat_fields_are_counted_after_the_command_name() {
        let stat = "42 (my (odd) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(
            parse_kb_line("Name:\tx\nVmRSS:\t  2048 kB\n", "VmRSS:"),
            Some(2048 * 1024)
        );
    }

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        if cfg!(target_os = "linux") {
            let stats = proc_stats(None).unwrap();
            assert!(stats.rss_bytes > 0 && stats.cpu_seconds >= 0.0, "{stats:?}");
        }
    }
}
