//! A TCP proxy on loopback between a client and a server that can be told to stall: while stalled it stops
//! forwarding on the connections it holds, in both directions, without closing them (what a network
//! partition looks like: no RST, no FIN). Connections accepted while stalled are forwarded normally. Made
//! with [`Proxy::cutting`], it instead drops each connection after forwarding that many bytes from the server
//! (a connection lost mid-stream).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
}

struct Shared {
    stop: AtomicBool,
    /// Bumped by [`Proxy::stall`]: connections accepted before the bump stop forwarding.
    stall_epoch: AtomicU64,
    accepted: AtomicU64,
    /// Close a connection after this many bytes from the server (u64::MAX: never).
    cut_after: u64,
}

impl Proxy {
    /// Forwards `127.0.0.1:<port>` to `127.0.0.1:<target>`.
    pub fn start(target: u16) -> Proxy {
        Self::start_with(target, u64::MAX)
    }

    /// Forwards as [`start`](Self::start), but closes each connection (both ways) once `bytes` from the
    /// server have been forwarded.
    pub fn cutting(target: u16, bytes: u64) -> Proxy {
        Self::start_with(target, bytes)
    }

    fn start_with(target: u16, cut_after: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            stall_epoch: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            cut_after,
        });
        let s = shared.clone();
        thread::spawn(move || {
            while !s.stop.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        s.accepted.fetch_add(1, Ordering::AcqRel);
                        let epoch = s.stall_epoch.load(Ordering::Acquire);
                        client.set_nonblocking(false).unwrap();
                        for (from, to, limit) in [
                            (
                                client.try_clone().unwrap(),
                                server.try_clone().unwrap(),
                                u64::MAX,
                            ),
                            (server, client, s.cut_after),
                        ] {
                            let s = s.clone();
                            thread::spawn(move || pump(from, to, &s, epoch, limit));
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Proxy { port, shared }
    }

    /// Stops forwarding on every connection accepted so far; they stay open.
    pub fn stall(&self) {
        self.shared.stall_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Acquire)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.stall_epoch.fetch_add(1 << 32, Ordering::AcqRel);
    }
}

/// Copies `from` to `to` until EOF or until the proxy stalls this connection's epoch (then it holds both
/// sockets open without reading, until the proxy is dropped); after `limit` bytes it closes both.
fn pump(mut from: TcpStream, mut to: TcpStream, s: &Shared, epoch: u64, limit: u64) {
    let mut forwarded = 0u64;
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if s.stall_epoch.load(Ordering::Acquire) != epoch {
            while !s.stop.load(Ordering::Acquire) {
                thread::sleep(Duration::from_millis(50));
            }
            return;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                let n = n.min(usize::try_from(limit - forwarded).unwrap_or(n));
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
                forwarded += n as u64;
                if forwarded >= limit {
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}
