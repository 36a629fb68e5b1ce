//! No loops: `upstream.connect_to` reaches SmartLead while its name points
//! at the gateway (TLS still verified against the name), a gateway whose
//! upstream leads to itself refuses to start, and a request that comes back
//! through the gateway is answered 508, never forwarded again.

mod common;

use std::process::Command;

use common::process::*;
use common::*;

const NAME: &str = "server.smartlead.ai";

/// A port nothing listens on now, for a listener the test must know in
/// advance.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_reaches_smartlead_by_address_and_verifies_its_name() {
    let pki = TestPki::for_names(&[NAME]);
    let up = fake_smartlead::start(fake_smartlead::FakeConfig {
        tls: Some(pki.server_config()),
        ..fake_smartlead::FakeConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, _) = pki.write(dir.path());
    let upstream = format!(
        "connect_to = \"127.0.0.1:{}\"\nca_file = {:?}\n",
        up.addr().port(),
        ca.display().to_string()
    );
    // The name does not resolve here (as if the hosts file pointed it at
    // the gateway): only connect_to can reach the fake.
    let gw = Gateway::start_with(
        &format!("https://{NAME}"),
        Extra {
            upstream: &upstream,
            ..Extra::default()
        },
    )
    .await;
    let reply = get(&gw.url("/api/v1/campaigns/101?api_key=sl_test_key")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["id"], 101);
    let seen = &up.requests()[0];
    assert_eq!(seen.header("host"), Some(NAME.as_bytes()));
    let via = String::from_utf8(seen.header("via").unwrap().to_vec()).unwrap();
    assert!(via.starts_with("1.1 safedelete-"), "{via}");

    // A certificate for another name is refused, whatever the address.
    let other = TestPki::for_names(&["elsewhere.example"]);
    let wrong = fake_smartlead::start(fake_smartlead::FakeConfig {
        tls: Some(other.server_config()),
        ..fake_smartlead::FakeConfig::default()
    })
    .await
    .unwrap();
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let (other_ca, _, _) = other.write(&other_dir);
    let upstream = format!(
        "connect_to = \"127.0.0.1:{}\"\nca_file = {:?}\n",
        wrong.addr().port(),
        other_ca.display().to_string()
    );
    let gw = Gateway::start_with(
        &format!("https://{NAME}"),
        Extra {
            upstream: &upstream,
            ..Extra::default()
        },
    )
    .await;
    let reply = get(&gw.url("/api/v1/campaigns/101?api_key=sl_test_key")).await;
    assert_eq!(reply.status, 502);
    assert!(wrong.requests().is_empty());
}

#[test]
fn a_gateway_whose_upstream_leads_to_itself_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // By URL (what a hosts entry does to SmartLead's name) ...
    let (config, _) = write_config(
        dir.path(),
        &format!("http://127.0.0.1:{port}"),
        Extra::default(),
    );
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("SAFEDELETE_LISTEN", format!("0.0.0.0:{port}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "leads to 127.0.0.1:{port}, which is this gateway's own proxy listener (0.0.0.0:{port})"
        )),
        "{err}"
    );
    assert!(err.contains("connect_to = \"IP:443\""), "{err}");

    // ... and by connect_to.
    let (config, _) = write_config(
        dir.path(),
        &format!("https://{NAME}"),
        Extra {
            upstream: &format!("connect_to = [\"127.0.0.1:{port}\"]\n"),
            ..Extra::default()
        },
    );
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("SAFEDELETE_LISTEN", format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("own proxy listener"), "{err}");
    assert!(
        err.contains("Point [upstream] connect_to at SmartLead's real address"),
        "{err}"
    );
}

#[test]
fn connect_to_values_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (value, says) in [
        (
            "\"server.smartlead.ai:443\"",
            "is not an IP address and port",
        ),
        ("\"10.0.0.1\"", "is not an IP address and port"),
        ("[]", "is an empty list"),
    ] {
        let (config, _) = write_config(
            dir.path(),
            "https://server.smartlead.ai",
            Extra {
                upstream: &format!("connect_to = {value}\n"),
                ..Extra::default()
            },
        );
        let out = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{value}");
        let err = stderr(&out);
        assert!(err.contains("upstream.connect_to"), "{value}: {err}");
        assert!(err.contains(says), "{value}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_comes_back_is_answered_508_and_not_forwarded_again() {
    // Two gateways, each the other's upstream: what a hosts entry on a
    // gateway's host does when the gateway reaches SmartLead through
    // another proxy. The start-up check cannot see it; Via does.
    let (a_port, b_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str, port: u16, upstream: u16| {
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let (config, db) = write_config(
            &sub,
            &format!("http://127.0.0.1:{upstream}"),
            Extra::default(),
        );
        let mut command = Command::new(BIN);
        command.env("SAFEDELETE_LISTEN", format!("127.0.0.1:{port}"));
        (Proc::start_with(command, &config, "info"), db)
    };
    let (a, a_db) = start("a", a_port, b_port);
    let (_b, _) = start("b", b_port, a_port);

    let reply = get(&a.url("/api/v1/campaigns/101?api_key=sl_test_key")).await;
    assert_eq!(reply.status, 508, "{:?}", reply.body);
    let body = reply.json();
    assert_eq!(body["error_kind"], "loop_detected");
    assert!(
        body["error"].as_str().unwrap().contains("connect_to"),
        "{body}"
    );

    // A refused it the second time it saw it: one record forwarded, one
    // answered 508 with the reason.
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = audit_rows(a_db.as_path()).await;
        if rows.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let kinds: Vec<_> = rows
        .iter()
        .map(|r| (r.status, r.error_kind.as_deref()))
        .collect();
    assert!(kinds.contains(&(508, Some("loop_detected"))), "{kinds:?}");
    assert_eq!(rows.len(), 2, "{kinds:?}");
}
