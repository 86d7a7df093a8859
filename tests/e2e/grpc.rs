//! gRPC through the gateway end to end (spec section 3, last paragraph), with a real
//! gRPC server and client (grpcio, tests/grpc/grpc_check.py) on h2c and TLS listeners.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::support::pki::Pki;
use crate::support::Gateway;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc/grpc_check.py");

struct GrpcServer {
    child: Child,
    addr: SocketAddr,
}

impl GrpcServer {
    fn start() -> GrpcServer {
        let mut child = Command::new("python3")
            .args([SCRIPT, "serve"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the gRPC server (python3 with grpcio)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        let port: u16 = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected gRPC server output {line:?}"));
        GrpcServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay in front of the gRPC server that counts the connections the gateway opens.
async fn counting_relay(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, count)
}

fn run_client(target: &str, tls: Option<(&std::path::Path, &str)>) {
    let mut command = Command::new("python3");
    command.args([SCRIPT, "client", target]);
    if let Some((ca, sni)) = tls {
        command.arg("--tls").arg(ca).args(["--sni", sni]);
    }
    let out = command.output().expect("run the gRPC client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "gRPC checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for check in [
        "unary",
        "server streaming",
        "client streaming",
        "bidi full duplex",
        "non-OK status",
        "status details",
        "trailers-only metadata",
        "4 MiB message",
        "50 concurrent calls",
    ] {
        assert!(
            stdout.contains(&format!("ok: {check}")),
            "{check} missing:\n{stdout}"
        );
    }
}

fn config(relay: SocketAddr, tls: bool) -> String {
    let tls_block = if tls {
        "[listeners.tls]\ncertificates = [{ cert = \"grpc.pem\", key = \"grpc.key\" }]\n"
    } else {
        ""
    };
    format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"grpc\"\naddress = \"127.0.0.1:0\"\n{tls_block}\n\
         [[routes]]\nname = \"echo\"\npath_prefix = \"/edgegate.test.Echo\"\nupstream = \"echo\"\n\n\
         [upstreams.echo]\nendpoints = [\"{relay}\"]\nhttp2 = true\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_passes_through_an_h2c_listener() {
    let server = GrpcServer::start();
    let (relay, connections) = counting_relay(server.addr).await;
    let gw = Gateway::start(&config(relay, false));
    let target = gw.addr("grpc").to_string();
    tokio::task::spawn_blocking(move || run_client(&target, None))
        .await
        .expect("client");
    let opened = connections.load(Ordering::Relaxed);
    assert!(
        (1..=4).contains(&opened),
        "{opened} upstream connections for the whole run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_passes_through_a_tls_listener_negotiating_h2() {
    let server = GrpcServer::start();
    let (relay, connections) = counting_relay(server.addr).await;
    let pki = Pki::new("grpc ca");
    let issued = pki.issue(&["grpc.example.com"]);
    let gw = Gateway::start_with(&config(relay, true), |dir| {
        issued.write(dir, "grpc");
        std::fs::write(dir.join("ca.pem"), &pki.ca_pem).expect("ca");
    });
    let target = gw.addr("grpc").to_string();
    let ca = gw.dir.path().join("ca.pem");
    tokio::task::spawn_blocking(move || run_client(&target, Some((&ca, "grpc.example.com"))))
        .await
        .expect("client");
    let opened = connections.load(Ordering::Relaxed);
    assert!(
        (1..=4).contains(&opened),
        "{opened} upstream connections for the whole run"
    );
}
