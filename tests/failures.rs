//! Upstream faults and bad input: each gets a clear answer (502/504/400 in
//! SmartLead's error shape), an audit record with an `error_kind`, and never a
//! panic or a hang; the gateway keeps serving afterwards.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use fake_smartlead::{Fault, FaultRule};
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn fake() -> fake_smartlead::FakeHandle {
    fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap()
}

async fn still_serves(gw: &Gateway) {
    let ok = get(&gw.url("/api/v1/campaigns?api_key=sl_test_key")).await;
    assert_eq!(ok.status, 200, "the gateway stopped serving");
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_in_smartlead_shape() {
    let port = closed_port().await;
    let gw = Gateway::start(&format!("http://{port}")).await;
    let reply = get(&gw.url("/api/v1/campaigns?api_key=sl_test_key")).await;
    assert_eq!(reply.status, 502);
    let body = reply.json();
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("could not connect"));
    assert_eq!(body["error_kind"], "upstream_connect_failed");
    assert!(reply.header("x-request-id").is_some());
    let rows = gw.wait_for_audit_rows(1).await;
    assert_eq!(
        rows[0].error_kind.as_deref(),
        Some("upstream_connect_failed")
    );
    assert_eq!(rows[0].status, 502);
    assert_eq!(rows[0].upstream_status, None);
}

#[tokio::test]
async fn an_https_upstream_that_speaks_plain_http_is_a_502_that_says_so() {
    let up = fake().await;
    let plain = up.url();
    let https = plain.replacen("http://", "https://", 1);
    let gw = Gateway::start(&https).await;
    let reply = get(&gw.url("/api/v1/campaigns?api_key=sl_test_key")).await;
    assert_eq!(reply.status, 502);
    let body = reply.json();
    let message = body["error"].as_str().unwrap();
    assert_eq!(
        message,
        "safedelete: the upstream answered plain HTTP to a TLS handshake; use http:// in \
         upstream.url, or check the port; the request was not sent"
    );
    assert!(
        !message.contains(&plain[7..]),
        "no address in the body: {message}"
    );
    assert_eq!(body["error_kind"], "upstream_connect_failed");
    assert!(
        up.requests().is_empty(),
        "nothing reached the upstream as a request"
    );
}

#[tokio::test]
async fn a_slow_upstream_is_a_504_after_the_first_byte_timeout() {
    let up = fake().await;
    up.fault(FaultRule {
        method: None,
        path: "/api/v1/campaigns".into(),
        times: None,
        fault: Fault {
            delay: Some(Duration::from_secs(3)),
            ..Fault::default()
        },
    });
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            upstream: "first_byte_timeout = \"300ms\"\n",
            ..Extra::default()
        },
    )
    .await;
    let started = std::time::Instant::now();
    let reply = get(&gw.url("/api/v1/campaigns?api_key=sl_test_key")).await;
    assert_eq!(reply.status, 504);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(reply.json()["error_kind"], "upstream_timeout");
    let rows = gw.wait_for_audit_rows(1).await;
    assert_eq!(rows[0].error_kind.as_deref(), Some("upstream_timeout"));
    up.clear_faults();
    still_serves(&gw).await;
}

#[tokio::test]
async fn a_connect_that_hangs_is_a_504_after_the_connect_timeout() {
    // A listener with a full accept backlog that never accepts: further SYNs
    // are dropped, so connecting hangs, all on loopback.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        } else {
            break;
        }
    }
    let gw = Gateway::start_with(
        &format!("http://{addr}"),
        Extra {
            upstream: "connect_timeout = \"300ms\"\nfirst_byte_timeout = \"10s\"\n",
            ..Extra::default()
        },
    )
    .await;
    let started = std::time::Instant::now();
    let reply = get(&gw.url("/api/v1/campaigns?api_key=sl_test_key")).await;
    assert_eq!(reply.status, 504, "{:?}", reply.body);
    assert_eq!(reply.json()["error_kind"], "upstream_connect_timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(listener);
}

