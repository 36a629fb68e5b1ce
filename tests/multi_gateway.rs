//! Several gateway processes on 127.0.0.1 sharing one PostgreSQL database,
//! as a team runs them behind a load balancer: one upstream delete however
//! many gateways are asked at once, a dead gateway's operation settled by a
//! survivor, one audit chain across all of them, and a key revoked on one
//! refused by all within a second. Each test makes its own database on the
//! server `SAFEDELETE_TEST_POSTGRES_URL` names, and is skipped (saying so)
//! without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::process::*;
use common::*;
use fake_smartlead::{FakeConfig, Fault, FaultRule};
use http::Request;
use http_body_util::Full;

/// A gateway config on the shared database, written to `dir/NAME.toml`.
fn config(dir: &Path, name: &str, upstream: &str, database: &str, tables: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = config_text_for(
        upstream,
        &format!("url = {database:?}"),
        Extra {
            tables,
            ..Extra::default()
        },
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `count` gateways on one database, each with its own config file.
fn gateways(dir: &Path, count: usize, upstream: &str, database: &str, tables: &str) -> Vec<Proc> {
    (0..count)
        .map(|i| {
            let config = config(dir, &format!("gw{i}"), upstream, database, tables);
            Proc::start(&config, "info")
        })
        .collect()
}

/// A command of the binary against the shared database.
fn cli(database: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("SAFEDELETE_DATABASE", database)
        .output()
        .unwrap()
}

async fn delete(gw: &Proc, target: &str) -> Reply {
    send(
        Request::delete(gw.url(target))
            .body(Full::default())
            .unwrap(),
    )
    .await
}

/// The export of `campaign` served slowly, so a capture takes a while.
fn slow_export(up: &fake_smartlead::FakeHandle, campaign: u64, times: usize) {
    up.fault(FaultRule {
        method: Some("GET".into()),
        path: format!("/api/v1/campaigns/{campaign}/leads-export"),
        times: Some(times),
        fault: Fault {
            chunk_delay: Some(Duration::from_millis(20)),
            ..Fault::default()
        },
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_sent_to_two_gateways_at_once_reaches_smartlead_once() {
    let Some(db) = postgres::database().await else {
        return;
    };
    let up = fake_smartlead::start(FakeConfig::with_leads(2_000))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gws = gateways(
        dir.path(),
        2,
        &up.url(),
        &db.url,
        "[policy]\ndefault = \"allow\"\n",
    );
    let campaigns = [101_u64, 102, 103];
    for &c in &campaigns {
        slow_export(&up, c, 2);
    }
    let targets: Vec<String> = campaigns
        .iter()
        .map(|c| format!("/api/v1/campaigns/{c}?api_key={KEY}"))
        .collect();
    // Each campaign's delete goes to both gateways at once.
    let sent = targets
        .iter()
        .flat_map(|t| [delete(&gws[0], t), delete(&gws[1], t)]);
    let replies = futures_util::future::join_all(sent).await;

    for (i, &c) in campaigns.iter().enumerate() {
        let pair = [&replies[2 * i], &replies[2 * i + 1]];
        let done = pair.iter().filter(|r| r.status == 200).count();
        assert_eq!(
            done,
            1,
            "campaign {c}: {:?}",
            pair.map(|r| (r.status, &r.body))
        );
        let deletes = up
            .requests()
            .iter()
            .filter(|r| r.method == "DELETE" && r.path() == format!("/api/v1/campaigns/{c}"))
            .count();
        assert_eq!(
            deletes, 1,
            "campaign {c} was deleted upstream {deletes} times"
        );
    }
    let out = cli(&db.url, &["snapshots", "list"]);
    let listed = stdout(&out);
    assert_eq!(
        listed.lines().filter(|l| l.contains("complete")).count(),
        3,
        "one complete snapshot per campaign:\n{listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_capture_is_settled_by_the_survivor_and_a_retry_succeeds() {
    let Some(db) = postgres::database().await else {
        return;
    };
    let up = fake_smartlead::start(FakeConfig::with_leads(10_000))
        .await
        .unwrap();
    slow_export(&up, 101, 1);
    let dir = tempfile::tempdir().unwrap();
    let mut gws = gateways(dir.path(), 2, &up.url(), &db.url, "");
    let url = gws[0].url(&format!("/api/v1/campaigns/101?api_key={KEY}"));
    let pending = tokio::spawn(async move {
        client()
            .request(Request::delete(url).body(Full::default()).unwrap())
            .await
    });
    let pool = safedelete::db::open_existing(&db.url.parse::<safedelete::db::Location>().unwrap())
        .await
        .unwrap();
    let mut stored = 0i64;
    for _ in 0..250 {
        stored = sqlx::query_scalar("SELECT COUNT(*) FROM snapshot_chunks")
            .fetch_one(&pool)
            .await
            .unwrap();
        if stored >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stored >= 1, "no chunk was stored before the kill");
    gws[0].child.kill().unwrap();
    gws[0].child.wait().unwrap();
    assert!(
        pending.await.unwrap().is_err(),
        "the client saw its gateway die"
    );

    // The survivor notices on its own (its sweep), without a restart.
    let started = Instant::now();
    let state = loop {
        let state: String = sqlx::query_scalar("SELECT state FROM operations ORDER BY id LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        if state != "snapshotting" || started.elapsed() > Duration::from_secs(15) {
            break state;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(state, "interrupted", "after {:?}", started.elapsed());
    let snapshot: String = sqlx::query_scalar("SELECT state FROM snapshots ORDER BY id LIMIT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        snapshot, "incomplete",
        "a dead gateway's snapshot is never complete"
    );
    // Its request gets the audit record it never wrote, once.
    let mut recorded = 0i64;
    for _ in 0..50 {
        recorded = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_events WHERE error_kind = 'interrupted' AND campaign_id = 101",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if recorded > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(recorded, 1);
    assert!(
        gws[1].logs().contains("marked interrupted"),
        "{}",
        gws[1].logs()
    );

    let reply = delete(&gws[1], &format!("/api/v1/campaigns/101?api_key={KEY}")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.header("x-safedelete-action"), Some("archived"));
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_covers_every_gateways_records_and_verifies() {
    let Some(db) = postgres::database().await else {
        return;
    };
    let up = fake_smartlead::start(FakeConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut gws = gateways(dir.path(), 3, &up.url(), &db.url, "");
    let per_gateway = 150;
    let load = gws.iter().enumerate().map(|(i, gw)| {
        let urls: Vec<String> = (0..per_gateway)
            .map(|n| {
                gw.url(&format!(
                    "/api/v1/campaigns/{}?api_key={KEY}&gw={i}&n={n}",
                    101 + n % 3
                ))
            })
            .collect();
        async move {
            for url in urls {
                assert_eq!(get(&url).await.status, 200);
            }
        }
    });
    futures_util::future::join_all(load).await;
    // A guarded call from each, between the passthrough records.
    for (i, gw) in gws.iter().enumerate() {
        let reply = delete(gw, &format!("/api/v1/campaigns/{}?api_key={KEY}", 101 + i)).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
    for gw in &mut gws {
        assert!(gw.terminate().success());
    }
    let out = cli(&db.url, &["audit", "verify"]);
    let verified = stdout(&out);
    let total = 3 * per_gateway + 3;
    assert!(
        verified.contains(&format!("OK: {total} chained records verified")),
        "{verified}"
    );
    // Every gateway's records are in it, interleaved.
    let out = cli(&db.url, &["audit", "--limit", "1000", "--json"]);
    let lines = stdout(&out);
    for i in 0..3 {
        let mine = lines.matches(&format!("gw={i}&")).count();
        assert_eq!(mine, per_gateway, "gateway {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_through_one_gateway_is_refused_by_all_within_a_second() {
    let Some(db) = postgres::database().await else {
        return;
    };
    let up = fake_smartlead::start(FakeConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("default.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let token = "0123456789abcdef0123";
    let tables = format!(
        "[identity]\nmode = \"gateway_keys\"\n\n[bypass]\ninterval = \"0s\"\n\n\
         [[smartlead.accounts]]\nname = \"default\"\napi_key_file = {:?}\n",
        key_file.display().to_string()
    );
    let gws: Vec<Proc> = (0..3)
        .map(|i| {
            let path = dir.path().join(format!("gw{i}.toml"));
            let text = config_text_for(
                &up.url(),
                &format!("url = {:?}", db.url),
                Extra {
                    admin: &format!("token = {token:?}"),
                    tables: &tables,
                    ..Extra::default()
                },
            );
            std::fs::write(&path, text).unwrap();
            Proc::start(&path, "info")
        })
        .collect();
    // Made on the first gateway's admin API; every gateway knows it soon.
    let made = send(
        Request::post(format!("http://{}/v1/keys", gws[0].admin))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::from(r#"{"name":"gina"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let body: serde_json::Value = serde_json::from_slice(&made.body).unwrap();
    let key = body["key"].as_str().unwrap().to_string();
    let target = format!("/api/v1/campaigns/102?api_key={key}");
    for gw in &gws {
        let deadline = Instant::now() + Duration::from_secs(3);
        while get(&gw.url(&target)).await.status != 200 {
            assert!(
                Instant::now() < deadline,
                "a new key never worked on {}",
                gw.proxy
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Revoked on the second gateway's admin API.
    let revoked_at = SystemTime::now();
    let revoked = send(
        Request::post(format!("http://{}/v1/keys/gina/revoke", gws[1].admin))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(revoked.status, 200, "{:?}", revoked.body);
    for gw in &gws {
        loop {
            let reply = get(&gw.url(&target)).await;
            if reply.status == 401 {
                let message = reply.json()["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                assert!(message.contains("\"gina\" was revoked"), "{message}");
                break;
            }
            let after = revoked_at.elapsed().unwrap();
            assert!(
                after < Duration::from_millis(1500),
                "still accepted after {after:?} on {}",
                gw.proxy
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_away_the_gateway_is_not_ready_and_refuses_guarded_calls() {
    let Some(db) = postgres::database().await else {
        return;
    };
    let mut relay = postgres::Relay::start(&db).await;
    let up = fake_smartlead::start(FakeConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    let text = config_text_for(
        &up.url(),
        &format!("url = {:?}\nacquire_timeout = \"1s\"", relay.url(&db)),
        Extra::default(),
    );
    std::fs::write(&path, text).unwrap();
    let gw = Proc::start(&path, "info");
    let readyz = format!("http://{}/readyz", gw.admin);
    let ready = || get(&readyz);
    assert_eq!(ready().await.status, 200);

    relay.cut();
    let started = Instant::now();
    let not_ready = loop {
        let reply = ready().await;
        if reply.status != 200 || started.elapsed() > Duration::from_secs(10) {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(not_ready.status, 503, "{:?}", not_ready.body);
    let reason = not_ready.json()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("database does not answer")
            || reason.contains("audit trail cannot be written"),
        "{reason}"
    );
    // Guarded calls fail closed: nothing reaches SmartLead.
    let refused = delete(&gw, &format!("/api/v1/campaigns/101?api_key={KEY}")).await;
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert!(
        up.requests().iter().all(|r| r.method == "GET"),
        "a destructive call reached SmartLead"
    );
    // Passthrough follows audit.on_failure (forward, the default).
    let passed = get(&gw.url(&format!("/api/v1/campaigns/101?api_key={KEY}"))).await;
    assert_eq!(passed.status, 200);

    relay.restore().await;
    let started = Instant::now();
    while ready().await.status != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never ready again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let done = delete(&gw, &format!("/api/v1/campaigns/101?api_key={KEY}")).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(done.header("x-safedelete-action"), Some("archived"));
}
