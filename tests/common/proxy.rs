//! A TCP fault proxy between a client and a redis-server, inside the test process: it passes
//! bytes through, delays them, holds them back (a blackhole: the connection stays open and
//! silent until the partition heals), strands the connections open at one instant (half-open:
//! they never deliver again, while new connections work), or resets connections in the middle
//! of a reply.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Pass everything through.
    None,
    /// Delay every chunk, both ways, by this much.
    Latency(Duration),
    /// Forward nothing until the fault clears, close nothing: what a network partition does to
    /// a TCP connection (bytes wait in retransmission, none is lost).
    Blackhole,
}

/// A running proxy; stops with the test.
pub struct Proxy {
    addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    /// Replies (server-to-client chunks) still to cut short with a reset.
    resets: Arc<AtomicU64>,
    /// Connections are numbered as accepted; those numbered below this are stranded.
    accepted: Arc<AtomicU64>,
    stranded: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy on a free loopback port in front of `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let fault = Arc::new(Mutex::new(Fault::None));
        let resets = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let stranded = Arc::new(AtomicU64::new(0));
        let upstream = upstream.to_string();
        let (f, r, a, s) = (
            fault.clone(),
            resets.clone(),
            accepted.clone(),
            stranded.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let link = Link {
                    number: a.fetch_add(1, Ordering::SeqCst),
                    stranded: s.clone(),
                };
                tokio::spawn(carry(client, server, f.clone(), r.clone(), link));
            }
        });
        Proxy {
            addr,
            fault,
            resets,
            accepted,
            stranded,
            task,
        }
    }

    /// The URL a client connects to.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Sets the fault from now on, for open connections too.
    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }

    /// Strands every connection open now: they stay open and never deliver another byte either
    /// way (the peer vanished without a reset), while connections opened later work.
    pub fn strand_open_connections(&self) {
        self.stranded
            .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Resets the connection carrying each of the next `n` replies, after the reply's first
    /// byte: the command ran on the server, the client never learns its result.
    pub fn reset_next_replies(&self, n: u64) {
        self.resets.store(n, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One proxied connection's number, and the line below which connections are stranded.
#[derive(Clone)]
struct Link {
    number: u64,
    stranded: Arc<AtomicU64>,
}

impl Link {
    /// Never returns once this connection is stranded.
    async fn hold_if_stranded(&self) {
        while self.number < self.stranded.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn carry(
    client: TcpStream,
    server: TcpStream,
    fault: Arc<Mutex<Fault>>,
    resets: Arc<AtomicU64>,
    link: Link,
) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // Closing with a zero linger sends a reset, not an orderly end.
    #[allow(deprecated)]
    let _ = client.set_linger(Some(Duration::ZERO));
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let current = move || *fault.lock().unwrap_or_else(|p| p.into_inner());
    let up_fault = current.clone();
    let up_link = link.clone();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            up_link.hold_if_stranded().await;
            // Held back while partitioned: TCP would retransmit, not drop.
            while up_fault() == Fault::Blackhole {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if let Fault::Latency(d) = up_fault() {
                tokio::time::sleep(d).await;
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            link.hold_if_stranded().await;
            // Held back while partitioned: TCP would retransmit, not drop.
            while current() == Fault::Blackhole {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if let Fault::Latency(d) = current() {
                tokio::time::sleep(d).await;
            }
            let cut = resets
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1))
                .is_ok();
            if cut {
                // One byte of the reply, then the connection goes (a reset: linger is zero):
                // the client sees a broken reply to a command the server ran.
                let _ = cw.write_all(&buf[..1]).await;
                return;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}
