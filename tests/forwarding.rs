//! Forwarding is indistinguishable from talking to SmartLead directly: the
//! request target byte-for-byte, headers untouched except hop-by-hop ones,
//! bodies streamed with the right framing.

mod common;

use bytes::Bytes;
use common::*;
use fake_smartlead::{Fault, FaultRule};
use http::Request;
use http_body_util::Full;

async fn fake() -> fake_smartlead::FakeHandle {
    fake_smartlead::start(fake_smartlead::FakeConfig::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_request_target_reaches_smartlead_byte_for_byte() {
    let up = fake().await;
    let gw = Gateway::start(&up.url()).await;
    let target = "/api/v1/campaigns/?api_key=sl_test_key&client_id=&x=%20a+b&x=2&empty&%C3%A9=%7e";
    let direct = get(&format!("{}{}", up.url(), target)).await;
    let via = get(&gw.url(target)).await;
    assert_eq!(via.status, 200);
    assert_eq!(
        via.body, direct.body,
        "the gateway changed the response body"
    );
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].target, target);
    assert_eq!(seen[1].method, "GET");
}

#[tokio::test]
async fn host_is_the_upstream_and_end_to_end_headers_are_untouched() {
    let up = fake().await;
    let gw = Gateway::start(&up.url()).await;
    let req = Request::get(gw.url("/api/v1/campaigns/101?api_key=sl_test_key"))
        .header("host", "gateway.internal")
        .header("user-agent", "python-requests/2.31 (smartlead-cli)")
        .header("accept", "application/json")
        .header("x-dup", "one")
        .header("x-dup", "two")
        .header("authorization", "Bearer abc")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-request-id", "client-req-42")
        .body(Full::default())
        .unwrap();
    let reply = send(req).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-request-id"), Some("client-req-42"));
    let r = &up.requests()[0];
    assert_eq!(r.header("host"), Some(up.addr().to_string().as_bytes()));
    assert_eq!(
        r.header("user-agent"),
        Some(&b"python-requests/2.31 (smartlead-cli)"[..])
    );
    assert_eq!(r.header("accept"), Some(&b"application/json"[..]));
    assert_eq!(r.header("authorization"), Some(&b"Bearer abc"[..]));
    assert_eq!(r.header_all("x-dup"), vec![&b"one"[..], &b"two"[..]]);
    assert_eq!(
        r.header("x-forwarded-for"),
        Some(&b"203.0.113.9, 127.0.0.1"[..])
    );
    assert_eq!(r.header("x-forwarded-proto"), Some(&b"http"[..]));
    assert_eq!(r.header("x-request-id"), Some(&b"client-req-42"[..]));
}

