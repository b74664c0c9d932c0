//! `augur-test-app`: the application the end-to-end tests put behind HAProxy.
//!
//! A real HTTP/1.1 server (axum on tokio, keep-alive) that answers `GET /` with its name and
//! `GET /health` with 200, or 503 once told to fail its health (`POST /admin/fail-health`,
//! or while the file given with `--fail-health-file` exists). `POST /admin/leak?mib_per_s=N`
//! makes it leak N MiB/s of touched memory (a real leak, charged to its cgroup).
//! `GET /admin/stats` returns its counters as JSON. On SIGTERM or SIGINT it stops accepting,
//! finishes the requests in flight and exits 0.
//!
//! Usage: `augur-test-app --listen IP:PORT --name NAME [--fail-health-file PATH]`

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};

struct App {
    name: String,
    requests: AtomicU64,
    health_failing: AtomicBool,
    fail_file: Option<PathBuf>,
    leaked: AtomicU64,
    leaking: AtomicBool,
}

impl App {
    fn healthy(&self) -> bool {
        !self.health_failing.load(Ordering::Relaxed) && !self.fail_file.as_ref().is_some_and(|f| f.exists())
    }
}

async fn root(State(app): State<Arc<App>>) -> String {
    app.requests.fetch_add(1, Ordering::Relaxed);
    format!("hello from {}\n", app.name)
}

async fn health(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    if app.healthy() { (StatusCode::OK, "ok\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "failing\n") }
}

async fn fail_health(State(app): State<Arc<App>>) -> &'static str {
    app.health_failing.store(true, Ordering::Relaxed);
    "health now failing\n"
}

async fn heal(State(app): State<Arc<App>>) -> &'static str {
    app.health_failing.store(false, Ordering::Relaxed);
    "health now ok\n"
}

#[derive(serde::Deserialize)]
struct LeakParams {
    mib_per_s: u64,
}

async fn leak(State(app): State<Arc<App>>, Query(p): Query<LeakParams>) -> (StatusCode, String) {
    if p.mib_per_s == 0 || p.mib_per_s > 1024 {
        return (StatusCode::BAD_REQUEST, "mib_per_s must be 1..=1024\n".into());
    }
    if app.leaking.swap(true, Ordering::SeqCst) {
        return (StatusCode::CONFLICT, "already leaking\n".into());
    }
    let a = app.clone();
    tokio::spawn(async move {
        let mut held: Vec<Vec<u8>> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let chunk = (p.mib_per_s << 20) as usize / 10;
        loop {
            tick.tick().await;
            // Non-zero bytes: every page is written, so the memory is really charged.
            held.push(vec![0xa5u8; chunk]);
            a.leaked.fetch_add(chunk as u64, Ordering::Relaxed);
        }
    });
    (StatusCode::OK, format!("leaking {} MiB/s\n", p.mib_per_s))
}

async fn stats(State(app): State<Arc<App>>) -> String {
    serde_json::json!({
        "name": app.name,
        "requests": app.requests.load(Ordering::Relaxed),
        "healthy": app.healthy(),
        "leaked_bytes": app.leaked.load(Ordering::Relaxed),
    })
    .to_string()
        + "\n"
}

fn usage(why: &str) -> ! {
    eprintln!("augur-test-app: {why}\nusage: augur-test-app --listen IP:PORT --name NAME [--fail-health-file PATH]");
    std::process::exit(64);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut listen = None;
    let mut name = None;
    let mut fail_file = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage(&format!("{a} needs a value")));
        match a.as_str() {
            "--listen" => listen = Some(val()),
            "--name" => name = Some(val()),
            "--fail-health-file" => fail_file = Some(PathBuf::from(val())),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let listen = listen.unwrap_or_else(|| usage("--listen is required"));
    let name = name.unwrap_or_else(|| usage("--name is required"));
    let app = Arc::new(App {
        name,
        requests: AtomicU64::new(0),
        health_failing: AtomicBool::new(false),
        fail_file,
        leaked: AtomicU64::new(0),
        leaking: AtomicBool::new(false),
    });
    let router = Router::new()
        .route("/", get(root))
        .route("/health", get(health))
        .route("/admin/fail-health", post(fail_health))
        .route("/admin/heal", post(heal))
        .route("/admin/leak", post(leak))
        .route("/admin/stats", get(stats))
        .with_state(app.clone());
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("augur-test-app: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("augur-test-app {}: listening on {listen}", app.name);
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
        eprintln!("augur-test-app: {e}");
        std::process::exit(1);
    }
    eprintln!("augur-test-app {}: stopped after {} requests", app.name, app.requests.load(Ordering::Relaxed));
}
