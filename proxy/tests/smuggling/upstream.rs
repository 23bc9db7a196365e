//! The battery's upstreams: each case gets its own, so that cases run side by side and every
//! byte an upstream receives belongs to one case.
//!
//! An upstream keeps every connection's bytes exactly as received. It answers each request
//! its strict reader completes (wire.rs): a recording upstream with `200 ok`, or `101` and a
//! tunnel when the request asks for an upgrade; a scripted upstream with the case's exact
//! bytes (or `200 plain` to a path ending in `/plain`), closing the connection after them
//! when the script says so. A message the strict reader refuses gets no answer: the proxy
//! that sent it waits, and the case reports what it forwarded.

use crate::wire::{self, Kind};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Record,
    /// These bytes to every request but `…/plain`; then close the connection when `close`.
    Script {
        bytes: &'static [u8],
        close: bool,
    },
}

/// What one upstream connection received.
#[derive(Debug, Clone, Default)]
pub struct ConnLog {
    pub bytes: Vec<u8>,
    /// Where the tunnel starts, after a request the upstream answered with 101.
    pub tunnel_at: Option<usize>,
}

#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<Arc<Mutex<ConnLog>>>>>,
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nx-upstream: rec\r\ncontent-length: 2\r\n\r\nok";
const OK_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nx-upstream: rec\r\ncontent-length: 2\r\n\r\n";
const PLAIN: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain";

impl Upstream {
    pub async fn spawn(mode: Mode) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<Arc<Mutex<ConnLog>>>>> = Arc::default();
        let all = Arc::clone(&conns);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = Arc::new(Mutex::new(ConnLog::default()));
                all.lock().unwrap().push(Arc::clone(&log));
                tokio::spawn(serve(stream, mode, log));
            }
        });
        Upstream { addr, conns }
    }

    /// Every connection's bytes so far, in the order the connections were accepted.
    pub fn logs(&self) -> Vec<ConnLog> {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.lock().unwrap().clone())
            .collect()
    }
}

async fn serve(mut stream: TcpStream, mode: Mode, log: Arc<Mutex<ConnLog>>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut answered = 0;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let (bytes, tunnel) = {
            let mut log = log.lock().unwrap();
            log.bytes.extend_from_slice(&buf[..n]);
            (log.bytes.clone(), log.tunnel_at.is_some())
        };
        if tunnel {
            continue;
        }
        let (messages, _) = wire::read_all(&bytes, Kind::Request, false);
        for (i, m) in messages.iter().enumerate().skip(answered) {
            answered = i + 1;
            let upgrade = m.header("upgrade");
            let answer: Vec<u8> = match mode {
                Mode::Record if upgrade.is_some() => {
                    // Whatever follows this request is the tunnel's.
                    let end = messages[..=i].iter().map(|m| m.len).sum();
                    log.lock().unwrap().tunnel_at = Some(end);
                    let reply = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nupgrade: {}\r\nconnection: upgrade\r\n\r\n",
                        upgrade.unwrap_or_default()
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                    break;
                }
                Mode::Record if m.method() == "HEAD" => OK_HEAD.to_vec(),
                Mode::Record => OK.to_vec(),
                Mode::Script { .. } if m.target().ends_with("/plain") => PLAIN.to_vec(),
                Mode::Script { bytes, .. } => bytes.to_vec(),
            };
            if stream.write_all(&answer).await.is_err() {
                return;
            }
            if let Mode::Script { close: true, .. } = mode
                && !m.target().ends_with("/plain")
            {
                return;
            }
        }
    }
}