#[tokio::test]
async fn a_request_id_is_generated_when_absent_and_returned() {
    let up = fake().await;
    let gw = Gateway::start(&up.url()).await;
    let reply = get(&gw.url("/api/v1/campaigns?api_key=sl_test_key")).await;
    let id = reply
        .header("x-request-id")
        .expect("x-request-id")
        .to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(up.requests()[0].header("x-request-id"), Some(id.as_bytes()));
    let other = get(&gw.url("/api/v1/campaigns?api_key=sl_test_key")).await;
    assert_ne!(other.header("x-request-id"), Some(id.as_str()));
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_in_both_directions() {
    let up = fake().await;
    up.fault(FaultRule {
        method: Some("GET".into()),
        path: "/api/v1/campaigns/101".into(),
        times: None,
        fault: Fault {
            headers: vec![
                ("connection".into(), "x-upstream-hop".into()),
                ("x-upstream-hop".into(), "1".into()),
                ("keep-alive".into(), "timeout=5".into()),
                ("proxy-authenticate".into(), "Basic".into()),
                ("x-end-to-end".into(), "kept".into()),
            ],
            ..Fault::default()
        },
    });
    let gw = Gateway::start(&up.url()).await;
    let raw_request = "GET /api/v1/campaigns/101?api_key=sl_test_key HTTP/1.1\r\nHost: x\r\n\
         Connection: keep-alive, X-Client-Hop, x-forwarded-for\r\nX-Client-Hop: secret\r\n\
         Keep-Alive: timeout=9\r\nTE: trailers\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n\
         Proxy-Connection: keep-alive\r\nUpgrade: websocket\r\nX-Forwarded-For: 198.51.100.1\r\n\
         X-Kept: yes\r\nConnection: close\r\n\r\n";
    let answer = raw(gw.proxy, raw_request.as_bytes()).await;
    let head = answer
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-end-to-end: kept"), "{head}");
    assert!(!head.contains("x-upstream-hop"), "{head}");
    assert!(!head.contains("keep-alive: timeout=5"), "{head}");
    assert!(!head.contains("proxy-authenticate"), "{head}");

    let r = &up.requests()[0];
    for name in [
        "x-client-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(r.header(name).is_none(), "{name} reached SmartLead");
    }
    assert_eq!(r.header("x-kept"), Some(&b"yes"[..]));
    // The client's X-Forwarded-For was listed in Connection, so it went before
    // the gateway added its own.
    assert_eq!(r.header("x-forwarded-for"), Some(&b"127.0.0.1"[..]));
}

#[tokio::test]
async fn head_204_and_304_have_no_body() {
    let up = fake().await;
    let gw = Gateway::start(&up.url()).await;
    let head = send(
        Request::head(gw.url("/api/v1/campaigns/101?api_key=sl_test_key"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let get_len = get(&gw.url("/api/v1/campaigns/101?api_key=sl_test_key"))
        .await
        .body
        .len();
    assert_eq!(
        head.header("content-length"),
        Some(get_len.to_string().as_str())
    );

    for status in [204u16, 304] {
        up.fault(FaultRule {
            method: None,
            path: "/api/v1/campaigns/102".into(),
            times: Some(1),
            fault: Fault {
                status: Some(status),
                ..Fault::default()
            },
        });
        // Raw, so a stray body would show up as bytes after the head.
        let answer = raw(
            gw.proxy,
            b"GET /api/v1/campaigns/102?api_key=sl_test_key HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
        assert!(
            answer.ends_with("\r\n\r\n"),
            "a body followed a {status}: {answer:?}"
        );
    }
}

#[tokio::test]
async fn expect_100_continue_gets_a_continue_and_the_body_arrives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = fake().await;
    let gw = Gateway::start(&up.url()).await;
    let body = r#"{"name":"Expect test"}"#;
    let mut s = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    let head = format!(
        "POST /api/v1/campaigns/create?api_key=sl_test_key HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("a 100 Continue arrives before the body is sent")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(body.as_bytes()).await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("HTTP/1.1 200"), "{rest}");
    assert!(rest.contains("\"ok\":true"), "{rest}");
    let r = &up.requests()[0];
    assert_eq!(&r.body[..], body.as_bytes());
    assert!(r.header("expect").is_none());
}

#[tokio::test]
async fn content_length_and_chunked_uploads_keep_their_framing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = fake().await;
    let gw = Gateway::start(&up.url()).await;

    let body = br#"{"lead_list":[{"email":"a@example.com"}]}"#;
    let reply = send(
        Request::post(gw.url("/api/v1/campaigns/101/leads?api_key=sl_test_key"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let r = &up.requests()[0];
    assert_eq!(
        r.header("content-length"),
        Some(body.len().to_string().as_bytes())
    );
    assert!(r.header("transfer-encoding").is_none());
    assert_eq!(&r.body[..], body);

    let mut s = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    s.write_all(
        b"POST /api/v1/campaigns/101/leads?api_key=sl_test_key HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          14\r\n{\"lead_list\":[{\"emai\r\n15\r\nl\":\"b@example.com\"}]}\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    let r = &up.requests()[1];
    assert_eq!(r.header("transfer-encoding"), Some(&b"chunked"[..]));
    assert!(r.header("content-length").is_none());
    assert_eq!(&r.body[..], br#"{"lead_list":[{"email":"b@example.com"}]}"#);
}

#[tokio::test]
async fn delete_bodies_are_forwarded() {
    let up = fake().await;
    let gw = Gateway::start(&up.url()).await;
    let hooks = get(&gw.url("/api/v1/campaigns/101/webhooks?api_key=sl_test_key")).await;
    let id = hooks.json()[0]["id"].as_u64().expect("a seeded webhook");
    let reply = send(
        Request::delete(gw.url("/api/v1/campaigns/101/webhooks?api_key=sl_test_key"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(format!("{{\"id\":{id}}}"))))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let after = get(&gw.url("/api/v1/campaigns/101/webhooks?api_key=sl_test_key")).await;
    assert!(after
        .json()
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["id"] != id));
}

#[tokio::test]
async fn large_uploads_and_downloads_stream_through_intact() {
    use sha2::{Digest, Sha256};
    let up = fake_smartlead::start(fake_smartlead::FakeConfig::with_leads(20_000))
        .await
        .unwrap();
    let gw = Gateway::start(&up.url()).await;

    let upload: Vec<u8> = (0..10 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let reply = send(
        Request::post(gw.url("/api/v1/campaigns/101/sequences?api_key=sl_test_key"))
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(upload.clone())))
            .unwrap(),
    )
    .await;
    assert!(reply.status.is_client_error() || reply.status.is_success());
    let r = &up.requests()[0];
    assert_eq!(r.body.len(), upload.len());
    assert_eq!(Sha256::digest(&r.body), Sha256::digest(&upload));

    let export = get(&gw.url("/api/v1/campaigns/101/leads-export?api_key=sl_test_key")).await;
    assert_eq!(export.status, 200);
    assert_eq!(export.header("content-type"), Some("text/csv"));
    let expected = up.expected_leads_csv(101);
    assert_eq!(export.body.len(), expected.len());
    assert!(
        export.body == expected,
        "the export changed on its way through"
    );
}

#[tokio::test]
async fn each_worker_keeps_its_own_upstream_pool() {
    let up = fake().await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            top: "workers = 3",
            ..Extra::default()
        },
    )
    .await;
    // Twelve client connections, one after another: the kernel spreads them
    // over the three workers' sockets, and each worker reuses its one
    // upstream connection, so no more than three are ever opened.
    for _ in 0..12 {
        let r = get(&gw.url("/api/v1/campaigns/101?api_key=sl_test_key")).await;
        assert_eq!(r.status, 200);
    }
    let open = metric(&gw, "safedelete_upstream_connections").await;
    assert!((1.0..=3.0).contains(&open), "{open} upstream connections");
    assert_eq!(
        metric(&gw, "safedelete_upstream_connects_total").await,
        open,
        "every connection opened is still open, for reuse"
    );
    assert_eq!(up.requests().len(), 12);
}
