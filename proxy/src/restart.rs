//! Restarts without refused connections: the running process hands its listening sockets to
//! the process replacing it over a Unix socket (SCM_RIGHTS, as Envoy's hot restart does), so
//! both accept from the same kernel queues and nothing queued is lost when the old one stops.
//!
//! The protocol, one text line each way per exchange, the successor asking:
//! - `hello mesh-restart.1` → `ok <start>`: the first process's start (ms since the epoch,
//!   for `uptime_all_epochs`), or `busy` while another successor is connected;
//! - `socket <addr>` → `socket` with the descriptor attached, or `none`;
//! - `drain` → `ok`: the old process stops accepting and drains (its drain timeout), then
//!   exits; its handoff socket closes.
//!
//! A successor asks for a listener's socket when its configuration names the listener
//! (configured address, fixed port) and for the admin socket at start. Once it serves every
//! listener of its configuration it takes the handoff path over (bound beside it and renamed
//! over it, so the path always answers) and asks the old process to drain. Until then the
//! old process keeps serving: a successor whose configuration never arrives, or that dies,
//! changes nothing. Nobody at the path (no file, or a stale one) is a first start.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, oneshot};

/// The handoff protocol's version, reported as `/server_info`'s `hot_restart_version`.
pub const PROTOCOL: &str = "mesh-restart.1";

/// Longest line either side sends.
const MAX_LINE: usize = 256;
/// How long the old process gets to answer one request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    #[error("handoff socket {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("handoff: {0}")]
    Io(#[from] io::Error),
    #[error("the process at the handoff socket answered {0:?}")]
    Protocol(String),
    #[error("another process is already taking over from the one at the handoff socket")]
    Busy,
    #[error("the process at the handoff socket did not answer within {ANSWER_TIMEOUT:?}")]
    Timeout,
    #[error("the process being replaced is gone")]
    Gone,
}

