//! Load test of the gateway binary on loopback, on the default model, bounded in count and time:
//! `CADA_LOAD_CLIENTS` clients (64) for `CADA_LOAD_SECONDS` (60) after a warm-up
//! (`CADA_LOAD_WARMUP_SECONDS`, 15), mixing cached and uncached, streaming and non-streaming
//! chat requests with two keys, one of them (`greedy`) over its request budget.
//!
//! The mix, per request: 70% one of 8 greedy questions in the gateway's default safety mode
//! (deliberated once each, per key, before the warm-up, then cache hits), 30% a unique sampled
//! question served plain (`safety_mode: off`, 8 tokens; a deliberation takes seconds on this
//! model and CPU, so deliberated live traffic would measure the model, not the gateway); half
//! of each streamed. At the end of the warm-up, running requests finish (uncounted) before the
//! measurement starts; at the end of the measurement they are abandoned and not counted.
//!
//! Bars checked (the run exits 1 when one fails): no errors besides the `greedy` key's 429s, no
//! panic in the gateway's log, resident memory at the end within 10% of after warm-up.
//! Reported: requests/s and p50/p99 latency by class, and the gateway overhead on cache hits
//! (the `server-timing` `gateway` figure of non-streaming hits: the whole response is built
//! before its head, so it covers parsing, auth, rate limits, the lookup and rendering).
//!
//! Run: `cargo bench -p cada-gateway --bench load` (writes target/bench/load.json and the
//! gateway's log to target/bench/load-gateway.log).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "../tests/common/rng.rs"]
mod rng;
use rng::Rng;

const STEADY_KEY: &str = "load-steady-key";
const GREEDY_KEY: &str = "load-greedy-key";
/// The greedy key's budget: far below what its clients send.
const GREEDY_RPM: u32 = 120;
/// Deterministic prompts (cache hits once filled).
const CACHED_PROMPTS: usize = 8;
const TOPICS: [&str; 16] = [
    "the moon",
    "tea",
    "bicycles",
    "volcanoes",
    "owls",
    "chess",
    "rain",
    "bread",
    "rivers",
    "music",
    "glass",
    "bees",
    "maps",
    "clocks",
    "salt",
    "kites",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Share of uncached requests in the mix (`CADA_LOAD_LIVE_PERCENT`, 30).
fn live_percent() -> u64 {
    env_u64("CADA_LOAD_LIVE_PERCENT", 30).min(100)
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Starts the gateway binary on a free port with two keys; returns it and its base URL.
fn start_gateway(out: &std::path::Path) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let data = out.join("load-data");
    let _ = std::fs::remove_dir_all(&data);
    let config = format!(
        r#"listen = "127.0.0.1:{port}"
registry = "{registry}"
adapter = "none"

[store]
data_dir = "{data}"

[safety]
policy_dir = "{policy}"

[[auth.keys]]
name = "steady"
sha256 = "{steady}"
scope = "user"

[[auth.keys]]
name = "greedy"
sha256 = "{greedy}"
scope = "user"
requests_per_minute = {GREEDY_RPM}
"#,
        registry = root().join("models/registry.toml").display(),
        data = data.display(),
        policy = root().join("configs/policy").display(),
        steady = sha256_hex(STEADY_KEY),
        greedy = sha256_hex(GREEDY_KEY),
    );
    let config_path = out.join("load-gateway.toml");
    std::fs::write(&config_path, config).expect("config");
    let log = std::fs::File::create(out.join("load-gateway.log")).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_cada-gateway"))
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start cada-gateway");
    (child, format!("http://127.0.0.1:{port}"))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One finished request.
#[derive(Debug, Clone)]
struct Sample {
    class: String,
    status: u16,
    latency: Duration,
    /// `server-timing` gateway milliseconds.
    gateway_ms: Option<f64>,
    ok: bool,
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A cached question (default safety mode, greedy).
fn cached_body(topic: &str, stream: bool) -> Value {
    json!({
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": format!("Tell me one fact about {topic}.")}],
        "max_tokens": 16,
        "temperature": 0.0,
        "stream": stream,
    })
}

/// Sends one request of the mix and classifies it.
async fn one(client: &reqwest::Client, base: &str, key: &str, rng: &mut Rng) -> Sample {
    let cached = rng.below(100) as u64 >= live_percent();
    let stream = rng.below(2) == 0;
    let topic = *rng.pick(&TOPICS[..if cached { CACHED_PROMPTS } else { TOPICS.len() }]);
    let body = if cached {
        cached_body(topic, stream)
    } else {
        json!({
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": format!(
                "Tell me one fact about {topic}, number {}.", rng.below(1_000_000))}],
            "max_tokens": 8,
            "temperature": 0.8,
            "safety_mode": "off",
            "stream": stream,
        })
    };
    send(client, base, key, &body, stream).await
}

