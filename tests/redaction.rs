//! The SmartLead key is never written anywhere, whatever the spelling: the
//! real binary, every way a key can reach it, and the bytes it leaves in its
//! logs, its database and the WAL.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::process::*;
use common::*;
use fake_smartlead::{Fault, FaultRule};
use http::Request;
use http_body_util::Full;

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
