//! What the machine allows and is: the open-file limit and the filesystem under the data
//! directory, read from `/proc` (Linux); elsewhere these read as unknown.

use anyhow::{Result, bail};
use std::path::Path;

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
}
