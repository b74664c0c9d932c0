//! Health checks against real local listeners and real processes.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use augur_agent::actuator::{ProcessRunner, health};
use augur_agent::workload::HealthConfig;
use tokio::time::Instant;

/// An HTTP server answering every request with `status`, on a thread.
fn http_server(status: &'static str) -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    addr
}

fn check(http: Option<String>, tcp: Option<String>, command: Option<Vec<String>>) -> HealthConfig {
    HealthConfig {
        http,
        tcp,
        command,
        timeout: Duration::from_secs(2),
        attempts: 2,
        interval: Duration::from_millis(50),
    }
}

async fn run(h: &HealthConfig) -> Result<String, String> {
    health::check(h, &ProcessRunner, Instant::now() + Duration::from_secs(10)).await
}

#[tokio::test]
async fn health_checks_pass_and_fail_against_real_listeners_and_processes() {
    let ok = http_server("200 OK");
    let bad = http_server("503 Service Unavailable");
    let m = run(&check(Some(format!("http://{ok}/healthz")), None, None)).await.expect("2xx is healthy");
    assert!(m.contains("200"), "{m}");
    let e = run(&check(Some(format!("http://{bad}/healthz")), None, None)).await.expect_err("503 is unhealthy");
    assert!(e.contains("503") && e.contains("2 attempt"), "{e}");

    run(&check(None, Some(ok.clone()), None)).await.expect("an open port is healthy");
    // A port nobody listens on: bind one, then close it.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").to_string();
    let e = run(&check(None, Some(closed.clone()), None)).await.expect_err("closed port");
    assert!(e.contains(&closed), "{e}");
    let e = run(&check(Some(format!("http://{closed}/")), None, None)).await.expect_err("closed port");
    assert!(e.contains("GET"), "{e}");

    run(&check(None, None, Some(vec!["sh".into(), "-c".into(), "exit 0".into()]))).await.expect("exit 0");
    let e = run(&check(None, None, Some(vec!["sh".into(), "-c".into(), "echo broken >&2; exit 4".into()])))
        .await
        .expect_err("exit 4");
    assert!(e.contains("4") && e.contains("broken"), "{e}");
}

#[tokio::test]
async fn a_health_check_stops_at_the_deadline() {
    // A listener that accepts and never answers.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let _keep = std::thread::spawn(move || {
        let conns: Vec<_> = l.incoming().take(10).collect();
        std::thread::sleep(Duration::from_secs(30));
        drop(conns);
    });
    let mut h = check(Some(format!("http://{addr}/")), None, None);
    h.timeout = Duration::from_secs(20);
    h.attempts = 5;
    let t = std::time::Instant::now();
    let e = health::check(&h, &ProcessRunner, Instant::now() + Duration::from_millis(300)).await.expect_err("hangs");
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert!(e.contains("no answer") || e.contains("deadline"), "{e}");
}
