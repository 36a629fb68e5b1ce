//! The real binary as an operator runs it: start, serve, stop on SIGTERM with
//! exit 0; memory stays flat while large bodies stream; SIGHUP reloads; the
//! CLI commands read the same config.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::process::*;
use common::*;
use fake_smartlead::{Fault, FaultRule};
use http::Request;
use http_body_util::Full;

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
    // The yardstick: a 500,000-lead export (~180 MB of CSV).
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

/// Each worker listens on its own socket with `SO_REUSEPORT`, which would
/// let a second gateway share the port by mistake: the address's lock
/// refuses it, and frees the address when the first stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_on_the_same_address_is_refused_and_the_first_keeps_all_traffic() {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::with_leads(10))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, _db) = write_config(dir.path(), &up.url(), Extra::default());
    let mut first = Proc::start(&config, "info");
    let addr = first.proxy.to_string();

    let other = tempfile::tempdir().unwrap();
    let (other_config, _) = write_config(other.path(), &up.url(), Extra::default());
    let mut second = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&other_config)
        .env("SAFEDELETE_LISTEN", &addr)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = second.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some(status) = status else {
        let _ = second.kill();
        let _ = second.wait();
        panic!("a second gateway started on {addr}, the first's address");
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains(&format!(
            "another safedelete gateway on this host is listening on {addr}"
        )),
        "{err}"
    );

    // Every connection still reaches the first.
    for _ in 0..20 {
        let r = get(&first.url("/api/v1/campaigns/101?api_key=sl_test_key")).await;
        assert_eq!(r.status, 200);
    }
    assert!(first.terminate().success());

    // Once it has stopped, the address is free again.
    let mut command = Command::new(BIN);
    command.env("SAFEDELETE_LISTEN", &addr);
    let mut again = Proc::start_with(command, &other_config, "info");
    assert_eq!(again.proxy.to_string(), addr);
    let r = get(&again.url("/api/v1/campaigns/101?api_key=sl_test_key")).await;
    assert_eq!(r.status, 200);
    assert!(again.terminate().success());
}
