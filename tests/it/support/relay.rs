//! A loopback TCP relay in front of a server, counting the connections made through it and
//! noting when the client sent bytes: how a test sees how many connections a client opened,
//! and whether a client still talked to a server after some moment.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct CountingRelay {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    sent: Arc<Mutex<Vec<DateTime<Utc>>>>,
    task: JoinHandle<()>,
}

impl CountingRelay {
    pub async fn start(target: SocketAddr) -> CountingRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (accepted, sent) = (accepted.clone(), sent.clone());
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(relay(inbound, target, sent.clone()));
                }
            }
        });
        CountingRelay {
            addr,
            accepted,
            sent,
            task,
        }
    }

    /// `smtp://127.0.0.1:PORT` of the relay.
    pub fn smtp_url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT{path}` of the relay.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// When the relay read bytes the client sent (one entry per read), in order.
    pub fn client_sent_at(&self) -> Vec<DateTime<Utc>> {
        self.sent.lock().unwrap().clone()
    }
}

async fn relay(inbound: TcpStream, target: SocketAddr, sent: Arc<Mutex<Vec<DateTime<Utc>>>>) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    // The relay must not add Nagle's delays of its own.
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut from_client, mut to_client) = inbound.into_split();
    let (mut from_server, mut to_server) = outbound.into_split();
    let upstream = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    sent.lock().unwrap().push(Utc::now());
                    if to_server.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to_server.shutdown().await;
    };
    let downstream = async move {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