/// Sends `body` and classifies the answer.
async fn send(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: &Value,
    stream: bool,
) -> Sample {
    let started = Instant::now();
    let sent = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await;
    let shape = if stream { "stream" } else { "json" };
    let r = match sent {
        Ok(r) => r,
        Err(e) => {
            eprintln!("transport error: {e}");
            return Sample {
                class: format!("transport/{shape}"),
                status: 0,
                latency: started.elapsed(),
                gateway_ms: None,
                ok: false,
            };
        }
    };
    let status = r.status().as_u16();
    let cache = header(&r, "x-cache").unwrap_or_else(|| "none".into());
    let gateway_ms = header(&r, "server-timing").and_then(|t| {
        t.split(',')
            .find_map(|p| p.trim().strip_prefix("gateway;dur="))
            .and_then(|v| v.parse().ok())
    });
    let text = r.text().await.unwrap_or_default();
    let latency = started.elapsed();
    let ok = match (status, stream) {
        (200, true) => text.ends_with("data: [DONE]\n\n") && !text.contains("\"error\""),
        (200, false) => serde_json::from_str::<Value>(&text)
            .is_ok_and(|v| v["choices"][0]["message"]["content"].is_string()),
        (429, _) => key == GREEDY_KEY && text.contains("rate_limit_exceeded"),
        _ => false,
    };
    if !ok {
        eprintln!(
            "unexpected answer {status}: {}",
            &text[..text.len().min(300)]
        );
    }
    let class = if status == 429 {
        "429".to_owned()
    } else {
        let kind = if cache == "hit" { "hit" } else { "live" };
        format!("{kind}/{shape}")
    };
    Sample {
        class,
        status,
        latency,
        gateway_ms,
        ok,
    }
}

/// How a phase ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Requests running at the deadline finish (uncounted), so the next phase starts with an
    /// empty engine queue: the gateway cannot see that a client waiting for a JSON response
    /// left, so an abandoned request would still run and crowd the next phase's.
    Drain,
    /// Requests running at the deadline are abandoned and not counted (bounded in time).
    Abandon,
}

