//! A TCP proxy in front of a real server, for cutting connections on purpose.
//!
//! `cut` drops every connection through the proxy and refuses new ones (they are
//! accepted and closed at once, so the port stays ours); `restore` lets them through
//! again. `stall` keeps every connection open but moves no byte, as a server that
//! hangs does, until `resume`. `cut_after_upstream_bytes(n)` arms a cut that fires in the middle of the
//! traffic: once n more client→server bytes have been forwarded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A running proxy; it stops when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: AbortHandle,
}

struct State {
    upstream: SocketAddr,
    refusing: AtomicBool,
    /// While set, no byte moves in either direction and new connections wait.
    stalled: tokio::sync::watch::Sender<bool>,
    /// Client→server bytes still allowed before the armed cut; `u64::MAX` is unarmed.
    budget: AtomicU64,
    connections: Mutex<Vec<AbortHandle>>,
}

impl TcpProxy {
    /// Listens on an ephemeral port of 127.0.0.1 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            upstream,
            refusing: AtomicBool::new(false),
            stalled: tokio::sync::watch::Sender::new(false),
            budget: AtomicU64::new(u64::MAX),
            connections: Mutex::new(Vec::new()),
        });
        let s = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if s.refusing.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let conn = tokio::spawn(forward(client, s.clone()));
                s.connections.lock().unwrap().push(conn.abort_handle());
            }
        })
        .abort_handle();
        TcpProxy {
            addr,
            state,
            accept,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every connection now and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.state.cut();
    }

    /// Cuts once `n` more client→server bytes have passed.
    pub fn cut_after_upstream_bytes(&self, n: u64) {
        self.state.budget.store(n, Ordering::SeqCst);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.state.budget.store(u64::MAX, Ordering::SeqCst);
        self.state.refusing.store(false, Ordering::SeqCst);
    }

    /// Holds every byte, both ways, on every connection until `resume`.
    pub fn stall(&self) {
        self.state.stalled.send_replace(true);
    }

    /// Lets bytes flow again after `stall`.
    pub fn resume(&self) {
        self.state.stalled.send_replace(false);
    }

    /// Whether the proxy is refusing connections.
    pub fn is_cut(&self) -> bool {
        self.state.refusing.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.cut();
    }
}

impl State {
    fn cut(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Returns once the proxy is not stalled.
    async fn flowing(&self) {
        let mut rx = self.stalled.subscribe();
        let _ = rx.wait_for(|stalled| !*stalled).await;
    }

    /// Takes up to `want` bytes from the budget; fewer means the cut is due.
    fn take_budget(&self, want: u64) -> u64 {
        let mut current = self.budget.load(Ordering::SeqCst);
        loop {
            if current == u64::MAX {
                return want;
            }
            let granted = want.min(current);
            match self.budget.compare_exchange(
                current,
                current - granted,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return granted,
                Err(now) => current = now,
            }
        }
    }
}

async fn forward(client: TcpStream, state: Arc<State>) {
    state.flowing().await;
    let Ok(server) = TcpStream::connect(state.upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let up_state = state.clone();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            up_state.flowing().await;
            let granted = up_state.take_budget(n as u64) as usize;
            if server_tx.write_all(&buf[..granted]).await.is_err() {
                return;
            }
            if granted < n {
                up_state.cut();
                return;
            }
        }
    };
    let down_state = state.clone();
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            down_state.flowing().await;
            if client_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Whichever side ends first ends both, as a real dropped connection would.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}
