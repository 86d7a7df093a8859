//! A TCP load generator and backend for `benches/tcp.sh` (edgegate's tcp listeners
//! against HAProxy `mode tcp` and nginx `stream`).
//!
//! - `tcp_load sink ADDR`: a backend; reads and discards until the client's end of
//!   stream, answers one byte `y` if the client's first byte was `x`, then closes.
//! - `tcp_load bulk ADDR MIB CONNECTIONS`: sends MIB MiB in total over CONNECTIONS
//!   connections (64 KiB writes), each then half-closes and waits for the close; prints
//!   `bulk MIB SECONDS MIB_PER_S`.
//! - `tcp_load connect ADDR SECONDS CONCURRENCY`: opens connections back to back (send
//!   `x`, half-close, read `y`, close) for SECONDS; prints `connect COUNT SECONDS PER_S`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(1).as_str() {
        "sink" => sink(&arg(2)).await,
        "bulk" => bulk(&arg(2), arg(3).parse().unwrap_or(1024), arg(4).parse().unwrap_or(1)).await,
        "connect" => connect(&arg(2), arg(3).parse().unwrap_or(5), arg(4).parse().unwrap_or(32)).await,
        _ => eprintln!("usage: tcp_load sink ADDR | bulk ADDR MIB CONNECTIONS | connect ADDR SECONDS CONCURRENCY"),
    }
}

async fn sink(addr: &str) {
    let listener = TcpListener::bind(addr).await.expect("bind");
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            let mut first = None;
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        first.get_or_insert(buf[0]);
                        let _ = n;
                    }
                }
            }
            if first == Some(b'x') {
                let _ = stream.write_all(b"y").await;
            }
        });
    }
}

async fn bulk(addr: &str, mib: u64, connections: u64) {
    let start = Instant::now();
    let per = mib * 1024 * 1024 / connections;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let addr = addr.to_string();
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(&addr).await.expect("connect");
                let chunk = vec![b'b'; 64 * 1024];
                let mut left = per;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    stream.write_all(&chunk[..n]).await.expect("write");
                    left -= n as u64;
                }
                stream.shutdown().await.expect("shutdown");
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let seconds = start.elapsed().as_secs_f64();
    println!("bulk {mib} {seconds:.3} {:.1}", mib as f64 / seconds);
}

async fn connect(addr: &str, seconds: u64, concurrency: u64) {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (addr, done, failed) = (addr.to_string(), done.clone(), failed.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let once = async {
                        let mut stream = TcpStream::connect(&addr).await?;
                        stream.write_all(b"x").await?;
                        stream.shutdown().await?;
                        let mut answer = [0u8; 1];
                        stream.read_exact(&mut answer).await?;
                        std::io::Result::Ok(())
                    };
                    match tokio::time::timeout(Duration::from_secs(5), once).await {
                        Ok(Ok(())) => done.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let seconds = start.elapsed().as_secs_f64();
    let count = done.load(Ordering::Relaxed);
    println!(
        "connect {count} {seconds:.3} {:.0} failed {}",
        count as f64 / seconds,
        failed.load(Ordering::Relaxed)
    );
}
