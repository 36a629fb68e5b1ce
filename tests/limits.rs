//! Bounded resources: request heads are capped (431), connections past
//! `max_connections` wait in the backlog while the admin listener keeps
//! answering, the admin listener has a head timeout too, and a client that
//! stops reading a download is cut and recorded as `client_stalled`; the
//! real binary under a flood of huge heads and with few file descriptors.

mod common;

use std::time::Duration;

use common::process::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn fake(leads: usize) -> fake_smartlead::FakeHandle {
    fake_smartlead::start(fake_smartlead::FakeConfig::with_leads(leads))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_request_head_past_the_limit_is_answered_431() {
    let up = fake(10).await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            top: "max_request_head_bytes = 16384\n",
            ..Extra::default()
        },
    )
    .await;
    let big = "a".repeat(20 * 1024);
    let reply = raw(
        gw.proxy,
        format!("GET /api/v1/campaigns HTTP/1.1\r\nHost: x\r\nX-Fill: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    assert!(up.requests().is_empty());
    // A head within the limit is served.
    let fits = "a".repeat(8 * 1024);
    let reply = raw(
        gw.proxy,
        format!(
            "GET /api/v1/campaigns?api_key=sl_test_key HTTP/1.1\r\nHost: x\r\nX-Fill: {fits}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

/// Opens a connection and sends half a request head, holding a slot.
async fn half_open(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /api/v1/campaigns HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    s
}

#[tokio::test]
async fn past_max_connections_new_ones_wait_and_the_admin_listener_still_answers() {
    let up = fake(10).await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            top: "max_connections = 4\nrequest_head_timeout = \"30s\"\n",
            ..Extra::default()
        },
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(half_open(gw.proxy).await);
    }
    // Each worker accepts on its own socket: wait until the four are served,
    // so the fifth is the one past the limit.
    for _ in 0..100 {
        if metric(&gw, "safedelete_client_connections").await == 4.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&gw, "safedelete_client_connections").await, 4.0);
    // The fifth connects (the kernel's backlog) but is not served...
    let mut fifth = TcpStream::connect(gw.proxy).await.unwrap();
    fifth
        .write_all(b"GET /api/v1/campaigns?api_key=sl_test_key HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let early = tokio::time::timeout(Duration::from_millis(500), fifth.read_to_end(&mut buf)).await;
    assert!(
        early.is_err(),
        "served past the limit: {:?}",
        String::from_utf8_lossy(&buf)
    );
    // ...while health checks and metrics answer.
    assert_eq!(get(&gw.admin_url("/readyz")).await.status, 200);
    assert_eq!(get(&gw.admin_url("/metrics")).await.status, 200);
    // A slot frees: the waiting connection is served.
    drop(held.pop());
    tokio::time::timeout(Duration::from_secs(5), fifth.read_to_end(&mut buf))
        .await
        .expect("the waiting connection was served once a slot freed")
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(metric(&gw, "safedelete_client_connections").await <= 4.0);
}

#[tokio::test]
async fn the_admin_listener_closes_a_connection_that_never_finishes_its_head() {
    let up = fake(10).await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            top: "request_head_timeout = \"1s\"\n",
            ..Extra::default()
        },
    )
    .await;
    let closed = raw_closes_within(
        gw.admin,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(4),
    )
    .await;
    assert!(closed.is_some(), "the admin listener held a half-sent head");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_the_client_stops_reading_is_cut_and_recorded_as_stalled() {
    // ~18 MB of CSV: far more than the socket buffers hold.
    let up = fake(50_000).await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            top: "body_idle_timeout = \"1s\"\n",
            ..Extra::default()
        },
    )
    .await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut client = socket.connect(gw.proxy).await.unwrap();
    client
        .write_all(b"GET /api/v1/campaigns/101/leads-export?api_key=sl_test_key HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Read the first bytes, then stop reading.
    let mut first = [0u8; 1024];
    let _ = client.read(&mut first).await.unwrap();
    let started = std::time::Instant::now();
    let mut row = None;
    while started.elapsed() < Duration::from_secs(10) && row.is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        row = audit_rows(&gw.db_path)
            .await
            .into_iter()
            .find(|r| r.path.ends_with("/leads-export"));
    }
    let row = row.expect("the stalled download was never recorded");
    assert_eq!(row.error_kind.as_deref(), Some("client_stalled"), "{row:?}");
    assert!(row.bytes_out > 0 && row.bytes_out < 18_000_000, "{row:?}");
    // The connection is gone: reading now ends instead of blocking.
    let mut rest = Vec::new();
    let drained = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest)).await;
    assert!(
        drained.is_ok(),
        "the gateway kept the stalled connection open"
    );
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

    // 1,500 heads of 60 KB, under the cap, all held open at once: the
    // admin listener still answers, and the memory comes back after.
    let held = head_flood(gw.proxy, 1_500, 60 * 1024).await;
    assert_eq!(
        get(&format!("http://{}/readyz", gw.admin)).await.status,
        200
    );
    let held_peak = gw.status_kib("VmHWM");
    drop(held);
    assert_eq!(get(&read).await.status, 200);
    let closed = std::time::Instant::now();
    let mut after = gw.status_kib("VmRSS");
    while after > 2 * idle && closed.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = gw.status_kib("VmRSS");
    }
    let returned_in = closed.elapsed();

    // 1,500 heads of 380 KB: each is cut at 64 KiB with a 431.
    gw.reset_peak_rss();
    let held = head_flood(gw.proxy, 1_500, 380 * 1024).await;
    assert_eq!(
        get(&format!("http://{}/readyz", gw.admin)).await.status,
        200
    );
    let refused_peak = gw.status_kib("VmHWM");
    drop(held);
    eprintln!(
        "head flood: RSS idle {idle} KiB; peak {refused_peak} KiB with 380 KB heads (431), \
         {held_peak} KiB with 60 KB heads held; {after} KiB {:.1} s after they closed",
        returned_in.as_secs_f64()
    );
    assert!(
        refused_peak < 128 * 1024,
        "peak RSS {refused_peak} KiB under 380 KB heads"
    );
    assert!(
        held_peak < 192 * 1024,
        "peak RSS {held_peak} KiB with 1,500 heads held"
    );
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
    assert!(
        gw.logs()
            .contains("max_connections can use up the open-files limit"),
        "no warning at start"
    );
    drop(held);
}
