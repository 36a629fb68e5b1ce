//! Programmed faults and request recording, as the gateway's tests use them.

mod common;

use std::time::{Duration, Instant};

use common::{api, raw, request, KEY};
use fake_smartlead::{start, FakeConfig, Fault, FaultRule};
use serde_json::json;

#[tokio::test]
async fn a_429_fault_applies_its_times_then_the_real_answer_returns() {
    let h = start(FakeConfig::default()).await.unwrap();
    h.fault(FaultRule {
        method: Some("GET".into()),
        path: "/api/v1/campaigns/*".into(),
        times: Some(2),
        fault: Fault {
            status: Some(429),
            retry_after: Some(7),
            ..Fault::default()
        },
    });
    for _ in 0..2 {
        let r = api(&h, "GET", "/campaigns/101", "").await;
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after"), Some("7"));
        assert_eq!(r.json()["error"]["code"], "RATE_LIMIT_EXCEEDED");
        assert_eq!(r.json()["error"]["retry_after"], 7);
    }
    assert_eq!(api(&h, "GET", "/campaigns/101", "").await.status, 200);

    h.fault(FaultRule {
        path: "**".into(),
        fault: Fault {
            status: Some(503),
            ..Fault::default()
        },
        ..FaultRule::default()
    });
    assert_eq!(
        api(
            &h,
            "POST",
            "/campaigns/101/status",
            r#"{"status":"PAUSED"}"#
        )
        .await
        .json(),
        json!({"error": "Service unavailable"})
    );
    assert_eq!(
        h.campaign(101).unwrap()["status"],
        "ACTIVE",
        "a status fault must not run the handler"
    );
    h.clear_faults();
    assert_eq!(api(&h, "GET", "/campaigns/101", "").await.status, 200);
}

#[tokio::test]
async fn drop_after_bytes_cuts_a_download_short() {
    let h = start(FakeConfig::with_leads(2_000)).await.unwrap();
    h.fault(FaultRule {
        path: "/api/v1/campaigns/*/leads-export".into(),
        times: Some(1),
        fault: Fault {
            drop_after_bytes: Some(100_000),
            ..Fault::default()
        },
        ..FaultRule::default()
    });
    let cut = api(&h, "GET", "/campaigns/101/leads-export", "").await;
    assert_eq!(cut.status, 200);
    assert!(!cut.complete, "the client must see the body end early");
    assert_eq!(cut.body.len(), 100_000);
    assert_eq!(cut.body[..], h.expected_leads_csv(101)[..100_000]);

    h.fault(FaultRule {
        path: "/api/v1/campaigns/101".into(),
        fault: Fault {
            drop_after_bytes: Some(10),
            ..Fault::default()
        },
        ..FaultRule::default()
    });
    let json = api(&h, "GET", "/campaigns/101", "").await;
    assert!(
        !json.complete && json.body.len() == 10,
        "Content-Length body short by design"
    );
    let whole = api(&h, "GET", "/campaigns/101/leads-export", "").await;
    assert!(whole.complete);
}

#[tokio::test]
async fn delays_slow_chunks_and_extra_headers_are_applied() {
    let h = start(FakeConfig::with_leads(300)).await.unwrap();
    h.fault(FaultRule {
        path: "/api/v1/campaigns/101/leads-export".into(),
        fault: Fault {
            delay: Some(Duration::from_millis(100)),
            chunk_delay: Some(Duration::from_millis(5)),
            headers: vec![
                ("x-foo".into(), "1".into()),
                ("x-foo".into(), "2".into()),
                ("keep-alive".into(), "timeout=5".into()),
            ],
            ..Fault::default()
        },
        ..FaultRule::default()
    });
    let started = Instant::now();
    let r = api(&h, "GET", "/campaigns/101/leads-export", "").await;
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(r.complete);
    assert_eq!(r.header_all("x-foo"), vec!["1", "2"]);
    assert_eq!(r.header("keep-alive"), Some("timeout=5"));
    assert!(
        r.chunks >= r.body.len() / (16 * 1024),
        "slow bodies come in 16 KiB pieces"
    );
    assert_eq!(r.body, h.expected_leads_csv(101));
}

#[tokio::test]
async fn requests_are_recorded_raw_with_duplicate_headers_and_bodies() {
    let h = start(FakeConfig::default()).await.unwrap();
    let target = format!("/api/v1/campaigns/101/webhooks?api_key={KEY}&a=%20b+c");
    let body = br#"{"id":10101}"#;
    let r = request(
        &h,
        "DELETE",
        &target,
        &[("X-Dup", "one"), ("User-Agent", "test/1"), ("x-dup", "two")],
        body,
    )
    .await;
    assert_eq!(r.status, 200);
    let recs = h.requests();
    assert_eq!(recs.len(), 1);
    let rec = &recs[0];
    assert_eq!(
        (rec.method.as_str(), rec.target.as_str()),
        ("DELETE", target.as_str())
    );
    assert_eq!(rec.path(), "/api/v1/campaigns/101/webhooks");
    assert_eq!(rec.header_all("x-dup"), vec![&b"one"[..], &b"two"[..]]);
    assert_eq!(rec.header("USER-AGENT"), Some(&b"test/1"[..]));
    assert!(rec
        .headers
        .iter()
        .all(|(n, _)| n.chars().all(|c| !c.is_ascii_uppercase())));
    assert_eq!((&rec.body[..], rec.body_complete), (&body[..], true));
    h.clear_requests();
    assert!(h.requests().is_empty());
}

#[tokio::test]
async fn a_body_cut_short_is_recorded_as_incomplete() {
    let h = start(FakeConfig::default()).await.unwrap();
    let head = format!("POST /api/v1/campaigns/101/leads?api_key={KEY} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{{\"lead_list\":");
    // The server never answers a half-sent request; the read fails when we hang up.
    {
        let mut conn = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut conn, head.as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..100 {
        if !h.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let recs = h.requests();
    assert_eq!(recs.len(), 1);
    assert!(!recs[0].body_complete);
    assert_eq!(&recs[0].body[..], b"{\"lead_list\":");
    assert!(raw(
        &h,
        b"GET /api/v1/campaigns HTTP/1.1\r\nhost: x\r\n\r\n",
        false
    )
    .await
    .is_ok());
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let h = start(FakeConfig::default()).await.unwrap();
    let addr = h.addr();
    assert_eq!(api(&h, "GET", "/campaigns", "").await.status, 200);
    h.clone().shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
