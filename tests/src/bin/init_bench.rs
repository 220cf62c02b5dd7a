//! `make bench-init`: each function's Init, as Lambda pays it on a cold
//! start: from the process's start to its first call of the Runtime API's
//! `GET /2018-06-01/runtime/invocation/next` (the mark: the function is
//! ready for its first event), with its resident memory then. Each release
//! binary is started RUNS times (20) against a Runtime API of its own on
//! 127.0.0.1 that never answers, with the environment a deployment gives it
//! (placeholders for the tables, queues, keys and secrets: Init must not
//! reach any of them) and nothing else (`env_clear`: no `SSL_CERT_*`
//! pointing the trust store anywhere). No stack is needed.
//!
//! With `BASELINE_DIR` (another build's `target/release`), each start of
//! a function is followed by one of the baseline's binary, so that both
//! meet the same machine, and the table adds the baseline's median and the
//! ratio: on a shared, noisy machine the ratio is the figure to trust.
//!
//! usage: [BASELINE_DIR=...] init_bench [RUNS] [FUNCTION...]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

const FUNCTIONS: [&str; 9] = ["ingest", "access", "amend", "admin", "directory", "provision", "expiry-sweep", "billing", "portal"];

/// What every function gets: the region, credentials (as Lambda's role
/// provides them), the tables, queues, keys, secrets' ids and settings, as
/// placeholders of the deployed shapes.
fn environment(function: &str) -> BTreeMap<&'static str, String> {
    let queue = |name: &str| format!("https://sqs.us-east-1.amazonaws.com/123456789012/entitle-{name}");
    let mut env: BTreeMap<&'static str, String> = [
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE".into()),
        ("AWS_SECRET_ACCESS_KEY", "example".into()),
        ("AWS_SESSION_TOKEN", "example".into()),
        ("AWS_LAMBDA_FUNCTION_NAME", format!("entitle-{function}")),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".into()),
        ("STATE_TABLE", "entitle-state".into()),
        ("AUDIT_TABLE", "entitle-audit".into()),
        ("RECONCILE_QUEUE_URL", queue("reconcile.fifo")),
        ("DEAD_LETTER_QUEUE_URL", queue("reconcile-dlq.fifo")),
        ("BILLING_QUEUE_URL", queue("billing")),
        ("BILLING_DEAD_LETTER_QUEUE_URL", queue("billing-dlq")),
        ("MODEL_WORK_QUEUE_URL", queue("model-work")),
        ("MODEL_WORK_DEAD_LETTER_QUEUE_URL", queue("model-work-dlq")),
        ("EVENT_BUS_NAME", "entitle".into()),
        ("AUDIT_SIGNING_KEY_ID", "alias/entitle-audit".into()),
        ("TOKEN_SIGNING_KEY_ID", "alias/entitle-tokens".into()),
        ("MAX_RECEIVES", "5".into()),
        ("STRIPE_WEBHOOK_SECRET_ID", "entitle/stripe-webhook-secrets".into()),
        ("CRM_SIGNING_SECRET_ID", "entitle/crm-signing-secrets".into()),
        ("STRIPE_API_KEY_SECRET_ID", "entitle/stripe-api-key".into()),
        ("TARGET_SECRET_PREFIX", "entitle/targets/".into()),
        ("PORTAL_SESSION_SECRET_ID", "entitle/portal-session-keys".into()),
        ("DIRECTORY_URL", "https://directory.example.com".into()),
        ("TOKEN_ISSUER", "entitle".into()),
    ]
    .into_iter()
    .collect();
    if function == "ingest" {
        env.insert("INGEST_ROUTES", "all".into());
    }
    env
}

struct Start {
    init: Duration,
    /// Resident memory at the mark, and the most it reached, in KiB.
    rss: u64,
    hwm: u64,
}

fn kib(status: &str, field: &str) -> u64 {
    status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

async fn start(binary: &std::path::Path, function: &str) -> Start {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap().to_string();
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .env_clear()
        .envs(environment(function))
        .env("AWS_LAMBDA_RUNTIME_API", &api)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept()).await.unwrap_or_else(|_| panic!("{function} did not call the Runtime API within 30 s")).unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&head).contains("\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "{function} closed the connection before asking for an invocation");
        head.extend_from_slice(&buf[..n]);
    }
    let init = started.elapsed();
    let request = String::from_utf8_lossy(&head).to_string();
    assert!(request.starts_with("GET /2018-06-01/runtime/invocation/next"), "{function}'s first call is not for the next invocation: {request}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let _ = child.kill().await;
    Start { init, rss: kib(&status, "VmRSS:"), hwm: kib(&status, "VmHWM:") }
}

fn median<T: Copy + Ord>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(20);
    let named: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let dir = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    println!("\nInit of each function (release build; process start to its first `invocation/next`), {runs} starts each, {}", chrono::Utc::now().format("%Y-%m-%d"));
    println!("machine: {} cores\n", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    let baseline = std::env::var("BASELINE_DIR").ok().filter(|d| !d.is_empty()).map(std::path::PathBuf::from);
    if let Some(b) = &baseline {
        println!("baseline: {} (its starts interleaved with these)\n", b.display());
        println!("| function | Init, median | p90 | fastest | slowest | resident at the mark, median | peak, median | baseline's Init, median | baseline's peak | Init, this / baseline |");
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    } else {
        println!("| function | Init, median | p90 | fastest | slowest | resident at the mark, median | peak, median |");
        println!("| --- | --- | --- | --- | --- | --- | --- |");
    }
    let mut worst = (Duration::ZERO, 0u64);
    for function in FUNCTIONS.iter().filter(|f| named.is_empty() || named.contains(f)) {
        let binary = dir.join(function);
        assert!(binary.exists(), "{} is not built (make bench-init builds the release binaries)", binary.display());
        let base_binary = baseline.as_ref().map(|b| b.join(function));
        if let Some(b) = &base_binary {
            assert!(b.exists(), "{} is not built", b.display());
            start(b, function).await;
        }
        // One start first, not counted: the binary's pages into the page cache.
        start(&binary, function).await;
        let (mut all, mut base) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            all.push(start(&binary, function).await);
            if let Some(b) = &base_binary {
                base.push(start(b, function).await);
            }
        }
        let times: Vec<Duration> = all.iter().map(|s| s.init).collect();
        let (med, rss, hwm) = (median(times.clone()), median(all.iter().map(|s| s.rss).collect()), median(all.iter().map(|s| s.hwm).collect()));
        worst = (worst.0.max(med), worst.1.max(hwm));
        let row = format!(
            "| {function} | {} | {} | {} | {} | {} | {} |",
            ms(med),
            ms(percentile(times.clone(), 0.9)),
            ms(*times.iter().min().unwrap()),
            ms(*times.iter().max().unwrap()),
            mib(rss),
            mib(hwm)
        );
        if base.is_empty() {
            println!("{row}");
        } else {
            let base_med = median(base.iter().map(|s| s.init).collect());
            let ratio = med.as_secs_f64() / base_med.as_secs_f64().max(1e-9);
            println!("{row} {} | {} | {ratio:.2} |", ms(base_med), mib(median(base.iter().map(|s| s.hwm).collect())));
        }
    }
    let met = worst.0 <= Duration::from_millis(5) && worst.1 <= 12 * 1024;
    println!("\nslowest median {}, largest peak {}: the goal (at most 5 ms median and 12 MiB for every function) is {}", ms(worst.0), mib(worst.1), if met { "met" } else { "not met" });
}