/// Runs `clients` clients until `until`; returns the samples of requests that finished by then.
async fn drive(base: &str, clients: usize, until: Instant, seed: u64, end: End) -> Vec<Sample> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(clients)
        .build()
        .expect("client");
    let samples = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (client, base, samples) = (client.clone(), base.to_owned(), Arc::clone(&samples));
            // A quarter of the clients use the greedy key.
            let key = if i % 4 == 3 { GREEDY_KEY } else { STEADY_KEY };
            tokio::spawn(async move {
                let mut rng = Rng(seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1)));
                let deadline = tokio::time::Instant::from_std(until);
                while Instant::now() < until {
                    let request = one(&client, &base, key, &mut rng);
                    let s = match end {
                        End::Abandon => match tokio::time::timeout_at(deadline, request).await {
                            Ok(s) => s,
                            Err(_) => break,
                        },
                        End::Drain => request.await,
                    };
                    if Instant::now() > until {
                        break;
                    }
                    let limited = s.status == 429;
                    samples.lock().expect("samples").push(s);
                    if limited {
                        // A polite client backs off before trying again.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client task");
    }
    let out = samples.lock().expect("samples").clone();
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let clients = env_u64("CADA_LOAD_CLIENTS", 64) as usize;
    let seconds = env_u64("CADA_LOAD_SECONDS", 60);
    let warmup = env_u64("CADA_LOAD_WARMUP_SECONDS", 15);
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out).expect("bench dir");
    let (mut child, base) = start_gateway(&out);
    // The clients share the machine with the gateway; at a lower priority (inherited by the
    // runtime's threads, started next) they do not delay it, as clients elsewhere would not.
    let client_nice = env_u64("CADA_LOAD_CLIENT_NICE", 10) as i32;
    // SAFETY: sets this thread's niceness; no memory is passed.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, client_nice) } != 0 {
        eprintln!(
            "could not lower the clients' priority: {}",
            std::io::Error::last_os_error()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let report = rt.block_on(async {
        let ready_by = Instant::now() + Duration::from_secs(120);
        loop {
            let ready = reqwest::get(format!("{base}/readyz")).await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(
                Instant::now() < ready_by,
                "the gateway did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("filling the cache: {CACHED_PROMPTS} questions for each key");
        let client = reqwest::Client::new();
        let fills: Vec<_> = TOPICS[..CACHED_PROMPTS]
            .iter()
            .flat_map(|t| [(t, STEADY_KEY), (t, GREEDY_KEY)])
            .map(|(topic, key)| {
                let (client, base) = (client.clone(), base.clone());
                tokio::spawn(async move {
                    loop {
                        let s = send(&client, &base, key, &cached_body(topic, false), false).await;
                        if s.status != 429 {
                            break s;
                        }
                        // The greedy key's budget: wait for it rather than leave a hole.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                })
            })
            .collect();
        for f in fills {
            let s = f.await.expect("fill");
            assert!(s.ok && s.status == 200, "filling the cache failed: {s:?}");
        }
        eprintln!("warm-up: {clients} clients for {warmup} s");
        drive(
            &base,
            clients,
            Instant::now() + Duration::from_secs(warmup),
            1,
            End::Drain,
        )
        .await;
        let rss_warm = rss_kib(child.id());
        eprintln!(
            "measuring: {clients} clients for {seconds} s (RSS after warm-up {rss_warm} KiB)"
        );
        let started = Instant::now();
        let samples = drive(
            &base,
            clients,
            started + Duration::from_secs(seconds),
            2,
            End::Abandon,
        )
        .await;
        let elapsed = started.elapsed().as_secs_f64();
        let rss_end = rss_kib(child.id());
        summarize(&samples, elapsed, rss_warm, rss_end, clients)
    });
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(out.join("load-gateway.log")).unwrap_or_default();
    let panics = log.matches("panicked").count();
    let mut report = report;
    report["gateway_panics"] = json!(panics);
    std::fs::write(
        out.join("load.json"),
        serde_json::to_string_pretty(&report).expect("json"),
    )
    .expect("write report");
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    let errors = report["errors"].as_u64().unwrap_or(u64::MAX);
    let growth = report["rss_growth"].as_f64().unwrap_or(f64::INFINITY);
    let bars = [
        ("no errors besides the greedy key's 429s", errors == 0),
        ("no panics", panics == 0),
        ("RSS at the end within 10% of after warm-up", growth <= 0.10),
    ];
    let mut failed = false;
    for (bar, held) in bars {
        println!("{} {bar}", if held { "PASS" } else { "FAIL" });
        failed |= !held;
    }
    if failed {
        std::process::exit(1);
    }
}

fn summarize(
    samples: &[Sample],
    elapsed: f64,
    rss_warm: u64,
    rss_end: u64,
    clients: usize,
) -> Value {
    let mut classes: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        classes.entry(s.class.as_str()).or_default().push(s);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut by_class = serde_json::Map::new();
    for (class, list) in &classes {
        let mut lat: Vec<f64> = list.iter().map(|s| ms(s.latency)).collect();
        lat.sort_by(f64::total_cmp);
        by_class.insert(
            (*class).to_owned(),
            json!({
                "requests": list.len(),
                "per_second": list.len() as f64 / elapsed,
                "latency_ms_p50": percentile(&lat, 0.5),
                "latency_ms_p99": percentile(&lat, 0.99),
            }),
        );
    }
    let mut overhead: Vec<f64> = samples
        .iter()
        .filter(|s| s.class == "hit/json")
        .filter_map(|s| s.gateway_ms)
        .collect();
    overhead.sort_by(f64::total_cmp);
    let mut all: Vec<f64> = samples.iter().map(|s| ms(s.latency)).collect();
    all.sort_by(f64::total_cmp);
    let errors = samples.iter().filter(|s| !s.ok).count();
    json!({
        "clients": clients,
        "seconds": elapsed,
        "requests": samples.len(),
        "requests_per_second": samples.len() as f64 / elapsed,
        "latency_ms_p50": percentile(&all, 0.5),
        "latency_ms_p99": percentile(&all, 0.99),
        "errors": errors,
        "rate_limited": samples.iter().filter(|s| s.status == 429).count(),
        "by_class": by_class,
        "cache_hit_gateway_overhead_ms_p50": percentile(&overhead, 0.5),
        "cache_hit_gateway_overhead_ms_p99": percentile(&overhead, 0.99),
        "rss_kib_after_warmup": rss_warm,
        "rss_kib_end": rss_end,
        "rss_growth": (rss_end as f64 - rss_warm as f64) / rss_warm.max(1) as f64,
    })
}
