//! Restarts without refused connections: the listening sockets pass from the running
//! process to its replacement over a Unix socket.

use std::io;

use std::os::fd::AsFd;

/// Sets the backlog of a socket that is already listening (Linux applies a second
/// `listen` to the accept queue's limit).
pub(crate) fn listen(socket: &impl AsFd, backlog: u32) -> io::Result<()> {
    rustix::net::listen(socket, i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(())
}

/// The handoff protocol's version, reported as `/server_info`'s `hot_restart_version`.
pub const PROTOCOL: &str = "mesh-restart.1";