#[tokio::test]
async fn an_upstream_that_drops_mid_download_cuts_the_client_and_is_audited() {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::with_leads(2_000))
        .await
        .unwrap();
    up.fault(FaultRule {
        method: Some("GET".into()),
        path: "/api/v1/campaigns/*/leads-export".into(),
        times: Some(1),
        fault: Fault {
            drop_after_bytes: Some(50_000),
            ..Fault::default()
        },
    });
    let gw = Gateway::start(&up.url()).await;
    let resp = client()
        .request(
            Request::get(gw.url("/api/v1/campaigns/101/leads-export?api_key=sl_test_key"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body()).await;
    assert!(
        body.is_err(),
        "the client must see the download fail, not a short file"
    );
    let rows = gw.wait_for_audit_rows(1).await;
    assert_eq!(rows[0].error_kind.as_deref(), Some("upstream_body_error"));
    assert!(
        rows[0].bytes_out >= 40_000 && rows[0].bytes_out <= 50_000,
        "{:?}",
        rows[0]
    );
    still_serves(&gw).await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_upload_does_not_hang_anything() {
    let up = fake().await;
    let gw = Gateway::start(&up.url()).await;
    let mut s = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    s.write_all(
        b"POST /api/v1/campaigns/101/leads?api_key=sl_test_key HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{\"lead_list\":[",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
    let rows = gw.wait_for_audit_rows(1).await;
    assert_eq!(rows[0].error_kind.as_deref(), Some("client_aborted"));
    assert_eq!(rows[0].method, "POST");
    still_serves(&gw).await;
    // SmartLead never saw a complete request.
    assert!(up
        .requests()
        .iter()
        .all(|r| r.method != "POST" || !r.body_complete));
}

#[tokio::test]
async fn a_client_that_disconnects_mid_download_is_audited() {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::with_leads(50_000))
        .await
        .unwrap();
    let gw = Gateway::start(&up.url()).await;
    let mut s = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    s.write_all(
        b"GET /api/v1/campaigns/101/leads-export?api_key=sl_test_key HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(n > 0);
    drop(s);
    let rows = gw.wait_for_audit_rows(1).await;
    assert_eq!(rows[0].error_kind.as_deref(), Some("client_aborted"));
    still_serves(&gw).await;
}

#[tokio::test]
async fn only_bodiless_gets_and_heads_are_retried_after_a_dead_connection() {
    let up = fake().await;
    let gw = Gateway::start(&up.url()).await;
    for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] {
        up.clear_requests();
        up.fault(FaultRule {
            method: Some(method.into()),
            path: "/api/v1/campaigns/101/status".into(),
            times: Some(1),
            fault: Fault {
                drop_before_response: true,
                ..Fault::default()
            },
        });
        let bodiless = matches!(method, "GET" | "HEAD");
        let reply = send(
            Request::builder()
                .method(method)
                .uri(gw.url("/api/v1/campaigns/101/status?api_key=sl_test_key"))
                .body(if bodiless {
                    Full::default()
                } else {
                    Full::new(Bytes::from_static(br#"{"status":"PAUSED"}"#))
                })
                .unwrap(),
        )
        .await;
        let reached = up.requests().iter().filter(|r| r.method == method).count();
        if bodiless {
            assert_eq!(reached, 2, "a {method} is retried once");
            assert_ne!(reply.status, 502);
        } else {
            assert_eq!(reached, 1, "a {method} must never be sent twice");
            assert_eq!(reply.status, 502);
            assert_eq!(reply.json()["error_kind"], "upstream_reset");
        }
    }
}

#[tokio::test]
async fn a_client_that_gives_up_while_waiting_is_still_audited() {
    let up = fake().await;
    up.fault(FaultRule {
        method: None,
        path: "/api/v1/campaigns".into(),
        times: Some(1),
        fault: Fault {
            delay: Some(Duration::from_secs(2)),
            ..Fault::default()
        },
    });
    let gw = Gateway::start(&up.url()).await;
    let impatient = tokio::time::timeout(
        Duration::from_millis(300),
        get(&gw.url("/api/v1/campaigns?api_key=sl_test_key")),
    )
    .await;
    assert!(impatient.is_err());
    let rows = gw.wait_for_audit_rows(1).await;
    assert_eq!(rows[0].error_kind.as_deref(), Some("client_aborted"));
    assert_eq!(rows[0].status, 499);
    assert_eq!(metric(&gw, "safedelete_requests_in_flight").await, 0.0);
}

#[tokio::test]
async fn a_slow_upload_to_a_healthy_upstream_is_not_a_timeout() {
    let up = fake().await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            upstream: "first_byte_timeout = \"400ms\"\n",
            ..Extra::default()
        },
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    let body = br#"{"lead_list":[{"email":"slow@example.com"}]}"#;
    s.write_all(
        format!(
            "POST /api/v1/campaigns/101/leads?api_key=sl_test_key HTTP/1.1\r\nHost: x\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // 1.2 s to send the body, three times the first-byte budget.
    for piece in body.chunks(body.len() / 4 + 1) {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(&up.requests()[0].body[..], body);
}

#[tokio::test]
async fn a_stalled_upload_gets_a_408_and_is_not_delivered() {
    let up = fake().await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            top: "body_idle_timeout = \"400ms\"\n",
            ..Extra::default()
        },
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    s.write_all(
        b"POST /api/v1/campaigns/101/leads?api_key=sl_test_key HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"lead_list\":",
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut answer))
        .await
        .expect("the gateway answers a stalled upload")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("client_body_timeout"), "{answer}");
    let rows = gw.wait_for_audit_rows(1).await;
    assert_eq!(rows[0].error_kind.as_deref(), Some("client_body_timeout"));
    assert!(up
        .requests()
        .iter()
        .all(|r| !r.body_complete || r.method != "POST"));
}

#[tokio::test]
async fn an_upstream_that_stalls_mid_download_is_cut_after_the_idle_timeout() {
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::with_leads(2_000))
        .await
        .unwrap();
    up.fault(FaultRule {
        method: Some("GET".into()),
        path: "/api/v1/campaigns/*/leads-export".into(),
        times: Some(1),
        fault: Fault {
            chunk_delay: Some(Duration::from_secs(5)),
            ..Fault::default()
        },
    });
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            top: "body_idle_timeout = \"400ms\"\n",
            ..Extra::default()
        },
    )
    .await;
    let started = std::time::Instant::now();
    let resp = client()
        .request(
            Request::get(gw.url("/api/v1/campaigns/101/leads-export?api_key=sl_test_key"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body()).await;
    assert!(body.is_err(), "a stalled download must not look complete");
    assert!(started.elapsed() < Duration::from_secs(4));
    let rows = gw.wait_for_audit_rows(1).await;
    assert_eq!(rows[0].error_kind.as_deref(), Some("upstream_body_timeout"));
    still_serves(&gw).await;
}

#[tokio::test]
async fn idle_and_silent_connections_are_closed() {
    let up = fake().await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            top: "request_head_timeout = \"500ms\"\n",
            ..Extra::default()
        },
    )
    .await;
    // A connection that never sends a byte.
    let silent = raw_closes_within(gw.proxy, b"", Duration::from_secs(3)).await;
    assert!(silent.is_some(), "a silent connection was kept open");
    // A head dribbled in too slowly.
    let mut s = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    s.write_all(b"GET /api/v1/campaigns HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a slow head was kept open");
    // A keep-alive connection left idle after a request.
    let mut s = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    s.write_all(b"GET /api/v1/campaigns?api_key=sl_test_key HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "an idle keep-alive connection was kept open"
    );
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn invalid_request_targets_and_headers_get_a_400_and_no_panic() {
    let up = fake().await;
    let gw = Gateway::start(&up.url()).await;
    let cases: [&[u8]; 6] = [
        b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n",
        b"GET /ok HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
        b"GET /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    ];
    for case in cases {
        let answer = raw_closes_within(gw.proxy, case, Duration::from_secs(2))
            .await
            .unwrap_or_else(|| panic!("{:?} hung", String::from_utf8_lossy(case)));
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{:?} -> {answer:?}",
            String::from_utf8_lossy(case)
        );
    }
    let connect = raw(
        gw.proxy,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 400"), "{connect}");
    let star = raw(
        gw.proxy,
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(star.starts_with("HTTP/1.1 400"), "{star}");
    assert!(star.contains("\"error\""), "{star}");
    assert!(up.requests().is_empty(), "bad input reached SmartLead");
    still_serves(&gw).await;
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let up = fake().await;
    let gw = Gateway::start(&up.url()).await;
    let mut req = b"GET /api/v1/campaigns HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..2000 {
        req.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(100)).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    let answer = raw(gw.proxy, &req).await;
    assert!(
        answer.is_empty()
            || answer.starts_with("HTTP/1.1 431")
            || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    still_serves(&gw).await;
}
