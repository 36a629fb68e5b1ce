//! The real binary as an operator runs it: start, serve, stop on SIGTERM with
//! exit 0; the key never lands in logs or the database; memory stays flat
//! while large bodies stream; the CLI commands read the same config.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use fake_smartlead::{Fault, FaultRule};
use http::Request;
use http_body_util::Full;

const BIN: &str = env!("CARGO_BIN_EXE_safedelete");

struct Proc {
    child: Child,
    proxy: SocketAddr,
    admin: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    /// Starts `safedelete serve --config FILE` and waits for its listening line.
    fn start(config: &Path, log_filter: &str) -> Proc {
        Proc::start_with(Command::new(BIN), config, log_filter)
    }

    /// The same, with at most `open_files` file descriptors (`prlimit`).
    fn start_with_open_files(config: &Path, log_filter: &str, open_files: u32) -> Proc {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={open_files}:{open_files}"))
            .arg(BIN);
        Proc::start_with(command, config, log_filter)
    }

    fn start_with(mut command: Command, config: &Path, log_filter: &str) -> Proc {
        let mut child = command
            .args(["serve", "--config"])
            .arg(config)
            .env("SAFEDELETE_LOG_FORMAT", "json")
            .env("SAFEDELETE_LOG", log_filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        let buf = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.contains("safedelete listening") {
                    let _ = tx.send(line.clone());
                }
                let mut b = buf.lock().unwrap();
                b.push_str(&line);
                b.push('\n');
            }
        });
        let mut err = child.stderr.take().unwrap();
        let buf = stderr.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            buf.lock().unwrap().push_str(&s);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no listening line; stderr: {}", stderr.lock().unwrap()));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        Proc {
            child,
            proxy: v["proxy"].as_str().unwrap().parse().unwrap(),
            admin: v["admin"].as_str().unwrap().parse().unwrap(),
            stdout,
            stderr,
        }
    }

    fn url(&self, target: &str) -> String {
        format!("http://{}{}", self.proxy, target)
    }

    /// SIGTERM, then wait for the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50)); // let the readers finish
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("safedelete did not exit within 10 s of SIGTERM");
    }

    /// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field).and_then(|l| l.strip_prefix(':')))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// User and system CPU time so far, in clock ticks (`/proc/PID/stat`).
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    fn logs(&self) -> String {
        format!(
            "{}{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, upstream: &str, extra: Extra<'_>) -> (PathBuf, PathBuf) {
    let db = dir.join("data").join("safedelete.db");
    let path = dir.join("safedelete.toml");
    std::fs::write(&path, config_text(upstream, &db, extra)).unwrap();
    (path, db)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn the_api_key_is_nowhere_in_logs_database_or_wal() {
    const SECRET: &str = "sl_LEAKCHECK_7f3a9c2e5b1d40aa";
    let up = fake_smartlead::start(fake_smartlead::FakeConfig {
        api_key: SECRET.into(),
        ..fake_smartlead::FakeConfig::default()
    })
    .await
    .unwrap();
    up.fault(FaultRule {
        method: None,
        path: "/api/v1/campaigns/102/analytics".into(),
        times: None,
        fault: Fault {
            status: Some(500),
            ..Fault::default()
        },
    });
    up.fault(FaultRule {
        method: None,
        path: "/api/v1/campaigns/101/leads-export".into(),
        times: None,
        fault: Fault {
            drop_after_bytes: Some(1000),
            ..Fault::default()
        },
    });
    let dir = tempfile::tempdir().unwrap();
    let (config, db) = write_config(
        dir.path(),
        &up.url(),
        Extra {
            upstream: "first_byte_timeout = \"2s\"\n",
            tables: "[guard]\nsnapshot_budget = \"1s\"\n",
            ..Extra::default()
        },
    );
    // The most verbose logging, including every dependency's.
    let mut gw = Proc::start(&config, "trace");
    let k = SECRET;
    for target in [
        format!("/api/v1/campaigns?api_key={k}"),
        format!("/api/v1/campaigns/101?include_tags=true&api_key={k}"),
        format!("/api/v1/campaigns/424242?api_key={k}"),
        format!("/api/v1/campaigns/102/analytics?api_key={k}"),
        format!("/api/v1/campaigns/101/leads-export?api_key={k}"),
        format!("/api/v1/campaigns/{k}?api_key={k}"),
        format!("/api/v1/campaigns?API_KEY={k}&api%5Fkey={k}"),
        format!("/api/v1/campaigns?api_key={}", k.replace('_', "%5F")),
    ] {
        let _ = client()
            .request(
                Request::get(gw.url(&target))
                    .header("user-agent", format!("leaky-tool key={k}"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
    }
    let _ = send(
        Request::post(gw.url(&format!("/api/v1/campaigns/create?api_key={k}")))
            .body(Full::new(Bytes::from_static(br#"{"name":"x"}"#)))
            .unwrap(),
    )
    .await;
    let _ = raw(
        gw.proxy,
        format!("GET /bad target?api_key={k} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .await;
    // A guarded delete: the operation, the snapshot and its audit record.
    let guarded = send(
        Request::delete(gw.url(&format!("/api/v1/campaigns/103?api_key={k}")))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(guarded.header("x-safedelete-action"), Some("archived"));
    // A refused one (its failure is stored in the operation's error column),
    // with the key spelled the other ways SmartLead's parser might accept.
    for target in [
        format!("/api/v1/campaigns/102?API_KEY={k}"),
        format!("/api/v1/campaigns/102?api%5Fkey={k}"),
        format!("/api/v1/campaigns/102/?api_key={k}"),
    ] {
        let refused = send(
            Request::delete(gw.url(&target))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert!(
            refused.status.is_server_error() || refused.status == 400,
            "{}",
            refused.status
        );
        assert!(!String::from_utf8_lossy(&refused.body).contains(SECRET));
    }
    // The upstream saw the key (that is the point of a drop-in gateway)...
    assert!(up.requests().iter().any(|r| r.target.contains(SECRET)));
    // A clean shutdown checkpoints the WAL into the database and deletes it,
    // so read the WAL while the gateway still runs, once the trail is written.
    let mut wal = Vec::new();
    for _ in 0..100 {
        wal = std::fs::read(format!("{}-wal", db.display())).unwrap_or_default();
        if audit_rows(&db).await.len() >= 13 {
            wal = std::fs::read(format!("{}-wal", db.display())).unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!wal.is_empty(), "no WAL to inspect");
    assert!(gw.terminate().success());

    // ...but nothing the gateway wrote did.
    let logs = gw.logs();
    assert!(
        logs.contains("\"message\":\"request\""),
        "no access lines: {logs}"
    );
    assert!(logs.contains("[REDACTED]"));
    let encoded = k.replace('_', "%5F");
    for needle in [SECRET, encoded.as_str()] {
        assert!(!logs.contains(needle), "the key is in the logs:\n{logs}");
        assert!(!contains(&wal, needle.as_bytes()), "the key is in the WAL");
        let mut checked = 0;
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let path = PathBuf::from(format!("{}{suffix}", db.display()));
            if let Ok(bytes) = std::fs::read(&path) {
                checked += 1;
                assert!(
                    !contains(&bytes, needle.as_bytes()),
                    "the key is in {}",
                    path.display()
                );
            }
        }
        assert!(checked >= 1, "no database file was written");
    }
    let rows = audit_rows(&db).await;
    assert!(rows.len() >= 9, "{} rows", rows.len());
}

/// One way a key reaches the gateway: where it is put, and how.
struct Spelling {
    label: &'static str,
    method: &'static str,
    /// The request target; `{S}` is replaced by this case's own key.
    target: &'static str,
    /// Extra headers (`{S}` replaced too).
    headers: &'static [(&'static str, &'static str)],
    /// A JSON body (`{S}` replaced too).
    body: Option<&'static str>,
}

/// A GET with the key only in its target.
const fn query(label: &'static str, target: &'static str) -> Spelling {
    Spelling {
        label,
        method: "GET",
        target,
        headers: &[],
        body: None,
    }
}

const SPELLINGS: &[Spelling] = &[
    query("api_key", "/api/v1/campaigns/101?api_key={S}"),
    query("?api_key (double ?)", "/api/v1/campaigns/101??api_key={S}"),
    query("apiKey", "/api/v1/campaigns?apiKey={S}"),
    query("api-key", "/api/v1/campaigns?api-key={S}"),
    query("api_key%00", "/api/v1/campaigns?api_key%00={S}"),
    query(";api_key", "/api/v1/campaigns?;api_key={S}"),
    query("%20api_key", "/api/v1/campaigns?%20api_key={S}"),
    query("x=1%26api_key", "/api/v1/campaigns?x=1%26api_key={S}"),
    query("API_KEY", "/api/v1/campaigns?API_KEY={S}"),
    query("api%5Fkey", "/api/v1/campaigns?api%5Fkey={S}"),
    query(
        "api%255Fkey (double encoded)",
        "/api/v1/campaigns?api%255Fkey={S}",
    ),
    query("api_key[]", "/api/v1/campaigns?api_key[]={S}"),
    query("api_key%5B0%5D", "/api/v1/campaigns?api_key%5B0%5D={S}"),
    query("Api+Key", "/api/v1/campaigns?Api+Key={S}"),
    query("a=1;api_key", "/api/v1/campaigns?a=1;api_key={S}"),
    query("api_key%3D (no =)", "/api/v1/campaigns?api_key%3D{S}"),
    query("x=%3Fapi_key%3D", "/api/v1/campaigns?x=%3Fapi_key%3D{S}"),
    query("key", "/api/v1/campaigns?key={S}"),
    query("token", "/api/v1/campaigns?token={S}"),
    query("access_token", "/api/v1/campaigns?access_token={S}"),
    query("client_secret", "/api/v1/campaigns?client_secret={S}"),
    query("password", "/api/v1/campaigns?password={S}"),
    query("auth", "/api/v1/campaigns?auth={S}"),
    query("Authorization", "/api/v1/campaigns?Authorization={S}"),
    query(
        "configured name (partner-sig)",
        "/api/v1/campaigns?Partner_Sig={S}",
    ),
    query(
        "the value again under another name",
        "/api/v1/campaigns?api_key={S}&note={S}",
    ),
    query("in the path", "/api/v1/campaigns/{S}?api_key={S}"),
    Spelling {
        label: "as X-Request-Id",
        method: "GET",
        target: "/api/v1/campaigns?api_key={S}",
        headers: &[("x-request-id", "{S}")],
        body: None,
    },
    Spelling {
        label: "inside User-Agent",
        method: "GET",
        target: "/api/v1/campaigns?api_key={S}",
        headers: &[("user-agent", "leaky-tool/1.0 (key {S})")],
        body: None,
    },
    Spelling {
        label: "JSON body, echoed in headers",
        method: "POST",
        target: "/api/v1/campaigns/create",
        headers: &[
            ("content-type", "application/json"),
            ("x-request-id", "{S}"),
            ("user-agent", "n8n {S}"),
        ],
        body: Some(r#"{"name":"x","api_key":"{S}"}"#),
    },
    Spelling {
        label: "JSON body on PATCH, in the path too",
        method: "PATCH",
        target: "/api/v1/campaigns/101/settings/{S}",
        headers: &[],
        body: Some(r#"{"api_key" : "{S}", "track_settings": []}"#),
    },
    Spelling {
        label: "guarded delete, ??api_key",
        method: "DELETE",
        target: "/api/v1/campaigns/103??api_key={S}",
        headers: &[],
        body: None,
    },
    Spelling {
        label: "guarded delete, apiKey",
        method: "DELETE",
        target: "/api/v1/campaigns/103?apiKey={S}",
        headers: &[],
        body: None,
    },
];

#[tokio::test]
async fn every_spelling_of_a_key_stays_out_of_the_database_wal_and_logs() {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, db) = write_config(
        dir.path(),
        &up.url(),
        Extra {
            tables: "[audit]\nredact_params = [\"partner-sig\"]\n",
            ..Extra::default()
        },
    );
    let mut gw = Proc::start(&config, "trace");
    let key_of = |i: usize| format!("sl_LEAK{i:02}_7f3a9c2e5b1d40aa");
    for (i, case) in SPELLINGS.iter().enumerate() {
        let k = key_of(i);
        let mut req = Request::builder()
            .method(case.method)
            .uri(gw.url(&case.target.replace("{S}", &k)));
        for (name, value) in case.headers {
            req = req.header(*name, value.replace("{S}", &k));
        }
        let body = case.body.map(|b| b.replace("{S}", &k)).unwrap_or_default();
        let reply = send(req.body(Full::new(Bytes::from(body))).unwrap()).await;
        assert!(
            !String::from_utf8_lossy(&reply.body).contains(&k),
            "{}: the key is in the gateway's answer",
            case.label
        );
    }
    // Every request is in the trail (a dropped record would hide nothing).
    let rows = wait_rows(&db, SPELLINGS.len()).await;
    let wal = std::fs::read(format!("{}-wal", db.display())).unwrap_or_default();
    assert!(!wal.is_empty(), "no WAL to inspect");
    assert!(gw.terminate().success());
    let logs = gw.logs();
    assert!(logs.contains("[REDACTED]"), "{logs}");
    let db_bytes = std::fs::read(&db).unwrap();
    for (i, case) in SPELLINGS.iter().enumerate() {
        let k = key_of(i);
        for needle in [k.clone(), k.replace('_', "%5F")] {
            assert!(
                !logs.contains(&needle),
                "{}: the key is in the logs:\n{logs}",
                case.label
            );
            assert!(
                !contains(&wal, needle.as_bytes()),
                "{}: the key is in the WAL",
                case.label
            );
            assert!(
                !contains(&db_bytes, needle.as_bytes()),
                "{}: the key is in the database",
                case.label
            );
        }
    }
    // A key only in the body still names the actor.
    let body_case = SPELLINGS.iter().position(|c| c.method == "PATCH").unwrap();
    let fp = safedelete::audit::redact::fingerprint(&key_of(body_case));
    assert!(
        rows.iter()
            .any(|r| r.method == "PATCH" && r.actor_fingerprint.as_deref() == Some(fp.as_str())),
        "no PATCH row with the body key's fingerprint: {rows:#?}"
    );
}

/// Waits for at least `n` audit rows in a database another process writes.
async fn wait_rows(db: &Path, n: usize) -> Vec<AuditRow> {
    for _ in 0..200 {
        let rows = audit_rows(db).await;
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} audit rows after 10 s");
}

#[tokio::test]
async fn memory_stays_flat_while_large_bodies_stream() {
    // ~100 MB of CSV: the fake generates it on the fly.
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::with_leads(330_000))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, _db) = write_config(dir.path(), &up.url(), Extra::default());
    let mut gw = Proc::start(&config, "warn,safedelete::server=info");
    let warm = get(&gw.url("/api/v1/campaigns?api_key=sl_test_key")).await;
    assert_eq!(warm.status, 200);
    let before = gw.peak_rss_kib();

    let upload = Bytes::from(vec![b'x'; 10 * 1024 * 1024]);
    let reply = send(
        Request::post(gw.url("/api/v1/campaigns/101/sequences?api_key=sl_test_key"))
            .body(Full::new(upload.clone()))
            .unwrap(),
    )
    .await;
    assert!(reply.status.as_u16() < 500);
    assert_eq!(up.requests().last().unwrap().body.len(), upload.len());

    let resp = client()
        .request(
            Request::get(gw.url("/api/v1/campaigns/101/leads-export?api_key=sl_test_key"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut total = 0usize;
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        if let Ok(data) = frame.unwrap().into_data() {
            total += data.len();
        }
    }
    assert!(total > 100_000_000, "only {total} bytes downloaded");
    let after = gw.peak_rss_kib();
    let grew_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    eprintln!(
        "peak RSS before {} KiB, after {} KiB (+{grew_mib:.1} MiB) for a 10 MiB upload and a {:.0} MB download",
        before,
        after,
        total as f64 / 1e6
    );
    assert!(grew_mib < 32.0, "peak RSS grew by {grew_mib:.1} MiB");
    assert!(gw.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero_with_the_trail_flushed() {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    up.fault(FaultRule {
        method: None,
        path: "/api/v1/campaigns/101".into(),
        times: None,
        fault: Fault {
            delay: Some(Duration::from_millis(700)),
            ..Fault::default()
        },
    });
    let dir = tempfile::tempdir().unwrap();
    let (config, db) = write_config(dir.path(), &up.url(), Extra::default());
    let mut gw = Proc::start(&config, "info");
    let health = get(&format!("http://{}/healthz", gw.admin)).await;
    assert_eq!(health.status, 200);
    // The container health check: the binary asks its own admin listener.
    let probe = Command::new(BIN)
        .args(["health", "--config"])
        .arg(&config)
        .env("SAFEDELETE_ADMIN_LISTEN", gw.admin.to_string())
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let admin_url = format!("http://{}", gw.admin);
    let probe = Command::new(BIN)
        .args(["health", "--url", &admin_url])
        .output()
        .unwrap();
    assert!(probe.status.success());
    for _ in 0..5 {
        get(&gw.url("/api/v1/campaigns?api_key=sl_test_key")).await;
    }
    let url = gw.url("/api/v1/campaigns/101?api_key=sl_test_key");
    let slow = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = tokio::task::block_in_place(|| gw.terminate());
    assert!(status.success(), "exit status {status:?}: {}", gw.logs());
    assert_eq!(slow.await.unwrap().status, 200);
    let rows = audit_rows(&db).await;
    assert_eq!(rows.len(), 6);
    assert!(gw.logs().contains("safedelete stopped"));
    let probe = Command::new(BIN)
        .args(["health", "--url", &admin_url])
        .output()
        .unwrap();
    assert!(
        !probe.status.success(),
        "a stopped gateway reported healthy"
    );
    assert!(String::from_utf8_lossy(&probe.stderr).contains("is not ready"));

    // The operator command reads the same trail.
    let out = Command::new(BIN)
        .args(["audit", "--json", "--limit", "3", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["path"], "/api/v1/campaigns/101");
    assert_eq!(lines[0]["query"], "api_key=[REDACTED]");
    let table = Command::new(BIN)
        .args(["audit", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.lines().next().unwrap().contains("METHOD"));
    assert_eq!(table.lines().count(), 7);
}

#[test]
fn invalid_config_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("listen = \"nonsense\"\n", "listen: `nonsense`"),
        ("[upstream]\nurl = \"ftp://x\"\n", "upstream.url"),
        (
            "[upstream]\nca_file = \"/nope/ca.pem\"\n",
            "upstream.ca_file: cannot read /nope/ca.pem",
        ),
        (
            "[upstreem]\nurl = \"http://x\"\n",
            "unknown field `upstreem`",
        ),
        (
            "[[policy.rules]]\nname = \"freeze\"\naction = \"deny\"\nactors = [\"alcie\"]\n",
            "policy.rules[0] (\"freeze\").actors: \"alcie\" is not an actor",
        ),
        (
            "[[policy.rules]]\nname = \"keep\"\naction = \"deny\"\nstatuses = [\"ACTIV\"]\n",
            "policy.rules[0] (\"keep\").statuses: \"ACTIV\" is not a SmartLead campaign status",
        ),
        (
            "[[policy.rules]]\nname = \"go\"\naction = \"allow\"\nsnapshot = \"off\"\n",
            "add allow_without_snapshot = true",
        ),
    ];
    for (text, expected) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        for cmd in ["serve", "check-config"] {
            let out = Command::new(BIN)
                .args([cmd, "--config"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(!out.status.success(), "{cmd} accepted {text:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(expected), "{cmd} {text:?}: {err}");
        }
    }
    let out = Command::new(BIN)
        .args(["check-config"])
        .env("SAFEDELETE_LISTEN", "1.2.3")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SAFEDELETE_LISTEN"));
    // A log filter that would silence every line stops serve before it starts.
    let out = Command::new(BIN)
        .args(["serve"])
        .env("SAFEDELETE_LOG", "inf")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SAFEDELETE_LOG: \"inf\" would be read as a module name, not a level (did you mean \"info\"?)"),
        "{err}"
    );
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .env("SAFEDELETE_ADMIN_TOKEN", "very-secret-admin-token")
        .env("SAFEDELETE_UPSTREAM", "http://127.0.0.1:9999")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("built-in defaults"));
    assert!(text.contains("url = \"http://127.0.0.1:9999\""));
    assert!(text.contains("path = \"data/safedelete.db\""));
    assert!(text.contains("token = \"***\""));
    assert!(!text.contains("very-secret-admin-token"));
    assert!(
        !dir.path().join("data").exists(),
        "check-config must not create files"
    );
}

#[test]
fn check_config_warns_about_a_mistyped_variable_naming_the_closest_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .env("SAFEDELETE_UPSTREM", "http://127.0.0.1:9999")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "a warning, not an error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "safedelete: warning: environment variable SAFEDELETE_UPSTREM is not one safedelete \
             reads, so it is ignored; did you mean SAFEDELETE_UPSTREAM?"
        ),
        "{err}"
    );
    assert!(
        !err.contains("127.0.0.1:9999"),
        "the value is never shown: {err}"
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("url = \"https://server.smartlead.ai\""),
        "the mistyped variable took no effect: {text}"
    );
}

#[tokio::test]
async fn pretty_logs_have_one_readable_access_line_per_request() {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, _db) = write_config(dir.path(), &up.url(), Extra::default());
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("SAFEDELETE_LOG_FORMAT", "pretty")
        .env("SAFEDELETE_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = lines.next().unwrap().unwrap();
    assert!(
        listening.contains("INFO safedelete::server: safedelete listening"),
        "{listening}"
    );
    let proxy = listening
        .split_whitespace()
        .find_map(|w| w.strip_prefix("proxy="))
        .unwrap()
        .to_string();
    let reply = get(&format!(
        "http://{proxy}/api/v1/campaigns/102?api_key=sl_test_key"
    ))
    .await;
    assert_eq!(reply.status, 200);
    let id = reply.header("x-request-id").unwrap().to_string();
    let access = lines.next().unwrap().unwrap();
    assert!(
        access.contains("INFO safedelete::access: request"),
        "{access}"
    );
    for field in [
        format!("request_id={id}"),
        "method=GET".to_string(),
        "path=/api/v1/campaigns/102".to_string(),
        "query=\"api_key=[REDACTED]\"".to_string(),
        "status=200".to_string(),
        "duration_ms=".to_string(),
    ] {
        assert!(access.contains(&field), "{field} missing from {access}");
    }
    // Nothing to say is said by leaving the field out.
    assert!(!access.contains("error_kind"), "{access}");
    assert!(!access.contains("action="), "{access}");
    // A guarded request's line says what the guard did.
    let reply = send(
        Request::delete(format!(
            "http://{proxy}/api/v1/campaigns/101?api_key=sl_test_key"
        ))
        .body(Full::default())
        .unwrap(),
    )
    .await;
    assert_eq!(reply.header("x-safedelete-action"), Some("archived"));
    let access = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("safedelete::access") && l.contains("method=DELETE"))
        .unwrap();
    assert!(
        access.contains("action=\"archived\"") || access.contains("action=archived"),
        "{access}"
    );
    let refused = send(
        Request::delete(format!(
            "http://{proxy}/api/v1/campaigns/101/?api_key=sl_test_key"
        ))
        .body(Full::default())
        .unwrap(),
    )
    .await;
    assert_eq!(refused.status, 400);
    let access = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("safedelete::access") && l.contains("method=DELETE"))
        .unwrap();
    assert!(
        access.contains("action=\"refused\"") || access.contains("action=refused"),
        "{access}"
    );
    assert!(
        access.contains("error_kind=\"bad_request\"") || access.contains("error_kind=bad_request"),
        "{access}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_snapshot_restarts_with_the_operation_interrupted() {
    // ~3.6 MB of CSV served slowly: several 1 MiB chunks get stored first.
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::with_leads(10_000))
        .await
        .unwrap();
    up.fault(FaultRule {
        method: Some("GET".into()),
        path: "/api/v1/campaigns/101/leads-export".into(),
        times: Some(1),
        fault: Fault {
            chunk_delay: Some(Duration::from_millis(20)),
            ..Fault::default()
        },
    });
    let dir = tempfile::tempdir().unwrap();
    let (config, db) = write_config(dir.path(), &up.url(), Extra::default());
    let mut gw = Proc::start(&config, "info");
    let url = gw.url("/api/v1/campaigns/101?api_key=sl_test_key");
    let pending = tokio::spawn(async move {
        client()
            .request(Request::delete(url).body(Full::default()).unwrap())
            .await
    });
    // Kill it once part of the export is stored and the operation is mid-snapshot.
    let pool = safedelete::db::open_existing(&db).await.unwrap();
    let mut stored = 0i64;
    let mut state = String::new();
    for _ in 0..200 {
        stored = sqlx::query_scalar("SELECT COUNT(*) FROM snapshot_chunks")
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
        state = sqlx::query_scalar("SELECT state FROM operations ORDER BY id LIMIT 1")
            .fetch_optional(&pool)
            .await
            .unwrap_or(None)
            .unwrap_or_default();
        if stored >= 1 && state == "snapshotting" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stored >= 1, "no chunk was stored before the kill");
    assert_eq!(state, "snapshotting");
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();
    assert!(
        pending.await.unwrap().is_err(),
        "the client saw its connection die"
    );
    assert!(up
        .requests()
        .iter()
        .all(|r| r.method != "DELETE" && !r.path().ends_with("/status")));

    // Restart on the same database.
    let gw2 = Proc::start(&config, "info");
    let (state,): (String,) = sqlx::query_as("SELECT state FROM operations ORDER BY id LIMIT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(state, "interrupted");
    let (snap_state,): (String,) =
        sqlx::query_as("SELECT state FROM snapshots ORDER BY id LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(snap_state, "incomplete");
    assert!(gw2.logs().contains("interrupted"));
    // The interrupted request gets the audit record it never wrote, linked
    // from its operation, saying where it stopped.
    let (audit_id,): (Option<i64>,) =
        sqlx::query_as("SELECT audit_id FROM operations ORDER BY id LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    let (kind, campaign, detail): (String, i64, String) =
        sqlx::query_as("SELECT error_kind, campaign_id, detail FROM audit_events WHERE id = ?")
            .bind(audit_id.expect("the operation links its audit record"))
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((kind.as_str(), campaign), ("interrupted", 101));
    assert!(
        detail.contains("interrupted in state snapshotting")
            && detail.contains("nothing was deleted"),
        "{detail}"
    );
    // A fresh delete works (the unique claim was released).
    let reply = send(
        Request::delete(gw2.url("/api/v1/campaigns/101?api_key=sl_test_key"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.header("x-safedelete-action"), Some("archived"));
    let complete: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM snapshots WHERE state = 'complete'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(complete, 1);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_snapshot_keeps_memory_flat() {
    // The issue's yardstick: a 500,000-lead export (~180 MB of CSV).
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::with_leads(500_000))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, db) = write_config(
        dir.path(),
        &up.url(),
        Extra {
            tables: "[policy]\ndefault = \"allow\"\n",
            ..Extra::default()
        },
    );
    let mut gw = Proc::start(&config, "warn,safedelete::server=info");
    let warm = get(&gw.url("/api/v1/campaigns?api_key=sl_test_key")).await;
    assert_eq!(warm.status, 200);
    let before = gw.peak_rss_kib();
    let reply = send(
        Request::delete(gw.url("/api/v1/campaigns/101?api_key=sl_test_key"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.header("x-safedelete-action"), Some("allowed"));
    let after = gw.peak_rss_kib();
    let grew_mib = after.saturating_sub(before) as f64 / 1024.0;
    let pool = safedelete::db::open_existing(&db).await.unwrap();
    let csv_bytes: i64 =
        sqlx::query_scalar("SELECT byte_count FROM snapshot_parts WHERE kind = 'leads_csv'")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    eprintln!(
        "snapshot of {:.0} MB of leads CSV: peak RSS before {before} KiB, after {after} KiB (+{grew_mib:.1} MiB)",
        csv_bytes as f64 / 1e6
    );
    assert!(csv_bytes > 150_000_000);
    assert!(grew_mib < 64.0, "peak RSS grew by {grew_mib:.1} MiB");
    assert!(gw.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_policy_and_keeps_it_when_the_new_one_is_invalid() {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, db) = write_config(dir.path(), &up.url(), Extra::default());
    let gw = Proc::start(&config, "info");
    let hup = |gw: &Proc| {
        let ok = Command::new("kill")
            .args(["-HUP", &gw.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    let deny = config_text(
        &up.url(),
        &db,
        Extra {
            tables: "[[policy.rules]]\nname = \"freeze\"\naction = \"deny\"\n",
            ..Extra::default()
        },
    );
    std::fs::write(&config, &deny).unwrap();
    hup(&gw);
    let mut status = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if gw.logs().contains("config reloaded") {
            let r = send(
                Request::delete(gw.url("/api/v1/campaigns/102?api_key=sl_test_key"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
            status = r.status.as_u16();
            break;
        }
    }
    assert_eq!(status, 403, "the reloaded deny rule was not enforced");

    // Each of these is refused, and the deny rule stays in force: an invalid
    // policy, a rule naming an actor nobody defined, an empty file (which
    // would otherwise mean "the built-in defaults"), a missing file.
    let undefined_actor = deny.replace(
        "action = \"deny\"\n",
        "action = \"deny\"\nactors = [\"alcie\"]\n",
    );
    let refusals = [
        (
            Some("[policy]\ndefault = \"nuke\"\n"),
            "\\\"nuke\\\" is not an action",
        ),
        (
            Some(undefined_actor.as_str()),
            "\\\"alcie\\\" is not an actor",
        ),
        (Some("# nothing but a comment\n"), "has no settings"),
        (None, "No such file"),
    ];
    for (n, (text, why)) in refusals.into_iter().enumerate() {
        match text {
            Some(text) => std::fs::write(&config, text).unwrap(),
            None => std::fs::remove_file(&config).unwrap(),
        }
        hup(&gw);
        let refused = || gw.logs().matches("config reload refused").count() > n;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if refused() {
                break;
            }
        }
        assert!(refused(), "{}", gw.logs());
        let line = gw
            .logs()
            .lines()
            .filter(|l| l.contains("config reload refused"))
            .nth(n)
            .unwrap()
            .to_string();
        assert!(line.contains(why), "{why}: {line}");
    }
    let r = send(
        Request::delete(gw.url("/api/v1/campaigns/101?api_key=sl_test_key"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 403, "the old policy must stay in force");
    assert!(up.requests().iter().all(|r| r.method != "DELETE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_the_policy_and_names_the_settings_that_need_a_restart() {
    const OLD_TOKEN: &str = "first-admin-token-0001";
    const NEW_TOKEN: &str = "second-admin-token-0002";
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let old_admin = format!("token = \"{OLD_TOKEN}\"\n");
    let (config, db) = write_config(
        dir.path(),
        &up.url(),
        Extra {
            admin: &old_admin,
            ..Extra::default()
        },
    );
    let gw = Proc::start(&config, "info");
    let new_admin = format!("token = \"{NEW_TOKEN}\"\n");
    let changed = config_text(
        &up.url(),
        &db,
        Extra {
            admin: &new_admin,
            tables: "[[policy.rules]]\nname = \"freeze\"\naction = \"deny\"\n",
            ..Extra::default()
        },
    );
    std::fs::write(&config, changed).unwrap();
    let ok = Command::new("kill")
        .args(["-HUP", &gw.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let reloaded = || {
        gw.logs()
            .lines()
            .find(|l| l.contains("config reloaded"))
            .map(str::to_string)
    };
    for _ in 0..50 {
        if reloaded().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let line = reloaded().unwrap_or_else(|| panic!("no reload line: {}", gw.logs()));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["level"], "WARN", "{line}");
    assert_eq!(v["applied"], "policy", "{line}");
    assert_eq!(v["needs_restart"], "admin.token", "{line}");
    let expected = safedelete::config::Config::load(Some(&config), &safedelete::config::NoEnv)
        .unwrap()
        .policy
        .policy
        .revision()
        .to_string();
    assert_eq!(v["policy_revision"], expected.as_str(), "{line}");
    let logs = gw.logs();
    assert!(
        !logs.contains(NEW_TOKEN) && !logs.contains(OLD_TOKEN),
        "a token is in the logs: {logs}"
    );
    // The policy is in force; the admin listener still wants the old token.
    let denied = send(
        Request::delete(gw.url("/api/v1/campaigns/101?api_key=sl_test_key"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(denied.status, 403);
    for (token, status) in [(OLD_TOKEN, 200), (NEW_TOKEN, 401)] {
        let reply = send(
            Request::get(format!("http://{}/v1/audit?limit=1", gw.admin))
                .header("authorization", format!("Bearer {token}"))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(reply.status.as_u16(), status, "{token}");
    }
}

#[tokio::test]
async fn the_start_up_line_names_the_config_file_and_the_policy_revision() {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, _db) = write_config(
        dir.path(),
        &up.url(),
        Extra {
            tables: "[[policy.rules]]\nname = \"freeze\"\naction = \"deny\"\n",
            ..Extra::default()
        },
    );
    let mut gw = Proc::start(&config, "info");
    let logs = gw.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("safedelete listening"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["config"], config.display().to_string(), "{line}");
    let revision = safedelete::config::Config::load(Some(&config), &safedelete::config::NoEnv)
        .unwrap()
        .policy
        .policy
        .revision()
        .to_string();
    assert_eq!(v["policy_revision"], revision.as_str(), "{line}");
    assert!(gw.terminate().success());

    // No config file at all: the line says so (pretty format, as in the README),
    // after warning about a mistyped variable.
    let empty = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .current_dir(empty.path())
        .env("SAFEDELETE_LISTEN", "127.0.0.1:0")
        .env("SAFEDELETE_ADMIN_LISTEN", "127.0.0.1:0")
        .env("SAFEDELETE_UPSTREAM", up.url())
        .env("SAFEDELETE_UPSTREM", up.url())
        .env("SAFEDELETE_LOG_FORMAT", "pretty")
        .env("SAFEDELETE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let warning = lines.next().unwrap().unwrap();
    assert!(
        warning.contains("WARN")
            && warning.contains("SAFEDELETE_UPSTREM is not one safedelete reads")
            && warning.contains("did you mean SAFEDELETE_UPSTREAM?"),
        "{warning}"
    );
    let listening = lines.next().unwrap().unwrap();
    let builtin = safedelete::guard::policy::Policy::builtin();
    assert!(
        listening.contains("safedelete listening")
            && listening.contains(" config=\"no config file\" ")
            && listening.ends_with(&format!(" policy_revision={}", builtin.revision())),
        "{listening}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_on_the_same_database_respects_a_live_claim() {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::with_leads(200))
        .await
        .unwrap();
    up.fault(FaultRule {
        method: Some("GET".into()),
        path: "/api/v1/campaigns/101/leads-export".into(),
        times: Some(1),
        fault: Fault {
            delay: Some(Duration::from_millis(1500)),
            ..Fault::default()
        },
    });
    let dir = tempfile::tempdir().unwrap();
    let (config, _db) = write_config(dir.path(), &up.url(), Extra::default());
    let first = Proc::start(&config, "info");
    let url = first.url("/api/v1/campaigns/101?api_key=sl_test_key");
    let slow =
        tokio::spawn(
            async move { send(Request::delete(url).body(Full::default()).unwrap()).await },
        );
    for _ in 0..100 {
        if up
            .requests()
            .iter()
            .any(|r| r.path().ends_with("/leads-export"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A second gateway starts on the same database while the first is mid-snapshot.
    let second = Proc::start(&config, "info");
    let reply = send(
        Request::delete(second.url("/api/v1/campaigns/101?api_key=sl_test_key"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 409, "{:?}", reply.body);
    let done = slow.await.unwrap();
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(done.header("x-safedelete-action"), Some("archived"));
    let archives = up
        .requests()
        .iter()
        .filter(|r| r.path().ends_with("/status"))
        .count();
    assert_eq!(archives, 1);
}

/// Holds `count` connections that each send `head_bytes` of a request head
/// that never ends; returns them once every one has been sent or refused.
async fn head_flood(
    addr: SocketAddr,
    count: usize,
    head_bytes: usize,
) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        tasks.spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
            let mut head = b"GET /api/v1/campaigns HTTP/1.1\r\nHost: x\r\nX-Fill: ".to_vec();
            head.resize(head_bytes, b'a');
            // The gateway may answer 431 and close before all of it is sent.
            let _ = tokio::time::timeout(Duration::from_secs(20), s.write_all(&head)).await;
            Some(s)
        });
    }
    let mut held = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Some(s) = joined.unwrap() {
            held.push(s);
        }
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_huge_unfinished_heads_stays_bounded_and_memory_comes_back() {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, _db) = write_config(dir.path(), &up.url(), Extra::default());
    let gw = Proc::start(&config, "info");
    let read = gw.url("/api/v1/campaigns/101?api_key=sl_test_key");
    for _ in 0..50 {
        assert_eq!(get(&read).await.status, 200);
    }
    let idle = gw.status_kib("VmRSS");

    let held = head_flood(gw.proxy, 1_500, 380 * 1024).await;
    // While they are held, the admin listener still answers.
    let ready = get(&format!("http://{}/readyz", gw.admin)).await;
    assert_eq!(ready.status, 200);
    let during = gw.status_kib("VmHWM");
    drop(held);
    // Normal traffic works again at once.
    assert_eq!(get(&read).await.status, 200);
    let mut after = gw.status_kib("VmRSS");
    for _ in 0..120 {
        if after <= 2 * idle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = gw.status_kib("VmRSS");
    }
    eprintln!("head flood: RSS idle {idle} KiB, peak {during} KiB, after {after} KiB");
    assert!(during < 160 * 1024, "peak RSS {during} KiB under the flood");
    assert!(
        after <= 2 * idle,
        "RSS {after} KiB a minute after the flood, idle was {idle} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_few_file_descriptors_the_admin_listener_still_answers_and_accept_does_not_spin() {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The default limit is sized from the descriptors the process may open.
    let (config, _db) = write_config(dir.path(), &up.url(), Extra::default());
    let gw = Proc::start_with_open_files(&config, "info", 320);
    // Past the limit (32 here) connections wait in the listen backlog.
    let started = std::time::Instant::now();
    let held = head_flood(gw.proxy, 300, 64).await;
    assert_eq!(held.len(), 300);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "connections past the limit were not queued: {:?}",
        started.elapsed()
    );
    for _ in 0..5 {
        let ready = get(&format!("http://{}/readyz", gw.admin)).await;
        assert_eq!(ready.status, 200);
        assert_eq!(
            get(&format!("http://{}/metrics", gw.admin)).await.status,
            200
        );
    }
    drop(held);
    drop(gw);

    // An operator who sets the limit past what the process can open gets
    // accept errors (EMFILE): the loop backs off instead of spinning.
    let (config, _db) = write_config(
        dir.path(),
        &up.url(),
        Extra {
            top: "max_connections = 5000\n",
            ..Extra::default()
        },
    );
    let gw = Proc::start_with_open_files(&config, "info", 320);
    let held = head_flood(gw.proxy, 400, 64).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = gw.cpu_ticks();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = gw.cpu_ticks() - before;
    // Clock ticks are 1/100 s: a spinning loop would burn ~200 in 2 s.
    assert!(
        spent < 40,
        "{spent} ticks of CPU in 2 s with accept failing"
    );
    assert!(gw.logs().contains("accept failed"), "no EMFILE seen");
    drop(held);
}