/// Sets the backlog of a socket that is already listening (Linux applies a second
/// `listen` to the accept queue's limit).
pub(crate) fn listen(socket: &impl AsFd, backlog: u32) -> io::Result<()> {
    rustix::net::listen(socket, i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(())
}

/// One end of a handoff connection: lines with, at times, a descriptor attached.
struct Channel {
    stream: UnixStream,
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Channel {
    fn new(stream: UnixStream) -> Channel {
        Channel {
            stream,
            buf: Vec::new(),
            fds: Vec::new(),
        }
    }

    async fn send(&self, line: &str, fd: Option<&OwnedFd>) -> io::Result<()> {
        let line = format!("{line}\n");
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fds;
        if let Some(fd) = fd {
            fds = [fd.as_fd()];
            control.push(SendAncillaryMessage::ScmRights(&fds));
        }
        let mut sent = 0;
        while sent < line.len() {
            self.stream.writable().await?;
            let iov = [IoSlice::new(&line.as_bytes()[sent..])];
            match self.stream.try_io(Interest::WRITABLE, || {
                Ok(rustix::net::sendmsg(
                    &self.stream,
                    &iov,
                    &mut control,
                    SendFlags::NOSIGNAL,
                )?)
            }) {
                // The descriptor went with the first bytes.
                Ok(n) => {
                    sent += n;
                    control.clear();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next line; `None` when the peer closed.
    async fn recv(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return Ok(Some(
                    String::from_utf8_lossy(&line[..end]).trim().to_owned(),
                ));
            }
            if self.buf.len() > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "handoff line too long",
                ));
            }
            self.stream.readable().await?;
            let mut chunk = [0u8; MAX_LINE];
            let (buf, fds, stream) = (&mut self.buf, &mut self.fds, &self.stream);
            let read = stream.try_io(Interest::READABLE, || {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let mut iov = [IoSliceMut::new(&mut chunk)];
                let got =
                    rustix::net::recvmsg(stream, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
                for message in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(rights) = message {
                        fds.extend(rights);
                    }
                }
                Ok(got.bytes)
            });
            match read {
                Ok(0) => return Ok(None),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends a request and waits for its answer (and the descriptor that came with it).
    async fn ask(&mut self, line: &str) -> Result<(String, Option<OwnedFd>), RestartError> {
        let exchange = async {
            self.send(line, None).await?;
            self.fds.clear();
            let answer = self.recv().await?.ok_or(RestartError::Gone)?;
            Ok::<_, RestartError>((answer, self.fds.pop()))
        };
        tokio::time::timeout(ANSWER_TIMEOUT, exchange)
            .await
            .map_err(|_| RestartError::Timeout)?
    }
}

/// The process this one replaces, seen from its successor.
pub struct Parent {
    channel: Mutex<Option<Channel>>,
    first_started_at: SystemTime,
}

impl Parent {
    /// Connects to the process serving the handoff socket at `path`. `None` when nobody
    /// serves it (no such file, or a stale one): a first start. While it is busy with
    /// another successor (one that may just have died), asks again for a few seconds.
    pub async fn connect(path: &Path) -> Result<Option<Parent>, RestartError> {
        let mut attempts = 0;
        loop {
            match Parent::connect_once(path).await {
                Err(RestartError::Busy) if attempts < 50 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    async fn connect_once(path: &Path) -> Result<Option<Parent>, RestartError> {
        let stream = match UnixStream::connect(path).await {
            Ok(stream) => stream,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(None);
            }
            Err(source) => {
                return Err(RestartError::Connect {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let mut channel = Channel::new(stream);
        let (answer, _) = channel.ask(&format!("hello {PROTOCOL}")).await?;
        let first_started_at = match answer.split_once(' ') {
            Some(("ok", ms)) => ms
                .parse::<u64>()
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
                .map_err(|_| RestartError::Protocol(answer.clone()))?,
            None if answer == "busy" => return Err(RestartError::Busy),
            _ => return Err(RestartError::Protocol(answer)),
        };
        Ok(Some(Parent {
            channel: Mutex::new(Some(channel)),
            first_started_at,
        }))
    }

    /// When the first process of this chain of restarts started.
    pub fn first_started_at(&self) -> SystemTime {
        self.first_started_at
    }

    /// The listening socket the old process has for `addr`, if it has one; `None` too once
    /// it has been told to drain, or is gone.
    pub async fn take(
        &self,
        addr: SocketAddr,
    ) -> Result<Option<std::net::TcpListener>, RestartError> {
        let mut channel = self.channel.lock().await;
        let Some(conn) = channel.as_mut() else {
            return Ok(None);
        };
        match conn.ask(&format!("socket {addr}")).await {
            Ok((answer, Some(fd))) if answer == "socket" => {
                let socket = std::net::TcpListener::from(fd);
                socket.set_nonblocking(true)?;
                Ok(Some(socket))
            }
            Ok((answer, None)) if answer == "none" => Ok(None),
            Ok((answer, _)) => Err(RestartError::Protocol(answer)),
            Err(e) => {
                // Gone or broken: from now on this process binds its own sockets.
                *channel = None;
                Err(e)
            }
        }
    }

    /// Tells the old process to stop accepting and drain. From then on [`Parent::take`]
    /// finds nothing.
    pub async fn drain(&self) -> Result<(), RestartError> {
        let mut channel = self.channel.lock().await;
        let Some(mut conn) = channel.take() else {
            return Err(RestartError::Gone);
        };
        match conn.ask("drain").await? {
            (answer, _) if answer == "ok" => Ok(()),
            (answer, _) => Err(RestartError::Protocol(answer)),
        }
    }
}

/// Binds the handoff socket at `path` for this process's successor: beside it first, then
/// renamed over it, so that the path never stops answering (the old process's socket stays
/// bound, unreachable, until it exits).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}", std::process::id()));
    let beside = PathBuf::from(name);
    let _ = std::fs::remove_file(&beside);
    let listener = UnixListener::bind(&beside)?;
    std::fs::rename(&beside, path)?;
    Ok(listener)
}

/// Looks up the listening socket this process has for an address (its listeners' and its
/// admin's), as a new descriptor to hand over.
pub type Sockets = Arc<dyn Fn(SocketAddr) -> Option<OwnedFd> + Send + Sync>;

/// Serves the handoff socket until a successor asks this process to drain; then answers it,
/// fires `drain_asked` and returns (closing the socket). One successor at a time: another
/// one connecting meanwhile is told `busy`.
pub async fn serve(
    listener: UnixListener,
    sockets: Sockets,
    first_started_at: SystemTime,
    drain_asked: oneshot::Sender<()>,
) {
    let started_ms = first_started_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut session: Option<tokio::task::JoinHandle<bool>> = None;
    let mut drain_asked = Some(drain_asked);
    loop {
        tokio::select! {
            drained = async {
                match session.as_mut() {
                    Some(task) => task.await.unwrap_or(false),
                    None => std::future::pending().await,
                }
            } => {
                session = None;
                if drained {
                    if let Some(asked) = drain_asked.take() {
                        let _ = asked.send(());
                    }
                    return;
                }
            }
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "handoff socket accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let channel = Channel::new(stream);
                if session.is_some() {
                    let _ = channel.send("busy", None).await;
                    continue;
                }
                tracing::info!("a new process connected to take over");
                session = Some(tokio::spawn(handoff(channel, Arc::clone(&sockets), started_ms)));
            }
        }
    }
}

/// One successor's requests; true when it asked this process to drain.
async fn handoff(mut channel: Channel, sockets: Sockets, started_ms: u64) -> bool {
    loop {
        let line = match channel.recv().await {
            Ok(Some(line)) => line,
            Ok(None) => {
                tracing::info!("the new process went away before taking over; still serving");
                return false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "handoff connection failed; still serving");
                return false;
            }
        };
        let sent = match line.split_once(' ').unwrap_or((line.as_str(), "")) {
            ("hello", version) if version == PROTOCOL => {
                channel.send(&format!("ok {started_ms}"), None).await
            }
            ("hello", version) => {
                tracing::warn!(version, "a new process speaks another handoff protocol");
                channel
                    .send(&format!("error protocol {PROTOCOL}"), None)
                    .await
            }
            ("socket", addr) => match addr.parse::<SocketAddr>().ok().and_then(|a| sockets(a)) {
                Some(fd) => {
                    tracing::info!(addr, "handed a listening socket to the new process");
                    channel.send("socket", Some(&fd)).await
                }
                None => channel.send("none", None).await,
            },
            ("drain", _) => {
                let sent = channel.send("ok", None).await;
                tracing::info!("the new process serves every listener; draining this one");
                // Told to drain even if the answer was lost: the successor serves already.
                let _ = sent;
                return true;
            }
            _ => channel.send("error unknown request", None).await,
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "handoff connection failed; still serving");
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket_of(listener: &std::net::TcpListener) -> Option<OwnedFd> {
        listener.as_fd().try_clone_to_owned().ok()
    }

    #[tokio::test]
    async fn a_successor_takes_sockets_then_drains_the_old_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handoff.sock");
        assert!(
            Parent::connect(&path).await.unwrap().is_none(),
            "first start"
        );

        let old = Arc::new(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = old.local_addr().unwrap();
        let shared = Arc::clone(&old);
        let sockets: Sockets = Arc::new(move |a| (a == addr).then(|| socket_of(&shared)).flatten());
        let started = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let (asked_tx, asked) = oneshot::channel();
        let server = tokio::spawn(serve(bind(&path).unwrap(), sockets, started, asked_tx));

        let parent = Parent::connect(&path).await.unwrap().unwrap();
        assert_eq!(parent.first_started_at(), started);
        // A second successor meanwhile is refused.
        assert!(matches!(
            Parent::connect_once(&path).await,
            Err(RestartError::Busy)
        ));

        let taken = parent.take(addr).await.unwrap().unwrap();
        assert_eq!(taken.local_addr().unwrap(), addr);
        assert!(
            parent
                .take("127.0.0.1:1".parse().unwrap())
                .await
                .unwrap()
                .is_none()
        );

        // A connection queued on the old socket is accepted from the taken one.
        let client = std::net::TcpStream::connect(addr).unwrap();
        drop(old);
        let taken = tokio::net::TcpListener::from_std(taken).unwrap();
        let (_, peer) = taken.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());

        parent.drain().await.unwrap();
        asked.await.unwrap();
        server.await.unwrap();
        assert!(parent.take(addr).await.unwrap().is_none());
        // The successor binds the path over; a stale one is no obstacle.
        let next = bind(&path).unwrap();
        drop(next);
        assert!(
            Parent::connect(&path).await.unwrap().is_none(),
            "stale path"
        );
    }

    #[tokio::test]
    async fn a_successor_that_leaves_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handoff.sock");
        let sockets: Sockets = Arc::new(|_| None);
        let (asked_tx, mut asked) = oneshot::channel();
        tokio::spawn(serve(
            bind(&path).unwrap(),
            sockets,
            SystemTime::now(),
            asked_tx,
        ));
        let parent = Parent::connect(&path).await.unwrap().unwrap();
        drop(parent);
        // The next one is served as if the first had never come.
        let parent = Parent::connect(&path).await.unwrap().unwrap();
        parent.drain().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), &mut asked)
            .await
            .unwrap()
            .unwrap();
    }
}
